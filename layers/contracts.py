"""经济合同: lease contracts of the collective's assets (parcels, shops, revenue points), their rent and arrears.

Not a map layer: a contract covers one or more assets of the layers that declare what "let
out" means (``Layer.let``), named by layer and key. Its rent arithmetic is
:mod:`layers.rent` (pure, tested on fixed dates); here are the tables, the rules of who may
see and change them, and the figures the API and the cockpit read.

Each contract carries the community code of its assets (``area_code``): row-level security
keeps it, its assets and its payments inside the acting user's area, as for the layers.
The lessee's name and ID number are personal: the app role cannot read those columns; a
function run as the owner gives them, masked unless the actor's role sees personal values.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from layers import hierarchy, rent
from layers.access import ROLES, Actor, area_fields, area_of, sees_personal_sql, taken_function
from layers.base import REGISTRY, Layer, as_shown_masked, looks_masked_text, mask_text
from layers.settings import layer_settings
from layers.workbook import Column, Table
from spatial.db import Base
from spatial.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed, Problem, Where
from spatial.geometry import STORAGE_SRID

CONTRACTS, ASSETS, PAYMENTS = "contracts", "contract_assets", "contract_payments"
TABLES = (CONTRACTS, ASSETS, PAYMENTS)
PARTIES_FUNCTION = "guatu_shown_contracts"
"""Named as the layers' functions showing personal fields (migration 0011 leaves those to later revisions)."""
PERSONAL = ("lessee_name", "lessee_id")
"""Columns of a contract that name a private person: masked unless the role sees personal values."""
MONEY = Numeric(14, 2)
MAX_ASSETS = 50
EARLIEST, LATEST = dt.date(1900, 1, 1), dt.date(2199, 12, 31)
"""The dates a contract or a payment may carry: year 0001 or 9999 (a typo) is refused; 9999 broke the arithmetic."""
MAX_TERM_YEARS = 100
"""The longest term taken at all (the legal limit, ``lease_max_years``, only warns): it bounds the instalments."""


