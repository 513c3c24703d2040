"""The `guatu` command against a real database: help, migrate, demo load twice."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import func, make_url, select
from sqlalchemy.orm import Session

from layers import migrate
from layers.base import REGISTRY
from spatial.db import make_engine, state
from tests.conftest import ADMIN, admin_url, app_url, recreate_database, runs_as_roles

GUATU = Path(sys.executable).parent / "guatu"


def run(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GUATU_ARCHIVE_DIR=str(Path(tempfile.gettempdir()) / "guatu-test-archive"))
    if url:
        env["DATABASE_URL"] = url
    return subprocess.run([str(GUATU), *args], capture_output=True, text=True, env=env, timeout=300, check=False)


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url=url)
    try:
        with Session(engine) as session:
            state(session, ADMIN.settings())
            return {
                layer.id: session.execute(select(func.count()).select_from(layer.model)).scalar_one()
                for layer in REGISTRY.values()
            }
    finally:
        engine.dispose()


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "db", "demo"):
        assert command in result.stdout


def test_upgrade_then_demo_twice_creates_no_duplicates() -> None:
    recreate_database("guatu_test_cli")
    url = admin_url("guatu_test_cli")  # what an operator sets: guatu makes its own roles from it
    upgraded = run("db", "upgrade", url=url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"→ {migrate.head()}" in upgraded.stderr
    if runs_as_roles():  # a superuser's URL: the app and the migrations use guatu's own roles
        assert make_url(run("db", "url", url=url).stdout.strip()).username == "guatu_app"
        assert make_url(run("db", "url", "--owner", url=url).stdout.strip()).username == "guatu_owner"
        status = run("db", "status", url=url)
        assert status.returncode == 0 and "app role: guatu_app" in status.stderr, status.stderr
        assert make_url(app_url("guatu_test_cli")).username == "guatu_app"

    first = run("demo", "load", url=url)
    assert first.returncode == 0, first.stderr
    after_first = counts(url)
    assert after_first["grids"] >= 30 and after_first["parcels"] >= 1500 and after_first["zones"] >= 1000

    second = run("demo", "load", url=url)
    assert second.returncode == 0, second.stderr
    assert counts(url) == after_first

    skipped = run("demo", "load", "--if-empty", url=url)
    assert skipped.returncode == 0 and "跳过" in skipped.stderr
    assert counts(url) == after_first

    # the demo's planted defects are exactly what `guatu check` reports (errors: exit 1)
    import json

    from layers import demo

    checked = run("check", "--format", "json", url=url)
    assert checked.returncode == 1, checked.stderr
    report = json.loads(checked.stdout)
    assert report["summary"] == {
        "errors": 3,
        "warnings": 0,
        "by_rule": {"outside_own_frame": 1, "overlap": 1, "gap": 1},
    }
    kinds = {"gap": "gap", "overlap": "overlap", "zone_outside_grid": "outside_own_frame"}
    for defect in demo.DEFECTS:
        found = next(f for f in report["findings"] if f["rule"] == kinds[defect["kind"]])
        assert set(found["codes"]) == set(defect["codes"])
        assert abs(found["area_m2"] - defect["area_m2"]) <= 0.005 * defect["area_m2"]
    clean = run("check", "--scope", "370214001002", url=url)
    assert clean.returncode == 0 and "错误 errors: 0" in clean.stderr


def test_import_dry_run_then_commit_then_replay(tmp_path: Path) -> None:
    import json

    from tests.samples import sample

    recreate_database("guatu_test_cli_import")
    url = admin_url("guatu_test_cli_import")
    assert run("db", "upgrade", url=url).returncode == 0
    shops = []
    for i in range(3):
        shop = sample("shops")
        shop["properties"]["code"] = f"370214001009210000{i}"
        shops.append(shop)
    shops[2]["properties"]["ownership"] = "说不清"
    path = tmp_path / "survey.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": shops}, ensure_ascii=False))

    rejected = run("import", str(path), "--layer", "shops", url=url)
    assert rejected.returncode == 1 and "enum" in rejected.stderr and counts(url)["shops"] == 0
    dry = run("import", str(path), "--layer", "shops", "--mode", "valid-only", "--dry-run", url=url)
    assert dry.returncode == 0 and "dry_run" in dry.stderr and counts(url)["shops"] == 0
    done = run("import", str(path), "--layer", "shops", "--mode", "valid-only", url=url)
    assert done.returncode == 0 and "新增 2" in done.stderr and counts(url)["shops"] == 2
    again = run("import", str(path), "--layer", "shops", "--mode", "valid-only", url=url)
    assert again.returncode == 0 and counts(url)["shops"] == 2
