"""The triggers the layer declarations call for, as SQL: nothing here names a layer's table or fields.

Two kinds, both derived from :data:`layers.base.REGISTRY`:

- a versioned layer (``history=True``) copies a replaced or deleted row into its history
  table; the columns copied are the layer's fields, so a field added to the declaration
  changes the function (``guatu db revision`` writes the new one, ``guatu db check`` sees a stale one);
- a unit named by others (:func:`layers.base.references`) cannot be deleted or recoded while
  it is named: one shared function, one trigger per named layer listing who names it.

Every function looks tables up in ``public`` before ``pg_temp``: the app role may create
temporary tables, and one called like a real table must not stand in for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from layers import access, changes, contracts
from layers.base import REGISTRY, VALID_FROM, VALID_TO, Layer, references
from layers.generations import NOTE_FUNCTION, track_writes

SEARCH_PATH = "pg_catalog, public, pg_temp"
"""Where the trigger functions look tables up: the app's temporary tables last, never instead of the real ones."""

VALIDITY = (VALID_FROM, VALID_TO)
"""The fields a versioned layer is in force by (the history table's index uses them too)."""

DEPENDENTS_FUNCTION = "guatu_refuse_orphans"
DEPENDENTS_CONSTRAINT = "guatu_has_dependents"
"""The constraint name a refused delete or recode carries (SQLSTATE 23503): the app maps it to 409."""

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Routine:
    """A trigger function: its name (no arguments) and the SQL that creates or replaces it."""

    name: str
    sql: str


@dataclass(frozen=True)
class Trigger:
    """A trigger on TABLE running FUNCTION, and the SQL that creates it."""

    table: str
    name: str
    function: str
    sql: str


def _ident(name: str) -> str:
    """Return NAME if it is a plain lower-case identifier (as every declared name is), else refuse it."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain identifier")
    return name


def history_function(layer: Layer) -> Routine:
    """Return the function that keeps LAYER's replaced versions in its history table.

    A row changed in its fields or boundary (not in its dates alone), or deleted, is copied
    with ``valid_to`` = today, unless it came into force today; a changed row is then in
    force from today (unless the change sets a later date).
    """
    if not layer.history_table:
        raise ValueError(f"layer {layer.id} keeps no history")
    missing = [name for name in VALIDITY if name not in layer.field_names]
    if missing:
        raise ValueError(f"layer {layer.id} keeps history but has no field {', '.join(missing)}")
    history = _ident(layer.history_table)
    start = VALID_FROM
    kept = [_ident(name) for name in layer.field_names if name not in VALIDITY]
    columns = ", ".join([*kept, "geom", *VALIDITY, "upload_id"])
    old = ", ".join(f"OLD.{name}" for name in kept)
    new = ", ".join(f"NEW.{name}" for name in kept)

    def insert(indent: str) -> str:
        return (
            f"{indent}INSERT INTO {history} ({columns})\n"
            f"{indent}VALUES ({old}, OLD.geom, OLD.{start}, current_date, OLD.upload_id);"
        )

    name = f"guatu_keep_{_ident(layer.table)}_version"
    sql = f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql
SET search_path = {SEARCH_PATH} AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    IF OLD.{start} < current_date THEN
{insert("      ")}
    END IF;
    RETURN OLD;
  END IF;
  IF OLD.{start} < current_date
     AND (ROW({new}) IS DISTINCT FROM ROW({old}) OR NOT ST_OrderingEquals(NEW.geom, OLD.geom)) THEN
{insert("    ")}
    IF NEW.{start} <= OLD.{start} THEN
      NEW.{start} := current_date;  -- the new boundary is in force from today
    END IF;
  END IF;
  RETURN NEW;
END
$$"""
    return Routine(name, sql)


def history_trigger(layer: Layer) -> Trigger:
    """Return the trigger that runs :func:`history_function` on LAYER's table."""
    function = history_function(layer).name
    name = f"{_ident(layer.table)}_keep_version"
    sql = f"CREATE TRIGGER {name} BEFORE UPDATE OR DELETE ON {layer.table} FOR EACH ROW EXECUTE FUNCTION {function}()"
    return Trigger(layer.table, name, function, sql)


def dependents_function() -> Routine:
    """Return the function that refuses to delete or recode a unit still named by others.

    Its arguments are (table, field) pairs naming the unit by its code; the refusal carries
    SQLSTATE 23503, constraint :data:`DEPENDENTS_CONSTRAINT` and the counts as JSON in its detail.
    """
    sql = f"""CREATE OR REPLACE FUNCTION {DEPENDENTS_FUNCTION}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {SEARCH_PATH} AS $$
DECLARE
  i integer;
  n bigint;
  counts jsonb := '{{}}';
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
  IF counts <> '{{}}' THEN
    RAISE EXCEPTION USING
      ERRCODE = 'foreign_key_violation',
      CONSTRAINT = '{DEPENDENTS_CONSTRAINT}',
      MESSAGE = format('%s %s is still named by %s', TG_TABLE_NAME, OLD.code, counts),
      DETAIL = counts::text;
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  RETURN NEW;
END
$$"""
    return Routine(DEPENDENTS_FUNCTION, sql)


def dependents_trigger(layer: Layer) -> Trigger | None:
    """Return the trigger that keeps LAYER's units from being orphaned, or None when no layer names them."""
    named_by = [(ref.child, ref.field) for ref in references() if ref.parent == layer.id]
    if not named_by:
        return None
    if layer.key != ("code",):  # the function reads OLD.code / NEW.code
        raise ValueError(f"layer {layer.id} is named by others but its key is {layer.key}, not (code,)")
    args = ", ".join(f"'{_ident(name)}'" for pair in sorted(named_by) for name in pair)
    name = f"{_ident(layer.table)}_keep_dependents"
    sql = (
        f"CREATE TRIGGER {name} BEFORE DELETE OR UPDATE OF code ON {layer.table} "
        f"FOR EACH ROW EXECUTE FUNCTION {DEPENDENTS_FUNCTION}({args})"
    )
    return Trigger(layer.table, name, DEPENDENTS_FUNCTION, sql)


