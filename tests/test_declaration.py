"""Each layer is declared once: no table or field name of a layer appears outside its own module.

Generic code reads names from the declaration (``REGISTRY``, ``layer.key_field``,
``layer.style.by``, ``layer.units``…). This test reads every module and script of the app
and fails on a layer's table or field name used as a string, an attribute or an identifier
anywhere else (docstrings and comments aside), with an allow-list whose every entry says why.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from layers import REGISTRY, _layer_modules

ROOT = Path(__file__).resolve().parent.parent
APP = ("spatial", "layers", "web", "api")

GENERIC = {"code", "name", "kind", "status", "level", "scope", "mode", "stage", "owner", "address", "manager"}
GENERIC |= {"floor", "rating", "duties", "operator", "quantity"}
"""Field names that are also ordinary words of code (an error's code, a setting's name, a rule's scope):
flagged only inside SQL, where they can only be columns."""

ALLOWED: dict[str, set[str]] = {
    # the shared field declarations (community and grid code fields, the locators naming their layers)
    "layers/common.py": {"*"},
    # the demo generator writes every layer's features (the issue allows it)
    "layers/demo.py": {"*"},
    # "households" is also the name of a check rule (every household has a zone), not the grids' field
    "layers/checks.py": {"households"},
    # the versioning convention itself: the names of a versioned layer's dates (VALID_FROM, VALID_TO)
    "layers/base.py": {"valid_from", "valid_to"},
    # the one dependents function reads OLD.code: triggers.dependents_trigger refuses a unit keyed otherwise
    "layers/triggers.py": {"code"},
}

_SQL = re.compile(r"\b(SELECT|FROM|WHERE|UPDATE|INSERT|JOIN|GROUP BY|ORDER BY)\b")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _names() -> tuple[dict[str, str], dict[str, str]]:
    """Return {name: layer id} of the distinctive names (tables, fields) and of the generic field names."""
    distinct: dict[str, str] = {}
    generic: dict[str, str] = {}
    for layer in REGISTRY.values():
        distinct[layer.table] = layer.id
        if layer.history_table:
            distinct[layer.history_table] = layer.id
        for name in layer.field_names:
            (generic if name in GENERIC else distinct)[name] = layer.id
    return distinct, generic


def _own_modules() -> set[str]:
    """Return the modules that declare a layer (each may name its own table and fields), as the package finds them."""
    return {f"layers/{name}.py" for name in _layer_modules()}


def _python_strings(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """Yield (line, kind, text) of every string constant (docstrings aside), attribute and identifier."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for a, b in zip(body, body[1:], strict=False):
                if isinstance(a, ast.Assign | ast.AnnAssign) and isinstance(b, ast.Expr):
                    if isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                        docstrings.add(id(b.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, "string", node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            yield node.lineno, "string", text
        elif isinstance(node, ast.Attribute):
            yield node.lineno, "attribute", node.attr
        elif isinstance(node, ast.Name):
            yield node.lineno, "identifier", node.id


_JS_COMMENT = re.compile(r"/\*.*?\*/|(?<![:\\])//[^\n]*", re.S)
_JS_STRING = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|`(?:[^`\\]|\\.)*`")
_JS_PROPERTY = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")


def _js_strings(source: str) -> Iterator[tuple[int, str, str]]:
    """Yield (line, kind, text) of the string literals and property names of a script, comments aside."""
    source = _JS_COMMENT.sub(lambda m: "\n" * m.group().count("\n"), source)
    for m in _JS_STRING.finditer(source):
        yield source.count("\n", 0, m.start()) + 1, "string", m.group()[1:-1]
    for m in _JS_PROPERTY.finditer(_JS_STRING.sub("''", source)):
        yield source.count("\n", 0, m.start()) + 1, "attribute", m.group(1)


def _files() -> Iterator[Path]:
    for room in APP:
        for path in sorted((ROOT / room).rglob("*")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative or "node_modules" in relative or "/vendor/" in relative:
                continue
            if path.suffix == ".py" or (path.suffix == ".js" and relative.startswith("web/static/guatu/")):
                yield path


def offences() -> list[str]:
    """Return "file:line: name (layer) in kind" for every layer name used outside its own module."""
    distinct, generic = _names()
    own = _own_modules()
    found = []
    for path in _files():
        relative = path.relative_to(ROOT).as_posix()
        if relative in own:
            continue
        allowed = ALLOWED.get(relative, set())
        if "*" in allowed:
            continue
        source = path.read_text(encoding="utf-8")
        items = _python_strings(ast.parse(source)) if path.suffix == ".py" else _js_strings(source)
        for line, kind, word, layer in _hits(items, distinct, generic):
            if word not in allowed:
                found.append(f"{relative}:{line}: {word} ({layer}) in {kind}")
    return sorted(set(found))


def _hits(
    items: Iterator[tuple[int, str, str]], distinct: dict[str, str], generic: dict[str, str]
) -> Iterator[tuple[int, str, str, str]]:
    """Yield (line, kind, name, layer) of the layer names among ITEMS."""
    for line, kind, text in items:
        words = {text} if kind != "string" else set(_WORD.findall(text))
        sql = kind == "string" and bool(_SQL.search(text))
        for word in words:
            layer = distinct.get(word) or (generic.get(word) if sql else None)
            if layer:
                yield line, kind, word, layer


def test_no_layer_table_or_field_is_named_outside_its_module() -> None:
    assert offences() == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('q = "SELECT code FROM t"\n', True),  # a generic field name inside SQL is a column
        ('e = {"code": "bad_input"}\n', False),  # an error's code is not a field
        ("x = row.use_status\n", True),
        ('"""Docstrings may say use_status."""\n', False),
    ],
)
def test_the_scan_sees_what_it_must(source: str, expected: bool) -> None:
    """The scan itself: a name in SQL, an attribute or a string is caught, a docstring is not."""
    hits = list(_hits(_python_strings(ast.parse(source)), *_names()))
    assert bool(hits) is expected, hits
