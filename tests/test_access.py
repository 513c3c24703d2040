"""Who may do what: every route × every role, inside and outside its area, anonymous included.

The matrix is generated from /openapi.json: a route added later is called too, and a route
without a rule (``x-guatu-access``) fails :func:`test_every_route_states_its_rule`.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from api.auth import ACCESS_KEY, RULES, iter_rules
from api.main import create_app
from layers.access import ROLES, Actor
from layers.base import REGISTRY
from spatial.db import state
from tests.accounts import USERS, bearer, tokens_for
from tests.conftest import app_url, libpq, migrated_database, owner_url, share_session
from tests.samples import GRID, X0, Y0, sample

FRAMEWORK = {"/openapi.json", "/static"}
"""Routes FastAPI and Starlette add themselves (the schema, the static files): public by nature."""

INSIDE = ("admin", "planner", "surveyor9", "gridman9", "leader", "viewer")
OUTSIDE = ("planner2", "surveyor", "gridman")
"""Who holds the sample features (community 370214001009) in their area, and who does not."""


def test_every_route_states_its_rule() -> None:
    app = create_app()
    missing = [(path, sorted(methods)) for path, methods, found in iter_rules(app) if found is None]
    missing = [m for m in missing if m[0] not in FRAMEWORK]
    assert missing == [], f"routes without an access rule (api.auth.rule): {missing}"
    unknown = [(path, found) for path, _, found in iter_rules(app) if found is not None and found not in RULES]
    assert unknown == []


@pytest.fixture
def app_client(engine: Any, session: Session) -> Iterator[TestClient]:
    """Yield an unauthenticated client whose requests share the rolled-back session."""
    app = create_app(engine=engine)
    share_session(app, session)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _frame(session: Session) -> dict[str, int]:
    """Store the sample street's frame and one feature of every layer (as an administrator); return their ids."""
    state(session, Actor(None, "tests", "admin").settings())
    from layers import features

    ids = {}
    for layer_id in ("divisions", "grids", "parcels", "shops", "zones", "revenue_points"):
        ids[layer_id] = features.create_feature(session, REGISTRY[layer_id], sample(layer_id))["id"]
    session.flush()
    return ids


def _versions(session: Session, ids: dict[str, int]) -> dict[str, Any]:
    """Return each sample feature's (version, geometry) and each table's row count, as an administrator sees them."""
    state(session, Actor(None, "tests", "admin").settings())
    out: dict[str, Any] = {}
    for layer_id, fid in ids.items():
        table = REGISTRY[layer_id].table
        row = session.execute(text(f"SELECT version, ST_AsEWKB(geom) FROM {table} WHERE id = :i"), {"i": fid}).first()
        out[layer_id] = None if row is None else (row[0], bytes(row[1]))
        out[layer_id + "#"] = session.execute(text(f"SELECT count(*) FROM {table}")).scalar()
    out["contracts"] = session.execute(
        text("SELECT count(*), sum(version), (SELECT count(*) FROM contract_payments) FROM contracts")
    ).one()
    return out


RESET_ORDER = ("revenue_points", "zones", "shops", "parcels", "grids", "divisions")


def _reset(session: Session) -> dict[str, int]:
    """Remove every feature (children first) and store the sample frame afresh; return the new ids."""
    state(session, Actor(None, "tests", "admin").settings())
    for layer_id in RESET_ORDER:
        session.execute(text(f"DELETE FROM {REGISTRY[layer_id].table}"))
    return _frame(session)


