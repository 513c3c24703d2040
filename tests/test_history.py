"""History and restore, versions and If-Match: nothing lost, nobody overwritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.accounts import ANY_VERSION as ANY
from tests.accounts import bearer
from tests.conftest import demo_database, owner_url
from tests.samples import X0, Y0, sample


def _post(client: TestClient, layer_id: str, feature: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(f"/api/layers/{layer_id}/features", json=feature)
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    assert answer.headers["etag"] == f'"{body["version"]}"'
    return body


def _frame(client: TestClient) -> None:
    for layer_id in ("divisions", "grids"):
        _post(client, layer_id, sample(layer_id))


def _wkb(session: Session, fid: int) -> bytes:
    return bytes(session.execute(text("SELECT ST_AsEWKB(geom) FROM parcels WHERE id = :i"), {"i": fid}).scalar_one())


def test_edit_then_restore_gives_back_exact_geometry_and_properties(client: TestClient, session: Session) -> None:
    _frame(client)
    first = _post(client, "parcels", sample("parcels") | {"note": "首次登记"})
    fid = first["id"]
    original_wkb = _wkb(session, fid)
    moved = sample("parcels")
    ring = moved["geometry"]["coordinates"][0]
    moved["geometry"]["coordinates"][0] = [[x + 0.0000123456789, y - 0.0000011] for x, y in ring]
    patch = {
        "type": "Feature",
        "properties": {"name": "改过的名字", "use_status": "出租"},
        "geometry": moved["geometry"],
    }
    patch["note"] = "现场复核"
    changed = client.patch(f"/api/layers/parcels/features/{fid}", json=patch, headers={"If-Match": '"1"'})
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2 and changed.headers["etag"] == '"2"'
    assert _wkb(session, fid) != original_wkb

    history = client.get(f"/api/layers/parcels/features/{fid}/history").json()
    ops = [(c["op"], c["version"], c["note"], c["actor"]) for c in history["changes"]]
    assert ops == [("update", 2, "现场复核", "admin"), ("insert", 1, "首次登记", "admin")]
    update = history["changes"][0]
    assert set(update["changed"]) == {"name", "use_status", "geometry"}
    assert update["before"]["properties"]["name"] == first["properties"]["name"]
    assert update["after"]["properties"]["name"] == "改过的名字"

    insert_change = history["changes"][1]["id"]
    restored = client.post(
        f"/api/layers/parcels/features/{fid}/restore", json={"change": insert_change}, headers={"If-Match": '"2"'}
    )
    assert restored.status_code == 200, restored.text
    assert _wkb(session, fid) == original_wkb  # byte for byte
    assert restored.json()["properties"] == first["properties"]
    assert restored.json()["version"] == 3
    latest = client.get(f"/api/layers/parcels/features/{fid}/history").json()["changes"][0]
    assert latest["op"] == "update" and "恢复" in latest["note"]


def test_delete_and_restore_keeps_id_and_links(client: TestClient, session: Session) -> None:
    _frame(client)
    parcel = _post(client, "parcels", sample("parcels"))
    zone_sample = sample("zones")
    zone_sample["properties"]["homestead_parcel_code"] = parcel["properties"]["code"]
    zone = _post(client, "zones", zone_sample)
    fid = zone["id"]
    refused = client.delete(f"/api/layers/parcels/features/{parcel['id']}", headers={"If-Match": '"1"'})
    assert refused.status_code == 409 and refused.json()["code"] == "has_dependents"  # the zone names it
    gone = client.delete(f"/api/layers/zones/features/{fid}", params={"note": "误录"}, headers={"If-Match": '"1"'})
    assert gone.status_code == 204
    assert client.get(f"/api/layers/zones/features/{fid}").status_code == 404
    history = client.get(f"/api/layers/zones/features/{fid}/history").json()
    assert history["deleted"] is True
    deletion = history["changes"][0]
    assert deletion["op"] == "delete" and deletion["note"] == "误录" and deletion["after"] is None
    back = client.post(f"/api/layers/zones/features/{fid}/restore", json={"change": deletion["id"]}, headers=ANY)
    assert back.status_code == 200, back.text
    assert back.json()["id"] == fid and back.json()["properties"] == zone["properties"]
    # the zone names its grid and its homestead again, under its old id, and the parcel is kept by it again
    linked = session.execute(
        text(
            "SELECT p.id, g.code FROM zones z JOIN parcels p ON p.code = z.homestead_parcel_code "
            "JOIN grids g ON g.code = z.grid_code WHERE z.id = :z"
        ),
        {"z": fid},
    ).one()
    assert tuple(linked) == (parcel["id"], zone["properties"]["grid_code"])
    again = client.delete(f"/api/layers/parcels/features/{parcel['id']}", headers={"If-Match": '"1"'})
    assert again.status_code == 409


def test_write_without_or_with_stale_if_match_is_412(client: TestClient) -> None:
    _frame(client)
    parcel = _post(client, "parcels", sample("parcels"))
    url = f"/api/layers/parcels/features/{parcel['id']}"
    patch = {"type": "Feature", "properties": {"name": "甲"}}
    missing = client.patch(url, json=patch)
    assert missing.status_code == 412 and missing.json()["code"] == "if_match_required"
    assert client.patch(url, json=patch, headers={"If-Match": '"1"'}).status_code == 200
    stale = client.patch(url, json={"type": "Feature", "properties": {"name": "乙"}}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json()["code"] == "version_conflict"
    assert stale.json()["current"]["properties"]["name"] == "甲" and stale.headers["etag"] == '"2"'
    assert client.delete(url, headers={"If-Match": '"1"'}).status_code == 412
    assert client.get(url).json()["properties"]["name"] == "甲"


def test_put_needs_every_field_patch_keeps_the_rest(client: TestClient) -> None:
    _frame(client)
    parcel = _post(client, "parcels", sample("parcels"))
    url = f"/api/layers/parcels/features/{parcel['id']}"
    partial = {"type": "Feature", "geometry": parcel["geometry"], "properties": {"name": "只改名"}}
    refused = client.put(url, json=partial, headers={"If-Match": '"1"'})
    assert refused.status_code == 422 and refused.json()["code"] == "put_incomplete"
    assert client.get(url).json()["properties"]["name"] == parcel["properties"]["name"]
    patched = client.patch(url, json={"type": "Feature", "properties": {"name": "只改名"}}, headers={"If-Match": '"1"'})
    body = patched.json()
    assert body["properties"]["name"] == "只改名"
    assert {k: v for k, v in body["properties"].items() if k != "name"} == {
        k: v for k, v in parcel["properties"].items() if k != "name"
    }
    assert body["geometry"] == parcel["geometry"]
    latest = client.get(url + "/history").json()["changes"][0]
    assert latest["changed"] == ["name"]  # the shape was not sent, so it did not change


def test_two_editors_of_one_parcel_exactly_one_412(tmp_path: Path) -> None:
    """Two editors read version 1 and save at the same moment, each in its own connection: one wins, one gets 412."""
    from tests.browser import live_server, sign_in_as

    with demo_database("guatu_test_conflict") as eng:
        token = sign_in_as(eng)
        with live_server(eng) as base:
            import httpx

            headers = bearer(token)
            found = httpx.get(f"{base}/api/layers/parcels/features", params={"limit": 1}, headers=headers).json()
            fid = found["features"][0]["id"]
            version = found["features"][0]["version"]
            results: list[int] = []
            barrier = threading.Barrier(2)

            def save(name: str) -> None:
                body = {"type": "Feature", "properties": {"name": name}}
                barrier.wait()
                answer = httpx.patch(
                    f"{base}/api/layers/parcels/features/{fid}",
                    json=body,
                    headers=headers | {"If-Match": f'"{version}"'},
                    timeout=30,
                )
                results.append(answer.status_code)

            threads = [threading.Thread(target=save, args=(n,)) for n in ("甲方案", "乙方案")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results) == [200, 412]
            final = httpx.get(f"{base}/api/layers/parcels/features/{fid}", headers=headers).json()
            assert final["version"] == version + 1


def test_cli_import_and_plain_sql_appear_in_history(tmp_path: Path) -> None:
    with demo_database("guatu_test_cli_history") as eng:
        owner = owner_url("guatu_test_cli_history")
        feature = sample("parcels")
        feature["properties"]["code"] = "370214001009" + "0100077"
        feature["properties"].pop("community_code")
        feature["properties"].pop("grid_code")
        path = tmp_path / "one.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}), encoding="utf-8")
        env = {"DATABASE_URL": owner}

        run = subprocess.run(
            [str(Path(sys.executable).parent / "guatu"), "import", str(path), "--layer", "parcels"],
            capture_output=True,
            text=True,
            env=os.environ | env,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        with eng.connect() as conn:
            conn.execute(text("SELECT set_config('guatu.role', 'admin', true), set_config('guatu.user', 'x', true)"))
            fid = conn.execute(text("SELECT id FROM parcels WHERE code = :c"), {"c": feature["properties"]["code"]})
            fid = fid.scalar_one()
            logged = conn.execute(
                text("SELECT op, actor FROM change_log WHERE layer = 'parcels' AND feature_id = :f"), {"f": fid}
            ).all()
        assert [op for op, _ in logged] == ["insert"]
        assert logged[0][1].startswith("cli:")
        import psycopg
        from sqlalchemy import make_url

        dsn = make_url(owner).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as conn:  # a hand-typed statement, as the owner
            conn.execute("UPDATE parcels SET name = '手工改名' WHERE id = %s", (fid,))
        with eng.connect() as conn:
            conn.execute(text("SELECT set_config('guatu.role', 'admin', true)"))
            rows = conn.execute(
                text(
                    "SELECT op, actor, version FROM change_log WHERE layer = 'parcels' AND feature_id = :f ORDER BY id"
                ),
                {"f": fid},
            ).all()
        assert [(op, version) for op, _, version in rows] == [("insert", 1), ("update", 2)]
        assert rows[1][1] == make_url(owner).username  # no app user: the database role is recorded


def test_map_as_of_a_past_moment(client: TestClient, session: Session) -> None:
    _frame(client)
    parcel = _post(client, "parcels", sample("parcels"))
    url = f"/api/layers/parcels/features/{parcel['id']}"
    moment = session.execute(text("SELECT clock_timestamp()")).scalar()
    client.patch(url, json={"type": "Feature", "properties": {"name": "之后的名字"}}, headers={"If-Match": '"1"'})
    client.delete(url, headers={"If-Match": '"2"'})
    bbox = f"{X0 - 0.01},{Y0 - 0.01},{X0 + 0.01},{Y0 + 0.01}"
    then = client.get("/api/layers/parcels/features", params={"as_of": moment.isoformat(), "bbox": bbox}).json()
    assert [f["properties"]["name"] for f in then["features"]] == [parcel["properties"]["name"]]
    now = client.get("/api/layers/parcels/features", params={"bbox": bbox}).json()
    assert now["features"] == []


def test_split_and_merge_through_the_same_checks(client: TestClient, session: Session) -> None:
    _frame(client)
    parcel = _post(client, "parcels", sample("parcels"))
    line = {"type": "LineString", "coordinates": [[X0 + 0.0004, Y0 - 0.001], [X0 + 0.0004, Y0 + 0.002]]}
    bad = client.post(
        "/api/layers/parcels/split",
        json={"id": parcel["id"], "line": line, "codes": ["12"]},
        headers={"If-Match": '"1"'},
    )
    assert bad.status_code == 422 and bad.json()["code"] == "code_format"
    assert bad.json()["where"]["feature_index"] == 1
    assert client.get(f"/api/layers/parcels/features/{parcel['id']}").json()["version"] == 1  # nothing written
    new_code = "370214001009" + "0100002"
    split = client.post(
        "/api/layers/parcels/split",
        json={"id": parcel["id"], "line": line, "codes": [new_code]},
        headers={"If-Match": '"1"'},
    )
    assert split.status_code == 200, split.text
    parts = split.json()["features"]
    assert len(parts) == 2 and parts[0]["id"] == parcel["id"] and parts[1]["properties"]["code"] == new_code
    total = sum(p["properties"]["area_m2"] for p in parts)
    assert total == pytest.approx(parcel["properties"]["area_m2"], rel=1e-6)
    versions = {str(p["id"]): p["version"] for p in parts}
    merged = client.post(
        "/api/layers/parcels/merge", json={"ids": [p["id"] for p in parts], "keep": parcel["id"], "versions": versions}
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["properties"]["area_m2"] == pytest.approx(parcel["properties"]["area_m2"], rel=1e-6)
    assert client.get(f"/api/layers/parcels/features/{parts[1]['id']}").status_code == 404


def test_numbers_beyond_an_id_are_refused_not_a_500(client: TestClient) -> None:
    _frame(client)
    parcel = _post(client, "parcels", sample("parcels"))
    url = f"/api/layers/parcels/features/{parcel['id']}/restore"
    assert client.post(url, json={"change": 2**70}, headers={"If-Match": "*"}).json()["code"] == "change_required"
    line = {"type": "LineString", "coordinates": [[X0, Y0], [X0 + 0.001, Y0 + 0.001]]}
    split = client.post(
        "/api/layers/parcels/split", json={"id": 2**40, "line": line, "codes": []}, headers={"If-Match": "*"}
    )
    assert split.status_code == 422 and split.json()["code"] == "split_invalid"
    merge = client.post(
        "/api/layers/parcels/merge", json={"ids": [2**40, parcel["id"]], "keep": parcel["id"], "versions": {}}
    )
    assert merge.status_code == 422 and merge.json()["code"] == "merge_invalid"
