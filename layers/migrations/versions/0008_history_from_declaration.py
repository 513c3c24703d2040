"""Triggers from the declarations: the grid history trigger is generated from the layer's fields.

0004 wrote the grid history function with the grid's field list frozen in the migration:
a field added to the grid declaration would not have been kept in ``grids_versions``.
The function is now generated from the declaration (``layers.triggers.history_function``,
named after the layer's table: ``guatu_keep_grids_version``) and replaces 0004's; its
behaviour is the same. The dependents function of 0006 is rewritten from
``layers.triggers.dependents_function``: the same body, without 0006's indentation.
Both keep ``SET search_path`` (0006's hardening against the app's temporary tables).

The statements below are what ``guatu db revision`` (with the drift plugin,
``layers.drift``) wrote against a database at 0006, as PostgreSQL prints the definitions;
``tests/test_drift.py`` keeps the live database equal to what the declarations generate.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 12:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this migration."""
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_keep_grids_version()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "BEGIN\n"
        "  IF TG_OP = 'DELETE' THEN\n"
        "    IF OLD.valid_from < current_date THEN\n"
        "      INSERT INTO grids_versions (code, name, kind, community_code, manager, manager_phone, households, geom, valid_from, valid_to, upload_id)\n"
        "      VALUES (OLD.code, OLD.name, OLD.kind, OLD.community_code, OLD.manager, OLD.manager_phone, OLD.households, OLD.geom, OLD.valid_from, current_date, OLD.upload_id);\n"
        "    END IF;\n"
        "    RETURN OLD;\n"
        "  END IF;\n"
        "  IF OLD.valid_from < current_date\n"
        "     AND (ROW(NEW.code, NEW.name, NEW.kind, NEW.community_code, NEW.manager, NEW.manager_phone, NEW.households) IS DISTINCT FROM ROW(OLD.code, OLD.name, OLD.kind, OLD.community_code, OLD.manager, OLD.manager_phone, OLD.households) OR NOT ST_OrderingEquals(NEW.geom, OLD.geom)) THEN\n"
        "    INSERT INTO grids_versions (code, name, kind, community_code, manager, manager_phone, households, geom, valid_from, valid_to, upload_id)\n"
        "    VALUES (OLD.code, OLD.name, OLD.kind, OLD.community_code, OLD.manager, OLD.manager_phone, OLD.households, OLD.geom, OLD.valid_from, current_date, OLD.upload_id);\n"
        "    IF NEW.valid_from <= OLD.valid_from THEN\n"
        "      NEW.valid_from := current_date;  -- the new boundary is in force from today\n"
        "    END IF;\n"
        "  END IF;\n"
        "  RETURN NEW;\n"
        "END\n"
        "$function$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_refuse_orphans()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "DECLARE\n"
        "  i integer;\n"
        "  n bigint;\n"
        "  counts jsonb := '{}';\n"
        "BEGIN\n"
        "  IF TG_OP = 'UPDATE' AND NEW.code IS NOT DISTINCT FROM OLD.code THEN\n"
        "    RETURN NEW;\n"
        "  END IF;\n"
        "  FOR i IN 0 .. TG_NARGS / 2 - 1 LOOP\n"
        "    EXECUTE format('SELECT count(*) FROM %I WHERE %I = $1', TG_ARGV[2 * i], TG_ARGV[2 * i + 1])\n"
        "      INTO n USING OLD.code;\n"
        "    IF n > 0 THEN\n"
        "      counts := counts || jsonb_build_object(TG_ARGV[2 * i] || '.' || TG_ARGV[2 * i + 1], n);\n"
        "    END IF;\n"
        "  END LOOP;\n"
        "  IF counts <> '{}' THEN\n"
        "    RAISE EXCEPTION USING\n"
        "      ERRCODE = 'foreign_key_violation',\n"
        "      CONSTRAINT = 'guatu_has_dependents',\n"
        "      MESSAGE = format('%s %s is still named by %s', TG_TABLE_NAME, OLD.code, counts),\n"
        "      DETAIL = counts::text;\n"
        "  END IF;\n"
        "  IF TG_OP = 'DELETE' THEN\n"
        "    RETURN OLD;\n"
        "  END IF;\n"
        "  RETURN NEW;\n"
        "END\n"
        "$function$"
    )
    op.execute("DROP TRIGGER grids_keep_version ON grids")
    op.execute(
        "CREATE TRIGGER grids_keep_version BEFORE DELETE OR UPDATE ON grids FOR EACH ROW EXECUTE FUNCTION guatu_keep_grids_version()"
    )
    op.execute("DROP FUNCTION guatu_keep_grid_version()")


