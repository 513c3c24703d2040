"""Warnings before committing: a likely GCJ-02/BD-09 file declared WGS84, overlaps with stored and in-file features."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

import shapely
from pyproj import Transformer
from shapely.geometry import mapping, shape

from spatial.crs import gcj02_to_bd09, wgs84_to_gcj02
from spatial.geometry import mu_from_m2
from tests.samples import COMMUNITY, X0, Y0, sample

UPLOADS = "/api/layers/parcels/uploads"
TO_GK = Transformer.from_crs(4490, 4549, always_xy=True)  # CGCS2000 3° Gauss-Kruger CM 120°E, metres
FROM_GK = Transformer.from_crs(4549, 4490, always_xy=True)


def _gcj(c: Any) -> Any:
    return np.column_stack(wgs84_to_gcj02(c[:, 0], c[:, 1]))


def _bd(c: Any) -> Any:
    return np.column_stack(gcj02_to_bd09(*wgs84_to_gcj02(c[:, 0], c[:, 1])))


def _gk(geom: Any) -> Any:
    return shapely.transform(geom, lambda c: np.column_stack(TO_GK.transform(c[:, 0], c[:, 1])))


def _lonlat(geom: Any) -> Any:
    return shapely.transform(geom, lambda c: np.column_stack(FROM_GK.transform(c[:, 0], c[:, 1])))


def collection(features: list[dict[str, Any]]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False).encode()


def upload(client: TestClient, features: list[dict[str, Any]], **params: object) -> dict[str, Any]:
    response = client.post(UPLOADS, content=collection(features), params=params)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def parcel(code: str, geom: Any, **props: Any) -> dict[str, Any]:
    feature = sample("parcels")
    for name in ("community_code", "grid_code"):  # located from the geometry, unless given
        feature["properties"].pop(name, None)
    feature["properties"].update(code=code, **props)
    feature["geometry"] = json.loads(json.dumps(mapping(geom)))
    return feature


def warning(body: dict[str, Any], code: str) -> dict[str, Any] | None:
    return next((w for w in body["report"].get("warnings", []) if w["code"] == code), None)


def notes(body: dict[str, Any], index: int) -> list[dict[str, Any]]:
    entry = next(e for e in body["report"]["features"] if e["index"] == index)
    found: list[dict[str, Any]] = entry.get("notes", [])
    return found


# --------------------------------------------------------------------------- likely GCJ-02 / BD-09


@pytest.fixture
def demo(session: Session) -> Session:
    from layers import demo as generator

    generator.load(session)
    return session


def grid_shaped(session: Session, shift: Any = None, n: int = 24) -> tuple[list[dict[str, Any]], list[Any]]:
    """Return N new parcels shaped as the demo's grids (shrunk by ~5 m), shifted by SHIFT; and their shapes."""
    rows = session.execute(text("SELECT code, ST_AsBinary(geom) FROM grids ORDER BY code LIMIT :n"), {"n": n}).all()
    features, shapes = [], []
    for number, (grid, wkb) in enumerate(rows):
        geom = shapely.from_wkb(wkb).buffer(-0.00005)
        shapes.append(geom)
        moved = shapely.transform(geom, shift) if shift is not None else geom
        features.append(parcel(f"{grid[:12]}09{number:05d}", moved))
    return features, shapes


def parcel_shaped(session: Session, shift: Any, n: int = 300) -> list[dict[str, Any]]:
    """Return N new parcels shaped as the demo's parcels (every k-th), shifted by SHIFT."""
    rows = session.execute(
        text(
            "SELECT ST_AsBinary(geom) FROM (SELECT geom, row_number() OVER (ORDER BY code) r FROM parcels) p "
            "WHERE r % 7 = 0 LIMIT :n"
        ),
        {"n": n},
    ).scalars()
    return [parcel(f"{COMMUNITY}08{i:05d}", shapely.transform(shapely.from_wkb(w), shift)) for i, w in enumerate(rows)]


