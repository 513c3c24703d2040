"""The layer declaration: each layer is declared once, as fields, and everything derives.

A :class:`Layer` is built from a list of :class:`Field` specs. From it come the SQLAlchemy
model (columns, CHECK constraints, unique natural key, GiST index, geodesic area columns),
the pydantic properties schema, the popup fields, the map style and the legend.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, create_model
from pydantic import Field as PydField
from pydantic_core import PydanticCustomError
from sqlalchemy import (
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    case,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, column_property, mapped_column

from geoalchemy2 import Geometry

from layers import hierarchy
from spatial.db import Base
from spatial.geometry import STORAGE_SRID

FieldKind = Literal["text", "code", "enum", "int", "float", "date"]

TILE_ZOOM_SLACK = 2
"""Vector tiles are served from this many zoom levels below a layer's own minimum zoom."""

READ_ONLY = ("id", "area_m2", "area_mu", "created_at", "updated_at", "version")

EXTRA = "extra"
"""The column holding a feature's other attributes: a file's fields no declared field takes (JSONB, capped)."""
EXTRA_ZH, EXTRA_EN = "其他属性", "Other attributes"
EXTRA_MAX_KEYS = 50
"""Other attributes a feature keeps at most (the rest are dropped, and the report says so)."""
EXTRA_MAX_BYTES = 4096
"""Their size at most, as compact JSON."""

VALID_FROM, VALID_TO = "valid_from", "valid_to"
"""The dates of a versioned layer's features (``Layer.history``): in force from, and until (excluded)."""

Match = tuple[tuple[str, "str | tuple[str, ...]"], ...]
"""Equality conditions on fields: (field, value) or (field, any of several values)."""


def match_sql(match: Match, alias: str = "", prefix: str = "w") -> tuple[list[str], dict[str, Any]]:
    """Return SQL conditions (on table ALIAS) and parameters for MATCH."""
    at = f"{alias}." if alias else ""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    for n, (column, value) in enumerate(match):
        name = f"{prefix}{n}"
        if isinstance(value, tuple):
            conditions.append(f"{at}{column} = ANY(CAST(:{name} AS text[]))")
            params[name] = list(value)
        else:
            conditions.append(f"{at}{column} = :{name}")
            params[name] = value
    return conditions, params


"""Properties the server computes; sent back by a client, they are ignored."""


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_FREE = re.compile(r"^\^(\[[0-9A-Z\-]+\]|\(|\)|\||\{[0-9,]+\}|[0-9A-Z?])+\$$")
"""A code pattern built only of digits, capitals and classes of them admits no control character."""


def _no_control_characters(value: str) -> str:
    """Refuse NUL and other control characters (tabs and line breaks are fine)."""
    if _CONTROL.search(value):
        raise PydanticCustomError("control_character", "contains a control character such as NUL")
    return value


MASK_CHARS = "*＊﹡∗⁎✱"
"""The star a masked value shows, and the look-alikes an input method or a spreadsheet may put in its place."""
_TO_STAR = str.maketrans(dict.fromkeys(MASK_CHARS, "*"))


def looks_masked_text(value: str) -> bool:
    """Tell whether VALUE holds a star or a look-alike of one (no real name or phone number does)."""
    return any(c in value for c in MASK_CHARS)


def as_shown_masked(value: str) -> str:
    """Return VALUE with every look-alike star made the star a masked value shows (孙＊生 → 孙*生)."""
    return value.translate(_TO_STAR)


