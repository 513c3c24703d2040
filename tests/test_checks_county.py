"""County-wide checks in pieces: per community (or tile), several workers, findings capped, counts exact, progress."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import shapely

from spatial.db import state
from spatial.work import Cancelled, CancelToken
from tests.conftest import ADMIN, act_as_admin, demo_database

PLANTED = ("9000001", "9000002", "9000003")
"""Sequences of the parcels planted: one in a community, one in the next community over it, one naming none."""


@pytest.fixture(scope="module")
def county() -> Iterator[tuple[Engine, list[str]]]:
    """The demo street, with three parcels overlapping one another across two communities and no community."""
    with demo_database("guatu_test_checks_county") as engine:
        with engine.begin() as conn:
            act_as_admin(conn)
            first, second = conn.execute(
                text("SELECT code FROM divisions WHERE length(code) = 12 ORDER BY code LIMIT 2")
            ).scalars()
            x, y = conn.execute(
                text(
                    "SELECT ST_X(p), ST_Y(p) FROM "
                    "(SELECT ST_PointOnSurface(geom) AS p FROM divisions WHERE code = :c) s"
                ),
                {"c": first},
            ).one()
            codes = [first + PLANTED[0], first + PLANTED[1], first + PLANTED[2]]
            shapes = [shapely.box(x, y, x + 0.0004, y + 0.0004), shapely.box(x + 0.0002, y, x + 0.0006, y + 0.0004)]
            shapes.append(shapely.box(x + 0.0001, y + 0.0002, x + 0.0005, y + 0.0006))
            for code, community, shape in zip(codes, [first, second, None], shapes, strict=True):
                conn.execute(
                    text(
                        "INSERT INTO parcels (code, community_code, land_use_code, ownership, use_status, geom) "
                        "VALUES (:code, :c, '0101', '集体', '自用', ST_Multi(ST_GeomFromText(:w, 4490)))"
                    ),
                    {"code": code, "c": community, "w": shape.wkt},
                )
        yield engine, codes


def factory(engine: Engine) -> object:
    @contextmanager
    def opened() -> Iterator[Session]:
        with Session(engine) as session:
            state(session, ADMIN.settings())
            yield session

    return opened


def test_a_county_in_pieces_finds_each_overlap_across_pieces_once_whatever_the_workers(
    county: tuple[Engine, list[str]],
) -> None:
    from layers.checks import check_all

    engine, codes = county
    sessions = factory(engine)
    told: list[tuple[int, int]] = []
    one = check_all(sessions, workers=1, limit=None)  # type: ignore[arg-type]
    two = check_all(sessions, workers=2, limit=None, progress=lambda d, t: told.append((d, t)))  # type: ignore[arg-type]
    assert [f.id for f in one.findings] == [f.id for f in two.findings]  # same findings, same order
    assert [f.as_dict() for f in one.findings] == [f.as_dict() for f in two.findings]
    assert one.pieces > 3  # per community, per tile, per few parents
    planted = [f for f in two.findings if f.rule == "overlap" and set(f.codes) <= set(codes)]
    assert sorted(tuple(sorted(f.codes)) for f in planted) == sorted(
        [(codes[0], codes[1]), (codes[0], codes[2]), (codes[1], codes[2])]
    )  # across two communities, and with the parcel naming none: each pair once, by one piece
    assert all(list(f.codes) == sorted(f.codes) for f in planted)  # in code order, as one pass reports them
    demo_defects = {f.rule for f in two.findings if not set(f.codes) & set(codes)}
    assert {"gap", "overlap", "outside_own_frame"} <= demo_defects
    assert told[0][0] == 0 and told[-1][0] == told[-1][1] == two.features
    assert all(a[0] <= b[0] for a, b in zip(told, told[1:], strict=False))


def test_findings_beyond_the_limit_are_counted_not_listed(county: tuple[Engine, list[str]]) -> None:
    from layers.checks import check_all

    engine, _ = county
    sessions = factory(engine)
    everything = check_all(sessions, workers=2, limit=None)  # type: ignore[arg-type]
    capped = check_all(sessions, workers=2, limit=2)  # type: ignore[arg-type]
    assert everything.total > 2 and len(everything.findings) == everything.total and not everything.truncated
    assert len(capped.findings) == 2 and capped.truncated
    assert capped.counts == everything.counts and capped.errors == everything.errors
    assert [f.id for f in capped.findings] == [f.id for f in everything.findings[:2]]  # the first two, in order


def test_a_cancelled_check_stops(county: tuple[Engine, list[str]]) -> None:
    from layers.checks import check_all

    engine, _ = county
    token = CancelToken()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done:
            token.cancel()  # the client left after the first piece

    with pytest.raises(Cancelled):
        check_all(factory(engine), workers=2, progress=progress, token=token)  # type: ignore[arg-type]
    assert len(seen) >= 2


def test_the_stream_tells_progress_then_the_same_report(client: TestClient, session: Session) -> None:
    from layers import demo

    demo.load(session)
    plain = client.get("/api/checks", params={"limit": 1}).json()
    assert plain["listed"]["listed"] == 1 and plain["listed"]["truncated"] and len(plain["findings"]) == 1
    assert plain["listed"]["total"] == plain["summary"]["errors"] + plain["summary"]["warnings"] >= len(demo.DEFECTS)
    answer = client.get("/api/checks/stream")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in answer.content.splitlines() if line.strip()]
    assert [r["type"] for r in lines][-1] == "result" and lines[-2]["type"] == "progress"
    last = lines[-2]
    assert last["done"] == last["total"] > 0
    body = lines[-1]["body"]
    assert body["summary"] == plain["summary"] and not body["listed"]["truncated"]
    full = client.get("/api/checks").json()
    assert [f["id"] for f in body["findings"]] == [f["id"] for f in full["findings"]]
    geo = [
        orjson.loads(line)
        for line in client.get("/api/checks/stream", params={"format": "geojson"}).content.splitlines()
    ]
    assert geo[-1]["body"]["type"] == "FeatureCollection" and geo[-1]["body"]["summary"] == body["summary"]
    # refused before any line: an unknown rule, an unknown scope
    assert client.get("/api/checks/stream", params={"rules": "nope"}).json()["code"] == "rule_unknown"
    missing = client.get("/api/checks/stream", params={"scope": "370214001099"})
    assert missing.status_code == 404 and missing.json()["code"] == "scope_not_found"
    assert client.get("/api/checks", params={"limit": 0}).status_code == 422


def test_a_database_failure_mid_stream_is_an_error_line_not_a_cut_answer(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the stream's headers are sent a 503 can only be said as a line: the page shows it, not "interrupted"."""
    from sqlalchemy.exc import OperationalError

    from api.routes import checks as route

    def failing(*_: object, **__: object) -> object:
        raise OperationalError("SELECT 1", None, Exception("canceling statement due to statement timeout"))

    monkeypatch.setattr(route, "check_all", failing)
    answer = client.get("/api/checks/stream")
    assert answer.status_code == 200
    lines = [orjson.loads(line) for line in answer.content.splitlines() if line.strip()]
    assert lines[-1]["type"] == "error" and lines[-1]["status"] == 503
    assert lines[-1]["body"]["code"] == "database_unavailable"
    assert "statement timeout" not in answer.text  # the server's words stay in its log


@pytest.mark.parametrize("workers", [1, 2])
def test_a_query_cancelled_because_the_client_left_is_cancelled_not_a_database_error(
    county: tuple[Engine, list[str]], monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """The token cancels the running query: PostgreSQL's "canceling statement" must not surface as a 503."""
    from sqlalchemy.exc import OperationalError

    from layers import checks

    engine, _ = county
    token = CancelToken()

    def cancelled_midway(*_: object) -> object:
        token.cancel()
        raise OperationalError("SELECT 1", None, Exception("canceling statement due to user request"))

    monkeypatch.setattr(checks, "_piece", cancelled_midway)
    with pytest.raises(Cancelled):
        checks.check_all(factory(engine), workers=workers, token=token)  # type: ignore[arg-type]
