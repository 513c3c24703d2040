"""Divisions may hold a county (区县, 6-digit GB/T 2260 code), so streets can be checked against it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:22:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this migration."""
    op.drop_constraint(op.f("ck_divisions_level_enum"), "divisions", type_="check")
    op.create_check_constraint(op.f("ck_divisions_level_enum"), "divisions", "level IN ('区县', '街道', '社区')")
    op.drop_constraint(op.f("ck_divisions_code_format"), "divisions", type_="check")
    op.create_check_constraint(
        op.f("ck_divisions_code_format"), "divisions", "code ~ '^([0-9]{6}|[0-9]{9}|[0-9]{12})$'"
    )


def downgrade() -> None:
    """Revert this migration."""
    op.execute("DELETE FROM divisions WHERE level = '区县'")
    op.drop_constraint(op.f("ck_divisions_code_format"), "divisions", type_="check")
    op.create_check_constraint(op.f("ck_divisions_code_format"), "divisions", "code ~ '^([0-9]{9}|[0-9]{12})$'")
    op.drop_constraint(op.f("ck_divisions_level_enum"), "divisions", type_="check")
    op.create_check_constraint(op.f("ck_divisions_level_enum"), "divisions", "level IN ('街道', '社区')")
