"""The `guatu` command: serve, migrate, load the demo street."""

from __future__ import annotations

import os
import secrets
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import orjson
import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from sqlalchemy import func, make_url, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from layers.base import REGISTRY
from spatial import localpg, roles
from spatial.db import make_engine
from spatial.errors import GuatuError
from spatial.settings import LocalPgSettings, db_settings

app = typer.Typer(help="guatu 挂图 — 集体资源一张图 (a GIS for grassroots governance).", no_args_is_help=True)
db_app = typer.Typer(help="数据库 Database: start the local PostGIS, migrate.", no_args_is_help=True)
demo_app = typer.Typer(help="演示数据 Demo data: one street of 城阳区.", no_args_is_help=True)
archive_app = typer.Typer(help="上传存档 Upload archive: kept files and full reports.", no_args_is_help=True)
user_app = typer.Typer(help="用户 Users: accounts, roles, areas, API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(demo_app, name="demo")
app.add_typer(archive_app, name="archive")
console = Console(stderr=True)


@lru_cache(maxsize=1)
def _prepare() -> None:
    """Start the local cluster (no DATABASE_URL), or provision DATABASE_URL's server; make the roles."""
    settings = db_settings()
    if not settings.external:
        try:
            folder = localpg.ensure_running(LocalPgSettings())
        except RuntimeError as exc:
            console.print(f"[red]本地 PostGIS 无法启动 local PostGIS not started:[/red] {exc}")
            raise typer.Exit(1) from None
        shown = make_url(settings.url()).render_as_string(hide_password=True)
        console.print(f"[dim]本地 PostGIS local cluster: {folder} ({shown})[/dim]")
        return
    shown = make_url(settings.admin_url()).render_as_string(hide_password=True)
    try:
        roles.provision(settings.admin_url(), settings.role_password_file)
    except psycopg.Error as exc:
        console.print(f"[red]无法连接数据库 cannot reach the database[/red] {shown}: {exc}")
        raise typer.Exit(1) from None


@lru_cache(maxsize=1)
def _engine() -> Engine:
    """Return the app's engine (guatu_app, or DATABASE_URL's own role), preparing the database first."""
    _prepare()
    return make_engine()


def _cli_session(engine: Engine) -> Session:
    """Return a session acting as the machine's operator: an administrator named cli:<login> in the change log.

    Whoever runs the command line on the server holds the database passwords anyway; saying
    so keeps every write it makes recorded under that name (and row-level security satisfied).
    """
    import getpass

    from layers.access import ADMIN, Actor
    from spatial.db import state

    session = Session(engine)
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    state(session, Actor(None, f"cli:{login}"[:60], ADMIN).settings())
    return session


def _owner_engine() -> Engine:
    """Return an engine as the owner role, the one migrations run as."""
    _prepare()
    return make_engine(url=db_settings().owner_url())


def _app_role() -> str:
    """Return the role the app logs in as."""
    return make_url(db_settings().url()).username or ""


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Apply the migrations as the owner role, then grant the app role what it needs."""
    engine = _owner_engine()
    from layers import migrate

    try:
        before = migrate.current(engine)
        migrate.upgrade(engine, revision, app_role=_app_role())
        after = migrate.current(engine)
    finally:
        engine.dispose()
    console.print(f"数据库版本 schema revision: {before or '—'} → {after}")


@db_app.command("revision")
def db_revision(message: str = typer.Option(..., "--message", "-m", help="what the migration does")) -> None:
    """Write a new migration from the difference between the layer declarations and the database."""
    from alembic import command

    engine = _owner_engine()
    from layers import migrate

    command.revision(migrate.alembic_config(engine), message=message, autogenerate=True)


@db_app.command("check")
def db_check() -> None:
    """Compare the database's constraints and triggers with the layer declarations; exit 1 on any difference."""
    from layers import drift, migrate

    engine = _owner_engine()  # the comparison builds the declared schema in a scratch schema, rolled back
    try:
        at, head = migrate.current(engine), migrate.head()
        with engine.connect() as conn:
            found = drift.drift(conn)
    except DBAPIError as exc:  # e.g. a role that may not create a schema
        console.print(f"[red]无法比较 cannot compare:[/red] {escape(str(exc.orig))}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    for difference in found:
        console.print(str(difference), markup=False, highlight=False, soft_wrap=True)
    if found:
        console.print(
            f"[red]数据库与图层声明不一致 {len(found)} 处 (schema drift: {len(found)} differences)[/red]："
            "写迁移 write a migration: guatu db revision -m …"
        )
    if at != head:
        console.print(
            f"[red]数据库版本 schema revision {at or '—'}，代码 code {head}[/red]：先运行 run guatu db upgrade"
        )
    if found or at != head:
        raise typer.Exit(1)
    console.print("数据库与图层声明一致 database matches the layer declarations")


@db_app.command("status")
def db_status() -> None:
    """Show the role the app connects as, the schema revision and feature counts."""
    engine = _engine()
    from layers import migrate

    role, superuser = roles.connected_role(engine)
    kind = "[red]超级用户 superuser![/red]" if superuser else "非超级用户 no superuser"
    console.print(f"应用角色 app role: {role}（{kind}）")
    console.print(f"迁移角色 migrations run as: {make_url(db_settings().owner_url()).username}")
    console.print(f"数据库版本 schema revision: {migrate.current(engine) or '—'}")
    with Session(engine) as session:
        for layer in REGISTRY.values():
            count = session.execute(select(func.count()).select_from(layer.model)).scalar_one()
            console.print(f"  {layer.zh} {layer.en}: {count}")


@db_app.command("partition")
def db_partition(
    counties: Annotated[
        list[str] | None, typer.Argument(help="区县代码 6-digit county codes to give a table of their own")
    ] = None,
    split: bool = typer.Option(
        False, "--split", help="every county found in a default table or among the units of the hierarchy gets its own"
    ),
) -> None:
    """Per-county tables of the partitioned layers: list them, or add a county's (its rows leave the default one)."""
    from layers import partitions

    engine = _owner_engine()  # DDL: the owner's
    try:
        with engine.begin() as conn:
            wanted: dict[str, list[str]] = {}
            for layer in partitions.layers():
                found = list(counties or [])
                if split:
                    found += partitions.known_counties(conn) + partitions.waiting_counties(conn, layer)
                wanted[layer.id] = sorted(set(found))
            for layer in partitions.layers():
                for county in wanted[layer.id]:
                    try:
                        moved = partitions.add_county(conn, layer, county)
                    except ValueError as exc:
                        console.print(f"[red]区县代码应为6位数字 a county code has 6 digits:[/red] {escape(str(exc))}")
                        raise typer.Exit(2) from None
                    if moved:
                        console.print(f"{layer.zh} {layer.en}: {county} ← 默认表 default table, {moved} 行 rows")
            for part in partitions.parts(conn):
                console.print(f"  {part.table}: {part.county} ~{part.rows} 行 rows (估计 estimated)")
    finally:
        engine.dispose()


@db_app.command("start")
def db_start() -> None:
    """Start the local PostGIS cluster (no-op with DATABASE_URL)."""
    _engine()


@db_app.command("url")
def db_url(
    owner: bool = typer.Option(False, "--owner", help="the owner's URL (migrations, DDL), not the app's"),
) -> None:
    """Print the app's database URL (with its password) for psql and other tools."""
    _prepare()
    settings = db_settings()
    url = make_url(settings.owner_url() if owner else settings.url()).set(drivername="postgresql")
    print(url.render_as_string(hide_password=False))  # noqa: T201 - meant for $(guatu db url)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the local PostGIS cluster."""
    localpg.stop()


@demo_app.command("load")
def demo_load(
    if_empty: bool = typer.Option(False, "--if-empty", help="only when the database holds no features"),
) -> None:
    """Load the demo street (idempotent: features are upserted by their codes)."""
    from layers import demo

    engine = _engine()
    with _cli_session(engine) as session:
        if if_empty:
            stored = sum(
                session.execute(select(func.count()).select_from(layer.model)).scalar_one()
                for layer in REGISTRY.values()
            )
            if stored:
                console.print(f"数据库已有 {stored} 个要素，跳过演示数据 (database not empty, demo skipped)")
                return
        started = time.monotonic()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            tasks: dict[str, TaskID] = {}

            def report(layer_id: str, done: int, total: int) -> None:
                if layer_id not in tasks:
                    layer = REGISTRY[layer_id]
                    tasks[layer_id] = progress.add_task(f"{layer.zh} {layer.en}", total=total)
                progress.update(tasks[layer_id], completed=done, total=total)

            try:
                counts = demo.load(session, progress=report)
            except GuatuError as exc:
                progress.stop()
                console.print(f"[red]演示数据未通过校验 demo data rejected:[/red] {exc}")
                raise typer.Exit(1) from None
            session.commit()
    summary = "，".join(f"{REGISTRY[k].zh} {v}" for k, v in counts.items())
    console.print(f"演示数据已加载 demo loaded in {time.monotonic() - started:.1f} s: {summary}")


@archive_app.command("prune")
def archive_prune(
    days: float = typer.Option(None, help="remove what is older than this many days (default GUATU_ARCHIVE_DAYS)"),
    max_mb: int = typer.Option(
        None, "--max-mb", help="then the oldest beyond this size (default GUATU_ARCHIVE_MAX_MB)"
    ),
) -> None:
    """Remove archived upload files and full reports past the retention or beyond the size cap."""
    from layers import archive

    gone = archive.prune(days=days, max_bytes=None if max_mb is None else max_mb * 1_000_000)
    console.print(
        f"已清理 {gone.files} 个文件（{gone.bytes / 1e6:.1f} MB），保留 {gone.kept_files} 个"
        f"（{gone.kept_bytes / 1e6:.1f} MB）于 {archive.root()} "
        f"(pruned {gone.files} files, {gone.bytes / 1e6:.1f} MB; kept {gone.kept_files})"
    )


@app.command("import")
def import_file(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="GeoJSON, Excel, GeoPackage, Shapefile (.zip), KML/KMZ, CSV … file"
        ),
    ],
    layer: str = typer.Option(..., "--layer", "-l", help="layer id: " + ", ".join(REGISTRY)),
    crs: str = typer.Option(None, help="WGS84, CGCS2000, GCJ-02, BD-09 or EPSG:<code> (default: the file's crs)"),
    axis: str = typer.Option("xy", help="xy: easting/lon first; yx: northing/lat first (X = 北)"),
    mode: str = typer.Option("all-or-nothing", help="all-or-nothing or valid-only"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check and diff only; write nothing"),
    repair: bool = typer.Option(False, "--repair", help="make invalid polygons valid, reporting the area change"),
    json_out: bool = typer.Option(False, "--json", help="print the whole upload record as JSON"),
    source_layer: str = typer.Option(None, "--source-layer", help="the file's layer (GeoPackage table, KML folder …)"),
    encoding: str = typer.Option(None, help="a Shapefile's or CSV's text encoding (GBK, UTF-8 …)"),
) -> None:
    """Import a file into a layer: checked, converted, diffed, committed atomically."""
    from layers.features import layer_or_404
    from layers.uploads import Mode, UploadOptions, commit_upload
    from spatial.crs import Axis

    if axis not in ("xy", "yx") or mode not in ("all-or-nothing", "valid-only"):
        console.print("[red]--axis 取 xy 或 yx；--mode 取 all-or-nothing 或 valid-only[/red]")
        raise typer.Exit(2)
    engine = _engine()
    checked_axis: Axis = "yx" if axis == "yx" else "xy"
    checked_mode: Mode = "valid-only" if mode == "valid-only" else "all-or-nothing"
    options = UploadOptions(
        crs=crs,
        axis=checked_axis,
        mode=checked_mode,
        dry_run=dry_run,
        repair=repair,
        filename=path.name,
        source_layer=source_layer,
        encoding=encoding,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _cli_session(engine) as session, Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"检查并写入 checking {path.name}", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            record = commit_upload(session, lambda: _cli_session(engine), layer_or_404(layer), path, options, advance)
        except GuatuError as exc:
            for problem in exc.problems:
                console.print(f"[red]{problem.code}[/red] {problem.message}")
            raise typer.Exit(1) from None
    if json_out:
        print(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())  # noqa: T201 - machine output
    summary = record["report"]["summary"]
    console.print(
        f"上传 #{record['id']} {record['status']}: 共 {summary['total']}，新增 {summary['new']}，"
        f"修改 {summary['changed']}，未变 {summary['unchanged']}，拒绝 {summary['rejected']}"
    )
    for entry in record["report"]["features"]:
        for problem in entry.get("problems", [])[:3]:
            console.print(f"  #{entry['index']} [yellow]{problem['code']}[/yellow] {problem['message']}")
    if record["status"] == "rejected":
        raise typer.Exit(1)


@app.command("check")
def check(
    scope: str = typer.Option(None, help="street, community or grid code (default: everything)"),
    rules: str = typer.Option(None, help="comma-separated rules (default: all): coverage, numbering, within, …"),
    as_of: str = typer.Option(None, "--as-of", help="check the boundaries in force on this date (YYYY-MM-DD)"),
    output: str = typer.Option("text", "--format", help="text, json or geojson"),
    snap_m: float = typer.Option(0.05, help="snapping tolerance in metres"),
    min_area_m2: float = typer.Option(1.0, help="gaps and overlaps smaller than this are ignored (m²)"),
    workers: int = typer.Option(
        0, help="pieces (communities) checked at once, each on its own connection (0: GUATU_CHECK_PARALLEL, else cores)"
    ),
    limit: int = typer.Option(10_000, help="findings listed at most (0: all); every finding is counted"),
) -> None:
    """Check boundaries: gaps, overlaps, containment, 一户一区 rules. Exits 1 when errors are found.

    The check runs per community (a county's million parcels in a few hundred pieces), a few
    at once, with a progress bar; memory holds the pieces under way and the findings listed.
    """
    import datetime as dt
    from collections.abc import Iterator
    from contextlib import contextmanager

    from api.routes.checks import report
    from layers.checks import check_all, findings_geojson
    from spatial.topology import Tolerance

    if output not in ("text", "json", "geojson"):
        console.print("[red]--format 取 text、json 或 geojson[/red]")
        raise typer.Exit(2)
    if workers < 0 or limit < 0:
        console.print("[red]--workers 与 --limit 不能为负数 (must not be negative)[/red]")
        raise typer.Exit(2)
    try:
        day = dt.date.fromisoformat(as_of) if as_of else dt.date.today()
    except ValueError:
        console.print(f"[red]--as-of 应为日期 YYYY-MM-DD，收到 {as_of}[/red]")
        raise typer.Exit(2) from None
    tolerance = Tolerance(snap_m=snap_m, min_area_m2=min_area_m2)
    chosen = [r.strip() for r in rules.split(",") if r.strip()] if rules else None
    engine = _engine()

    @contextmanager
    def sessions() -> Iterator[Session]:
        with _cli_session(engine) as session:
            yield session

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("检查边界 checking boundaries", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            checked = check_all(
                sessions,
                scope=scope,
                rules=chosen,
                as_of=day,
                tolerance=tolerance,
                workers=workers or None,
                limit=limit or None,
                progress=advance,
            )
        except GuatuError as exc:
            bar.stop()
            for problem in exc.problems:
                console.print(f"[red]{problem.code}[/red] {problem.message}")
            raise typer.Exit(2) from None
    found = checked.findings
    if output == "json":
        print(orjson.dumps(report(checked, scope, day, tolerance), option=orjson.OPT_INDENT_2).decode())  # noqa: T201
    elif output == "geojson":
        print(orjson.dumps(findings_geojson(found)).decode())  # noqa: T201 - machine output
    else:
        for finding in found:
            colour = "red" if finding.severity == "error" else "yellow"
            area = f" {finding.area_m2:,.2f} m²" if finding.area_m2 is not None else ""
            console.print(f"[{colour}]{finding.severity}[/{colour}] {finding.rule}{area} [dim]{finding.id}[/dim]")
            console.print(f"    {finding.message_zh}")
        where = scope or "全部 everything"
        console.print(f"错误 errors: {checked.errors}，警告 warnings: {checked.warnings}（{where}，{day}）")
    if checked.truncated:
        console.print(
            f"[yellow]只列出前 {len(found):,} 条，共 {checked.total:,} 条（计数准确）[/yellow] "
            f"only the first {len(found):,} of {checked.total:,} findings are listed (the counts are exact): "
            "--limit 0 lists all"
        )
    if checked.errors:
        raise typer.Exit(1)


@app.command()
def serve(
    host: str = typer.Option(None, help="address to listen on (default 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default 8000)"),
    reload: bool = typer.Option(False, help="restart on code changes (development)"),
    workers: int = typer.Option(
        None, min=1, max=64, help="server processes (default GUATU_WORKERS, else 1); limits hold for all together"
    ),
    prepare: bool = typer.Option(
        False, "--prepare", help="migrate, and load the demo street into an empty database, first"
    ),
) -> None:
    """Serve the map and the API, slow clients cut off and connections capped (see docs/deploy.md)."""
    from api import server
    from api.settings import ApiSettings

    settings = ApiSettings()
    if prepare:
        db_upgrade("head")
        demo_load(if_empty=True)
        hint = demo_accounts()
        if hint and not settings.login_hint:
            settings = settings.model_copy(update={"login_hint": hint})
            os.environ["GUATU_LOGIN_HINT"] = hint  # the app factory reads its settings again
    try:
        role = roles.refuse_superuser(_engine())
    except roles.SuperuserRefused as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(1) from None
    console.print(f"[dim]应用连接角色 app connects as: {role}[/dim]")
    host, port, workers = host or settings.host, port or settings.port, workers or settings.workers
    if reload and workers > 1:
        console.print("--reload 只用于开发，只能单进程 (--reload runs one worker only)", style="red", markup=False)
        raise typer.Exit(2)
    os.environ["GUATU_HOST"], os.environ["GUATU_PORT"] = host, str(port)  # the app factory reads its settings again
    os.environ["GUATU_WORKERS"] = str(workers)  # each worker's app shares out what it counts alone
    settings = ApiSettings()
    server.raise_open_files_limit()  # before the workers start: they inherit it
    server.prefer_the_event_loop(settings)
    config = server.server_config(
        "api.main:app_factory",
        settings,
        factory=True,
        host=host,
        port=port,
        reload=reload,
        workers=workers,
        log_level="info",
    )
    console.print(f"guatu 挂图: http://{host}:{port}/  (API 文档 docs: http://{host}:{port}/docs)")
    console.print(f"[dim]{server.limits_line(config, settings)}[/dim]")
    if workers > 1:
        console.print(
            f"{workers} 个工作进程：重任务（打印、检查、上传、导出）的名额在数据库中计数，由所有进程共享"
            f" ({workers} workers: the heavy-work lanes are counted in the database, shared by all)",
            style="dim",
            markup=False,
        )
    allowed = settings.host_names()
    console.print(
        f"只回答主机名 answers hosts: {', '.join(sorted(allowed))}；对外地址 public URL: {settings.public_url}"
        "（GUATU_ALLOWED_HOSTS / GUATU_PUBLIC_URL）",
        style="dim",
        markup=False,
    )
    if host not in ("0.0.0.0", "::") and host.strip("[]").lower() not in allowed:
        console.print(
            f"注意：监听地址 {host} 不在允许的主机名中，按此地址访问将得到 400 (requests to {host} get 400:"
            " add it to GUATU_ALLOWED_HOSTS)",
            style="yellow",
            markup=False,
        )
    server.serve(config)


@app.command("proxy-config")
def proxy_config(
    directory: Annotated[Path, typer.Option("--dir", help="folder for nginx.conf, the pid, logs and temporary files")],
    listen: str = typer.Option("8080", help="port, or address:port, nginx listens on"),
    upstream: str = typer.Option(None, help="where guatu serve listens (default GUATU_HOST:GUATU_PORT)"),
    user: str = typer.Option(None, help="the workers' user when nginx starts as root (e.g. www-data)"),
    conn_per_client: int = typer.Option(None, "--conn-per-client", help="requests in flight per client address"),
    api_rate: int = typer.Option(None, "--api-rate", help="requests per second per client under /api/"),
    tile_rate: int = typer.Option(None, "--tile-rate", help="requests per second per client under /tiles/"),
    to_stdout: bool = typer.Option(False, "--print", help="print the config instead of writing DIR/nginx.conf"),
) -> None:
    """Write a standalone nginx.conf that puts nginx in front of guatu (see docs/deploy.md)."""
    from api.proxy import ProxyOptions, render_nginx_conf
    from api.settings import ApiSettings

    directory = directory.absolute()
    options = ProxyOptions.from_settings(
        ApiSettings(),
        directory,
        listen=listen,
        upstream=upstream,
        user=user,
        conn_per_client=conn_per_client,
        api_rate=api_rate,
        tile_rate=tile_rate,
    )
    try:
        text = render_nginx_conf(options)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if to_stdout:
        print(text, end="")  # noqa: T201 - meant for a pipe or a file
        return
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "nginx.conf"
    target.write_text(text, encoding="utf-8")
    console.print(f"已写入 wrote {target}")
    console.print(f"运行 run (root, 前台 foreground): nginx -c {target}    检查 check: nginx -t -c {target}")


def _users_file() -> Path:
    """Return where the demo accounts' passwords are kept (beside the database password, mode 0600)."""
    settings = db_settings()
    base = LocalPgSettings().password_file.parent if not settings.external else Path.cwd()
    return base / ".guatu-demo-users"


def demo_accounts() -> str:
    """Create the demo accounts once (passwords generated, kept in a 0600 file); print how to sign in."""
    from layers import accounts, demo

    path = _users_file()
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            name, _, secret = line.partition("\t")
            if name and secret:
                known[name] = secret
    with Session(_owner_engine()) as session:
        present = {u["username"] for u in accounts.users(session)}
        created = []
        resolved = demo.demo_users(session)
        for username, role, area, name in resolved:
            if username in present and username in known:
                continue
            secret = known.get(username) or secrets.token_urlsafe(12)
            accounts.add_user(session, username, role, area, secret, name)
            known[username] = secret
            created.append(username)
        session.commit()
    if created:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("".join(f"{name}\t{secret}\n" for name, secret in known.items()))
        os.chmod(path, 0o600)
    console.print("演示账户 demo accounts (用户名 username / 角色 role / 辖区 area):")
    for username, role, area, name in resolved:
        console.print(f"  {username:<9} {role:<13} {area or '全部 all':<15} {name}")
    console.print(f"密码见 passwords in: {path}  (e.g. `grep admin {path}`)")
    return f"演示账户与密码见服务器上的 {path.name} 文件 (demo accounts: see {path.name} on the server)"


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="用户名 username")] = "admin",
    role: str = typer.Option("viewer", help="admin, planner, surveyor, grid_manager, leader or viewer"),
    area: str | None = typer.Option(None, help="辖区 the area's code: county, street, community or grid"),
    admin: bool = typer.Option(False, "--admin", help="an administrator of everything (no area)"),
    name: str = typer.Option("", "--name", help="显示名 display name"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
) -> None:
    """Create a user (or reset an existing one's role, area and password). Without --password-stdin a
    password is generated and printed once."""
    from layers import accounts

    if admin:
        role, area = "admin", None
    secret = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(12)
    with Session(_owner_engine()) as session:
        existed = any(u["username"] == username for u in accounts.users(session))
        try:
            accounts.add_user(session, username, role, area, secret, name)
        except GuatuError as exc:
            for problem in exc.problems:
                console.print(f"[red]{problem.code}[/red] {problem.message}")
            raise typer.Exit(2) from None
        session.commit()
    if existed:
        console.print(
            f"已重设用户 user reset: {username} ({role}, {area or '全部 all'})；其登录会话已结束、接口令牌已吊销 "
            "(their sessions ended, tokens revoked)"
        )
    else:
        console.print(f"已创建用户 user created: {username} ({role}, {area or '全部 all'})")
    if not password_stdin:
        print(f"password: {secret}")  # noqa: T201 - shown once, for the operator to hand over


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument(help="用户名 username")]) -> None:
    """Disable a user: no sign-in, sessions ended, tokens revoked (`guatu user add` again enables them)."""
    from layers import accounts

    with Session(_owner_engine()) as session:
        if not accounts.disable_user(session, username):
            console.print(f"[red]没有用户 no user[/red] {escape(username)}")
            raise typer.Exit(2)
        session.commit()
    console.print(f"已停用 disabled: {username}（其他服务进程最多 15 秒后生效 other server processes within 15 s）")