def _body(method: str, path: str, layer_id: str, fid: int, session: Session) -> dict[str, Any]:
    """Return the request arguments (json, files, params, headers) a call of this operation needs."""
    version = session.execute(
        text(f"SELECT version FROM {REGISTRY[layer_id].table} WHERE id = :i"), {"i": fid}
    ).scalar()
    match = {"If-Match": f'"{version}"'} if version is not None else {}
    if (path.endswith("/uploads") or path.endswith("/uploads/inspect")) and method == "post":
        collection = {"type": "FeatureCollection", "features": [sample(layer_id)]}
        files = {"file": ("a.geojson", io.BytesIO(json.dumps(collection).encode()), "application/geo+json")}
        return {"files": files, "params": {"dry_run": "true"}}
    if path.endswith(("/features", "/items")) and method == "post" or path.endswith("/check"):
        moved = sample(layer_id)
        key = REGISTRY[layer_id].key_field
        moved["properties"][key] = moved["properties"][key][:-1] + "9"
        return {"json": moved}
    if path.endswith("/{fid}") and method == "put":
        return {"json": sample(layer_id), "headers": match}
    if path.endswith("/{fid}") and method == "patch":
        name = "name" if "name" in REGISTRY[layer_id].field_names else REGISTRY[layer_id].field_names[1]
        return {"json": {"type": "Feature", "properties": {name: "改名"}}, "headers": match}
    if path.endswith("/{fid}") and method == "delete":
        return {"headers": match}
    if path.endswith("/restore"):
        change = session.execute(
            text("SELECT max(id) FROM change_log WHERE layer = :l AND feature_id = :f"), {"l": layer_id, "f": fid}
        ).scalar()
        return {"json": {"change": int(change or 0)}, "headers": match}
    if path.endswith("/split"):
        line = {"type": "LineString", "coordinates": [[X0 + 0.0005, Y0 - 0.001], [X0 + 0.0005, Y0 + 0.002]]}
        return {"json": {"id": fid, "line": line, "codes": ["370214001009" + "0100002"]}, "headers": match}
    if path.endswith("/merge"):
        return {"json": {"ids": [fid], "keep": fid, "versions": {str(fid): version}}}
    if path.startswith("/api/contracts"):
        return _contract_args(method, path, session)
    if path == "/api/login":
        return {"json": {"username": "nobody", "password": "wrong-password"}}
    if path == "/api/print":
        return {"params": {"format": "bogus"}}  # refused after the rule: allowed roles get 422, never a print
    if path.startswith("/api/checks"):
        return {"params": {"scope": GRID}}
    if path == "/api/search":
        return {"params": {"q": "南疃"}}
    return {}


def _contract_args(method: str, path: str, session: Session) -> dict[str, Any]:
    """Return the arguments of a contract route, with the id ("cid") of a contract over the sample parcel."""
    import datetime as dt

    from layers import contracts

    state(session, Actor(None, "tests", "admin").settings())
    body = contracts.example() | {"number": "ACCESS-1"}
    cid = session.execute(text("SELECT id FROM contracts WHERE number = 'ACCESS-1'")).scalar()
    if cid is None:
        made = contracts.create(session, Actor(None, "tests", "admin"), contracts.ContractIn(**body), dt.date.today())
        cid = made["id"]
    if method == "post" and path == "/api/contracts":
        return {"cid": cid, "json": body | {"number": "ACCESS-2"}}
    if path.endswith("/payments"):
        return {"cid": cid, "json": {"paid_on": "2024-01-01", "amount": "100"}}
    if method == "put":
        return {"cid": cid, "json": body, "headers": {"If-Match": "*"}}
    if path.endswith("/assets"):
        return {"cid": cid, "params": {"layer": contracts.let_layers()[0].id}}
    return {"cid": cid}


def _url(path: str, layer_id: str, fid: int) -> str:
    z, lon, lat = 16, X0 + 0.0005, math.radians(Y0 + 0.0004)
    x = int((lon + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(lat)) / math.pi) / 2 * 2**z)
    return (
        path.replace("{layer_id}", layer_id)
        .replace("{fid}", str(fid))
        .replace("{uid}", "1")
        .replace("{z}", str(z))
        .replace("{x}", str(x))
        .replace("{y}", str(y))
    )


