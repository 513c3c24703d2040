"""Tiles, extents and ETags follow every committed write, whichever process made it (the CLI, another worker, SQL).

Each test here commits for real, in a database of its own: a layer's generation is raised as
a writer commits, which the suite's rolled-back transaction never does.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import mapbox_vector_tile
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from api.main import create_app
from layers.base import REGISTRY
from tests.accounts import ANY_VERSION
from tests.browser import live_app, live_server
from tests.conftest import act_as_admin, admin_url, app_url, libpq, migrated_database, owner_url
from tests.samples import COMMUNITY, X0, Y0, polygon, sample
from tests.test_cli import run

DATABASE = "guatu_test_generations"


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return z, int((lon + 180) / 360 * n), int(y)


def parcel(n: int, x0: float, y0: float, x1: float, y1: float) -> dict:
    feature = sample("parcels")
    feature["geometry"] = polygon(x0, y0, x1, y1)
    feature["properties"]["code"] = COMMUNITY + f"01{n:05d}"
    feature["properties"]["name"] = f"地块{n}"
    return feature


def ids_in(response: httpx.Response) -> set[int]:
    if response.status_code == 204:
        return set()
    assert response.status_code == 200, response.text
    layers = mapbox_vector_tile.decode(response.content)
    return {f["id"] for f in layers["parcels"]["features"]} if "parcels" in layers else set()


def generation(url: str, layer_id: str) -> int:
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute("SELECT generation FROM layer_generations WHERE layer = %s", (layer_id,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """Return the app's engine on a database of this module's, holding the sample community and grid."""
    with migrated_database(DATABASE) as eng:
        with live_server(eng) as base:
            for layer in ("divisions", "grids"):
                assert httpx.post(f"{base}/api/layers/{layer}/features", json=sample(layer)).status_code == 201
        yield eng


@pytest.fixture
def clean(engine: Engine) -> Iterator[Engine]:
    """Leave no parcels behind (plain SQL, committed: that too raises the generation)."""
    yield engine
    with engine.begin() as conn:
        act_as_admin(conn)
        conn.execute(text("DELETE FROM parcels"))


def test_a_cli_import_reaches_the_running_servers_tiles_extent_and_etags(clean: Engine, tmp_path: Path) -> None:
    """Seen: a parcel `guatu import`ed into a z17 tile was missing from the running server's tile."""
    with live_server(clean) as base:
        first = httpx.post(f"{base}/api/layers/parcels/features", json=parcel(1, X0, Y0, X0 + 0.001, Y0 + 0.0009))
        assert first.status_code == 201, first.text
        z, x, y = tile_of(X0 + 0.0013, Y0 + 0.0002, 17)
        here = f"{base}/tiles/parcels/{z}/{x}/{y}.pbf"
        before = httpx.get(here)
        assert ids_in(before) == {first.json()["id"]}
        etag = before.headers["etag"]
        assert httpx.get(here, headers={"If-None-Match": etag}).status_code == 304
        far_lon, far_lat = X0 + 0.0032, Y0 + 0.0032  # beyond the layer's extent so far
        far = "{}/tiles/parcels/{}/{}/{}.pbf".format(base, *tile_of(far_lon, far_lat, 17))
        assert httpx.get(far).status_code == 204  # answered from the extent the server now keeps
        west, south, east, north = httpx.get(f"{base}/tiles/parcels.json").json()["bounds"]
        assert east < far_lon and north < far_lat

        path = tmp_path / "parcels.geojson"
        imported = [
            parcel(2, X0 + 0.0011, Y0, X0 + 0.0015, Y0 + 0.0004),  # in the tile fetched above
            parcel(3, far_lon - 0.0002, far_lat - 0.0002, far_lon + 0.0002, far_lat + 0.0002),
        ]
        path.write_text(json.dumps({"type": "FeatureCollection", "features": imported}, ensure_ascii=False))
        done = run("import", str(path), "--layer", "parcels", url=admin_url(DATABASE))
        assert done.returncode == 0 and "新增 2" in done.stderr, done.stderr

        listed = httpx.get(f"{base}/api/layers/parcels/features").json()["features"]
        by_name = {f["properties"]["name"]: f["id"] for f in listed}
        after = httpx.get(here, headers={"If-None-Match": etag})
        assert after.status_code == 200 and after.headers["etag"] != etag
        assert ids_in(after) == {by_name["地块1"], by_name["地块2"]}
        assert ids_in(httpx.get(far)) == {by_name["地块3"]}
        west, south, east, north = httpx.get(f"{base}/tiles/parcels.json").json()["bounds"]
        assert east >= far_lon + 0.0002 - 1e-9 and north >= far_lat + 0.0002 - 1e-9


