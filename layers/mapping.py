"""Field mapping: which field of an uploaded file fills which field of a layer, and what becomes of the rest.

A file exported from a desktop GIS or from the 三调 database names its fields its own way
(``DKBM``, ``地块编码``, ``adcode``). :func:`propose` maps each file field to a layer field by
its name, its Chinese or English label, or an alias the declaration gives (``Field.aliases``:
the same matcher as a workbook's headers, :func:`layers.workbook.header_labels`), preferring
what the uploader confirmed last time (remembered in their preferences). A :class:`Mapper`
applies a mapping to each feature's properties before they are checked: renamed, values of
another standard translated (``Field.translate``), and the fields no layer field takes kept
as the feature's other attributes (``extra``) or dropped — never a refusal of the feature.
A field whose name or values look personal (a name, a phone, an ID number) is never kept
among the other attributes, which anyone who sees the feature sees.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from layers import archive, workbook
from layers.base import EXTRA_MAX_BYTES, EXTRA_MAX_KEYS, READ_ONLY, Layer, mask_text
from spatial import formats
from spatial.errors import InvalidInput, Problem, Where

Unmapped = Literal["keep", "drop"]

KEEP = "@extra"
"""The target that keeps a file field as an other attribute (保留为其他属性), whatever its name."""
DROP = None
"""The target that drops a file field (不导入)."""

MAX_MAPPED = 200
"""File fields a mapping may name at most."""
MAX_NAME = 100
"""Characters of a file field's name a mapping may hold."""
MAX_VALUE = 500
"""Characters of an other attribute's text value kept (cut beyond)."""
MAX_PLANS = 64
"""Sets of field names whose renames a mapper remembers (a file's features mostly share one)."""
MAX_LISTED = 200
"""File fields an upload's report names at most (a file of 100,000 property names is counted, not listed)."""
PREFERENCE = "upload.mapping.{layer}"
"""The preference key of a user's confirmed mapping for a layer (layers.preferences)."""

_PERSONAL_NAME = re.compile(
    r"姓名|联系人|电话|手机|身份证|证件|户主|法人|邮箱|住址|"
    r"phone|(?<![a-z])tel(?![a-z])|mobile|id_?card|idno|id_?number|passport|email|e-mail|person|contact",
    re.IGNORECASE,
)
"""File field names that look personal (PIPL): never kept as other attributes."""
_MOBILE = re.compile(r"^(\+?86[- ]?)?1[3-9][0-9]{9}$")
_ID_NUMBER = re.compile(r"^[0-9]{17}[0-9Xx]$|^[0-9]{15}$")
_LANDLINE = re.compile(r"^0[0-9]{2,3}-?[0-9]{7,8}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WITHIN = re.compile(
    r"(?<![0-9])(?:\+?86[- ]?)?1[3-9][0-9](?:[- ]?[0-9]{4}){2}(?![0-9])"  # a mobile: 13812345678, 138-1234-5678
    r"|(?<![0-9])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx]"
    r"(?![0-9A-Za-z])"  # a resident ID number (its birth date in it)
    r"|(?<![0-9])0[0-9]{2,3}-[0-9]{7,8}(?![0-9])"  # a landline with its area code
)
"""A phone or ID number inside a text (备注：房东王五 138-1234-5678)."""


def looks_personal_name(name: str) -> bool:
    """Tell whether a file field NAME looks like it holds personal data (姓名, 电话, id_card…)."""
    return bool(_PERSONAL_NAME.search(name))


def looks_personal_value(value: Any) -> bool:
    """Tell whether VALUE looks like a mobile or landline number or a resident ID number, or holds one in its text."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return False
    text = value.strip().replace(" ", "")
    return bool(_MOBILE.match(text) or _ID_NUMBER.match(text) or _LANDLINE.match(text) or _WITHIN.search(value))


_STICKY = frozenset({"personal_value", "personal_name", "invalid_name"})
"""Why a file field, once dropped, is dropped from every later feature too (a value looked personal)."""


def _name_verdict(name: str) -> str | None:
    """Return why a file field called NAME is never kept as an other attribute, or None."""
    if _CONTROL.search(name) or len(name) > MAX_NAME:
        return "invalid_name"
    return "personal_name" if looks_personal_name(name) else None


# ---------------------------------------------------------------- proposing


def _by_label(layer: Layer) -> dict[str, str]:
    """Return {normalised label: field name} for LAYER's fields (workbook meanings like @wkt left out)."""
    return {k: v for k, v in workbook.header_labels(layer).items() if not v.startswith("@")}


