"""A private PostGIS cluster in a project-local folder, run as the `postgres` user.

`initdb` and `pg_ctl` refuse to run as root, so every server command runs through
`runuser -u postgres` (root) or `sudo -u postgres` (a sudoer). The cluster listens on
127.0.0.1 and a private port only, so it never collides with a system PostgreSQL. Its
superuser only provisions (`spatial.roles`): the app and the migrations log in as
`guatu_app` and `guatu_owner`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import psycopg.sql

from spatial import roles
from spatial.settings import APP_ROLE, DEFAULT_PORT, OWNER_ROLE, LocalPgSettings

SERVER_USER = "postgres"


def _as_postgres(argv: list[str]) -> list[str]:
    """Return ARGV run as the postgres system user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *argv]
    return ["sudo", "-u", SERVER_USER, "--", *argv]


def _reachable_by_postgres(path: Path) -> bool:
    """Tell whether the postgres user can enter every parent of PATH."""
    probe = path if path.exists() else path.parent
    result = subprocess.run(_as_postgres(["test", "-x", str(probe)]), capture_output=True, check=False)
    return result.returncode == 0


def data_dir(settings: LocalPgSettings) -> Path:
    """Return the cluster folder: project-local, unless postgres cannot reach it.

    A checkout under a private home (mode 0700) is out of the postgres user's reach;
    then the data goes to /var/lib/postgresql/guatu-<hash of the checkout path>.
    """
    wanted = settings.data_dir.resolve()
    if _reachable_by_postgres(wanted.parent):
        return wanted
    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:10]
    return Path("/var/lib/postgresql") / f"guatu-{digest}"


def _run(argv: list[str], *, quiet: bool = False, stdin: str | None = None) -> None:
    """Run ARGV as postgres, raising with its output on failure."""
    result = subprocess.run(_as_postgres(argv), capture_output=True, text=True, check=False, input=stdin)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    if not quiet and result.stdout.strip():
        print(result.stdout.strip())  # noqa: T201 - set-up output for the terminal


def _make_dir_for_postgres(path: Path) -> None:
    """Create PATH owned by postgres (directly as root, through sudo otherwise)."""
    if os.geteuid() == 0:
        path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, SERVER_USER, SERVER_USER)
        return
    subprocess.run(["sudo", "install", "-d", "-o", SERVER_USER, "-g", SERVER_USER, str(path)], check=True)


def _server_options(settings: LocalPgSettings, run_dir: Path) -> str:
    """Return the server options: loopback and a private port only, JIT off."""
    return (
        f"-c listen_addresses={settings.host} -c port={settings.resolved_port()} "
        f"-c unix_socket_directories={run_dir} -c jit=off -c shared_buffers=256MB"
    )


def _port_free(host: str, port: int) -> bool:
    """Tell whether nothing listens on HOST:PORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) != 0


def is_running(settings: LocalPgSettings) -> bool:
    """Tell whether the local cluster accepts connections."""
    return serving_data_dir(settings) is not None


def serving_data_dir(settings: LocalPgSettings) -> str | None:
    """Return the data folder of the server on the local port, or None when none answers."""
    try:
        with psycopg.connect(
            host=settings.host,
            port=settings.resolved_port(),
            user=settings.user,
            password=settings.password(),
            dbname="postgres",
            connect_timeout=2,
        ) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
            return str(row[0]) if row else None
    except psycopg.OperationalError:
        return None


def ensure_running(settings: LocalPgSettings | None = None) -> Path:
    """Create the cluster if missing, start it if stopped; provision the roles and the app database."""
    settings = settings or LocalPgSettings()
    folder = data_dir(settings)
    pgdata = folder / "data"
    run_dir = folder / "run"
    bin_dir = settings.bin_dir
    if not (bin_dir / "initdb").exists():
        raise RuntimeError(f"PostgreSQL binaries not found in {bin_dir}: run `make run`.")
    if not (pgdata / "PG_VERSION").exists():
        if settings.port is None:  # a new cluster takes 54329, or the next port nobody holds
            port = next(p for p in range(DEFAULT_PORT, DEFAULT_PORT + 100) if _port_free(settings.host, p))
            settings.port_file.parent.mkdir(parents=True, exist_ok=True)
            settings.port_file.write_text(f"{port}\n")
        _make_dir_for_postgres(folder)
        _make_dir_for_postgres(run_dir)
        # Password auth over TCP (scram), peer on the private socket: no other local
        # account can log in as the superuser.
        secret = secrets.token_urlsafe(24)
        settings.password_file.write_text(secret + "\n")
        settings.password_file.chmod(0o600)
        pwfile = folder / "initdb.pw"
        _run(["sh", "-c", f"umask 077 && cat > '{pwfile}'"], stdin=secret + "\n")
        try:
            _run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    settings.user,
                    f"--pwfile={pwfile}",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "--locale=C.UTF-8",
                    "-E",
                    "UTF8",
                ],
                quiet=True,
            )
        finally:
            _run(["rm", "-f", str(pwfile)])
    running = serving_data_dir(settings)
    port = settings.resolved_port()
    if running and Path(running).resolve() != pgdata.resolve():
        raise RuntimeError(
            f"127.0.0.1:{port} is taken by another PostgreSQL (data in {running}); "
            f"stop it, or set GUATU_PG_PORT to a free port"
        )
    if not running and not _port_free(settings.host, port):
        raise RuntimeError(f"127.0.0.1:{port} is held by another server; stop it, or set GUATU_PG_PORT to a free port")
    if not running:
        _run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(pgdata),
                "-l",
                str(folder / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                _server_options(settings, run_dir),
                "start",
            ],
            quiet=True,
        )
        deadline = time.monotonic() + 30
        while not is_running(settings):
            if time.monotonic() > deadline:
                raise RuntimeError(f"local PostGIS did not start; see {folder / 'server.log'}")
            time.sleep(0.2)
    roles.provision(settings.admin_url(), settings.role_password_file)
    return folder


def stop(settings: LocalPgSettings | None = None) -> None:
    """Stop the local cluster if it runs."""
    settings = settings or LocalPgSettings()
    pgdata = data_dir(settings) / "data"
    running = serving_data_dir(settings)
    if running and Path(running).resolve() == pgdata.resolve():
        _run([str(settings.bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"])


REPLICATION_ROLE = "guatu_replicator"
"""The role a standby streams the primary's WAL as: REPLICATION and LOGIN, nothing else."""


