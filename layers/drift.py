"""Schema drift: where the migrated database and the layer declarations disagree.

Alembic compares tables, columns, types and indexes, but not what a CHECK constraint says
nor any trigger: a choice added to a field then passes pydantic and is refused by the
database, and a history trigger keeps copying the columns it was written with. Here the
declarations' own schema is built in a scratch schema inside a transaction that is rolled
back (``metadata.create_all`` and the generated triggers of :mod:`layers.triggers`), and the
database's catalogs, read through its own ``pg_get_*def`` functions, are compared by name:
both sides are normalised by PostgreSQL, so a difference is a real one.

:func:`drift` lists the differences (``guatu db check``); :func:`setup` is an Alembic
autogenerate plugin that turns them into operations, so ``guatu db revision`` writes the
constraint and trigger changes Alembic alone would leave out.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import CheckConstraint, Connection, MetaData, Table, text
from sqlalchemy.sql.elements import conv

from layers.access import ROW_SECURITY, declared_policies
from layers.triggers import declared
from spatial.db import Base

SCRATCH = "guatu_drift"
"""The schema the declarations are built in, inside a transaction that is always rolled back."""

LIVE = "public"
PLUGIN = "guatu.drift"
"""The name of the Alembic autogenerate plugin (see :func:`autogenerate_options`)."""

Kind = Literal["table", "constraint", "trigger", "function", "policy"]
K = TypeVar("K", str, tuple[str, str])
_ORDER: dict[str, int] = {"table": 0, "constraint": 1, "function": 2, "trigger": 3, "policy": 4}


@dataclass(frozen=True)
class Difference:
    """One object the database and the declarations disagree on; None: it is missing on that side."""

    table: str | None
    kind: Kind
    name: str
    live: str | None
    declared: str | None

    def __str__(self) -> str:
        head = f"{self.table + ': ' if self.table else ''}{self.kind} {self.name}"
        if self.live and self.declared and "\n" in self.live + self.declared:  # a function: show what changed
            lines = difflib.unified_diff(
                self.live.splitlines(), self.declared.splitlines(), "数据库 database", "声明 declarations", lineterm=""
            )
            return head + "\n" + "\n".join(f"  {line}" for line in lines)
        return (
            f"{head}\n"
            f"  数据库 database:     {self.live or '— (missing)'}\n"
            f"  声明 declarations:   {self.declared or '— (not declared)'}"
        )


@dataclass
class _Catalog:
    """What one schema holds of the declared tables: definitions as PostgreSQL prints them."""

    tables: set[str] = field(default_factory=set)
    constraints: dict[tuple[str, str], str] = field(default_factory=dict)
    triggers: dict[tuple[str, str], str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)
    policies: dict[tuple[str, str], str] = field(default_factory=dict)


_POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


def _read_policies(conn: Connection, schema: str, tables: list[str], found: _Catalog) -> None:
    """Add to FOUND the row-level security switch and the policies of TABLES in SCHEMA."""
    params = {"schema": schema, "tables": tables}
    for table in conn.execute(
        text(
            "SELECT relname FROM pg_class WHERE relnamespace = CAST(:schema AS regnamespace) "
            "AND relname = ANY(:tables) AND relrowsecurity"
        ),
        params,
    ).scalars():
        found.policies[(table, ROW_SECURITY)] = "ENABLE ROW LEVEL SECURITY"
    for table, name, cmd, qual, check in conn.execute(
        text(
            "SELECT c.relname, p.polname, p.polcmd, pg_get_expr(p.polqual, p.polrelid), "
            "pg_get_expr(p.polwithcheck, p.polrelid) FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid "
            "WHERE c.relnamespace = CAST(:schema AS regnamespace) AND c.relname = ANY(:tables)"
        ),
        params,
    ):
        found.policies[(table, name)] = f"FOR {_POLICY_COMMANDS[cmd]} USING ({qual}) WITH CHECK ({check})"


def _read(conn: Connection, schema: str, tables: list[str], functions: Iterable[str]) -> _Catalog:
    """Return the catalog of TABLES in SCHEMA, with FUNCTIONS and those their triggers run, schema names left out."""
    found = _Catalog()
    params = {"schema": schema, "tables": tables}
    found.tables = set(
        conn.execute(
            text(
                "SELECT relname FROM pg_class "
                "WHERE relnamespace = CAST(:schema AS regnamespace) AND relname = ANY(:tables)"
            ),
            params,
        ).scalars()
    )
    for table, name, definition in conn.execute(
        text(
            "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
            "JOIN pg_class c ON c.oid = k.conrelid "
            "WHERE c.relnamespace = CAST(:schema AS regnamespace) AND c.relname = ANY(:tables)"
        ),
        params,
    ):
        found.constraints[(table, name)] = definition
    wanted = set(functions)
    for table, name, definition, enabled, function in conn.execute(
        text(
            "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled, p.proname FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE NOT t.tgisinternal AND c.relnamespace = CAST(:schema AS regnamespace) AND c.relname = ANY(:tables)"
        ),
        params,
    ):
        definition = definition.replace(f" ON {schema}.{table} ", f" ON {table} ", 1)
        if enabled == "D":  # a disabled trigger is as good as none: say so, in SQL that restores it
            definition += f";\nALTER TABLE {table} DISABLE TRIGGER {name}"
        found.triggers[(table, name)] = definition
        wanted.add(function)
    for name, definition in conn.execute(
        text(
            "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', pg_get_functiondef(p.oid) "
            "FROM pg_proc p WHERE p.pronamespace = CAST(:schema AS regnamespace) AND p.proname = ANY(:names)"
        ),
        {"schema": schema, "names": sorted(wanted)},
    ):
        found.functions[name] = definition.replace(f" FUNCTION {schema}.", " FUNCTION ", 1).strip()
    _read_policies(conn, schema, tables, found)
    return found


def _catalogs(conn: Connection) -> tuple[_Catalog, _Catalog]:
    """Return (database, declarations): the live catalog, and that of the declarations built in a scratch schema."""
    tables = [t.name for t in Base.metadata.sorted_tables]
    routines, triggers = declared()
    names = [r.name for r in routines]
    outer = conn.begin_nested() if conn.in_transaction() else conn.begin()
    try:
        conn.exec_driver_sql(f"SET LOCAL search_path = {LIVE}")
        live = _read(conn, LIVE, tables, names)
        conn.exec_driver_sql(f"CREATE SCHEMA {SCRATCH}")
        conn.exec_driver_sql(f"SET LOCAL search_path = {SCRATCH}, {LIVE}")
        Base.metadata.create_all(conn, checkfirst=False)
        for statement in [r.sql for r in routines] + [t.sql for t in triggers] + [p.sql for p in declared_policies()]:
            conn.execute(text(statement))
        wanted = _read(conn, SCRATCH, tables, names)
    finally:
        outer.rollback()
    return live, wanted


def _differ(kind: Kind, live: Mapping[K, str], wanted: Mapping[K, str]) -> list[Difference]:
    """Return the differences between two {key: definition} maps; a key is a name or (table, name)."""
    out = []
    for key in sorted(set(live) | set(wanted)):
        if live.get(key) != wanted.get(key):
            table, name = (None, key) if isinstance(key, str) else key
            out.append(Difference(table, kind, name, live.get(key), wanted.get(key)))
    return out


def drift(connection: Connection) -> list[Difference]:
    """Return where the database behind CONNECTION differs from the layer declarations (empty: none).

    Compared by name: every constraint of the declared tables (CHECK, UNIQUE, FOREIGN KEY,
    PRIMARY KEY), their triggers, and the trigger functions (body, language, settings such
    as the ``search_path``). A declared table missing from the database is one difference
    (its constraints are not listed). CONNECTION must be allowed to create a schema (the
    owner's); nothing is left behind, even in a transaction already begun.
    """
    live, wanted = _catalogs(connection)
    missing = sorted(wanted.tables - live.tables)
    found = [Difference(name, "table", name, None, "CREATE TABLE") for name in missing]
    both = live.tables & wanted.tables
    found += _differ(
        "constraint",
        {k: v for k, v in live.constraints.items() if k[0] in both},
        {k: v for k, v in wanted.constraints.items() if k[0] in both},
    )
    found += _differ("function", live.functions, wanted.functions)
    found += _differ("trigger", live.triggers, wanted.triggers)
    found += _differ(
        "policy",
        {k: v for k, v in live.policies.items() if k[0] in both},
        {k: v for k, v in wanted.policies.items() if k[0] in both},
    )
    return sorted(found, key=lambda d: (_ORDER[d.kind], d.table or "", d.name))


class SchemaSQLOp(ops.ExecuteSQLOp):
    """SQL statements that bring a function or a trigger to what the declarations say, with their undoing."""

    def __init__(self, statements: Sequence[str], undo: Sequence[str]) -> None:
        super().__init__("; ".join(statements))
        self.statements = tuple(statements)
        self.undo = tuple(undo)

    def reverse(self) -> SchemaSQLOp:
        """Return the operation that undoes this one."""
        return SchemaSQLOp(self.undo, self.statements)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        """Return this operation as compare_metadata() lists it."""
        return ("execute", *self.statements)


@renderers.dispatch_for(SchemaSQLOp)
def _render_schema_sql(autogen_context: AutogenContext, op: SchemaSQLOp) -> list[str]:
    """Render each statement as op.execute("..." "..."), one source line per SQL line, the text exact."""
    prefix = autogen_context.opts.get("alembic_module_prefix", "op.")
    out = []
    for statement in op.statements:
        lines = statement.splitlines(keepends=True)
        if len(lines) == 1:
            out.append(f"{prefix}execute({statement!r})")
        else:
            out.append(f"{prefix}execute(\n" + "".join(f"    {line!r}\n" for line in lines) + ")")
    return out


def _check(table: str, name: str, definition: str) -> CheckConstraint:
    """Return the CHECK constraint the database holds (its text as PostgreSQL prints it)."""
    holder = Table(table, MetaData())
    return CheckConstraint(text(definition.removeprefix("CHECK ")), name=conv(name), table=holder)


def _declared_check(table: str, name: str) -> CheckConstraint:
    """Return the declared CHECK constraint NAME of TABLE."""
    for constraint in Base.metadata.tables[table].constraints:
        if isinstance(constraint, CheckConstraint) and constraint.name == name:
            return constraint
    raise LookupError(f"{table}: no declared check constraint {name}")


def operations(differences: Iterable[Difference]) -> list[ops.MigrateOperation]:
    """Return the migration operations that remove DIFFERENCES Alembic itself does not see.

    CHECK constraints: dropped and created again (UNIQUE, FOREIGN KEY and missing tables are
    Alembic's own). Functions are created or replaced first, then triggers dropped and
    created, then functions nothing declares dropped; undoing runs the other way.
    """
    differences = list(differences)
    checks: dict[str, list[ops.MigrateOperation]] = {}
    for d in differences:
        if d.kind != "constraint" or not d.table or not any(s and s.startswith("CHECK") for s in (d.live, d.declared)):
            continue
        table_ops = checks.setdefault(d.table, [])
        if d.live is not None:
            table_ops.append(ops.DropConstraintOp.from_constraint(_check(d.table, d.name, d.live)))
        if d.declared is not None:
            table_ops.append(ops.AddConstraintOp.from_constraint(_declared_check(d.table, d.name)))
    out: list[ops.MigrateOperation] = [ops.ModifyTableOps(table, found) for table, found in checks.items()]
    functions = [d for d in differences if d.kind == "function"]
    for d in functions:
        if d.declared is not None:
            out.append(SchemaSQLOp([d.declared], [d.live] if d.live else [f"DROP FUNCTION {d.name}"]))
    for d in differences:
        if d.kind == "trigger":
            drop = f"DROP TRIGGER {d.name} ON {d.table}"
            out.append(
                SchemaSQLOp(
                    [*([drop] if d.live else []), *([d.declared] if d.declared else [])],
                    [*([drop] if d.declared else []), *([d.live] if d.live else [])],
                )
            )
    declared_sql = {(p.table, p.name): p.sql for p in declared_policies()}
    for d in differences:
        if d.kind != "policy" or d.table is None:
            continue
        if d.name == ROW_SECURITY:
            on, off = (
                f"ALTER TABLE {d.table} ENABLE ROW LEVEL SECURITY",
                f"ALTER TABLE {d.table} DISABLE ROW LEVEL SECURITY",
            )
            out.append(SchemaSQLOp([on] if d.declared else [off], [off] if d.declared else [on]))
            continue
        drop = f"DROP POLICY {d.name} ON {d.table}"
        create = declared_sql.get((d.table, d.name))
        out.append(
            SchemaSQLOp([*([drop] if d.live else []), *([create] if create else [])], [*([drop] if create else [])])
        )
    for d in functions:
        if d.declared is None and d.live is not None:
            out.append(SchemaSQLOp([f"DROP FUNCTION {d.name}"], [d.live]))
    return out


def _compare(autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: set[str | None]) -> Any:
    """Add to UPGRADE_OPS what :func:`drift` finds and Alembic does not (autogenerate comparator)."""
    connection = autogen_context.connection
    if connection is not None and None in schemas:
        upgrade_ops.ops.extend(operations(drift(connection)))
    return PriorityDispatchResult.CONTINUE


def setup(plugin: Plugin) -> None:
    """Register the comparator with Alembic, after its own (new tables exist before their triggers)."""
    plugin.add_autogenerate_comparator(_compare, "schema", "guatu_drift", priority=DispatchPriority.LAST)


def register() -> str:
    """Make the autogenerate plugin known to Alembic (once per process) and return its name."""
    try:
        Plugin.setup_plugin_from_module(sys.modules[__name__], PLUGIN)
    except ValueError:  # already known
        pass
    return PLUGIN