def applied_offset_m(shapes: list[Any], shift: Any) -> float:
    moved = []
    for geom in shapes:
        c = np.array([[geom.centroid.x, geom.centroid.y]])
        to = shift(c)
        dx = (to[0, 0] - c[0, 0]) * math.cos(math.radians(c[0, 1])) * 111_320.0
        moved.append(math.hypot(dx, (to[0, 1] - c[0, 1]) * 111_320.0))
    return float(np.median(moved))


def test_new_features_shifted_by_gcj02_get_likely_gcj02_with_the_evidence(client: TestClient, demo: Session) -> None:
    features, shapes = grid_shaped(demo, _gcj)
    body = upload(client, features, crs="WGS84", dry_run="true")
    found = warning(body, "likely_gcj02")
    assert found is not None, body["report"].get("warnings")
    assert warning(body, "likely_bd09") is None
    assert found["suggested_crs"] == "GCJ-02"
    fit = found["evidence"]["fit"]
    assert {f["layer"] for f in fit["frames"]} == {"divisions", "grids"}
    grids = next(f for f in fit["frames"] if f["layer"] == "grids")
    assert grids["declared"]["fit"] < 0.9 and grids["corrected"]["fit"] > 0.98
    assert grids["declared"]["misfit"] >= 10 and grids["corrected"]["misfit"] == 0
    applied = applied_offset_m(shapes, _gcj)
    assert abs(found["offset_m"] - applied) < 0.1 * applied, (found["offset_m"], applied)
    assert 45 < found["bearing_deg"] < 135  # GCJ-02 moves Qingdao east (and a little north)
    assert f"{found['offset_m']:.0f} 米" in found["message"] and "GCJ-02" in found["message"]
    assert "网格" in found["message"] and "%" in found["message"]


def test_coded_features_refused_as_misplaced_still_get_the_warning(client: TestClient, demo: Session) -> None:
    rows = demo.execute(
        text("SELECT grid_code, ST_AsBinary(geom) FROM parcels WHERE grid_code IS NOT NULL ORDER BY code LIMIT 200")
    ).all()
    features = [
        parcel(f"{g[:12]}08{i:05d}", shapely.transform(shapely.from_wkb(w), _gcj), grid_code=g, community_code=g[:12])
        for i, (g, w) in enumerate(rows)
    ]
    body = upload(client, features, crs="WGS84", dry_run="true")
    refused = [e for e in body["report"]["features"] if e["status"] == "rejected"]
    assert refused and all(e["problems"][0]["code"].startswith("location_") for e in refused)
    assert warning(body, "likely_gcj02") is not None  # the warning says why they are misplaced
    body = upload(client, features, crs="GCJ-02", dry_run="true")
    assert body["report"]["summary"]["rejected"] == 0 and warning(body, "likely_gcj02") is None


def test_the_same_file_declared_gcj02_or_unshifted_gets_no_crs_warning(client: TestClient, demo: Session) -> None:
    shifted, _ = grid_shaped(demo, _gcj)
    body = upload(client, shifted, crs="GCJ-02", dry_run="true")
    assert not [w for w in body["report"].get("warnings", []) if w["code"].startswith("likely_")]
    honest, _ = grid_shaped(demo)
    body = upload(client, honest, crs="CGCS2000", dry_run="true")
    assert not [w for w in body["report"].get("warnings", []) if w["code"].startswith("likely_")]
    body = upload(client, honest, dry_run="true")  # undeclared: CGCS2000
    assert not [w for w in body["report"].get("warnings", []) if w["code"].startswith("likely_")]


