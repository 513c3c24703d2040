"""A unit that others name cannot be deleted or recoded while they do (no orphans, whoever writes).

Grids name their community, parcels, shops and zones their community and grid, a street's
communities their street, a courtyard zone its homestead parcel. Deleting or recoding a
unit that is still named is refused by a trigger with SQLSTATE 23503 (foreign key
violation), constraint name `guatu_has_dependents`, and the counts per dependent layer as
JSON in the detail: the app answers 409 with them, and plain SQL is held to the same rule.
A trigger rather than foreign keys: a frame may be loaded after what lies in it (grids
uploaded before the divisions), and a foreign key would cost a lookup per uploaded row.

The links are those the layer declarations state (`layers.base.references()`), as of this
revision; a test keeps the two in step.

Both trigger functions (this one and 0004's grid history) look their tables up in `public`
before `pg_temp`: otherwise the app role, which may create temporary tables, could shadow
`zones` or `grids_versions` with one of its own and slip past them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 12:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEPENDENTS = {
    "divisions": (
        ("divisions", "parent_code"),
        ("grids", "community_code"),
        ("parcels", "community_code"),
        ("shops", "community_code"),
        ("zones", "community_code"),
    ),
    "grids": (("parcels", "grid_code"), ("shops", "grid_code"), ("zones", "grid_code")),
    "parcels": (("zones", "homestead_parcel_code"),),
}
"""Per unit layer, the (layer, field) pairs that name its features by code."""

SEARCH_PATH = "pg_catalog, public, pg_temp"
"""Where the trigger functions look tables up: the app's temporary tables last, never instead of the real ones."""

NEW_INDEXES = (("divisions", "parent_code"), ("zones", "homestead_parcel_code"))
"""Link fields not indexed before: the trigger looks dependents up by them."""


def upgrade() -> None:
    """Apply this migration."""
    for table, column in NEW_INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])
    op.execute(
        """
        CREATE FUNCTION guatu_refuse_orphans() RETURNS trigger LANGUAGE plpgsql
        SET search_path = """
        + SEARCH_PATH
        + """ AS $$
        DECLARE
          i integer;
          n bigint;
          counts jsonb := '{}';
        BEGIN
          IF TG_OP = 'UPDATE' AND NEW.code IS NOT DISTINCT FROM OLD.code THEN
            RETURN NEW;
          END IF;
          FOR i IN 0 .. TG_NARGS / 2 - 1 LOOP
            EXECUTE format('SELECT count(*) FROM %I WHERE %I = $1', TG_ARGV[2 * i], TG_ARGV[2 * i + 1])
              INTO n USING OLD.code;
            IF n > 0 THEN
              counts := counts || jsonb_build_object(TG_ARGV[2 * i] || '.' || TG_ARGV[2 * i + 1], n);
            END IF;
          END LOOP;
          IF counts <> '{}' THEN
            RAISE EXCEPTION USING
              ERRCODE = 'foreign_key_violation',
              CONSTRAINT = 'guatu_has_dependents',
              MESSAGE = format('%s %s is still named by %s', TG_TABLE_NAME, OLD.code, counts),
              DETAIL = counts::text;
          END IF;
          IF TG_OP = 'DELETE' THEN
            RETURN OLD;
          END IF;
          RETURN NEW;
        END $$
        """
    )
    op.execute(f"ALTER FUNCTION guatu_keep_grid_version() SET search_path = {SEARCH_PATH}")
    for table, dependents in DEPENDENTS.items():
        args = ", ".join(f"'{name}'" for pair in dependents for name in pair)
        op.execute(
            f"CREATE TRIGGER {table}_keep_dependents BEFORE DELETE OR UPDATE OF code ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION guatu_refuse_orphans({args})"
        )


def downgrade() -> None:
    """Revert this migration."""
    for table in DEPENDENTS:
        op.execute(f"DROP TRIGGER {table}_keep_dependents ON {table}")
    op.execute("DROP FUNCTION guatu_refuse_orphans()")
    op.execute("ALTER FUNCTION guatu_keep_grid_version() RESET search_path")
    for table, column in NEW_INDEXES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
