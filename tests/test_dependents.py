"""A unit others still name cannot be deleted or recoded: 409 with the counts, and plain SQL is refused too."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from layers import demo
from layers.base import REGISTRY, references
from tests.accounts import ANY_VERSION
from tests.samples import COMMUNITY, GRID, complete, sample

DEMO_COMMUNITY = "370214001006"


def fid(session: Session, table: str, code: str) -> int:
    return int(session.execute(text(f"SELECT id FROM {table} WHERE code = :c"), {"c": code}).scalar_one())


def test_deleting_a_community_with_grids_and_parcels_is_refused_with_the_counts(
    client: TestClient, session: Session
) -> None:
    demo.load(session)
    session.flush()
    counts = {
        f"{table}.community_code": session.execute(
            text(f"SELECT count(*) FROM {table} WHERE community_code = :c"), {"c": DEMO_COMMUNITY}
        ).scalar_one()
        for table in sorted({r.child for r in references() if r.parent == "divisions" and r.child != "divisions"})
    }
    expected = {k: v for k, v in counts.items() if v}
    assert expected["grids.community_code"] > 0 and expected["parcels.community_code"] > 0
    community = fid(session, "divisions", DEMO_COMMUNITY)
    response = client.delete(f"/api/layers/divisions/features/{community}", headers=ANY_VERSION)
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["code"] == "has_dependents"
    assert body["details"]["dependents"] == expected
    assert f"{expected['grids.community_code']} 个网格" in body["message"]
    assert client.get(f"/api/layers/divisions/features/{community}").status_code == 200  # still there


def test_recoding_a_grid_that_parcels_name_is_refused(client: TestClient, session: Session) -> None:
    for layer_id in ("divisions", "grids", "parcels"):
        assert client.post(f"/api/layers/{layer_id}/features", json=sample(layer_id)).status_code == 201
    grid = fid(session, "grids", GRID)
    recoded = sample("grids")
    recoded["properties"]["code"] = COMMUNITY + "002"
    response = client.put(f"/api/layers/grids/features/{grid}", json=complete(recoded, "grids"), headers=ANY_VERSION)
    assert response.status_code == 409, response.text
    assert response.json()["details"]["dependents"] == {"parcels.grid_code": 1}
    renamed = sample("grids")
    renamed["properties"]["name"] = "改名不改码"
    renamed = complete(renamed, "grids")
    assert client.put(f"/api/layers/grids/features/{grid}", json=renamed, headers=ANY_VERSION).status_code == 200


def test_a_homestead_parcel_named_by_a_zone_is_kept_until_the_zone_goes(client: TestClient, session: Session) -> None:
    for layer_id in ("divisions", "grids", "parcels", "zones"):
        assert client.post(f"/api/layers/{layer_id}/features", json=sample(layer_id)).status_code == 201
    parcel = fid(session, "parcels", sample("parcels")["properties"]["code"])
    refused = client.delete(f"/api/layers/parcels/features/{parcel}", headers=ANY_VERSION)
    assert refused.status_code == 409 and refused.json()["details"]["dependents"] == {"zones.homestead_parcel_code": 1}
    zone = fid(session, "zones", sample("zones")["properties"]["code"])
    assert client.delete(f"/api/layers/zones/features/{zone}", headers=ANY_VERSION).status_code == 204
    assert client.delete(f"/api/layers/parcels/features/{parcel}", headers=ANY_VERSION).status_code == 204
    grid = fid(session, "grids", GRID)
    assert (
        client.delete(f"/api/layers/grids/features/{grid}", headers=ANY_VERSION).status_code == 204
    )  # nothing names it now


def test_plain_sql_cannot_orphan_either(session: Session) -> None:
    demo.load(session)
    session.flush()
    for statement in (
        "DELETE FROM divisions WHERE code = :c",
        "UPDATE divisions SET code = '370214001099' WHERE code = :c",
    ):
        with pytest.raises(IntegrityError) as caught, session.begin_nested():
            session.execute(text(statement), {"c": DEMO_COMMUNITY})
        assert caught.value.orig.diag.constraint_name == "guatu_has_dependents"
    orphans = session.execute(
        text(
            "SELECT count(*) FROM parcels p "
            "WHERE NOT EXISTS (SELECT 1 FROM divisions d WHERE d.code = p.community_code)"
        )
    ).scalar_one()
    assert orphans == 0


def test_the_database_holds_every_link_the_declarations_state(session: Session) -> None:
    rows = session.execute(
        text(
            """
            SELECT c.relname, t.tgargs FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE t.tgname LIKE '%_keep_dependents' AND t.tgparentid = 0  -- not the copies on a county's table
            """
        )
    ).all()
    held = set()
    for table, args in rows:
        parts = bytes(args).split(b"\x00")[:-1]
        held.update((table, parts[i].decode(), parts[i + 1].decode()) for i in range(0, len(parts), 2))
    declared = {(r.parent, r.child, r.field) for r in references()}
    assert held == declared
    for _, child, field in declared:
        assert REGISTRY[child].field(field).index or field in REGISTRY[child].key, (child, field)


def test_a_temporary_table_cannot_stand_in_for_a_real_one(session: Session) -> None:
    """The app may make temporary tables (uploads stage in one): the triggers must not read or write those."""
    demo.load(session)
    session.flush()
    named = session.execute(
        text("SELECT homestead_parcel_code FROM zones WHERE homestead_parcel_code IS NOT NULL LIMIT 1")
    ).scalar_one()
    session.execute(text("CREATE TEMPORARY TABLE zones (homestead_parcel_code text) ON COMMIT DROP"))
    with pytest.raises(IntegrityError) as caught, session.begin_nested():
        session.execute(text("DELETE FROM parcels WHERE code = :c"), {"c": named})
    assert caught.value.orig.diag.constraint_name == "guatu_has_dependents"
    before = session.execute(text("SELECT count(*) FROM public.grids_versions")).scalar_one()
    session.execute(text("CREATE TEMPORARY TABLE grids_versions AS SELECT * FROM public.grids_versions WITH NO DATA"))
    session.execute(text("UPDATE grids SET name = name || '（调整）' WHERE code = '370214001006001'"))
    assert session.execute(text("SELECT count(*) FROM public.grids_versions")).scalar_one() == before + 1
    assert session.execute(text("SELECT count(*) FROM pg_temp.grids_versions")).scalar_one() == 0