def propose_one(layer: Layer, name: str, labels: Mapping[str, str] | None = None) -> str | None:
    """Return the layer field file field NAME maps to by its name, labels or aliases, or None."""
    return _by_labels(_by_label(layer) if labels is None else labels, name)


def propose(layer: Layer, file_fields: list[str], remembered: Mapping[str, Any] | None) -> dict[str, str | None]:
    """Return {file field: layer field, or None}: the remembered choice first, then by name, label, alias.

    A layer field takes at most one file field: a later candidate for a taken target is left
    unmapped (an exact name wins over a label or an alias).
    """
    labels = _by_label(layer)
    names = set(layer.field_names)
    out: dict[str, str | None] = {}
    taken: dict[str, str] = {}
    # exact names first, so that a file holding both `code` and `DKBM` maps `code` to code
    ordered = sorted(file_fields, key=lambda n: n not in names)
    for name in ordered:
        target: str | None = None
        if remembered and name in remembered:
            chosen = remembered[name]
            if chosen is None or chosen == KEEP or chosen in names:
                target = chosen
        else:
            target = propose_one(layer, name, labels)
        if target in names and target in taken:
            target = None
        if target in names:
            taken[str(target)] = name
        out[name] = target
    return {name: out[name] for name in file_fields}


def remembered_key(layer: Layer) -> str:
    """Return the preference key of a user's confirmed mapping for LAYER."""
    return PREFERENCE.format(layer=layer.id)


def to_remember(mapping: Mapping[str, str | None], limit: int = 8_000) -> dict[str, str | None]:
    """Return MAPPING cut to what a preference holds (its first entries, as compact JSON under LIMIT bytes)."""
    out: dict[str, str | None] = {}
    size = 2
    for name, target in mapping.items():
        size += len(orjson.dumps({name: target})) - 1
        if size > limit:
            break
        out[name] = target
    return out


def targets(layer: Layer) -> list[dict[str, Any]]:
    """Return the layer fields a file field may be mapped to, with what the page shows of each."""
    return [f.described() for f in layer.fields]


def _bad(code: str, zh: str, en: str, name: str | None = None) -> Problem:
    return Problem(code, zh, en, Where(field=f"mapping.{name[:40]}" if name is not None else "mapping"))


def check_mapping(layer: Layer, raw: Any) -> dict[str, str | None]:
    """Return RAW (a decoded JSON object) as a mapping of LAYER, or raise with every problem found.

    Codes: ``mapping_invalid`` (not an object of names to names or null, too many, too long),
    ``mapping_unknown_target`` (not a declared field of the layer), ``mapping_target_twice``
    (two file fields to one layer field).
    """
    if not isinstance(raw, dict):
        raise InvalidInput([_bad("mapping_invalid", "mapping 应为 JSON 对象", "mapping must be a JSON object")])
    if len(raw) > MAX_MAPPED:
        raise InvalidInput(
            [_bad("mapping_invalid", f"mapping 至多 {MAX_MAPPED} 项", f"mapping holds at most {MAX_MAPPED} entries")]
        )
    names = set(layer.field_names)
    problems: list[Problem] = []
    out: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for name, target in raw.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or _CONTROL.search(name):
            problems.append(
                _bad(
                    "mapping_invalid",
                    f"文件字段名无效（1–{MAX_NAME} 个字符，不含控制字符）",
                    f"a file field name is 1–{MAX_NAME} characters without control characters",
                    str(name),
                )
            )
            continue
        if target is not None and not isinstance(target, str):
            problems.append(_bad("mapping_invalid", "目标应为字段名或 null", "a target is a field name or null", name))
            continue
        if target is not None and target != KEEP and target not in names:
            problems.append(
                _bad(
                    "mapping_unknown_target",
                    f"“{str(target)[:40]}”不是图层“{layer.zh}”的可写字段",
                    f"{str(target)[:40]!r} is not a writable field of layer {layer.id}",
                    name,
                )
            )
            continue
        if target in names:
            if target in sources:
                problems.append(
                    _bad(
                        "mapping_target_twice",
                        f"文件字段“{sources[target][:40]}”和“{name[:40]}”都映射到了“{layer.field(target).zh}”",
                        f"file fields {sources[target][:40]!r} and {name[:40]!r} both map to {target}",
                        name,
                    )
                )
                continue
            sources[target] = name
        out[name] = target
    if problems:
        raise InvalidInput(problems)
    return out