@user_app.command("list")
def user_list() -> None:
    """List the users (no passwords)."""
    from layers import accounts

    with Session(_owner_engine()) as session:
        for u in accounts.users(session):
            locked = f" 锁定至 locked until {u['locked_until']:%Y-%m-%d %H:%M}" if u["locked_until"] else ""
            console.print(
                f"{u['username']:<16} {u['role']:<13} {u['area'] or '全部 all':<16} {u['display_name']}{locked}"
            )


@user_app.command("token")
def user_token(
    username: Annotated[str, typer.Argument(help="用户名 username")],
    name: str = typer.Option("api", "--name", help="what the token is for (e.g. qgis)"),
) -> None:
    """Create an API token acting as USERNAME (for scripts and QGIS); printed once."""
    from sqlalchemy import select as sql_select

    from layers import accounts

    with Session(_owner_engine()) as session:
        user = session.execute(sql_select(accounts.User).where(accounts.User.username == username)).scalar_one_or_none()
        if user is None:
            console.print(f"[red]没有用户 no user[/red] {escape(username)}")
            raise typer.Exit(2)
        token = accounts.add_token(session, user, name)
        session.commit()
    print(token)  # noqa: T201 - meant for a script: Authorization: Bearer <token>


def main() -> None:
    """Run the command line."""
    app()
