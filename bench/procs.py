"""A process and its descendants, read from /proc: what the benches count memory and files of."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from subprocess import STDOUT
from typing import IO


def descendants(pid: int) -> list[int]:
    """Return the processes PID started, and theirs (any thread's: a pool's manager thread starts its workers)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
            children = [int(c) for task in tasks for c in (task / "children").read_text().split()]
        except OSError:
            children = []
        found.extend(children)
        todo.extend(children)
    return found


def status_mb(pid: int, field: str) -> float:
    """Return FIELD (VmRSS, VmHWM) of process PID in MB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith(field + ":")), 0.0)


LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{time.perf_counter() - started} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""
"""Runs a command and writes its (seconds, peak RSS KB, exit code) to a file, from a small process.

A child forked by the bench itself starts with the bench's own high-water mark of memory
(Linux keeps it across fork and exec), so its ru_maxrss would show the bench's peak, not the
command's; forked from this small launcher, the floor is the launcher's ~10 MB.
"""


def measured(argv: list[str], env: dict[str, str] | None, output: IO[bytes]) -> tuple[float, float, int]:
    """Run ARGV (its output into OUTPUT); return (seconds, its peak RSS in MB, its exit code)."""
    with tempfile.NamedTemporaryFile("r") as result:
        launcher = [sys.executable, "-S", "-c", LAUNCHER, result.name, *argv]
        subprocess.run(launcher, env=env, stdout=output, stderr=STDOUT, check=True)
        seconds, peak_kb, code = result.read().split()
    return float(seconds), int(peak_kb) / 1024, int(code)
