"""The nginx in front of guatu: one standalone `nginx.conf`, rendered from the app's own settings.

nginx holds slow clients instead of the app (header, body and send timeouts; whole request
bodies are buffered before the app sees them), limits each client's connections and request
rate (429), refuses an upload over the app's limit (413) before reading it, and compresses
JSON, GeoJSON and vector tiles. Everything it writes (pid, logs, temporary files) stays in one
folder, so `nginx -c DIR/nginx.conf` runs it in the foreground beside any system nginx.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.settings import ApiSettings

GZIP_TYPES = (
    "application/json",
    "application/geo+json",
    "application/vnd.mapbox-vector-tile",
    "application/x-protobuf",
    "text/css",
    "application/javascript",
    "text/javascript",
)
MULTIPART_SLACK = 64 * 1024
"""The app lets a declared upload length exceed its limit by this much (multipart framing); so does nginx."""
LISTEN = re.compile(r"^(?:(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):)?[0-9]{1,5}$")
UPSTREAM = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$|^unix:/[^\s;{}]+$")

ERRORS = {
    413: ("payload_too_large", "请求体超过上限 {limit} MB", "request body larger than {limit} MB"),
    429: ("too_many_requests", "请求过于频繁或同时请求过多，请稍后重试", "too many requests: retry later"),
    502: ("upstream_unavailable", "应用服务暂时不可用，请稍后重试", "the app is not answering: retry later"),
    504: ("upstream_timeout", "应用服务响应超时，请稍后重试", "the app took too long to answer: retry later"),
}
"""The errors nginx answers itself, in the app's error format (code, message, where)."""


@dataclass(frozen=True)
class ProxyOptions:
    """What the rendered nginx.conf enforces; `from_settings` fills in the app's own limits."""

    directory: Path
    """Folder of the pid file, logs and temporary files (created by nginx where missing)."""
    listen: str = "8080"
    """Port, or address:port, that nginx listens on."""
    upstream: str = "127.0.0.1:8000"
    """Where `guatu serve` listens (address:port or unix:/path)."""
    max_body_bytes: int = 200 * 1000 * 1000
    header_timeout_s: float = 10
    body_timeout_s: float = 30
    send_timeout_s: float = 30
    client_keep_alive_s: float = 15
    upstream_keep_alive_s: float = 4
    """Idle upstream connections are dropped this soon: before the app drops them, never reused closed."""
    read_timeout_s: float = 60
    long_read_timeout_s: float = 600
    """For the wall map print and uploads, which can take minutes."""
    conn_per_client: int = 20
    api_rate: int = 20
    """Requests per second per client address under /api/ (a burst of api_burst more passes at once)."""
    api_burst: int = 40
    tile_rate: int = 100
    tile_burst: int = 400
    worker_connections: int = 4096
    user: str | None = None
    """The workers' user when nginx starts as root (None: nginx's built-in default)."""

    @classmethod
    def from_settings(cls, settings: ApiSettings, directory: Path, **chosen: Any) -> ProxyOptions:
        """Return options matching the app's SETTINGS (upload limit, timeouts, address), then the CHOSEN ones."""
        base = cls(
            directory=directory,
            upstream=f"{settings.host}:{settings.port}",
            max_body_bytes=settings.max_upload_bytes + MULTIPART_SLACK,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            send_timeout_s=settings.body_timeout_s,
            upstream_keep_alive_s=max(1, settings.keep_alive_s - 1),
        )
        return dataclasses.replace(base, **{k: v for k, v in chosen.items() if v is not None})

    def check(self) -> None:
        """Raise ValueError when a value would break the config or let text into it."""
        if not LISTEN.match(self.listen):
            raise ValueError(f"监听地址无效 invalid --listen: {self.listen!r} (port or address:port)")
        if not UPSTREAM.match(self.upstream):
            raise ValueError(f"上游地址无效 invalid --upstream: {self.upstream!r} (address:port or unix:/path)")
        if re.search(r"[\s;{}'\"$]", str(self.directory)) or not self.directory.is_absolute():
            plain = "目录须为绝对路径，不含空白、;{}、$ 或引号 (directory must be absolute, plain)"
            raise ValueError(f"{plain}: {self.directory}")
        counts = {"conn-per-client": self.conn_per_client, "api-rate": self.api_rate, "tile-rate": self.tile_rate}
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"--{name} 须为正整数 (must be a positive whole number): {value}")
        if self.user is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]*", self.user):
            raise ValueError(f"用户名无效 invalid user: {self.user!r}")