def downgrade() -> None:
    """Revert this migration."""
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_keep_grid_version()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "        BEGIN\n"
        "          IF TG_OP = 'DELETE' THEN\n"
        "            IF OLD.valid_from < current_date THEN\n"
        "              INSERT INTO grids_versions (code, name, kind, community_code, manager, manager_phone, households, geom, valid_from, valid_to, upload_id)\n"
        "              VALUES (OLD.code, OLD.name, OLD.kind, OLD.community_code, OLD.manager, OLD.manager_phone, OLD.households, OLD.geom, OLD.valid_from, current_date, OLD.upload_id);\n"
        "            END IF;\n"
        "            RETURN OLD;\n"
        "          END IF;\n"
        "          IF OLD.valid_from < current_date\n"
        "             AND (ROW(NEW.code, NEW.name, NEW.kind, NEW.community_code, NEW.manager, NEW.manager_phone, NEW.households) IS DISTINCT FROM ROW(OLD.code, OLD.name, OLD.kind, OLD.community_code, OLD.manager, OLD.manager_phone, OLD.households) OR NOT ST_OrderingEquals(NEW.geom, OLD.geom)) THEN\n"
        "            INSERT INTO grids_versions (code, name, kind, community_code, manager, manager_phone, households, geom, valid_from, valid_to, upload_id)\n"
        "            VALUES (OLD.code, OLD.name, OLD.kind, OLD.community_code, OLD.manager, OLD.manager_phone, OLD.households, OLD.geom, OLD.valid_from, current_date, OLD.upload_id);\n"
        "            IF NEW.valid_from <= OLD.valid_from THEN\n"
        "              NEW.valid_from := current_date;  -- the new boundary is in force from today\n"
        "            END IF;\n"
        "          END IF;\n"
        "          RETURN NEW;\n"
        "        END $function$"
    )
    op.execute("DROP TRIGGER grids_keep_version ON grids")
    op.execute(
        "CREATE TRIGGER grids_keep_version BEFORE DELETE OR UPDATE ON grids FOR EACH ROW EXECUTE FUNCTION guatu_keep_grid_version()"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION guatu_refuse_orphans()\n"
        " RETURNS trigger\n"
        " LANGUAGE plpgsql\n"
        " SET search_path TO 'pg_catalog', 'public', 'pg_temp'\n"
        "AS $function$\n"
        "        DECLARE\n"
        "          i integer;\n"
        "          n bigint;\n"
        "          counts jsonb := '{}';\n"
        "        BEGIN\n"
        "          IF TG_OP = 'UPDATE' AND NEW.code IS NOT DISTINCT FROM OLD.code THEN\n"
        "            RETURN NEW;\n"
        "          END IF;\n"
        "          FOR i IN 0 .. TG_NARGS / 2 - 1 LOOP\n"
        "            EXECUTE format('SELECT count(*) FROM %I WHERE %I = $1', TG_ARGV[2 * i], TG_ARGV[2 * i + 1])\n"
        "              INTO n USING OLD.code;\n"
        "            IF n > 0 THEN\n"
        "              counts := counts || jsonb_build_object(TG_ARGV[2 * i] || '.' || TG_ARGV[2 * i + 1], n);\n"
        "            END IF;\n"
        "          END LOOP;\n"
        "          IF counts <> '{}' THEN\n"
        "            RAISE EXCEPTION USING\n"
        "              ERRCODE = 'foreign_key_violation',\n"
        "              CONSTRAINT = 'guatu_has_dependents',\n"
        "              MESSAGE = format('%s %s is still named by %s', TG_TABLE_NAME, OLD.code, counts),\n"
        "              DETAIL = counts::text;\n"
        "          END IF;\n"
        "          IF TG_OP = 'DELETE' THEN\n"
        "            RETURN OLD;\n"
        "          END IF;\n"
        "          RETURN NEW;\n"
        "        END $function$"
    )
    op.execute("DROP FUNCTION guatu_keep_grids_version()")
