"""Big uploads: streamed in chunks, checked vectorised with a one-by-one fallback, written as they come.

The fast path must never accept what the one-by-one checks refuse, nor store anything
different; chunk and batch boundaries, all-or-nothing rollback of rows already written,
and the report limits are exercised with tiny chunk sizes.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import shapely
from pyproj import Transformer

from layers import staging, uploads
from layers.base import REGISTRY
from layers.features import check_feature
from spatial.crs import DeclaredCrs, parse_crs
from spatial.geojson_in import open_geojson, repeated_members
from spatial.geometry import build_many
from tests.conftest import admin_sessions, admin_url, libpq, migrated_database
from tests.samples import COMMUNITY, GRID, X0, Y0, sample
from tests.test_uploads import collection, upload

SIDE = 0.0002


def parcels(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    """Return N small valid parcels in a row, codes from START."""
    out = []
    for i in range(start, start + n):
        parcel = sample("parcels")
        parcel["properties"].update(code=f"{COMMUNITY}{i:07d}", community_code=None, grid_code=None)
        x = X0 + 0.0003 * (i % 40)
        y = Y0 + 0.0003 * (i // 40)
        ring = [[x, y], [x + SIDE, y], [x + SIDE, y + SIDE], [x, y + SIDE], [x, y]]
        parcel["geometry"] = {"type": "Polygon", "coordinates": [ring]}
        out.append(parcel)
    return out


@pytest.fixture
def committed() -> Iterator[Engine]:
    """Return an engine on a fresh migrated database whose transactions really commit."""
    with migrated_database("guatu_test_bulk_committed") as engine:
        yield engine


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 features, written in batches of 10: every boundary is crossed."""
    monkeypatch.setattr(uploads, "CHUNK", 7)
    monkeypatch.setattr(uploads, "WRITE_BATCH", 10)


def stored_codes(session: Session) -> set[str]:
    return set(session.execute(text("SELECT code FROM parcels")).scalars())


# --- the file reader ---------------------------------------------------------------------


def test_a_collection_is_handed_out_in_chunks_of_its_own_bytes() -> None:
    features = parcels(23)
    source = open_geojson(collection(features))
    assert source.count == 23 and source.raws is not None  # streamed, not parsed whole
    seen = []
    for first, stop in source.spans(10):
        seen.extend(source.parsed(first, stop))
    assert seen == features
    assert json.loads(source.feature_bytes(22)) == features[22]


@pytest.mark.parametrize(
    ("raw", "code", "location"),
    [
        (b'{"type": "FeatureCollection", "features": [{"type": "Feature"},\n {"type": ]}', "invalid_json", [2, 11]),
        (b'{"type": "FeatureCollection", "features": [{"type": "Feature"}, {"ty', "json_truncated", None),
        (b'{"type": "FeatureCollection", "features": [{"a": Infinity}]}', "json_nan", [1, 50]),
    ],
)
def test_a_broken_collection_is_refused_with_where(raw: bytes, code: str, location: list[int] | None) -> None:
    from spatial.errors import MalformedInput

    with pytest.raises(MalformedInput) as caught:
        open_geojson(raw)
    assert caught.value.code == code
    if location:
        assert caught.value.problems[0].where.location == location


def test_repeated_member_names_are_found_at_any_depth() -> None:
    assert repeated_members(b'{"a": 1, "b": {"c": 1, "c": 2}, "a": 3}') == ["c", "a"]
    assert repeated_members(b'{"a": "12:30", "b": "x:y"}') == []  # colons in values are no repeat


# --- the vectorised path agrees with the one-by-one checks ---------------------------------


def _fast_and_slow(layer_id: str, features: list[dict[str, Any]], declared: DeclaredCrs) -> tuple[Any, Any]:
    layer = REGISTRY[layer_id]
    checker = uploads._Checker(None, layer, declared, False)  # type: ignore[arg-type]
    source = open_geojson(collection(features))
    checked = checker.chunk(source, 0, source.count)
    fast = {index: (props, geom) for (index, props, _), geom in zip(checked.ok, checked.geoms, strict=True)}
    slow = {}
    for index, feature in enumerate(features):
        try:
            slow[index] = check_feature(
                None,  # type: ignore[arg-type]
                layer,
                feature,
                index=index,
                locate=False,
                transform=uploads._Repairer(declared, False),
            )
        except Exception:  # noqa: BLE001 - a refusal: the fast path must refuse it too
            continue
    return fast, slow


