"""Other attributes: every layer table keeps a file's fields no declared field takes (``extra``, JSONB).

An upload maps a file's fields to the layer's (layers.mapping); the fields left over are kept
per feature as other attributes (其他属性), capped in Python (50 keys, 4 KB), never the
personal-looking ones. Nullable: the features stored so far have none.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("divisions", "grids", "parcels", "zones", "shops", "revenue_points")
"""The layer tables at this revision."""


def upgrade() -> None:
    """Apply this migration."""
    for table in TABLES:
        op.add_column(table, sa.Column("extra", postgresql.JSONB(), nullable=True, comment="其他属性 Other attributes"))


def downgrade() -> None:
    """Revert this migration."""
    for table in TABLES:
        op.drop_column(table, "extra")
