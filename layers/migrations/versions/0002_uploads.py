"""Uploads and feature provenance.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:42:57.134796
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("layer", sa.String(length=40), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("options_key", sa.String(length=64), nullable=False, comment="hash of the options"),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("filename", sa.String(length=300), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("uploader", sa.String(length=100), nullable=True),
        sa.Column("options", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False, comment="dry_run, committed, rejected, failed"),
        sa.Column("report", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_uploads_idempotency_key")),
        comment="上传记录 uploads",
    )
    op.create_index(op.f("ix_uploads_options_key"), "uploads", ["options_key"], unique=False)
    op.create_index(op.f("ix_uploads_sha256"), "uploads", ["sha256"], unique=False)
    op.add_column(
        "divisions", sa.Column("upload_id", sa.Integer(), nullable=True, comment="上传批次 upload that last wrote it")
    )
    op.create_index(op.f("ix_divisions_upload_id"), "divisions", ["upload_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_divisions_upload_id_uploads"), "divisions", "uploads", ["upload_id"], ["id"], ondelete="SET NULL"
    )
    op.add_column(
        "grids", sa.Column("upload_id", sa.Integer(), nullable=True, comment="上传批次 upload that last wrote it")
    )
    op.create_index(op.f("ix_grids_upload_id"), "grids", ["upload_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_grids_upload_id_uploads"), "grids", "uploads", ["upload_id"], ["id"], ondelete="SET NULL"
    )
    op.add_column(
        "parcels", sa.Column("upload_id", sa.Integer(), nullable=True, comment="上传批次 upload that last wrote it")
    )
    op.create_index(op.f("ix_parcels_upload_id"), "parcels", ["upload_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_parcels_upload_id_uploads"), "parcels", "uploads", ["upload_id"], ["id"], ondelete="SET NULL"
    )
    op.add_column(
        "shops", sa.Column("upload_id", sa.Integer(), nullable=True, comment="上传批次 upload that last wrote it")
    )
    op.create_index(op.f("ix_shops_upload_id"), "shops", ["upload_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_shops_upload_id_uploads"), "shops", "uploads", ["upload_id"], ["id"], ondelete="SET NULL"
    )
    op.add_column(
        "zones", sa.Column("upload_id", sa.Integer(), nullable=True, comment="上传批次 upload that last wrote it")
    )
    op.create_index(op.f("ix_zones_upload_id"), "zones", ["upload_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_zones_upload_id_uploads"), "zones", "uploads", ["upload_id"], ["id"], ondelete="SET NULL"
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_constraint(op.f("fk_zones_upload_id_uploads"), "zones", type_="foreignkey")
    op.drop_index(op.f("ix_zones_upload_id"), table_name="zones")
    op.drop_column("zones", "upload_id")
    op.drop_constraint(op.f("fk_shops_upload_id_uploads"), "shops", type_="foreignkey")
    op.drop_index(op.f("ix_shops_upload_id"), table_name="shops")
    op.drop_column("shops", "upload_id")
    op.drop_constraint(op.f("fk_parcels_upload_id_uploads"), "parcels", type_="foreignkey")
    op.drop_index(op.f("ix_parcels_upload_id"), table_name="parcels")
    op.drop_column("parcels", "upload_id")
    op.drop_constraint(op.f("fk_grids_upload_id_uploads"), "grids", type_="foreignkey")
    op.drop_index(op.f("ix_grids_upload_id"), table_name="grids")
    op.drop_column("grids", "upload_id")
    op.drop_constraint(op.f("fk_divisions_upload_id_uploads"), "divisions", type_="foreignkey")
    op.drop_index(op.f("ix_divisions_upload_id"), table_name="divisions")
    op.drop_column("divisions", "upload_id")
    op.drop_index(op.f("ix_uploads_sha256"), table_name="uploads")
    op.drop_index(op.f("ix_uploads_options_key"), table_name="uploads")
    op.drop_table("uploads")
