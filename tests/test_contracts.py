"""经济合同: rent arithmetic on fixed dates, the lights, and the contracts API with its area rules."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from layers import rent
from layers.rent import Rules, Terms, position, schedule

D = dt.date


def terms(start: dt.date, end: dt.date, amount: str, unit: str = "元/年", cycle: str = "年", **kw: object) -> Terms:
    """Return contract terms for the arithmetic."""
    area = kw.pop("area_m2", None)
    return Terms(
        start,
        end,
        Decimal(amount),
        unit,
        cycle,
        None if area is None else Decimal(str(area)),
        **kw,  # type: ignore[arg-type]
    )


def test_monthly_schedule_is_paid_in_advance_on_the_start_day() -> None:
    plan = schedule(terms(D(2024, 3, 10), D(2024, 6, 9), "1000", "元/月", "月"))
    assert [i.due for i in plan] == [D(2024, 3, 10), D(2024, 4, 10), D(2024, 5, 10)]
    assert [i.amount for i in plan] == [Decimal("1000.00")] * 3
    assert plan[-1].end == D(2024, 6, 9) and not plan[-1].partial


def test_quarterly_and_yearly_schedules_split_the_yearly_rent() -> None:
    quarterly = schedule(terms(D(2024, 1, 1), D(2025, 12, 31), "12000", "元/年", "季"))
    assert len(quarterly) == 8 and {i.amount for i in quarterly} == {Decimal("3000.00")}
    assert quarterly[1].due == D(2024, 4, 1) and quarterly[-1].due == D(2025, 10, 1)
    yearly = schedule(terms(D(2024, 7, 1), D(2027, 6, 30), "12000", "元/年", "年"))
    assert [i.due for i in yearly] == [D(2024, 7, 1), D(2025, 7, 1), D(2026, 7, 1)]
    half = schedule(terms(D(2024, 7, 1), D(2025, 6, 30), "12000", "元/年", "半年"))
    assert [(i.due, i.amount) for i in half] == [
        (D(2024, 7, 1), Decimal("6000.00")),
        (D(2025, 1, 1), Decimal("6000.00")),
    ]


def test_last_partial_period_is_pro_rated_by_days() -> None:
    # quarter from 2024-04-01 to 2024-06-30 is 91 days; the contract ends 2024-05-15: 45 days of it
    plan = schedule(terms(D(2024, 1, 1), D(2024, 5, 15), "12000", "元/年", "季"))
    assert plan[-1].partial and plan[-1].due == D(2024, 4, 1) and plan[-1].end == D(2024, 5, 15)
    assert plan[-1].amount == (Decimal(3000) * 45 / 91).quantize(Decimal("0.01"))  # 1483.52
    assert plan[-1].amount == Decimal("1483.52")


def test_month_ends_are_clamped_and_come_back() -> None:
    plan = schedule(terms(D(2024, 1, 31), D(2024, 4, 29), "100", "元/月", "月"))
    assert [i.due for i in plan] == [D(2024, 1, 31), D(2024, 2, 29), D(2024, 3, 31)]
    assert plan[-1].end == D(2024, 4, 29) and not plan[-1].partial
    # one day more is a fourth period of one day out of 31 (30 April to 30 May)
    longer = schedule(terms(D(2024, 1, 31), D(2024, 4, 30), "100", "元/月", "月"))
    assert longer[-1].partial and longer[-1].due == D(2024, 4, 30) and longer[-1].amount == Decimal("3.23")


def test_rent_units_give_the_yearly_rent() -> None:
    per_mu = terms(D(2024, 1, 1), D(2024, 12, 31), "600", "元/亩·年", "年", area_m2="10000")  # 15 亩
    assert schedule(per_mu)[0].amount == Decimal("9000.00")
    per_m2 = terms(D(2024, 1, 1), D(2024, 12, 31), "2.5", "元/m²·月", "月", area_m2="80.4")
    assert schedule(per_m2)[0].amount == Decimal("201.00")  # 2.5 × 80.4
    assert position(per_m2, [], D(2024, 1, 1)).annual_rent == Decimal("2412.00")
    # a third of a 分 rounds half up per instalment: 1000 元/年 monthly is 83.33, the year sums to 999.96
    odd = schedule(terms(D(2024, 1, 1), D(2024, 12, 31), "1000", "元/年", "月"))
    assert odd[0].amount == Decimal("83.33") and sum(i.amount for i in odd) == Decimal("999.96")


def test_partial_payment_leaves_arrears_and_counts_days_from_the_oldest_unpaid_due_date() -> None:
    contract = terms(D(2024, 1, 1), D(2025, 12, 31), "1200", "元/年", "季")  # 300 a quarter
    paid = [(D(2024, 1, 5), Decimal("300")), (D(2024, 4, 2), Decimal("120"))]
    at = position(contract, paid, D(2024, 8, 10))
    assert at.receivable == Decimal("900.00") and at.received == Decimal("420")
    assert at.arrears == Decimal("480.00") and at.credit == 0
    assert at.days_overdue == (D(2024, 8, 10) - D(2024, 4, 1)).days == 131
    assert at.last_payment == D(2024, 4, 2) and "overdue" in at.codes and at.light == rent.RED


def test_payments_after_the_date_do_not_count_and_due_today_is_not_yet_late() -> None:
    contract = terms(D(2024, 1, 1), D(2025, 12, 31), "1200", "元/年", "季")
    paid = [(D(2024, 1, 1), Decimal("300")), (D(2024, 4, 3), Decimal("300"))]
    on_due_day = position(contract, paid, D(2024, 4, 1))
    assert on_due_day.arrears == Decimal("300.00") and on_due_day.days_overdue == 0
    assert "overdue" not in on_due_day.codes
    next_day = position(contract, paid, D(2024, 4, 2))
    assert next_day.days_overdue == 1 and "overdue" in next_day.codes
    settled = position(contract, paid, D(2024, 4, 3))
    assert settled.arrears == 0 and settled.days_overdue == 0 and settled.last_payment == D(2024, 4, 3)


def test_overpayment_is_credit_and_covers_the_next_instalment() -> None:
    contract = terms(D(2024, 1, 1), D(2025, 12, 31), "1200", "元/年", "季")
    at = position(contract, [(D(2024, 1, 1), Decimal("700"))], D(2024, 4, 20))
    assert at.receivable == Decimal("600.00") and at.arrears == 0 and at.credit == Decimal("100.00")
    later = position(contract, [(D(2024, 1, 1), Decimal("700"))], D(2024, 7, 2))
    assert later.arrears == Decimal("200.00") and later.days_overdue == 1  # 100 of the July quarter was paid


def test_expiring_soon_boundary_is_exactly_the_configured_days() -> None:
    contract = terms(D(2020, 1, 1), D(2024, 12, 31), "1200")
    paid = [(D(2020, 1, 1), Decimal("6000"))]
    rules = Rules(expiry_days=90)
    assert position(contract, paid, D(2024, 10, 2), rules).status == rent.EXPIRING  # 90 days left
    assert position(contract, paid, D(2024, 10, 2), rules).codes == ("expiring_soon",)
    assert position(contract, paid, D(2024, 10, 1), rules).status == rent.IN_FORCE  # 91 days left
    assert position(contract, paid, D(2024, 12, 31), rules).status == rent.EXPIRING  # its last day
    assert position(contract, paid, D(2025, 1, 1), rules).status == rent.EXPIRED
    assert position(contract, paid, D(2024, 10, 1), Rules(expiry_days=91)).status == rent.EXPIRING


def test_term_limit_boundary_is_exactly_the_configured_years() -> None:
    twenty = terms(D(2021, 3, 1), D(2041, 2, 28), "1200")
    assert not rent.term_too_long(twenty, 20)
    assert "term_too_long" not in position(twenty, [], D(2021, 3, 1)).codes
    one_day_more = terms(D(2021, 3, 1), D(2041, 3, 1), "1200")
    assert rent.term_too_long(one_day_more, 20)
    assert "term_too_long" in position(one_day_more, [], D(2021, 3, 1), Rules(max_years=20)).codes
    assert "term_too_long" not in position(one_day_more, [], D(2021, 3, 1), Rules(max_years=30)).codes


def test_rent_below_floor_per_unit_and_zero_is_off() -> None:
    cheap = terms(D(2024, 1, 1), D(2028, 12, 31), "299.99", "元/亩·年", "年", area_m2="6666.67")
    floors = {"元/亩·年": Decimal("300"), "元/m²·月": Decimal("5")}
    assert "rent_below_floor" in position(cheap, [], D(2024, 1, 1), Rules(floors=floors)).codes
    at_floor = terms(D(2024, 1, 1), D(2028, 12, 31), "300", "元/亩·年", "年", area_m2="6666.67")
    assert "rent_below_floor" not in position(at_floor, [], D(2024, 1, 1), Rules(floors=floors)).codes
    off = Rules(floors={"元/亩·年": Decimal("0")})
    assert "rent_below_floor" not in position(cheap, [], D(2024, 1, 1), off).codes
    assert position(cheap, [], D(2024, 1, 1), Rules(floors=floors)).light == rent.YELLOW


def test_termination_ends_the_schedule_and_the_status() -> None:
    contract = terms(D(2024, 1, 1), D(2026, 12, 31), "3650", "元/年", "年", terminated_on=D(2025, 3, 1))
    plan = schedule(contract)
    assert [i.due for i in plan] == [D(2024, 1, 1), D(2025, 1, 1)]
    assert plan[-1].end == D(2025, 2, 28) and plan[-1].amount == Decimal("590.00")  # 59 of 365 days
    assert position(contract, [], D(2025, 2, 28)).status == rent.IN_FORCE
    assert position(contract, [], D(2025, 3, 1)).status == rent.TERMINATED
    disputed = terms(D(2024, 1, 1), D(2026, 12, 31), "3650", disputed=True)
    assert position(disputed, [], D(2025, 3, 1)).status == rent.DISPUTED


def test_asset_lights() -> None:
    ok = position(terms(D(2024, 1, 1), D(2030, 12, 31), "1200"), [(D(2024, 1, 1), Decimal("1200"))], D(2024, 6, 1))
    late = position(terms(D(2024, 1, 1), D(2030, 12, 31), "1200"), [], D(2024, 6, 1))
    ending = position(terms(D(2020, 1, 1), D(2024, 7, 1), "1200"), [(D(2020, 1, 1), Decimal("6000"))], D(2024, 6, 1))
    expired = position(terms(D(2020, 1, 1), D(2023, 12, 31), "1200"), [(D(2020, 1, 1), Decimal("4800"))], D(2024, 6, 1))
    assert rent.asset_light(True, [ok]) == (rent.GREEN, ())
    assert rent.asset_light(True, [late]) == (rent.RED, ("overdue",))
    assert rent.asset_light(True, [ending]) == (rent.YELLOW, ("expiring_soon",))
    assert rent.asset_light(True, [expired]) == (rent.RED, ("no_contract",))
    assert rent.asset_light(True, []) == (rent.RED, ("no_contract",))
    assert rent.asset_light(False, []) == (rent.NONE, ())
    assert rent.asset_light(False, [expired]) == (rent.NONE, ())


@pytest.mark.parametrize("cycle", list(rent.CYCLES))
def test_a_whole_term_paid_on_time_sums_to_the_rent_of_the_term(cycle: str) -> None:
    contract = terms(D(2024, 1, 1), D(2026, 12, 31), "12000", "元/年", cycle)
    plan = schedule(contract)
    assert sum(i.amount for i in plan) == Decimal("36000.00")
    at = position(contract, [(i.due, i.amount) for i in plan], D(2026, 12, 31))
    assert at.arrears == 0 and at.days_overdue == 0 and at.receivable == at.total == Decimal("36000.00")


# --- the API: area rules, masking, errors, figures ------------------------------------------

from typing import Any  # noqa: E402

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from layers import contracts, features  # noqa: E402
from layers.access import Actor  # noqa: E402
from layers.base import REGISTRY  # noqa: E402
from spatial.db import state  # noqa: E402
from tests.accounts import bearer  # noqa: E402
from tests.samples import sample  # noqa: E402

ADMIN = Actor(None, "tests", "admin")


def _frame(session: Session, **changes: Any) -> dict[str, Any]:
    """Store the sample street's frame and its parcel (let out, unless CHANGES say otherwise); return the parcel."""
    state(session, ADMIN.settings())
    for layer_id in ("divisions", "grids"):
        features.create_feature(session, REGISTRY[layer_id], sample(layer_id))
    parcel = sample("parcels")
    let_field, let_values = REGISTRY["parcels"].let[0]
    parcel["properties"][let_field] = let_values[0] if isinstance(let_values, tuple) else let_values
    parcel["properties"].pop("idle_since", None)
    parcel["properties"].update(changes)
    made = features.create_feature(session, REGISTRY["parcels"], parcel)
    session.flush()
    return made