def test_the_fast_path_stores_exactly_what_the_one_by_one_checks_store() -> None:
    features = parcels(6)
    features[1]["geometry"]["coordinates"][0] = features[1]["geometry"]["coordinates"][0][::-1]  # clockwise
    holed = shapely.Polygon(
        [(X0, Y0), (X0 + 0.001, Y0), (X0 + 0.001, Y0 + 0.001), (X0, Y0 + 0.001)],
        [[(X0 + 0.0004, Y0 + 0.0004), (X0 + 0.0006, Y0 + 0.0004), (X0 + 0.0006, Y0 + 0.0006)]],
    )
    features[2]["geometry"] = json.loads(shapely.to_geojson(holed))
    two = shapely.MultiPolygon(
        [shapely.box(X0, Y0, X0 + SIDE, Y0 + SIDE), shapely.box(X0 + 0.001, Y0, X0 + 0.0012, Y0 + SIDE)]
    )
    features[3]["geometry"] = json.loads(shapely.to_geojson(two))
    features[4]["geometry"]["coordinates"] = [[[*p, 12.5] for p in features[4]["geometry"]["coordinates"][0]]]  # Z
    fast, slow = _fast_and_slow("parcels", features, parse_crs("EPSG:4490"))
    assert fast.keys() == slow.keys() == set(range(6))
    for index in fast:
        assert fast[index][0] == slow[index][0]
        assert shapely.to_wkb(fast[index][1]) == shapely.to_wkb(slow[index][1]), index


def test_projected_points_agree_too() -> None:
    to_gk = Transformer.from_crs(4490, 4549, always_xy=True)
    shops = []
    for i in range(5):
        shop = sample("shops")
        shop["properties"]["code"] = f"{COMMUNITY}21{i:05d}"
        shop["geometry"]["coordinates"] = list(to_gk.transform(X0 + 0.0003 * i, Y0))
        shops.append(shop)
    fast, slow = _fast_and_slow("shops", shops, parse_crs("EPSG:4549"))
    assert fast.keys() == slow.keys() == set(range(5))
    for index in fast:
        assert shapely.equals_exact(fast[index][1], slow[index][1], 1e-12)


S = SIDE
BAD_GEOMETRIES: list[Any] = [
    None,
    {"type": "Polygon", "coordinates": []},
    {"type": "Polygon", "coordinates": [[[X0, Y0], [X0 + SIDE, Y0], [X0, Y0]]]},  # too short
    {"type": "Polygon", "coordinates": [[[X0, Y0], [X0 + SIDE, Y0], [X0 + SIDE, Y0 + SIDE], [X0, Y0 + SIDE]]]},  # open
    {
        "type": "Polygon",
        "coordinates": [[[X0, Y0], [X0 + SIDE, Y0 + SIDE], [X0 + SIDE, Y0], [X0, Y0 + SIDE], [X0, Y0]]],
    },
    {"type": "Polygon", "coordinates": [[[X0, Y0], [X0 + S, Y0], [X0 + S, Y0 + S], [X0, Y0]]], "bbox": [1, 2]},
    {"type": "Polygon", "coordinates": [[[X0, Y0, 1, 2, 3], [X0 + SIDE, Y0], [X0 + SIDE, Y0 + SIDE], [X0, Y0]]]},
    {"type": "Polygon", "coordinates": [[[X0, True], [X0 + SIDE, Y0], [X0 + SIDE, Y0 + SIDE], [X0, True]]]},
    {"type": "Polygon", "coordinates": [[["120.4", Y0], [X0 + SIDE, Y0], [X0 + SIDE, Y0 + SIDE], ["120.4", Y0]]]},
    {"type": "Polygon", "coordinates": [[[200.0, Y0], [201.0, Y0], [201.0, Y0 + 1], [200.0, Y0]]]},
    {"type": "LineString", "coordinates": [[X0, Y0], [X0 + SIDE, Y0]]},
    {"type": "GeometryCollection", "geometries": []},
    {"type": "Point", "coordinates": [X0, Y0]},
    {"type": "MultiPolygon", "coordinates": [[]]},
]


