"""Uploads through the API: per-feature report, atomic commit, idempotent replay, CRS conversion."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import shapely
from pyproj import Geod, Transformer
from shapely.geometry import mapping, shape

from spatial.crs import wgs84_to_gcj02
from spatial.db import state
from tests.conftest import ADMIN, admin_sessions, admin_url, libpq, migrated_database
from tests.samples import COMMUNITY, X0, Y0, sample

URL = "/api/layers/shops/features"
UPLOADS = "/api/layers/{layer}/uploads"
GEOD = Geod(ellps="GRS80")
VARIANTS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "derived-crs-variants"
needs_variants = pytest.mark.skipif(not VARIANTS.exists(), reason="../shared/data is not beside this checkout")


def shops(n: int) -> list[dict]:
    out = []
    for i in range(n):
        shop = sample("shops")
        shop["properties"]["code"] = COMMUNITY + f"21{i:05d}"
        shop["geometry"]["coordinates"] = [X0 + 0.0003 * i, Y0 + 0.0002]
        out.append(shop)
    return out


def collection(features: list[dict], **extra: object) -> bytes:
    return json.dumps({"type": "FeatureCollection", **extra, "features": features}, ensure_ascii=False).encode()


def upload(client: TestClient, body: bytes, layer: str = "shops", **params: object):
    headers = params.pop("headers", {})
    return client.post(UPLOADS.format(layer=layer), content=body, params=params, headers=headers)


@pytest.fixture
def committed() -> Iterator[Engine]:
    """Return an engine on a fresh migrated database whose transactions really commit."""
    with migrated_database("guatu_test_committed") as engine:
        yield engine


def count(session: Session, table: str = "shops") -> int:
    return session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_all_or_nothing_writes_nothing_when_one_feature_is_bad(client: TestClient, session: Session) -> None:
    features = shops(3)
    features[1]["properties"]["status"] = "空着"
    response = upload(client, collection(features))
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == "rejected" and body["report"]["summary"]["rejected"] == 1
    bad = body["report"]["features"][1]
    assert bad["status"] == "rejected" and bad["problems"][0]["code"] == "enum"
    assert bad["problems"][0]["where"] == {"feature_index": 1, "field": "properties.status"}
    assert count(session) == 0


def test_valid_only_commits_the_rest_and_records_provenance(client: TestClient, session: Session) -> None:
    features = shops(3)
    features[2]["geometry"] = {"type": "Point", "coordinates": [120.3, None]}
    response = upload(client, collection(features), mode="valid-only", uploader="王调查")  # said, not believed
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "committed" and body["report"]["summary"] == {
        "total": 3,
        "new": 2,
        "changed": 0,
        "unchanged": 0,
        "rejected": 1,
    }
    assert count(session) == 2
    ids = session.execute(text("SELECT DISTINCT upload_id FROM shops")).scalars().all()
    assert ids == [body["id"]]
    listed = client.get("/api/uploads").json()
    assert listed[0]["id"] == body["id"] and listed[0]["uploader"] == "admin"  # who signed in
    assert client.get(f"/api/uploads/{body['id']}").json()["report"]["features"][2]["status"] == "rejected"


def test_the_same_file_twice_changes_nothing(client: TestClient, session: Session, archive_in_tmp: Path) -> None:
    raw = collection(shops(4))
    first = upload(client, raw)
    assert first.status_code == 201
    second = upload(client, raw)
    assert second.json()["id"] == first.json()["id"]
    assert count(session) == 4
    sha = hashlib.sha256(raw).hexdigest()
    assert (archive_in_tmp / sha[:2] / f"{sha}.geojson").read_bytes() == raw


def test_dry_run_diffs_against_the_database(client: TestClient, session: Session) -> None:
    features = shops(3)
    assert upload(client, collection(features)).status_code == 201
    edited = copy.deepcopy(features)
    edited[0]["properties"]["status"] = "在营"
    edited[0]["geometry"]["coordinates"][0] += 0.0001  # ~9 m east
    new = shops(4)[3]
    response = upload(client, collection([*edited, new]), dry_run="true")
    assert response.status_code == 200
    report = response.json()["report"]
    assert [f["status"] for f in report["features"]] == ["changed", "unchanged", "unchanged", "new"]
    assert report["features"][0]["changed_fields"] == ["status"]
    assert 8 < report["features"][0]["moved_m"] < 10
    assert count(session) == 3  # a dry run writes no feature
    assert session.execute(text("SELECT status FROM shops ORDER BY code LIMIT 1")).scalar() == "闲置"


def test_idempotency_key_reused_for_another_file_is_refused(client: TestClient) -> None:
    key = {"Idempotency-Key": "survey-2026-11-22-a"}
    assert upload(client, collection(shops(1)), headers=key).status_code == 201
    again = upload(client, collection(shops(1)), headers=key)
    assert again.status_code in (200, 201)
    other = upload(client, collection(shops(2)), headers=key)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"


def test_duplicate_keys_in_the_file_are_reported(client: TestClient) -> None:
    features = shops(2)
    features[1]["properties"]["code"] = features[0]["properties"]["code"]
    report = upload(client, collection(features)).json()["report"]
    assert report["features"][1]["problems"][0]["code"] == "duplicate_in_file"


def test_gcj02_upload_lands_within_half_a_metre(client: TestClient, session: Session) -> None:
    parcel = sample("parcels")
    original = shape(parcel["geometry"])
    shifted = shapely.transform(original, lambda c: np.column_stack(wgs84_to_gcj02(c[:, 0], c[:, 1])))
    parcel["geometry"] = json.loads(json.dumps(mapping(shifted)))
    response = upload(client, collection([parcel]), layer="parcels", crs="GCJ-02")
    assert response.status_code == 201, response.text
    stored = session.execute(text("SELECT ST_AsText(geom) FROM parcels")).scalar_one()
    landed = shapely.from_wkt(stored)
    worst = max(
        GEOD.inv(*a, *b)[2]
        for a, b in zip(sorted(original.exterior.coords), sorted(landed.geoms[0].exterior.coords), strict=False)
    )
    assert worst < 0.5


def test_gauss_kruger_upload_with_northing_first(client: TestClient, session: Session) -> None:
    parcel = sample("parcels")
    to_gk = Transformer.from_crs(4490, 4549, always_xy=True)
    ring = [list(to_gk.transform(x, y))[::-1] for x, y in parcel["geometry"]["coordinates"][0]]  # X = northing
    parcel["geometry"]["coordinates"] = [ring]
    response = upload(client, collection([parcel]), layer="parcels", crs="EPSG:4549", axis="yx")
    assert response.status_code == 201, response.text
    area = session.execute(text("SELECT area_m2 FROM parcels")).scalar_one()
    expected = abs(GEOD.geometry_area_perimeter(shape(sample("parcels")["geometry"]))[0])
    assert abs(area - expected) / expected < 1e-6


def test_projected_metres_declared_as_degrees_are_refused_with_a_hint(client: TestClient, session: Session) -> None:
    parcel = sample("parcels")
    to_gk = Transformer.from_crs(4490, 4528, always_xy=True)
    parcel["geometry"]["coordinates"] = [[list(to_gk.transform(x, y)) for x, y in parcel["geometry"]["coordinates"][0]]]
    response = upload(client, collection([parcel]), layer="parcels", crs="WGS84")
    assert response.status_code == 422
    assert response.json()["code"] == "crs_projected_as_degrees" and "EPSG:4528" in response.json()["message"]
    legacy = collection([parcel], crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4528"}})
    assert upload(client, legacy, layer="parcels").status_code == 201  # the file's own crs member is honoured
    assert count(session, "parcels") == 1


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b'{"type": "FeatureCollection", "features": [', 400, "json_truncated"),
        (b"", 400, "body_empty"),
        (b'{"type": "FeatureCollection", "features": 3}', 400, "features_not_array"),
        (b'{"type": "Topology"}', 400, "wrong_top_level_type"),
    ],
)
def test_broken_files_are_refused(client: TestClient, session: Session, raw: bytes, status: int, code: str) -> None:
    response = upload(client, raw)
    assert response.status_code == status and response.json()["code"] == code
    assert count(session) == 0


def test_multipart_upload_and_unknown_upload(client: TestClient) -> None:
    files = {"file": ("survey.geojson", collection(shops(2)), "application/geo+json")}
    response = client.post(UPLOADS.format(layer="shops"), files=files)
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "survey.geojson"
    assert client.get("/api/uploads/999999").json()["code"] == "upload_not_found"


def test_two_concurrent_uploads_of_one_survey_leave_one_set_of_rows(committed: Engine) -> None:
    import threading

    from layers.base import REGISTRY
    from layers.uploads import UploadOptions, run_upload

    engine = committed
    raw = collection(shops(50))
    results: list[int] = []
    barrier = threading.Barrier(2)

    def send() -> None:
        with Session(engine) as own:
            state(own, ADMIN.settings())
            barrier.wait()
            results.append(run_upload(own, REGISTRY["shops"], raw, UploadOptions()).id)
            own.commit()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with Session(engine) as check:
        state(check, ADMIN.settings())
        assert count(check) == 50
        assert check.execute(text("SELECT count(*) FROM uploads")).scalar_one() == 1
    assert len(results) == 2 and results[0] == results[1]


def test_features_outside_the_deployment_are_refused(client: TestClient) -> None:
    features = shops(2)
    features[1]["geometry"]["coordinates"] = [2.3522, 48.8566]  # Paris
    report = upload(client, collection(features), mode="valid-only").json()["report"]
    assert report["features"][1]["problems"][0]["code"] == "outside_extent"
    assert report["features"][0]["status"] == "new"


def test_z_values_are_dropped_with_a_note(client: TestClient, session: Session) -> None:
    features = shops(1)
    features[0]["geometry"]["coordinates"].append(12.5)
    report = upload(client, collection(features)).json()["report"]
    assert report["features"][0]["notes"][0]["code"] == "z_dropped"
    assert session.execute(text("SELECT ST_NDims(geom) FROM shops")).scalar_one() == 2


def test_a_gcj02_file_declared_wgs84_gets_a_warning(client: TestClient) -> None:
    features = shops(5)
    assert upload(client, collection(features)).status_code == 201
    shifted = copy.deepcopy(features)
    for feature in shifted:
        lon, lat = feature["geometry"]["coordinates"]
        glon, glat = wgs84_to_gcj02(np.array([lon]), np.array([lat]))
        feature["geometry"]["coordinates"] = [float(glon[0]), float(glat[0])]
    body = upload(client, collection(shifted), crs="WGS84", dry_run="true").json()
    assert body["report"]["warnings"][0]["code"] == "likely_gcj02"
    honest = copy.deepcopy(features)
    honest[0]["geometry"]["coordinates"][0] += 0.001  # one shop really moved: no pattern
    assert "warnings" not in upload(client, collection(honest), dry_run="true").json()["report"]


def test_connection_killed_mid_commit_writes_nothing_and_marks_the_upload_failed(
    monkeypatch: pytest.MonkeyPatch, committed: Engine
) -> None:
    import psycopg

    from layers import uploads as uploads_module
    from layers.base import REGISTRY
    from layers.uploads import UploadOptions, commit_upload
    from spatial.errors import Unavailable

    factory = admin_sessions(committed)
    raw = collection(shops(30))
    real_upsert = uploads_module.write_staged

    def killed_upsert(session: Session, *args: object, **kwargs: object) -> int:
        written = real_upsert(session, *args, **kwargs)  # rows are in, uncommitted
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        dsn = libpq(admin_url(committed.url.database or ""))  # the fault comes from outside the app
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return written

    monkeypatch.setattr(uploads_module, "write_staged", killed_upsert)
    with factory() as session, pytest.raises(Unavailable) as caught:
        commit_upload(session, factory, REGISTRY["shops"], raw, UploadOptions())
    assert caught.value.code == "upload_failed"
    with factory() as check:
        assert count(check) == 0
        assert check.execute(text("SELECT status FROM uploads")).scalars().all() == ["failed"]

    monkeypatch.setattr(uploads_module, "write_staged", real_upsert)
    with factory() as session:
        again = commit_upload(session, factory, REGISTRY["shops"], raw, UploadOptions())
    assert again["status"] == "committed"
    with factory() as check:
        assert count(check) == 30


def _parcel_with(ring: list[list[float]], code: str) -> dict:
    parcel = sample("parcels")
    parcel["properties"]["code"] = COMMUNITY + code
    parcel["geometry"] = {"type": "Polygon", "coordinates": [ring]}
    return parcel


def test_repair_only_when_asked_and_only_within_tolerance(client: TestClient, session: Session) -> None:
    x, y, d = X0, Y0, 0.001
    # A square whose closing edge dips 1 m below the first edge and crosses it: repairable.
    twisted = [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x + 0.00002, y - 0.00001], [x, y]]
    bowtie = [[x, y], [x + d, y + d], [x + d, y], [x, y + d], [x, y]]
    body = collection([_parcel_with(twisted, "0100101"), _parcel_with(bowtie, "0100102")])

    plain = upload(client, body, layer="parcels", mode="valid-only", dry_run="true").json()["report"]
    assert [f["problems"][0]["code"] for f in plain["features"]] == ["self_intersection", "self_intersection"]

    fixed = upload(client, body, layer="parcels", mode="valid-only", repair="true").json()
    first, second = fixed["report"]["features"]
    assert first["status"] == "new"
    note = first["notes"][0]
    assert (
        note["code"] == "repaired"
        and abs(note["area_after_m2"] - note["area_before_m2"]) < 0.01 * note["area_before_m2"]
    )
    assert second["status"] == "rejected" and second["problems"][0]["code"] == "repair_changed_type"  # 1 -> 2 parts
    assert "拆成 2 个面" in second["problems"][0]["message"]
    assert session.execute(text("SELECT bool_and(ST_IsValid(geom)) FROM parcels")).scalar() is True
    assert count(session, "parcels") == 1


@needs_variants
@pytest.mark.parametrize(
    ("name", "crs", "status", "code"),
    [
        ("tancheng_epsg4527", "EPSG:4548", 422, "zone_prefix_unexpected"),
        ("tancheng_epsg4548", "EPSG:4527", 422, "zone_prefix_missing"),
        ("tancheng_epsg4548", "WGS84", 422, "crs_projected_as_degrees"),
        ("tancheng_epsg4490_axis_swapped_latlon", None, 422, "axis_swapped"),
        ("tancheng_epsg4527", None, 200, None),
    ],
)
def test_crs_variants_through_the_endpoint(
    client: TestClient, name: str, crs: str | None, status: int, code: str | None
) -> None:
    raw = (VARIANTS / f"{name}.geojson").read_bytes()
    params = {"dry_run": "true", **({"crs": crs} if crs else {})}
    response = upload(client, raw, layer="divisions", **params)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["code"] == code
    else:  # read as the file declares: converted, then refused only for the divisions' own fields
        problems = response.json()["report"]["features"][0]["problems"]
        assert problems and all(p["where"]["field"].startswith("properties.") for p in problems)


def test_oversized_upload_is_413(client: TestClient, session: Session) -> None:
    client.app.state.settings.max_upload_bytes = 10_000
    raw = collection(shops(60))
    assert len(raw) > 10_000
    response = upload(client, raw)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert count(session) == 0