def test_bd09_shifted_new_features_get_likely_bd09(client: TestClient, demo: Session) -> None:
    features, shapes = grid_shaped(demo, _bd)
    body = upload(client, features, crs="WGS84", dry_run="true")
    found = warning(body, "likely_bd09")
    assert found is not None, body["report"].get("warnings")
    assert warning(body, "likely_gcj02") is None and found["suggested_crs"] == "BD-09"
    applied = applied_offset_m(shapes, _bd)
    assert abs(found["offset_m"] - applied) < 0.1 * applied, (found["offset_m"], applied)
    assert not warning(upload(client, features, crs="BD-09", dry_run="true"), "likely_bd09")


def test_real_parcel_shapes_shifted_by_gcj02_are_caught_too(client: TestClient, demo: Session) -> None:
    features = parcel_shaped(demo, _gcj)
    body = upload(client, features, crs="WGS84", dry_run="true")
    assert warning(body, "likely_gcj02") is not None, body["report"].get("warnings")
    honest = parcel_shaped(demo, lambda c: c)
    found = upload(client, honest, crs="WGS84", dry_run="true")["report"].get("warnings", [])
    assert not [w for w in found if w["code"].startswith("likely_")]


def test_too_few_features_or_no_frame_give_no_crs_warning(client: TestClient, session: Session) -> None:
    features = [
        parcel(f"{COMMUNITY}09{i:05d}", shapely.box(X0 + i * 0.002, Y0, X0 + i * 0.002 + 0.001, Y0 + 0.001))
        for i in range(10)
    ]
    shifted = [copy.deepcopy(f) for f in features]
    for f in shifted:
        f["geometry"] = mapping(shapely.transform(shape(f["geometry"]), _gcj))
    body = upload(client, json.loads(json.dumps(shifted)), crs="WGS84", dry_run="true")  # no grids stored
    assert not [w for w in body["report"].get("warnings", []) if w["code"].startswith("likely_")]


def test_matched_features_moved_by_gcj02_give_one_warning_with_the_measured_move(
    client: TestClient, demo: Session
) -> None:
    rows = demo.execute(text("SELECT code, ST_AsBinary(geom) FROM parcels ORDER BY code LIMIT 40")).all()
    features = [parcel(code, shapely.transform(shapely.from_wkb(w), _gcj)) for code, w in rows]
    for f in features:  # the stored ledger values, so that only the geometry moves
        f["properties"].pop("name")
    body = upload(client, features, crs="WGS84", dry_run="true", mode="valid-only")
    found = [w for w in body["report"].get("warnings", []) if w["code"].startswith("likely_")]
    assert len(found) == 1 and found[0]["code"] == "likely_gcj02", found
    moves = found[0]["evidence"]["moves"]
    applied = applied_offset_m([shapely.from_wkb(w) for _, w in rows], _gcj)
    assert abs(moves["offset_m"] - applied) < 0.05 * applied, (moves, applied)  # ~464 m, never the 576 of old
    assert f"{moves['offset_m']:.0f} 米" in found[0]["message"]


# --------------------------------------------------------------------------- overlaps


def square_m(x: float, y: float, side: float) -> Any:
    """Return a square of SIDE metres with its south-west corner at (X, Y) Gauss-Kruger metres, as lon/lat."""
    return _lonlat(shapely.box(x, y, x + side, y + side))


ORIGIN = TO_GK.transform(X0, Y0)


def test_new_parcels_overlapping_stored_ones_are_listed_with_the_area(client: TestClient, session: Session) -> None:
    x, y = ORIGIN
    stored = square_m(x, y, 100)
    assert upload(client, [parcel(f"{COMMUNITY}0100001", stored)])["status"] == "committed"
    new = square_m(x + 70, y + 60, 100)  # overlaps by 30 m × 40 m = 1200 m² (in Gauss-Kruger metres)
    expected = _gk(stored).intersection(_gk(new)).area
    body = upload(client, [parcel(f"{COMMUNITY}0100002", new)], dry_run="true")
    assert body["report"]["summary"]["new"] == 1 and body["report"]["summary"]["rejected"] == 0
    (note,) = [n for n in notes(body, 0) if n["code"] == "overlaps_stored"]
    assert note["other"] == f"{COMMUNITY}0100001"
    assert abs(note["area_m2"] - expected) < 0.005 * expected, (note, expected)
    assert abs(note["area_mu"] - mu_from_m2(expected)) < 0.005 * mu_from_m2(expected)
    assert note["geometry"]["type"] in ("Polygon", "MultiPolygon")
    summary = warning(body, "overlaps_stored")
    assert summary is not None and summary["pairs"] == 1 and summary["features"] == 1
    committed = upload(client, [parcel(f"{COMMUNITY}0100002", new)])  # a warning, never a refusal
    assert committed["status"] == "committed" and warning(committed, "overlaps_stored") is not None