@pytest.mark.parametrize("geometry", BAD_GEOMETRIES)
def test_the_fast_path_never_accepts_a_geometry_the_checks_refuse(geometry: Any) -> None:
    features = parcels(3)
    features[1]["geometry"] = geometry
    fast, slow = _fast_and_slow("parcels", features, parse_crs("EPSG:4490"))
    assert 1 not in slow
    assert fast.keys() == {0, 2}


@pytest.mark.parametrize(
    "change",
    [
        {"land_use_code": "9999"},
        {"ownership": "私有"},
        {"code": "３７０２１４"},
        {"idle_since": "yesterday"},
        {"name": "a\x00b"},
        {"code": None},
        {"area_m2": 5, "name": "只读字段被忽略"},  # read-only members are dropped, not refused
    ],
)
def test_the_fast_path_refuses_properties_as_the_checks_do(change: dict[str, Any]) -> None:
    features = parcels(3)
    features[1]["properties"].update(change)
    fast, slow = _fast_and_slow("parcels", features, parse_crs("EPSG:4490"))
    assert fast.keys() == slow.keys()
    assert all(fast[i][0] == slow[i][0] for i in fast)


def test_flattening_text_and_lists_agree_and_odd_coordinates_fall_back() -> None:
    from spatial.geometry import _flatten_lists, _flatten_text

    raws = [json.dumps(f["geometry"]["coordinates"]).encode() for f in parcels(4)]
    by_text, by_lists = _flatten_text("Polygon", raws), _flatten_lists("Polygon", raws)
    assert by_text is not None and by_lists is not None
    assert np.array_equal(by_text.given, by_lists.given)
    assert np.array_equal(by_text.ring_sizes, by_lists.ring_sizes)
    built = build_many("Polygon", raws, convert=np.asarray, allowed=["Polygon"], stored=["MultiPolygon"])
    assert all(g is not None and g.geom_type == "MultiPolygon" for g in built.geoms)
    three_d = b"[[[120.4, 36.3, 5], [120.5, 36.3, 5], [120.5, 36.4, 5], [120.4, 36.3, 5]]]"
    with_z = build_many("Polygon", [three_d], convert=lambda c: c[:, :2], allowed=["Polygon"], stored=["Polygon"])
    assert with_z.had_z[0] and not shapely.has_z(with_z.geoms[0])
    mixed = [*raws, b"[[[120.4, 36.3, 5], [120.5, 36.3], [120.5, 36.4], [120.4, 36.3]]]"]  # 2D and 3D in one
    left = build_many("Polygon", mixed, convert=np.asarray, allowed=["Polygon"], stored=["MultiPolygon"])
    assert all(g is None for g in left.geoms)  # all left to the one-by-one checks, which take them


def test_ewkb_is_what_postgis_reads(session: Session) -> None:
    geoms = [shapely.Point(X0, Y0), shapely.MultiPolygon([shapely.box(X0, Y0, X0 + SIDE, Y0 + SIDE)])]
    for geom, hexed in zip(geoms, staging.ewkb(geoms), strict=True):
        srid, wkt = session.execute(
            text("SELECT ST_SRID(CAST(:h AS geometry)), ST_AsText(CAST(:h AS geometry))"), {"h": hexed}
        ).one()
        assert srid == 4490 and shapely.from_wkt(wkt).equals_exact(geom, 1e-12)


