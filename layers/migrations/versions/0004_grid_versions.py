"""Grid versions: a changed or deleted grid keeps its old boundary, with the dates it was in force.

A trigger on `grids` copies the old row into `grids_versions` whenever a grid's boundary
or ledger fields change (by hand, by an upload, by a reload) or it is deleted. The old
version is valid until today; the grid row itself becomes valid from today. A grid created
today and changed the same day is simply updated. Checks can then run as of any date.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 20:12:42
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIELDS = ("code", "name", "kind", "community_code", "manager", "manager_phone", "households")
"""The grid's ledger fields as of this revision (valid_from / valid_to are handled apart)."""


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "grids_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("geom", Geometry(geometry_type="MULTIPOLYGON", srid=4490, spatial_index=False), nullable=False),
        sa.Column("replaced_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=True),
        sa.Column("code", sa.String(length=16), nullable=False, comment="网格编码 Grid code"),
        sa.Column("name", sa.String(length=60), nullable=False, comment="网格名称 Grid name"),
        sa.Column("kind", sa.String(length=4), nullable=False, comment="网格类型 Kind"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区/村代码 Community code"),
        sa.Column("manager", sa.String(length=40), nullable=True, comment="网格员 Grid manager"),
        sa.Column("manager_phone", sa.String(length=20), nullable=True, comment="网格员电话 Manager phone"),
        sa.Column("households", sa.Integer(), nullable=True, comment="户数 Households"),
        sa.Column("valid_from", sa.Date(), nullable=False, comment="生效日期 Valid from"),
        sa.Column("valid_to", sa.Date(), nullable=True, comment="失效日期 Valid to"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grids_versions")),
        comment="网格历史版本 Grids: replaced versions",
    )
    op.create_index("ix_grids_versions_code_dates", "grids_versions", ["code", "valid_from", "valid_to"])
    op.create_index("ix_grids_versions_geom", "grids_versions", ["geom"], postgresql_using="gist")
    columns = ", ".join(FIELDS)
    old = ", ".join(f"OLD.{name}" for name in FIELDS)
    new = ", ".join(f"NEW.{name}" for name in FIELDS)
    op.execute(
        f"""
        CREATE FUNCTION guatu_keep_grid_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            IF OLD.valid_from < current_date THEN
              INSERT INTO grids_versions ({columns}, geom, valid_from, valid_to, upload_id)
              VALUES ({old}, OLD.geom, OLD.valid_from, current_date, OLD.upload_id);
            END IF;
            RETURN OLD;
          END IF;
          IF OLD.valid_from < current_date
             AND (ROW({new}) IS DISTINCT FROM ROW({old}) OR NOT ST_OrderingEquals(NEW.geom, OLD.geom)) THEN
            INSERT INTO grids_versions ({columns}, geom, valid_from, valid_to, upload_id)
            VALUES ({old}, OLD.geom, OLD.valid_from, current_date, OLD.upload_id);
            IF NEW.valid_from <= OLD.valid_from THEN
              NEW.valid_from := current_date;  -- the new boundary is in force from today
            END IF;
          END IF;
          RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER grids_keep_version BEFORE UPDATE OR DELETE ON grids "
        "FOR EACH ROW EXECUTE FUNCTION guatu_keep_grid_version()"
    )


def downgrade() -> None:
    """Revert this migration."""
    op.execute("DROP TRIGGER grids_keep_version ON grids")
    op.execute("DROP FUNCTION guatu_keep_grid_version()")
    op.drop_index("ix_grids_versions_geom", table_name="grids_versions")
    op.drop_index("ix_grids_versions_code_dates", table_name="grids_versions")
    op.drop_table("grids_versions")
