"""Packaging: what pyproject.toml declares is what the app imports, and `pip install .` serves every page.

The install test builds the project as a user would (`pip install .`, not editable) into a fresh
venv, offline: the venv sees the project venv's site-packages through a .pth file (so the
dependencies and the build backend are there without an index) but never the checkout itself.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.browser import free_port
from tests.conftest import app_url, owner_url, recreate_database
from web import assets

ROOT = Path(__file__).resolve().parent.parent
APP_PACKAGES = ("spatial", "layers", "web", "api")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = ROOT / "requirements.lock"

DECLARED_NOT_IMPORTED = {
    "geopandas": "declared now for the issue that reads OGR formats through it; nothing imports it yet",
    "python-multipart": "FastAPI imports it itself to parse form fields and file uploads (POST /api/uploads)",
    "uvloop": "uvicorn runs its event loop on it when it is installed (loop='auto'): less CPU a request",
}
"""Runtime dependencies no module of the app imports, each with the reason it is declared."""

DEV_ONLY_FILES = {
    "ruff.toml": "lint rules per room, read by ruff",
    "package.json": "the npm manifest `make assets` installs from",
    "package-lock.json": "the npm lock `make assets` installs from",
}
"""Files inside the packages that the running app never reads: not shipped in the wheel."""


def _normalise(name: str) -> str:
    """Return a distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(spec: str) -> tuple[str, tuple[int, ...]]:
    """Return the distribution name and minimum version of SPEC (`name[extra]>=1.2`), the one form pyproject uses."""
    found = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[a-z0-9,_-]+\])?>=([0-9.]+)", spec.replace(" ", ""))
    assert found, f"{spec!r}: tests/test_packaging.py reads only `name>=version` requirements"
    return _normalise(found[1]), _version(found[3])


def _version(text: str) -> tuple[int, ...]:
    """Return the release numbers of a plain version such as 2.4.6."""
    return tuple(int(part) for part in text.split("."))


def _declared(*groups: str) -> dict[str, tuple[int, ...]]:
    """Return name → minimum version of the runtime dependencies and of the optional GROUPS."""
    specs = list(PYPROJECT["project"]["dependencies"])
    for group in groups:
        specs += PYPROJECT["project"]["optional-dependencies"][group]
    return dict(_requirement(spec) for spec in specs)


