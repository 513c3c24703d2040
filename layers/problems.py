"""The problem ledger (问题台账): problems found on the ground, assigned, rectified, verified and closed (销号).

Not a map layer: a ledger with its own tables, kept by the database itself.

- ``problems``: one row per problem (number ``WT-2026-000123``, source, type, description, a
  point and/or linked features, the boundary-check finding it came from, its area code for
  row-level security, the responsible unit and person, the deadline, its state).
- ``problem_events``: the transition log. A transition *is* the insert of an event: a trigger
  (run as the owner) checks that the move is legal (已登记 → 已交办 → 整改中 → 待验收 → 已销号,
  待验收 → 整改中 by 退回), that the actor's role may make it, that the one who verifies is
  not the one who submitted the rectification, and only then moves the problem. The app
  may insert and read events, never change them; a trigger refuses UPDATE, DELETE and
  TRUNCATE to everyone, the owner included.
- ``problem_photos``: before/after photos, kept content-addressed in the upload archive
  (layers.archive) by their SHA-256; only real JPEG, PNG or WebP files are taken.

The workflow follows the 数字城管 case cycle (上报 → 立案 → 派遣 → 处置 → 核查 → 结案): 登记 is
上报/立案, 交办 派遣, 整改 and 提交验收 处置, 销号 (or 退回) 核查 and 结案.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from PIL import Image
from psycopg import errors as pg_errors
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    and_,
    case,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, mapped_column

import shapely
from geoalchemy2 import Geometry

from layers import access, archive, hierarchy
from layers.access import ADMIN, SETTING_USER, Actor
from layers.base import REGISTRY
from layers.workbook import Column, Table
from spatial.db import Base
from spatial.errors import Conflict, Forbidden, InvalidInput, NotFound, Problem, Where
from spatial.geometry import STORAGE_SRID, check_lonlat_range, parse_geojson_geometry

# ---------------------------------------------------------------------------------------------- vocabulary

REGISTERED, ASSIGNED, RECTIFYING, TO_VERIFY, CLOSED = "已登记", "已交办", "整改中", "待验收", "已销号"
STATES = (REGISTERED, ASSIGNED, RECTIFYING, TO_VERIFY, CLOSED)
STATES_EN = {
    REGISTERED: "registered",
    ASSIGNED: "assigned",
    RECTIFYING: "being rectified",
    TO_VERIFY: "awaiting verification",
    CLOSED: "closed",
}
REGISTER, ASSIGN, RECTIFY, SUBMIT, CLOSE, RETURN = "登记", "交办", "整改", "提交验收", "销号", "退回"
ACTIONS_EN = {
    REGISTER: "register",
    ASSIGN: "assign",
    RECTIFY: "start rectifying",
    SUBMIT: "submit for verification",
    CLOSE: "verify and close",
    RETURN: "return for rework",
}
TRANSITIONS: dict[tuple[str, str], str] = {
    (REGISTERED, ASSIGN): ASSIGNED,
    (ASSIGNED, RECTIFY): RECTIFYING,
    (RECTIFYING, SUBMIT): TO_VERIFY,
    (TO_VERIFY, CLOSE): CLOSED,
    (TO_VERIFY, RETURN): RECTIFYING,
}
"""from state, action → to state: every legal move (the database's trigger holds the same table)."""
VERIFIERS = (ADMIN, "planner")
"""Roles that assign (交办), verify and close (销号) or return (退回): the street's staff."""
REPORTERS = (ADMIN, "planner", "surveyor", "grid_manager")
"""Roles that register problems in their area."""
RECTIFIERS = (ADMIN, "grid_manager")
"""Roles that rectify any problem of their area (besides the person it is assigned to)."""

SOURCES = ("巡查", "群众反映", "上级交办", "网格员上报", "边界检查")
TYPES = ("违章搭建", "环境卫生", "占道经营", "设施损坏", "安全隐患", "边界问题", "资产闲置", "其他")
BEFORE, AFTER = "整改前", "整改后"
PHASES = (BEFORE, AFTER)

MAX_PHOTO_BYTES = 8_000_000
"""The largest photo taken (a phone's camera JPEG is 2–5 MB)."""
PHOTO_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def photo_suffix(content_type: str) -> str:
    """Return the archive suffix of a photo of CONTENT_TYPE (.photo.jpg …).

    The archive's pruning (layers.archive.prune) never touches these: a photo is the evidence
    of a problem's rectification and is kept as long as the problem, whatever its age.
    """
    return f".photo.{PHOTO_TYPES[content_type]}"


DEADLINES = (dt.date(2000, 1, 1), dt.date(2199, 12, 31))
"""The deadlines taken (a typo's year 0001 would show a problem late by 739 000 days)."""
DESCRIPTION_CHARS = 2000
NOTE_CHARS = 1000


def _in(values: tuple[str, ...]) -> str:
    return ", ".join("'" + v + "'" for v in values)


# -------------------------------------------------------------------------------------------------- tables


class LedgerProblem(Base):
    """One problem of the ledger: where, what, who answers for it, by when, and how far it has got."""

    __tablename__ = "problems"
    __table_args__ = (
        UniqueConstraint("number", name="uq_problems_number"),
        UniqueConstraint("reporter", "idempotency_key", name="uq_problems_reporter_idempotency_key"),
        CheckConstraint(f"state IN ({_in(STATES)})", name="state"),
        CheckConstraint(f"source IN ({_in(SOURCES)})", name="source"),
        CheckConstraint(f"type IN ({_in(TYPES)})", name="type"),
        CheckConstraint("geom IS NOT NULL OR jsonb_array_length(features) > 0", name="located"),
        Index(
            "uq_problems_open_finding",
            "finding_id",
            unique=True,
            postgresql_where=text(f"state <> '{CLOSED}'"),
        ),
        Index("ix_problems_area", "area"),
        {"comment": "问题台账 problem ledger"},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(20), comment="编号 WT-年份-序号, set by the database")
    source: Mapped[str] = mapped_column(String(10), comment="来源 source")
    type: Mapped[str] = mapped_column(String(10), comment="类型 type")
    description: Mapped[str] = mapped_column(String(DESCRIPTION_CHARS), comment="描述 description")
    geom: Mapped[Any] = mapped_column(Geometry("POINT", srid=STORAGE_SRID), nullable=True)
    features: Mapped[list[dict[str, str]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), comment="关联要素 linked features [{layer, code}]"
    )
    finding_id: Mapped[str | None] = mapped_column(String(40), comment="边界检查发现的编号 boundary-check finding id")
    area: Mapped[str] = mapped_column(String(19), comment="所在网格或社区编码 the area code (who may see it)")
    unit: Mapped[str | None] = mapped_column(String(100), comment="责任单位 responsible unit")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    assignee: Mapped[str | None] = mapped_column(String(60), comment="责任人 responsible person (username)")
    deadline: Mapped[dt.date | None] = mapped_column(Date, comment="整改期限 deadline")
    state: Mapped[str] = mapped_column(String(8), server_default=REGISTERED, comment="状态 state, set by the log")
    reporter: Mapped[str] = mapped_column(String(60), comment="登记人 reporter (username)")
    reporter_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    photos: Mapped[list[str]] = mapped_column(
        ARRAY(String(64)), server_default=text("'{}'::character varying[]"), comment="整改前照片 photos at report"
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), comment="销号时间 closed at")