def _time(seconds: float) -> str:
    """Return SECONDS as nginx writes a time: whole seconds, else milliseconds."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def _error_location(status: int, limit_mb: int) -> str:
    code, zh, en = ERRORS[status]
    message = f"{zh} ({en})".format(limit=limit_mb)
    problem = {"code": code, "message": message, "where": {}}
    body = json.dumps({**problem, "errors": [problem]}, ensure_ascii=False)
    return (
        f"        location @guatu_{status} {{\n"
        "            default_type application/json;\n"
        f"            return {status} '{body}';\n"
        "        }\n"
    )


def render_nginx_conf(options: ProxyOptions) -> str:
    """Return a complete, standalone nginx.conf for guatu behind nginx, as OPTIONS ask."""
    options.check()
    d = options.directory
    limit_mb = options.max_body_bytes // 1_000_000
    user = f"user {options.user};\n" if options.user else ""
    errors = "".join(_error_location(status, limit_mb) for status in ERRORS)
    error_pages = "".join(f"        error_page {status} @guatu_{status};\n" for status in ERRORS)
    long_read = _time(options.long_read_timeout_s)
    return f"""# guatu 挂图 behind nginx — written by `guatu proxy-config`; run: nginx -c {d}/nginx.conf
# Slow clients wait here, not in the app; each client address gets {options.conn_per_client} requests in flight,
# {options.api_rate} r/s under /api/ and {options.tile_rate} r/s under /tiles/ (429 beyond); uploads over
# {limit_mb} MB are refused (413) before they are read. See docs/deploy.md.
{user}daemon off;
worker_processes auto;
worker_rlimit_nofile {options.worker_connections * 2};
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections {options.worker_connections};
}}

http {{
    log_format guatu '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                     '$request_time $upstream_response_time "$http_user_agent"';
    access_log {d}/access.log guatu;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    server_tokens off;

    # Slow clients: the whole header within client_header_timeout, no pause longer than the
    # body and send timeouts; a connection cut for a timeout is reset, its memory freed at once.
    client_header_timeout {_time(options.header_timeout_s)};
    client_body_timeout {_time(options.body_timeout_s)};
    send_timeout {_time(options.send_timeout_s)};
    keepalive_timeout {_time(options.client_keep_alive_s)};
    reset_timedout_connection on;

    # The app's own upload limit (GUATU_MAX_UPLOAD_BYTES, plus multipart framing, as the app counts it).
    client_max_body_size {options.max_body_bytes};
    client_body_buffer_size 1m;

    limit_conn_zone $binary_remote_addr zone=guatu_conn:10m;
    limit_req_zone $binary_remote_addr zone=guatu_api:10m rate={options.api_rate}r/s;
    limit_req_zone $binary_remote_addr zone=guatu_tiles:10m rate={options.tile_rate}r/s;
    limit_conn_status 429;
    limit_req_status 429;
    limit_conn_log_level warn;
    limit_req_log_level warn;

    gzip on;
    gzip_types {" ".join(GZIP_TYPES)};
    gzip_proxied any;
    gzip_vary on;
    gzip_min_length 1024;
    gzip_comp_level 5;

    upstream guatu_app {{
        server {options.upstream};
        keepalive 32;
        keepalive_timeout {_time(options.upstream_keep_alive_s)};
    }}

    server {{
        listen {options.listen};
        limit_conn guatu_conn {options.conn_per_client};

        # Whole request bodies are read here first: a slow uploader never ties up the app.
        proxy_request_buffering on;
        proxy_buffering on;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 5s;
        proxy_send_timeout {_time(options.read_timeout_s)};
        proxy_read_timeout {_time(options.read_timeout_s)};
        # ETag, Cache-Control, Last-Modified and 304s pass through untouched (gzip weakens an
        # ETag to W/"…"; the app compares If-None-Match weakly).

{error_pages}
        location / {{
            proxy_pass http://guatu_app;
        }}
        location /static/ {{
            proxy_pass http://guatu_app;
        }}
        location /tiles/ {{
            limit_req zone=guatu_tiles burst={options.tile_burst} nodelay;
            proxy_pass http://guatu_app;
        }}
        location /api/ {{
            limit_req zone=guatu_api burst={options.api_burst} nodelay;
            proxy_pass http://guatu_app;
        }}
        location = /api/print {{
            limit_req zone=guatu_api burst={options.api_burst} nodelay;
            proxy_read_timeout {long_read};
            proxy_pass http://guatu_app;
        }}
        location ~ ^/api/layers/[^/]+/uploads$ {{
            limit_req zone=guatu_api burst={options.api_burst} nodelay;
            proxy_read_timeout {long_read};
            proxy_send_timeout {long_read};
            proxy_pass http://guatu_app;
        }}
{errors}    }}
}}
"""
