"""Masked personal values: never confirmed by a diff, never written back in place of the real ones."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.base import mask_text
from tests.samples import sample

REAL = "李明华"


def stored_head(session: Session, code: str) -> str:
    return str(session.execute(text("SELECT household_head FROM zones WHERE code = :c"), {"c": code}).scalar_one())


def with_frame(client: TestClient) -> dict:
    for layer_id in ("divisions", "grids", "parcels"):
        assert client.post(f"/api/layers/{layer_id}/features", json=sample(layer_id)).status_code == 201
    created = client.post("/api/layers/zones/features", json=sample("zones"))
    assert created.status_code == 201
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
    assert session.execute(text("SELECT count(*) FROM zones WHERE household_head LIKE '%*%'")).scalar_one() == 0


def test_the_feature_api_keeps_or_refuses_masked_values_too(client: TestClient, session: Session) -> None:
    created = with_frame(client)
    url = f"/api/layers/zones/features/{created['id']}"
    back = client.get(url).json()
    back["properties"]["scope"] = "房前屋后"
    assert client.put(url, json=back).status_code == 200  # the masked name sent back: kept
    assert stored_head(session, back["properties"]["code"]) == REAL
    back["properties"]["household_head"] = "李*辉"
    refused = client.put(url, json=back)
    assert refused.status_code == 422 and refused.json()["code"] == "masked_value"
    new = sample("zones")
    new["properties"].update(code=new["properties"]["code"][:-3] + "003", household_head="李*华")
    new["geometry"]["coordinates"] = [[[x, y + 0.0004] for x, y in new["geometry"]["coordinates"][0]]]
    created = client.post("/api/layers/zones/features", json=new)
    assert created.status_code == 422 and created.json()["code"] == "masked_value"
    assert stored_head(session, back["properties"]["code"]) == REAL


def test_a_grid_phone_sent_back_masked_is_kept_though_its_pattern_has_no_star(
    client: TestClient, session: Session
) -> None:
    assert client.post("/api/layers/divisions/features", json=sample("divisions")).status_code == 201
    grid = sample("grids")
    grid["properties"]["manager_phone"] = "13812345678"
    created = client.post("/api/layers/grids/features", json=grid).json()
    url = f"/api/layers/grids/features/{created['id']}"
    back = client.get(url).json()
    assert back["properties"]["manager_phone"] == "1*********8"
    back["properties"]["manager"] = "赵新"
    assert client.put(url, json=back).status_code == 200, client.put(url, json=back).text
    phone = "SELECT manager_phone FROM grids WHERE code = :c"
    assert session.execute(text(phone), {"c": grid["properties"]["code"]}).scalar_one() == "13812345678"
    exported = client.get("/api/layers/grids/features").json()["features"]
    again = client.post(
        "/api/layers/grids/uploads",
        content=json.dumps({"type": "FeatureCollection", "features": exported}, ensure_ascii=False).encode(),
    )
    assert again.status_code == 201, again.text
    assert again.json()["report"]["features"][0]["notes"][0]["code"] == "masked_kept"
    assert session.execute(text(phone), {"c": grid["properties"]["code"]}).scalar_one() == "13812345678"
    back["properties"]["manager_phone"] = "12345"  # not a mask: a real, valid new number is written
    assert client.put(url, json=back).status_code == 200
    back["properties"]["manager_phone"] = "abc"  # neither: the pattern still holds
    assert client.put(url, json=back).json()["code"] == "code_format"


@pytest.mark.parametrize("star", ["＊", "﹡", "∗", "⁎"])
def test_a_look_alike_star_is_a_mask_too(client: TestClient, session: Session, star: str) -> None:
    created = with_frame(client)
    url = f"/api/layers/zones/features/{created['id']}"
    back = client.get(url).json()
    back["properties"]["household_head"] = "李" + star + "辉"  # typed with an input method: not the stored mask
    refused = client.put(url, json=back)
    assert refused.status_code == 422 and refused.json()["code"] == "masked_value"
    back["properties"]["household_head"] = "李" + star + "华"  # the stored name's mask, with a look-alike star
    assert client.put(url, json=back).status_code == 200
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