class ProblemEvent(Base):
    """One transition of a problem: who moved it from where to where, when, with what note and photos. Never changed."""

    __tablename__ = "problem_events"
    __table_args__ = (
        Index("ix_problem_events_problem", "problem_id", "id"),
        {"comment": "问题流转记录 problem transitions (immutable)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    problem_id: Mapped[int] = mapped_column(ForeignKey("problems.id"))
    action: Mapped[str] = mapped_column(String(8), comment="登记 交办 整改 提交验收 销号 退回")
    from_state: Mapped[str | None] = mapped_column(String(8))
    to_state: Mapped[str | None] = mapped_column(String(8), comment="set by the database")
    actor: Mapped[str | None] = mapped_column(String(60), comment="who (username), set by the database")
    actor_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
    note: Mapped[str | None] = mapped_column(String(NOTE_CHARS))
    photos: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default=text("'{}'::character varying[]"))
    assignee: Mapped[str | None] = mapped_column(String(60), comment="交办: the person assigned (username)")
    unit: Mapped[str | None] = mapped_column(String(100), comment="交办: the responsible unit")
    deadline: Mapped[dt.date | None] = mapped_column(Date, comment="交办: the deadline")


class ProblemPhoto(Base):
    """A photo of a problem, its bytes kept in the upload archive under its SHA-256."""

    __tablename__ = "problem_photos"
    __table_args__ = (
        CheckConstraint(f"phase IN ({_in(PHASES)})", name="phase"),
        {"comment": "问题照片 problem photos (content-addressed)"},
    )

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    phase: Mapped[str] = mapped_column(String(4), comment="整改前 or 整改后")
    content_type: Mapped[str] = mapped_column(String(20))
    size_bytes: Mapped[int] = mapped_column(Integer)
    uploader: Mapped[str] = mapped_column(String(60))
    uploaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())


PROBLEMS = LedgerProblem.__tablename__
EVENTS = ProblemEvent.__tablename__
PHOTOS = ProblemPhoto.__tablename__

APP_PRIVILEGES: dict[str, tuple[str, ...]] = {
    PROBLEMS: ("SELECT", "INSERT"),  # changed only by the log's trigger, as the owner
    EVENTS: ("SELECT", "INSERT"),  # an append-only log
    PHOTOS: ("SELECT", "INSERT"),
}
"""What the app role may do to the ledger's tables (layers.migrate grants it)."""

# ------------------------------------------------------------------------------ the workflow, in the database

SEARCH_PATH = "pg_catalog, public, pg_temp"
NEW_FUNCTION = "guatu_problem_new"
REGISTERED_FUNCTION = "guatu_problem_registered"
EVENT_FUNCTION = "guatu_problem_event"
IMMUTABLE_FUNCTION = "guatu_problem_log_immutable"
WHO = f"coalesce(nullif(current_setting('{SETTING_USER}', true), ''), session_user::text)"

SQLSTATE_HTTP = {"GT403": Forbidden, "GT404": NotFound, "GT409": Conflict, "GT422": InvalidInput}
"""The SQLSTATEs the ledger's triggers raise, by the error the API answers with; the message is the code."""


def _raise(sqlstate: str, code: str, detail: str = "''") -> str:
    return f"RAISE EXCEPTION USING ERRCODE = '{sqlstate}', MESSAGE = '{code}', DETAIL = {detail}"


def _case_transitions() -> str:
    arms = " ".join(f"WHEN '{s}>{a}' THEN '{t}'" for (s, a), t in TRANSITIONS.items())
    return f"CASE p.state || '>' || NEW.action {arms} END"


