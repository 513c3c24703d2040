"""Found by an independent review of issue 12 (accounts, areas, history): each failed before its fix.

Ranked most severe first: a shape mostly in another community located in the sliver of the
user's own; an upload reporting new a key held outside the area; another user's
Idempotency-Key; a restore without If-Match; concurrent wrong passwords; a reset password
leaving sessions open; an open redirect after sign-in; a sign-in from another site.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.main import create_app
from layers import accounts, features
from layers.access import Actor
from layers.base import REGISTRY
from spatial.db import make_engine, state
from tests.accounts import PASSWORD, bearer
from tests.conftest import owner_url, share_session
from tests.samples import COMMUNITY, X0, Y0, D, polygon, sample
from web.login import build_login_page

OTHER_COMMUNITY = "370214001008"
OTHER_GRID = OTHER_COMMUNITY + "001"


def _frame(session: Session) -> dict[str, int]:
    """Store community 009 (one grid covering it, surveyor9's area) and community 008 east of it; return ids."""
    state(session, Actor(None, "tests", "admin").settings())
    ids: dict[str, int] = {}
    own = sample("divisions")
    ids["community"] = features.create_feature(session, REGISTRY["divisions"], own)["id"]
    other = sample("divisions")
    other["geometry"] = polygon(X0 + D, Y0 - D, X0 + 3 * D, Y0 + D)
    other["properties"] |= {"code": OTHER_COMMUNITY, "name": "东邻社区"}
    features.create_feature(session, REGISTRY["divisions"], other)
    grid = sample("grids")
    grid["geometry"] = polygon(X0 - D, Y0 - D, X0 + D, Y0 + D)
    features.create_feature(session, REGISTRY["grids"], grid)
    other_grid = sample("grids")
    other_grid["geometry"] = polygon(X0 + D, Y0 - D, X0 + 3 * D, Y0 + D)
    other_grid["properties"] |= {"code": OTHER_GRID, "name": "东邻社区第1网格", "community_code": OTHER_COMMUNITY}
    features.create_feature(session, REGISTRY["grids"], other_grid)
    ids["parcel"] = features.create_feature(session, REGISTRY["parcels"], sample("parcels"))["id"]
    session.flush()
    return ids


MOSTLY_ELSEWHERE = polygon(X0 + D - 0.0005, Y0, X0 + D + 0.01, Y0 + 0.0009)
"""5% inside community 009 (surveyor9's), 95% inside community 008."""


# 1 (high) ----------------------------------------------------------------------------------------


def test_surveyor_cannot_move_a_parcel_mostly_into_another_community(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    """The locators run under row-level security: the other community's units are invisible, so the
    sliver in the surveyor's own grid is "the largest share" and the parcel keeps its codes."""
    ids = _frame(session)
    me = bearer(tokens["surveyor9"])
    read = client.get(f"/api/layers/parcels/features/{ids['parcel']}", headers=me)
    answer = client.patch(
        f"/api/layers/parcels/features/{ids['parcel']}",
        headers=me | {"If-Match": read.headers["etag"]},
        json={"type": "Feature", "properties": {}, "geometry": MOSTLY_ELSEWHERE},
    )
    stored = session.execute(
        text(
            "SELECT community_code, ST_Area(ST_Intersection(geom, ST_MakeEnvelope(:x, -90, 180, 90, 4490))) / "
            "ST_Area(geom) FROM parcels WHERE id = :i"
        ),
        {"x": X0 + D, "i": ids["parcel"]},
    ).one()
    assert answer.status_code in (403, 422), (answer.status_code, stored)


def test_surveyor_cannot_create_a_parcel_mostly_in_another_community(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    _frame(session)
    parcel = sample("parcels")
    parcel["geometry"] = MOSTLY_ELSEWHERE
    parcel["properties"] |= {"code": COMMUNITY + "0100007"}
    for name in ("community_code", "grid_code"):
        parcel["properties"].pop(name)
    answer = client.post("/api/layers/parcels/features", headers=bearer(tokens["surveyor9"]), json=parcel)
    assert answer.status_code in (403, 422), answer.text[:300]


# 2 (medium) --------------------------------------------------------------------------------------


def test_upload_never_reports_new_a_key_it_could_not_write(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    """A key taken by a feature outside the uploader's area: the upload said "new 1, committed", wrote nothing."""
    _frame(session)
    theirs = sample("parcels")
    theirs["geometry"] = polygon(X0 + 2 * D, Y0, X0 + 2 * D + 0.001, Y0 + 0.0009)
    theirs["properties"] |= {"code": OTHER_COMMUNITY + "0100001", "name": "东邻地块"}
    for name in ("community_code", "grid_code"):
        theirs["properties"].pop(name)
    features.create_feature(session, REGISTRY["parcels"], theirs)
    mine = sample("parcels")
    mine["properties"] |= {"code": OTHER_COMMUNITY + "0100001", "name": "我的新地块"}
    body = json.dumps({"type": "FeatureCollection", "features": [mine]}).encode()
    answer = client.post(
        "/api/layers/parcels/uploads",
        headers=bearer(tokens["surveyor9"]),
        files={"file": ("a.geojson", io.BytesIO(body), "application/geo+json")},
    )
    report = answer.json()
    state(session, Actor(None, "tests", "admin").settings())
    written = session.execute(
        text("SELECT name FROM parcels WHERE code = :c"), {"c": OTHER_COMMUNITY + "0100001"}
    ).scalar()
    if report.get("status") == "committed" and report["report"]["summary"]["new"] == 1:
        assert written == "我的新地块", f"reported new and committed, but the stored row is still {written!r}"


def test_anothers_idempotency_key_is_their_own_not_a_database_failure(
    client: TestClient, tokens: dict[str, str]
) -> None:
    def upload(user: str, name: str) -> Any:
        body = json.dumps({"type": "FeatureCollection", "name": name, "features": []}).encode()
        return client.post(
            "/api/layers/parcels/uploads",
            headers=bearer(tokens[user]) | {"Idempotency-Key": "review-key-1"},
            files={"file": ("a.geojson", io.BytesIO(body), "application/geo+json")},
        )

    first = upload("planner", "first")
    assert first.status_code == 201
    second = upload("surveyor9", "second")  # the same key, another user: another upload, never a 503
    assert second.status_code == 201, (second.status_code, second.json().get("code"))
    assert second.json()["id"] != first.json()["id"] and second.json()["uploader"] == "surveyor9"
    again = upload("surveyor9", "second")
    assert again.json()["id"] == second.json()["id"]  # each user's retry replays their own upload


def test_restore_refuses_a_stale_if_match(client: TestClient, session: Session) -> None:
    """Restore takes no If-Match at all: a restore based on an old read overwrites a later edit."""
    fid = _frame(session)["parcel"]
    first = client.get(f"/api/layers/parcels/features/{fid}")
    client.patch(
        f"/api/layers/parcels/features/{fid}",
        headers={"If-Match": first.headers["etag"]},
        json={"type": "Feature", "properties": {"name": "甲改"}},
    )
    history = client.get(f"/api/layers/parcels/features/{fid}/history").json()["changes"]
    insert_change = history[-1]["id"]
    read = client.get(f"/api/layers/parcels/features/{fid}")  # version 2: the restorer reads this
    client.patch(
        f"/api/layers/parcels/features/{fid}",
        headers={"If-Match": read.headers["etag"]},
        json={"type": "Feature", "properties": {"name": "乙同时修改"}},
    )  # someone else: version 3
    restored = client.post(
        f"/api/layers/parcels/features/{fid}/restore",
        headers={"If-Match": read.headers["etag"]},
        json={"change": insert_change},
    )
    assert restored.status_code == 412, (restored.status_code, restored.json().get("properties", {}).get("name"))


def test_concurrent_wrong_passwords_all_count_towards_the_lockout(engine: Any) -> None:
    """failed_logins is read, then written +1: ten wrong passwords at once count as one or two."""
    owner = make_engine(url=owner_url("guatu_test"))
    try:
        with Session(owner) as s:
            accounts.add_user(s, "review-lock", "viewer", "370214001", PASSWORD)
            s.commit()
        barrier = threading.Barrier(10)

        def guess(n: int) -> None:
            with Session(engine) as s:
                barrier.wait()
                accounts.authenticate(s, "review-lock", f"wrong-password-{n}")
                s.commit()

        threads = [threading.Thread(target=guess, args=(n,)) for n in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with Session(owner) as s:
            failed, locked = s.execute(
                text("SELECT failed_logins, locked_until FROM users WHERE username = 'review-lock'")
            ).one()
        assert locked is not None, f"10 wrong passwords, failed_logins={failed}, not locked"
    finally:
        with owner.begin() as conn:
            conn.execute(text("DELETE FROM users WHERE username = 'review-lock'"))
        owner.dispose()


def test_password_reset_ends_the_users_sessions_and_tokens() -> None:
    """`guatu user add NAME` on an existing user (the documented reset) leaves its sessions and tokens working."""
    owner = make_engine(url=owner_url("guatu_test"))
    try:
        with Session(owner) as s:
            user = accounts.add_user(s, "review-reset", "viewer", "370214001", PASSWORD)
            token = accounts.add_token(s, user, "stolen")
            cookie, _ = accounts.open_session(s, user)
            accounts.add_user(s, "review-reset", "viewer", "370214001", "a-new-password-after-a-leak")
            assert accounts.user_of_token(s, token) is None, "the old API token still works after the reset"
            assert accounts.user_of_session(s, cookie) is None, "the old web session still works after the reset"
            s.rollback()
    finally:
        owner.dispose()


# 3 (low) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("next_url", ["/\\evil.example/login", "/\t/evil.example/login"])
def test_login_page_never_sends_the_user_to_another_site(next_url: str) -> None:
    """Browsers read "/\\host" and "/<tab>/host" as "//host": after signing in, the user lands on another site."""
    page = build_login_page(title="t", next_url=next_url)
    assert 'data-next="/"' in page, page[page.index("data-next") : page.index("data-next") + 40]


@pytest.fixture
def anonymous(engine: Any, session: Session, tokens: dict[str, str]) -> Iterator[TestClient]:
    app = create_app(engine=engine)
    share_session(app, session)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_login_from_another_site_is_refused(anonymous: TestClient) -> None:
    """A no-cors fetch may send Content-Type "text/plain; x=application/json" (CORS-safelisted); the login's
    check is a substring test and looks at no Origin, so another site can sign the browser in as its own user."""
    answer = anonymous.post(
        "/api/login",
        content=json.dumps({"username": "viewer", "password": PASSWORD}),
        headers={"Content-Type": "text/plain; x=application/json", "Origin": "http://127.0.0.1:9999"},
    )
    assert answer.status_code in (400, 403, 415), (answer.status_code, answer.headers.get("set-cookie", "")[:40])
