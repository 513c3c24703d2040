"""Rent arithmetic of a lease contract (经济合同): the instalments, and where a contract stands on a date.

Pure arithmetic on dates and money, no database: every rule here is tested on fixed dates.

The rules
---------
- A contract runs from ``start`` to ``end``, both days included (2024-01-01 … 2026-12-31 is
  three years). A termination (``terminated_on``) ends it the day before that date.
- The yearly rent follows from the rent and its unit: 元/年 as it stands, 元/月 × 12,
  元/亩·年 × the area in 亩 (1 亩 = 2000/3 m²), 元/m²·月 × the area in m² × 12.
- Rent is paid in advance, at the start of each period of the payment cycle (月 1, 季 3,
  半年 6, 年 12 months). Period *k* starts *k* cycles after ``start``, on the same day of
  the month (the month's last day when it has no such day: a contract from 31 January pays
  monthly on 28/29 February, 31 March…). A full period costs the yearly rent × months / 12.
- A last period cut short by the end of the contract (or its termination) is pro-rated by
  days: the full period's amount × days in force / days of the full period.
- Every instalment is rounded to the 分 (half up); sums are sums of rounded instalments.
- On a date ``as_of``: the *receivable* is the sum of the instalments due on or before it,
  the *received* the sum of the payments made on or before it, the *arrears* what the
  receivable exceeds the received by (never negative; the surplus is the *credit*).
  Payments pay the oldest instalment first; the *days overdue* are ``as_of`` minus the due
  date of the oldest due instalment not wholly paid (0 on its due day itself: rent due
  today is receivable, and late only tomorrow).
- Status on ``as_of``: 纠纷 when marked disputed; else 已终止 from the termination date; else
  已到期 after the end date; else 即将到期 when the end date is at most ``expiry_days`` days
  away (exactly 90 days away is 即将到期); else 履行中.
- Warnings: ``expiring_soon`` (status 即将到期), ``overdue`` (days overdue ≥ 1),
  ``rent_below_floor`` (the rent is below the floor configured for its unit; a floor of 0
  is off), ``term_too_long`` (the term exceeds the legal limit: exactly ``max_years`` years
  is allowed, one day more is not). ``no_contract`` is an asset's (let out, no contract in
  force): see :func:`asset_light`.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

FEN = Decimal("0.01")
MU_M2 = Decimal(2000) / Decimal(3)
"""Square metres in one 亩."""

UNITS = ("元/年", "元/月", "元/亩·年", "元/m²·月")
CYCLES: dict[str, int] = {"月": 1, "季": 3, "半年": 6, "年": 12}
"""Payment cycles and their months."""
MODES = ("公开竞价", "协议", "招标")
"""Transaction modes (交易方式)."""

IN_FORCE, EXPIRING, EXPIRED, TERMINATED, DISPUTED = "履行中", "即将到期", "已到期", "已终止", "纠纷"
STATUSES = (IN_FORCE, EXPIRING, EXPIRED, TERMINATED, DISPUTED)
LIVE = (IN_FORCE, EXPIRING, DISPUTED)
"""Statuses of a contract that still covers its assets."""

RED, YELLOW, GREEN, NONE = "red", "yellow", "green", "none"
LIGHTS = (RED, YELLOW, GREEN, NONE)


@dataclass(frozen=True)
class Alert:
    """A warning about a contract or an asset: a stable code, a message in Chinese and English."""

    code: str
    zh: str
    en: str

    def as_dict(self) -> dict[str, str]:
        """Return it as JSON."""
        return {"code": self.code, "message": f"{self.zh} ({self.en})"}


WARNINGS: dict[str, tuple[str, str]] = {
    "expiring_soon": ("合同即将到期", "contract expires soon"),
    "overdue": ("租金逾期未缴", "rent overdue"),
    "rent_below_floor": ("租金低于最低标准", "rent below the configured floor"),
    "term_too_long": ("合同期限超过法定上限", "term longer than the legal limit"),
    "no_contract": ("资产在用但无有效合同", "asset let out without a contract in force"),
}
"""The warning codes and their short labels (legends, filters)."""
YELLOW_WARNINGS = ("expiring_soon", "rent_below_floor", "term_too_long")


@dataclass(frozen=True)
class Terms:
    """What the arithmetic needs of a contract."""

    start: dt.date
    end: dt.date
    rent: Decimal
    unit: str
    cycle: str
    area_m2: Decimal | None = None
    terminated_on: dt.date | None = None
    disputed: bool = False

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Terms:
        """Return the terms of a stored contract (a mapping of its columns)."""
        area = row.get("area_m2")
        return cls(
            start=row["start_date"],
            end=row["end_date"],
            rent=Decimal(str(row["rent"])),
            unit=row["rent_unit"],
            cycle=row["cycle"],
            area_m2=None if area is None else Decimal(str(area)),
            terminated_on=row.get("terminated_on"),
            disputed=bool(row.get("disputed")),
        )


@dataclass(frozen=True)
class Rules:
    """The configurable limits (layers.settings): warning horizon, legal term, rent floors by unit."""

    expiry_days: int = 90
    max_years: int = 20
    floors: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class Instalment:
    """One period's rent: due on its first day, for the days [start, end] (both included)."""

    due: dt.date
    start: dt.date
    end: dt.date
    amount: Decimal
    partial: bool = False