def routines() -> list[tuple[str, str]]:
    """Return (name, SQL) of the ledger's trigger functions (all run as the owner)."""
    new = f"""CREATE OR REPLACE FUNCTION {NEW_FUNCTION}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {SEARCH_PATH} AS $$
DECLARE
  who text := {WHO};
BEGIN
  NEW.state := '{REGISTERED}';
  NEW.reporter := who;
  NEW.reporter_id := (SELECT u.id FROM users u WHERE u.username = who);
  NEW.created_at := clock_timestamp();
  NEW.closed_at := NULL;
  NEW.assignee := NULL;
  NEW.assignee_id := NULL;
  NEW.deadline := NULL;
  NEW.number := 'WT-' || to_char(NEW.created_at AT TIME ZONE 'Asia/Shanghai', 'YYYY') || '-'
    || lpad(NEW.id::text, 6, '0');
  IF EXISTS (SELECT 1 FROM unnest(NEW.photos) AS s(sha) WHERE NOT EXISTS (
      SELECT 1 FROM problem_photos f WHERE f.sha256 = s.sha)) THEN
    {_raise("GT422", "photo_unknown")};
  END IF;
  RETURN NEW;
END
$$"""
    registered = f"""CREATE OR REPLACE FUNCTION {REGISTERED_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {SEARCH_PATH} AS $$
BEGIN
  INSERT INTO problem_events (problem_id, action, photos) VALUES (NEW.id, '{REGISTER}', NEW.photos);
  RETURN NULL;
END
$$"""
    event = f"""CREATE OR REPLACE FUNCTION {EVENT_FUNCTION}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {SEARCH_PATH} AS $$
DECLARE
  p record;
  who text := {WHO};
  acting text := guatu_actor_role();
  target text;
BEGIN
  SELECT * INTO p FROM problems WHERE id = NEW.problem_id FOR UPDATE;
  IF NOT FOUND THEN
    {_raise("GT404", "problem_not_found")};
  END IF;
  NEW.at := clock_timestamp();
  NEW.actor := who;
  NEW.actor_id := (SELECT u.id FROM users u WHERE u.username = who);
  IF EXISTS (SELECT 1 FROM unnest(NEW.photos) AS s(sha) WHERE NOT EXISTS (
      SELECT 1 FROM problem_photos f WHERE f.sha256 = s.sha)) THEN
    {_raise("GT422", "photo_unknown")};
  END IF;
  IF NEW.action = '{REGISTER}' THEN
    IF EXISTS (SELECT 1 FROM problem_events e WHERE e.problem_id = p.id) THEN
      {_raise("GT409", "illegal_transition", "p.state || ' → ' || NEW.action")};
    END IF;
    NEW.from_state := NULL;
    NEW.to_state := '{REGISTERED}';
    RETURN NEW;
  END IF;
  NEW.from_state := p.state;
  target := {_case_transitions()};
  IF target IS NULL THEN
    {_raise("GT409", "illegal_transition", "p.state || ' → ' || NEW.action")};
  END IF;
  NEW.to_state := target;
  IF NEW.action IN ('{ASSIGN}', '{CLOSE}', '{RETURN}') AND acting NOT IN ({_in(VERIFIERS)}) THEN
    {_raise("GT403", "role_not_permitted", "acting || ' → ' || NEW.action")};
  END IF;
  IF NEW.action IN ('{RECTIFY}', '{SUBMIT}') AND acting NOT IN ({_in(RECTIFIERS)})
     AND (acting = '' OR p.assignee IS DISTINCT FROM who) THEN
    {_raise("GT403", "not_assignee", "acting || ' → ' || NEW.action")};
  END IF;
  IF NEW.action = '{ASSIGN}' THEN
    IF NEW.assignee IS NULL OR NOT EXISTS (SELECT 1 FROM users u WHERE u.username = NEW.assignee) THEN
      {_raise("GT422", "assignee_required")};
    END IF;
    IF NOT EXISTS (SELECT 1 FROM users u WHERE u.username = NEW.assignee AND NOT u.disabled
                   AND (u.area IS NULL OR p.area LIKE u.area || '%' OR u.area LIKE p.area || '%')) THEN
      {_raise("GT422", "assignee_outside_area", "NEW.assignee")};
    END IF;
    IF NEW.deadline IS NULL THEN
      {_raise("GT422", "deadline_required")};
    END IF;
    UPDATE problems SET assignee = NEW.assignee, deadline = NEW.deadline,
      assignee_id = (SELECT u.id FROM users u WHERE u.username = NEW.assignee),
      unit = coalesce(NEW.unit, unit) WHERE id = p.id;
  ELSIF NEW.action = '{SUBMIT}' AND cardinality(NEW.photos) = 0 THEN
    {_raise("GT422", "after_photo_required")};
  ELSIF NEW.action IN ('{CLOSE}', '{RETURN}') THEN
    IF EXISTS (SELECT 1 FROM problem_events e
               WHERE e.problem_id = p.id AND e.action IN ('{RECTIFY}', '{SUBMIT}') AND e.actor = who) THEN
      {_raise("GT409", "verifier_is_rectifier", "who")};
    END IF;
  END IF;
  UPDATE problems SET state = target,
    closed_at = CASE WHEN target = '{CLOSED}' THEN NEW.at END WHERE id = p.id;
  RETURN NEW;
END
$$"""
    immutable = f"""CREATE OR REPLACE FUNCTION {IMMUTABLE_FUNCTION}() RETURNS trigger LANGUAGE plpgsql
SET search_path = {SEARCH_PATH} AS $$
BEGIN
  {_raise("GT409", "log_immutable", "TG_OP")};
END
$$"""
    return [
        (NEW_FUNCTION, new),
        (REGISTERED_FUNCTION, registered),
        (EVENT_FUNCTION, event),
        (IMMUTABLE_FUNCTION, immutable),
    ]


def triggers() -> list[tuple[str, str, str, str]]:
    """Return (table, name, function, SQL) of the ledger's triggers."""
    return [
        (
            PROBLEMS,
            "problems_new",
            NEW_FUNCTION,
            f"CREATE TRIGGER problems_new BEFORE INSERT ON {PROBLEMS} FOR EACH ROW EXECUTE FUNCTION {NEW_FUNCTION}()",
        ),
        (
            PROBLEMS,
            "problems_registered",
            REGISTERED_FUNCTION,
            f"CREATE TRIGGER problems_registered AFTER INSERT ON {PROBLEMS} FOR EACH ROW "
            f"EXECUTE FUNCTION {REGISTERED_FUNCTION}()",
        ),
        (
            EVENTS,
            "problem_events_transition",
            EVENT_FUNCTION,
            f"CREATE TRIGGER problem_events_transition BEFORE INSERT ON {EVENTS} FOR EACH ROW "
            f"EXECUTE FUNCTION {EVENT_FUNCTION}()",
        ),
        (
            EVENTS,
            "problem_events_immutable",
            IMMUTABLE_FUNCTION,
            f"CREATE TRIGGER problem_events_immutable BEFORE UPDATE OR DELETE ON {EVENTS} FOR EACH ROW "
            f"EXECUTE FUNCTION {IMMUTABLE_FUNCTION}()",
        ),
        (
            EVENTS,
            "problem_events_no_truncate",
            IMMUTABLE_FUNCTION,
            f"CREATE TRIGGER problem_events_no_truncate BEFORE TRUNCATE ON {EVENTS} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION {IMMUTABLE_FUNCTION}()",
        ),
    ]


