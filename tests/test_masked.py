"""Masked personal values: never confirmed by a diff, never written back in place of the real ones."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.base import mask_text
from spatial.db import state
from tests.accounts import ANY_VERSION, bearer
from tests.samples import sample

REAL = "李明华"


SHOWN = "SELECT guatu_shown_zones(id) ->> 'household_head' FROM zones WHERE code = :c"


def stored_head(session: Session, code: str) -> str:
    """Return the stored name, as an administrator is shown it (the app role cannot read the column itself)."""
    state(session, {"guatu.role": "admin", "guatu.user": "tests", "guatu.area": ""})
    return str(session.execute(text(SHOWN), {"c": code}).scalar_one())


@pytest.fixture
def client(client: TestClient, tokens: dict[str, str]) -> TestClient:
    """The test client, acting as a surveyor of the sample community: edits zones, is shown names masked."""
    client.headers.update(bearer(tokens["surveyor9"]))
    client.admin = bearer(tokens["admin"])  # type: ignore[attr-defined]
    return client


def with_frame(client: TestClient) -> dict:
    admin = client.admin  # type: ignore[attr-defined]
    for layer_id in ("divisions", "grids", "parcels"):
        assert client.post(f"/api/layers/{layer_id}/features", json=sample(layer_id), headers=admin).status_code == 201
    created = client.post("/api/layers/zones/features", json=sample("zones"))
    assert created.status_code == 201, created.text
    return created.json()


def upload(client: TestClient, features: list[dict], **params: str):
    body = json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False).encode()
    return client.post("/api/layers/zones/uploads", content=body, params=params)


def test_a_dry_run_does_not_tell_a_right_guess_from_a_wrong_one(client: TestClient) -> None:
    with_frame(client)
    reports = {}
    for guess in (REAL, "李明辉", "张三"):
        zone = sample("zones")
        zone["properties"]["household_head"] = guess
        response = upload(client, [zone], dry_run="true")
        assert response.status_code == 200, response.text
        entry = response.json()["report"]["features"][0]
        reports[guess] = (entry["status"], entry.get("changed_fields"), response.json()["report"]["summary"])
    assert reports[REAL] == reports["李明辉"] == reports["张三"]  # nothing to tell them apart
    assert reports[REAL][1] == ["household_head"]  # said as "set as sent", for every guess


def test_exported_features_uploaded_back_keep_the_real_names(client: TestClient, session: Session) -> None:
    with_frame(client)
    exported = client.get("/api/layers/zones/features").json()["features"]
    assert exported[0]["properties"]["household_head"] == mask_text(REAL)
    response = upload(client, exported)
    assert response.status_code == 201, response.text
    entry = response.json()["report"]["features"][0]
    assert entry["status"] == "unchanged"
    assert [n["code"] for n in entry["notes"]] == ["masked_kept"]
    assert stored_head(session, sample("zones")["properties"]["code"]) == REAL


def test_a_masked_value_that_matches_nothing_is_never_stored(client: TestClient, session: Session) -> None:
    with_frame(client)
    code = sample("zones")["properties"]["code"]
    other = sample("zones")
    other["properties"]["household_head"] = "李*辉"  # masked, but not the stored name's mask
    fresh = sample("zones")
    fresh["properties"].update(code=code[:-3] + "002", household_head="王*")
    fresh["geometry"]["coordinates"] = [[[x, y + 0.0002] for x, y in fresh["geometry"]["coordinates"][0]]]
    response = upload(client, [other, fresh], mode="valid-only")
    assert response.status_code == 201, response.text
    entries = response.json()["report"]["features"]
    assert [e["status"] for e in entries] == ["rejected", "rejected"]
    assert {e["problems"][0]["code"] for e in entries} == {"masked_value"}
    assert stored_head(session, code) == REAL
    starred = "SELECT count(*) FROM zones WHERE guatu_shown_zones(id) ->> 'household_head' LIKE '%*%'"
    assert session.execute(text(starred)).scalar_one() == 0


def test_the_feature_api_keeps_or_refuses_masked_values_too(client: TestClient, session: Session) -> None:
    created = with_frame(client)
    url = f"/api/layers/zones/features/{created['id']}"
    back = client.get(url).json()
    back["properties"]["scope"] = "房前屋后"
    assert client.put(url, json=back, headers=ANY_VERSION).status_code == 200  # the masked name sent back: kept
    assert stored_head(session, back["properties"]["code"]) == REAL
    back["properties"]["household_head"] = "李*辉"
    refused = client.put(url, json=back, headers=ANY_VERSION)
    assert refused.status_code == 422 and refused.json()["code"] == "masked_value"
    new = sample("zones")
    new["properties"].update(code=new["properties"]["code"][:-3] + "003", household_head="李*华")
    new["geometry"]["coordinates"] = [[[x, y + 0.0004] for x, y in new["geometry"]["coordinates"][0]]]
    created = client.post("/api/layers/zones/features", json=new)
    assert created.status_code == 422 and created.json()["code"] == "masked_value"
    assert stored_head(session, back["properties"]["code"]) == REAL


def test_a_grid_phone_is_shown_in_full_only_to_those_who_may_see_it(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    admin = client.admin  # type: ignore[attr-defined]
    assert client.post("/api/layers/divisions/features", json=sample("divisions"), headers=admin).status_code == 201
    grid = sample("grids")
    grid["properties"]["manager_phone"] = "13812345678"
    created = client.post("/api/layers/grids/features", json=grid, headers=admin).json()
    url = f"/api/layers/grids/features/{created['id']}"
    assert client.get(url).json()["properties"]["manager_phone"] == "1*********8"  # a surveyor
    assert client.get(url, headers=bearer(tokens["planner"])).json()["properties"]["manager_phone"] == "13812345678"
    refused = client.put(url, json=client.get(url).json(), headers=ANY_VERSION)  # grids are the planners'
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"


@pytest.mark.parametrize("star", ["＊", "﹡", "∗", "⁎"])
def test_a_look_alike_star_is_a_mask_too(client: TestClient, session: Session, star: str) -> None:
    created = with_frame(client)
    url = f"/api/layers/zones/features/{created['id']}"
    back = client.get(url).json()
    back["properties"]["household_head"] = "李" + star + "辉"  # typed with an input method: not the stored mask
    refused = client.put(url, json=back, headers=ANY_VERSION)
    assert refused.status_code == 422 and refused.json()["code"] == "masked_value"
    back["properties"]["household_head"] = "李" + star + "华"  # the stored name's mask, with a look-alike star
    assert client.put(url, json=back, headers=ANY_VERSION).status_code == 200
    assert stored_head(session, back["properties"]["code"]) == REAL


def test_a_refused_personal_value_is_not_echoed_in_the_report(client: TestClient) -> None:
    with_frame(client)
    zone = sample("zones")
    zone["properties"]["household_head"] = "王洋林\u0001"
    response = upload(client, [zone], dry_run="true")
    problem = response.json()["report"]["features"][0]["problems"][0]
    assert problem["code"] == "invalid_text" and problem["where"]["field"] == "properties.household_head"
    assert "洋" not in problem["message"] and "林" not in problem["message"]
    stored = client.get(f"/api/uploads/{response.json()['id']}").text
    assert "洋" not in stored