@dataclass(frozen=True)
class Position:
    """Where a contract stands on a date."""

    as_of: dt.date
    receivable: Decimal
    received: Decimal
    arrears: Decimal
    credit: Decimal
    days_overdue: int
    last_payment: dt.date | None
    status: str
    warnings: tuple[Alert, ...]
    annual_rent: Decimal
    total: Decimal
    """The rent of the whole term (every instalment)."""

    @property
    def codes(self) -> tuple[str, ...]:
        """Return the codes of the warnings."""
        return tuple(w.code for w in self.warnings)

    @property
    def light(self) -> str:
        """Return the contract's light: red when overdue, yellow on another warning, else green."""
        if "overdue" in self.codes:
            return RED
        if any(c in YELLOW_WARNINGS for c in self.codes):
            return YELLOW
        return GREEN

    def as_dict(self) -> dict[str, Any]:
        """Return it as JSON (money in 元 as numbers with two decimals)."""
        return {
            "as_of": self.as_of.isoformat(),
            "receivable": float(self.receivable),
            "received": float(self.received),
            "arrears": float(self.arrears),
            "credit": float(self.credit),
            "days_overdue": self.days_overdue,
            "last_payment": self.last_payment.isoformat() if self.last_payment else None,
            "status": self.status,
            "warnings": [w.as_dict() for w in self.warnings],
            "light": self.light,
            "annual_rent": float(self.annual_rent),
            "total": float(self.total),
        }


def fen(value: Decimal) -> Decimal:
    """Return VALUE rounded to the 分, half up.

    Examples
    --------
    >>> fen(Decimal("1.005")), fen(Decimal("2.3349"))
    (Decimal('1.01'), Decimal('2.33'))
    """
    return value.quantize(FEN, rounding=ROUND_HALF_UP)


def add_months(day: dt.date, months: int, anchor: int | None = None) -> dt.date:
    """Return DAY moved by MONTHS, on day ANCHOR of the month (DAY's own by default), clamped to the month's end.

    Examples
    --------
    >>> add_months(dt.date(2024, 1, 31), 1), add_months(dt.date(2024, 1, 31), 2)
    (datetime.date(2024, 2, 29), datetime.date(2024, 3, 31))
    """
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(anchor or day.day, last))


def annual_rent(terms: Terms) -> Decimal:
    """Return the yearly rent in 元 (not rounded) from the rent, its unit and the area."""
    if terms.unit == "元/年":
        return terms.rent
    if terms.unit == "元/月":
        return terms.rent * 12
    area = terms.area_m2 if terms.area_m2 is not None else Decimal(0)
    if terms.unit == "元/亩·年":
        return terms.rent * area / MU_M2
    if terms.unit == "元/m²·月":
        return terms.rent * area * 12
    raise ValueError(f"unknown rent unit {terms.unit!r}")


def last_day(terms: Terms) -> dt.date:
    """Return the last day the contract is in force: its end, or the day before its termination."""
    if terms.terminated_on is not None and terms.terminated_on <= terms.end:
        return terms.terminated_on - dt.timedelta(days=1)
    return terms.end


def schedule(terms: Terms) -> list[Instalment]:
    """Return the instalments of the whole term, oldest first (see the module's rules)."""
    months = CYCLES[terms.cycle]
    full = annual_rent(terms) * months / 12
    stop = last_day(terms) + dt.timedelta(days=1)  # the first day no longer in force
    out: list[Instalment] = []
    k = 0
    while True:
        begin = add_months(terms.start, k * months, terms.start.day)
        if begin >= stop:
            break
        following = add_months(terms.start, (k + 1) * months, terms.start.day)
        if following <= stop:
            out.append(Instalment(begin, begin, following - dt.timedelta(days=1), fen(full)))
        else:
            share = Decimal((stop - begin).days) / Decimal((following - begin).days)
            out.append(Instalment(begin, begin, stop - dt.timedelta(days=1), fen(full * share), partial=True))
        k += 1
    return out