def policies() -> list[tuple[str, list[str]]]:
    """Return (table, statements) putting the ledger under row-level security by area (layers.access)."""
    me = f"current_setting('{SETTING_USER}', true)"
    seen = f"(guatu_in_area(area) OR (assignee = {me}))"
    visible = f"(EXISTS (SELECT 1 FROM {PROBLEMS} p WHERE p.id = problem_id))"
    reporters = f"guatu_actor_role() IN ({_in(REPORTERS)})"
    photo_seen = (
        f"(guatu_actor_role() = '{ADMIN}' OR uploader = {me} "
        f"OR EXISTS (SELECT 1 FROM {EVENTS} e WHERE sha256 = ANY (e.photos)))"
    )
    return [
        (
            PROBLEMS,
            [
                f"ALTER TABLE {PROBLEMS} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY guatu_read ON {PROBLEMS} FOR SELECT USING {seen}",
                f"CREATE POLICY guatu_insert ON {PROBLEMS} FOR INSERT WITH CHECK ({reporters} AND guatu_in_area(area))",
            ],
        ),
        (
            EVENTS,
            [
                f"ALTER TABLE {EVENTS} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY guatu_read ON {EVENTS} FOR SELECT USING {visible}",
                f"CREATE POLICY guatu_insert ON {EVENTS} FOR INSERT WITH CHECK {visible}",
            ],
        ),
        (
            PHOTOS,
            [
                f"ALTER TABLE {PHOTOS} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY guatu_read ON {PHOTOS} FOR SELECT USING {photo_seen}",
                f"CREATE POLICY guatu_insert ON {PHOTOS} FOR INSERT WITH CHECK (uploader = {me})",
            ],
        ),
    ]


# ---------------------------------------------------------------------------------------------- errors

MESSAGES: dict[str, tuple[str, str]] = {
    "illegal_transition": (
        "该问题当前状态下不能执行此操作",
        "this action is not allowed in the problem's current state",
    ),
    "verifier_is_rectifier": (
        "验收销号（或退回）的人不能是提交整改的人",
        "the person who verifies (closes or returns) must not be the one who rectified",
    ),
    "role_not_permitted": (
        "您的角色不能执行此操作（交办、销号、退回由街道规划员办理）",
        "your role may not do this (planners assign, close and return)",
    ),
    "not_assignee": (
        "只有责任人或本网格网格员可以整改、提交验收",
        "only the person assigned or the area's grid manager may rectify",
    ),
    "assignee_required": ("交办须指定已有账号的责任人", "assigning needs a responsible person with an account"),
    "assignee_outside_area": (
        "责任人不在该问题所在的辖区（或已停用），请交办给本辖区的人员",
        "the person assigned works elsewhere (or is disabled): assign someone of the problem's area",
    ),
    "deadline_required": ("交办须设定整改期限", "assigning needs a deadline"),
    "after_photo_required": ("提交验收须附整改后照片", "submitting for verification needs an after photo"),
    "photo_unknown": ("照片未上传或编号不对", "a photo id is unknown: upload the photo first"),
    "problem_not_found": ("找不到该问题", "no such problem"),
    "log_immutable": ("流转记录不能修改或删除", "the transition log cannot be changed or deleted"),
}


