"""What a bulk upload can afford: land-use codes kept by a CHECK, provenance without a foreign key,
the area in 亩 computed when read.

A foreign key is checked by a trigger once per inserted row; on a 100,000-parcel upload
the two on `parcels` cost about as much as everything else the database does. The land-use
code list is a national standard frozen in 0001, so a CHECK on the same list keeps bad
codes out as surely. `upload_id` points into the append-only upload log, written in the
same transaction as the rows it tags.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LAYERS = ("divisions", "grids", "parcels", "shops", "zones")
WITH_AREA = ("divisions", "grids", "parcels", "zones")


def upgrade() -> None:
    """Apply this migration."""
    for table in WITH_AREA:  # 亩 are computed when read, from the stored m²
        op.drop_column(table, "area_mu")
    for table in LAYERS:
        op.drop_constraint(f"fk_{table}_upload_id_uploads", table, type_="foreignkey")
    op.drop_constraint("fk_parcels_land_use_code_land_use_codes", "parcels", type_="foreignkey")
    # the frozen list of 0001, as the table holds it
    op.execute(
        """
        DO $$
        BEGIN
          EXECUTE format(
            'ALTER TABLE parcels ADD CONSTRAINT ck_parcels_land_use_code_known CHECK (land_use_code IN (%s))',
            (SELECT string_agg(quote_literal(code), ', ' ORDER BY code) FROM land_use_codes));
        END $$
        """
    )


def downgrade() -> None:
    """Revert this migration."""
    for table in WITH_AREA:
        op.add_column(
            table,
            sa.Column(
                "area_mu",
                sa.Float(),
                sa.Computed("ST_Area(geom::geography, true) * 3 / 2000", persisted=True),
                nullable=True,
                comment="面积（亩） area in mu",
            ),
        )
    op.drop_constraint(op.f("ck_parcels_land_use_code_known"), "parcels", type_="check")
    op.create_foreign_key(
        "fk_parcels_land_use_code_land_use_codes",
        "parcels",
        "land_use_codes",
        ["land_use_code"],
        ["code"],
        ondelete="RESTRICT",
    )
    for table in LAYERS:
        op.create_foreign_key(
            f"fk_{table}_upload_id_uploads", table, "uploads", ["upload_id"], ["id"], ondelete="SET NULL"
        )