def _pattern_unless_masked(pattern: str) -> Callable[[str], str]:
    """Return a check of PATTERN that lets a masked value through (kept or refused once the stored one is known)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if looks_masked_text(value) or compiled.search(value):
            return value
        message = "String should match pattern '{pattern}'"
        raise PydanticCustomError("string_pattern_mismatch", message, {"pattern": pattern})

    return check


def mask_text(value: str) -> str:
    """Return VALUE with all but its first and last characters starred (PIPL).

    Examples
    --------
    >>> mask_text("李明华"), mask_text("王五"), mask_text("13812345678")
    ('李*华', '王*', '1*********8')
    """
    if len(value) <= 1:
        return "*"
    if len(value) == 2:
        return value[0] + "*"
    return value[0] + "*" * (len(value) - 2) + value[-1]


def masked_column(column: Any) -> Any:
    """Return a SQL expression that masks COLUMN the way :func:`mask_text` does."""
    length = func.char_length(column)
    return case(
        (column.is_(None), None),
        (length <= 1, "*"),
        (length == 2, func.concat(func.left(column, 1), "*")),
        else_=func.concat(func.left(column, 1), func.repeat("*", length - 2), func.right(column, 1)),
    )


@dataclass(frozen=True)
class Field:
    """One ledger field of a layer, with its labels and rules."""

    name: str
    zh: str
    en: str
    kind: FieldKind = "text"
    required: bool = False
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    pattern_zh: str = ""
    max_length: int = 200
    minimum: float | None = None
    maximum: float | None = None
    references: str | None = None
    known: Callable[[], Iterable[str]] | None = None
    """The values a code may take (a national code list): kept by a CHECK, cheaper than a foreign key."""
    personal: bool = False
    popup: bool = True
    index: bool = False
    filter: bool = False
    """Offered as a filter of the map (and of its statistics, tiles and prints): an enum, a code list, a date."""
    count: bool = False
    """The statistics count features per value of this field (per class, for a code list with ``classes``)."""
    param: str | None = None
    """The query parameter the filter uses for this field, if not its name (links already shared use it)."""
    filter_zh: str = ""
    """How the filter names the field, if shorter than its label (地类 for 地类编码)."""
    labels: Callable[[], Mapping[str, str]] | None = None
    """Names of a code list's values, shown beside the code (0810 公园与绿地)."""
    classes: Callable[[], Iterable[tuple[str, str]]] | None = None
    """The classes (code prefix, name) a filter on this code offers and the statistics count by."""
    searched: bool = False
    """The map's search box finds features whose value of this field contains the words typed."""
    aliases: tuple[str, ...] = ()
    """Other names a file or a ledger gives this field (三调 DKBM for 地块编码): uploads map them to it."""
    translate: tuple[tuple[str, str], ...] = ()
    """Values of another standard read as this field's own (三调 权属性质 30 → 集体), when a file is mapped."""

    def described(self) -> dict[str, Any]:
        """Return what a client is told of this field: name, labels, kind, required, choices, personal."""
        return {
            "name": self.name,
            "zh": self.zh,
            "en": self.en,
            "kind": self.kind,
            "required": self.required,
            "choices": list(self.choices) or None,
            "personal": self.personal,
        }

    def python_type(self) -> Any:
        """Return the Python type of a value of this field."""
        if self.kind == "enum":
            return Literal[self.choices]
        return {"text": str, "code": str, "int": int, "float": float, "date": dt.date}[self.kind]

    def column(self) -> Any:
        """Return the mapped column of this field."""
        types: dict[str, Any] = {
            "text": String(self.max_length) if self.max_length <= 500 else Text(),
            "code": String(self.max_length),
            "enum": String(max(len(c) for c in self.choices) if self.choices else 20),
            "int": Integer(),
            "float": Float(),
            "date": Date(),
        }
        args: list[Any] = [types[self.kind]]
        if self.references:
            args.append(ForeignKey(self.references, ondelete="RESTRICT"))
        return mapped_column(*args, nullable=not self.required, comment=f"{self.zh} {self.en}")

    def checks(self, table: str) -> list[CheckConstraint]:
        """Return the CHECK constraints that keep bad values of this field out."""
        out = []
        if self.choices:
            values = ", ".join("'" + c.replace("'", "''") + "'" for c in self.choices)
            out.append(CheckConstraint(f"{self.name} IN ({values})", name=f"{self.name}_enum"))
        if self.pattern:
            out.append(CheckConstraint(f"{self.name} ~ '{self.pattern}'", name=f"{self.name}_format"))
        if self.known is not None:
            values = ", ".join("'" + c.replace("'", "''") + "'" for c in sorted(self.known()))
            out.append(CheckConstraint(f"{self.name} IN ({values})", name=f"{self.name}_known"))
        lo, hi = self.bounds
        always = self.kind == "float"  # bounded floats also keep NaN and Infinity out
        if lo is not None and (self.minimum is not None or always):
            out.append(CheckConstraint(f"{self.name} >= {lo}", name=f"{self.name}_min"))
        if hi is not None and (self.maximum is not None or always):
            out.append(CheckConstraint(f"{self.name} <= {hi}", name=f"{self.name}_max"))
        return out

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """Return (minimum, maximum), defaulting numbers to what their column can hold."""
        lo, hi = self.minimum, self.maximum
        if self.kind == "int":
            lo = -(2**31) if lo is None else lo
            hi = 2**31 - 1 if hi is None else hi
        elif self.kind == "float":
            lo = -1e15 if lo is None else lo
            hi = 1e15 if hi is None else hi
        return lo, hi

    def pydantic(self) -> tuple[Any, Any]:
        """Return the (type, FieldInfo) pair of this field in a properties schema."""
        kwargs: dict[str, Any] = {"title": f"{self.zh} {self.en}"}
        if self.kind in ("text", "code"):
            kwargs["max_length"] = self.max_length
            kwargs["min_length"] = 1 if self.required else 0
        if self.pattern and not self.personal:
            kwargs["pattern"] = self.pattern
        lo, hi = self.bounds
        if lo is not None:
            kwargs["ge"] = lo
        if hi is not None:
            kwargs["le"] = hi
        if self.kind in ("int", "float"):
            kwargs["strict"] = True  # no booleans, no numeric strings
            kwargs["allow_inf_nan"] = False
        typ = self.python_type()
        if self.pattern and self.personal:  # sent back as shown (1*********8), it must reach the masked-value rules
            typ = Annotated[typ, AfterValidator(_pattern_unless_masked(self.pattern))]
        kept_clean = self.pattern and _CONTROL_FREE.match(self.pattern) and not self.personal  # the pattern does it
        if self.kind in ("text", "code") and not kept_clean:
            typ = Annotated[typ, AfterValidator(_no_control_characters)]
        if self.required:
            return typ, PydField(..., **kwargs)
        return typ | None, PydField(None, **kwargs)