def _listed(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


class Contract(Base):
    """One lease contract: parties, term, rent and payment cycle."""

    __tablename__ = CONTRACTS
    __table_args__ = (
        CheckConstraint("end_date >= start_date", name="dates"),
        CheckConstraint("terminated_on IS NULL OR terminated_on >= start_date", name="terminated_after_start"),
        CheckConstraint(f"trade_mode IN ({_listed(rent.MODES)})", name="trade_mode_enum"),
        CheckConstraint(f"rent_unit IN ({_listed(rent.UNITS)})", name="rent_unit_enum"),
        CheckConstraint(f"cycle IN ({_listed(rent.CYCLES)})", name="cycle_enum"),
        CheckConstraint("rent >= 0", name="rent_min"),
        CheckConstraint("deposit >= 0", name="deposit_min"),
        CheckConstraint("area_m2 >= 0", name="area_m2_min"),
        CheckConstraint(f"area_code ~ '^[0-9]{{{hierarchy.COMMUNITY_DIGITS}}}$'", name="area_code_format"),
        {"comment": "经济合同 lease contracts of collective assets"},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True, comment="合同编号 contract number")
    title: Mapped[str | None] = mapped_column(String(100), comment="合同名称 title")
    lessor: Mapped[str] = mapped_column(String(100), comment="出租方/发包方 lessor")
    lessee_name: Mapped[str] = mapped_column(String(100), comment="承租方 lessee (personal)")
    lessee_id: Mapped[str | None] = mapped_column(String(30), comment="承租方证件号码 lessee ID number (personal)")
    trade_mode: Mapped[str | None] = mapped_column(String(4), comment="交易方式 公开竞价/协议/招标")
    deliberation_ref: Mapped[str | None] = mapped_column(String(200), comment="四议两公开 决议文号 resolution")
    signed_on: Mapped[dt.date | None] = mapped_column(Date, comment="签订日期 signed on")
    start_date: Mapped[dt.date] = mapped_column(Date, comment="起始日期 first day")
    end_date: Mapped[dt.date] = mapped_column(Date, comment="终止日期 last day (included)")
    terminated_on: Mapped[dt.date | None] = mapped_column(Date, comment="提前解除日期 terminated on")
    disputed: Mapped[bool] = mapped_column(Boolean, server_default="false", comment="纠纷 in dispute")
    area_m2: Mapped[Decimal | None] = mapped_column(MONEY, comment="面积(m²) area")
    rent: Mapped[Decimal] = mapped_column(MONEY, comment="租金 rent, in its unit")
    rent_unit: Mapped[str] = mapped_column(String(8), comment="租金单位 元/年, 元/月, 元/亩·年, 元/m²·月")
    cycle: Mapped[str] = mapped_column(String(2), comment="缴费周期 月/季/半年/年, paid in advance")
    deposit: Mapped[Decimal | None] = mapped_column(MONEY, comment="保证金 deposit")
    area_code: Mapped[str] = mapped_column(String(12), index=True, comment="资产所在社区/村代码 the assets' community")
    note: Mapped[str | None] = mapped_column(String(500), comment="备注 note")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    version: Mapped[int] = mapped_column(Integer, server_default="1", comment="版本 version, raised on every update")


class ContractAsset(Base):
    """An asset a contract covers: a feature of a layer, by its key."""

    __tablename__ = ASSETS
    __table_args__ = (
        Index("ix_contract_assets_asset", "layer", "asset_code"),
        {"comment": "合同标的 the assets of a contract"},
    )

    contract_id: Mapped[int] = mapped_column(
        Integer, ForeignKey(f"{CONTRACTS}.id", ondelete="CASCADE"), primary_key=True
    )
    layer: Mapped[str] = mapped_column(String(40), primary_key=True, comment="图层 layer id")
    asset_code: Mapped[str] = mapped_column(String(19), primary_key=True, comment="资产编码 the feature's key")


class ContractPayment(Base):
    """A payment received under a contract."""

    __tablename__ = PAYMENTS
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        {"comment": "合同收款 payments received"},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    contract_id: Mapped[int] = mapped_column(Integer, ForeignKey(f"{CONTRACTS}.id", ondelete="CASCADE"), index=True)
    paid_on: Mapped[dt.date] = mapped_column(Date, comment="收款日期 paid on")
    amount: Mapped[Decimal] = mapped_column(MONEY, comment="金额(元) amount")
    note: Mapped[str | None] = mapped_column(String(200), comment="备注 note (receipt number)")
    recorded_by: Mapped[str] = mapped_column(String(60), comment="登记人 recorded by")
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- who may see and change them -------------------------------------------------------------


def writer_roles() -> tuple[str, ...]:
    """Return the roles that keep contracts (within their area)."""
    return tuple(r.id for r in ROLES.values() if r.contracts)


def may_write(actor: Actor) -> bool:
    """Return whether ACTOR keeps contracts (inside the area)."""
    return ROLES[actor.role].contracts


def policies() -> list[tuple[str, list[str]]]:
    """Return (table, statements) putting the contract tables under row-level security by area."""
    roles = f"guatu_actor_role() IN ({_listed(writer_roles())})"
    own = f"{roles} AND guatu_in_area(area_code)"
    seen = f"EXISTS (SELECT 1 FROM {CONTRACTS} c WHERE c.id = contract_id)"
    kept = f"{roles} AND EXISTS (SELECT 1 FROM {CONTRACTS} c WHERE c.id = contract_id AND guatu_in_area(c.area_code))"
    return [
        (
            CONTRACTS,
            [
                f"ALTER TABLE {CONTRACTS} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY guatu_read ON {CONTRACTS} FOR SELECT USING (guatu_in_area(area_code))",
                f"CREATE POLICY guatu_insert ON {CONTRACTS} FOR INSERT WITH CHECK ({own})",
                f"CREATE POLICY guatu_update ON {CONTRACTS} FOR UPDATE USING ({own}) WITH CHECK ({own})",
            ],
        ),
        (
            ASSETS,
            [
                f"ALTER TABLE {ASSETS} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY guatu_read ON {ASSETS} FOR SELECT USING ({seen})",
                f"CREATE POLICY guatu_insert ON {ASSETS} FOR INSERT WITH CHECK ({kept})",
                f"CREATE POLICY guatu_delete ON {ASSETS} FOR DELETE USING ({kept})",
            ],
        ),
        (
            PAYMENTS,
            [
                f"ALTER TABLE {PAYMENTS} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY guatu_read ON {PAYMENTS} FOR SELECT USING ({seen})",
                f"CREATE POLICY guatu_insert ON {PAYMENTS} FOR INSERT WITH CHECK ({kept})",
            ],
        ),
    ]


def privileges() -> dict[str, tuple[str, ...]]:
    """Return the app role's privileges on the contract tables (layers.migrate): payments are never changed."""
    columns = [c.name for c in Contract.__table__.columns if c.name not in PERSONAL]
    return {
        CONTRACTS: (f"SELECT ({', '.join(columns)})", "INSERT", "UPDATE"),
        ASSETS: ("SELECT", "INSERT", "DELETE"),
        PAYMENTS: ("SELECT", "INSERT"),
    }


def parties_function_sql() -> str:
    """Return the function (run as the owner) giving contracts' lessee name and ID, full or masked by role and area."""
    shown = " , ".join(
        f"CASE WHEN {sees_personal_sql()} THEN c.{name} ELSE guatu_mask(c.{name}) END" for name in PERSONAL
    )
    return f"""CREATE OR REPLACE FUNCTION {PARTIES_FUNCTION}(ids integer[])
RETURNS TABLE (id integer, {PERSONAL[0]} text, {PERSONAL[1]} text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT c.id, {shown} FROM {CONTRACTS} c
  WHERE c.id = ANY(ids) AND guatu_in_area(c.area_code)
$$"""


# --- input ----------------------------------------------------------------------------------


def _clean(value: str) -> str:
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value) or "\x7f" in value:
        raise ValueError("contains a control character")
    return value


Text = Annotated[str, AfterValidator(_clean)]


