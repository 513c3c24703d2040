"""The triggers that keep a unit from being deleted or recoded while others name it, from the declarations.

Migration 0006 created the trigger function ``guatu_refuse_orphans`` and one trigger per
named layer; a migration that adds a layer naming others (its locators, its rules) calls
:func:`keep_dependents_sql` to rebuild those triggers from ``layers.base.references()``,
so the database holds exactly what the declarations state (tests/test_dependents.py).
"""

from __future__ import annotations

from collections import defaultdict

from layers.base import REGISTRY, references


def keep_dependents_sql(without: frozenset[str] = frozenset()) -> list[str]:
    """Return the statements that (re)create every ``<table>_keep_dependents`` trigger.

    Links from the layers in WITHOUT are left out (a migration's downgrade, which removes them).
    """
    named: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for ref in references():
        if ref.child in without or ref.parent in without:
            continue
        named[ref.parent].append((REGISTRY[ref.child].table, ref.field))
    out = []
    for parent_id, dependents in sorted(named.items()):
        parent = REGISTRY[parent_id]
        table, key = parent.table, parent.key_field
        args = ", ".join(f"'{name}'" for pair in dependents for name in pair)
        out.append(f"DROP TRIGGER IF EXISTS {table}_keep_dependents ON {table}")
        out.append(
            f"CREATE TRIGGER {table}_keep_dependents BEFORE DELETE OR UPDATE OF {key} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION guatu_refuse_orphans({args})"
        )
    return out
