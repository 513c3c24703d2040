"""The campaign stage of every asset: 排查摸底 → 清理回收 → 盘活利用 → 建章立制.

Parcels, shops and public revenue points get ``campaign_stage`` (empty: not yet surveyed);
their change-log functions log it with the rest of the row.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 17:33:13
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this migration."""
    op.add_column(
        "parcels", sa.Column("campaign_stage", sa.String(length=4), nullable=True, comment="工作阶段 Campaign stage")
    )
    op.add_column(
        "revenue_points",
        sa.Column("campaign_stage", sa.String(length=4), nullable=True, comment="工作阶段 Campaign stage"),
    )
    op.add_column(
        "shops", sa.Column("campaign_stage", sa.String(length=4), nullable=True, comment="工作阶段 Campaign stage")
    )
    op.create_check_constraint(
        op.f("ck_parcels_campaign_stage_enum"),
        "parcels",
        "campaign_stage IN ('排查摸底', '清理回收', '盘活利用', '建章立制')",
    )
    op.create_check_constraint(
        op.f("ck_revenue_points_campaign_stage_enum"),
        "revenue_points",
        "campaign_stage IN ('排查摸底', '清理回收', '盘活利用', '建章立制')",
    )
    op.create_check_constraint(
        op.f("ck_shops_campaign_stage_enum"),
        "shops",
        "campaign_stage IN ('排查摸底', '清理回收', '盘活利用', '建章立制')",
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_log_parcels()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SECURITY DEFINER\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "DECLARE\n"
        "  who text := left(coalesce(nullif(current_setting('guatu.user', true), ''), session_user::text), 100);\n"
        "  why text := left(nullif(current_setting('guatu.note', true), ''), 500);\n"
        "BEGIN\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id)\n"
        "      SELECT 'parcels', n.id, 'insert', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id\n"
        "      FROM new_rows n;\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'parcels', n.id, 'update', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'land_use_code', o.land_use_code, 'ownership', o.ownership, 'use_status', o.use_status, 'stage', o.stage, 'mode', o.mode, 'idle_since', o.idle_since, 'idle_reason', o.idle_reason, 'owner', o.owner, 'address', o.address, 'campaign_stage', o.campaign_stage, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM new_rows n JOIN old_rows o ON o.id = n.id;\n"
        "  ELSE\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'parcels', o.id, 'delete', who, session_user, why, o.version, COALESCE(o.grid_code, o.community_code), o.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'land_use_code', o.land_use_code, 'ownership', o.ownership, 'use_status', o.use_status, 'stage', o.stage, 'mode', o.mode, 'idle_since', o.idle_since, 'idle_reason', o.idle_reason, 'owner', o.owner, 'address', o.address, 'campaign_stage', o.campaign_stage, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM old_rows o;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END\n"
        "$function$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_log_revenue_points()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SECURITY DEFINER\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "DECLARE\n"
        "  who text := left(coalesce(nullif(current_setting('guatu.user', true), ''), session_user::text), 100);\n"
        "  why text := left(nullif(current_setting('guatu.note', true), ''), 500);\n"
        "BEGIN\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id)\n"
        "      SELECT 'revenue_points', n.id, 'insert', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id\n"
        "      FROM new_rows n;\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'revenue_points', n.id, 'update', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'kind', o.kind, 'quantity', o.quantity, 'size_m2', o.size_m2, 'operator', o.operator, 'status', o.status, 'annual_income', o.annual_income, 'address', o.address, 'campaign_stage', o.campaign_stage, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM new_rows n JOIN old_rows o ON o.id = n.id;\n"
        "  ELSE\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'revenue_points', o.id, 'delete', who, session_user, why, o.version, COALESCE(o.grid_code, o.community_code), o.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'kind', o.kind, 'quantity', o.quantity, 'size_m2', o.size_m2, 'operator', o.operator, 'status', o.status, 'annual_income', o.annual_income, 'address', o.address, 'campaign_stage', o.campaign_stage, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM old_rows o;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END\n"
        "$function$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_log_shops()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SECURITY DEFINER\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "DECLARE\n"
        "  who text := left(coalesce(nullif(current_setting('guatu.user', true), ''), session_user::text), 100);\n"
        "  why text := left(nullif(current_setting('guatu.note', true), ''), 500);\n"
        "BEGIN\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id)\n"
        "      SELECT 'shops', n.id, 'insert', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id\n"
        "      FROM new_rows n;\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'shops', n.id, 'update', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'address', o.address, 'street_segment', o.street_segment, 'floor', o.floor, 'floor_area', o.floor_area, 'usable_area', o.usable_area, 'ownership', o.ownership, 'owner', o.owner, 'status', o.status, 'idle_since', o.idle_since, 'former_business', o.former_business, 'intended_business', o.intended_business, 'asking_rent', o.asking_rent, 'letting_status', o.letting_status, 'campaign_stage', o.campaign_stage, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM new_rows n JOIN old_rows o ON o.id = n.id;\n"
        "  ELSE\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'shops', o.id, 'delete', who, session_user, why, o.version, COALESCE(o.grid_code, o.community_code), o.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'address', o.address, 'street_segment', o.street_segment, 'floor', o.floor, 'floor_area', o.floor_area, 'usable_area', o.usable_area, 'ownership', o.ownership, 'owner', o.owner, 'status', o.status, 'idle_since', o.idle_since, 'former_business', o.former_business, 'intended_business', o.intended_business, 'asking_rent', o.asking_rent, 'letting_status', o.letting_status, 'campaign_stage', o.campaign_stage, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM old_rows o;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END\n"
        "$function$"
    )