def test_key_lookups_use_the_index_even_with_a_generic_plan(session: Session) -> None:
    """A prepared `= ANY(:keys)` once scanned the whole table per key (a 2nd upload took a minute)."""
    session.execute(
        text(
            "INSERT INTO parcels (code, land_use_code, ownership, use_status, geom) "
            "SELECT :c || lpad(i::text, 7, '0'), '1201', '集体', '闲置', "
            "ST_Multi(ST_MakeEnvelope(120.4 + i * 1e-5, 36.3, 120.4 + i * 1e-5 + 1e-6, 36.3 + 1e-6, 4490)) "
            "FROM generate_series(1, 5000) AS i"
        ),
        {"c": COMMUNITY},
    )
    session.execute(text("ANALYZE parcels"))
    session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
    key = REGISTRY["parcels"].key[0]
    lookup = f"SELECT t.{key} FROM unnest($1::text[]) AS k(v) JOIN parcels t ON t.{key} = k.v"
    session.execute(text(f"PREPARE lookup(text[]) AS {lookup}"))
    plan = "\n".join(session.execute(text("EXPLAIN EXECUTE lookup(ARRAY['a','b'])")).scalars())
    session.execute(text("DEALLOCATE lookup"))
    # the key's index, or its copy on a county's table (parcels are partitioned by county: layers.partitions)
    assert re.search(r"(uq_parcels_key|parcels_[0-9a-z]+_code_key)", plan) and "Seq Scan on parcels" not in plan, plan
    assert staging.existing_keys(session, REGISTRY["parcels"], [f"{COMMUNITY}0000007", "nope"]) == {
        f"{COMMUNITY}0000007"
    }


# --- chunks, batches and the report --------------------------------------------------------


@pytest.mark.usefixtures("tiny_chunks")
def test_every_chunk_and_batch_boundary_keeps_order_and_counts(client: TestClient, session: Session) -> None:
    features = parcels(45)
    features[44]["properties"]["code"] = features[3]["properties"]["code"]  # a duplicate across chunks
    features[20]["properties"]["land_use_code"] = "9999"
    body = upload(client, collection(features), layer="parcels", mode="valid-only").json()
    report = body["report"]
    assert report["summary"] == {"total": 45, "new": 43, "changed": 0, "unchanged": 0, "rejected": 2}
    assert [f["index"] for f in report["features"]] == list(range(45))
    assert report["features"][44]["problems"][0]["code"] == "duplicate_in_file"
    assert report["features"][20]["problems"][0]["where"]["field"] == "properties.land_use_code"
    assert len(stored_codes(session)) == 43


@pytest.mark.usefixtures("tiny_chunks")
def test_all_or_nothing_takes_back_rows_already_written(client: TestClient, session: Session) -> None:
    features = parcels(40)
    features[38]["geometry"]["coordinates"][0][1] = [X0 + 0.5, Y0 + 0.5]  # self-intersecting, late in the file
    body = upload(client, collection(features), layer="parcels").json()
    assert body["status"] == "rejected" and body["report"]["summary"]["rejected"] == 1
    assert body["report"]["summary"]["new"] == 39  # what would have happened
    assert stored_codes(session) == set()


@pytest.mark.usefixtures("tiny_chunks")
def test_a_rerun_with_changes_diffs_against_rows_written_directly(client: TestClient, session: Session) -> None:
    features = parcels(25)
    assert upload(client, collection(features), layer="parcels").json()["status"] == "committed"
    features[7]["properties"]["use_status"] = "出租"
    features.append(parcels(1, start=99)[0])
    report = upload(client, collection(features), layer="parcels").json()["report"]
    assert report["summary"] == {"total": 26, "new": 1, "changed": 1, "unchanged": 24, "rejected": 0}
    assert report["features"][7]["changed_fields"] == ["use_status"]


def test_big_reports_list_only_what_has_something_to_say(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "REPORT_LIST_LIMIT", 5)
    monkeypatch.setattr(uploads, "REPORT_ENTRY_LIMIT", 3)
    features = parcels(12)
    for i in (2, 4, 6, 8, 10):
        features[i]["properties"]["ownership"] = "私有"
    report = upload(client, collection(features), layer="parcels", dry_run="true").json()["report"]
    assert report["listed"] == "problems"
    assert report["summary"]["rejected"] == 5 and report["summary"]["new"] == 7
    assert [f["index"] for f in report["features"]] == [2, 4, 6]
    assert report["omitted"] == {"rejected": 2}


def test_a_feature_repeating_a_member_is_refused_naming_it(client: TestClient) -> None:
    features = parcels(2)
    raw = collection(features).replace(b'"ownership": ', b'"use_status": "\\u95f2\\u7f6e", "ownership": ', 1)
    body = upload(client, raw, layer="parcels", dry_run="true").json()
    first = body["report"]["features"][0]
    assert first["status"] == "rejected"
    assert first["problems"][0]["code"] == "duplicate_member" and first["problems"][0]["where"]["field"] == "use_status"
    assert body["report"]["features"][1]["status"] == "new"