class AssetRef(BaseModel):
    """An asset named by its layer and its key (parcels' 地块编码, shops' 商铺编号…)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    layer: str = PydField(max_length=40, title="图层 layer id")
    code: str = PydField(min_length=1, max_length=19, pattern="^[0-9A-Z]+$", examples=["3702140010090100001"])


TradeMode = Literal[rent.MODES]  # type: ignore[valid-type]
RentUnit = Literal[rent.UNITS]  # type: ignore[valid-type]
Cycle = Literal["月", "季", "半年", "年"]
assert set(get_args(Cycle)) == set(rent.CYCLES)


class ContractIn(BaseModel):
    """A contract as sent to create or replace one (every field; the lessee's as shown when not changed)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    number: Text = PydField(min_length=1, max_length=40, title="合同编号 number")
    title: Text | None = PydField(None, max_length=100, title="合同名称 title")
    lessor: Text = PydField(min_length=1, max_length=100, title="出租方 lessor")
    lessee_name: Text = PydField(min_length=1, max_length=100, title="承租方 lessee")
    lessee_id: Text | None = PydField(None, max_length=30, title="承租方证件号码 lessee ID")
    trade_mode: TradeMode | None = PydField(None, title="交易方式 transaction mode")
    deliberation_ref: Text | None = PydField(None, max_length=200, title="四议两公开 resolution")
    signed_on: dt.date | None = None
    start_date: dt.date
    end_date: dt.date
    terminated_on: dt.date | None = None
    disputed: bool = False
    area_m2: Decimal | None = PydField(None, ge=0, le=Decimal("1e10"), decimal_places=2, title="面积(m²) area")
    rent: Decimal = PydField(ge=0, le=Decimal("1e10"), decimal_places=2, title="租金 rent")
    rent_unit: RentUnit
    cycle: Cycle
    deposit: Decimal | None = PydField(None, ge=0, le=Decimal("1e10"), decimal_places=2)
    note: Text | None = PydField(None, max_length=500)
    assets: list[AssetRef] = PydField(min_length=1, max_length=MAX_ASSETS)


class PaymentIn(BaseModel):
    """A payment received."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    paid_on: dt.date
    amount: Decimal = PydField(gt=0, le=Decimal("1e10"), decimal_places=2)
    note: Text | None = PydField(None, max_length=200)


def example() -> dict[str, Any]:
    """Return an example contract (the API's examples, tests): over the sample parcel of tests/samples.py."""
    return {
        "number": "NT-2024-001",
        "title": "南疃东地块租赁合同",
        "lessor": "南疃社区股份经济合作社",
        "lessee_name": "李明华",
        "lessee_id": "370214198001011234",
        "trade_mode": "公开竞价",
        "deliberation_ref": "南疃〔2023〕12号",
        "signed_on": "2023-12-20",
        "start_date": "2024-01-01",
        "end_date": "2028-12-31",
        "area_m2": "6000",
        "rent": "800",
        "rent_unit": "元/亩·年",
        "cycle": "年",
        "deposit": "2000",
        "assets": [{"layer": let_layers()[0].id, "code": "3702140010090100001"}],
    }


def let_layers() -> list[Layer]:
    """Return the layers whose features can be let out (they declare ``let``)."""
    return sorted((lay for lay in REGISTRY.values() if lay.let), key=lambda lay: lay.order)


def rules() -> rent.Rules:
    """Return the arithmetic's limits from the settings."""
    s = layer_settings()
    floors = {unit: Decimal(str(v)) for unit, v in s.rent_floors.items()}
    return rent.Rules(expiry_days=s.expiry_warning_days, max_years=s.lease_max_years, floors=floors)


def _invalid(code: str, zh: str, en: str, field: str) -> InvalidInput:
    return InvalidInput(Problem(code, zh, en, Where(field=field)))


def _check_terms(data: ContractIn) -> None:
    """Refuse terms the arithmetic cannot hold (every problem at once)."""
    problems = []
    for name in ("signed_on", "start_date", "end_date", "terminated_on"):
        day = getattr(data, name)
        if day is not None and not EARLIEST <= day <= LATEST:
            problems.append(
                Problem(
                    "contract_dates",
                    f"日期 {day.isoformat()} 不在 {EARLIEST.year}–{LATEST.year} 年之间",
                    f"the date {day.isoformat()} is not between {EARLIEST.year} and {LATEST.year}",
                    Where(field=name),
                )
            )
    if problems:
        raise InvalidInput(problems)
    if data.end_date >= rent.add_months(data.start_date, 12 * MAX_TERM_YEARS):
        problems.append(
            Problem(
                "contract_dates",
                f"合同期限超过 {MAX_TERM_YEARS} 年",
                f"the term is longer than {MAX_TERM_YEARS} years",
                Where(field="end_date"),
            )
        )
    if data.end_date < data.start_date:
        problems.append(
            Problem(
                "contract_dates",
                "终止日期早于起始日期",
                "the end date is before the start date",
                Where(field="end_date"),
            )
        )
    if data.terminated_on is not None and data.terminated_on < data.start_date:
        problems.append(
            Problem(
                "contract_dates",
                "提前解除日期早于起始日期",
                "the termination date is before the start date",
                Where(field="terminated_on"),
            )
        )
    if data.rent_unit in ("元/亩·年", "元/m²·月") and not data.area_m2:
        problems.append(
            Problem(
                "contract_area",
                f"租金单位为 {data.rent_unit} 时须填写面积",
                f"a rent in {data.rent_unit} needs the area",
                Where(field="area_m2"),
            )
        )
    if problems:
        raise InvalidInput(problems)


def _community(code: str) -> str:
    return code[: hierarchy.COMMUNITY_DIGITS]


def _locate_assets(session: Session, assets: list[AssetRef]) -> str:
    """Return the community code the ASSETS lie in; refuse unknown ones, ones outside the area, or several places."""
    found: list[str] = []
    for n, ref in enumerate(assets):
        field = f"assets.{n}"
        layer = REGISTRY.get(ref.layer)
        if layer is None or not layer.let:
            names = "、".join(f"{lay.id} {lay.zh}" for lay in let_layers())
            raise _invalid(
                "unknown_asset", f"合同标的只能是：{names}", f"an asset is one of: {names}", field + ".layer"
            )
        model = layer.model
        columns = [getattr(model, name) for name in area_fields(layer)]
        row = session.execute(select(*columns).where(getattr(model, layer.key_field) == ref.code)).first()
        if row is None:
            taken = session.execute(
                text(f"SELECT * FROM {taken_function(layer)}(CAST(:k AS text[]))"), {"k": [ref.code]}
            ).first()
            if taken is not None:
                raise Forbidden(
                    Problem(
                        "asset_outside_area",
                        f"{layer.zh} {ref.code} 不在您的辖区内，不能签订或修改其合同",
                        f"{layer.en.lower()} {ref.code} lies outside your area",
                        Where(field=field + ".code"),
                    )
                )
            raise _invalid(
                "unknown_asset",
                f"没有编码为 {ref.code} 的{layer.zh}",
                f"no {layer.en.lower()} coded {ref.code}",
                field + ".code",
            )
        code = area_of(layer, dict(zip(area_fields(layer), row, strict=True)))
        if code is None or len(code) < hierarchy.COMMUNITY_DIGITS:
            raise _invalid(
                "asset_unlocated",
                f"{layer.zh} {ref.code} 未填写所在社区/村，无法确定合同归属",
                f"{layer.en.lower()} {ref.code} has no community: the contract's area is unknown",
                field + ".code",
            )
        found.append(_community(code))
    if len(set(found)) > 1:
        raise _invalid(
            "assets_apart",
            f"同一合同的标的须在同一社区/村（{'、'.join(sorted(set(found)))}）",
            f"the assets of one contract lie in one community ({', '.join(sorted(set(found)))})",
            "assets",
        )
    return found[0]


# --- reading --------------------------------------------------------------------------------

_READ = [c for c in Contract.__table__.columns if c.name not in PERSONAL]


def _rows(session: Session, where: Any = None) -> list[dict[str, Any]]:
    query = select(*_READ).order_by(Contract.id)
    if where is not None:
        query = query.where(where)
    return [dict(r._mapping) for r in session.execute(query)]


def _assets_of(session: Session, ids: list[int]) -> dict[int, list[dict[str, str]]]:
    out: dict[int, list[dict[str, str]]] = defaultdict(list)
    if ids:
        for cid, layer, code in session.execute(
            select(ContractAsset.contract_id, ContractAsset.layer, ContractAsset.asset_code)
            .where(ContractAsset.contract_id.in_(ids))
            .order_by(ContractAsset.layer, ContractAsset.asset_code)
        ):
            out[cid].append({"layer": layer, "code": code})
    return out


def _payments_of(session: Session, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if ids:
        query = (
            select(ContractPayment)
            .where(ContractPayment.contract_id.in_(ids))
            .order_by(ContractPayment.paid_on, ContractPayment.id)
        )
        for p in session.execute(query).scalars():
            out[p.contract_id].append(
                {
                    "id": p.id,
                    "paid_on": p.paid_on,
                    "amount": p.amount,
                    "note": p.note,
                    "recorded_by": p.recorded_by,
                    "recorded_at": p.recorded_at,
                }
            )
    return out


def _parties(session: Session, ids: list[int]) -> dict[int, tuple[str | None, str | None]]:
    if not ids:
        return {}
    rows = session.execute(text(f"SELECT * FROM {PARTIES_FUNCTION}(CAST(:ids AS integer[]))"), {"ids": ids})
    return {int(r[0]): (r[1], r[2]) for r in rows}


def _scope_where(scope: str | None) -> Any:
    if not scope:
        return None
    if hierarchy.level_of(scope) is None:
        raise _invalid("scope_invalid", f"范围编码 {scope} 不是区划或网格编码", f"{scope} is not a unit code", "scope")
    return Contract.area_code.startswith(_community(hierarchy.code_prefix(scope)), autoescape=True)


def load(
    session: Session, as_of: dt.date, *, scope: str | None = None, ids: list[int] | None = None
) -> list[dict[str, Any]]:
    """Return the contracts the stated actor may see (in SCOPE, or IDS), each with its assets, payments and position."""
    where = _scope_where(scope)
    if ids is not None:
        where = Contract.id.in_(ids) if where is None else and_(where, Contract.id.in_(ids))
    rows = _rows(session, where)
    keys = [r["id"] for r in rows]
    assets, payments, parties = _assets_of(session, keys), _payments_of(session, keys), _parties(session, keys)
    limits = rules()
    for r in rows:
        r["lessee_name"], r["lessee_id"] = parties.get(r["id"], (None, None))
        r["assets"] = assets.get(r["id"], [])
        r["payments"] = payments.get(r["id"], [])
        paid = tuple((p["paid_on"], p["amount"]) for p in r["payments"])
        r["position"] = _position(rent.Terms.of(r), paid, as_of, _rules_key(limits))
    return rows


def _rules_key(limits: rent.Rules) -> tuple[int, int, tuple[tuple[str, Decimal], ...]]:
    """Return LIMITS as a key (its floors a sorted tuple): positions are remembered per rules in force."""
    return limits.expiry_days, limits.max_years, tuple(sorted(limits.floors.items()))


@lru_cache(maxsize=65_536)
def _position(
    terms: rent.Terms,
    paid: tuple[tuple[dt.date, Decimal], ...],
    as_of: dt.date,
    limits: tuple[int, int, tuple[tuple[str, Decimal], ...]],
) -> rent.Position:
    """Return the position of a contract with TERMS and PAYMENTS PAID on AS_OF, remembered.

    A position follows from the terms, the payments and the date alone (a Position cannot be
    changed), so a list of thousands of contracts read again — the map's lights, the cockpit,
    the next page — recomputes only those whose terms or payments changed.
    """
    expiry, years, floors = limits
    return rent.position(terms, paid, as_of, rent.Rules(expiry, years, dict(floors)))


def public(row: dict[str, Any]) -> dict[str, Any]:
    """Return a loaded contract as JSON (dates ISO, money as numbers, its position)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "position":
            out[key] = value.as_dict()
        elif key == "payments":
            out[key] = [public(p) for p in value]
        elif isinstance(value, dt.date | dt.datetime):
            out[key] = value.isoformat()
        elif isinstance(value, Decimal):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def get(session: Session, cid: int, as_of: dt.date) -> dict[str, Any]:
    """Return contract CID (as the stated actor may see it), or raise NotFound."""
    found = load(session, as_of, ids=[cid])
    if not found:
        raise NotFound.one("contract_not_found", f"没有编号为 {cid} 的合同", f"no contract {cid}", id=cid)
    return found[0]


# --- writing --------------------------------------------------------------------------------


def _values(data: ContractIn, area: str) -> dict[str, Any]:
    values = data.model_dump(exclude={"assets"})
    values["area_code"] = area
    return values


def _kept_personal(session: Session, cid: int, values: dict[str, Any]) -> None:
    """Keep the stored lessee name or ID where the client sent back the masked value it was shown."""
    shown = _parties(session, [cid]).get(cid)
    if shown is None:
        return
    for name, was in zip(PERSONAL, shown, strict=True):
        sent = values.get(name)
        if isinstance(sent, str) and looks_masked_text(sent):
            masked = was if was is None or looks_masked_text(was) else mask_text(was)
            if as_shown_masked(sent) != masked:
                raise _invalid(
                    "masked_value_changed",
                    "带 * 的值是脱敏显示，不能作为新值保存",
                    "a value with stars is a masked one: it cannot be saved as a new value",
                    name,
                )
            del values[name]


def _integrity(exc: IntegrityError, number: str) -> Exception:
    if "uq_contracts_number" in str(exc.orig):
        return Conflict.one(
            "contract_number_taken",
            f"合同编号 {number} 已被使用",
            f"contract number {number} is taken",
            field="number",
        )
    return InvalidInput.one("constraint_violation", "数据不符合约束", "the data breaks a constraint")


def _set_assets(session: Session, cid: int, assets: list[AssetRef]) -> None:
    session.execute(delete(ContractAsset).where(ContractAsset.contract_id == cid))
    unique = {(a.layer, a.code) for a in assets}
    session.execute(
        insert(ContractAsset),
        [{"contract_id": cid, "layer": layer, "asset_code": code} for layer, code in sorted(unique)],
    )


def _refuse_writer(actor: Actor) -> None:
    if not may_write(actor):
        role = ROLES[actor.role]
        raise Forbidden.one("forbidden", f"角色“{role.zh}”不能管理合同", f"role {role.en} may not keep contracts")


def _checked_area(session: Session, actor: Actor, data: ContractIn) -> str:
    """Check DATA's terms and return the community its assets lie in, refused unless it is in ACTOR's area."""
    _check_terms(data)
    area = _locate_assets(session, data.assets)
    if not actor.in_area(area):
        raise Forbidden.one(
            "asset_outside_area",
            "合同标的不在您的辖区内",
            "the contract's assets lie outside your area",
            field="assets",
        )
    return area


def create(session: Session, actor: Actor, data: ContractIn, as_of: dt.date) -> dict[str, Any]:
    """Store a new contract (not committed) and return it."""
    _refuse_writer(actor)
    area = _checked_area(session, actor, data)
    try:
        with session.begin_nested():
            cid = session.execute(insert(Contract).values(**_values(data, area)).returning(Contract.id)).scalar_one()
            _set_assets(session, cid, data.assets)
    except IntegrityError as exc:
        raise _integrity(exc, data.number) from None
    return get(session, cid, as_of)


def replace(
    session: Session, actor: Actor, cid: int, data: ContractIn, version: int | None, as_of: dt.date
) -> dict[str, Any]:
    """Replace contract CID as of the VERSION read (None: any), not committed; return it."""
    _refuse_writer(actor)
    current = get(session, cid, as_of)
    if version is not None and current["version"] != version:
        raise PreconditionFailed(
            Problem(
                "version_conflict",
                f"该合同已被他人修改（您基于第 {version} 版，当前为第 {current['version']} 版）",
                f"the contract was changed meanwhile (you read version {version}, it is at {current['version']})",
                Where(id=cid),
            ),
            current=public(current),
        )
    area = _checked_area(session, actor, data)
    values = _values(data, area)
    _kept_personal(session, cid, values)
    try:
        with session.begin_nested():
            session.execute(
                update(Contract)
                .where(Contract.id == cid)
                .values(**values, version=Contract.version + 1, updated_at=func.now())
            )
            _set_assets(session, cid, data.assets)
    except IntegrityError as exc:
        raise _integrity(exc, data.number) from None
    return get(session, cid, as_of)


def add_payment(session: Session, actor: Actor, cid: int, data: PaymentIn, as_of: dt.date) -> dict[str, Any]:
    """Record a payment received under contract CID (not committed); return the contract."""
    _refuse_writer(actor)
    get(session, cid, as_of)  # 404 when not visible
    if not EARLIEST <= data.paid_on <= LATEST:
        raise _invalid(
            "payment_date",
            f"收款日期 {data.paid_on.isoformat()} 不在 {EARLIEST.year}–{LATEST.year} 年之间",
            f"the payment date {data.paid_on.isoformat()} is not between {EARLIEST.year} and {LATEST.year}",
            "paid_on",
        )
    session.execute(
        insert(ContractPayment).values(
            contract_id=cid, paid_on=data.paid_on, amount=data.amount, note=data.note, recorded_by=actor.username
        )
    )
    return get(session, cid, as_of)


# --- assets and figures ---------------------------------------------------------------------


def _let_condition(layer: Layer) -> Any:
    conditions = []
    for name, value in layer.let:
        column = getattr(layer.model, name)
        conditions.append(column.in_(value) if isinstance(value, tuple) else column == value)
    return and_(*conditions)


def let_assets(
    session: Session, layer: Layer, *, scope: str | None = None, bbox: tuple[float, ...] | None = None
) -> dict[str, bool]:
    """Return {key: let out?} of LAYER's features the actor sees (in SCOPE or BBOX) that are let or contracted."""
    model = layer.model
    key = getattr(model, layer.key_field)
    covered = select(ContractAsset.asset_code).where(ContractAsset.layer == layer.id)
    query = select(key, _let_condition(layer)).where(or_(_let_condition(layer), key.in_(covered)))
    if bbox is not None:
        query = query.where(func.ST_Intersects(model.geom, func.ST_MakeEnvelope(*bbox, STORAGE_SRID)))
    params: dict[str, Any] = {}
    if scope:
        found = layer.scope_condition(scope)
        if found is None:
            return {}
        condition, params = found
        query = query.where(text(condition))
    return {str(code): bool(let) for code, let in session.execute(query, params)}


def asset_lights(
    session: Session,
    layer: Layer,
    as_of: dt.date,
    *,
    scope: str | None = None,
    bbox: tuple[float, ...] | None = None,
) -> dict[str, dict[str, Any]]:
    """Return {key: {light, warnings, contracts}} of LAYER's features that are let out or under a contract."""
    assets = let_assets(session, layer, scope=scope, bbox=bbox)
    if not assets:
        return {}
    links = session.execute(
        select(ContractAsset.asset_code, ContractAsset.contract_id).where(
            ContractAsset.layer == layer.id, ContractAsset.asset_code.in_(list(assets))
        )
    ).all()
    contracts = {c["id"]: c for c in load(session, as_of, ids=sorted({cid for _, cid in links}))}
    by_asset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for code, cid in links:
        if cid in contracts:
            by_asset[code].append(contracts[cid])
    out = {}
    for code, let in sorted(assets.items()):
        mine = by_asset.get(code, [])
        light, codes = rent.asset_light(let, [c["position"] for c in mine])
        out[code] = {"light": light, "warnings": list(codes), "contracts": [c["number"] for c in mine]}
    return out


def _no_contract(session: Session, as_of: dt.date, scope: str | None = None) -> dict[str, int]:
    """Return {community code: assets let out without a contract in force} the stated actor sees."""
    counts: dict[str, int] = defaultdict(int)
    for layer in let_layers():
        lights = asset_lights(session, layer, as_of, scope=scope)
        flagged = [code for code, lit in lights.items() if "no_contract" in lit["warnings"]]
        for code in flagged:
            counts[_community(code)] += 1  # an asset code begins with its community's code (layers.common)
    return counts


def _money(value: Decimal) -> float:
    return float(rent.fen(value))


def report(session: Session, as_of: dt.date, scope: str | None = None) -> dict[str, Any]:
    """Return the figures of the contracts the stated actor sees in SCOPE on AS_OF: totals, counts, ranking."""
    rows = load(session, as_of, scope=scope)
    missing = _no_contract(session, as_of, scope)
    totals = {"receivable": Decimal(0), "received": Decimal(0), "arrears": Decimal(0)}
    statuses = dict.fromkeys(rent.STATUSES, 0)
    warnings = dict.fromkeys(rent.WARNINGS, 0)
    units: dict[str, dict[str, Any]] = {}
    for r in rows:
        p: rent.Position = r["position"]
        statuses[p.status] += 1
        for c in p.codes:
            warnings[c] += 1
        unit = units.setdefault(r["area_code"], _unit_row(r["area_code"]))
        for key in totals:
            totals[key] += getattr(p, key)
            unit[key] += getattr(p, key)
        unit["contracts"] += 1
        unit["overdue"] += "overdue" in p.codes
    for code, n in missing.items():
        units.setdefault(code, _unit_row(code))["no_contract"] += n
    warnings["no_contract"] = sum(missing.values())
    names = _unit_names(session, list(units))
    ranking = sorted(units.values(), key=lambda u: (-u["arrears"], u["code"]))
    for u in ranking:
        u["name"] = names.get(u["code"], "")
        for key in totals:
            u[key] = _money(u[key])
    return {
        "as_of": as_of.isoformat(),
        "scope": scope,
        "receivable": _money(totals["receivable"]),
        "received": _money(totals["received"]),
        "arrears": _money(totals["arrears"]),
        "contracts": len(rows),
        "statuses": statuses,
        "warnings": warnings,
        "units": ranking,
    }


def _unit_row(code: str) -> dict[str, Any]:
    zero = Decimal(0)
    return {
        "code": code,
        "name": "",
        "receivable": zero,
        "received": zero,
        "arrears": zero,
        "contracts": 0,
        "overdue": 0,
        "no_contract": 0,
    }


def _unit_names(session: Session, codes: list[str]) -> dict[str, str]:
    """Return the names of the units coded CODES (as the stated actor sees the unit layers)."""
    from layers.scopes import unit_layers

    out: dict[str, str] = {}
    for layer in unit_layers():
        if layer.units is None or not codes:
            continue
        key, name = getattr(layer.model, layer.key_field), getattr(layer.model, layer.units.name_field)
        for code, shown in session.execute(select(key, name).where(key.in_(codes))):
            out.setdefault(str(code), str(shown))
    return out


def summary(session: Session, as_of: dt.date) -> dict[str, Any]:
    """Return the cockpit's contract figures for what the stated actor may see on AS_OF.

    Keys: receivable, received, arrears (float 元), contracts, overdue, expiring, no_contract (counts).
    """
    found = report(session, as_of)
    return {
        "receivable": found["receivable"],
        "received": found["received"],
        "arrears": found["arrears"],
        "contracts": found["contracts"],
        "overdue": found["warnings"]["overdue"],
        "expiring": found["warnings"]["expiring_soon"],
        "no_contract": found["warnings"]["no_contract"],
    }


def by_unit(session: Session, as_of: dt.date) -> list[dict[str, Any]]:
    """Return per community (code, name): receivable, received, arrears (float 元), the largest arrears first."""
    return [
        {k: u.get(k, 0) for k in ("code", "name", "receivable", "received", "arrears", "contracts", "overdue")}
        for u in report(session, as_of)["units"]
    ]


# --- the ledger: filtered, each contract's schedule, and its Excel export ------------------


def listed(
    session: Session,
    as_of: dt.date,
    *,
    scope: str | None = None,
    status: str | None = None,
    warning: str | None = None,
) -> list[dict[str, Any]]:
    """Return the contracts the stated actor sees in SCOPE on AS_OF, kept to STATUS and WARNING when given."""
    return [
        r
        for r in load(session, as_of, scope=scope)
        if (status is None or r["position"].status == status) and (warning is None or warning in r["position"].codes)
    ]


def schedule_of(row: dict[str, Any], as_of: dt.date) -> list[dict[str, Any]]:
    """Return the instalments of a loaded contract: due date, period, amount, paid and still owing by AS_OF."""
    payments = [(p["paid_on"], p["amount"]) for p in row["payments"]]
    return [
        {
            "due": i.due.isoformat(),
            "start": i.start.isoformat(),
            "end": i.end.isoformat(),
            "amount": float(i.amount),
            "partial": i.partial,
            "paid": float(paid),
            "owing": float(left),
            "overdue": bool(left) and i.due < as_of,
        }
        for i, paid, left in rent.owing(rent.Terms.of(row), payments, as_of)
    ]


def _assets_words(assets: list[dict[str, str]]) -> str:
    named = {lay.id: lay.zh for lay in let_layers()}
    return "；".join(f"{named.get(a['layer'], a['layer'])} {a['code']}" for a in assets)


CONTRACT_COLUMNS = (
    Column("合同编号", "number", "code"),
    Column("合同名称", "title", "text"),
    Column("出租方", "lessor", "text"),
    Column("承租方", "lessee", "text"),
    Column("承租方证件号码", "lessee ID", "code"),
    Column("标的", "assets", "text"),
    Column("所在社区/村代码", "community code", "code"),
    Column("交易方式", "trade mode", "text"),
    Column("签订日期", "signed on", "date"),
    Column("起始日期", "start", "date"),
    Column("终止日期", "end", "date"),
    Column("提前解除日期", "terminated on", "date"),
    Column("租金", "rent", "money"),
    Column("租金单位", "rent unit", "text"),
    Column("缴费周期", "cycle", "text"),
    Column("年租金(元)", "annual rent", "money"),
    Column("合同总额(元)", "total rent", "money"),
    Column("应收(元)", "receivable", "money"),
    Column("实收(元)", "received", "money"),
    Column("欠缴(元)", "arrears", "money"),
    Column("预收(元)", "credit", "money"),
    Column("逾期天数", "days overdue", "int"),
    Column("最近收款日期", "last payment", "date"),
    Column("状态", "status", "text"),
    Column("预警", "warnings", "text"),
    Column("保证金(元)", "deposit", "money"),
    Column("四议两公开决议", "resolution", "text"),
    Column("备注", "note", "text"),
)
PAYMENT_COLUMNS = (
    Column("合同编号", "contract number", "code"),
    Column("收款日期", "paid on", "date"),
    Column("金额(元)", "amount", "money"),
    Column("备注", "note", "text"),
    Column("登记人", "recorded by", "text"),
    Column("登记时间", "recorded at", "datetime"),
)


def _contract_cells(r: dict[str, Any]) -> list[Any]:
    p: rent.Position = r["position"]
    return [
        r["number"],
        r["title"],
        r["lessor"],
        r["lessee_name"],
        r["lessee_id"],
        _assets_words(r["assets"]),
        r["area_code"],
        r["trade_mode"],
        r["signed_on"],
        r["start_date"],
        r["end_date"],
        r["terminated_on"],
        r["rent"],
        r["rent_unit"],
        r["cycle"],
        p.annual_rent,
        p.total,
        p.receivable,
        p.received,
        p.arrears,
        p.credit,
        p.days_overdue,
        p.last_payment,
        p.status,
        "、".join(w.zh for w in p.warnings),
        r["deposit"],
        r["deliberation_ref"],
        r["note"],
    ]


def export(
    session: Session,
    as_of: dt.date,
    *,
    scope: str | None = None,
    status: str | None = None,
    warning: str | None = None,
) -> tuple[list[Table], list[tuple[str, str]], list[int]]:
    """Return the export's sheets (合同, 收款), the cover's lines, and the ids of the contracts in it.

    The lessee is as :func:`load` gives it: masked unless the stated role sees personal values.
    Payments are those made by AS_OF, as the figures count them.
    """
    rows = listed(session, as_of, scope=scope, status=status, warning=warning)
    payments = [
        [r["number"], p["paid_on"], p["amount"], p["note"], p["recorded_by"], p["recorded_at"]]
        for r in rows
        for p in r["payments"]
        if p["paid_on"] <= as_of
    ]
    sheets = [
        Table("合同", CONTRACT_COLUMNS, [_contract_cells(r) for r in rows]),
        Table("收款", PAYMENT_COLUMNS, payments),
    ]
    said = [f"状态 {status}" if status else "", f"预警 {rent.WARNINGS[warning][0]}" if warning else ""]
    said.append(f"范围 {scope}" if scope else "")
    totals = {
        k: sum((getattr(r["position"], k) for r in rows), Decimal(0)) for k in ("receivable", "received", "arrears")
    }
    about = [
        ("截至日期 as of", as_of.isoformat()),
        ("筛选 filter", "；".join(s for s in said if s) or "全部 all"),
        ("合同数 contracts", str(len(rows))),
        ("收款笔数 payments", f"{len(payments)}（截至日期前 made by the date）"),
        ("应收 receivable", f"{totals['receivable']:.2f} 元"),
        ("实收 received", f"{totals['received']:.2f} 元"),
        ("欠缴 arrears", f"{totals['arrears']:.2f} 元"),
    ]
    for code, (zh, _) in rent.WARNINGS.items():
        if code != "no_contract":
            about.append((f"预警 {zh}", str(sum(code in r["position"].codes for r in rows))))
    return sheets, about, [r["id"] for r in rows]
