"""The problem ledger (问题台账): problems, their immutable transition log, their photos.

- ``problems``: numbered by the database (WT-年份-序号), moved only by the log's trigger.
- ``problem_events``: a transition is an insert here; the trigger checks the move, the role,
  and that the verifier is not the rectifier, then moves the problem. UPDATE, DELETE and
  TRUNCATE are refused to everyone.
- ``problem_photos``: photos kept by SHA-256 in the upload archive.
- row-level security by area, like the layers (layers.problems.policies).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 17:36:04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "problem_photos",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.String(length=4), nullable=False, comment="整改前 or 整改后"),
        sa.Column("content_type", sa.String(length=20), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("uploader", sa.String(length=60), nullable=False),
        sa.Column(
            "uploaded_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.CheckConstraint("phase IN ('整改前', '整改后')", name=op.f("ck_problem_photos_phase")),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_problem_photos")),
        comment="问题照片 problem photos (content-addressed)",
    )
    op.create_geospatial_table(
        "problems",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False, comment="编号 WT-年份-序号, set by the database"),
        sa.Column("source", sa.String(length=10), nullable=False, comment="来源 source"),
        sa.Column("type", sa.String(length=10), nullable=False, comment="类型 type"),
        sa.Column("description", sa.String(length=2000), nullable=False, comment="描述 description"),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="POINT",
                srid=4490,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
            ),
            nullable=True,
        ),
        sa.Column(
            "features",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
            comment="关联要素 linked features [{layer, code}]",
        ),
        sa.Column(
            "finding_id", sa.String(length=40), nullable=True, comment="边界检查发现的编号 boundary-check finding id"
        ),
        sa.Column(
            "area", sa.String(length=19), nullable=False, comment="所在网格或社区编码 the area code (who may see it)"
        ),
        sa.Column("unit", sa.String(length=100), nullable=True, comment="责任单位 responsible unit"),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("assignee", sa.String(length=60), nullable=True, comment="责任人 responsible person (username)"),
        sa.Column("deadline", sa.Date(), nullable=True, comment="整改期限 deadline"),
        sa.Column(
            "state", sa.String(length=8), server_default="已登记", nullable=False, comment="状态 state, set by the log"
        ),
        sa.Column("reporter", sa.String(length=60), nullable=False, comment="登记人 reporter (username)"),
        sa.Column("reporter_id", sa.Integer(), nullable=True),
        sa.Column(
            "photos",
            postgresql.ARRAY(sa.String(length=64)),
            server_default=sa.text("'{}'::character varying[]"),
            nullable=False,
            comment="整改前照片 photos at report",
        ),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True, comment="销号时间 closed at"),
        sa.CheckConstraint(
            "source IN ('巡查', '群众反映', '上级交办', '网格员上报', '边界检查')", name=op.f("ck_problems_source")
        ),
        sa.CheckConstraint(
            "state IN ('已登记', '已交办', '整改中', '待验收', '已销号')", name=op.f("ck_problems_state")
        ),
        sa.CheckConstraint(
            "type IN ('违章搭建', '环境卫生', '占道经营', '设施损坏', '安全隐患', '边界问题', '资产闲置', '其他')",
            name=op.f("ck_problems_type"),
        ),
        sa.CheckConstraint("geom IS NOT NULL OR jsonb_array_length(features) > 0", name=op.f("ck_problems_located")),
        sa.ForeignKeyConstraint(["assignee_id"], ["users.id"], name=op.f("fk_problems_assignee_id_users")),
        sa.ForeignKeyConstraint(["reporter_id"], ["users.id"], name=op.f("fk_problems_reporter_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_problems")),
        sa.UniqueConstraint("number", name="uq_problems_number"),
        sa.UniqueConstraint("reporter", "idempotency_key", name="uq_problems_reporter_idempotency_key"),
    )
    op.create_table_comment("problems", "问题台账 problem ledger")  # create_geospatial_table leaves it out
    op.create_geospatial_index(
        "idx_problems_geom", "problems", ["geom"], unique=False, postgresql_using="gist", postgresql_ops={}
    )
    op.create_index("ix_problems_area", "problems", ["area"], unique=False)
    op.create_index(
        "uq_problems_open_finding",
        "problems",
        ["finding_id"],
        unique=True,
        postgresql_where=sa.text("state <> '已销号'"),
    )
    op.create_table(
        "problem_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("problem_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False, comment="登记 交办 整改 提交验收 销号 退回"),
        sa.Column("from_state", sa.String(length=8), nullable=True),
        sa.Column("to_state", sa.String(length=8), nullable=True, comment="set by the database"),
        sa.Column("actor", sa.String(length=60), nullable=True, comment="who (username), set by the database"),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column(
            "photos",
            postgresql.ARRAY(sa.String(length=64)),
            server_default=sa.text("'{}'::character varying[]"),
            nullable=False,
        ),
        sa.Column("assignee", sa.String(length=60), nullable=True, comment="交办: the person assigned (username)"),
        sa.Column("unit", sa.String(length=100), nullable=True, comment="交办: the responsible unit"),
        sa.Column("deadline", sa.Date(), nullable=True, comment="交办: the deadline"),
        sa.ForeignKeyConstraint(["problem_id"], ["problems.id"], name=op.f("fk_problem_events_problem_id_problems")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_problem_events")),
        comment="问题流转记录 problem transitions (immutable)",
    )
    op.create_index("ix_problem_events_problem", "problem_events", ["problem_id", "id"], unique=False)
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_problem_event()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SECURITY DEFINER\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "DECLARE\n"
        "  p record;\n"
        "  who text := coalesce(nullif(current_setting('guatu.user', true), ''), session_user::text);\n"
        "  acting text := guatu_actor_role();\n"
        "  target text;\n"
        "BEGIN\n"
        "  SELECT * INTO p FROM problems WHERE id = NEW.problem_id FOR UPDATE;\n"
        "  IF NOT FOUND THEN\n"
        "    RAISE EXCEPTION USING ERRCODE = 'GT404', MESSAGE = 'problem_not_found', DETAIL = '';\n"
        "  END IF;\n"
        "  NEW.at := clock_timestamp();\n"
        "  NEW.actor := who;\n"
        "  NEW.actor_id := (SELECT u.id FROM users u WHERE u.username = who);\n"
        "  IF EXISTS (SELECT 1 FROM unnest(NEW.photos) AS s(sha) WHERE NOT EXISTS (\n"
        "      SELECT 1 FROM problem_photos f WHERE f.sha256 = s.sha)) THEN\n"
        "    RAISE EXCEPTION USING ERRCODE = 'GT422', MESSAGE = 'photo_unknown', DETAIL = '';\n"
        "  END IF;\n"
        "  IF NEW.action = '登记' THEN\n"
        "    IF EXISTS (SELECT 1 FROM problem_events e WHERE e.problem_id = p.id) THEN\n"
        "      RAISE EXCEPTION USING ERRCODE = 'GT409', MESSAGE = 'illegal_transition', DETAIL = p.state || ' → ' || NEW.action;\n"
        "    END IF;\n"
        "    NEW.from_state := NULL;\n"
        "    NEW.to_state := '已登记';\n"
        "    RETURN NEW;\n"
        "  END IF;\n"
        "  NEW.from_state := p.state;\n"
        "  target := CASE p.state || '>' || NEW.action WHEN '已登记>交办' THEN '已交办' WHEN '已交办>整改' THEN '整改中' WHEN '整改中>提交验收' THEN '待验收' WHEN '待验收>销号' THEN '已销号' WHEN '待验收>退回' THEN '整改中' END;\n"
        "  IF target IS NULL THEN\n"
        "    RAISE EXCEPTION USING ERRCODE = 'GT409', MESSAGE = 'illegal_transition', DETAIL = p.state || ' → ' || NEW.action;\n"
        "  END IF;\n"
        "  NEW.to_state := target;\n"
        "  IF NEW.action IN ('交办', '销号', '退回') AND acting NOT IN ('admin', 'planner') THEN\n"
        "    RAISE EXCEPTION USING ERRCODE = 'GT403', MESSAGE = 'role_not_permitted', DETAIL = acting || ' → ' || NEW.action;\n"
        "  END IF;\n"
        "  IF NEW.action IN ('整改', '提交验收') AND acting NOT IN ('admin', 'grid_manager')\n"
        "     AND (acting = '' OR p.assignee IS DISTINCT FROM who) THEN\n"
        "    RAISE EXCEPTION USING ERRCODE = 'GT403', MESSAGE = 'not_assignee', DETAIL = acting || ' → ' || NEW.action;\n"
        "  END IF;\n"
        "  IF NEW.action = '交办' THEN\n"
        "    IF NEW.assignee IS NULL OR NOT EXISTS (SELECT 1 FROM users u WHERE u.username = NEW.assignee) THEN\n"
        "      RAISE EXCEPTION USING ERRCODE = 'GT422', MESSAGE = 'assignee_required', DETAIL = '';\n"
        "    END IF;\n"
        "    IF NOT EXISTS (SELECT 1 FROM users u WHERE u.username = NEW.assignee AND NOT u.disabled\n"
        "                   AND (u.area IS NULL OR p.area LIKE u.area || '%' OR u.area LIKE p.area || '%')) THEN\n"
        "      RAISE EXCEPTION USING ERRCODE = 'GT422', MESSAGE = 'assignee_outside_area', DETAIL = NEW.assignee;\n"
        "    END IF;\n"
        "    IF NEW.deadline IS NULL THEN\n"
        "      RAISE EXCEPTION USING ERRCODE = 'GT422', MESSAGE = 'deadline_required', DETAIL = '';\n"
        "    END IF;\n"
        "    UPDATE problems SET assignee = NEW.assignee, deadline = NEW.deadline,\n"
        "      assignee_id = (SELECT u.id FROM users u WHERE u.username = NEW.assignee),\n"
        "      unit = coalesce(NEW.unit, unit) WHERE id = p.id;\n"
        "  ELSIF NEW.action = '提交验收' AND cardinality(NEW.photos) = 0 THEN\n"
        "    RAISE EXCEPTION USING ERRCODE = 'GT422', MESSAGE = 'after_photo_required', DETAIL = '';\n"
        "  ELSIF NEW.action IN ('销号', '退回') THEN\n"
        "    IF EXISTS (SELECT 1 FROM problem_events e\n"
        "               WHERE e.problem_id = p.id AND e.action IN ('整改', '提交验收') AND e.actor = who) THEN\n"
        "      RAISE EXCEPTION USING ERRCODE = 'GT409', MESSAGE = 'verifier_is_rectifier', DETAIL = who;\n"
        "    END IF;\n"
        "  END IF;\n"
        "  UPDATE problems SET state = target,\n"
        "    closed_at = CASE WHEN target = '已销号' THEN NEW.at END WHERE id = p.id;\n"
        "  RETURN NEW;\n"
        "END\n"
        "$function$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_problem_log_immutable()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "BEGIN\n"
        "  RAISE EXCEPTION USING ERRCODE = 'GT409', MESSAGE = 'log_immutable', DETAIL = TG_OP;\n"
        "END\n"
        "$function$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_problem_new()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SECURITY DEFINER\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "DECLARE\n"
        "  who text := coalesce(nullif(current_setting('guatu.user', true), ''), session_user::text);\n"
        "BEGIN\n"
        "  NEW.state := '已登记';\n"
        "  NEW.reporter := who;\n"
        "  NEW.reporter_id := (SELECT u.id FROM users u WHERE u.username = who);\n"
        "  NEW.created_at := clock_timestamp();\n"
        "  NEW.closed_at := NULL;\n"
        "  NEW.assignee := NULL;\n"
        "  NEW.assignee_id := NULL;\n"
        "  NEW.deadline := NULL;\n"
        "  NEW.number := 'WT-' || to_char(NEW.created_at AT TIME ZONE 'Asia/Shanghai', 'YYYY') || '-'\n"
        "    || lpad(NEW.id::text, 6, '0');\n"
        "  IF EXISTS (SELECT 1 FROM unnest(NEW.photos) AS s(sha) WHERE NOT EXISTS (\n"
        "      SELECT 1 FROM problem_photos f WHERE f.sha256 = s.sha)) THEN\n"
        "    RAISE EXCEPTION USING ERRCODE = 'GT422', MESSAGE = 'photo_unknown', DETAIL = '';\n"
        "  END IF;\n"
        "  RETURN NEW;\n"
        "END\n"
        "$function$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_problem_registered()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SECURITY DEFINER\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "BEGIN\n"
        "  INSERT INTO problem_events (problem_id, action, photos) VALUES (NEW.id, '登记', NEW.photos);\n"
        "  RETURN NULL;\n"
        "END\n"
        "$function$"
    )
    op.execute(
        "CREATE TRIGGER problem_events_immutable BEFORE DELETE OR UPDATE ON problem_events FOR EACH ROW EXECUTE FUNCTION guatu_problem_log_immutable()"
    )
    op.execute(
        "CREATE TRIGGER problem_events_no_truncate BEFORE TRUNCATE ON problem_events FOR EACH STATEMENT EXECUTE FUNCTION guatu_problem_log_immutable()"
    )
    op.execute(
        "CREATE TRIGGER problem_events_transition BEFORE INSERT ON problem_events FOR EACH ROW EXECUTE FUNCTION guatu_problem_event()"
    )
    op.execute(
        "CREATE TRIGGER problems_new BEFORE INSERT ON problems FOR EACH ROW EXECUTE FUNCTION guatu_problem_new()"
    )
    op.execute(
        "CREATE TRIGGER problems_registered AFTER INSERT ON problems FOR EACH ROW EXECUTE FUNCTION guatu_problem_registered()"
    )
    op.execute("ALTER TABLE problems ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY guatu_read ON problems FOR SELECT USING (guatu_in_area(area) OR (assignee = current_setting('guatu.user', true)))"
    )
    op.execute(
        "CREATE POLICY guatu_insert ON problems FOR INSERT WITH CHECK (guatu_actor_role() IN ('admin', 'planner', 'surveyor', 'grid_manager') AND guatu_in_area(area))"
    )
    op.execute("ALTER TABLE problem_events ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY guatu_read ON problem_events FOR SELECT USING (EXISTS (SELECT 1 FROM problems p WHERE p.id = problem_id))"
    )
    op.execute(
        "CREATE POLICY guatu_insert ON problem_events FOR INSERT WITH CHECK (EXISTS (SELECT 1 FROM problems p WHERE p.id = problem_id))"
    )
    op.execute("ALTER TABLE problem_photos ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY guatu_read ON problem_photos FOR SELECT USING (guatu_actor_role() = 'admin' OR uploader = current_setting('guatu.user', true) OR EXISTS (SELECT 1 FROM problem_events e WHERE sha256 = ANY (e.photos)))"
    )
    op.execute(
        "CREATE POLICY guatu_insert ON problem_photos FOR INSERT WITH CHECK (uploader = current_setting('guatu.user', true))"
    )


def downgrade() -> None:
    """Revert this migration."""
    op.execute("DROP POLICY IF EXISTS guatu_read ON problems")
    op.execute("DROP POLICY IF EXISTS guatu_insert ON problems")
    op.execute("DROP POLICY IF EXISTS guatu_read ON problem_events")
    op.execute("DROP POLICY IF EXISTS guatu_insert ON problem_events")
    op.execute("DROP POLICY IF EXISTS guatu_read ON problem_photos")
    op.execute("DROP POLICY IF EXISTS guatu_insert ON problem_photos")
    op.execute("DROP TRIGGER problems_registered ON problems")
    op.execute("DROP TRIGGER problems_new ON problems")
    op.execute("DROP TRIGGER problem_events_transition ON problem_events")
    op.execute("DROP TRIGGER problem_events_no_truncate ON problem_events")
    op.execute("DROP TRIGGER problem_events_immutable ON problem_events")
    op.execute("DROP FUNCTION guatu_problem_registered()")
    op.execute("DROP FUNCTION guatu_problem_new()")
    op.execute("DROP FUNCTION guatu_problem_log_immutable()")
    op.execute("DROP FUNCTION guatu_problem_event()")
    op.drop_index("ix_problem_events_problem", table_name="problem_events")
    op.drop_table("problem_events")
    op.drop_index("uq_problems_open_finding", table_name="problems", postgresql_where=sa.text("state <> '已销号'"))
    op.drop_index("ix_problems_area", table_name="problems")
    op.drop_geospatial_index("idx_problems_geom", table_name="problems", postgresql_using="gist", column_name="geom")
    op.drop_geospatial_table("problems")
    op.drop_table("problem_photos")