# ---------------------------------------------------------------- applying


@dataclass
class Mapper:
    """Applies a mapping to each feature's properties: renamed, translated, the rest kept aside or dropped.

    Plain data (picklable): a worker process applies it too, and hands back what it saw.
    """

    fields: frozenset[str]
    explicit: dict[str, str | None]
    remembered: dict[str, str | None]
    unmapped: Unmapped
    labels: dict[str, str]
    translations: dict[str, dict[str, str]]
    personal_fields: frozenset[str]
    resolved: dict[str, str | None] = field(default_factory=dict)
    identity: frozenset[str] = frozenset()
    seen: dict[str, str | None] = field(default_factory=dict)
    """What became of each file field met: a layer field, KEEP, or None (dropped)."""
    dropped: dict[str, str] = field(default_factory=dict)
    """File field: why it was dropped (chosen, unmapped, personal_name, personal_value, not_scalar, capped, taken)."""
    translated: dict[str, int] = field(default_factory=dict)
    unlisted: int = 0
    """File fields met beyond the first MAX_LISTED: handled alike, counted only (the report stays small)."""
    names: dict[str, str | None] = field(default_factory=dict)
    """File field name: why it is never kept (invalid_name, personal_name), or None."""
    plans: dict[tuple[str, ...], tuple[tuple[str, str], ...] | None] = field(default_factory=dict)
    """Per set of file field names (in order): the renames that are all a feature needs, or None (look closer).

    A file's features mostly name the same fields in the same order: each is then mapped by
    one dict comprehension, not field by field (100,000 features: the checked path stays cheap).
    """

    @classmethod
    def of(
        cls,
        layer: Layer,
        explicit: Mapping[str, str | None] | None = None,
        remembered: Mapping[str, str | None] | None = None,
        unmapped: Unmapped = "keep",
    ) -> Mapper:
        """Return the mapper of LAYER for an EXPLICIT mapping (else proposed, REMEMBERED choices first)."""
        names = frozenset(layer.field_names)
        explicit = dict(explicit or {})
        moved = {k for k, v in explicit.items() if v != k}
        return cls(
            fields=names,
            explicit=explicit,
            remembered={k: v for k, v in (remembered or {}).items() if v is None or v == KEEP or v in names},
            unmapped=unmapped,
            labels=_by_label(layer),
            translations={f.name: dict(f.translate) for f in layer.fields if f.translate},
            personal_fields=frozenset(f.name for f in layer.fields if f.personal),
            identity=(names | frozenset(READ_ONLY)) - moved,
        )

    def target(self, name: str) -> str | None:
        """Return what file field NAME becomes: a layer field, KEEP, or None (the unmapped choice applies)."""
        found = self.resolved.get(name, "")
        if found != "":
            return found
        if name in self.explicit:
            found = self.explicit[name]
        elif name in self.remembered:
            found = self.remembered[name]
        elif name in self.fields or name in READ_ONLY:
            found = name
        else:
            found = _by_labels(self.labels, name)
        if len(self.resolved) < 10_000:
            self.resolved[name] = found
        return found

    def apply(self, props: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Return PROPS mapped to the layer's fields, and the other attributes kept (compact JSON) or None."""
        if self.identity.issuperset(props):
            for name in props:
                if name not in self.seen and name not in READ_ONLY:
                    self.seen[name] = name
            return props, None
        keys = tuple(props)
        plan = self.plans.get(keys, ())
        if plan == () and len(self.plans) < MAX_PLANS:
            plan = self.plans[keys] = self._plan(keys)
        if plan:
            return self._renamed(props, plan), None
        out: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        size = 2
        later: list[tuple[str, Any]] = []
        for name, value in props.items():
            target = self.target(name)
            if target is not None and target != KEEP:
                if target in out:  # a second file field for one layer field: treated as unmapped, never overwriting
                    if self.unmapped == "drop":
                        self._drop(name, "taken")
                    else:
                        later.append((name, value))
                    continue
                if name != target and target in self.translations and value is not None:
                    shown = self.translations[target].get(str(value).strip())
                    if shown is not None:
                        value = shown
                        self.translated[target] = self.translated.get(target, 0) + 1
                out[target] = value
                if name not in READ_ONLY:
                    self._saw(name, target)
                continue
            explicit_drop = name in self.explicit and self.explicit[name] is None
            if explicit_drop or (target is None and name in self.remembered):
                self._drop(name, "chosen")
                continue
            if target is None and self.unmapped == "drop":
                self._drop(name, "unmapped")
                continue
            later.append((name, value))
        for name, value in later:
            if self.dropped.get(name) in _STICKY:
                continue
            verdict = self.names.get(name, "")
            if verdict == "":
                verdict = _name_verdict(name)
                if len(self.names) < 10_000:
                    self.names[name] = verdict
            if verdict is not None:
                self._drop(name, verdict)
                continue
            if value is None or value == "":
                self._saw(name, KEEP)
                continue
            if not (isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value))):
                self._drop(name, "not_scalar")
                continue
            if looks_personal_value(value):
                self._drop(name, "personal_value")
                extra.pop(name, None)
                continue
            if isinstance(value, str):
                value = _CONTROL.sub("", value)[:MAX_VALUE]
            grown = len(orjson.dumps({name: value})) - 1
            if len(extra) >= EXTRA_MAX_KEYS or size + grown > EXTRA_MAX_BYTES:
                self._drop(name, "capped")
                continue
            size += grown
            extra[name] = value
            self._saw(name, KEEP)
        return out, (orjson.dumps(extra).decode() if extra else None)

    def _renamed(self, props: dict[str, Any], plan: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        """Return PROPS renamed by PLAN, values of another standard translated."""
        out = {target: props[name] for name, target in plan}
        for name, target in plan:
            table = self.translations.get(target)
            if table is not None and name != target and out[target] is not None:
                shown = table.get(str(out[target]).strip())
                if shown is not None:
                    out[target] = shown
                    self.translated[target] = self.translated.get(target, 0) + 1
        return out

    def _plan(self, keys: tuple[str, ...]) -> tuple[tuple[str, str], ...] | None:
        """Return the renames mapping a feature of these KEYS, when that is all it takes (else None).

        Every key must go to a distinct layer field with no values to translate, or be dropped
        by the uploader's choice (or be a read-only name): no other attribute to keep or look at.
        """
        pairs: list[tuple[str, str]] = []
        chosen: list[str] = []
        taken: set[str] = set()
        for name in keys:
            target = self.target(name)
            if name in READ_ONLY and target == name:
                continue
            if target is None and (name in self.explicit or name in self.remembered):
                chosen.append(name)
                continue
            if target is None or target == KEEP or target in taken:
                return None
            if target in self.fields:
                taken.add(target)
                pairs.append((name, target))
                continue
            return None
        if not pairs:
            return None
        for name, target in pairs:
            self._saw(name, target)
        for name in chosen:
            self._drop(name, "chosen")
        return tuple(pairs)

    def _drop(self, name: str, why: str) -> None:
        if name not in self.dropped and self._room(name):
            self.dropped[name] = why
            self.seen[name] = None

    def _room(self, name: str) -> bool:
        """Tell whether NAME is (or may yet be) listed; count it otherwise."""
        if name in self.seen or len(self.seen) < MAX_LISTED:
            return True
        self.unlisted += 1
        return False

    def _saw(self, name: str, target: str | None) -> None:
        if name not in self.seen and self._room(name):
            self.seen[name] = target

    def merge(self, other: Mapper) -> None:
        """Take in what another copy of this mapper (a worker's) saw."""
        for name, target in other.seen.items():
            if name not in other.dropped:
                self._saw(name, target)
        for name, why in other.dropped.items():
            self._drop(name, why)
        self.unlisted += other.unlisted
        for name, n in other.translated.items():
            self.translated[name] = self.translated.get(name, 0) + n

    def observed(self) -> tuple[dict[str, Any], dict[str, str], dict[str, int], int]:
        """Return what it saw: (seen, dropped, translated, unlisted), plain data for a worker to hand back."""
        return dict(self.seen), dict(self.dropped), dict(self.translated), self.unlisted

    def take(self, observed: tuple[dict[str, Any], dict[str, str], dict[str, int], int]) -> None:
        """Take in what a worker's copy saw (from :meth:`observed`)."""
        seen, dropped, translated, unlisted = observed
        other = Mapper(self.fields, {}, {}, self.unmapped, {}, {}, frozenset(), seen=seen, dropped=dropped)
        other.translated, other.unlisted = translated, unlisted
        self.merge(other)

    def report(self, layer: Layer) -> dict[str, Any] | None:
        """Return what the upload did with the file's fields, for its report (None: every field was a layer field)."""
        renamed = {n: t for n, t in self.seen.items() if t not in (None, KEEP) and t != n}
        kept = sorted(n for n, t in self.seen.items() if t == KEEP and n not in self.dropped)
        dropped = dict(sorted(self.dropped.items()))
        if not (renamed or kept or dropped or self.translated or self.unlisted):
            return None
        notes = []
        if renamed:
            shown = "，".join(f"{n}→{layer.field(t).zh}" for n, t in renamed.items())
            notes.append(f"已按映射导入：{shown} (mapped)")
        if kept:
            notes.append(f"保留为其他属性：{'、'.join(kept)} (kept as other attributes)")
        personal = [n for n, why in dropped.items() if why.startswith("personal")]
        if personal:
            notes.append(
                f"疑似个人信息，未导入：{'、'.join(personal)}（如需导入，请映射到图层的个人信息字段） "
                "(looks personal: dropped; map it to a declared personal field to import it)"
            )
        other = [n for n, why in dropped.items() if not why.startswith("personal")]
        if other:
            notes.append(f"未导入：{'、'.join(other)} (dropped)")
        for name, n in self.translated.items():
            notes.append(f"{layer.field(name).zh}：{n} 个值按三调代码转换（如 30→集体） ({n} coded values translated)")
        if self.unlisted:
            notes.append(f"另有 {self.unlisted} 个字段值未逐一列出 ({self.unlisted} more field values not listed)")
        return {
            "mapped": renamed,
            "extra": kept,
            "dropped": dropped,
            "translated": dict(self.translated),
            "unlisted": self.unlisted,
            "notes": notes,
        }


def _by_labels(labels: Mapping[str, str], name: str) -> str | None:
    """Return the field file field NAME maps to by LABELS (normalised label: field), or None."""
    norm = workbook._norm(name)
    return labels.get(norm) or labels.get(workbook._bare(norm))


# ---------------------------------------------------------------- describing a file

SAMPLED_FEATURES = 1_000
"""Features read to list a file's fields and sample values."""
SAMPLES = 3
"""Sample values shown per field."""
MAX_FIELDS = 200
"""Fields listed at most."""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    return "object"


def _shown_sample(name: str, value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = _CONTROL.sub("", text)[:60]
    return mask_text(text) if looks_personal_name(name) or looks_personal_value(value) else text


def masked_fields(
    layer: Layer, fields: list[dict[str, Any]], chosen: Mapping[str, str | None] | None = None
) -> list[dict[str, Any]]:
    """Return a file's FIELDS ([{name, type, samples}]) with the samples of personal ones masked.

    For what is kept (an upload's report, which every user of the area may read): a field whose
    name or values look personal, or that goes to a personal field of LAYER (by the mapping
    CHOSEN, else by name, label or alias), shows its samples masked (1*********8), never in full.
    """
    personal = {f.name for f in layer.fields if f.personal}
    shown = set(layer.field_names) - personal
    labels = _by_label(layer)
    out = []
    for f in fields:
        name = str(f.get("name"))
        target = chosen[name] if chosen and name in chosen else propose_one(layer, name, labels)
        # a field stored in a field shown in full shows nothing more here (a 15-digit grid code is no ID number)
        hidden = target in personal or (target not in shown and looks_personal_name(name))
        samples = [
            mask_text(_CONTROL.sub("", v if isinstance(v, str) else orjson.dumps(v).decode())[:60])
            if hidden or (target not in shown and looks_personal_value(v))
            else v
            for v in f.get("samples", ())
        ]
        out.append({**f, "samples": samples})
    return out


def describe_properties(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return [{name, type, samples}] of the property ROWS (in order first met; personal-looking samples masked)."""
    fields: dict[str, dict[str, Any]] = {}
    for props in rows:
        for name, value in props.items():
            if not isinstance(name, str):
                continue
            entry = fields.get(name)
            if entry is None:
                if len(fields) >= MAX_FIELDS:
                    continue
                entry = fields[name] = {"name": _CONTROL.sub("", name)[:MAX_NAME], "type": None, "samples": []}
            if value is None or value == "":
                continue
            entry["type"] = entry["type"] or _kind(value)
            shown = _shown_sample(name, value)
            if len(entry["samples"]) < SAMPLES and shown not in entry["samples"]:
                entry["samples"].append(shown)
    for entry in fields.values():
        entry["type"] = entry["type"] or "text"
    return list(fields.values())


def describe_file(
    path: Path, filename: str | None = None, *, layer: str | None = None, encoding: str | None = None
) -> dict[str, Any]:
    """Return {format, fields: [{name, type, samples}], count} of an uploaded file.

    The single dispatch point by format: GeoJSON is read here; an Excel ledger is matched by
    its headers (layers.workbook) and listed without fields; every other format (GeoPackage,
    Shapefile, KML, CSV …) is read as an upload reads it (``spatial.formats.read_vector``,
    LAYER and ENCODING as the upload would pass them), and the answer says how (layers,
    encoding and where it came from, notes).
    """
    from spatial.geojson_in import open_geojson

    with path.open("rb") as handle:
        head = handle.read(formats.HEAD)
    fmt = formats.sniff(head, filename)
    if fmt == "zip":
        fmt = formats.zip_format(path)
    if fmt == "xlsx":
        return {"format": "xlsx", "fields": [], "count": None}
    if fmt != "geojson":
        read = formats.read_vector(path, fmt, layer=layer, encoding=encoding, scratch=archive.spool_dir())
        sampled = orjson.loads(read.geojson)["features"][:SAMPLED_FEATURES]
        listed = [f["properties"] for f in sampled if isinstance(f.get("properties"), dict)]
        return {**read.describe(), "fields": describe_properties(listed)}
    rows: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        if not os.fstat(handle.fileno()).st_size:
            source = open_geojson(b"")  # refused as empty, as an upload is
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        source = open_geojson(memoryview(mapped))  # mapped, never copied whole into memory
        for raw in source.raw_features(0, min(source.count, SAMPLED_FEATURES)):
            try:
                feature = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            props = feature.get("properties") if isinstance(feature, dict) else None
            if isinstance(props, dict):
                rows.append(props)
        count = source.count
        del source
    finally:
        with contextlib.suppress(BufferError):  # views read from it go with the source
            mapped.close()
    return {"format": "geojson", "fields": describe_properties(rows), "count": count}