GENERATIONS_RAISE = "guatu_raise_layer_generations"
"""The deferred trigger function that raises, at commit, the generations of the layers a transaction wrote."""


def generation_functions() -> list[Routine]:
    """Return the two functions that keep layer generations (layers.generations): note a write, raise at commit.

    Both run as their owner (SECURITY DEFINER): the app may read the counters, never write them.
    """
    note = f"""CREATE OR REPLACE FUNCTION {NOTE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {SEARCH_PATH} AS $$
BEGIN
  INSERT INTO layer_generation_marks (xact, layer) VALUES (txid_current(), TG_ARGV[0])
    ON CONFLICT DO NOTHING;
  RETURN NULL;
END
$$"""
    bump = f"""CREATE OR REPLACE FUNCTION {GENERATIONS_RAISE}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {SEARCH_PATH} AS $$
BEGIN
  -- the transaction's first mark to fire raises all its layers, in key order; the others find none
  INSERT INTO layer_generations AS g (layer, generation)
    SELECT m.layer, 1 FROM layer_generation_marks m WHERE m.xact = NEW.xact ORDER BY m.layer
    ON CONFLICT (layer) DO UPDATE SET generation = g.generation + 1;
  DELETE FROM layer_generation_marks WHERE xact = NEW.xact;
  RETURN NULL;
END
$$"""
    return [Routine(NOTE_FUNCTION, note), Routine(GENERATIONS_RAISE, bump)]


def generations_raise_trigger() -> Trigger:
    """Return the deferred trigger that raises the generations as a writing transaction commits."""
    sql = (
        "CREATE CONSTRAINT TRIGGER layer_generation_raise AFTER INSERT ON layer_generation_marks "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {GENERATIONS_RAISE}()"
    )
    return Trigger("layer_generation_marks", "layer_generation_raise", GENERATIONS_RAISE, sql)


def generation_trigger(layer: Layer) -> Trigger:
    """Return the statement trigger that notes every write to LAYER's table (its generation follows)."""
    return Trigger(layer.table, f"{_ident(layer.table)}_generation", NOTE_FUNCTION, track_writes(layer.id)[0])


def access_functions() -> list[Routine]:
    """Return the functions row-level security, the change log and personal fields call (layers.access, .changes)."""
    pieces = zip(access.FUNCTION_NAMES, access.FUNCTIONS.split(";;"), strict=True)
    out = [Routine(name, sql.strip()) for name, sql in pieces]
    out.append(Routine("guatu_mask", access.MASK_SQL))
    out.append(Routine(changes.VERSION_FUNCTION, changes.version_function_sql()))
    out.append(Routine("guatu_change_before", access.personal_keys_sql()))
    for unit_layer, level in access.locators_in_use():
        out.append(Routine(access.locate_function(unit_layer, level), access.locate_function_sql(unit_layer, level)))
    for layer in sorted(REGISTRY.values(), key=lambda x: x.order):
        if access.personal_fields(layer):
            out.append(Routine(access.shown_function(layer), access.shown_function_sql(layer)))
        out.append(Routine(access.taken_function(layer), access.taken_function_sql(layer)))
        out.append(Routine(changes.log_function(layer), changes.log_function_sql(layer)))
    out.append(Routine(contracts.PARTIES_FUNCTION, contracts.parties_function_sql()))
    return out


def change_triggers(layer: Layer) -> list[Trigger]:
    """Return the triggers keeping LAYER's change log and version (layers.changes)."""
    return [
        Trigger(
            layer.table,
            name,
            changes.VERSION_FUNCTION if name.endswith("_raise_version") else changes.log_function(layer),
            sql,
        )
        for name, sql in changes.log_triggers(layer)
    ]


def declared() -> tuple[list[Routine], list[Trigger]]:
    """Return every trigger function and trigger the registered layers call for."""
    routines: dict[str, Routine] = {r.name: r for r in generation_functions() + access_functions()}
    triggers: list[Trigger] = [generations_raise_trigger()]
    for layer in REGISTRY.values():
        triggers.append(generation_trigger(layer))
        triggers.extend(change_triggers(layer))
        if layer.history:
            routine = history_function(layer)
            routines[routine.name] = routine
            triggers.append(history_trigger(layer))
        found = dependents_trigger(layer)
        if found is not None:
            routines.setdefault(DEPENDENTS_FUNCTION, dependents_function())
            triggers.append(found)
    from layers import problems  # the problem ledger's workflow and immutable log (not a map layer)

    routines.update((name, Routine(name, sql)) for name, sql in problems.routines())
    triggers.extend(Trigger(*found) for found in problems.triggers())
    return list(routines.values()), triggers


def layer_statements(layer: Layer) -> list[str]:
    """Return what a new layer's migration runs after creating its table and tracking its writes.

    Its triggers (change log, version, history, dependents), the function showing its personal
    fields, the refreshed masking of logged rows, and its row-level security policies.
    ``guatu db revision`` writes the same from the drift it finds.
    """
    own = (
        access.shown_function(layer),
        access.taken_function(layer),
        changes.log_function(layer),
        "guatu_change_before",
    )
    out = [r.sql for r in access_functions() if r.name in own]
    if layer.history:
        out.append(history_function(layer).sql)
    out.extend(t.sql for t in declared()[1] if t.table == layer.table and t.function != NOTE_FUNCTION)
    out.extend(p.sql for p in access.declared_policies() if p.table == layer.table)
    return out