def downgrade() -> None:
    """Revert this migration."""
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_log_shops()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SECURITY DEFINER\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "DECLARE\n"
        "  who text := left(coalesce(nullif(current_setting('guatu.user', true), ''), session_user::text), 100);\n"
        "  why text := left(nullif(current_setting('guatu.note', true), ''), 500);\n"
        "BEGIN\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id)\n"
        "      SELECT 'shops', n.id, 'insert', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id\n"
        "      FROM new_rows n;\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'shops', n.id, 'update', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'address', o.address, 'street_segment', o.street_segment, 'floor', o.floor, 'floor_area', o.floor_area, 'usable_area', o.usable_area, 'ownership', o.ownership, 'owner', o.owner, 'status', o.status, 'idle_since', o.idle_since, 'former_business', o.former_business, 'intended_business', o.intended_business, 'asking_rent', o.asking_rent, 'letting_status', o.letting_status, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM new_rows n JOIN old_rows o ON o.id = n.id;\n"
        "  ELSE\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'shops', o.id, 'delete', who, session_user, why, o.version, COALESCE(o.grid_code, o.community_code), o.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'address', o.address, 'street_segment', o.street_segment, 'floor', o.floor, 'floor_area', o.floor_area, 'usable_area', o.usable_area, 'ownership', o.ownership, 'owner', o.owner, 'status', o.status, 'idle_since', o.idle_since, 'former_business', o.former_business, 'intended_business', o.intended_business, 'asking_rent', o.asking_rent, 'letting_status', o.letting_status, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM old_rows o;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END\n"
        "$function$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_log_revenue_points()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SECURITY DEFINER\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "DECLARE\n"
        "  who text := left(coalesce(nullif(current_setting('guatu.user', true), ''), session_user::text), 100);\n"
        "  why text := left(nullif(current_setting('guatu.note', true), ''), 500);\n"
        "BEGIN\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id)\n"
        "      SELECT 'revenue_points', n.id, 'insert', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id\n"
        "      FROM new_rows n;\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'revenue_points', n.id, 'update', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'kind', o.kind, 'quantity', o.quantity, 'size_m2', o.size_m2, 'operator', o.operator, 'status', o.status, 'annual_income', o.annual_income, 'address', o.address, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM new_rows n JOIN old_rows o ON o.id = n.id;\n"
        "  ELSE\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'revenue_points', o.id, 'delete', who, session_user, why, o.version, COALESCE(o.grid_code, o.community_code), o.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'kind', o.kind, 'quantity', o.quantity, 'size_m2', o.size_m2, 'operator', o.operator, 'status', o.status, 'annual_income', o.annual_income, 'address', o.address, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM old_rows o;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END\n"
        "$function$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_log_parcels()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SECURITY DEFINER\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "DECLARE\n"
        "  who text := left(coalesce(nullif(current_setting('guatu.user', true), ''), session_user::text), 100);\n"
        "  why text := left(nullif(current_setting('guatu.note', true), ''), 500);\n"
        "BEGIN\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id)\n"
        "      SELECT 'parcels', n.id, 'insert', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id\n"
        "      FROM new_rows n;\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'parcels', n.id, 'update', who, session_user, why, n.version, COALESCE(n.grid_code, n.community_code), n.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'land_use_code', o.land_use_code, 'ownership', o.ownership, 'use_status', o.use_status, 'stage', o.stage, 'mode', o.mode, 'idle_since', o.idle_since, 'idle_reason', o.idle_reason, 'owner', o.owner, 'address', o.address, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM new_rows n JOIN old_rows o ON o.id = n.id;\n"
        "  ELSE\n"
        "    INSERT INTO change_log (layer, feature_id, op, actor, db_role, note, version, area, upload_id, before, before_geom)\n"
        "      SELECT 'parcels', o.id, 'delete', who, session_user, why, o.version, COALESCE(o.grid_code, o.community_code), o.upload_id,\n"
        "             jsonb_build_object('code', o.code, 'name', o.name, 'land_use_code', o.land_use_code, 'ownership', o.ownership, 'use_status', o.use_status, 'stage', o.stage, 'mode', o.mode, 'idle_since', o.idle_since, 'idle_reason', o.idle_reason, 'owner', o.owner, 'address', o.address, 'community_code', o.community_code, 'grid_code', o.grid_code, 'version', o.version), o.geom\n"
        "      FROM old_rows o;\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END\n"
        "$function$"
    )
    op.drop_constraint(op.f("ck_shops_campaign_stage_enum"), "shops", type_="check")
    op.drop_constraint(op.f("ck_revenue_points_campaign_stage_enum"), "revenue_points", type_="check")
    op.drop_constraint(op.f("ck_parcels_campaign_stage_enum"), "parcels", type_="check")
    op.drop_column("shops", "campaign_stage")
    op.drop_column("revenue_points", "campaign_stage")
    op.drop_column("parcels", "campaign_stage")
