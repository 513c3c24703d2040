"""The problem ledger: the workflow is the database's (illegal moves, verifier ≠ rectifier, an immutable log),
photos are content-addressed and shown only to who may see them, rows are kept to the user's area."""

from __future__ import annotations

import datetime as dt
import struct
import time
import zlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session

from layers import archive, features, problems
from layers.access import Actor
from layers.base import REGISTRY
from spatial.db import make_engine, state
from tests.accounts import SAMPLE_GRID, bearer
from tests.conftest import ADMIN, owner_url
from tests.samples import X0, Y0, sample

INSIDE = (X0 + 0.001, Y0 + 0.001)
"""A place in the sample grid (gridman9's, in surveyor9's community, in planner's street)."""


def png(seed: int = 0) -> bytes:
    """Return a small real PNG (one pixel whose colour is SEED)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixel = bytes([0, seed % 256, (seed // 256) % 256, 120])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(pixel))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def frame(session: Session) -> None:
    """Store the sample community, grid and parcel (as an administrator)."""
    state(session, ADMIN.settings())
    for layer_id in ("divisions", "grids", "parcels"):
        features.create_feature(session, REGISTRY[layer_id], sample(layer_id))
    session.flush()


def as_user(tokens: dict[str, str], username: str) -> dict[str, str]:
    return bearer(tokens[username])


def report(client: TestClient, tokens: dict[str, str], username: str = "gridman9", **extra: Any) -> Any:
    body = {"type": "环境卫生", "description": "垃圾堆放", "lon": INSIDE[0], "lat": INSIDE[1]} | extra
    return client.post("/api/problems", json=body, headers=as_user(tokens, username))


def photo(client: TestClient, tokens: dict[str, str], username: str, seed: int, phase: str = "整改前") -> str:
    sent = client.post(
        "/api/problems/photos",
        params={"phase": phase},
        content=png(seed),
        headers=as_user(tokens, username) | {"Content-Type": "image/png"},
    )
    assert sent.status_code == 201, sent.text
    return str(sent.json()["id"])


def move(client: TestClient, tokens: dict[str, str], username: str, pid: int, action: str, **extra: Any) -> Any:
    return client.post(
        f"/api/problems/{pid}/events", json={"action": action} | extra, headers=as_user(tokens, username)
    )


def events(session: Session) -> int:
    state(session, ADMIN.settings())
    return int(session.execute(text("SELECT count(*) FROM problem_events")).scalar() or 0)


def test_the_whole_cycle_with_verifier_not_rectifier(
    client: TestClient, tokens: dict[str, str], session: Session, frame: None
) -> None:
    before = photo(client, tokens, "gridman9", 1)
    made = report(client, tokens, photos=[before])
    assert made.status_code == 201, made.text
    problem = made.json()
    pid = problem["id"]
    assert problem["status"] == "已登记" and problem["area"] == SAMPLE_GRID and problem["reporter"] == "gridman9"
    assert problem["number"] == f"WT-{dt.date.today().year}-{pid:06d}"
    assert [e["action"] for e in problem["events"]] == ["登记"] and problem["events"][0]["photos"] == [before]
    # a grid manager cannot assign; the planner assigns to himself (so he rectifies)
    assert move(client, tokens, "gridman9", pid, "交办", assignee="planner", deadline="2030-01-01").json()["code"] == (
        "role_not_permitted"
    )
    deadline = (dt.date.today() + dt.timedelta(days=10)).isoformat()
    elsewhere = move(client, tokens, "planner", pid, "交办", assignee="planner2", deadline=deadline)  # another street
    assert elsewhere.status_code == 422 and elsewhere.json()["code"] == "assignee_outside_area"
    assert client.get(f"/api/problems/{pid}", headers=as_user(tokens, "planner2")).status_code == 404  # still unseen
    assigned = move(client, tokens, "planner", pid, "交办", assignee="planner", unit="城管中队", deadline=deadline)
    assert assigned.status_code == 201, assigned.text
    assert assigned.json()["status"] == "已交办" and assigned.json()["unit"] == "城管中队"
    assert move(client, tokens, "planner", pid, "整改").json()["status"] == "整改中"
    no_photo = move(client, tokens, "planner", pid, "提交验收")
    assert no_photo.status_code == 422 and no_photo.json()["code"] == "after_photo_required"
    after = photo(client, tokens, "planner", 2, "整改后")
    submitted = move(client, tokens, "planner", pid, "提交验收", photos=[after], note="已清理")
    assert submitted.json()["status"] == "待验收" and submitted.json()["rectifier"] == "planner"
    assert "销号" not in submitted.json()["actions"]  # the page offers nothing the database would refuse
    kept = events(session)
    refused = move(client, tokens, "planner", pid, "销号")
    assert refused.status_code == 409 and refused.json()["code"] == "verifier_is_rectifier"
    assert events(session) == kept  # nothing written
    returned = move(client, tokens, "admin", pid, "退回", note="照片不清楚")
    assert returned.json()["status"] == "整改中"
    move(client, tokens, "planner", pid, "提交验收", photos=[after])
    closed = move(client, tokens, "admin", pid, "销号")
    assert closed.status_code == 201 and closed.json()["status"] == "已销号" and closed.json()["light"] == "grey"
    log = closed.json()["events"]
    assert [(e["action"], e["from"], e["to"], e["actor"]) for e in log] == [
        ("登记", None, "已登记", "gridman9"),
        ("交办", "已登记", "已交办", "planner"),
        ("整改", "已交办", "整改中", "planner"),
        ("提交验收", "整改中", "待验收", "planner"),
        ("退回", "待验收", "整改中", "admin"),
        ("提交验收", "整改中", "待验收", "planner"),
        ("销号", "待验收", "已销号", "admin"),
    ]
    assert closed.json()["closed_at"] is not None


def test_an_illegal_transition_is_refused_with_a_code_and_writes_nothing(
    client: TestClient, tokens: dict[str, str], session: Session, frame: None
) -> None:
    pid = report(client, tokens).json()["id"]
    kept = events(session)
    for action in ("销号", "提交验收", "退回", "整改"):
        answer = move(client, tokens, "admin", pid, action)
        assert answer.status_code == 409 and answer.json()["code"] == "illegal_transition", answer.text
        assert "已登记" in answer.json()["message"]
    unknown = move(client, tokens, "admin", pid, "拆除")
    assert unknown.status_code == 422 and unknown.json()["code"] == "action_invalid"
    assert events(session) == kept
    assert client.get(f"/api/problems/{pid}").json()["status"] == "已登记"


def _submitted_by(session: Session, username: str, role: str, area: str | None) -> int:
    """Return a problem moved, as USERNAME, to 待验收 through the log (raw SQL as the app's role)."""
    actor = Actor(None, username, role, area)
    state(session, actor.settings())
    sha = "ab" * 32
    session.execute(
        text(
            "INSERT INTO problem_photos (sha256, phase, content_type, size_bytes, uploader) VALUES (:s, :p, :t, 1, :u)"
        ),
        {"s": sha, "p": "整改后", "t": "image/png", "u": username},
    )
    pid = session.execute(
        text(
            "INSERT INTO problems (number, source, type, description, geom, area, reporter) "
            "VALUES ('', '巡查', '其他', '原始 SQL', ST_SetSRID(ST_MakePoint(:x, :y), 4490), :a, '') RETURNING id"
        ),
        {"x": INSIDE[0], "y": INSIDE[1], "a": SAMPLE_GRID},
    ).scalar()
    for action, extra in (
        ("交办", {"assignee": username, "deadline": dt.date(2030, 1, 1)}),
        ("整改", {}),
        ("提交验收", {}),
    ):
        session.execute(
            text(
                "INSERT INTO problem_events (problem_id, action, assignee, deadline, photos) "
                "VALUES (:p, :a, :who, :d, CAST(:ph AS varchar[]))"
            ),
            {"p": pid, "a": action, "who": extra.get("assignee"), "d": extra.get("deadline"), "ph": [sha]},
        )
    return int(pid or 0)


def test_the_database_refuses_verifier_is_rectifier_even_to_raw_sql_as_the_app(
    session: Session, tokens: dict[str, str], frame: None
) -> None:
    assert session.execute(text("SELECT current_user")).scalar() == "guatu_app"
    pid = _submitted_by(session, "planner", "planner", "370214001")
    with pytest.raises(DBAPIError) as refused, session.begin_nested():
        session.execute(text("INSERT INTO problem_events (problem_id, action) VALUES (:p, '销号')"), {"p": pid})
    assert getattr(refused.value.orig, "sqlstate", None) == "GT409"
    assert "verifier_is_rectifier" in str(refused.value.orig)
    with pytest.raises(DBAPIError, match="illegal_transition"), session.begin_nested():
        session.execute(text("INSERT INTO problem_events (problem_id, action) VALUES (:p, '交办')"), {"p": pid})
    with pytest.raises(DBAPIError, match="permission denied"), session.begin_nested():
        session.execute(text("UPDATE problems SET state = '已销号' WHERE id = :p"), {"p": pid})
    state(session, Actor(None, "admin", "admin").settings())  # another person closes it
    session.execute(text("INSERT INTO problem_events (problem_id, action) VALUES (:p, '销号')"), {"p": pid})
    assert session.execute(text("SELECT state FROM problems WHERE id = :p"), {"p": pid}).scalar() == "已销号"


def test_the_log_cannot_be_changed_by_the_app(session: Session, tokens: dict[str, str], frame: None) -> None:
    pid = _submitted_by(session, "planner", "planner", "370214001")
    for statement in (
        "UPDATE problem_events SET note = '改写' WHERE problem_id = :p",
        "DELETE FROM problem_events WHERE problem_id = :p",
        "TRUNCATE problem_events CASCADE",
    ):
        with pytest.raises(ProgrammingError, match="permission denied"), session.begin_nested():
            session.execute(text(statement), {"p": pid})


def test_the_log_cannot_be_changed_even_by_the_owner(engine: Engine) -> None:
    """Raw SQL as the owner (who could change any table): UPDATE, DELETE and TRUNCATE of the log are refused."""
    owner = make_engine(url=owner_url(engine.url.database or ""))
    try:
        with owner.connect() as conn:
            outer = conn.begin()
            conn.execute(text("SELECT set_config('guatu.role', 'admin', true), set_config('guatu.user', 'dba', true)"))
            mine = conn.execute(
                text(
                    "INSERT INTO problems (number, source, type, description, geom, area, reporter) VALUES "
                    "('', '巡查', '其他', '所有者', ST_SetSRID(ST_MakePoint(120.4, 36.3), 4490), '370214001009', '') "
                    "RETURNING id"
                )
            ).scalar()
            for statement in (
                "UPDATE problem_events SET note = '改写' WHERE problem_id = :p",
                "DELETE FROM problem_events WHERE problem_id = :p",
                "TRUNCATE problem_events CASCADE",
            ):
                with pytest.raises(DBAPIError, match="log_immutable"):
                    with conn.begin_nested():
                        conn.execute(text(statement), {"p": mine})
            assert conn.execute(text("SELECT count(*) FROM problem_events WHERE problem_id = :p"), {"p": mine}).scalar()
            outer.rollback()
    finally:
        owner.dispose()


def test_photos_are_content_addressed_checked_and_shown_only_to_who_may_see_them(
    client: TestClient, tokens: dict[str, str], archive_in_tmp: Any, frame: None
) -> None:
    first = photo(client, tokens, "gridman9", 7)
    again = photo(client, tokens, "gridman9", 7)
    assert first == again
    kept = list(archive_in_tmp.rglob(f"{first}*"))
    assert len(kept) == 1 and kept[0].read_bytes() == png(7)
    fake = client.post(
        "/api/problems/photos",
        content=b"GIF89a not a photo we take",
        headers=as_user(tokens, "gridman9") | {"Content-Type": "image/png"},
    )
    assert fake.status_code == 422 and fake.json()["code"] == "photo_type"
    big = client.post(
        "/api/problems/photos",
        content=b"\xff\xd8\xff" + b"0" * (problems.MAX_PHOTO_BYTES + 70_000),
        headers=as_user(tokens, "gridman9") | {"Content-Type": "image/jpeg"},
    )
    assert big.status_code == 413 and big.json()["code"] == "photo_too_large"
    multipart = client.post(
        "/api/problems/photos",
        files={"file": ("p.png", png(8), "image/png")},
        headers=as_user(tokens, "gridman9"),
    )
    assert multipart.status_code == 201 and multipart.json()["content_type"] == "image/png"
    assert photo(client, tokens, "planner", 7) == first  # the same photo from someone else: kept once
    url = f"/api/problems/photos/{first}"
    assert client.get(url, headers=as_user(tokens, "gridman9")).content == png(7)
    assert client.get(url, headers=as_user(tokens, "planner")).status_code == 404  # not yet in any problem
    report(client, tokens, photos=[first])
    shown = client.get(url, headers=as_user(tokens, "planner"))
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    assert client.get(url, headers=as_user(tokens, "planner2")).status_code == 404  # another street
    unknown = report(client, tokens, photos=["cd" * 32])
    assert unknown.status_code == 422 and unknown.json()["code"] == "photo_unknown"
    # evidence outlives the archive's retention and size cap: a prune years later keeps every photo
    assert kept[0].name == f"{first}.photo.png"
    archive.prune(days=1, max_bytes=1, now=time.time() + 10 * 365 * 86400)
    assert kept[0].exists() and client.get(url, headers=as_user(tokens, "planner")).content == png(7)


def test_rows_are_kept_to_the_users_area(client: TestClient, tokens: dict[str, str], frame: None) -> None:
    pid = report(client, tokens).json()["id"]
    seen = {
        username: [p["id"] for p in client.get("/api/problems", headers=as_user(tokens, username)).json()["items"]]
        for username in ("admin", "planner", "surveyor9", "gridman9", "leader", "planner2", "gridman", "surveyor")
    }
    assert {u for u, ids in seen.items() if pid in ids} == {"admin", "planner", "surveyor9", "gridman9", "leader"}
    assert client.get(f"/api/problems/{pid}", headers=as_user(tokens, "planner2")).status_code == 404
    outside = report(client, tokens, "gridman")  # gridman works in community 005: the sample grid is not his
    assert outside.status_code == 403 and outside.json()["code"] == "outside_area"
    viewer = report(client, tokens, "viewer")
    assert viewer.status_code == 403 and viewer.json()["code"] == "role_not_permitted"
    pins = client.get("/api/problems.geojson", params={"bbox": f"{X0},{Y0},{X0 + 0.01},{Y0 + 0.01}"})
    assert [f["id"] for f in pins.json()["features"]] == [pid]
    assert client.get("/api/problems.geojson", headers=as_user(tokens, "planner2")).json()["features"] == []
    far = client.get("/api/problems.geojson", params={"bbox": "100,20,100.1,20.1"}).json()["features"]
    assert far == []


def test_a_retried_report_is_stored_once(
    client: TestClient, tokens: dict[str, str], session: Session, frame: None
) -> None:
    headers = as_user(tokens, "gridman9") | {"Idempotency-Key": "phone-report-1"}
    body = {"type": "占道经营", "description": "早市占道", "lon": INSIDE[0], "lat": INSIDE[1], "source": "网格员上报"}
    first = client.post("/api/problems", json=body, headers=headers)
    second = client.post("/api/problems", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    state(session, ADMIN.settings())
    assert session.execute(text("SELECT count(*) FROM problems WHERE description = '早市占道'")).scalar() == 1
    other = client.post(
        "/api/problems", json=body, headers=as_user(tokens, "surveyor9") | {"Idempotency-Key": "phone-report-1"}
    )
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]  # a key is its reporter's own
    reused = client.post("/api/problems", json=body | {"description": "另一件事"}, headers=headers)
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"


def test_from_a_feature_and_from_a_finding(client: TestClient, tokens: dict[str, str], frame: None) -> None:
    parcel = sample("parcels")["properties"]
    key = REGISTRY["parcels"].key_field
    linked = client.post(
        "/api/problems",
        json={"type": "资产闲置", "description": "地块闲置", "features": [{"layer": "parcels", "code": parcel[key]}]},
        headers=as_user(tokens, "surveyor9"),
    )
    assert linked.status_code == 201, linked.text
    assert linked.json()["features"] == [{"layer": "parcels", "code": parcel[key]}]
    assert linked.json()["area"] == SAMPLE_GRID and linked.json()["lon"] is not None
    missing = client.post(
        "/api/problems",
        json={"type": "其他", "description": "x", "features": [{"layer": "parcels", "code": "nope"}]},
        headers=as_user(tokens, "surveyor9"),
    )
    assert missing.status_code == 404 and missing.json()["code"] == "feature_not_found"
    finding = {
        "type": "边界问题",
        "source": "边界检查",
        "description": "缝隙",
        "finding_id": "0123456789abcdef",
        "finding_geometry": {"type": "Point", "coordinates": list(INSIDE)},
    }
    made = client.post("/api/problems", json=finding, headers=as_user(tokens, "planner"))
    assert made.status_code == 201, made.text
    twice = client.post("/api/problems", json=finding, headers=as_user(tokens, "planner"))
    assert twice.status_code == 409 and twice.json()["code"] == "finding_registered"
    state_ = client.get("/api/problems", params={"status": "open"}).json()
    assert made.json()["id"] in [p["id"] for p in state_["items"]]


def test_lights_on_fixed_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    deadline = dt.date(2026, 6, 10)
    assert problems.light("整改中", deadline, dt.date(2026, 6, 11)) == "red"
    assert problems.light("整改中", deadline, dt.date(2026, 6, 10)) == "yellow"
    assert problems.light("整改中", deadline, dt.date(2026, 6, 7)) == "yellow"
    assert problems.light("整改中", deadline, dt.date(2026, 6, 6)) == "green"
    assert problems.light("整改中", deadline, dt.date(2026, 6, 5), warn=5) == "yellow"
    assert problems.light("整改中", deadline, dt.date(2026, 6, 4), warn=5) == "green"
    assert problems.light("已销号", deadline, dt.date(2030, 1, 1)) == "grey"
    assert problems.light("已登记", None, dt.date(2030, 1, 1)) == "green"
    from layers.settings import layer_settings

    monkeypatch.setattr(layer_settings(), "problem_warn_days", 0)  # GUATU_PROBLEM_WARN_DAYS
    assert problems.light("整改中", deadline, dt.date(2026, 6, 9)) == "green"
    assert problems.light("整改中", deadline, dt.date(2026, 6, 10)) == "yellow"


def test_counts_per_unit_and_the_printed_list(
    client: TestClient, tokens: dict[str, str], session: Session, frame: None
) -> None:
    ids = [report(client, tokens, description=f"问题{i}").json()["id"] for i in range(3)]
    past = (dt.date.today() - dt.timedelta(days=2)).isoformat()
    move(client, tokens, "planner", ids[0], "交办", assignee="gridman9", deadline=past, unit="环卫所")
    state(session, Actor(None, "planner", "planner", "370214001").settings())
    today = dt.date.today()
    figures = problems.counts(session, today)
    assert figures == {"open": 3, "overdue": 1, "closed_this_month": 0, "total": 3}
    rows = problems.by_unit(session, today)
    assert rows == [{"community": "370214001009", "open": 3, "overdue": 1, "closed_this_month": 0, "total": 3}]
    units = {r["unit"]: r["open"] for r in problems.by_unit(session, today, "unit")}
    assert units == {"环卫所": 1, "未交办": 2}
    listed = problems.open_list(session, None, limit=2)
    assert [p["light"] for p in listed] == ["red", "green"] and listed[0]["unit"] == "环卫所"
    summary = client.get("/api/problems/summary", headers=as_user(tokens, "planner2")).json()
    assert summary["total"]["total"] == 0  # another street sees none of them
    overdue = client.get("/api/problems", params={"overdue": "true"}).json()
    assert [p["id"] for p in overdue["items"]] == [ids[0]] and overdue["items"][0]["light"] == "red"


def test_registered_findings_are_looked_up(
    client: TestClient, tokens: dict[str, str], session: Session, frame: None
) -> None:
    body = {
        "type": "边界问题",
        "source": "边界检查",
        "description": "重叠",
        "finding_id": "fedcba9876543210",
        "finding_geometry": {"type": "Point", "coordinates": list(INSIDE)},
    }
    made = client.post("/api/problems", json=body, headers=as_user(tokens, "planner")).json()
    state(session, ADMIN.settings())
    found = problems.registered(session, ["fedcba9876543210", "0000000000000000"])
    assert found == {"fedcba9876543210": (made["number"], "已登记")}


def test_whoever_took_part_in_the_rectification_may_not_verify_it(
    client: TestClient, tokens: dict[str, str], frame: None
) -> None:
    pid = report(client, tokens).json()["id"]
    move(client, tokens, "admin", pid, "交办", assignee="planner", deadline="2030-01-01")
    assert move(client, tokens, "admin", pid, "整改").json()["status"] == "整改中"  # the administrator started it
    after = photo(client, tokens, "planner", 3, "整改后")
    assert move(client, tokens, "planner", pid, "提交验收", photos=[after]).json()["status"] == "待验收"
    for who in ("admin", "planner"):
        refused = move(client, tokens, who, pid, "销号")
        assert refused.status_code == 409 and refused.json()["code"] == "verifier_is_rectifier", who
        shown = client.get(f"/api/problems/{pid}", headers=as_user(tokens, who)).json()
        assert shown["actions"] == []  # the page offers neither 销号 nor 退回
