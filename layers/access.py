"""Who may see and change what: roles scoped to an area of the hierarchy, enforced in PostgreSQL.

A user has one role and one area (a unit code: a county, a street or township, a community
or village, a grid; an administrator may have none). The app states, per transaction, who
acts (:meth:`Actor.settings`): ``guatu.user``, ``guatu.role`` and ``guatu.area`` (the area's
code prefix). Row-level security policies, generated here from the layer declarations, keep
every read and write of the app role inside that area: a bug in a route cannot widen access.
Without a user set the app role sees nothing.

A row's area is the code of the narrowest unit it lies in (its grid, else its community:
the layer's locators); a unit layer's rows are their own codes, and the units above the
user's area are visible too (a street sees its county's outline), never writable.
"""

from __future__ import annotations

from dataclasses import dataclass

from layers import hierarchy
from layers.base import REGISTRY, Layer
from spatial.errors import Problem, Where

SETTING_USER = "guatu.user"
SETTING_ROLE = "guatu.role"
SETTING_AREA = "guatu.area"
SETTING_NOTE = "guatu.note"
ADMIN = "admin"


@dataclass(frozen=True)
class Role:
    """A role: what its holders may do inside their area."""

    id: str
    zh: str
    en: str
    edits: bool = False
    """May change the layers that name it among their editors (``Layer.editors``)."""
    personal: bool = False
    """Sees personal fields (household heads, phone numbers) in full."""
    uploads: bool = False
    """May upload files (into the layers it edits)."""
    checks: bool = True
    """May run boundary checks of its area."""
    prints: bool = True
    """May print wall maps of its area."""
    contracts: bool = False
    """Keeps lease contracts (layers.contracts) of its area: creates, changes, records payments."""


ROLES: dict[str, Role] = {
    r.id: r
    for r in (
        Role(ADMIN, "管理员", "Administrator", edits=True, personal=True, uploads=True, contracts=True),
        Role("planner", "规划员", "Planner", edits=True, personal=True, uploads=True, contracts=True),
        Role("surveyor", "调查员", "Surveyor", edits=True, uploads=True),
        Role("grid_manager", "网格员", "Grid manager", edits=True, personal=True),
        Role("leader", "领导", "Leader"),
        Role("viewer", "查看者", "Viewer", checks=False, prints=False),
    )
}


@dataclass(frozen=True)
class Actor:
    """Who acts in a request: a user with a role and an area (None: everywhere, administrators only)."""

    user_id: int | None
    username: str
    role: str
    area: str | None = None
    display_name: str = ""

    @property
    def is_admin(self) -> bool:
        """Return whether the actor may do everything everywhere."""
        return self.role == ADMIN

    @property
    def prefix(self) -> str:
        """Return the code prefix of the actor's area ('' for everywhere)."""
        return "" if self.area is None else hierarchy.code_prefix(self.area)

    def in_area(self, code: str | None) -> bool:
        """Return whether a row whose area code is CODE lies inside the actor's area."""
        if self.is_admin:
            return True
        return code is not None and self.area is not None and code.startswith(self.prefix)

    def may_edit(self, layer: Layer) -> bool:
        """Return whether the actor may change LAYER's features (inside the area)."""
        return self.is_admin or (ROLES[self.role].edits and self.role in layer.editors)

    def sees_personal(self) -> bool:
        """Return whether the actor sees personal fields in full (inside the area)."""
        return ROLES[self.role].personal

    def may_upload(self, layer: Layer) -> bool:
        """Return whether the actor may upload into LAYER."""
        return ROLES[self.role].uploads and self.may_edit(layer)

    def settings(self) -> dict[str, str]:
        """Return the transaction settings that state this actor to PostgreSQL."""
        return {SETTING_USER: self.username, SETTING_ROLE: self.role, SETTING_AREA: self.prefix}


def area_fields(layer: Layer) -> tuple[str, ...]:
    """Return the fields whose first non-null value is a row's area code, narrowest first."""
    if layer.units is not None:
        return (layer.key_field,)
    located = [loc for loc in layer.locators if loc.level]
    located.sort(key=lambda loc: -hierarchy.level(loc.level or "").digits)
    return tuple(loc.field for loc in located)


