"""nginx in front of guatu, from the config `guatu proxy-config` writes: real nginx, real uvicorn, real sockets.

Each test speaks from its own loopback address (127.0.0.x) so that nginx's per-client limits
of one test never touch another's.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import mapbox_vector_tile
import pytest
import uvicorn
from fastapi import Request
from sqlalchemy.engine import Engine

from api.main import create_app
from api.proxy import ProxyOptions, render_nginx_conf
from api.settings import ApiSettings
from tests.browser import auth_line, free_port, running, url_of
from tests.conftest import demo_database
from tests.sockets import wait_closed

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MARGIN_S = 3.0
UPLOAD_LIMIT = 1_000_000
SETTINGS = ApiSettings(max_upload_bytes=UPLOAD_LIMIT)
CONN_PER_CLIENT = 20


def nginx_or_skip() -> str:
    if not os.path.exists(NGINX):
        if os.environ.get("CI"):
            raise RuntimeError("nginx is not installed: `make test` installs it")
        pytest.skip("nginx is not installed")
    return NGINX


@pytest.fixture(scope="module")
def proxy_engine() -> Iterator[Engine]:
    with demo_database("guatu_test_proxy") as engine:
        yield engine


async def client_seen(request: Request) -> dict[str, str]:
    """Say who the app believes the client is (a test-only route)."""
    assert request.client is not None
    return {"client": request.client.host, "scheme": request.url.scheme}


async def wait(s: float) -> dict[str, float]:
    """Answer after S seconds (a test-only route: a request held in flight)."""
    await asyncio.sleep(s)
    return {"waited": s}


@pytest.fixture(scope="module")
def proxy_port() -> int:
    """The port nginx will listen on: the app is told it is its public address."""
    return free_port()


@pytest.fixture(scope="module")
def app_server(proxy_engine: Engine, proxy_port: int) -> Iterator[uvicorn.Server]:
    """guatu as `guatu serve` runs it, with two test-only routes, a 1 MB upload limit and nginx's public URL."""
    settings = SETTINGS.model_copy(update={"public_url": f"http://127.0.0.1:{proxy_port}"})
    app = create_app(settings, engine=proxy_engine)
    app.add_api_route("/_test/client", client_seen)
    app.add_api_route("/_test/wait", wait)
    with running(app, settings) as server:
        yield server


@contextmanager
def nginx(options: ProxyOptions) -> Iterator[str]:
    """Run nginx in the foreground from OPTIONS' config in its own folder; yield its base URL; stop it by pid."""
    binary = nginx_or_skip()
    conf = options.directory / "nginx.conf"
    conf.write_text(render_nginx_conf(options), encoding="utf-8")
    child = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    host, port = options.listen.rsplit(":", 1)
    deadline = time.monotonic() + 20
    try:
        while True:
            if child.poll() is not None or time.monotonic() > deadline:
                log = (
                    (options.directory / "error.log").read_text() if (options.directory / "error.log").exists() else ""
                )
                out = child.stdout.read().decode() if child.stdout and child.poll() is not None else ""
                raise RuntimeError(f"nginx did not start: {out}\n{log}")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        child.terminate()  # the master's fast shutdown stops its workers too
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout:
            child.stdout.close()