def database_error(exc: DBAPIError) -> Exception | None:
    """Return the domain error a refusal of the ledger's triggers stands for (None: not one of theirs)."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    kind = SQLSTATE_HTTP.get(str(sqlstate))
    if kind is None:
        if isinstance(orig, pg_errors.UniqueViolation) and "uq_problems_open_finding" in str(orig):
            return Conflict.one(
                "finding_registered",
                "该检查发现已登记为问题，尚未销号",
                "this finding is already registered as an open problem",
                field="finding_id",
            )
        return None
    code = getattr(getattr(orig, "diag", None), "message_primary", None) or "refused"
    detail = getattr(getattr(orig, "diag", None), "message_detail", None) or ""
    zh, en = MESSAGES.get(code, ("数据库拒绝了该操作", "the database refused this"))
    if detail:
        zh, en = f"{zh}（{detail}）", f"{en} ({detail})"
    return kind.one(code, zh, en, field="action")


# --------------------------------------------------------------------------------------------- lights


def warn_days() -> int:
    """Return how many days before its deadline a problem shows yellow (``GUATU_PROBLEM_WARN_DAYS``, default 3)."""
    from layers.settings import layer_settings

    return layer_settings().problem_warn_days


def light(state: str, deadline: dt.date | None, today: dt.date, warn: int | None = None) -> str:
    """Return the overdue light: grey closed, red past the deadline, yellow within WARN days of it, else green."""
    warn = warn_days() if warn is None else warn
    if state == CLOSED:
        return "grey"
    if deadline is None:
        return "green"
    if today > deadline:
        return "red"
    if (deadline - today).days <= warn:
        return "yellow"
    return "green"


LIGHTS_ZH = {"red": "逾期", "yellow": "临期", "green": "正常", "grey": "已销号"}


def actions_for(actor: Actor, row: LedgerProblem | dict[str, Any], rectifiers: Collection[str] = ()) -> list[str]:
    """Return the actions ACTOR may take on a problem now (as the database would allow them).

    RECTIFIERS: who rectified it (整改, 提交验收): never its verifier. Unknown (a list's rows), the
    database still refuses them.
    """
    state = row["state"] if isinstance(row, dict) else row.state
    assignee = row["assignee"] if isinstance(row, dict) else row.assignee
    out = []
    for (src, action), _ in TRANSITIONS.items():
        if src != state:
            continue
        if action in (ASSIGN, CLOSE, RETURN):
            if actor.role not in VERIFIERS:
                continue
            if action in (CLOSE, RETURN) and actor.username in rectifiers:
                continue
        elif actor.role not in RECTIFIERS and assignee != actor.username:
            continue
        out.append(action)
    return out


# ------------------------------------------------------------------------------------------------ photos


def photo_type(body: bytes) -> str | None:
    """Return the content type of BODY if it is a JPEG, PNG or WebP image (by its magic bytes), else None."""
    if body[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if body[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    return None


MAX_PHOTO_PIXELS = 60_000_000
"""The most pixels a photo may have (a phone's is 12–50 M): a small file claiming more is not decoded."""


def _decodes(body: bytes, kind: str) -> bool:
    """Return whether BODY is a whole picture of type KIND (decoded to its last pixel), not just its first bytes."""
    try:
        with Image.open(io.BytesIO(body), formats=[PHOTO_TYPES[kind].replace("jpg", "jpeg").upper()]) as picture:
            width, height = picture.size
            if width * height > MAX_PHOTO_PIXELS:
                return False
            picture.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    return True


def add_photo(session: Session, actor: Actor, body: bytes, phase: str) -> dict[str, Any]:
    """Keep a photo (JPEG, PNG or WebP, at most MAX_PHOTO_BYTES) by its SHA-256; return its id and type."""
    if phase not in PHASES:
        raise InvalidInput.one(
            "phase_invalid", "照片类别应为 整改前 或 整改后", "phase must be 整改前 or 整改后", field="phase"
        )
    if not body:
        raise InvalidInput.one("photo_empty", "照片为空", "the photo is empty", field="file")
    if len(body) > MAX_PHOTO_BYTES:
        raise InvalidInput.one(
            "photo_too_large",
            f"照片超过 {MAX_PHOTO_BYTES // 1_000_000} MB",
            f"the photo is larger than {MAX_PHOTO_BYTES // 1_000_000} MB",
            field="file",
        )
    kind = photo_type(body)
    if kind is None or not _decodes(body, kind):
        raise InvalidInput.one(
            "photo_type", "只接受 JPEG、PNG 或 WebP 照片", "only JPEG, PNG or WebP photos are taken", field="file"
        )
    sha = hashlib.sha256(body).hexdigest()
    archive.keep(body, sha, photo_suffix(kind))  # content-addressed: the same photo is kept once, whoever sends it
    session.execute(
        insert(ProblemPhoto)
        .values(sha256=sha, phase=phase, content_type=kind, size_bytes=len(body), uploader=actor.username)
        .on_conflict_do_nothing(index_elements=["sha256"])
    )
    return {"id": sha, "content_type": kind, "size_bytes": len(body)}


def photo(session: Session, sha: str) -> tuple[bytes, str]:
    """Return (bytes, content type) of photo SHA if the stated actor may see it, else raise NotFound."""
    row = session.execute(select(ProblemPhoto.content_type).where(ProblemPhoto.sha256 == sha)).scalar()
    if row is None:
        raise NotFound.one("photo_not_found", "找不到该照片", "no such photo", id=sha)
    path = archive.root() / sha[:2] / f"{sha}{photo_suffix(row)}"  # named as layers.archive.keep names it
    try:
        body = path.read_bytes()
    except FileNotFoundError:
        raise NotFound.one(
            "photo_pruned", "照片文件已不在存档中", "the photo file is no longer archived", id=sha
        ) from None
    return body, str(row)


# --------------------------------------------------------------------------------------------- creating


@dataclass
class NewProblem:
    """What a report says: what and where (a point, features, or a finding with its geometry)."""

    type: str
    description: str
    source: str = "巡查"
    lon: float | None = None
    lat: float | None = None
    features: list[dict[str, str]] | None = None
    finding_id: str | None = None
    finding_geometry: dict[str, Any] | None = None
    photos: list[str] | None = None
    idempotency_key: str | None = None


def _locate(session: Session, ewkb_hex: str) -> str | None:
    """Return the code of the narrowest unit holding the shape (grid, else community…), None if none does."""
    best: str | None = None
    for unit_layer, level in access.locators_in_use():
        function = access.locate_function(unit_layer, level)
        found = session.execute(
            text(f"SELECT unit FROM {function}(CAST(:wkb AS text[]))"), {"wkb": [ewkb_hex]}
        ).scalar()
        if found is not None and (best is None or len(str(found)) > len(best)):
            best = str(found)
    return best


def _point_hex(session: Session, lon: float, lat: float) -> str:
    return str(
        session.execute(
            text("SELECT encode(ST_AsEWKB(ST_SetSRID(ST_MakePoint(:x, :y), :srid)), 'hex')"),
            {"x": lon, "y": lat, "srid": STORAGE_SRID},
        ).scalar()
    )


def _feature_point(session: Session, layer_id: str, key: str, index: int) -> tuple[str, str | None]:
    """Return (point on the feature as hex EWKB, its area code) of feature KEY of LAYER_ID, if the actor sees it."""
    layer = REGISTRY.get(layer_id)
    if layer is None:
        raise InvalidInput.one(
            "layer_unknown", f"没有图层 {layer_id[:40]}", f"no layer {layer_id[:40]}", field=f"features[{index}].layer"
        )
    model = layer.model
    columns = [getattr(model, name) for name in access.area_fields(layer)]
    row = session.execute(
        select(func.encode(func.ST_AsEWKB(func.ST_PointOnSurface(model.geom)), "hex"), *columns).where(
            getattr(model, layer.key_field) == key
        )
    ).first()
    if row is None:
        raise NotFound.one(
            "feature_not_found",
            f"{layer.zh}中找不到 {key[:60]}",
            f"no feature {key[:60]} in {layer.en.lower()}",
            field=f"features[{index}].code",
        )
    props = dict(zip(access.area_fields(layer), row[1:], strict=True))
    return str(row[0]), access.area_of(layer, props)


def _check_lonlat(lon: float, lat: float) -> None:
    from layers.settings import layer_settings

    x0, y0, x1, y1 = layer_settings().extent
    if not (x0 <= lon <= x1 and y0 <= lat <= y1):
        raise InvalidInput(
            Problem(
                "location_outside_extent",
                f"位置 {lon:.6f}, {lat:.6f} 不在本系统的范围内（应为 WGS84/CGCS2000 经纬度）",
                f"{lon:.6f}, {lat:.6f} lies outside this deployment's extent (send WGS84/CGCS2000 lon/lat)",
                Where(field="lon", location=[lon, lat]),
            )
        )


def _finding_point(geometry: dict[str, Any]) -> tuple[float, float]:
    """Return a point on a finding's GeoJSON geometry (lon/lat in the deployment's extent), or refuse it with a code."""
    try:
        shape = parse_geojson_geometry(geometry)
        check_lonlat_range(shape)
        point = shape.representative_point()
    except InvalidInput as exc:
        first = exc.problems[0]
        raise InvalidInput.one(first.code, first.message_zh, first.message_en, field="finding_geometry") from None
    except shapely.errors.GEOSException:
        raise InvalidInput.one(
            "geometry_invalid", "检查发现的图形无效", "the finding's geometry is invalid", field="finding_geometry"
        ) from None
    try:
        _check_lonlat(point.x, point.y)
    except InvalidInput as exc:
        first = exc.problems[0]
        raise InvalidInput.one(first.code, first.message_zh, first.message_en, field="finding_geometry") from None
    return point.x, point.y


def create(session: Session, actor: Actor, new: NewProblem) -> tuple[dict[str, Any], bool]:
    """Register a problem; return (the problem, whether it is new). A repeated Idempotency-Key returns the first.

    The point is WGS84 lon/lat (taken as CGCS2000: they differ by centimetres, as uploads take them),
    a feature's point on its surface, or a finding's point on its geometry.
    """
    if actor.role not in REPORTERS:
        raise Forbidden.one(
            "role_not_permitted",
            "您的角色不能登记问题（网格员、调查员、规划员可以）",
            "your role may not register problems (grid managers, surveyors and planners may)",
        )
    if new.idempotency_key:
        found = _by_key(session, actor, new.idempotency_key)
        if found is not None:
            return _same_report(found, new), False
    if new.type not in TYPES:
        raise InvalidInput.one(
            "type_invalid", "问题类型不在列表中", f"type must be one of {', '.join(TYPES)}", field="type"
        )
    if new.source not in SOURCES:
        raise InvalidInput.one("source_invalid", "问题来源不在列表中", "unknown source", field="source")
    description = new.description.strip()
    if not description:
        raise InvalidInput.one("description_required", "请填写问题描述", "describe the problem", field="description")
    point_hex: str | None = None
    area: str | None = None
    linked: list[dict[str, str]] = []
    for i, link in enumerate(new.features or []):
        hex_point, code = _feature_point(session, str(link.get("layer", "")), str(link.get("code", "")), i)
        linked.append({"layer": str(link["layer"]), "code": str(link["code"])})
        point_hex, area = point_hex or hex_point, area or code
    if new.finding_geometry is not None:
        x, y = _finding_point(new.finding_geometry)
        point_hex = _point_hex(session, x, y)
    if new.lon is not None and new.lat is not None:
        _check_lonlat(new.lon, new.lat)
        point_hex = _point_hex(session, new.lon, new.lat)
    if point_hex is None:
        raise InvalidInput.one(
            "location_required",
            "请给出位置（经纬度）、关联要素或检查发现",
            "give a location (lon/lat), linked features or a finding",
            field="lon",
        )
    area = _locate(session, point_hex) or area
    if area is None:
        raise InvalidInput.one(
            "location_outside_units",
            "该位置不在任何网格或社区内",
            "this place lies in no grid or community",
            field="lon",
        )
    if not actor.in_area(area):
        raise Forbidden.one(
            "outside_area",
            f"该位置位于 {area}，不在您的辖区内",
            f"this place lies in {area}, outside your area",
        )
    values = {
        "source": new.source,
        "type": new.type,
        "description": description[:DESCRIPTION_CHARS],
        "geom": func.ST_GeomFromEWKB(func.decode(point_hex, "hex")),
        "features": linked,
        "finding_id": new.finding_id,
        "area": area,
        "reporter": actor.username,
        "number": "",
        "photos": list(dict.fromkeys(new.photos or [])),
        "idempotency_key": new.idempotency_key,
    }
    adding = insert(LedgerProblem).values(**values)
    if new.idempotency_key:
        adding = adding.on_conflict_do_nothing(constraint="uq_problems_reporter_idempotency_key")
    statement = adding.returning(LedgerProblem.id)
    try:
        with session.begin_nested():
            pid = session.execute(statement).scalar()
    except DBAPIError as exc:
        mapped = database_error(exc)
        if mapped is None:
            raise
        raise mapped from exc
    if pid is None:  # the same key committed meanwhile by a concurrent copy of this report
        found = _by_key(session, actor, str(new.idempotency_key))
        assert found is not None
        return _same_report(found, new), False
    return read(session, actor, int(pid)), True


def _same_report(found: dict[str, Any], new: NewProblem) -> dict[str, Any]:
    """Return FOUND, the problem stored under NEW's Idempotency-Key, if NEW is the same report; else refuse the key."""
    if (found["type"], found["description"], found["finding_id"]) != (
        new.type,
        new.description.strip()[:DESCRIPTION_CHARS],
        new.finding_id,
    ):
        raise Conflict.one(
            "idempotency_key_reused",
            f"该 Idempotency-Key 已用于另一份上报（{found['number']}）",
            f"this Idempotency-Key was used for another report ({found['number']})",
            field="Idempotency-Key",
        )
    return found


def _by_key(session: Session, actor: Actor, key: str) -> dict[str, Any] | None:
    pid = session.execute(
        select(LedgerProblem.id).where(LedgerProblem.reporter == actor.username, LedgerProblem.idempotency_key == key)
    ).scalar()
    return None if pid is None else read(session, actor, int(pid))


# ------------------------------------------------------------------------------------------ transitions


def transition(
    session: Session,
    actor: Actor,
    pid: int,
    action: str,
    *,
    note: str | None = None,
    assignee: str | None = None,
    unit: str | None = None,
    deadline: dt.date | None = None,
    photos: list[str] | None = None,
) -> dict[str, Any]:
    """Move problem PID by ACTION (the database checks and applies it); return the problem as it is now."""
    if action not in ACTIONS_EN or action == REGISTER:
        raise InvalidInput.one(
            "action_invalid",
            f"操作应为 {'、'.join(a for a in ACTIONS_EN if a != REGISTER)} 之一",
            "action must be one of " + ", ".join(ACTIONS_EN[a] for a in ACTIONS_EN if a != REGISTER),
            field="action",
        )
    if deadline is not None and not DEADLINES[0] <= deadline <= DEADLINES[1]:
        raise InvalidInput.one(
            "deadline_invalid",
            f"整改期限 {deadline.isoformat()} 不在 {DEADLINES[0].year}–{DEADLINES[1].year} 年之间",
            f"the deadline {deadline.isoformat()} is not between {DEADLINES[0].year} and {DEADLINES[1].year}",
            field="deadline",
        )
    if session.execute(select(LedgerProblem.id).where(LedgerProblem.id == pid)).scalar() is None:
        raise NotFound.one("problem_not_found", "找不到该问题", "no such problem", id=pid)
    values = {
        "problem_id": pid,
        "action": action,
        "note": (note or "").strip()[:NOTE_CHARS] or None,
        "assignee": assignee or None,
        "unit": (unit or "").strip()[:100] or None,
        "deadline": deadline,
        "photos": list(dict.fromkeys(photos or [])),
    }
    try:
        with session.begin_nested():
            session.execute(insert(ProblemEvent).values(**values))
    except DBAPIError as exc:
        mapped = database_error(exc)
        if mapped is None:
            raise
        raise mapped from exc
    return read(session, actor, pid)


# ------------------------------------------------------------------------------------------------ reading


def _today() -> dt.date:
    return dt.date.today()


def _row_dict(row: Any, today: dt.date) -> dict[str, Any]:
    return {
        "id": row.id,
        "number": row.number,
        "source": row.source,
        "type": row.type,
        "description": row.description,
        "features": row.features,
        "finding_id": row.finding_id,
        "area": row.area,
        "community": row.area[: hierarchy.COMMUNITY_DIGITS],
        "unit": row.unit,
        "assignee": row.assignee,
        "deadline": row.deadline.isoformat() if row.deadline else None,
        "status": row.state,
        "status_en": STATES_EN.get(row.state, row.state),
        "reporter": row.reporter,
        "photos": list(row.photos or []),
        "created_at": row.created_at.isoformat(),
        "closed_at": row.closed_at.isoformat() if row.closed_at else None,
        "light": light(row.state, row.deadline, today),
    }


def _columns() -> list[Any]:
    return [
        LedgerProblem.id,
        LedgerProblem.number,
        LedgerProblem.source,
        LedgerProblem.type,
        LedgerProblem.description,
        LedgerProblem.features,
        LedgerProblem.finding_id,
        LedgerProblem.area,
        LedgerProblem.unit,
        LedgerProblem.assignee,
        LedgerProblem.deadline,
        LedgerProblem.state,
        LedgerProblem.reporter,
        LedgerProblem.photos,
        LedgerProblem.created_at,
        LedgerProblem.closed_at,
        func.ST_X(LedgerProblem.geom).label("lon"),
        func.ST_Y(LedgerProblem.geom).label("lat"),
    ]


def read(session: Session, actor: Actor, pid: int, today: dt.date | None = None) -> dict[str, Any]:
    """Return problem PID with its transitions and the actions ACTOR may take, or raise NotFound."""
    row = session.execute(select(*_columns()).where(LedgerProblem.id == pid)).first()
    if row is None:
        raise NotFound.one("problem_not_found", "找不到该问题", "no such problem", id=pid)
    out = _row_dict(row, today or _today())
    out["lon"], out["lat"] = row.lon, row.lat
    events = session.execute(
        select(ProblemEvent).where(ProblemEvent.problem_id == pid).order_by(ProblemEvent.id)
    ).scalars()
    out["events"] = [
        {
            "id": e.id,
            "action": e.action,
            "action_en": ACTIONS_EN.get(e.action, e.action),
            "from": e.from_state,
            "to": e.to_state,
            "actor": e.actor,
            "at": e.at.isoformat(),
            "note": e.note,
            "photos": list(e.photos or []),
            "assignee": e.assignee,
            "unit": e.unit,
            "deadline": e.deadline.isoformat() if e.deadline else None,
        }
        for e in events
    ]
    out["rectifier"] = next((e["actor"] for e in reversed(out["events"]) if e["action"] == SUBMIT), None)
    rectifiers = {e["actor"] for e in out["events"] if e["action"] in (RECTIFY, SUBMIT)}
    out["actions"] = actions_for(actor, {"state": row.state, "assignee": row.assignee}, rectifiers)
    return out


def _filtered(
    status: str | None = None,
    overdue: bool | None = None,
    unit: str | None = None,
    scope: str | None = None,
    today: dt.date | None = None,
    bbox: tuple[float, float, float, float] | None = None,
) -> list[Any]:
    today = today or _today()
    where: list[Any] = []
    if status == "open":
        where.append(LedgerProblem.state != CLOSED)
    elif status:
        where.append(LedgerProblem.state == status)
    if overdue is True:
        where.append(and_(LedgerProblem.state != CLOSED, LedgerProblem.deadline < today))
    elif overdue is False:
        where.append(
            or_(LedgerProblem.state == CLOSED, LedgerProblem.deadline.is_(None), LedgerProblem.deadline >= today)
        )
    if unit:
        where.append(or_(LedgerProblem.unit == unit, LedgerProblem.area.startswith(unit)))
    if scope:
        where.append(LedgerProblem.area.startswith(hierarchy.code_prefix(scope)))
    if bbox is not None:
        where.append(func.ST_Intersects(LedgerProblem.geom, func.ST_MakeEnvelope(*bbox, STORAGE_SRID)))
    return where


def list_problems(
    session: Session,
    actor: Actor,
    *,
    status: str | None = None,
    overdue: bool | None = None,
    unit: str | None = None,
    scope: str | None = None,
    page: int = 1,
    size: int = 50,
    today: dt.date | None = None,
) -> dict[str, Any]:
    """Return one page of the problems the actor sees, newest first, with the total."""
    today = today or _today()
    where = _filtered(status, overdue, unit, scope, today)
    total = session.execute(select(func.count()).select_from(LedgerProblem).where(*where)).scalar() or 0
    rows = session.execute(
        select(*_columns()).where(*where).order_by(LedgerProblem.id.desc()).limit(size).offset((page - 1) * size)
    ).all()
    items = []
    for row in rows:
        item = _row_dict(row, today)
        item["actions"] = actions_for(actor, {"state": row.state, "assignee": row.assignee})
        items.append(item)
    return {"total": int(total), "page": page, "size": size, "items": items}


def pins(
    session: Session, actor: Actor, bbox: tuple[float, float, float, float] | None, today: dt.date | None = None
) -> dict[str, Any]:
    """Return the problems with a point inside BBOX as GeoJSON (open ones, and those closed in the last 30 days)."""
    today = today or _today()
    where = _filtered(bbox=bbox, today=today)
    recent = dt.datetime.combine(today - dt.timedelta(days=30), dt.time(), tzinfo=dt.UTC)
    where.append(or_(LedgerProblem.state != CLOSED, LedgerProblem.closed_at >= recent))
    where.append(LedgerProblem.geom.is_not(None))
    rows = session.execute(select(*_columns()).where(*where).order_by(LedgerProblem.id).limit(5000)).all()
    features = []
    for row in rows:
        props = _row_dict(row, today)
        props["light_zh"] = LIGHTS_ZH[props["light"]]
        props["actions"] = actions_for(actor, {"state": row.state, "assignee": row.assignee})
        features.append(
            {
                "type": "Feature",
                "id": row.id,
                "geometry": {"type": "Point", "coordinates": [row.lon, row.lat]},
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _month_start(today: dt.date) -> dt.datetime:
    from layers.settings import layer_settings

    return dt.datetime.combine(today.replace(day=1), dt.time(), tzinfo=ZoneInfo(layer_settings().timezone))


def _figures(today: dt.date) -> list[Any]:
    open_ = LedgerProblem.state != CLOSED
    return [
        func.count().filter(open_).label("open"),
        func.count().filter(and_(open_, LedgerProblem.deadline < today)).label("overdue"),
        func.count().filter(and_(LedgerProblem.closed_at >= _month_start(today))).label("closed_this_month"),
        func.count().label("total"),
    ]


def assigned_to(session: Session, username: str) -> bool:
    """Return whether USERNAME is the responsible person of a problem (seen outside their area too: RLS)."""
    found = session.execute(select(LedgerProblem.id).where(LedgerProblem.assignee == username).limit(1)).first()
    return found is not None


def counts(session: Session, today: dt.date) -> dict[str, int]:
    """Return how many problems the stated actor sees: open, overdue, closed this month, total."""
    row = session.execute(select(*_figures(today)).select_from(LedgerProblem)).one()
    return {"open": row.open, "overdue": row.overdue, "closed_this_month": row.closed_this_month, "total": row.total}


def by_unit(session: Session, today: dt.date, by: str = "community") -> list[dict[str, Any]]:
    """Return per community (BY="community") or responsible unit (BY="unit"): open, overdue, closed this month."""
    key: Any = (
        func.left(LedgerProblem.area, hierarchy.COMMUNITY_DIGITS)
        if by == "community"
        else func.coalesce(LedgerProblem.unit, "未交办")
    )
    rows = session.execute(
        select(key.label("key"), *_figures(today)).select_from(LedgerProblem).group_by(key).order_by(key)
    ).all()
    name = "community" if by == "community" else "unit"
    return [
        {
            name: row.key,
            "open": row.open,
            "overdue": row.overdue,
            "closed_this_month": row.closed_this_month,
            "total": row.total,
        }
        for row in rows
    ]


def open_list(session: Session, scope: str | None, limit: int = 30) -> list[dict[str, Any]]:
    """Return the open problems in SCOPE for a printed list: most urgent first (overdue, then nearest deadline)."""
    today = _today()
    where = _filtered(status="open", scope=scope, today=today)
    rows = session.execute(
        select(*_columns())
        .where(*where)
        .order_by(case((LedgerProblem.deadline.is_(None), 1), else_=0), LedgerProblem.deadline, LedgerProblem.id)
        .limit(limit)
    ).all()
    out = []
    for row in rows:
        text_ = row.description if len(row.description) <= 40 else row.description[:39] + "…"
        out.append(
            {
                "number": row.number,
                "type": row.type,
                "description": text_,
                "unit": row.unit or row.area[: hierarchy.COMMUNITY_DIGITS],
                "deadline": row.deadline.isoformat() if row.deadline else None,
                "status": row.state,
                "light": light(row.state, row.deadline, today),
            }
        )
    return out


def registered(session: Session, finding_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Return {finding id: (number, state)} of the findings registered as problems (the open one, else the latest)."""
    if not finding_ids:
        return {}
    rows = session.execute(
        select(LedgerProblem.finding_id, LedgerProblem.number, LedgerProblem.state)
        .where(LedgerProblem.finding_id.in_(finding_ids))
        .order_by(case((LedgerProblem.state == CLOSED, 0), else_=1), LedgerProblem.id)
    ).all()
    return {str(r.finding_id): (str(r.number), str(r.state)) for r in rows}


# ----------------------------------------------------------------------------------------- Excel export

PROBLEM_COLUMNS = (
    Column("编号", "number", "code"),
    Column("来源", "source"),
    Column("类型", "type"),
    Column("描述", "description"),
    Column("所在网格/社区编码", "area code", "code"),
    Column("责任单位", "responsible unit"),
    Column("责任人", "responsible person"),
    Column("整改期限", "deadline", "date"),
    Column("状态", "status"),
    Column("亮灯", "light"),
    Column("登记人", "reporter"),
    Column("登记时间", "created at", "datetime"),
    Column("销号时间", "closed at", "datetime"),
)
LOG_COLUMNS = (
    Column("编号", "number", "code"),
    Column("动作", "action"),
    Column("原状态", "from"),
    Column("新状态", "to"),
    Column("操作人", "who"),
    Column("时间", "when", "datetime"),
    Column("说明", "note"),
)


def export(
    session: Session,
    *,
    status: str | None = None,
    overdue: bool | None = None,
    scope: str | None = None,
    today: dt.date | None = None,
) -> tuple[list[Table], list[tuple[str, str]]]:
    """Return the problems the stated actor sees (filtered) as sheets 问题台账 and 流转记录, and the cover's lines."""
    today = today or _today()
    where = _filtered(status, overdue, None, scope, today)
    rows = session.execute(select(*_columns()).where(*where).order_by(LedgerProblem.id)).all()
    warn = warn_days()
    problems = [
        [
            r.number,
            r.source,
            r.type,
            r.description,
            r.area,
            r.unit,
            r.assignee,
            r.deadline,
            r.state,
            LIGHTS_ZH[light(r.state, r.deadline, today, warn)],
            r.reporter,
            r.created_at,
            r.closed_at,
        ]
        for r in rows
    ]
    numbers = {r.id: r.number for r in rows}
    log = []
    if numbers:
        events = session.execute(
            select(ProblemEvent)
            .where(ProblemEvent.problem_id.in_(list(numbers)))
            .order_by(ProblemEvent.problem_id, ProblemEvent.id)
        ).scalars()
        log = [[numbers[e.problem_id], e.action, e.from_state, e.to_state, e.actor, e.at, e.note] for e in events]
    said = []
    if status:
        said.append("状态 未销号 open" if status == "open" else f"状态 {status}")
    if overdue is not None:
        said.append("逾期 overdue" if overdue else "未逾期 not overdue")
    if scope:
        said.append(f"范围 {scope}")
    lights = [p[9] for p in problems]
    about = [
        ("日期 on", today.isoformat()),
        ("筛选 filter", "；".join(said) or "全部 all"),
        ("问题数 problems", str(len(problems))),
        ("流转记录 transitions", str(len(log))),
    ]
    about += [(f"亮灯 {zh}", str(lights.count(zh))) for zh in LIGHTS_ZH.values()]
    sheets = [Table("问题台账", PROBLEM_COLUMNS, problems), Table("流转记录", LOG_COLUMNS, log)]
    return sheets, about