@dataclass(frozen=True)
class Style:
    """How a layer is drawn: a colour per value of one field, idle standing out."""

    by: str | None
    colors: dict[str, str]
    default: str = "#6b7280"
    fill_opacity: float = 0.35
    weight: float = 1.0
    radius: int = 6
    min_zoom: int = 0
    dash: str | None = None
    fill: bool = True
    emphasis: str | None = None
    """The value that must stand out (idle): drawn with a thick outline in its colour."""
    tiled: bool = False
    """Drawn on the map from vector tiles (the big layers: a county's parcels), not GeoJSON by view."""
    printed: bool = True
    """On the wall map unless the print names its layers (a layer too fine for a street's sheet: only when asked)."""
    label: tuple[str, ...] = ()
    """Fields printed inside each feature on the wall map, a line each (a grid's name and code)."""
    numbered: bool = False
    """At large scales the wall map prints each feature's number (its key's last five characters) inside it."""


@dataclass(frozen=True)
class Units:
    """The layer holds units of the hierarchy (see layers.hierarchy): what a scope can be.

    LEVELS are the hierarchy levels it holds (widest first); with several, LEVEL_FIELD says
    which one a feature is (by any of the level's names, urban or rural). PARENT_FIELD holds
    the code of the unit it lies in; NAME_FIELD its name.
    """

    levels: tuple[str, ...]
    level_field: str | None = None
    parent_field: str | None = None
    name_field: str = "name"


@dataclass(frozen=True)
class Locator:
    """A code field kept consistent with where the feature lies: the unit of LEVEL in LAYER (e.g. its grid)."""

    field: str
    layer: str
    level: str | None = None

    @property
    def code_field(self) -> str:
        """Return the field of the unit's code (its layer's key)."""
        return REGISTRY[self.layer].key[0]

    @property
    def where(self) -> Match:
        """Return which features of the unit layer are units of the locator's level."""
        return REGISTRY[self.layer].level_match(self.level) if self.level else ()


@dataclass(frozen=True)
class Coverage:
    """Topology rule: the units of this layer (of CHILD_LEVEL) tile their parent unit of PARENT_LEVEL.

    No gaps, no overlaps, none outside.
    """

    parent: str
    link: str
    parent_level: str | None = None
    child_level: str | None = None
    numbered: bool = False
    """Sequence numbers run west→east, north→south within the parent (checked as a warning)."""

    @property
    def parent_where(self) -> Match:
        """Return which features of the parent layer are the parents."""
        return REGISTRY[self.parent].level_match(self.parent_level) if self.parent_level else ()

    def child_where(self, child: Layer) -> Match:
        """Return which features of CHILD (this rule's layer) are the children."""
        return child.level_match(self.child_level) if self.child_level else ()


