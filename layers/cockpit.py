"""The leader's screen (驾驶舱): the campaign's figures in one answer, for what the actor may see.

Totals and idle rates per asset layer, what was revitalised this year and per month, the
campaign's progress per unit and a ranking of the units, rent receivable / received / in
arrears, and the problem ledger's open / overdue / closed counts. Everything is read under the
actor's row-level security: a community's leader sees their community's screen.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from layers import campaign, contracts, hierarchy, problems
from layers.base import REGISTRY, Count, Layer
from layers.settings import layer_settings
from layers.stats import Filter, statistics


def ranking_level(area: str | None) -> hierarchy.Level:
    """Return the level the ranking compares: communities, or grids for a community's own screen."""
    own = hierarchy.level_of(area) if area else None
    community = hierarchy.level("community")
    if own is not None and own.digits >= community.digits:
        return hierarchy.below(own) or own
    return community


def _idle_count(layer: Layer) -> Count | None:
    """Return the count of LAYER given as a rate too (its idle ones), if declared."""
    return next((c for c in layer.counts if c.rate), None)


def layer_statistics(session: Session, flt: Filter, by: str | None = None) -> dict[str, dict[str, Any]]:
    """Return each campaign layer's statistics under FLT (rolled up BY a level when given): one read for every use."""
    return {layer.id: statistics(session, layer, flt, by=by) for layer in campaign.campaign_layers()}