def _contract(**changes: Any) -> dict[str, Any]:
    body = contracts.example()
    body.update(changes)
    return body


def test_create_read_and_figures_on_a_fixed_date(client: TestClient, session: Session) -> None:
    parcel = _frame(session)
    made = client.post("/api/contracts", json=_contract(), params={"as_of": "2025-03-01"})
    assert made.status_code == 201, made.text
    body = made.json()
    # 800 元/亩·年 × 9 亩 = 7200 a year, paid yearly from 2024-01-01: two instalments due by 2025-03-01
    assert body["area_code"] == parcel["properties"]["community_code"]
    assert body["position"]["receivable"] == 14400.0 and body["position"]["arrears"] == 14400.0
    assert body["position"]["days_overdue"] == (dt.date(2025, 3, 1) - dt.date(2024, 1, 1)).days
    assert made.headers["ETag"] == '"1"'
    cid = body["id"]
    paid = client.post(f"/api/contracts/{cid}/payments", json={"paid_on": "2024-01-10", "amount": "7200"})
    assert paid.status_code == 201, paid.text
    at = client.get(f"/api/contracts/{cid}", params={"as_of": "2025-03-01"}).json()["position"]
    assert (
        at["received"] == 7200.0
        and at["arrears"] == 7200.0
        and at["days_overdue"] == (dt.date(2025, 3, 1) - dt.date(2025, 1, 1)).days == 59
    )
    assert at["last_payment"] == "2024-01-10" and at["light"] == "red"
    summary = client.get("/api/contracts/summary", params={"as_of": "2025-03-01"}).json()
    assert summary["receivable"] == 14400.0 and summary["arrears"] == 7200.0 and summary["warnings"]["overdue"] == 1
    assert summary["statuses"]["履行中"] == 1 and summary["units"][0]["code"] == body["area_code"]
    lights = client.get("/api/contracts/assets", params={"layer": "parcels", "as_of": "2025-03-01"}).json()
    assert lights["lights"][parcel["properties"]["code"]]["light"] == "red"
    paid_up = client.get("/api/contracts/assets", params={"layer": "parcels", "as_of": "2024-06-01"}).json()
    assert paid_up["lights"][parcel["properties"]["code"]]["light"] == "green"
    state(session, ADMIN.settings())
    assert contracts.summary(session, dt.date(2025, 3, 1)) == {
        "receivable": 14400.0,
        "received": 7200.0,
        "arrears": 7200.0,
        "contracts": 1,
        "overdue": 1,
        "expiring": 0,
        "no_contract": 0,
    }
    assert contracts.by_unit(session, dt.date(2025, 3, 1))[0]["arrears"] == 7200.0