@dataclass(frozen=True)
class Within:
    """Topology rule: each feature lies in one unit of FRAME, the one its LINK field names.

    OWN_ONLY: the part outside the named unit is the defect (一户一区 zones), else a feature
    straddling units is reported with its split areas (parcels, shops).
    """

    frame: str
    link: str
    own_only: bool = False


@dataclass(frozen=True)
class NoOverlap:
    """Topology rule: features of this layer do not overlap one another."""


@dataclass(frozen=True)
class Near:
    """Topology rule: each feature touches (within WITHIN_M) the TARGET feature its LINK names."""

    target: str
    link: str
    within_m: float = 2.0


@dataclass(frozen=True)
class EveryTargetHasOne:
    """Topology rule: every TARGET feature matching WHERE is named by some feature's LINK (a household, a zone)."""

    target: str
    link: str
    where: Match = ()


Rule = Coverage | Within | NoOverlap | Near | EveryTargetHasOne


def _rule_link(rule: Rule) -> tuple[str, str] | None:
    """Return (link field, layer it names) of a rule that ties features to features of another layer."""
    if isinstance(rule, Coverage):
        return rule.link, rule.parent
    if isinstance(rule, Within):
        return rule.link, rule.frame
    if isinstance(rule, Near | EveryTargetHasOne):
        return rule.link, rule.target
    return None


"""What the boundary checks (``guatu check``) hold a layer to; run by :mod:`layers.checks`."""

CrossRule = Callable[[dict[str, Any]], tuple[str, str, str, str] | None]
"""A rule across fields: None, or (code, field, message_zh, message_en)."""


@dataclass(frozen=True)
class Count:
    """A figure the statistics count: features whose FIELD holds one of VALUES (idle, revitalised…)."""

    name: str
    zh: str
    en: str
    field: str
    values: tuple[str, ...]
    rate: bool = False
    """Also given as a share of all the features counted (the idle rate)."""
    result: bool = False
    """Reaching it is what the campaign is for (盘活: revitalised, let, earning); the cockpit counts when."""


STATUS_PARAM = "status"
"""The filter parameter naming the field a layer is styled by, whatever its name (the map's status)."""
BEFORE = "_before"
"""The suffix of a date field's filter parameter: features whose date is before the one given."""


def county_range(prefix: str) -> tuple[str, str | None]:
    """Return the bounds [lo, hi) of the keys starting with the county part of PREFIX (hi None: no upper bound).

    Examples
    --------
    >>> county_range("370214001"), county_range("370299"), county_range("3702"), county_range("99")
    (('370214', '370215'), ('370299', '370300'), ('3702', '3703'), ('99', None))
    """
    lo = prefix[: hierarchy.level("county").digits]
    digits = lo.rstrip("9")
    if not digits:
        return lo, None
    return lo, (digits[:-1] + str(int(digits[-1]) + 1)).ljust(len(lo), "0")


def _county_fields(layer: Layer) -> list[str]:
    return [loc.field for loc in layer.locators if loc.field != layer.key_field]


def _same_county_sql(layer: Layer) -> str:
    """Return the CHECK keeping a partitioned layer's locators in its key's county."""
    n = hierarchy.level("county").digits
    key = layer.key_field
    parts = [f"({name} IS NULL OR left({name}, {n}) = left({key}, {n}))" for name in _county_fields(layer)]
    return " AND ".join(parts) or "true"


def _same_county_rule(layer: Layer) -> CrossRule:
    """Return the rule saying, before the database does, that a locator lies in another county than the key."""
    key = layer.key_field

    def rule(props: dict[str, Any]) -> tuple[str, str, str, str] | None:
        n = hierarchy.level("county").digits
        code = props.get(key)
        if not isinstance(code, str) or not code:
            return None
        for name in _county_fields(layer):
            value = props.get(name)
            if isinstance(value, str) and value and value[:n] != code[:n]:
                label = layer.field(key).zh
                return (
                    "code_inconsistent",
                    name,
                    f"{label} {code} 的前{n}位（区县代码）应与 {layer.field(name).zh} {value} 的前{n}位相同",
                    f"{key} {code} must start with the county code ({n} digits) of {name} {value}",
                )
        return None

    return rule