def test_location_codes_are_filled_and_checked_in_bulk(client: TestClient) -> None:
    for layer in ("divisions", "grids"):
        assert upload(client, collection([sample(layer)]), layer=layer).json()["status"] == "committed"
    features = parcels(3)
    features[2]["properties"]["grid_code"] = GRID[:-1] + "9"
    report = upload(client, collection(features), layer="parcels", mode="valid-only").json()["report"]
    assert report["summary"]["new"] == 2
    assert report["features"][2]["problems"][0]["code"] == "location_mismatch"
    listed = client.get("/api/layers/parcels/features").json()["features"]
    assert {f["properties"]["grid_code"] for f in listed} == {GRID}


def test_the_collector_is_paused_only_while_checking(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    real = uploads._Checker.chunk
    during: list[bool] = []

    def watched(self: Any, *args: Any) -> Any:
        during.append(gc.isenabled())
        return real(self, *args)

    monkeypatch.setattr(uploads._Checker, "chunk", watched)
    assert gc.isenabled()
    raw = collection(parcels(3))
    uploads.run_upload(session, REGISTRY["parcels"], raw, uploads.UploadOptions(dry_run=True))  # checked here
    source = open_geojson(raw)
    worker_args = (("parcels", ""), DeclaredCrs("epsg", 4490), False, source.part(0, 3), False, True)
    uploads.check_part(*worker_args)  # as a worker does
    assert during == [False, False]  # paused while a chunk was checked, in this thread or a worker's
    assert gc.isenabled()  # and on again after


# --- found by review: each of these was a 500, a wrong report or a spurious change ----------------


def test_a_number_beyond_a_double_is_refused_for_that_feature_not_a_500(client: TestClient) -> None:
    features = parcels(3)
    raw = collection(features)
    raw = raw.replace(b'"name": ', b'"floor_area": 1e400, "name": ', 1)  # no field of parcels, and not finite
    ring = json.dumps(features[2]["geometry"]["coordinates"][0][1]).encode()
    raw = raw.replace(ring, b"[1e400, 36.3]", 1)
    response = upload(client, raw, layer="parcels", dry_run="true", mode="valid-only")
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert [f["status"] for f in report["features"]] == ["new", "new", "rejected"]  # the field is dropped, noted
    assert report["fields"]["dropped"] == {"floor_area": "not_scalar"}
    assert report["features"][2]["problems"][0]["code"] == "invalid_coordinate"


def test_gcj02_and_bd09_inverses_do_not_depend_on_the_other_points() -> None:
    from spatial.crs import bd09_to_wgs84, gcj02_to_wgs84

    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(120.0, 120.5, 300), rng.uniform(36.0, 36.5, 300)
    for inverse in (gcj02_to_wgs84, bd09_to_wgs84):
        together = inverse(lon, lat)
        alone = [inverse(lon[i : i + 1], lat[i : i + 1]) for i in range(0, 300, 37)]
        for k, i in enumerate(range(0, 300, 37)):
            assert together[0][i] == alone[k][0][0] and together[1][i] == alone[k][1][0]


def test_a_ring_closed_in_xy_but_not_in_z_is_stored_alike_by_both_paths() -> None:
    features = parcels(3)
    for feature in features:
        ring = feature["geometry"]["coordinates"][0]
        feature["geometry"]["coordinates"][0] = [[*p, 10.0] for p in ring[:-1]] + [[*ring[-1], 10.5]]
    fast, slow = _fast_and_slow("parcels", features, parse_crs("EPSG:4490"))
    assert fast.keys() == slow.keys() == {0, 1, 2}
    for index in fast:
        assert shapely.to_wkb(fast[index][1]) == shapely.to_wkb(slow[index][1])
        assert shapely.get_num_coordinates(fast[index][1]) == 5


def test_reports_list_rejections_before_notes_and_count_the_rest_by_kind(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "REPORT_LIST_LIMIT", 5)
    monkeypatch.setattr(uploads, "REPORT_ENTRY_LIMIT", 3)
    monkeypatch.setattr(uploads, "CHUNK", 2)
    features = parcels(12)
    for feature in features[:8]:  # Z dropped: a note on each of the first eight
        feature["geometry"]["coordinates"][0] = [[*p, 1.0] for p in feature["geometry"]["coordinates"][0]]
    features[10]["properties"]["ownership"] = "私有"
    report = upload(client, collection(features), layer="parcels", dry_run="true").json()["report"]
    assert report["summary"]["rejected"] == 1
    listed = {f["index"]: f["status"] for f in report["features"]}
    assert listed[10] == "rejected" and len(listed) == 3
    assert report["omitted"] == {"with_notes": 6}


def test_preview_geometry_and_ids_stay_with_features_rejected_late(client: TestClient) -> None:
    for layer in ("divisions", "grids"):
        assert upload(client, collection([sample(layer)]), layer=layer).json()["status"] == "committed"
    features = parcels(3)
    features[1]["properties"]["code"] = features[0]["properties"]["code"]  # duplicate in the file
    features[2]["properties"]["grid_code"] = GRID[:-1] + "9"  # misplaced: found by the writer
    features[2]["id"] = "P-3\x00"
    report = upload(client, collection(features), layer="parcels", dry_run="true").json()["report"]
    first, duplicate, misplaced = report["features"]
    assert duplicate["problems"][0]["code"] == "duplicate_in_file" and duplicate["geometry"]["type"] == "MultiPolygon"
    assert misplaced["problems"][0]["code"] == "location_mismatch"
    assert misplaced["id"] == "P-3\\u0000"  # kept, and storable (JSONB holds no NUL)
    assert first["status"] == "new" and "geometry" in first


def test_two_uploads_writing_the_same_new_keys_at_once_both_commit(committed: Engine) -> None:
    import threading

    import psycopg

    from layers.uploads import UploadOptions, commit_upload

    factory = admin_sessions(committed)
    real = staging.insert_rows
    first_wrote, second_writes = threading.Event(), threading.Event()
    collided: list[str] = []

    def racing(session: Session, *args: Any, **kwargs: Any) -> None:
        if threading.current_thread().name == "guatu-upload-writer" and not first_wrote.is_set():
            real(session, *args, **kwargs)  # the first upload's rows are in, not yet committed
            first_wrote.set()
            second_writes.wait(5)  # let the other one find no such keys and try to COPY them too
            return
        second_writes.set()
        try:
            real(session, *args, **kwargs)
        except psycopg.errors.UniqueViolation:
            collided.append(threading.current_thread().name)  # the race really happened
            raise

    results: dict[str, Any] = {}

    def run(name: str, features: list[dict[str, Any]], crs: str | None) -> None:
        with factory() as session:
            results[name] = commit_upload(
                session, factory, REGISTRY["parcels"], collection(features), UploadOptions(crs=crs)
            )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(staging, "insert_rows", racing)
        a = threading.Thread(target=run, args=("a", parcels(10), None))
        b = threading.Thread(target=run, args=("b", parcels(10, start=5), "CGCS2000"))  # another lock
        a.start()
        first_wrote.wait(10)
        b.start()
        a.join(30)
        b.join(30)
    assert results["a"]["status"] == results["b"]["status"] == "committed"
    assert collided == ["guatu-upload-writer"]  # b's COPY met a's keys, and was staged instead
    with factory() as session:
        assert len(stored_codes(session)) == 15


def test_the_connection_killed_during_the_writers_copy_writes_nothing(
    committed: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from layers.uploads import UploadOptions, commit_upload
    from spatial.errors import Unavailable

    monkeypatch.setattr(uploads, "CHUNK", 5)
    monkeypatch.setattr(uploads, "WRITE_BATCH", 5)
    factory = admin_sessions(committed)
    real = staging.insert_rows
    calls = []

    def killed(session: Session, *args: Any, **kwargs: Any) -> None:
        real(session, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # mid-upload: two batches in, more to come
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            dsn = libpq(admin_url(committed.url.database or ""))  # the fault comes from outside the app
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    monkeypatch.setattr(staging, "insert_rows", killed)
    with factory() as session, pytest.raises(Unavailable) as caught:
        commit_upload(session, factory, REGISTRY["parcels"], collection(parcels(30)), UploadOptions())
    assert caught.value.code == "upload_failed"
    with factory() as session:
        assert stored_codes(session) == set()
        assert session.execute(text("SELECT status FROM uploads")).scalars().all() == ["failed"]