def _imported_modules(folder: Path) -> dict[str, set[str]]:
    """Return each top-level module imported (absolutely) under FOLDER, with the files importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _third_party_imports(folders: list[Path], own: set[str]) -> dict[str, set[str]]:
    """Return distribution → files importing it, for every non-stdlib, non-project import under FOLDERS."""
    providers = packages_distributions()
    used: dict[str, set[str]] = {}
    for folder in folders:
        for module, files in _imported_modules(folder).items():
            if module in sys.stdlib_module_names or module in own:
                continue
            dists = providers.get(module)
            assert dists, f"`import {module}` ({sorted(files)[0]}): no installed distribution provides it"
            for dist in {_normalise(name) for name in dists}:
                used.setdefault(dist, set()).update(files)
    return used


def test_declared_dependencies_are_the_imported_ones() -> None:
    used = _third_party_imports([ROOT / package for package in APP_PACKAGES], set(APP_PACKAGES))
    declared = _declared()
    undeclared = {dist: sorted(files)[:3] for dist, files in used.items() if dist not in declared}
    assert not undeclared, f"imported by the app but not in [project].dependencies: {undeclared}"
    unused = set(declared) - set(used) - set(DECLARED_NOT_IMPORTED)
    assert not unused, f"declared in [project].dependencies but imported nowhere (or say why): {sorted(unused)}"
    stale = set(DECLARED_NOT_IMPORTED) & set(used)
    assert not stale, f"imported now, drop them from DECLARED_NOT_IMPORTED: {sorted(stale)}"


def test_tests_import_only_declared_distributions() -> None:
    own = {*APP_PACKAGES, "tests", "conftest"}
    used = _third_party_imports([ROOT / "tests"], own)
    declared = _declared("dev")
    undeclared = {dist: sorted(files)[:3] for dist, files in used.items() if dist not in declared}
    assert not undeclared, f"imported by tests but in neither [project].dependencies nor the dev extra: {undeclared}"


def test_lock_pins_every_declared_dependency_within_its_bounds() -> None:
    pins: dict[str, tuple[int, ...]] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_normalise(name)] = _version(version.strip())
    for name, minimum in _declared("dev").items():
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements.lock"
        assert pins[name] >= minimum, f"requirements.lock pins {name} below pyproject's minimum {minimum}"
    # psycopg[binary]: the extra's distribution is pinned beside psycopg, at the same version.
    assert pins["psycopg-binary"] == pins["psycopg"]


def test_missing_front_end_assets_are_named_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, engine: Engine
) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    monkeypatch.setattr(assets, "VENDOR_DIR", tmp_path / "vendor")
    with caplog.at_level("WARNING", logger="guatu"), TestClient(create_app(engine=engine)):
        pass
    said = " ".join(record.getMessage() for record in caplog.records)
    assert "leaflet/leaflet.js" in said and "swagger-ui/swagger-ui-bundle.js" in said
    assert str(tmp_path / "vendor") in said, "the warning names the folder it looked in"
    assert "make assets" in said, "the warning says how to install them"


# --- `pip install .` into a fresh venv ------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """A fresh venv holding guatu installed from a non-editable build."""

    venv: Path
    site_packages: Path
    work: Path
    """An empty folder to run from: neither the checkout nor the build."""


def _copy_sources(target: Path) -> None:
    """Copy what a build reads (pyproject, README, the packages, data/) to TARGET, layers/data a link still.

    The build runs on the copy so it leaves no build/ or egg-info in the checkout, whose stale
    files would slip into later wheels. The vendored npm assets come along: they are git-ignored
    but present after `make assets`, as they must be when a wheel is built.
    """
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    skip = shutil.ignore_patterns("__pycache__", "node_modules", "*.pyc")
    for name in (*APP_PACKAGES, "data"):
        shutil.copytree(ROOT / name, target / name, symlinks=True, ignore=skip)
    assert (target / "layers/data").is_symlink()


def _run(args: list[str | Path], *, cwd: Path, env: dict[str, str]) -> str:
    """Run ARGS, failing the test with their output when they fail; return stdout."""
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    """Return this environment without what would point a child at the checkout or an index."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PIP_FIND_LINKS"}}
    env.update(PIP_NO_INDEX="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build and install guatu (`pip install .`, no index, no build isolation) into a fresh venv."""
    missing = assets.missing_assets()
    assert not missing, f"build the wheel after `make assets`; missing: {missing}"
    base = tmp_path_factory.mktemp("packaging")
    _copy_sources(base / "src")
    venv = base / "venv"
    # No pip of its own: Python 3.11's ensurepip would add setuptools 65, which shadows the
    # project venv's newer one (the build backend). pip itself comes through the .pth file.
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base, env=_clean_env())
    site_packages = Path(
        _run(
            [venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=base,
            env=_clean_env(),
        ).strip()
    )
    project_site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site_packages / "_guatu_project_deps.pth").write_text("\n".join(sorted(project_site)) + "\n", encoding="utf-8")
    _run(
        [venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "."],
        cwd=base / "src",
        env=_clean_env(),
    )
    work = base / "work"
    work.mkdir()
    return Installed(venv, site_packages, work)


def test_install_holds_every_file_the_app_reads(installed: Installed) -> None:
    where = _run(
        [installed.venv / "bin/python", "-c", "import api, layers, spatial, web; print(api.__file__)"],
        cwd=installed.work,
        env=_clean_env(),
    )
    assert Path(where.strip()).is_relative_to(installed.site_packages), f"imported the checkout's api: {where}"
    expected = set()
    for package in APP_PACKAGES:
        for folder, _, names in os.walk(ROOT / package, followlinks=True):  # layers/data → data/
            for name in names:
                relative = (Path(folder) / name).relative_to(ROOT)
                if "__pycache__" in relative.parts or name.endswith(".pyc") or name in DEV_ONLY_FILES:
                    continue
                if not any(part.startswith(".") for part in relative.parts):
                    expected.add(relative)
    assert Path("web/static/vendor/leaflet/leaflet.js") in expected
    assert Path("layers/data/gbt21010_2017.csv") in expected
    assert Path("layers/migrations/script.py.mako") in expected
    shipped = {path.relative_to(installed.site_packages) for path in installed.site_packages.rglob("*")}
    missing = sorted(str(path) for path in expected - shipped)
    assert not missing, f"the installed package lacks {len(missing)} files, e.g. {missing[:8]}"