def area_of(layer: Layer, props: dict[str, object]) -> str | None:
    """Return the area code of a feature with properties PROPS (None: it lies in no known unit)."""
    for name in area_fields(layer):
        value = props.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def row_area_sql(layer: Layer, alias: str = "") -> str:
    """Return the SQL expression of a row's area code."""
    at = f"{alias}." if alias else ""
    names = [f"{at}{name}" for name in area_fields(layer)]
    if not names:
        return "NULL::text"
    return names[0] if len(names) == 1 else f"COALESCE({', '.join(names)})"


FUNCTIONS = f"""CREATE OR REPLACE FUNCTION guatu_code_prefix(unit text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN length(unit) <> 6 THEN unit
              WHEN unit LIKE '__0000' THEN left(unit, 2)
              WHEN unit LIKE '____00' THEN left(unit, 4)
              ELSE unit END
$$
;;
CREATE OR REPLACE FUNCTION guatu_actor_role() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(current_setting('{SETTING_ROLE}', true), '')
$$
;;
CREATE OR REPLACE FUNCTION guatu_actor_area() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN coalesce(current_setting('{SETTING_AREA}', true), '') ~ '^[0-9]+$'
              THEN current_setting('{SETTING_AREA}', true) END
$$
;;
CREATE OR REPLACE FUNCTION guatu_in_area(unit text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN guatu_actor_role() = '{ADMIN}' THEN true
              WHEN guatu_actor_role() = '' OR guatu_actor_area() IS NULL OR unit IS NULL THEN false
              ELSE starts_with(unit, guatu_actor_area()) END
$$
;;
CREATE OR REPLACE FUNCTION guatu_around_area(unit text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT guatu_in_area(unit) OR (
    guatu_actor_role() <> '' AND guatu_actor_area() IS NOT NULL AND unit IS NOT NULL
    AND starts_with(guatu_actor_area(), guatu_code_prefix(unit)))
$$"""
"""The functions the policies call (one set for every layer; nothing layer-specific)."""

FUNCTION_NAMES = (
    "guatu_code_prefix",
    "guatu_actor_role",
    "guatu_actor_area",
    "guatu_in_area",
    "guatu_around_area",
)


def _roles_sql(roles: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{r}'" for r in (ADMIN, *roles) if r in ROLES)
    return f"guatu_actor_role() IN ({listed})"


def policies(layer: Layer) -> list[str]:
    """Return the statements that put LAYER's table under row-level security by area."""
    table = layer.table
    area = row_area_sql(layer)
    seen = f"guatu_around_area({area})" if layer.units is not None else f"guatu_in_area({area})"
    edits = [r for r in layer.editors if ROLES.get(r, Role("", "", "")).edits]
    write = f"{_roles_sql(tuple(edits))} AND guatu_in_area({area})"
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY guatu_read ON {table} FOR SELECT USING ({seen})",
        f"CREATE POLICY guatu_insert ON {table} FOR INSERT WITH CHECK ({write})",
        f"CREATE POLICY guatu_update ON {table} FOR UPDATE USING ({write}) WITH CHECK ({write})",
        f"CREATE POLICY guatu_delete ON {table} FOR DELETE USING ({write})",
    ]


@dataclass(frozen=True)
class Policy:
    """A row-level security policy on TABLE (or, named ``ROW_SECURITY``, the switch that enables them)."""

    table: str
    name: str
    sql: str


ROW_SECURITY = "(row level security)"
CHANGE_LOG = "change_log"
UPLOADS = "uploads"
"""The upload log: each user sees their own uploads (an administrator every one)."""
PREFERENCES = "user_preferences"
"""Per-user preferences (layers.preferences): each user reads and writes their own, nobody else's."""


