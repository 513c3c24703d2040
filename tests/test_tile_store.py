"""Tiles from the read pool and the tile store on disk: each area sees only its own, cached, stored or not.

The suite's `client` reads tiles through its rolled-back session (tests/conftest.py); these
tests serve committed data from live servers, as `guatu serve` does: the psycopg pool, the
pipelined round trip, the store shared by two apps (two worker processes), gzip.
"""

from __future__ import annotations

import gzip
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mapbox_vector_tile
import pytest
from sqlalchemy.engine import Engine

from api.main import create_app
from api.routes import tiles as route
from api.settings import ApiSettings
from layers.tiles import Tile, TileStore
from tests.accounts import ANY_VERSION, bearer, tokens_for
from tests.browser import live_app
from tests.conftest import migrated_database, owner_url
from tests.samples import COMMUNITY, X0, Y0, polygon, sample

DATABASE = "guatu_test_tile_store"
INSIDE = ("admin", "planner", "surveyor9")
"""Users whose area holds the sample community (the whole county, its street, the community itself)."""
OUTSIDE = ("planner2", "surveyor")
"""Users of another street, of another community of the same street."""


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return z, int((lon + 180) / 360 * n), int(y)


def ids_in(response: httpx.Response) -> set[int]:
    if response.status_code == 204:
        return set()
    assert response.status_code == 200, response.text
    layers = mapbox_vector_tile.decode(response.content)
    return {f["id"] for f in layers["parcels"]["features"]} if "parcels" in layers else set()


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with migrated_database(DATABASE) as eng:
        yield eng


@pytest.fixture(scope="module")
def tokens(engine: Engine) -> dict[str, str]:
    return tokens_for(owner_url(DATABASE), DATABASE)


