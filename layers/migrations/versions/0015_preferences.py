"""Ledger tables: per-user preferences (column choice), and indexes the ledger sorts and pages by.

- ``user_preferences`` (layers.preferences): one JSON value per user and key, each user's own
  under row-level security (layers.access.declared_policies).
- every filtered field gets an index on (value, id), and every layer with an area one on
  (area_m2, id): a ledger page sorted by them, with the id breaking ties, reads a county's
  first rows from the index instead of sorting every row.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 17:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from layers import access

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SORTED: dict[str, tuple[str, ...]] = {
    "divisions": ("level", "area_m2"),
    "grids": ("kind", "area_m2"),
    "parcels": ("land_use_code", "ownership", "use_status", "stage", "mode", "idle_since", "campaign_stage", "area_m2"),
    "zones": ("scope", "area_m2"),
    "shops": ("ownership", "status", "idle_since", "letting_status", "campaign_stage"),
    "revenue_points": ("kind", "status", "campaign_stage"),
}
"""The columns of each layer (as declared at this revision) a ledger sorts by, each indexed with the id."""


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        access.PREFERENCES,
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(60), nullable=False),
        sa.Column("value", postgresql.JSONB(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key"),
        comment="用户偏好 per-user preferences (ledger columns)",
    )
    for policy in access.declared_policies():
        if policy.table == access.PREFERENCES:
            op.execute(policy.sql)
    for table, columns in SORTED.items():
        for column in columns:
            op.create_index(f"ix_{table}_{column}_id", table, [column, "id"], unique=False)


def downgrade() -> None:
    """Revert this migration."""
    for table, columns in SORTED.items():
        for column in columns:
            op.drop_index(f"ix_{table}_{column}_id", table_name=table)
    op.drop_table(access.PREFERENCES)