def test_an_update_of_the_same_parcel_is_not_an_overlap(client: TestClient, session: Session) -> None:
    x, y = ORIGIN
    assert upload(client, [parcel(f"{COMMUNITY}0100001", square_m(x, y, 100))])["status"] == "committed"
    body = upload(client, [parcel(f"{COMMUNITY}0100001", square_m(x + 5, y + 5, 100))])
    assert body["report"]["summary"]["changed"] == 1
    assert "overlaps_stored" not in json.dumps(body["report"])


def test_features_of_one_file_overlapping_each_other_are_listed_and_slivers_ignored(
    client: TestClient, session: Session
) -> None:
    x, y = ORIGIN
    a = square_m(x, y, 50)
    b = square_m(x + 40, y + 10, 50)  # overlaps a by 10 × 40 = 400 m²
    c = square_m(x + 200, y, 50)
    d = _lonlat(shapely.box(x + 249.995, y, x + 300, y + 50))  # shares c's east edge, 5 mm over: 0.25 m²
    e = _lonlat(shapely.box(x + 200.5, y + 49.5, x + 201.5, y + 100))  # 1 m × 0.5 m into c: 0.5 m²
    features = [parcel(f"{COMMUNITY}01{i:05d}", g) for i, g in enumerate([a, b, c, d, e])]
    body = upload(client, features, dry_run="true")
    assert body["report"]["summary"]["rejected"] == 0
    (ab,) = [n for n in notes(body, 0) if n["code"] == "overlaps_in_file"]
    (ba,) = [n for n in notes(body, 1) if n["code"] == "overlaps_in_file"]
    assert ab["other"] == features[1]["properties"]["code"] and ab["other_index"] == 1
    assert ba["other"] == features[0]["properties"]["code"] and ba["other_index"] == 0
    assert abs(ab["area_m2"] - 400) < 2, ab
    for index in (2, 3, 4):
        assert not [n for n in notes(body, index) if n["code"].startswith("overlaps")]
    summary = warning(body, "overlaps_in_file")
    assert summary is not None and summary["pairs"] == 1
    assert warning(body, "overlaps_stored") is None
    # written straight into the table (a commit): the same pairs
    committed = upload(client, features)
    assert committed["status"] == "committed"
    assert [n["other_index"] for n in notes(committed, 0) if n["code"] == "overlaps_in_file"] == [1]