def declared_policies() -> list[Policy]:
    """Return every policy the declarations call for: per layer table, and on the change log."""
    out: list[Policy] = []
    tables = [(layer.table, policies(layer)) for layer in sorted(REGISTRY.values(), key=lambda x: x.order)]
    tables.append(
        (
            CHANGE_LOG,
            [
                f"ALTER TABLE {CHANGE_LOG} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY guatu_read ON {CHANGE_LOG} FOR SELECT USING (guatu_in_area(area))",
            ],
        )
    )
    own = f"(guatu_actor_role() = '{ADMIN}' OR uploader = current_setting('{SETTING_USER}', true))"
    tables.append(
        (
            UPLOADS,
            [
                f"ALTER TABLE {UPLOADS} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY guatu_read ON {UPLOADS} FOR SELECT USING {own}",
                f"CREATE POLICY guatu_insert ON {UPLOADS} FOR INSERT WITH CHECK {own}",
                f"CREATE POLICY guatu_update ON {UPLOADS} FOR UPDATE USING {own} WITH CHECK {own}",
            ],
        )
    )
    from layers import contracts  # imports this module: asked for here, once both are loaded

    tables.extend(contracts.policies())
    from layers import problems  # the problem ledger: by area, like the layers

    tables.extend(problems.policies())
    mine = f"(user_id = (SELECT u.id FROM users u WHERE u.username = current_setting('{SETTING_USER}', true)))"
    tables.append(
        (
            PREFERENCES,
            [
                f"ALTER TABLE {PREFERENCES} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY guatu_read ON {PREFERENCES} FOR SELECT USING {mine}",
                f"CREATE POLICY guatu_insert ON {PREFERENCES} FOR INSERT WITH CHECK {mine}",
                f"CREATE POLICY guatu_update ON {PREFERENCES} FOR UPDATE USING {mine} WITH CHECK {mine}",
                f"CREATE POLICY guatu_delete ON {PREFERENCES} FOR DELETE USING {mine}",
            ],
        )
    )
    for table, statements in tables:
        for sql in statements:
            if sql.startswith("ALTER TABLE"):
                out.append(Policy(table, ROW_SECURITY, sql))
            elif sql.startswith("CREATE POLICY"):
                out.append(Policy(table, sql.split()[2], sql))
    return out


def personal_fields(layer: Layer) -> list[str]:
    """Return LAYER's personal fields (shown masked unless the actor's role sees them)."""
    return [f.name for f in layer.fields if f.personal]


def readable_columns(layer: Layer) -> list[str]:
    """Return the columns of LAYER's table the app role may read directly (every one but the personal)."""
    hidden = set(personal_fields(layer))
    return [c.name for c in layer.model.__table__.columns if c.name not in hidden]


def shown_function(layer: Layer) -> str:
    """Return the name of the function showing a feature's personal fields (full or masked)."""
    return f"guatu_shown_{layer.table}"


MASK_SQL = """CREATE OR REPLACE FUNCTION guatu_mask(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN v IS NULL THEN NULL
              WHEN char_length(v) <= 1 THEN '*'
              WHEN char_length(v) = 2 THEN left(v, 1) || '*'
              ELSE left(v, 1) || repeat('*', char_length(v) - 2) || right(v, 1) END
$$"""
"""Masks as layers.base.mask_text does (all but the first and last characters starred)."""


def sees_personal_sql() -> str:
    """Return the SQL condition: the actor's role sees personal fields in full."""
    return _roles_sql(tuple(r.id for r in ROLES.values() if r.personal))


def shown_function_sql(layer: Layer) -> str:
    """Return the function (run as the owner) giving a feature's personal fields as JSON: full or masked.

    The app role cannot read those columns itself; this function checks the role and the area.
    """
    fields = personal_fields(layer)
    pairs = ", ".join(
        f"'{name}', CASE WHEN {sees_personal_sql()} THEN t.{name} ELSE guatu_mask(t.{name}) END" for name in fields
    )
    return f"""CREATE OR REPLACE FUNCTION {shown_function(layer)}(fid integer) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT jsonb_build_object({pairs}) FROM {layer.table} t
  WHERE t.id = fid AND guatu_in_area({row_area_sql(layer, "t")})
$$"""


def personal_keys_sql() -> str:
    """Return the function masking the personal fields of a logged row (change_log.before) for the actor."""
    cases = "\n".join(
        f"    WHEN '{layer.id}' THEN ARRAY[{', '.join(repr(n) for n in personal_fields(layer))}]::text[]"
        for layer in sorted(REGISTRY.values(), key=lambda x: x.order)
        if personal_fields(layer)
    )
    return f"""CREATE OR REPLACE FUNCTION guatu_change_before(change_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  c record;
  names text[];
  k text;
  out jsonb;
BEGIN
  SELECT layer, area, before INTO c FROM change_log WHERE id = change_id AND guatu_in_area(area);
  IF NOT FOUND OR c.before IS NULL THEN
    RETURN NULL;
  END IF;
  out := c.before;
  IF {sees_personal_sql()} THEN
    RETURN out;
  END IF;
  names := CASE c.layer
{cases}
    ELSE ARRAY[]::text[] END;
  FOREACH k IN ARRAY names LOOP
    IF out ? k THEN
      out := jsonb_set(out, ARRAY[k], to_jsonb(guatu_mask(out ->> k)));
    END IF;
  END LOOP;
  RETURN out;
END
$$"""


