"""The campaign: which of its four steps each asset has reached, per unit, and what it achieved when.

The steps are 排查摸底 → 清理回收 → 盘活利用 → 建章立制 (:data:`layers.common.CAMPAIGN_STAGES`); a
layer takes part by naming its stage field (``Layer.campaign``). Progress of a unit is the mean
step reached over its assets, as a share of the last step: an asset not yet surveyed counts 0,
one at 排查摸底 ¼, … one at 建章立制 1 — so 100 % means every asset has been through all four.

What the campaign achieved is what a layer's *result* count says (``Count.result``: a parcel
revitalised, a shop let, a revenue point earning). When it was achieved is read from the change
log: an update after which the feature holds a result value and before which it did not.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import hierarchy
from layers.base import REGISTRY, Count, Layer, match_sql
from layers.common import CAMPAIGN_STAGES
from layers.settings import layer_settings
from layers.stats import Filter, filter_conditions, unit_column


def today() -> dt.date:
    """Return today's date where the deployment is (its months and years are the ones counted)."""
    return dt.datetime.now(ZoneInfo(layer_settings().timezone)).date()


MONTHS = 12
"""How many months the cockpit's trends cover (this one included)."""


def campaign_layers() -> list[Layer]:
    """Return the layers taking part in the campaign, in map order."""
    return sorted((lay for lay in REGISTRY.values() if lay.campaign), key=lambda lay: lay.order)


def result_count(layer: Layer) -> Count | None:
    """Return the count saying an asset of LAYER has been put back to use (its campaign result), if declared."""
    return next((c for c in layer.counts if c.result), None)


