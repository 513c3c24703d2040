"""Accounts, row-level security by area, the change log, versions and personal fields behind the owner.

- ``users``, ``web_sessions``, ``api_tokens``, ``personal_access_log``: who signs in, with
  which role and area (layers.accounts); who was shown personal data in full.
- every layer table gets a ``version`` (raised by a row trigger on update: the ETag) and
  statement triggers writing ``change_log`` (layers.changes): inserts, updates and deletes
  by anyone (the app, ``guatu import``, plain SQL), with the row before the change.
- row-level security on every layer table and on the change log (layers.access): the app
  role reads and writes only inside the area the request's user states; nothing without one.
- personal fields (household heads, grid managers' phones) are not readable by the app role:
  a function run as the owner gives them, in full or masked by the actor's role and area.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

from layers import access, changes, triggers
from layers.base import REGISTRY

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LAYERS = ("divisions", "grids", "parcels", "shops", "zones", "revenue_points")
"""The layers this revision found (a layer declared later gets all of this from its own revision)."""


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(60), nullable=False),
        sa.Column("display_name", sa.String(60), server_default="", nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("area", sa.String(19), nullable=True, comment="the unit code the role applies in"),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
        comment="用户 users",
    )
    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        comment="登录会话 web sessions",
    )
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.Boolean(), server_default="false", nullable=False),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
        comment="接口令牌 API tokens",
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])
    op.create_table(
        "personal_access_log",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.Column("username", sa.String(60), nullable=False),
        sa.Column("layer", sa.String(40), nullable=False),
        sa.Column("feature_ids", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("fields", postgresql.ARRAY(sa.String(60)), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        comment="个人信息访问记录 access to unmasked personal data",
    )
    op.create_table(
        "change_log",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("layer", sa.String(40), nullable=False),
        sa.Column("feature_id", sa.Integer(), nullable=False),
        sa.Column("op", sa.String(8), nullable=False, comment="insert, update, delete"),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False, comment="the app's user, else the database role"),
        sa.Column("db_role", sa.String(63), nullable=False),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column(
            "version", sa.Integer(), nullable=False, comment="the feature's version after the change (delete: before)"
        ),
        sa.Column("area", sa.String(19), nullable=True, comment="the area code of the row (who may read this)"),
        sa.Column("upload_id", sa.Integer(), nullable=True),
        sa.Column("before", postgresql.JSONB(), nullable=True, comment="the row before (update, delete)"),
        sa.Column(
            "before_geom",
            Geometry(srid=4490, spatial_index=False, from_text="ST_GeomFromEWKT", name="geometry"),
            nullable=True,
        ),
        comment="修改历史 every insert, update and delete of a feature",
    )
    op.create_index("ix_change_log_feature", "change_log", ["layer", "feature_id", "id"])
    # An Idempotency-Key is its uploader's: another user's same key is another upload, not a clash.
    op.drop_constraint("uq_uploads_idempotency_key", "uploads", type_="unique")
    op.create_unique_constraint("uq_uploads_uploader_idempotency_key", "uploads", ["uploader", "idempotency_key"])
    op.create_index("ix_change_log_at", "change_log", ["layer", "at"])
    for layer_id in LAYERS:
        op.add_column(
            REGISTRY[layer_id].table,
            sa.Column(
                "version",
                sa.Integer(),
                server_default="1",
                nullable=False,
                comment="版本 version, raised on every update",
            ),
        )
    own = {access.shown_function(REGISTRY[layer_id]) for layer_id in LAYERS}
    own |= {access.taken_function(REGISTRY[layer_id]) for layer_id in LAYERS}
    own |= {changes.log_function(REGISTRY[layer_id]) for layer_id in LAYERS}
    for routine in triggers.access_functions():
        if routine.name.startswith(("guatu_shown_", "guatu_taken_", "guatu_log_")) and routine.name not in own:
            continue  # a layer declared after this revision: its own revision makes it
        op.execute(routine.sql)
    op.execute(triggers.dependents_function().sql)  # now SECURITY DEFINER: it counts dependents the actor cannot see
    for layer_id in LAYERS:
        for trigger in triggers.change_triggers(REGISTRY[layer_id]):
            op.execute(trigger.sql)
    tables = {REGISTRY[layer_id].table for layer_id in LAYERS} | {access.CHANGE_LOG, access.UPLOADS}
    for policy in access.declared_policies():
        if policy.table in tables:
            op.execute(policy.sql)


def downgrade() -> None:
    """Revert this migration."""
    for table in (access.UPLOADS, access.CHANGE_LOG):
        for name in ("guatu_read", "guatu_insert", "guatu_update"):
            op.execute(f"DROP POLICY IF EXISTS {name} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for layer_id in LAYERS:
        table = REGISTRY[layer_id].table
        for name in ("guatu_read", "guatu_insert", "guatu_update", "guatu_delete"):
            op.execute(f"DROP POLICY IF EXISTS {name} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        for trigger in triggers.change_triggers(REGISTRY[layer_id]):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger.name} ON {table}")
        op.drop_column(table, "version")
    for routine in reversed(triggers.access_functions()):
        op.execute(f"DROP FUNCTION IF EXISTS {routine.name} CASCADE")
    for table in ("change_log", "personal_access_log", "api_tokens", "web_sessions", "users"):
        op.drop_table(table)
    op.drop_constraint("uq_uploads_uploader_idempotency_key", "uploads", type_="unique")
    op.create_unique_constraint("uq_uploads_idempotency_key", "uploads", ["idempotency_key"])