def stated_allows(settings: dict[str, str] | None, code: str | None) -> bool:
    """Return whether the actor SETTINGS state (Actor.settings) may write a row whose area code is CODE."""
    if not settings or not settings.get(SETTING_ROLE):
        return False
    if settings[SETTING_ROLE] == ADMIN:
        return True
    area = settings.get(SETTING_AREA, "")
    return bool(area) and code is not None and code.startswith(area)


def outside_area_problem(layer: Layer, code: str | None, index: int | None) -> Problem:
    """Return the problem of a feature that lies outside the acting user's area."""
    where = code or "—"
    return Problem(
        "outside_area",
        f"该{layer.zh}位于 {where}，不在您的辖区内，不能写入",
        f"this feature lies in {where}, outside your area: it cannot be written",
        Where(feature_index=index, field="geometry"),
    )


def locate_function(layer_id: str, level: str | None) -> str:
    """Return the name of the function that finds, for shapes, the unit of LEVEL in LAYER_ID holding each."""
    return f"guatu_locate_{layer_id}" + (f"_{level}" if level else "")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def locate_function_sql(layer_id: str, level: str | None) -> str:
    """Return the function (run as the owner) giving, per shape, the code of the unit holding its largest share.

    Run as the owner so that every unit counts, not only those of the acting user's area: a
    shape mostly in another community is located there (and refused as outside the area),
    never in the sliver of the user's own. It gives codes only, and only to a stated actor.
    """
    parent = REGISTRY[layer_id]
    conditions = []
    for field, value in parent.level_match(level) if level else ():
        values = value if isinstance(value, tuple) else (value,)
        conditions.append(f"p.{field} IN ({', '.join(_literal(str(v)) for v in values)})")
    conditions.extend(parent.in_force("p"))
    scope = " AND ".join(conditions) or "TRUE"
    return f"""CREATE OR REPLACE FUNCTION {locate_function(layer_id, level)}(wkb text[])
RETURNS TABLE (i integer, unit text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  WITH input AS (
    SELECT (t.n - 1)::integer AS i, CAST(t.w AS geometry) AS g FROM unnest(wkb) WITH ORDINALITY AS t(w, n)
    WHERE guatu_actor_role() <> ''
  ), hits AS (
    SELECT input.i, p.{parent.key_field}::text AS unit, p.geom AS pgeom, input.g,
           count(*) OVER (PARTITION BY input.i) AS n
    FROM input JOIN {parent.table} p ON ST_Intersects(p.geom, input.g) AND {scope}
  )
  SELECT DISTINCT ON (hits.i) hits.i, hits.unit FROM hits
  ORDER BY hits.i, CASE WHEN hits.n = 1 THEN 0 ELSE -ST_Area(ST_Intersection(hits.pgeom, hits.g)) END, hits.unit
$$"""


def locators_in_use() -> list[tuple[str, str | None]]:
    """Return every (unit layer, level) some layer's locator names, once each, in a stable order."""
    found = {(loc.layer, loc.level) for layer in REGISTRY.values() for loc in layer.locators}
    return sorted(found, key=lambda pair: (pair[0], pair[1] or ""))


def taken_function(layer: Layer) -> str:
    """Return the name of the function telling which keys LAYER holds outside the acting user's area."""
    return f"guatu_taken_{layer.table}"


def taken_function_sql(layer: Layer) -> str:
    """Return the function (run as the owner) giving which of some keys are held by rows the actor cannot see.

    A key is unique in the whole layer: an upload that sends one held outside the uploader's
    area is refused for that feature, by name, rather than reported new and dropped.
    """
    key = layer.key_field
    return f"""CREATE OR REPLACE FUNCTION {taken_function(layer)}(keys text[]) RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
  SELECT t.{key}::text FROM unnest(keys) AS k(v) JOIN {layer.table} t ON t.{key} = k.v
  WHERE guatu_actor_role() <> '' AND NOT guatu_in_area({row_area_sql(layer, "t")})
$$"""


def key_taken_problem(layer: Layer, key: str, index: int | None) -> Problem:
    """Return the problem of a feature whose code a feature outside the acting user's area already holds."""
    label = layer.field(layer.key_field).zh
    return Problem(
        "key_taken",
        f"{label} {key} 已被辖区以外的{layer.zh}使用，不能新增或修改：请核对编码",
        f"{layer.key_field} {key} is held by a feature outside your area: check the code",
        Where(feature_index=index, field=f"properties.{layer.key_field}"),
    )