@pytest.fixture(scope="module")
def nginx_dir() -> Iterator[Path]:
    """A folder nginx's workers (user nobody) can reach: mkdtemp makes 0700 folders."""
    folder = Path(tempfile.mkdtemp(prefix="guatu-nginx-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def proxy(app_server: uvicorn.Server, nginx_dir: Path, proxy_port: int) -> Iterator[str]:
    """nginx in front of the app, with one-second client timeouts and 1 r/s (burst 5) under /api/."""
    options = ProxyOptions.from_settings(
        SETTINGS,
        nginx_dir,
        listen=f"127.0.0.1:{proxy_port}",
        upstream=f"127.0.0.1:{app_server.config.port}",
        header_timeout_s=1,
        body_timeout_s=1,
        conn_per_client=CONN_PER_CLIENT,
        api_rate=1,
        api_burst=5,
    )
    with nginx(options) as url:
        yield url
    errors = [line for line in (nginx_dir / "error.log").read_text().splitlines() if "[emerg]" in line]
    assert errors == []


def requests_seen(server: uvicorn.Server) -> int:
    """Return how many requests the app has answered, once the count stands still (bumped just after each answer)."""
    seen = server.server_state.total_requests
    while True:
        time.sleep(0.2)
        if server.server_state.total_requests == seen:
            return seen
        seen = server.server_state.total_requests


def client_from(source: str) -> httpx.Client:
    """Return an HTTP client whose connections come from loopback address SOURCE."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=20)


def raw_from(source: str, url: str, first: bytes = b"") -> socket.socket:
    """Open a socket from SOURCE to URL's host and port, send FIRST, and leave it non-blocking.

    FIRST's `Host: {host}` becomes URL's host and port, as a browser sends it: nginx passes it
    on, and the app answers only hosts it is allowed to.
    """
    address = url.removeprefix("http://")
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=5, source_address=(source, 0))
    if first:
        sock.sendall(first.replace(b"Host: {host}", b"Host: " + address.encode()))
    sock.setblocking(False)
    return sock


def test_slow_clients_are_cut_by_nginx_and_never_reach_the_app(proxy: str, app_server: uvicorn.Server) -> None:
    requests_before = requests_seen(app_server)
    opened_at = time.monotonic()
    half_headers = [
        raw_from("127.0.0.2", proxy, b"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ") for _ in range(100)
    ]
    slow_body_head = (
        b"POST /api/layers/parcels/uploads HTTP/1.1\r\nHost: {host}\r\n"
        + auth_line().encode()
        + b"Content-Type: application/geo+json\r\n"
        b'Content-Length: 5000\r\n\r\n{"type": "FeatureCollection"'
    )
    slow_bodies = [raw_from("127.0.0.2", proxy, slow_body_head) for _ in range(5)]  # within the burst of /api/
    slow = half_headers + slow_bodies
    answered = 0
    cut: dict[socket.socket, float] = {}
    deadline = opened_at + 1 + MARGIN_S
    with client_from("127.0.0.3") as client:
        while len(cut) < len(slow) and time.monotonic() < deadline:
            assert client.get(proxy + "/healthz").status_code == 200
            assert client.get(proxy + "/tiles/parcels.json").status_code == 200
            answered += 2
            cut |= wait_closed([s for s in half_headers if s not in cut], 0.2, trickle=b"a", every=0.1)
            cut |= wait_closed([s for s in slow_bodies if s not in cut], 0.1)
    for sock in slow:
        sock.close()
    assert len(cut) == len(slow), f"{len(slow) - len(cut)} of {len(slow)} slow clients still connected"
    assert max(cut.values()) - opened_at <= 1 + MARGIN_S
    assert answered >= 2
    # nginx kept them all: the app saw the normal requests only, never a slow one
    assert requests_seen(app_server) - requests_before == answered


def test_more_requests_in_flight_than_allowed_from_one_client_get_429(proxy: str) -> None:
    held = [
        raw_from("127.0.0.4", proxy, b"GET /_test/wait?s=4 HTTP/1.1\r\nHost: {host}\r\n\r\n")
        for _ in range(CONN_PER_CLIENT)
    ]
    time.sleep(0.5)  # nginx has read all their headers: CONN_PER_CLIENT requests in flight
    with client_from("127.0.0.4") as same, client_from("127.0.0.5") as other:
        refused = same.get(proxy + "/healthz")
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_requests" and "请稍后重试" in refused.json()["message"]
        assert other.get(proxy + "/healthz").status_code == 200  # the limit is per client address
        answers = []
        for sock in held:
            sock.setblocking(True)
            sock.settimeout(20)
            answers.append(sock.recv(4096))
            sock.close()
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [a[:40] for a in answers]
        assert same.get(proxy + "/healthz").status_code == 200  # and it lets go when they are done


def test_api_requests_are_rate_limited_tiles_generously_static_files_not(proxy: str) -> None:
    with client_from("127.0.0.6") as api, client_from("127.0.0.7") as tiles, client_from("127.0.0.8") as static:
        api_answers = [api.get(proxy + "/api/layers/nothing") for _ in range(60)]
        tile_codes = [tiles.get(proxy + "/tiles/nothing/0/0/0.pbf").status_code for _ in range(120)]
        static_codes = [static.get(proxy + "/static/guatu/dom.js").status_code for _ in range(120)]
    api_codes = [a.status_code for a in api_answers]
    assert api_codes.count(429) >= 30 and set(api_codes) == {404, 429}, api_codes
    assert next(a for a in api_answers if a.status_code == 429).json()["code"] == "too_many_requests"
    assert set(tile_codes) == {404}  # 100 r/s with a burst of 400: a map's worth of tiles passes
    assert set(static_codes) == {200}


def test_an_upload_over_the_limit_is_refused_by_nginx_before_it_is_read(proxy: str, app_server: uvicorn.Server) -> None:
    requests_before = requests_seen(app_server)
    sock = raw_from(
        "127.0.0.9",
        proxy,
        b"POST /api/layers/parcels/uploads HTTP/1.1\r\nHost: {host}\r\n"
        + auth_line().encode()
        + b"Content-Type: application/geo+json\r\n"
        + b"Content-Length: %d\r\n\r\n" % (UPLOAD_LIMIT * 2),
    )
    sock.setblocking(True)
    sock.settimeout(10)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"server: nginx" in head.lower()
    assert b'"code": "payload_too_large"' in body and "请求体超过上限 1 MB".encode() in body
    assert requests_seen(app_server) == requests_before  # the app never saw it
    with client_from("127.0.0.9") as client:  # within the limit, it goes through to the app
        small = client.post(proxy + "/api/layers/parcels/uploads?dry_run=true", content=b"{}")
    assert small.status_code in (400, 422) and small.json()["code"] != "payload_too_large"


def tile_with_parcels(client: httpx.Client, base: str) -> str:
    """Return the URL of a z14 tile holding demo parcels."""
    feature = client.get(base + "/api/layers/parcels/features", params={"limit": 1}).json()["features"][0]
    ring = feature["geometry"]["coordinates"][0][0]
    lon = sum(p[0] for p in ring) / len(ring)
    lat = sum(p[1] for p in ring) / len(ring)
    z = 14
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return f"{base}/tiles/parcels/{z}/{x}/{y}.pbf"


def test_json_and_tiles_come_gzipped_and_etags_still_revalidate(proxy: str, app_server: uvicorn.Server) -> None:
    with client_from("127.0.0.10") as client:
        direct = client.get(url_of(app_server) + "/api/layers").json()
        layers = client.get(proxy + "/api/layers", headers={"Accept-Encoding": "gzip"})
        assert layers.headers["content-encoding"] == "gzip" and "Accept-Encoding" in layers.headers["vary"]
        assert layers.json() == direct

        url = tile_with_parcels(client, proxy)
        raw = client.get(url, headers={"Accept-Encoding": "gzip"})
        assert raw.status_code == 200 and raw.headers["content-encoding"] == "gzip"
        assert mapbox_vector_tile.decode(raw.content)["parcels"]["features"]  # decoded by httpx: a real tile
        etag = raw.headers["etag"]
        assert etag.startswith('W/"')  # nginx weakened it when it compressed the body
        assert raw.headers["cache-control"] == "private, max-age=60, must-revalidate"  # what one user's area holds
        again = client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] in (etag, etag.removeprefix("W/"))

        plain = client.get(url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.headers["etag"] == etag.removeprefix("W/")
        assert (
            client.get(url, headers={"Accept-Encoding": "identity", "If-None-Match": plain.headers["etag"]}).status_code
            == 304
        )
        with httpx.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
            body = b"".join(response.iter_raw())
        assert gzip.decompress(body) == plain.content


def test_the_app_sees_the_real_client_its_scheme_and_the_proxy_s_address(
    proxy: str, app_server: uvicorn.Server
) -> None:
    with client_from("127.0.0.11") as client:
        seen = client.get(proxy + "/_test/client", headers={"X-Forwarded-For": "6.6.6.6"}).json()
        assert seen == {"client": "127.0.0.11", "scheme": "http"}  # nginx replaced the forged header
        tilejson = client.get(proxy + "/tiles/parcels.json").json()
        assert tilejson["tiles"][0].startswith(proxy + "/tiles/parcels/")  # GUATU_PUBLIC_URL: nginx's address
        # straight to uvicorn: only a trusted proxy (GUATU_FORWARDED_ALLOW_IPS, 127.0.0.1) is believed
        direct = client.get(url_of(app_server) + "/_test/client", headers={"X-Forwarded-For": "6.6.6.6"}).json()
        assert direct["client"] == "127.0.0.11"
    with client_from("127.0.0.1") as local:
        trusted = local.get(url_of(app_server) + "/_test/client", headers={"X-Forwarded-For": "10.1.2.3"})
        assert trusted.json()["client"] == "10.1.2.3"


def test_guatu_proxy_config_writes_a_config_nginx_accepts(tmp_path: Path) -> None:
    binary = nginx_or_skip()
    folder = tmp_path / "proxy"
    env = dict(os.environ, GUATU_MAX_UPLOAD_BYTES="5000000", GUATU_HEADER_TIMEOUT_S="7", GUATU_PORT="8123")
    guatu = str(Path(sys.executable).parent / "guatu")
    done = subprocess.run(
        [guatu, "proxy-config", "--listen", "127.0.0.1:18080", "--dir", str(folder), "--conn-per-client", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = (folder / "nginx.conf").read_text()
    checked = subprocess.run([binary, "-t", "-c", str(folder / "nginx.conf")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    for line in (
        "daemon off;",
        f"pid {folder}/nginx.pid;",
        f"error_log {folder}/error.log warn;",
        f"client_body_temp_path {folder}/client_body;",
        f"access_log {folder}/access.log guatu;",
        "client_max_body_size 5065536;",
        "client_header_timeout 7s;",
        "server 127.0.0.1:8123;",
        "limit_conn guatu_conn 30;",
        "listen 127.0.0.1:18080;",
        "gzip_proxied any;",
        "gzip_vary on;",
        "limit_req_status 429;",
        "limit_conn_status 429;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $http_host;",  # the app answers only the hosts it is allowed
    ):
        assert line in text, line
    for long_location in ("location = /api/print {", "location ~ ^/api/layers/[^/]+/uploads$ {"):
        block = text.split(long_location, 1)[1].split("}", 1)[0]
        assert "proxy_read_timeout 600s;" in block
    static = text.split("location /static/ {", 1)[1].split("}", 1)[0]
    assert "limit_req" not in static
    printed = subprocess.run(
        [guatu, "proxy-config", "--dir", str(folder), "--print"], env=env, capture_output=True, text=True
    )
    assert "listen 8080;" in printed.stdout and "limit_conn guatu_conn 20;" in printed.stdout
    assert "client_max_body_size 5065536;" in printed.stdout
    bad = subprocess.run(
        [guatu, "proxy-config", "--dir", str(folder), "--listen", "80; include /x"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "invalid --listen" in bad.stderr
    for option, value in (("--api-rate", "0"), ("--conn-per-client", "-5"), ("--dir", str(tmp_path / "a$b"))):
        refused = subprocess.run(
            [guatu, "proxy-config", "--dir", str(folder), option, value], env=env, capture_output=True, text=True
        )
        assert refused.returncode == 2, (option, refused.stdout)  # refused, not written for nginx to reject