class _StaticLinks(HTMLParser):
    """Collect the /static/ URLs a page loads (scripts, style sheets, icons)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value and value.startswith(assets.STATIC_URL + "/"):
                self.urls.add(value)


SIGNED: dict[str, str] = {}
"""The session cookie of the demo administrator, once signed in (see :func:`served`)."""


def _get(url: str) -> tuple[int, str, bytes]:
    """Return status, content type and body of a GET to URL (signed in as the demo administrator, once known)."""
    request = urllib.request.Request(url, headers={"Cookie": SIGNED["cookie"]} if SIGNED else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read()


@dataclass(frozen=True)
class Served:
    """The installed `guatu serve` running: its base URL and its output so far."""

    url: str
    log: Path


@pytest.fixture(scope="module")
def served(installed: Installed) -> Iterator[Served]:
    """Run the installed `guatu serve --prepare` (migrate, load the demo) on a test database."""
    name = "guatu_test_packaging"
    recreate_database(name)
    port = free_port()
    env = _clean_env(
        DATABASE_URL=app_url(name),
        GUATU_OWNER_DATABASE_URL=owner_url(name),
        GUATU_ARCHIVE_DIR=str(installed.work / "archive"),
    )
    log_path = installed.work / "serve.log"
    args = [installed.venv / "bin/guatu", "serve", "--prepare", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            args, cwd=installed.work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"guatu serve exited {server.returncode}:\n{log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"guatu serve did not answer in 120 s:\n{log_path.read_text(errors='replace')}")
            try:
                if _get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        _sign_in(base, installed.work / ".guatu-demo-users", log_path)
        yield Served(base, log_path)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)


def _sign_in(base: str, users: Path, log: Path) -> None:
    """Sign in as the demo administrator `serve --prepare` created, with the password it kept (mode 0600)."""
    assert users.exists(), log.read_text(errors="replace")
    assert users.stat().st_mode & 0o777 == 0o600
    passwords = dict(line.split("\t", 1) for line in users.read_text(encoding="utf-8").splitlines())
    assert set(passwords) >= {"admin", "planner", "surveyor", "gridman", "leader", "viewer"}
    assert "演示账户" in log.read_text(errors="replace")  # it said how to sign in
    body = json.dumps({"username": "admin", "password": passwords["admin"]}).encode()
    request = urllib.request.Request(base + "/api/login", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        cookies = [c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie")]
    SIGNED["cookie"] = "; ".join(cookies)


PAGES = ("/", "/cockpit", "/upload", "/checks", "/report", "/problems", "/contracts", "/ledger/parcels", "/docs")


@pytest.mark.parametrize("page", PAGES)
def test_installed_app_serves_the_page_and_what_it_loads(served: Served, page: str) -> None:
    status, kind, body = _get(served.url + page)
    assert (status, kind.split(";")[0]) == (200, "text/html"), body[:500]
    links = _StaticLinks()
    links.feed(body.decode("utf-8"))
    assert links.urls, f"{page} loads nothing from {assets.STATIC_URL}"
    for url in sorted(links.urls):
        status, _, content = _get(served.url + url.split("?")[0])
        assert status == 200 and content, f"{page} loads {url}: {status}"


def test_installed_app_serves_json_and_the_demo(served: Served) -> None:
    status, kind, body = _get(served.url + "/api/layers")
    assert (status, kind) == (200, "application/json"), body[:500]
    counts = {layer["id"]: layer["count"] for layer in json.loads(body)}
    assert counts and all(counts.values()), f"the installed `guatu serve --prepare` loaded no demo: {counts}"
    assert _get(served.url + "/openapi.json")[0] == 200
    status, _, body = _get(served.url + assets.LEAFLET_JS)
    assert status == 200 and body == (assets.VENDOR_DIR / "leaflet/leaflet.js").read_bytes()
    said = served.log.read_text(errors="replace")
    assert "assets missing" not in said and "Traceback" not in said, said
