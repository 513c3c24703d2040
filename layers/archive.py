"""The upload archive: every file that parsed, kept by its SHA-256; full reports; pruning.

Uploads arrive in a spool folder beside the archive (``.incoming``), are parsed from there
and, once they parse, are linked into the archive under their hash (the same bytes are kept
once, whoever sends them). Junk that does not parse is never kept. Files and reports older
than the retention, or beyond the archive's size cap (oldest first), are pruned.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from layers.settings import layer_settings

SPOOL = ".incoming"
REPORTS = "reports"
STALE_PART_S = 24 * 3600
"""A spooled or partly written file older than this was left by a crash: pruned."""
PRUNE_EVERY_S = 3600
"""The archive is pruned after an upload at most this often."""


def root() -> Path:
    """Return the archive folder."""
    return layer_settings().archive_dir


def spool_dir() -> Path:
    """Return the folder where uploads are received before they are parsed."""
    folder = root() / SPOOL
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def spool_file() -> Path:
    """Return a new, empty file in the spool folder for one upload's body (the caller removes it)."""
    fd, name = tempfile.mkstemp(dir=spool_dir(), prefix="upload-", suffix=".part")
    os.close(fd)
    return Path(name)


def owned(path: Path) -> bool:
    """Tell whether PATH is the server's own spooled copy (may be linked, never the user's own file)."""
    return path.parent.resolve() == spool_dir().resolve()


def keep(body: bytes | Path, sha: str, suffix: str = ".geojson") -> Path:
    """Keep BODY under its SHA-256 (once; a file already kept just has its retention renewed).

    SUFFIX says what it is (.geojson, or .xlsx for a ledger).

    Concurrent uploads of the same bytes each write a private temporary name and move it
    into place atomically: nobody ever sees or renames someone else's partial file.
    """
    folder = root() / sha[:2]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha}{suffix}"
    if path.exists():
        os.utime(path)
        return path
    _count_added(body)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{sha[:16]}-", suffix=".part")
    os.close(fd)
    partial = Path(name)
    try:
        if isinstance(body, Path) and owned(body):
            partial.unlink()
            os.link(body, partial)  # the spool copy becomes the archived one: no second copy
        elif isinstance(body, Path):
            shutil.copyfile(body, partial)
        else:
            partial.write_bytes(body)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _count_added(body: bytes | Path) -> None:
    global _ADDED
    with suppress(OSError):
        _ADDED += len(body) if isinstance(body, bytes) else body.stat().st_size


def report_path(upload_id: int) -> Path:
    """Return where the full report of upload UPLOAD_ID is kept."""
    return root() / REPORTS / f"{upload_id}.json.gz"


def save_report(upload_id: int, report: dict[str, Any]) -> Path:
    """Write the full REPORT of UPLOAD_ID as gzipped JSON (atomically)."""
    path = report_path(upload_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{upload_id}-", suffix=".part")
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=5) as out:
        out.write(orjson.dumps(report))
    os.replace(name, path)
    return path


def load_report(upload_id: int) -> bytes | None:
    """Return the full report of UPLOAD_ID as JSON bytes, or None when it is not (or no longer) kept."""
    try:
        with gzip.open(report_path(upload_id), "rb") as src:
            return src.read()
    except FileNotFoundError:
        return None


@dataclass
class Pruned:
    """What a prune removed."""

    files: int = 0
    bytes: int = 0
    kept_files: int = 0
    kept_bytes: int = 0


def prune(*, days: float | None = None, max_bytes: int | None = None, now: float | None = None) -> Pruned:
    """Remove archived files and reports older than DAYS, then the oldest beyond MAX_BYTES in all.

    Defaults come from the settings (``GUATU_ARCHIVE_DAYS``, ``GUATU_ARCHIVE_MAX_MB``); crash
    leftovers (spooled or partial files older than a day) always go.
    """
    settings = layer_settings()
    days = settings.archive_days if days is None else days
    max_bytes = settings.archive_max_mb * 1_000_000 if max_bytes is None else max_bytes
    now = time.time() if now is None else now
    out = Pruned()
    folder = root()
    if not folder.exists():
        return out
    kept: list[tuple[float, int, Path]] = []
    for path in _ours(folder):
        try:
            stat = path.lstat()
        except FileNotFoundError:
            continue  # removed meanwhile (an upload finishing)
        age = now - stat.st_mtime
        leftover = path.name.endswith(".part")
        if (leftover and age > STALE_PART_S) or (not leftover and days > 0 and age > days * 86400):
            _remove(path, stat.st_size, out)
        elif not leftover:
            kept.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in kept)
    survivors = 0
    for _, size, path in sorted(kept):  # oldest first
        if 0 < max_bytes < total:
            _remove(path, size, out)
            total -= size
        else:
            survivors += 1
    out.kept_files, out.kept_bytes = survivors, total
    return out


_KEPT = re.compile(r"[0-9a-f]{64}\.(geojson|xlsx)|\.[0-9a-f]{16}-\w+\.part")
"""Uploaded files (and partial writes). Problem photos (``<sha>.photo.jpg`` …, layers.problems) are kept
beside them but are evidence of a rectification: no retention or size cap removes them."""
_REPORT = re.compile(r"[0-9]+\.json\.gz|\.[0-9]+-\w+\.part")
_SPOOLED = re.compile(r"upload-\w+\.part")


def _ours(folder: Path) -> Iterator[Path]:
    """Yield the files in FOLDER that guatu wrote there (by name and place): nothing else is ever touched.

    A folder set wrongly (a home folder, a shared disk) loses nothing that guatu did not put there.
    """
    for shard in folder.iterdir():
        if shard.is_dir() and not shard.is_symlink() and re.fullmatch(r"[0-9a-f]{2}", shard.name):
            yield from _matching(shard, _KEPT)
    for name, pattern in ((REPORTS, _REPORT), (SPOOL, _SPOOLED)):
        place = folder / name
        if place.is_dir() and not place.is_symlink():
            yield from _matching(place, pattern)


def _matching(place: Path, pattern: re.Pattern[str]) -> Iterator[Path]:
    for path in place.iterdir():
        if pattern.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            yield path


def _remove(path: Path, size: int, out: Pruned) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    out.files += 1
    out.bytes += size


_LAST_PRUNE = float("-inf")
_PRUNE_LOCK = threading.Lock()
_ADDED = 0
"""Bytes kept since the last prune in this process."""


def prune_now_and_then() -> None:
    """Prune the archive after uploads: an hour after the last prune, or once a tenth of its cap was added since.

    So the size cap holds within a tenth (and what uploads in flight add), however fast files arrive.
    """
    global _LAST_PRUNE, _ADDED
    cap = layer_settings().archive_max_mb * 1_000_000
    due = time.monotonic() - _LAST_PRUNE >= PRUNE_EVERY_S or (cap > 0 and _ADDED >= cap / 10)
    if not due or not _PRUNE_LOCK.acquire(blocking=False):
        return
    try:
        _LAST_PRUNE, _ADDED = time.monotonic(), 0
        prune()
    finally:
        _PRUNE_LOCK.release()