def _operations(app_client: TestClient) -> list[tuple[str, str, str]]:
    """Return (path, method, rule) of every operation /openapi.json lists."""
    schema = app_client.get("/openapi.json").json()
    return [
        (path, method, op.get(ACCESS_KEY))
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def _expect(rule: str, username: str | None, layer_id: str, inside: bool) -> str:
    """Return what must happen: 'anon' (401), 'forbidden' (403), 'hidden' (403/404), 'allowed' (no 401/403)."""
    if rule == "public":
        return "public"
    if username is None:
        return "anon"
    role_id, _ = USERS[username]
    actor = Actor(1, username, role_id, USERS[username][1])
    role = ROLES[role_id]
    if rule == "admin":
        return "allowed" if actor.is_admin else "forbidden"
    if rule == "checks":
        return "allowed" if role.checks else "forbidden"
    if rule == "print":
        return "allowed" if role.prints else "forbidden"
    if rule == "contracts":
        if not role.contracts:
            return "forbidden"
        return "allowed" if inside else "hidden"
    if rule in ("edit", "upload"):
        layer = REGISTRY[layer_id]
        may = actor.may_edit(layer) if rule == "edit" else actor.may_upload(layer)
        if not may:
            return "forbidden"
        return "allowed" if inside else "hidden"
    return "allowed" if inside else "read_outside"


@pytest.mark.parametrize("layer_id", ["parcels", "zones", "grids"])
def test_role_route_matrix(app_client: TestClient, session: Session, tokens: dict[str, str], layer_id: str) -> None:
    ids = _frame(session)
    fid = ids[layer_id]
    operations = _operations(app_client)
    assert len(operations) > 25
    unruled = [(p, m) for p, m, r in operations if r is None]
    assert unruled == [], f"operations without x-guatu-access in /openapi.json: {unruled}"
    failures = []
    for path, method, rule in operations:
        if "{layer_id}" not in path and layer_id != "parcels":
            continue  # layer-free routes once is enough
        for username in (None, *INSIDE, *OUTSIDE):
            inside = username in INSIDE
            before = _versions(session, ids)
            args = _body(method, path, layer_id, fid, session)
            headers = dict(args.pop("headers", {}))
            cid = str(args.pop("cid", 0))
            if username is not None:
                headers |= bearer(tokens[username])
            url = _url(path, layer_id, fid).replace("{cid}", cid)
            answer = app_client.request(method.upper(), url, headers=headers, **args)
            after = _versions(session, ids)
            if after != before:  # an allowed write: start the next call from the same frame
                ids = _reset(session)
                fid = ids[layer_id]
            expected = _expect(str(rule), username, layer_id, inside)
            status = answer.status_code
            body = answer.json() if answer.headers.get("content-type", "").endswith("json") else None
            code = body.get("code") if isinstance(body, dict) else None
            verdict = {
                "public": status not in (403, 500),
                "anon": status == 401 and code in ("login_required",),
                "forbidden": status == 403 and after == before,
                "hidden": status in (403, 404) and after == before,
                "allowed": status not in (401, 403, 500) and code != "csrf_failed",
                "read_outside": status not in (401, 500) and (status in (403, 404) or "{fid}" not in path),
            }[expected]
            if expected == "hidden" and path.endswith("/uploads") and status in (200, 422) and after == before:
                entries = body["report"]["features"] if isinstance(body, dict) else []
                verdict = bool(entries) and all(
                    e["status"] == "rejected" and e["problems"][0]["code"] == "outside_area" for e in entries
                )
            if expected == "hidden" and path.endswith("/uploads/inspect") and status == 200 and after == before:
                # it describes the caller's own file and reads no feature of the layer: an outsider may look
                verdict = isinstance(body, dict) and body.get("count") == 1 and "proposed" in body
            if expected == "read_outside" and "{fid}" not in path and status == 200 and method == "get":
                # a list, a tile or figures: the sample features must not be in what the user got
                leaked = _leaks(answer, ids[layer_id], layer_id, path)
                verdict = verdict and not leaked
            if not verdict:
                failures.append(f"{method.upper()} {path} as {username or 'anonymous'}: {status} {code} ({expected})")
    assert failures == [], "\n".join(failures)


def _leaks(answer: Any, fid: int, layer_id: str, path: str) -> bool:
    """Return whether a read the user is not entitled to shows the sample feature."""
    kind = answer.headers.get("content-type", "")
    if path.endswith(".pbf"):
        return bool(answer.content)
    if "json" not in kind:
        return False
    body = answer.json()
    if isinstance(body, dict) and isinstance(body.get("features"), list):
        return any(f.get("id") == fid for f in body["features"])
    if isinstance(body, dict) and isinstance(body.get("data"), list):  # ledger rows
        return any(row.get("id") == fid for row in body["data"])
    if path.endswith(("/stats", "/rows/count")):
        return _counted(body) > 0
    if path == "/api/search":
        return bool(body)
    if path.startswith("/api/contracts") and isinstance(body, dict):  # a list, the figures, the lights
        return bool(body.get("contracts")) or bool(body.get("lights"))
    if path.endswith(".json"):  # TileJSON: no extent of what the user cannot see
        return body.get("bounds") not in (None, [-180, -85.0511, 180, 85.0511], [-180.0, -85.0511, 180.0, 85.0511])
    return False


def _counted(body: Any) -> int:
    """Return the sum of every "count" in a JSON document."""
    if isinstance(body, dict):
        own = body.get("count") if isinstance(body.get("count"), int) else 0
        return own + sum(_counted(v) for k, v in body.items() if k != "count")
    if isinstance(body, list):
        return sum(_counted(v) for v in body)
    return 0


def test_anonymous_pages_go_to_sign_in(app_client: TestClient) -> None:
    for page in ("/", "/upload", "/checks", "/cockpit"):
        answer = app_client.get(page, follow_redirects=False)
        assert answer.status_code == 303, page
        assert answer.headers["location"].startswith("/login?next=")
    assert app_client.get("/login").status_code == 200
    assert app_client.get("/healthz").status_code == 200


def test_sign_in_sets_httponly_session_and_csrf(app_client: TestClient, tokens: dict[str, str]) -> None:
    wrong = app_client.post("/api/login", json={"username": "viewer", "password": "not-it-at-all"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "bad_credentials"
    unknown = app_client.post("/api/login", json={"username": "nobody", "password": "not-it-at-all"})
    assert unknown.json()["code"] == "bad_credentials"  # no telling which names exist
    good = app_client.post("/api/login", json={"username": "surveyor9", "password": "guatu-test-password"})
    assert good.status_code == 200, good.text
    cookies = good.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("guatu_session="))
    assert "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie
    csrf_cookie = next(c for c in cookies if c.startswith("guatu_csrf="))
    assert "HttpOnly" not in csrf_cookie
    me = app_client.get("/api/me").json()
    assert me["user"]["role"] == "surveyor" and me["layers"]["parcels"]["edit"] is True
    assert me["layers"]["grids"]["edit"] is False and me["layers"]["zones"]["personal"] is False
    # a cookie-authenticated write without the CSRF token is refused; with it, it reaches the route
    forged = app_client.post("/api/layers/parcels/features", json=sample("parcels"))
    assert forged.status_code == 403 and forged.json()["code"] == "csrf_failed"
    token = app_client.cookies.get("guatu_csrf")
    sent = app_client.post("/api/layers/parcels/features", json=sample("parcels"), headers={"X-CSRF-Token": token})
    assert sent.status_code not in (401, 403), sent.text
    assert app_client.post("/api/logout", headers={"X-CSRF-Token": token}).status_code == 204
    assert app_client.get("/api/me").status_code == 401


def test_lockout_after_repeated_failures(app_client: TestClient, tokens: dict[str, str]) -> None:
    codes = [
        app_client.post("/api/login", json={"username": "leader", "password": f"wrong-{i}-password"}).json()["code"]
        for i in range(5)
    ]
    assert codes[:4] == ["bad_credentials"] * 4 and codes[4] == "account_locked"
    right = app_client.post("/api/login", json={"username": "leader", "password": "guatu-test-password"})
    assert right.status_code == 401 and right.json()["code"] == "account_locked"  # even the right password


def test_login_rate_limited_per_client(app_client: TestClient) -> None:
    answers = [
        app_client.post("/api/login", json={"username": f"u{i}", "password": "wrong-password"}).status_code
        for i in range(12)
    ]
    assert answers[:10] == [401] * 10 and answers[10] == 429


def test_bearer_token_of_unknown_or_blank_refused(app_client: TestClient) -> None:
    answer = app_client.get("/api/layers", headers={"Authorization": "Bearer gt_nope"})
    assert answer.status_code == 401 and answer.json()["code"] == "token_invalid"


def test_personal_fields_full_only_for_roles_that_see_them_and_each_showing_logged() -> None:
    name = "guatu_test_personal"
    with migrated_database(name) as eng:
        toks = tokens_for(owner_url(name), name)
        with Session(eng) as committed:
            ids = _frame(committed)
            committed.commit()
        url = f"/api/layers/zones/features/{ids['zones']}"
        with TestClient(create_app(engine=eng), raise_server_exceptions=False) as plain:
            shown = {
                username: plain.get(url, headers=bearer(toks[username])).json()["properties"]["household_head"]
                for username in ("admin", "planner", "gridman9", "surveyor9", "viewer", "leader")
            }
            listed = plain.get("/api/layers/zones/features", headers=bearer(toks["planner"])).json()
            assert listed["features"][0]["properties"]["household_head"] == "李明华"
            assert plain.get("/api/layers/zones/features", headers=bearer(toks["viewer"])).status_code == 200
        assert shown == {
            "admin": "李明华",
            "planner": "李明华",
            "gridman9": "李明华",
            "surveyor9": "李*华",
            "viewer": "李*华",
            "leader": "李*华",
        }
        with psycopg.connect(libpq(owner_url(name))) as conn:
            logged = conn.execute(
                "SELECT username, layer, feature_ids, fields, route FROM personal_access_log ORDER BY id"
            ).fetchall()
        assert [(row[0], row[2], row[3]) for row in logged] == [
            ("admin", [ids["zones"]], ["household_head"]),
            ("planner", [ids["zones"]], ["household_head"]),
            ("gridman9", [ids["zones"]], ["household_head"]),
            ("planner", [ids["zones"]], ["household_head"]),
        ]
        assert logged[-1][4] == "/api/layers/zones/features"
        with eng.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("SELECT count(*) FROM personal_access_log"))  # the app writes it, never reads it


def test_history_of_a_feature_masks_personal_fields(
    app_client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    ids = _frame(session)
    url = f"/api/layers/zones/features/{ids['zones']}"
    version = app_client.get(url, headers=bearer(tokens["admin"])).json()["version"]
    patch = {"type": "Feature", "properties": {"household_head": "王小二"}}
    changed = app_client.patch(url, json=patch, headers=bearer(tokens["admin"]) | {"If-Match": f'"{version}"'})
    assert changed.status_code == 200, changed.text
    history = app_client.get(url + "/history", headers=bearer(tokens["viewer"])).json()
    update = history["changes"][0]
    assert update["op"] == "update" and "household_head" in update["changed"]
    assert update["before"]["properties"]["household_head"] == "李*华"
    assert update["after"]["properties"]["household_head"] == "王*二"
    full = app_client.get(url + "/history", headers=bearer(tokens["planner"])).json()["changes"][0]
    assert full["before"]["properties"]["household_head"] == "李明华"


def test_uploads_record_the_signed_in_user(client: TestClient) -> None:
    collection = {"type": "FeatureCollection", "features": [sample("divisions")]}
    files = {"file": ("a.geojson", io.BytesIO(orjson.dumps(collection)), "application/geo+json")}
    answer = client.post("/api/layers/divisions/uploads", files=files, params={"uploader": "someone-else"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["uploader"] == "admin"


def test_twenty_five_sign_ins_at_once_are_answered_and_bounded(app_client: TestClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def attempt(i: int) -> int:
        body = {"username": "viewer", "password": f"wrong-password-{i}"}
        return app_client.post("/api/login", json=body).status_code

    with ThreadPoolExecutor(25) as pool:
        statuses = list(pool.map(attempt, range(25)))
    assert sorted(set(statuses)) == [401, 429]  # no 500, no hang
    assert statuses.count(401) == 10  # the per-address limit, whatever the order they came in


def test_the_first_administrator_comes_from_the_command_line(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    name = "guatu_test_first_admin"
    with migrated_database(name) as eng:
        guatu = str(Path(sys.executable).parent / "guatu")
        env = os.environ | {"DATABASE_URL": app_url(name), "GUATU_OWNER_DATABASE_URL": owner_url(name)}
        made = subprocess.run([guatu, "user", "add", "--admin"], capture_output=True, text=True, env=env, timeout=120)
        assert made.returncode == 0, made.stderr
        password = next(line.split(": ", 1)[1] for line in made.stdout.splitlines() if line.startswith("password: "))
        refused = subprocess.run(
            [guatu, "user", "add", "王规划", "--role", "planner"], capture_output=True, text=True, env=env, timeout=120
        )
        assert refused.returncode == 2 and "area_required" in refused.stderr + refused.stdout
        with TestClient(create_app(engine=eng), raise_server_exceptions=False) as plain:
            signed = plain.post("/api/login", json={"username": "admin", "password": password})
            assert signed.status_code == 200 and signed.json()["user"]["role"] == "admin"
            token = subprocess.run(
                [guatu, "user", "token", "admin", "--name", "qgis"],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            ).stdout.strip()
            assert token.startswith("gt_")
            assert plain.get("/api/me", headers=bearer(token)).json()["user"]["username"] == "admin"