def test_a_let_asset_without_a_contract_is_red_and_counted(client: TestClient, session: Session) -> None:
    parcel = _frame(session)
    lights = client.get("/api/contracts/assets", params={"layer": "parcels"}).json()["lights"]
    assert lights[parcel["properties"]["code"]] == {"light": "red", "warnings": ["no_contract"], "contracts": []}
    assert client.get("/api/contracts/summary").json()["warnings"]["no_contract"] == 1


def test_bad_input_has_stable_codes_and_writes_nothing(client: TestClient, session: Session) -> None:
    _frame(session)
    count = "SELECT count(*) FROM contracts"
    before = session.execute(text(count)).scalar()
    cases = {
        "contract_dates": _contract(start_date="2025-01-01", end_date="2024-12-31"),
        "contract_area": _contract(area_m2=None),
        "unknown_asset": _contract(assets=[{"layer": "parcels", "code": "3702140010090100099"}]),
        "parameter_invalid": _contract(rent="-5"),
    }
    for code, body in cases.items():
        answer = client.post("/api/contracts", json=body)
        assert answer.status_code == 422 and answer.json()["code"] == code, (code, answer.text)
    wrong_layer = client.post("/api/contracts", json=_contract(assets=[{"layer": "grids", "code": "1"}]))
    assert wrong_layer.status_code == 422 and wrong_layer.json()["code"] == "unknown_asset"
    assert client.post("/api/contracts", json=_contract()).status_code == 201
    again = client.post("/api/contracts", json=_contract())
    assert again.status_code == 409 and again.json()["code"] == "contract_number_taken"
    assert session.execute(text(count)).scalar() == before + 1
    assert client.get("/api/contracts", params={"as_of": "2024-13-01"}).status_code == 422
    assert client.get("/api/contracts", params={"status": "bogus"}).json()["code"] == "parameter_invalid"
    assert client.get("/api/contracts/999999").status_code == 404