def assets(per_layer: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the totals of every campaign layer (count, 亩, idle and result counts) and the idle rate of all.

    PER_LAYER: each layer's statistics (:func:`layer_statistics`).
    """
    rows = []
    count = idle = 0
    for layer in campaign.campaign_layers():
        total = per_layer[layer.id]["total"]
        idle_count = _idle_count(layer)
        result = campaign.result_count(layer)
        row = {
            "layer": layer.id,
            "zh": layer.zh,
            "en": layer.en,
            "counter": layer.counter_zh,
            "count": total["count"],
            "area_mu": total["area_mu"] if layer.has_area else None,
            "idle": total.get(idle_count.name, 0) if idle_count else 0,
            "idle_rate": total.get(f"{idle_count.name}_rate", 0.0) if idle_count else 0.0,
            "result": total.get(result.name, 0) if result else 0,
            "result_zh": result.zh if result else "",
        }
        rows.append(row)
        count += row["count"]
        idle += row["idle"]
    return {"layers": rows, "count": count, "idle": idle, "idle_rate": round(idle / count, 4) if count else 0.0}


def ranking(progress: dict[str, Any], per_layer: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the units of PROGRESS (campaign.progress) ranked by it, with their idle counts and rate.

    PER_LAYER: each layer's statistics rolled up by the same level (:func:`layer_statistics`).
    """
    idle: dict[str | None, list[int]] = {}
    for layer in campaign.campaign_layers():
        rate = _idle_count(layer)
        if rate is None:
            continue
        for row in per_layer[layer.id]["rows"]:
            tally = idle.setdefault(row["code"], [0, 0])
            tally[0] += row.get(rate.name, 0)
            tally[1] += row["count"]
    out = []
    for row in progress["rows"]:
        if row["code"] is None:
            continue
        n_idle, n = idle.get(row["code"], [0, 0])
        out.append(
            {
                "code": row["code"],
                "name": row["name"],
                "count": row["count"],
                "progress": row["progress"],
                "stages": row["stages"],
                "idle": n_idle,
                "idle_rate": round(n_idle / n, 4) if n else 0.0,
            }
        )
    out.sort(key=lambda r: (-r["progress"], r["idle_rate"], r["code"]))
    for rank, row in enumerate(out, 1):
        row["rank"] = rank
    return out


def rent(session: Session, today: dt.date) -> dict[str, Any]:
    """Return the contracts' figures as of TODAY and the rent received in each of the last months."""
    starts = campaign.month_starts(today)
    paid = contracts.ContractPayment
    month = func.to_char(paid.paid_on, "YYYY-MM")
    received: dict[str, Any] = dict(
        session.execute(
            select(month, func.sum(paid.amount)).where(paid.paid_on >= starts[0], paid.paid_on <= today).group_by(month)
        ).all()
    )
    months = [{"month": m, "received": float(received.get(m, 0))} for m in (d.strftime("%Y-%m") for d in starts)]
    return {**contracts.summary(session, today), "months": months}


LIGHT_COLOURS = {"red": "#dc2626", "yellow": "#f59e0b", "green": "#16a34a", "grey": "#9ca3af"}
"""How a problem's overdue light is printed."""


def problem_figures(session: Session, today: dt.date) -> dict[str, Any]:
    """Return the problem ledger's counts (open, overdue, closed this month) and those closed in each last month."""
    starts = campaign.month_starts(today)
    closed_at = problems.LedgerProblem.closed_at
    month = func.to_char(func.timezone(layer_settings().timezone, closed_at), "YYYY-MM")
    closed: dict[str, Any] = dict(
        session.execute(
            select(month, func.count()).where(closed_at.is_not(None), closed_at >= starts[0]).group_by(month)
        ).all()
    )
    months = [{"month": m, "closed": int(closed.get(m, 0))} for m in (d.strftime("%Y-%m") for d in starts)]
    return {**problems.counts(session, today), "months": months}


def figures(session: Session, area: str | None, today: dt.date) -> dict[str, Any]:
    """Return every figure of the cockpit for the actor's AREA as of TODAY (their own rows only, by RLS)."""
    level = ranking_level(area)
    per_layer = layer_statistics(session, Filter(), by=level.id)  # the totals and the roll-up in one read
    progress = campaign.progress(session, level.id)
    return {
        "rent": rent(session, today),
        "problems": problem_figures(session, today),
        "today": today.isoformat(),
        "area": area,
        "assets": assets(per_layer),
        "results": campaign.results_by_month(session, today),
        "campaign": progress,
        "ranking": {
            "level": {"id": level.id, "zh": level.label(), "en": level.label_en()},
            "rows": ranking(progress, per_layer),
        },
    }


def print_tables(session: Session, scope: str | None) -> list[dict[str, Any]]:
    """Return the tables a wall map of SCOPE may carry beside it: the assets' figures, progress per unit, open problems.

    Plain text, ready to set: each a title, a header, rows (and a share of the width per column).
    """
    flt = Filter(scope=scope)
    figures_rows = []
    for row in assets(layer_statistics(session, flt))["layers"]:
        layer = REGISTRY[row["layer"]]
        figures_rows.append(
            (
                row["zh"],
                f"{row['count']} {row['counter']}",
                f"{row['area_mu']:.2f}" if row["area_mu"] is not None else "—",
                f"{row['idle']}（{100 * row['idle_rate']:.1f}%）" if _idle_count(layer) else "—",
                f"{row['result_zh']} {row['result']}" if campaign.result_count(layer) else "—",
            )
        )
    own = hierarchy.level_of(scope) if scope else None
    level = (hierarchy.below(own) if own else None) or hierarchy.level("community")
    progress = campaign.progress(session, level.id, flt)
    unit_rows = tuple(
        (row["name"], str(row["count"]), *(str(row["stages"][s]) for s in progress["stages"]), f"{row['progress']:.0%}")
        for row in progress["rows"]
        if row["code"] is not None
    )
    listed = problems.open_list(session, scope, limit=40)
    open_problems = {
        "title": "待办问题 Open problems",
        "header": ("编号", "类型", "问题", "期限", "状态"),
        "rows": tuple((p["number"], p["type"], p["description"], p["deadline"] or "—", p["status"]) for p in listed),
        "marks": tuple(LIGHT_COLOURS.get(p["light"]) for p in listed),
        "widths": (0.22, 0.14, 0.34, 0.16, 0.14),
    }
    return [
        {
            "title": "统计表 Statistics",
            "header": ("类型", "数量", "面积(亩)", "闲置(率)", "盘活"),
            "rows": tuple(figures_rows),
            "widths": (0.24, 0.16, 0.18, 0.24, 0.18),
        },
        {
            "title": f"各{level.label()}工作进度 Campaign progress per {level.label_en().lower()}",
            "header": (level.label(), "资产", *(s[:2] for s in progress["stages"]), "进度"),
            "rows": unit_rows,
            "widths": (0.28, 0.12, 0.12, 0.12, 0.12, 0.12, 0.12),
        },
        open_problems,
    ]