@pytest.fixture(scope="module")
def parcel_id(engine: Engine, tokens: dict[str, str]) -> int:
    """One committed parcel in the sample community (with its community and grid)."""
    app = create_app(ApiSettings(tile_store_mb=0), engine=engine)
    admin = bearer(tokens["admin"])
    with live_app(app) as base:
        for layer in ("divisions", "grids"):
            assert (
                httpx.post(f"{base}/api/layers/{layer}/features", json=sample(layer), headers=admin).status_code == 201
            )
        feature = sample("parcels")
        feature["geometry"] = polygon(X0, Y0, X0 + 0.001, Y0 + 0.0009)
        made = httpx.post(f"{base}/api/layers/parcels/features", json=feature, headers=admin)
        assert made.status_code == 201, made.text
        return int(made.json()["id"])


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Count the tiles the read pool renders (every app of this process)."""
    done: list[tuple[int, int, int]] = []
    real = route.PoolTiles.render

    async def counted(self: route.PoolTiles, layer, address, flt):  # type: ignore[no-untyped-def]
        done.append((address.z, address.x, address.y))
        return await real(self, layer, address, flt)

    monkeypatch.setattr(route.PoolTiles, "render", counted)
    return done


def test_each_area_gets_only_its_own_tiles_rendered_cached_or_stored(
    engine: Engine, tokens: dict[str, str], parcel_id: int, tmp_path: Path, renders: list
) -> None:
    settings = ApiSettings(tile_store_dir=tmp_path / "store", tile_store_max_zoom=14)
    low, high = tile_of(X0 + 0.0005, Y0 + 0.0004, 14), tile_of(X0 + 0.0005, Y0 + 0.0004, 16)
    with live_app(create_app(settings, engine=engine)) as base:
        for z, x, y in (low, high):
            url = f"{base}/tiles/parcels/{z}/{x}/{y}.pbf"
            # an outsider first (an empty tile kept for that area), then insiders, then outsiders again
            for user in (*OUTSIDE, *INSIDE, *OUTSIDE, *INSIDE):
                seen = ids_in(httpx.get(url, headers=bearer(tokens[user])))
                assert seen == ({parcel_id} if user in INSIDE else set()), (user, z)
    stored = list((tmp_path / "store").rglob("*.mvt"))
    assert {p.parts[-3] for p in stored} == {"14"}  # z14 is kept on disk, z16 is not
    visibilities = len(INSIDE) + len(OUTSIDE)  # all, a street, a community, another street, another community
    assert len({p.parts[-4] for p in stored}) == visibilities
    assert len(renders) == 2 * visibilities  # once per tile and visibility; every other answer was kept

    # another worker process sharing the store: z14 from disk for every area, nothing rendered
    renders.clear()
    with live_app(create_app(settings.model_copy(update={"tile_cache_size": 0}), engine=engine)) as other:
        url = "{}/tiles/parcels/{}/{}/{}.pbf".format(other, *low)
        for user in (*INSIDE, *OUTSIDE):
            seen = ids_in(httpx.get(url, headers=bearer(tokens[user])))
            assert seen == ({parcel_id} if user in INSIDE else set()), user
    assert renders == []


def test_a_write_retires_the_stored_generation_in_every_worker(
    engine: Engine, tokens: dict[str, str], parcel_id: int, tmp_path: Path, renders: list
) -> None:
    settings = ApiSettings(tile_store_dir=tmp_path / "store", tile_store_max_zoom=14)
    admin = bearer(tokens["admin"])
    z, x, y = tile_of(X0 + 0.0005, Y0 + 0.0004, 14)
    one, two = create_app(settings, engine=engine), create_app(settings, engine=engine)
    with live_app(one) as first, live_app(two) as second:
        path = f"/tiles/parcels/{z}/{x}/{y}.pbf"
        before = httpx.get(first + path, headers=admin)
        assert (
            before.status_code == 200
            and httpx.get(second + path, headers=admin).headers["etag"] == before.headers["etag"]
        )
        generation = before.headers["etag"].strip('"').split("-")[0]
        folder = next((tmp_path / "store").glob(f"*/parcels/{generation}"))
        listed = httpx.get(f"{first}/api/layers/parcels/features/{parcel_id}", headers=admin).json()
        edited = {"type": "Feature", "geometry": listed["geometry"], "properties": dict(listed["properties"])}
        edited["properties"]["name"] = "改名地块"
        for key in ("area_m2", "area_mu", "updated_at"):
            edited["properties"].pop(key, None)
        changed = httpx.put(
            f"{second}/api/layers/parcels/features/{parcel_id}", json=edited, headers=admin | ANY_VERSION
        )
        assert changed.status_code == 200, changed.text
        after = httpx.get(first + path, headers=admin | {"If-None-Match": before.headers["etag"]})
        assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
        props = mapbox_vector_tile.decode(after.content)["parcels"]["features"][0]["properties"]
        assert props["name"] == "改名地块"  # the stored tile of the older generation was not served
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not folder.exists()  # pruned
        assert httpx.get(second + path, headers=admin).headers["etag"] == after.headers["etag"]


def test_tiles_are_gzipped_when_asked_and_revalidate_either_way(
    engine: Engine, tokens: dict[str, str], parcel_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(route, "GZIP_FROM", 0)  # the sample parcel's tile is small
    settings = ApiSettings(tile_store_dir=tmp_path / "store")
    admin = bearer(tokens["admin"])
    z, x, y = tile_of(X0 + 0.0005, Y0 + 0.0004, 15)
    with live_app(create_app(settings, engine=engine)) as base, httpx.Client(headers=admin) as client:
        url = f"{base}/tiles/parcels/{z}/{x}/{y}.pbf"
        plain = client.get(url, headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        assert "Accept-Encoding" in plain.headers["vary"]
        with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as packed:
            body = b"".join(packed.iter_raw())
            assert (
                packed.headers["content-encoding"] == "gzip" and packed.headers["etag"] == "W/" + plain.headers["etag"]
            )
        assert gzip.decompress(body) == plain.content
        for etag in (plain.headers["etag"], "W/" + plain.headers["etag"]):
            for encoding in ("gzip", "identity"):
                again = client.get(url, headers={"Accept-Encoding": encoding, "If-None-Match": etag})
                assert again.status_code == 304 and again.content == b""


def test_the_store_keeps_one_whole_file_under_concurrent_writers_and_empties_at_its_cap(tmp_path: Path) -> None:
    store = TileStore(tmp_path, max_bytes=1_000_000, max_zoom=14)
    address = Tile(14, 13670, 6250)
    bodies = [bytes([n]) * 3000 for n in range(8)]

    def write(n: int) -> None:
        for _ in range(20):
            store.put("ns", "parcels", 3, "v", address, bodies[n], f"{n:020d}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = store.get("ns", "parcels", 3, "v", address)
    assert found is not None and (found[0], found[1]) in [(bodies[n], f"{n:020d}") for n in range(2)]
    assert store.get("ns", "parcels", 2, "v", address) is None  # never another generation's
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    store.put("ns", "parcels", 3, "v", Tile(14, 2, 2), bodies[1], "1" * 20)
    store.max_bytes, store.used = 10_000, 9_000
    store.put("ns", "parcels", 3, "v", Tile(14, 1, 1), bodies[0], "0" * 20)
    assert store.get("ns", "parcels", 3, "v", Tile(14, 1, 1)) is None  # full: not kept, and the store emptied
    deadline = time.monotonic() + 10
    while store._emptying:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert store.get("ns", "parcels", 3, "v", Tile(14, 2, 2)) is None and store.used == 0
    assert not list(tmp_path.rglob("*.mvt"))  # nothing left on disk, not even in the trash
    store.put("ns", "parcels", 3, "v", address, bodies[2], "2" * 20)  # room again
    assert store.get("ns", "parcels", 3, "v", address) == (bodies[2], "2" * 20)
    assert not store.keeps(Tile(15, 0, 0))
    store.retire("ns", "parcels", 4)
    assert store.get("ns", "parcels", 3, "v", address) is None
    assert COMMUNITY  # the sample community the module's parcel lies in


def test_filtered_tiles_are_never_kept_on_disk(
    engine: Engine, tokens: dict[str, str], parcel_id: int, tmp_path: Path
) -> None:
    """A filter's values are the asker's to choose: one user looping over them must not fill the disk."""
    settings = ApiSettings(tile_store_dir=tmp_path / "store", tile_store_max_zoom=14)
    z, x, y = tile_of(X0 + 0.0005, Y0 + 0.0004, 14)
    admin = bearer(tokens["admin"])
    with live_app(create_app(settings, engine=engine)) as base:
        url = f"{base}/tiles/parcels/{z}/{x}/{y}.pbf"
        for scope in (COMMUNITY, COMMUNITY[:9], COMMUNITY[:6]):
            assert ids_in(httpx.get(url, params={"scope": scope}, headers=admin)) == {parcel_id}, scope
        assert not list((tmp_path / "store").rglob("*.mvt"))
        assert ids_in(httpx.get(url, headers=admin)) == {parcel_id}
    assert len(list((tmp_path / "store").rglob("*.mvt"))) == 1  # the unfiltered tile is kept


def test_a_read_pool_that_cannot_open_is_the_database_error_and_is_not_left_behind() -> None:
    """A server that does not answer: the app's database error (503), not a 500, and no pool connecting for ever."""
    import asyncio

    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as EnginePoolTimeout

    from spatial.pool import ReadPool
    from tests.browser import free_port

    nowhere = ReadPool(f"postgresql://guatu_app@127.0.0.1:{free_port()}/guatu", {}, timeout_s=1)
    tiles = route.PoolTiles(nowhere, {})

    async def ask() -> None:
        for _ in range(2):
            with pytest.raises((OperationalError, EnginePoolTimeout)):
                await tiles.generation("parcels")
            assert nowhere._pool is None  # closed, not kept trying in the background

    asyncio.run(ask())
