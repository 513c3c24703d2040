"""Every committed write to a layer raises its generation, whoever writes (app, `guatu import`, plain SQL).

Servers keep tiles and extents in memory; before this only writes through the same process
told them, so another worker or the CLI left them serving old tiles until restarted. Now
each layer's table has a statement-level trigger (`layers.generations.track_writes`, which a
new layer's migration calls for its own table) that notes the layer against its transaction
in `layer_generation_marks`; a deferred constraint trigger there raises `layer_generations`
once per layer as the transaction commits, and forgets the marks.

Why at commit and not at once: the counter row of a layer is locked from its update until
the commit. Raised by the first statement, one upload (which writes its chunks as it checks
them) would hold up every other write to its layer, another upload or a one-parcel edit in
the app, for as long as it runs. Raised at commit, writers wait on each other only while
committing, and several layers are raised in key order, so two commits cannot deadlock.

Both functions are SECURITY DEFINER, owned by the owner: the app role only reads
`layer_generations` and cannot touch the marks. They look tables up in `public` before
`pg_temp` (as 0006's do), and nobody but the owner may attach them to another table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from layers.generations import track_writes, untrack_writes
from layers.triggers import generation_functions, generations_raise_trigger

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LAYERS = (
    ("divisions", "divisions"),
    ("grids", "grids"),
    ("parcels", "parcels"),
    ("shops", "shops"),
    ("zones", "zones"),
)
"""The layers (id, table) of this revision; a later layer's own migration tracks its table."""


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "layer_generations",
        sa.Column("layer", sa.String(length=40), nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("layer", name=op.f("pk_layer_generations")),
        comment="图层版本号 layer generations: raised by every committed write",
    )
    op.create_table(
        "layer_generation_marks",
        sa.Column("xact", sa.BigInteger(), nullable=False),
        sa.Column("layer", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("xact", "layer", name=op.f("pk_layer_generation_marks")),
        comment="未提交的写入 layers written by open transactions",
    )
    for routine in generation_functions():
        op.execute(routine.sql)
        op.execute(f"REVOKE ALL ON FUNCTION {routine.name}() FROM PUBLIC")
    op.execute(generations_raise_trigger().sql)
    for layer_id, table in LAYERS:
        for statement in track_writes(layer_id, table):
            op.execute(statement)


def downgrade() -> None:
    """Revert this migration."""
    op.execute("SET CONSTRAINTS layer_generation_raise IMMEDIATE")  # raise now what later downgrades wrote
    for layer_id, table in LAYERS:
        for statement in untrack_writes(layer_id, table):
            op.execute(statement)
    op.drop_table("layer_generation_marks")
    op.drop_table("layer_generations")
    for routine in generation_functions():
        op.execute(f"DROP FUNCTION {routine.name}()")
