"""A process and its descendants, read from /proc: what the benches count memory and files of."""

from __future__ import annotations

from pathlib import Path


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
