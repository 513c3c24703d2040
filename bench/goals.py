"""Every ratio a bench measures, beside its goal: recorded as the bench runs, printed once at the end.

Each bench calls :func:`record` for the figures the issues set goals for; `make bench` empties
the record first (``--reset``) and prints the table last (``python bench/goals.py``), so one
run of every bench ends with every ratio and whether its goal was met, where nobody has to
scroll back through each bench's own tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

RECORD = Path(os.environ.get("GUATU_BENCH_GOALS", Path(__file__).resolve().parent.parent / ".bench" / "goals.jsonl"))


def record(bench: str, what: str, value: float, goal: float, *, lower_is_better: bool = True, unit: str = "×") -> bool:
    """Note that BENCH measured WHAT = VALUE against GOAL (met when VALUE ≤ GOAL, or ≥ when higher is better).

    Prints the line at once as well and returns whether the goal was met.
    """
    met = value <= goal if lower_is_better else value >= goal
    row = {"bench": bench, "what": what, "value": value, "goal": goal, "lower": lower_is_better, "unit": unit}
    row |= {"met": met, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    with RECORD.open("a", encoding="utf-8") as out:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"goal [{bench}] {what}: {line(row)}")
    return met


def line(row: dict[str, object]) -> str:
    """Return ROW's value, goal and verdict as one phrase."""
    sign = "≤" if row["lower"] else "≥"
    verdict = "met 达标" if row["met"] else "NOT MET 未达标"
    unit = row["unit"]
    return f"{row['value']:.2f}{unit} (goal {sign} {row['goal']:.2f}{unit}) {verdict}"


def rows() -> list[dict[str, object]]:
    """Return the figures recorded since the last reset, in order."""
    if not RECORD.exists():
        return []
    return [json.loads(text) for text in RECORD.read_text(encoding="utf-8").splitlines() if text.strip()]


def main() -> int:
    """Print the table of every recorded figure beside its goal (or empty the record with --reset)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reset", action="store_true", help="forget what earlier runs recorded")
    args = parser.parse_args()
    if args.reset:
        RECORD.unlink(missing_ok=True)
        return 0
    found = rows()
    if not found:
        print("no figures recorded (run the benches first)")
        return 0
    names = [f"[{r['bench']}] {r['what']}" for r in found]
    width = max(len(name) for name in names)
    print("\n==> 目标对照 every ratio beside its goal")
    for name, r in zip(names, found, strict=True):
        print(f"  {name:<{width}}  {line(r)}")
    missed = sum(1 for r in found if not r["met"])
    print(f"  {len(found) - missed} of {len(found)} goals met" + (f"; {missed} not met" if missed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
