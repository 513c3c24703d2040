"""经济合同: lease contracts, their payments, the figures on a date, and each asset's light for the map."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from api.auth import ActorDep, SignedInDep, rule
from api.deps import SessionDep, SessionsDep
from api.routes.workbooks import Built, send_tables
from layers import contracts, rent
from layers.access import Actor
from layers.accounts import log_personal
from layers.base import REGISTRY, Layer
from layers.features import parse_bbox, parse_if_match
from spatial.errors import InvalidInput

router = APIRouter(prefix="/api/contracts", tags=["contracts"])

AsOf = Annotated[
    dt.date | None, Query(description="截至日期 the date figures are computed on (YYYY-MM-DD; default today)")
]
Scope = Annotated[str | None, Query(pattern=r"^[0-9]{6,16}$", description="county, street, community or grid code")]
ContractId = Annotated[int, Path(ge=1, le=2**31 - 1, description="合同 id")]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="所读版本的 ETag the ETag of the version read (or *)")
]


def _today(as_of: dt.date | None) -> dt.date:
    return as_of or dt.date.today()


def _answer(row: dict[str, Any], status_code: int = 200) -> JSONResponse:
    return JSONResponse(contracts.public(row), status_code=status_code, headers={"ETag": f'"{row["version"]}"'})


def _log_shown(session: Session, actor: Actor | None, ids: list[int], route: str) -> None:
    """Record that ACTOR was shown the lessees of contracts IDS in full (when the role sees them)."""
    if actor is not None and ids and actor.sees_personal():
        log_personal(session, actor, contracts.CONTRACTS, ids, list(contracts.PERSONAL), route)
        session.commit()


def _one_of(value: str | None, allowed: tuple[str, ...], field: str) -> str | None:
    if value is not None and value not in allowed:
        raise InvalidInput.one(
            "parameter_invalid",
            f"参数“{field}”应为：{'、'.join(allowed)}",
            f"{field} must be one of {', '.join(allowed)}",
            field=field,
        )
    return value


@router.get("", summary="合同列表 Contracts", **rule("user"))
def list_contracts(
    session: SessionDep,
    actor: ActorDep,
    request: Request,
    as_of: AsOf = None,
    scope: Scope = None,
    status: Annotated[str | None, Query(description="履行中 / 即将到期 / 已到期 / 已终止 / 纠纷")] = None,
    warning: Annotated[str | None, Query(description="expiring_soon, overdue, rent_below_floor, term_too_long")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    """Return the contracts in the user's area (and SCOPE) with their position on AS_OF, filtered, a page of them."""
    _one_of(status, rent.STATUSES, "status")
    _one_of(warning, tuple(c for c in rent.WARNINGS if c != "no_contract"), "warning")  # an asset's, not a contract's
    day = _today(as_of)
    rows = contracts.listed(session, day, scope=scope, status=status, warning=warning)
    page = rows[offset : offset + limit]
    _log_shown(session, actor, [r["id"] for r in page], request.url.path)
    return {"as_of": day.isoformat(), "total": len(rows), "contracts": [contracts.public(r) for r in page]}


@router.post(
    "",
    summary="新建合同 Create a contract",
    status_code=201,
    **rule("contracts"),
)
def create_contract(
    session: SessionDep,
    actor: SignedInDep,
    data: Annotated[contracts.ContractIn, Body(openapi_examples={"parcel": {"value": contracts.example()}})],
    as_of: AsOf = None,
) -> JSONResponse:
    """Store a contract over assets of the user's area; its area is its assets' community."""
    made = contracts.create(session, actor, data, _today(as_of))
    session.commit()
    return _answer(made, 201)


@router.get("/summary", summary="合同汇总 Receivable, received, arrears, counts", **rule("user"))
def contract_summary(session: SessionDep, as_of: AsOf = None, scope: Scope = None) -> dict[str, Any]:
    """Return receivable, received and arrears on AS_OF, counts per status and warning, and communities by arrears."""
    return contracts.report(session, _today(as_of), scope)


def _let_layer(layer: str) -> Layer:
    found = REGISTRY.get(layer)
    if found is None or not found.let:
        names = ", ".join(lay.id for lay in contracts.let_layers())
        raise InvalidInput.one("unknown_layer", f"图层应为：{names}", f"layer must be one of {names}", field="layer")
    return found