def term_too_long(terms: Terms, max_years: int) -> bool:
    """Return whether the term (start to end, both included) is longer than MAX_YEARS years."""
    return terms.end + dt.timedelta(days=1) > add_months(terms.start, 12 * max_years)


def status(terms: Terms, as_of: dt.date, expiry_days: int) -> str:
    """Return the contract's status on AS_OF."""
    if terms.disputed:
        return DISPUTED
    if terms.terminated_on is not None and terms.terminated_on <= as_of:
        return TERMINATED
    if as_of > terms.end:
        return EXPIRED
    if (terms.end - as_of).days <= expiry_days:
        return EXPIRING
    return IN_FORCE


def warning(code: str) -> Alert:
    """Return the warning CODE with its message."""
    zh, en = WARNINGS[code]
    return Alert(code, zh, en)


def position(
    terms: Terms, payments: Iterable[tuple[dt.date, Decimal]], as_of: dt.date, rules: Rules | None = None
) -> Position:
    """Return where the contract with TERMS and PAYMENTS (date, amount) stands on AS_OF."""
    rules = rules or Rules()
    instalments = schedule(terms)
    paid = sorted((day, Decimal(amount)) for day, amount in payments if day <= as_of)
    due = [i for i in instalments if i.due <= as_of]
    receivable = sum((i.amount for i in due), Decimal(0))
    received = sum((amount for _, amount in paid), Decimal(0))
    left = received
    days_overdue = 0
    for instalment in due:  # payments pay the oldest instalment first
        if left >= instalment.amount:
            left -= instalment.amount
            continue
        days_overdue = (as_of - instalment.due).days
        break
    state = status(terms, as_of, rules.expiry_days)
    codes = []
    if state == EXPIRING:
        codes.append("expiring_soon")
    if days_overdue > 0:
        codes.append("overdue")
    floor = Decimal(str(rules.floors.get(terms.unit, 0) or 0))
    if floor > 0 and terms.rent < floor:
        codes.append("rent_below_floor")
    if term_too_long(terms, rules.max_years):
        codes.append("term_too_long")
    return Position(
        as_of=as_of,
        receivable=receivable,
        received=received,
        arrears=max(receivable - received, Decimal(0)),
        credit=max(received - receivable, Decimal(0)),
        days_overdue=days_overdue,
        last_payment=paid[-1][0] if paid else None,
        status=state,
        warnings=tuple(warning(c) for c in codes),
        annual_rent=fen(annual_rent(terms)),
        total=sum((i.amount for i in instalments), Decimal(0)),
    )


def asset_light(let: bool, positions: Iterable[Position]) -> tuple[str, tuple[str, ...]]:
    """Return an asset's light and warning codes from whether it is let out and its contracts' positions.

    Red: a contract of it is overdue (even one ended since: the arrears remain), or it is let
    out with no contract in force (``no_contract``). Yellow: a contract in force warns
    (expiring soon, rent below the floor, term too long). Green: a contract in force, no
    warning. None: neither let out nor under a contract in force.
    """
    positions = list(positions)
    live = [p for p in positions if p.status in LIVE]
    codes: list[str] = []
    for p in positions:
        for c in p.codes:
            if c not in codes and (c == "overdue" or p.status in LIVE):
                codes.append(c)
    if let and not live:
        codes.append("no_contract")
    if "overdue" in codes or "no_contract" in codes:
        return RED, tuple(codes)
    if any(c in YELLOW_WARNINGS for c in codes):
        return YELLOW, tuple(codes)
    return (GREEN if live else NONE), tuple(codes)


def owing(
    terms: Terms, payments: Iterable[tuple[dt.date, Decimal]], as_of: dt.date
) -> list[tuple[Instalment, Decimal, Decimal]]:
    """Return each instalment with what the payments made by AS_OF paid of it and what it still owes.

    Payments pay the oldest instalment first (as in :func:`position`); an instalment not yet
    due may be paid in advance by a surplus. Owing is never negative.

    Examples
    --------
    >>> t = Terms(dt.date(2024, 1, 1), dt.date(2024, 12, 31), Decimal(1200), "元/年", "半年")
    >>> [(i.due.isoformat(), str(paid), str(left)) for i, paid, left in owing(t, [(dt.date(2024, 1, 5), Decimal(800))],
    ...     dt.date(2024, 7, 1))]
    [('2024-01-01', '600.00', '0.00'), ('2024-07-01', '200.00', '400.00')]
    """
    left = sum((Decimal(amount) for day, amount in payments if day <= as_of), Decimal(0))
    out = []
    for instalment in schedule(terms):
        paid = min(left, instalment.amount)
        left -= paid
        out.append((instalment, paid, instalment.amount - paid))
    return out