def stage_weight(stage: str | None) -> float:
    """Return how far along the campaign STAGE is, from 0 (not surveyed) to 1 (建章立制).

    Examples
    --------
    >>> [stage_weight(s) for s in (None, "排查摸底", "清理回收", "盘活利用", "建章立制")]
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if stage not in CAMPAIGN_STAGES:
        return 0.0
    return (CAMPAIGN_STAGES.index(stage) + 1) / len(CAMPAIGN_STAGES)


def _unit_names(session: Session, level: hierarchy.Level, codes: list[str]) -> dict[str, str]:
    """Return the names of the units of LEVEL coded CODES (those the actor may see)."""
    holder = next((lay for lay in REGISTRY.values() if lay.units and level.id in lay.units.levels), None)
    if holder is None or holder.units is None or not codes:
        return {}
    conditions, params = match_sql(holder.level_match(level.id), prefix="lv")
    conditions += [f"{holder.key_field} = ANY(CAST(:codes AS text[]))", *holder.in_force()]
    rows = session.execute(
        text(
            f"SELECT {holder.key_field}, {holder.units.name_field} FROM {holder.table} WHERE {' AND '.join(conditions)}"
        ),
        params | {"codes": codes},
    ).all()
    return {str(code): str(name) for code, name in rows if name}


def progress(session: Session, by: str, flt: Filter | None = None) -> dict[str, Any]:
    """Return the campaign's progress per unit of level BY (and in all), under FLT's scope.

    Each unit: how many assets are at each step, how many are not yet surveyed, and its
    progress (0–1, see the module's docstring); also per layer. Only what the actor may see.
    """
    level = hierarchy.level(by)
    flt = dataclasses.replace(flt or Filter(), bbox=None, values={}, before={})
    units: dict[str | None, dict[str, Any]] = {}
    layers_out = []
    for layer in campaign_layers():
        grouping = unit_column(layer, level)
        if grouping is None or layer.campaign is None:
            continue
        column, only = grouping
        conditions, params = filter_conditions(layer, flt)
        where = " WHERE " + " AND ".join([*conditions, only])
        rows = session.execute(
            text(f"SELECT {column}, {layer.campaign}, count(*) FROM {layer.table}{where} GROUP BY 1, 2"), params
        ).all()
        mine = {"layer": layer.id, "zh": layer.zh, "en": layer.en, **_empty()}
        for code, stage, n in rows:
            unit = units.setdefault(code, {"code": code, **_empty()})
            for tally in (unit, mine):
                _add(tally, stage, int(n))
        layers_out.append(_finish(mine))
    names = _unit_names(session, level, [c for c in units if c])
    rows_out = [
        _finish({**unit, "name": names.get(code or "", "未归属 unassigned" if code is None else code)})
        for code, unit in sorted(units.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    ]
    total = _empty()
    for unit in rows_out:
        for stage, n in unit["stages"].items():
            total["stages"][stage] += n
        total["unstaged"] += unit["unstaged"]
        total["count"] += unit["count"]
        total["weight"] += unit["progress"] * unit["count"]
    return {
        "by": level.id,
        "stages": list(CAMPAIGN_STAGES),
        "total": _finish(total),
        "layers": layers_out,
        "rows": rows_out,
    }


def _empty() -> dict[str, Any]:
    return {"count": 0, "unstaged": 0, "weight": 0.0, "stages": dict.fromkeys(CAMPAIGN_STAGES, 0)}


def _add(tally: dict[str, Any], stage: str | None, n: int) -> None:
    tally["count"] += n
    tally["weight"] += stage_weight(stage) * n
    if stage in CAMPAIGN_STAGES:
        tally["stages"][stage] += n
    else:
        tally["unstaged"] += n


def _finish(tally: dict[str, Any]) -> dict[str, Any]:
    weight = tally.pop("weight")
    tally["progress"] = round(weight / tally["count"], 4) if tally["count"] else 0.0
    return tally


def month_starts(today: dt.date, months: int = MONTHS) -> list[dt.date]:
    """Return the first days of the MONTHS months ending with TODAY's, oldest first.

    Examples
    --------
    >>> [d.isoformat() for d in month_starts(dt.date(2026, 2, 17), 3)]
    ['2025-12-01', '2026-01-01', '2026-02-01']
    """
    out = []
    year, month = today.year, today.month
    for _ in range(months):
        out.append(dt.date(year, month, 1))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return out[::-1]


def results_by_month(session: Session, today: dt.date, months: int = MONTHS) -> dict[str, Any]:
    """Return how many assets reached their layer's result (盘活) in each of the last MONTHS months, and this year.

    Read from the change log (what the actor may see): an update before which the feature did
    not hold a result value and after which it did — the value after is the next logged
    change's row before, or the stored row when no change followed. A feature counts once, in
    the month of its latest such move, and only while it still holds the result (one let and
    given up again was not revitalised). Inserts are not counted: an asset entered as already
    let was not revitalised by the campaign.
    """
    starts = month_starts(today, months)
    since = min(starts[0], dt.date(today.year, 1, 1))
    keys = [d.strftime("%Y-%m") for d in starts]
    per_month = dict.fromkeys(keys, 0)
    this_year = 0
    per_layer = []
    for layer in campaign_layers():
        count = result_count(layer)
        if count is None:
            continue
        rows = session.execute(
            text(
                f"""
                WITH logged AS (
                    SELECT l.id, l.feature_id, l.op, l.at,
                           lead(l.id) OVER (PARTITION BY l.feature_id ORDER BY l.id) AS next_id
                    FROM change_log l
                    WHERE l.layer = :layer AND l.op IN ('update', 'delete') AND l.at >= :since
                ), moves AS (
                    SELECT g.feature_id, g.at, f.{count.field} AS now,
                           guatu_change_before(g.id) ->> :field AS was,
                           CASE WHEN g.next_id IS NULL THEN f.{count.field}
                                ELSE guatu_change_before(g.next_id) ->> :field END AS became
                    FROM logged g JOIN {layer.table} f ON f.id = g.feature_id
                    WHERE g.op = 'update'
                ), latest AS (
                    SELECT DISTINCT ON (feature_id) at, now
                    FROM moves
                    WHERE became = ANY(CAST(:values AS text[]))
                      AND (was IS NULL OR NOT was = ANY(CAST(:values AS text[])))
                    ORDER BY feature_id, at DESC
                )
                SELECT to_char(date_trunc('month', at AT TIME ZONE :tz), 'YYYY-MM'), count(*),
                       count(*) FILTER (WHERE at AT TIME ZONE :tz >= :year_start)
                FROM latest
                WHERE now = ANY(CAST(:values AS text[]))
                GROUP BY 1
                """
            ),
            {
                "layer": layer.id,
                "since": since,
                "field": count.field,
                "values": list(count.values),
                "year_start": dt.date(today.year, 1, 1),
                "tz": layer_settings().timezone,
            },
        ).all()
        in_year = 0
        for month, n, counted in rows:
            if month in per_month:
                per_month[month] += int(n)
            in_year += int(counted)
        this_year += in_year
        per_layer.append(
            {"layer": layer.id, "zh": layer.zh, "en": layer.en, "result_zh": count.zh, "this_year": in_year}
        )
    return {
        "this_year": this_year,
        "layers": per_layer,
        "months": [{"month": k, "count": v} for k, v in per_month.items()],
    }