@dataclass
class Layer:
    """A layer, declared once; model, schema, style and legend derive from it."""

    id: str
    zh: str
    en: str
    fields: list[Field]
    key: tuple[str, ...]
    accepts: tuple[str, ...]
    stored: tuple[str, ...]
    style: Style
    has_area: bool = True
    locators: tuple[Locator, ...] = ()
    cross_rules: tuple[CrossRule, ...] = ()
    rules: tuple[Rule, ...] = ()
    history: bool = False
    """Keep every replaced version (with valid_from / valid_to) in ``<table>_versions``: boundaries change."""
    units: Units | None = None
    """The hierarchy levels this layer holds (divisions, grids), if it holds units."""
    example: dict[str, Any] = field(default_factory=dict)
    """An example feature's properties (templates, the guides, tests): valid as they stand."""
    counts: tuple[Count, ...] = ()
    """What the statistics count besides features and area (idle, revitalised…)."""
    campaign: str | None = None
    """The field holding the campaign stage an asset has reached (排查摸底 → 建章立制), if it takes part."""
    name_field: str | None = None
    """The field that names a feature (search hits, unit labels), if any."""
    counter_zh: str = "个"
    """The measure word of a count of its features (地块 块, 商铺 间)."""
    order: int = 0
    editors: tuple[str, ...] = ("planner", "surveyor")
    """The roles (layers.access.ROLES) that may create, change and delete its features within their area;
    an administrator always may."""
    filtered: bool = False
    """The map's filter panel (status, land use, ownership, idle since) narrows this layer, and so does a print's."""
    description_zh: str = ""
    partitioned: bool = False
    """Stored as one table per county (declarative partitioning by RANGE of the key, whose first digits are
    the county's code: layers.partitions); its locators then keep to the key's county (a CHECK and a rule)."""
    let: Match = ()
    """The field values meaning a feature is let out (出租, 承包…): it then needs a lease contract in force
    (layers.contracts; none: ``no_contract``). Empty: the layer holds no assets that are let."""
    model: Any = field(init=False)
    schema: type[BaseModel] = field(init=False)
    module: str = field(init=False, default="")
    """The module that declared it (set by :func:`register`)."""

    def __post_init__(self) -> None:
        """Build the model and the schema from the fields."""
        if self.history and not {VALID_FROM, VALID_TO} <= {f.name for f in self.fields}:
            raise ValueError(f"versioned layer {self.id} must declare {VALID_FROM} and {VALID_TO}")
        names = {f.name for f in self.fields}
        unknown = [c.field for c in self.counts if c.field not in names] + [
            n for n in (self.name_field, self.campaign) if n and n not in names
        ]
        unknown += [name for name, _ in self.let if name not in names]
        if unknown:
            raise ValueError(f"layer {self.id} counts or names by undeclared fields {unknown}")
        if self.partitioned:
            if self.key != ("code",):
                raise ValueError(f"partitioned layer {self.id} must be keyed by code, not {self.key}")
            self.cross_rules = (*self.cross_rules, _same_county_rule(self))
        self.model = self._build_model()
        self.schema = self._build_schema()
        self.history_model = self._build_history_model() if self.history else None

    @property
    def history_table(self) -> str | None:
        """Return the table of replaced versions, if this layer keeps them."""
        return f"{self.table}_versions" if self.history else None

    def _build_history_model(self) -> Any:
        """Return the model of replaced versions: the same fields, no keys, filled by a trigger."""
        table = f"{self.table}_versions"
        attrs: dict[str, Any] = {
            "__tablename__": table,
            "__table_args__": (
                Index(f"ix_{table}_code_dates", "code", "valid_from", "valid_to"),
                Index(f"ix_{table}_geom", "geom", postgresql_using="gist"),
                {"comment": f"{self.zh}历史版本 {self.en}: replaced versions"},
            ),
            "__annotations__": {"id": Mapped[int]},
            "id": mapped_column(Integer, primary_key=True),
            "geom": mapped_column(Geometry(self.geometry_type, srid=STORAGE_SRID, spatial_index=False), nullable=False),
            "replaced_at": mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False),
            "upload_id": mapped_column(Integer, nullable=True),
        }
        for f in self.fields:
            attrs[f.name] = f.column()
        name = "".join(part.title() for part in table.split("_"))
        return type(name, (Base,), attrs)

    @property
    def key_field(self) -> str:
        """Return the field of the natural key (a layer's code)."""
        return self.key[0]

    def in_force(self, alias: str = "", on: str = "current_date") -> list[str]:
        """Return SQL conditions keeping the versions in force ON (a SQL date), none for an unversioned layer."""
        if not self.history:
            return []
        at = f"{alias}." if alias else ""
        return [f"{at}{VALID_FROM} <= {on}", f"({at}{VALID_TO} IS NULL OR {at}{VALID_TO} > {on})"]

    def level_match(self, level_id: str) -> Match:
        """Return which of this unit layer's features are units of LEVEL_ID (by any of its names)."""
        units = self.units
        if units is None or level_id not in units.levels:
            raise ValueError(f"layer {self.id} holds no {level_id}")
        if units.level_field is None:
            return ()
        return ((units.level_field, hierarchy.level(level_id).names),)

    def locator_for(self, level_id: str) -> Locator | None:
        """Return the locator naming this layer's unit of LEVEL_ID (its community, its grid), if any."""
        return next((loc for loc in self.locators if loc.level == level_id), None)

    def scope_condition(self, scope: str, alias: str = "") -> tuple[str, dict[str, Any]] | None:
        """Return the SQL condition keeping this layer's features inside the unit coded SCOPE.

        The field naming the scope's own level is compared, else the narrowest field naming a
        level below it, by prefix; a unit layer's own code by prefix. None: no way to tell.
        """
        at = f"{alias}." if alias else ""
        lv = hierarchy.level_of(scope)
        if lv is None:
            return None
        found = self._scope_condition(scope, lv, at)
        if found is None or not self.partitioned:
            return found
        # The key's county is its locators' (a CHECK): a range on the key keeps the query to the county's tables.
        # Written as literals (digits only): a prepared statement's generic plan then still prunes at planning, and
        # knows the range is the whole county's table (with parameters it may take the key's index to read it all).
        lo, hi = county_range(hierarchy.code_prefix(scope))
        if not re.fullmatch(r"[0-9]+", lo):
            return found
        condition, params = found
        condition = f"{condition} AND {at}{self.key_field} >= '{lo}'"
        if hi is not None:
            condition += f" AND {at}{self.key_field} < '{hi}'"
        return condition, params

    def _scope_condition(self, scope: str, lv: hierarchy.Level, at: str) -> tuple[str, dict[str, Any]] | None:
        own = self.locator_for(lv.id)
        if own is not None:
            return f"{at}{own.field} = :scope", {"scope": scope}
        prefix = {"scope_prefix": hierarchy.code_prefix(scope) + "%"}
        finer = [loc for loc in self.locators if loc.level and hierarchy.level(loc.level).digits > lv.digits]
        if finer:
            loc = min(finer, key=lambda x: hierarchy.level(x.level or "").digits)
            return f"{at}{loc.field} LIKE :scope_prefix", prefix
        if self.units is not None:
            return f"{at}{self.key_field} LIKE :scope_prefix", prefix
        return None

    def filter_param(self, f: Field) -> str:
        """Return the query parameter of the filter on F (its date's ``…_before`` for a date field)."""
        name = STATUS_PARAM if f.name == self.style.by else (f.param or f.name)
        return name + BEFORE if f.kind == "date" else name

    @property
    def filter_fields(self) -> list[Field]:
        """Return the fields offered as filters, the styled one first."""
        return sorted((f for f in self.fields if f.filter), key=lambda f: f.name != self.style.by)

    def filter_field(self, param: str) -> Field | None:
        """Return the filter field whose query parameter is PARAM, or None."""
        return next((f for f in self.filter_fields if self.filter_param(f) == param), None)

    @property
    def count_fields(self) -> list[Field]:
        """Return the fields whose values the statistics count (the styled one always), the styled one first."""
        counted = (f for f in self.fields if f.count or f.name == self.style.by)
        return sorted(counted, key=lambda f: f.name != self.style.by)

    @property
    def tile_min_zoom(self) -> int:
        """Return the lowest zoom its vector tiles are served at: a little below where the map shows it.

        Below it one tile would hold a whole county's features (a z0 parcel tile: all of them);
        the map never asks for one, and nobody else may make the server draw it.
        """
        return max(0, self.style.min_zoom - TILE_ZOOM_SLACK)

    @property
    def table(self) -> str:
        """Return the table name (the layer id)."""
        return self.id

    @property
    def stored_names(self) -> list[str]:
        """Return the columns an upload writes: the ledger fields and the other attributes (a fresh list)."""
        return [*self._by_name, EXTRA]

    @property
    def field_names(self) -> list[str]:
        """Return the names of the ledger fields, in declaration order (a fresh list)."""
        return list(self._by_name)

    def field(self, name: str) -> Field:
        """Return the field called NAME."""
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    @property
    def geometry_type(self) -> str:
        """Return the PostGIS type of the geometry column."""
        return self.stored[0].upper() if len(self.stored) == 1 else "GEOMETRY"

    def _build_model(self) -> Any:
        table = self.table
        checks: list[Any] = [
            CheckConstraint("ST_IsValid(geom)", name="geom_valid"),
            CheckConstraint(f"ST_SRID(geom) = {STORAGE_SRID}", name="geom_srid"),
            CheckConstraint("NOT ST_IsEmpty(geom)", name="geom_not_empty"),
        ]
        if self.geometry_type == "GEOMETRY":
            kinds = ", ".join(f"'ST_{t}'" for t in self.stored)
            checks.append(CheckConstraint(f"ST_GeometryType(geom) IN ({kinds})", name="geom_type"))
        for f in self.fields:
            checks.extend(f.checks(table))
            if f.index:
                checks.append(Index(f"ix_{table}_{f.name}", f.name))
            elif f.filter:  # the ledger sorts and pages by it: (value, id) is its order, tie-break included
                checks.append(Index(f"ix_{table}_{f.name}_id", f.name, "id"))
        if self.has_area:
            checks.append(Index(f"ix_{table}_area_m2_id", "area_m2", "id"))
        options: dict[str, Any] = {"comment": f"{self.zh} {self.en}"}
        if self.partitioned:
            # PostgreSQL wants the partition key in the primary key; the ORM still knows a feature by its id
            checks.append(PrimaryKeyConstraint("id", self.key_field))
            checks.append(CheckConstraint(_same_county_sql(self), name="county_of_key"))
            options["postgresql_partition_by"] = f"RANGE ({self.key_field})"
        ident = mapped_column(Integer, primary_key=not self.partitioned, autoincrement=True, nullable=False)
        attrs: dict[str, Any] = {
            "__tablename__": table,
            "__table_args__": (
                *checks,
                UniqueConstraint(*self.key, name=f"uq_{table}_key"),
                Index(f"ix_{table}_geom", "geom", postgresql_using="gist"),
                options,
            ),
            "__annotations__": {},
            "id": ident,
            "geom": mapped_column(Geometry(self.geometry_type, srid=STORAGE_SRID, spatial_index=False), nullable=False),
            "created_at": mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False),
            "updated_at": mapped_column(
                DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
            ),
            # Which upload created or last changed the feature (None: typed in, or the demo). No
            # foreign key: uploads are an append-only log, and a per-row check halves bulk loads.
            "upload_id": mapped_column(
                Integer,
                nullable=True,
                index=True,
                comment="上传批次 upload that last wrote it",
            ),
            # Raised by one on every update, by a trigger (layers.changes): the ETag of optimistic concurrency.
            "version": mapped_column(
                Integer, nullable=False, server_default="1", comment="版本 version, raised on every update"
            ),
        }
        attrs["__annotations__"].update({"id": Mapped[int]})
        if self.partitioned:
            attrs["__mapper_args__"] = {"primary_key": [ident.column]}
        for f in self.fields:
            attrs[f.name] = f.column()
        # A file's fields no declared field takes, kept when the uploader asks (never personal-looking ones).
        attrs[EXTRA] = mapped_column(JSONB, nullable=True, comment=f"{EXTRA_ZH} {EXTRA_EN}")
        if self.has_area:
            # Geodesic area on the CGCS2000 ellipsoid: PostGIS takes GRS80 from SRID 4490.
            attrs["area_m2"] = mapped_column(
                Float,
                Computed("ST_Area(geom::geography, true)", persisted=True),
                comment="面积（平方米，椭球面） geodesic area m²",
            )
            # 亩 follow from m² when read (1 亩 = 2000/3 m²): the ellipsoidal area is computed once per write.
            attrs["area_mu"] = column_property(attrs["area_m2"].column * 3 / 2000)  # as spatial.geometry.mu_from_m2
        name = "".join(part.title() for part in self.id.split("_"))
        return type(name, (Base,), attrs)

    def _build_schema(self) -> type[BaseModel]:
        name = "".join(part.title() for part in self.id.split("_")) + "Properties"
        fields = {f.name: f.pydantic() for f in self.fields}
        config = ConfigDict(extra="forbid", str_strip_whitespace=True)
        model: type[BaseModel] = create_model(name, __config__=config, **fields)  # type: ignore[call-overload]
        return model

    def popup_fields(self) -> list[dict[str, Any]]:
        """Return the fields a popup shows, with labels and masking."""
        out = [{"name": f.name, "zh": f.zh, "en": f.en, "personal": f.personal} for f in self.fields if f.popup]
        if self.has_area:
            out.append({"name": "area_m2", "zh": "面积(m²)", "en": "Area m²", "personal": False})
            out.append({"name": "area_mu", "zh": "面积(亩)", "en": "Area mu", "personal": False})
        return out

    def legend(self) -> list[dict[str, str]]:
        """Return the legend rows: one per colour, its values together (街道 / 乡镇), in declared order."""
        by_color: dict[str, list[str]] = {}
        for value, color in self.style.colors.items():
            by_color.setdefault(color, []).append(value)
        rows = [{"label": " / ".join(values), "color": color} for color, values in by_color.items()]
        if not rows:
            rows.append({"label": self.zh, "color": self.style.default})
        return rows

    def describe(self) -> dict[str, Any]:
        """Return what a client needs to draw and edit this layer."""
        return {
            "id": self.id,
            "title": {"zh": self.zh, "en": self.en},
            "geometry_types": list(self.accepts),
            "stored_type": self.geometry_type,
            "key": list(self.key),
            "fields": [
                {
                    **f.described(),
                    "pattern": f.pattern,
                    "pattern_zh": f.pattern_zh or None,
                    "max_length": f.max_length,
                    "read_only": False,
                }
                for f in self.fields
            ],
            "read_only": list(READ_ONLY),
            "editors": list(self.editors),
        }