def test_area_rules_and_masked_lessee(
    engine: Any, client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    _frame(session)
    cid = client.post("/api/contracts", json=_contract()).json()["id"]
    # another street's planner: cannot read it, nor pay into it, nor contract the asset
    other = bearer(tokens["planner2"])
    assert client.get(f"/api/contracts/{cid}", headers=other).status_code == 404
    assert client.get("/api/contracts", headers=other).json()["total"] == 0
    paid = client.post(f"/api/contracts/{cid}/payments", json={"paid_on": "2024-01-01", "amount": "1"}, headers=other)
    assert paid.status_code == 404
    taken = client.post("/api/contracts", json=_contract(number="X-1"), headers=other)
    assert taken.status_code == 403 and taken.json()["code"] == "asset_outside_area"
    state(session, ADMIN.settings())
    assert session.execute(text("SELECT count(*) FROM contract_payments")).scalar() == 0
    # the street's planner sees the lessee; a viewer sees it masked and may not write
    planner = client.get(f"/api/contracts/{cid}", headers=bearer(tokens["planner"])).json()
    assert planner["lessee_name"] == "李明华" and planner["lessee_id"] == "370214198001011234"
    viewer = client.get(f"/api/contracts/{cid}", headers=bearer(tokens["viewer"])).json()
    assert viewer["lessee_name"] == "李*华" and viewer["lessee_id"] == "3****************4"
    refused = client.post(
        f"/api/contracts/{cid}/payments",
        json={"paid_on": "2024-01-01", "amount": "1"},
        headers=bearer(tokens["viewer"]),
    )
    assert refused.status_code == 403
    # the database itself keeps the lessee from the app role
    with engine.connect() as conn:
        conn.execute(text("SELECT set_config('guatu.role', 'admin', true)"))
        with pytest.raises(Exception, match="permission denied"):
            conn.execute(text("SELECT lessee_name FROM contracts"))


def test_replace_needs_the_version_and_keeps_a_masked_lessee(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    _frame(session)
    cid = client.post("/api/contracts", json=_contract()).json()["id"]
    body = _contract(rent="900", lessee_name="李*华", lessee_id="3****************4")
    assert client.put(f"/api/contracts/{cid}", json=body).status_code == 412
    stale = client.put(f"/api/contracts/{cid}", json=body, headers={"If-Match": '"7"'})
    assert stale.status_code == 412 and stale.json()["code"] == "version_conflict"
    done = client.put(f"/api/contracts/{cid}", json=body, headers={"If-Match": '"1"'})
    assert done.status_code == 200, done.text
    assert done.headers["ETag"] == '"2"' and done.json()["rent"] == 900.0
    assert done.json()["lessee_name"] == "李明华"  # the masked value sent back kept the stored one
    wrong = client.put(f"/api/contracts/{cid}", json=_contract(lessee_name="王*"), headers={"If-Match": '"2"'})
    assert wrong.status_code == 422 and wrong.json()["code"] == "masked_value_changed"


def test_row_level_security_keeps_contracts_assets_and_payments_in_the_area(
    client: TestClient, session: Session
) -> None:
    from sqlalchemy.exc import ProgrammingError

    from tests.accounts import USERS

    _frame(session)
    cid = client.post("/api/contracts", json=_contract()).json()["id"]
    assert (
        client.post(f"/api/contracts/{cid}/payments", json={"paid_on": "2024-01-02", "amount": "10"}).status_code == 201
    )
    tables = ("contracts", "contract_assets", "contract_payments")

    def seen(username: str) -> list[int]:
        role, area = USERS[username]
        state(session, Actor(1, username, role, area).settings())
        return [session.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables]

    assert seen("planner") == [1, 1, 1] and seen("viewer") == [1, 1, 1]
    assert seen("planner2") == [0, 0, 0] and seen("surveyor") == [0, 0, 0]  # another street; another community
    role, area = USERS["planner2"]
    state(session, Actor(1, "planner2", role, area).settings())
    with pytest.raises(ProgrammingError, match="row-level security"), session.begin_nested():
        session.execute(
            text(
                "INSERT INTO contract_payments (contract_id, paid_on, amount, recorded_by) VALUES (:c, now(), 1, 'x')"
            ),
            {"c": cid},
        )
    role, area = USERS["viewer"]  # inside the area, but not a role that keeps contracts
    state(session, Actor(1, "viewer", role, area).settings())
    with pytest.raises(ProgrammingError, match="row-level security"), session.begin_nested():
        session.execute(
            text(
                "INSERT INTO contract_payments (contract_id, paid_on, amount, recorded_by) VALUES (:c, now(), 1, 'x')"
            ),
            {"c": cid},
        )
    state(session, ADMIN.settings())
    assert session.execute(text("SELECT count(*) FROM contract_payments")).scalar_one() == 1


def test_scope_narrows_figures_and_lights(client: TestClient, session: Session) -> None:
    parcel = _frame(session)
    assert client.post("/api/contracts", json=_contract()).status_code == 201
    community = parcel["properties"]["community_code"]
    other = community[:-3] + "001"
    for scope, expected in ((community, 1), (community[:9], 1), (other, 0)):
        summary = client.get("/api/contracts/summary", params={"scope": scope}).json()
        assert summary["contracts"] == expected, scope
        lights = client.get("/api/contracts/assets", params={"layer": "parcels", "scope": scope}).json()["lights"]
        assert (parcel["properties"]["code"] in lights) == bool(expected), scope
    assert client.get("/api/contracts", params={"scope": other}).json()["total"] == 0
    assert client.get("/api/contracts/assets", params={"layer": "zones"}).json()["code"] == "unknown_layer"


def test_a_position_is_computed_once_for_the_same_terms_payments_and_date() -> None:
    from layers.contracts import _position, _rules_key

    terms = rent.Terms(dt.date(2025, 1, 1), dt.date(2029, 12, 31), Decimal(1200), "元/年", "月")
    key = _rules_key(rent.Rules())
    paid = ((dt.date(2025, 1, 3), Decimal(100)),)
    first = _position(terms, paid, dt.date(2025, 3, 1), key)
    hits = _position.cache_info().hits
    assert _position(terms, paid, dt.date(2025, 3, 1), key) is first and _position.cache_info().hits == hits + 1
    more = _position(terms, (*paid, (dt.date(2025, 2, 2), Decimal(100))), dt.date(2025, 3, 1), key)
    assert (first.arrears, more.arrears) == (Decimal(200), Decimal(100))  # a new payment: a new position
    assert first == rent.position(terms, paid, dt.date(2025, 3, 1))