def make_standby(primary: LocalPgSettings, standby: LocalPgSettings) -> Path:
    """Make STANDBY a streaming-replication hot standby of the running local cluster PRIMARY, and start it.

    `pg_basebackup -R` copies the primary and writes `standby.signal` and `primary_conninfo`;
    the standby logs in as `guatu_replicator` (password in a 0600 passfile of the postgres user's)
    over the `host replication` line initdb writes into pg_hba.conf. Being a physical copy, it
    has the same roles with the same passwords: their files are copied beside STANDBY's folder.
    PostgreSQL's defaults already stream (wal_level replica, max_wal_senders 10). Return its folder.
    """
    source = data_dir(primary)
    folder = data_dir(standby)
    pgdata = folder / "data"
    if (pgdata / "PG_VERSION").exists():
        raise RuntimeError(f"{pgdata} exists already: a standby is made once")
    secret = secrets.token_urlsafe(24)
    with psycopg.connect(
        host=primary.host,
        port=primary.resolved_port(),
        user=primary.user,
        password=primary.password(),
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (REPLICATION_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            psycopg.sql.SQL("{} ROLE {} WITH REPLICATION LOGIN PASSWORD {}").format(
                psycopg.sql.SQL(verb), psycopg.sql.Identifier(REPLICATION_ROLE), psycopg.sql.Literal(secret)
            )
        )
    _make_dir_for_postgres(folder)
    run_dir = folder / "run"
    _make_dir_for_postgres(run_dir)
    passfile = folder / "replication.pgpass"
    line = f"{primary.host}:{primary.resolved_port()}:*:{REPLICATION_ROLE}:{secret}\n"
    _run(["sh", "-c", f"umask 077 && cat > '{passfile}'"], stdin=line)
    _run(
        [
            "env",
            f"PGPASSFILE={passfile}",
            str(primary.bin_dir / "pg_basebackup"),
            "-h",
            primary.host,
            "-p",
            str(primary.resolved_port()),
            "-U",
            REPLICATION_ROLE,
            "-D",
            str(pgdata),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-w",
        ],
        quiet=True,
    )
    for role in ("", f".{OWNER_ROLE}", f".{APP_ROLE}"):
        given = primary.data_dir.with_name(primary.data_dir.name + role + ".password")
        if given.exists():
            copy = standby.data_dir.with_name(standby.data_dir.name + role + ".password")
            copy.write_text(given.read_text())
            copy.chmod(0o600)
    port = standby.resolved_port()
    standby.port_file.write_text(f"{port}\n")
    _run(
        [
            str(standby.bin_dir / "pg_ctl"),
            "-D",
            str(pgdata),
            "-l",
            str(folder / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            _server_options(standby, run_dir) + " -c hot_standby=on -c hot_standby_feedback=on",
            "start",
        ],
        quiet=True,
    )
    deadline = time.monotonic() + 30
    while not is_running(standby):
        if time.monotonic() > deadline:
            raise RuntimeError(f"standby did not start; see {folder / 'server.log'} (primary's: {source})")
        time.sleep(0.2)
    return folder