REGISTRY: dict[str, Layer] = {}


@dataclass(frozen=True, order=True)
class Reference:
    """Features of the PARENT layer are named, by their key, in field FIELD of the CHILD layer's features."""

    parent: str
    child: str
    field: str


def references() -> list[Reference]:
    """Return every link between layers the declarations state (locators and rule links), sorted.

    A unit named by others (a community by its grids, a grid by its parcels, a homestead
    parcel by its courtyard zone) cannot be deleted or recoded while they name it: the
    database refuses it (migration 0006), and this list is what that trigger must hold.
    """
    found: set[Reference] = set()
    for layer in REGISTRY.values():
        links = [(loc.field, loc.layer) for loc in layer.locators]
        links += [link for link in map(_rule_link, layer.rules) if link is not None]
        found.update(Reference(parent, layer.id, name) for name, parent in links)
    return sorted(found)


def register(layer: Layer) -> Layer:
    """Add LAYER to the registry and return it (it remembers the module declaring it, for worker processes)."""
    if layer.id in REGISTRY:
        raise ValueError(f"layer {layer.id} declared twice")
    caller = sys._getframe(1).f_globals.get("__name__", "")
    layer.module = caller if caller != "__main__" else ""
    REGISTRY[layer.id] = layer
    return layer


def declared_layer(layer_id: str, module: str = "") -> Layer:
    """Return the layer LAYER_ID, importing MODULE first if this process has not met it (a worker process).

    Layer modules in this package are imported with it; a layer declared elsewhere (a
    deployment's own module) is found by importing the module its declaration named.
    """
    if layer_id not in REGISTRY and module:
        importlib.import_module(module)
    return REGISTRY[layer_id]