def test_the_in_file_sweep_finds_the_pairs_the_database_search_finds(
    client: TestClient, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slabs of 1, 2 and 3 features (carried across slabs, met once) and the SQL self-join: the same report."""
    from layers import upload_warnings

    x, y = ORIGIN
    shapes = [
        square_m(x, y, 50),
        square_m(x + 40, y + 10, 50),  # overlaps the first by 400 m²
        square_m(x + 50, y, 50),  # touches the first, overlaps the second
        _lonlat(shapely.box(x - 10, y - 300, x + 400, y - 250)),  # long: reaches every later slab
        square_m(x + 380, y - 260, 30),  # overlaps the long one at its far end
        square_m(x + 200, y, 50),
        _lonlat(shapely.box(x + 249.995, y, x + 300, y + 50)),  # 5 mm over the last: a sliver, not listed
        square_m(x + 120, y + 120, 20),  # alone
    ]
    features = [parcel(f"{COMMUNITY}03{i:05d}", g) for i, g in enumerate(shapes)]

    def found(body: dict[str, Any]) -> list[Any]:
        return [(e["index"], sorted(n["other_index"] for n in e.get("notes", []))) for e in body["report"]["features"]]

    monkeypatch.setattr(upload_warnings, "_file_candidates", lambda session, cap: None)  # the SQL search
    expected = upload(client, features, dry_run="true")
    assert [i for i, others in found(expected) if others] == [0, 1, 2, 3, 4]
    monkeypatch.undo()
    for slab in (1, 2, 3, 50_000):
        monkeypatch.setattr(upload_warnings, "SLAB", slab)
        body = upload(client, features, dry_run="true")
        assert found(body) == found(expected), slab
        assert warning(body, "overlaps_in_file") == warning(expected, "overlaps_in_file"), slab


def test_layers_allowed_to_overlap_get_no_overlap_warning(client: TestClient, session: Session) -> None:
    from layers.base import REGISTRY, NoOverlap

    assert any(isinstance(r, NoOverlap) for r in REGISTRY["parcels"].rules)
    assert not any(isinstance(r, NoOverlap) for r in REGISTRY["grids"].rules)


def test_the_boundary_checks_find_a_planted_parcel_overlap(client: TestClient, session: Session) -> None:
    from layers.checks import run_checks

    x, y = ORIGIN
    features = [
        parcel(f"{COMMUNITY}0100001", square_m(x, y, 100)),
        parcel(f"{COMMUNITY}0100002", square_m(x + 90, y, 100)),
    ]
    assert upload(client, features)["status"] == "committed"
    found = [f for f in run_checks(session, rules=["overlap"]) if f.rule == "overlap"]
    assert [f.codes for f in found] == [(f"{COMMUNITY}0100001", f"{COMMUNITY}0100002")]
    assert found[0].area_m2 is not None and abs(found[0].area_m2 - 1000) < 5


def test_the_demo_parcels_do_not_overlap(demo: Session) -> None:
    from layers.checks import run_checks

    assert [f.message_en for f in run_checks(demo, rules=["overlap"])] == []


MOMEPY = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "momepy-bubenec" / "bubenec.gpkg"


@pytest.mark.skipif(not MOMEPY.exists(), reason="../shared/data is not beside this checkout")
def test_real_plots_micro_overlaps_are_not_listed(client: TestClient, session: Session) -> None:
    """momepy's Bubenec plots (EPSG:3857) touch with micro-overlaps under 0.03 m²: none is an overlap."""
    import pyogrio

    plots = pyogrio.read_dataframe(MOMEPY, layer="plots")
    shapes = np.array(plots.geometry.values)
    middle = shapely.centroid(shapely.union_all(shapes))
    scale = math.cos(math.radians(50.1))  # Web Mercator metres at Prague's latitude, as ground metres
    x, y = ORIGIN

    def moved(c: Any) -> Any:
        return np.column_stack(FROM_GK.transform(x + (c[:, 0] - middle.x) * scale, y + (c[:, 1] - middle.y) * scale))

    tree = shapely.STRtree(shapes)
    left, right = tree.query(shapes, predicate="intersects")
    areas = shapely.area(shapely.intersection(shapes[left[left < right]], shapes[right[left < right]])) * scale**2
    assert 0 < int((areas > 0).sum()) and float(areas.max()) < 1  # the data has micro-overlaps, all under 1 m²
    features = [parcel(f"{COMMUNITY}07{i:05d}", shapely.transform(g, moved)) for i, g in enumerate(shapes)]
    body = upload(client, features, dry_run="true", mode="valid-only", repair="true")
    assert body["report"]["summary"]["new"] > 300
    assert "overlaps_in_file" not in json.dumps(body["report"], ensure_ascii=False)