@router.get("/assets", summary="资产合同状态 Each asset's contract light", **rule("user"))
def contract_assets(
    session: SessionDep,
    layer: Annotated[str, Query(max_length=40, description="a layer whose assets are let out (its Layer.let)")],
    as_of: AsOf = None,
    scope: Scope = None,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (the map's view)")] = None,
) -> dict[str, Any]:
    """Return, per asset code let out or under contract, its light (red/yellow/green/none) and warnings.

    Red: overdue rent, or let out without a contract in force; yellow: expiring soon, rent below
    the floor or term above the legal limit; green: a contract in force, no warning; none: not
    let and no contract. Assets not listed are none.
    """
    found = _let_layer(layer)
    day = _today(as_of)
    lights = contracts.asset_lights(session, found, day, scope=scope, bbox=parse_bbox(bbox) if bbox else None)
    return {"layer": found.id, "as_of": day.isoformat(), "lights": lights}


@router.get(
    "/export.xlsx",
    summary="导出合同台账 Export the contracts as XLSX",
    response_class=Response,
    **rule("user"),
)
async def export_contracts(
    sessions: SessionsDep,
    actor: ActorDep,
    request: Request,
    as_of: AsOf = None,
    scope: Scope = None,
    status: Annotated[str | None, Query(description="履行中 / 即将到期 / 已到期 / 已终止 / 纠纷")] = None,
    warning: Annotated[str | None, Query(description="expiring_soon, overdue, rent_below_floor, term_too_long")] = None,
) -> Response:
    """Return the contracts in the user's area kept by the filter, with their figures on AS_OF, and their payments.

    Sheets: 说明 (who, when, the date, the filter, counts and totals), 合同 (one row per
    contract), 收款 (the payments made by AS_OF). The lessee is masked unless the role sees
    personal values (a full showing is logged).
    """
    _one_of(status, rent.STATUSES, "status")
    _one_of(warning, tuple(c for c in rent.WARNINGS if c != "no_contract"), "warning")
    day = _today(as_of)
    route = request.url.path

    def build(session: Session) -> Built:
        tables, about, ids = contracts.export(session, day, scope=scope, status=status, warning=warning)
        if actor is not None and ids and actor.sees_personal():
            log_personal(session, actor, contracts.CONTRACTS, ids, list(contracts.PERSONAL), route)
        return tables, about

    return await send_tables(request, sessions, actor, "合同台账", build)


@router.get("/{cid}", summary="读取合同 Read a contract", **rule("user"))
def get_contract(
    session: SessionDep, cid: ContractId, actor: ActorDep, request: Request, as_of: AsOf = None
) -> JSONResponse:
    """Return a contract with its assets, payments, position and schedule (each instalment paid and owing on AS_OF).

    Its ETag is its version.
    """
    day = _today(as_of)
    found = contracts.get(session, cid, day)
    _log_shown(session, actor, [cid], request.url.path)
    body = contracts.public(found) | {"schedule": contracts.schedule_of(found, day)}
    return JSONResponse(body, headers={"ETag": f'"{found["version"]}"'})


@router.put("/{cid}", summary="修改合同 Replace a contract (every field)", **rule("contracts"))
def replace_contract(
    session: SessionDep,
    cid: ContractId,
    actor: SignedInDep,
    data: Annotated[contracts.ContractIn, Body(openapi_examples={"parcel": {"value": contracts.example()}})],
    if_match: IfMatch = None,
    as_of: AsOf = None,
) -> JSONResponse:
    """Replace a contract as of the version read (If-Match, required); a lessee sent back masked is kept."""
    version = parse_if_match(if_match)
    changed = contracts.replace(session, actor, cid, data, version, _today(as_of))
    session.commit()
    return _answer(changed)


@router.post("/{cid}/payments", summary="登记收款 Record a payment", status_code=201, **rule("contracts"))
def add_payment(
    session: SessionDep,
    cid: ContractId,
    actor: SignedInDep,
    data: contracts.PaymentIn,
    as_of: AsOf = None,
) -> JSONResponse:
    """Record a payment received under the contract; answer the contract with its new position."""
    changed = contracts.add_payment(session, actor, cid, data, _today(as_of))
    session.commit()
    return _answer(changed, 201)