def test_two_servers_on_one_database_agree_after_a_write_through_either(clean: Engine) -> None:
    """Two workers (two apps, each with its own cache) see each other's writes at once."""
    apps = [create_app(engine=clean), create_app(engine=clean)]
    with live_app(apps[0]) as one, live_app(apps[1]) as two:
        z, x, y = tile_of(X0 + 0.0005, Y0 + 0.0004, 17)
        path = f"/tiles/parcels/{z}/{x}/{y}.pbf"
        for base in (one, two):
            assert httpx.get(base + path).status_code == 204  # an empty layer: both keep that
        made = httpx.post(f"{one}/api/layers/parcels/features", json=parcel(1, X0, Y0, X0 + 0.001, Y0 + 0.0009))
        assert made.status_code == 201
        answers = [httpx.get(base + path) for base in (two, one)]
        assert [ids_in(a) for a in answers] == [{made.json()["id"]}] * 2
        assert answers[0].headers["etag"] == answers[1].headers["etag"]  # a proxy may send a client to either

        gone = httpx.delete(f"{two}/api/layers/parcels/features/{made.json()['id']}", headers=ANY_VERSION)
        assert gone.status_code == 204
        for base in (one, two):
            answer = httpx.get(base + path, headers={"If-None-Match": answers[0].headers["etag"]})
            assert answer.status_code == 204 and answer.headers["etag"] != answers[0].headers["etag"]
            assert httpx.get(f"{base}/tiles/parcels.json").json()["bounds"][0] == -180  # no extent any more


def test_a_plain_sql_write_raises_the_generation_once_per_commit(clean: Engine) -> None:
    url = app_url(DATABASE)
    start = generation(url, "parcels")
    with psycopg.connect(libpq(url)) as conn:  # as the app role, as an operator's script might
        conn.execute("UPDATE parcels SET name = name")
        conn.execute("UPDATE parcels SET name = name")
        conn.execute("UPDATE shops SET name = name")
        assert generation(url, "parcels") == start  # not before it commits
    assert generation(url, "parcels") == start + 1  # one transaction, one step
    with psycopg.connect(libpq(url)) as conn:
        conn.execute("UPDATE parcels SET name = name")
        conn.rollback()
        with conn.transaction():
            conn.execute("SAVEPOINT s")
            conn.execute("UPDATE parcels SET name = name")
            conn.execute("ROLLBACK TO SAVEPOINT s")
    assert generation(url, "parcels") == start + 1  # nothing committed, nothing raised
    with psycopg.connect(libpq(owner_url(DATABASE))) as owner:  # the owner may truncate
        owner.execute("TRUNCATE zones")
    assert generation(url, "zones") >= 1


def test_a_long_writer_holds_up_no_other_writer_of_its_layer(clean: Engine) -> None:
    """The counter is raised as a writer commits: an upload still running blocks nobody's edit."""
    url = app_url(DATABASE)
    start = generation(url, "parcels")
    with psycopg.connect(libpq(url)) as long_one:
        long_one.execute("UPDATE parcels SET name = name")  # an upload's first chunk, say
        with psycopg.connect(libpq(url)) as edit:
            edit.execute("SET lock_timeout = '2s'")
            edit.execute("UPDATE parcels SET name = name")
        assert generation(url, "parcels") == start + 1
    assert generation(url, "parcels") == start + 2


def test_commits_of_the_same_layers_in_opposite_orders_do_not_deadlock(clean: Engine) -> None:
    url = app_url(DATABASE)
    start = {layer: generation(url, layer) for layer in ("parcels", "shops")}
    failures: list[BaseException] = []

    def writer(first: str, second: str) -> None:
        try:
            for _ in range(30):
                with psycopg.connect(libpq(url)) as conn:
                    conn.execute(f"UPDATE {first} SET name = name")
                    conn.execute(f"UPDATE {second} SET name = name")
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=pair) for pair in (("parcels", "shops"), ("shops", "parcels"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert {layer: generation(url, layer) - n for layer, n in start.items()} == {"parcels": 60, "shops": 60}


def test_every_layer_table_raises_its_generation(clean: Engine) -> None:
    """A new layer's migration must call `layers.generations.track_writes` for its table."""
    with clean.connect() as conn:
        tracked = dict(
            conn.execute(
                text(
                    "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE t.tgfoid = 'guatu_note_layer_write'::regproc"
                )
            ).all()
        )
    assert tracked == {layer.table: f"{layer.table}_generation" for layer in REGISTRY.values()}


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE layer_generations SET generation = 0",
        "SELECT * FROM layer_generation_marks",
        "DELETE FROM layer_generations",
    ],
)
def test_the_app_role_only_reads_the_generations(clean: Engine, statement: str) -> None:
    with psycopg.connect(libpq(app_url(DATABASE))) as conn:
        assert conn.execute("SELECT count(*) FROM layer_generations").fetchone() == (len(REGISTRY),)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_the_reader_replaces_a_connection_the_server_dropped(clean: Engine) -> None:
    from layers.generations import Reader

    read = Reader(clean)
    before = read("parcels")
    pid = read._held[0].info.backend_pid
    with clean.connect() as conn:  # as after a server restart: the reader's connection is gone
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        conn.execute(text("UPDATE parcels SET name = name"))
        conn.commit()
    assert read("parcels") == before + 1
    assert read._held[0].info.backend_pid != pid
    read.close()
    assert read._held == []
