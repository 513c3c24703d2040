"""The rooms: imports go spatial <- layers <- web <- api, and lint says so."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"

FORBIDDEN = [
    ("spatial", "import layers.base"),
    ("spatial", "from web import maps"),
    ("spatial", "import fastapi"),
    ("spatial", "import folium"),
    ("layers", "from api import main"),
    ("layers", "from web.maps import build_map_page"),
    ("layers", "from fastapi import FastAPI"),
    ("web", "from api.deps import SessionDep"),
    ("web", "from sqlalchemy.orm import Session"),
]
ALLOWED = [("layers", "from spatial import geometry"), ("web", "from layers import base"), ("api", "import web.maps")]


def _lint(room: str, line: str, tmp_name: str) -> subprocess.CompletedProcess[str]:
    probe = ROOT / room / tmp_name
    probe.write_text(f'"""Probe."""\n\n{line}  # noqa: F401\n')
    try:
        return subprocess.run(
            [str(RUFF), "check", "--no-cache", "--select", "TID251", str(probe)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    finally:
        probe.unlink()


@pytest.mark.parametrize(("room", "line"), FORBIDDEN)
def test_wrong_direction_fails_lint(room: str, line: str) -> None:
    result = _lint(room, line, "_probe_forbidden.py")
    assert result.returncode == 1, result.stdout
    assert "TID251" in result.stdout


@pytest.mark.parametrize(("room", "line"), ALLOWED)
def test_right_direction_passes_lint(room: str, line: str) -> None:
    result = _lint(room, line, "_probe_allowed.py")
    assert result.returncode == 0, result.stdout


def test_no_merge_conflict_markers_are_committed() -> None:
    """A merge left unresolved shows in no tracked file (one once reached the planner's guide)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    marked = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".js", ".css", ".html", ".toml", ".lock", ".json", ".cfg", ""}:
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        marked += [f"{name}:{n}" for n, line in enumerate(lines, 1) if line.startswith(("<<<<<<< ", ">>>>>>> "))]
    assert marked == []


def test_every_picture_the_guides_show_is_there() -> None:
    """A guide's screenshot (docs/screenshots, refreshed by `make screenshots`) is committed with it."""
    missing = [
        f"{guide.name}: {target}"
        for guide in sorted((ROOT / "docs").glob("*.md"))
        for target in re.findall(r"\]\((screenshots/[^)\s]+)\)", guide.read_text(encoding="utf-8"))
        if not (ROOT / "docs" / target).is_file()
    ]
    assert missing == []
