"""A division's level may carry its rural name (乡镇, 行政村) as well as its urban one (街道, 社区).

The hierarchy (layers.hierarchy) names the second and third levels by deployment; codes and
rules are the same, so a rural deployment is configuration only once the names are allowed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 13:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this migration."""
    op.alter_column("divisions", "level", type_=sa.String(3), existing_type=sa.String(2), existing_nullable=False)
    op.drop_constraint(op.f("ck_divisions_level_enum"), "divisions", type_="check")
    op.create_check_constraint(
        op.f("ck_divisions_level_enum"), "divisions", "level IN ('区县', '街道', '乡镇', '社区', '行政村')"
    )


def downgrade() -> None:
    """Revert this migration (rural names become their urban equivalents)."""
    op.execute("UPDATE divisions SET level = '街道' WHERE level = '乡镇'")
    op.execute("UPDATE divisions SET level = '社区' WHERE level = '行政村'")
    op.drop_constraint(op.f("ck_divisions_level_enum"), "divisions", type_="check")
    op.create_check_constraint(op.f("ck_divisions_level_enum"), "divisions", "level IN ('区县', '街道', '社区')")
    op.alter_column("divisions", "level", type_=sa.String(2), existing_type=sa.String(3), existing_nullable=False)
