"""Field mapping: a file's own field names mapped to a layer's, the rest kept as other attributes or dropped."""

from __future__ import annotations

import json
import pickle
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.base import REGISTRY
from layers.mapping import KEEP, Mapper, looks_personal_name, looks_personal_value, propose
from tests.accounts import bearer
from tests.samples import COMMUNITY, GRID, X0, Y0, polygon, sample

UPLOADS = "/api/layers/{layer}/uploads"


def collection(features: list[dict[str, Any]]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False).encode()


def chinese_shops(n: int = 2) -> list[dict[str, Any]]:
    """Shops as a desktop GIS exports them with Chinese column names, a remark, a phone and a contact."""
    out = []
    for i in range(n):
        out.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [X0 + 0.0003 * i, Y0 + 0.0002]},
                "properties": {
                    "商铺编号": COMMUNITY + f"21{i:05d}",
                    "名称": f"南疃路{i}号",
                    "权属": "集体",
                    "状态": "闲置",
                    "地址": "南疃路",
                    "备注": f"临街{i}",
                    "联系电话": "0532-8888888",
                    "负责人": "13812345678",
                },
            }
        )
    return out


def upload(client: TestClient, body: bytes, layer: str = "shops", **params: Any) -> Any:
    return client.post(UPLOADS.format(layer=layer), content=body, params=params)


# ---------------------------------------------------------------- proposing


def test_proposal_by_name_label_alias_and_sandiao_names() -> None:
    parcels = REGISTRY["parcels"]
    fields = ["DKBM", "地类编码", "qsxz", "ZLDWMC", "QSDWMC", "DKMC", "Use status", "网格编码", "TBMJ", "BSM"]
    assert propose(parcels, fields, None) == {
        "DKBM": "code",
        "地类编码": "land_use_code",
        "qsxz": "ownership",
        "ZLDWMC": "address",
        "QSDWMC": "owner",
        "DKMC": "name",
        "Use status": "use_status",
        "网格编码": "grid_code",
        "TBMJ": None,
        "BSM": None,
    }
    assert propose(REGISTRY["divisions"], ["adcode", "name", "source", "note"], None) == {
        "adcode": "code",
        "name": "name",
        "source": None,
        "note": None,
    }


def test_an_exact_name_wins_over_an_alias_and_one_target_takes_one_field() -> None:
    proposed = propose(REGISTRY["parcels"], ["DKBM", "code", "地块代码"], None)
    assert proposed == {"DKBM": None, "code": "code", "地块代码": None}


def test_the_remembered_choice_comes_first() -> None:
    proposed = propose(REGISTRY["parcels"], ["DKBM", "说明", "BSM"], {"说明": "idle_reason", "BSM": None, "x": "no"})
    assert proposed == {"DKBM": "code", "说明": "idle_reason", "BSM": None}


def test_personal_looking_names_and_values() -> None:
    for name in ("姓名", "联系人", "联系电话", "手机号", "身份证号", "证件号码", "phone", "Tel", "mobile", "id_card"):
        assert looks_personal_name(name), name
    for name in ("备注", "source", "note", "title", "hotel"):
        assert not looks_personal_name(name), name
    for value in ("13812345678", 13812345678, "370214199001011234", "37021419900101123X", "0532-88888888"):
        assert looks_personal_value(value), value
    for value in ("南疃路", "2021", 1201, 3.5, "370214001009"):
        assert not looks_personal_value(value), value
    within = ("房东王五 138-1234-5678", "联系人：13812345678", "身份证370214199001011234号", "电话0532-88888888 转 2")
    for value in within:  # kept in a remark under an innocent name (备注2): read by everyone before
        assert looks_personal_value(value), value
    for value in ("3702140010092100001", "面积 85.5 平方米，2024-01-01 起租", "门牌 138 号", "20240101123456"):
        assert not looks_personal_value(value), value
    mapper = Mapper.of(REGISTRY["shops"])
    _, extra = mapper.apply({"商铺编号": "1", "备注2": "房东王五 138-1234-5678", "备注": "临街"})
    assert orjson.loads(extra or "{}") == {"备注": "临街"} and mapper.dropped["备注2"] == "personal_value"


def test_a_mapper_goes_to_a_worker_and_back() -> None:
    mapper = Mapper.of(REGISTRY["shops"])
    copy = pickle.loads(pickle.dumps(mapper))
    props, extra = copy.apply({"商铺编号": "1", "备注": "x", "手机": "1"})
    assert props == {"code": "1"} and orjson.loads(extra or "{}") == {"备注": "x"}
    mapper.take(copy.observed())
    report = mapper.report(REGISTRY["shops"])
    assert report is not None and report["extra"] == ["备注"] and report["dropped"] == {"手机": "personal_name"}


def test_other_attributes_are_capped_and_scalar() -> None:
    mapper = Mapper.of(REGISTRY["shops"])
    props: dict[str, Any] = {f"f{i}": i for i in range(80)}
    props.update({"nested": {"a": 1}, "list": [1, 2], "big": "字" * 2000})
    _, extra = mapper.apply(props)
    kept = orjson.loads(extra or "{}")
    assert len(kept) <= 50 and len(orjson.dumps(kept)) <= 4096
    assert "nested" not in kept and "list" not in kept
    assert mapper.dropped["nested"] == "not_scalar" and "capped" in mapper.dropped.values()


# ---------------------------------------------------------------- uploads


def test_a_chinese_labelled_file_just_works(client: TestClient, session: Session) -> None:
    response = upload(client, collection(chinese_shops()))
    assert response.status_code == 201, response.text
    report = response.json()["report"]
    assert report["summary"]["new"] == 2 and report["summary"]["rejected"] == 0
    fields = report["fields"]
    expected = {"商铺编号": "code", "名称": "name", "权属": "ownership", "状态": "status", "地址": "address"}
    assert fields["mapped"] == expected
    assert fields["extra"] == ["备注"]
    assert fields["dropped"] == {"联系电话": "personal_name", "负责人": "personal_value"}
    assert any("个人信息" in note for note in fields["notes"])
    stored = session.execute(text("SELECT code, extra FROM shops ORDER BY code")).all()
    assert [row[1] for row in stored] == [{"备注": "临街0"}, {"备注": "临街1"}]
    fid = session.execute(text("SELECT id FROM shops ORDER BY code LIMIT 1")).scalar_one()
    feature = client.get(f"/api/layers/shops/features/{fid}").json()
    assert feature["extra"] == {"备注": "临街0"} and "extra" not in feature["properties"]
    listed = client.get("/api/layers/shops/features").json()
    assert {json.dumps(f.get("extra"), ensure_ascii=False) for f in listed["features"]} == {
        '{"备注": "临街0"}',
        '{"备注": "临街1"}',
    }
    blob = json.dumps(feature, ensure_ascii=False) + json.dumps(listed, ensure_ascii=False)
    assert "13812345678" not in blob and "8888888" not in blob


def test_an_explicit_mapping_and_dropping_the_rest(client: TestClient, session: Session) -> None:
    mapping = {"商铺编号": "code", "名称": "name", "权属": "ownership", "状态": "status", "地址": "street_segment"}
    mapping["备注"] = None
    response = upload(client, collection(chinese_shops(1)), mapping=json.dumps(mapping), unmapped="drop")
    assert response.status_code == 201, response.text
    fields = response.json()["report"]["fields"]
    assert fields["mapped"]["地址"] == "street_segment" and fields["extra"] == []
    assert fields["dropped"]["备注"] == "chosen"
    row = session.execute(text("SELECT street_segment, address, extra FROM shops")).one()
    assert row == ("南疃路", None, None)


def test_keep_a_field_the_proposal_would_map(client: TestClient, session: Session) -> None:
    mapping = {"地址": KEEP}
    response = upload(client, collection(chinese_shops(1)), mapping=json.dumps(mapping))
    assert response.status_code == 201, response.text
    row = session.execute(text("SELECT address, extra FROM shops")).one()
    assert row == (None, {"地址": "南疃路", "备注": "临街0"})


def test_a_personal_field_mapped_to_a_declared_personal_field_is_imported(client: TestClient) -> None:
    grid = sample("grids")
    props = grid["properties"]
    grid["properties"] = {"网格编码": props["code"], "网格名称": props["name"], "网格类型": props["kind"]}
    grid["properties"].update({"社区代码": COMMUNITY, "生效日期": "2024-01-01", "手机": "13812345678"})
    mapping = {"手机": "manager_phone"}
    response = upload(client, collection([grid]), layer="grids", dry_run="true", mapping=json.dumps(mapping))
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert report["summary"]["rejected"] == 0, report
    assert report["fields"]["mapped"]["手机"] == "manager_phone"


def test_sandiao_parcels_with_coded_ownership(client: TestClient) -> None:
    parcel = {
        "type": "Feature",
        "geometry": polygon(X0, Y0, X0 + 0.001, Y0 + 0.0009),
        "properties": {
            "BSM": 1001,
            "DKBM": COMMUNITY + "0100001",
            "DLBM": "1201",
            "DLMC": "空闲地",
            "QSXZ": "30",
            "QSDWMC": "南疃社区股份经济合作社",
            "ZLDWMC": "南疃社区",
            "利用现状": "闲置",
            "TBMJ": 1234.5,
        },
    }
    response = upload(client, collection([parcel]), layer="parcels", dry_run="true")
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert report["summary"]["rejected"] == 0, report
    fields = report["fields"]
    assert fields["mapped"]["QSXZ"] == "ownership" and fields["translated"] == {"ownership": 1}
    assert sorted(fields["extra"]) == ["BSM", "DLMC", "TBMJ"]
    assert any("三调" in note for note in fields["notes"])


@pytest.mark.parametrize("layer_id", ["divisions", "grids"])
def test_a_desktop_gis_boundary_file_gets_a_sensible_verdict(client: TestClient, layer_id: str) -> None:
    feature = {
        "type": "Feature",
        "geometry": polygon(X0 - 0.01, Y0 - 0.01, X0 + 0.01, Y0 + 0.01),
        "properties": {"adcode": COMMUNITY, "name": "南疃社区", "source": "天地图", "note": "2023 年调整"},
    }
    response = upload(client, collection([feature]), layer=layer_id, dry_run="true")
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    codes = {p["code"] for e in report["features"] for p in e.get("problems", [])}
    assert "unknown_field" not in codes
    fields = report["fields"]
    assert "source" in fields["extra"] and "note" in fields["extra"]
    problems = report["features"][0]["problems"]
    missing = {p["where"]["field"] for p in problems}
    if layer_id == "divisions":  # code and name found: only the level is missing
        assert fields["mapped"] == {"adcode": "code"}
        assert missing == {"properties.level"}
        feature["properties"]["级别"] = "社区"
        feature["properties"]["上级代码"] = COMMUNITY[:9]
        again = upload(client, collection([feature]), layer=layer_id, dry_run="true").json()["report"]
        assert again["summary"]["rejected"] == 0 and again["summary"]["new"] == 1, again
    else:  # a grid needs its own code, kind and dates: each named, none an unknown field
        assert {"properties.code", "properties.kind"} <= missing
        assert all(p["code"] in ("required", "missing") for p in problems), problems


@pytest.mark.parametrize(
    ("mapping", "code"),
    [
        ("{not json", "mapping_invalid"),
        ('["code"]', "mapping_invalid"),
        ('{"a": 3}', "mapping_invalid"),
        ('{"a": "geom"}', "mapping_unknown_target"),
        ('{"a": "id"}', "mapping_unknown_target"),
        ('{"a": "code", "b": "code"}', "mapping_target_twice"),
        ("{" + ",".join(f'"f{i}": null' for i in range(300)) + "}", "mapping_invalid"),
    ],
)
def test_a_bad_mapping_is_refused_with_its_code(client: TestClient, session: Session, mapping: str, code: str) -> None:
    response = upload(client, collection(chinese_shops(1)), mapping=mapping)
    assert response.status_code == 422, response.text
    assert code in {p["code"] for p in response.json()["errors"]}
    assert session.execute(text("SELECT count(*) FROM shops")).scalar_one() == 0


def test_a_bad_unmapped_choice_is_refused(client: TestClient) -> None:
    assert upload(client, collection(chinese_shops(1)), unmapped="maybe").status_code == 422


# ---------------------------------------------------------------- inspect and remember


def inspect(client: TestClient, body: bytes, layer: str = "shops", **headers: str) -> Any:
    files = {"file": ("a.geojson", body, "application/geo+json")}
    return client.post(UPLOADS.format(layer=layer) + "/inspect", files=files, headers=headers)


def test_inspect_lists_fields_samples_proposal_and_targets(client: TestClient, session: Session) -> None:
    response = inspect(client, collection(chinese_shops(3)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "geojson" and body["count"] == 3 and body["remembered"] is False
    fields = {f["name"]: f for f in body["fields"]}
    assert fields["备注"]["samples"] == ["临街0", "临街1", "临街2"] and fields["备注"]["type"] == "text"
    assert "13812345678" not in response.text  # a personal-looking sample is shown masked
    assert body["proposed"]["商铺编号"] == "code" and body["proposed"]["备注"] is None
    targets = {t["name"]: t for t in body["targets"]}
    assert targets["status"]["required"] and targets["status"]["choices"]
    assert session.execute(text("SELECT count(*) FROM uploads")).scalar_one() == 0


def test_a_confirmed_mapping_is_proposed_again_to_its_user_only(
    client: TestClient, session: Session, tokens: dict[str, str]
) -> None:
    shops = chinese_shops(1)
    shops[0]["properties"]["说明"] = "原为小卖部"
    mapping = {"商铺编号": "code", "名称": "name", "权属": "ownership", "状态": "status", "说明": "former_business"}
    response = upload(client, collection(shops), dry_run="true", mapping=json.dumps(mapping))
    assert response.status_code == 200, response.text
    again = inspect(client, collection(shops)).json()
    assert again["remembered"] is True and again["proposed"]["说明"] == "former_business"
    other = inspect(client, collection(shops), **bearer(tokens["planner"])).json()
    assert other["remembered"] is False and other["proposed"]["说明"] is None
    # with no mapping given, the remembered one applies to its user's upload
    plain = upload(client, collection(shops), dry_run="true").json()["report"]["fields"]
    assert plain["mapped"]["说明"] == "former_business"


def test_a_rejected_upload_does_not_remember(client: TestClient, session: Session) -> None:
    shops = chinese_shops(1)
    shops[0]["properties"]["状态"] = "空着"
    response = upload(client, collection(shops), mapping=json.dumps({"备注": "former_business"}))
    assert response.status_code == 422
    found = session.execute(text("SELECT count(*) FROM user_preferences WHERE key LIKE 'upload.mapping.%'"))
    assert found.scalar_one() == 0


def test_grid_code_is_a_grid_alias() -> None:
    assert propose(REGISTRY["parcels"], ["所属网格"], None) == {"所属网格": "grid_code"}
    assert GRID.startswith(COMMUNITY)


# ---------------------------------------------------------------- templates and the guide


@pytest.mark.parametrize("layer_id", ["divisions", "grids", "parcels", "zones", "shops", "revenue_points"])
def test_the_geojson_template_describes_every_field(client: TestClient, layer_id: str) -> None:
    response = client.get(f"/api/layers/{layer_id}/template.geojson")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/geo+json")
    body = response.json()
    layer = REGISTRY[layer_id]
    assert [f["name"] for f in body["fields"]] == layer.field_names
    for described in body["fields"]:
        declared = layer.field(described["name"])
        assert (described["kind"], described["required"]) == (declared.kind, declared.required)
        assert described["choices"] == (list(declared.choices) or None)
    assert list(body["features"][0]["properties"]) == layer.field_names
    assert body["features"][0]["geometry"]["type"] in layer.accepts


@pytest.mark.parametrize("layer_id", ["divisions", "grids", "shops"])
def test_the_filled_in_geojson_template_uploads(client: TestClient, layer_id: str) -> None:
    template = client.get(f"/api/layers/{layer_id}/template.geojson").content
    response = upload(client, template, layer=layer_id, dry_run="true")
    assert response.status_code == 200, response.text
    report = response.json()["report"]
    assert report["summary"]["rejected"] == 0 and report["summary"]["new"] == 1, report
    assert "fields" not in report  # every field is the layer's own: nothing mapped, kept or dropped


def test_the_gpkg_template_has_typed_fields_the_example_and_a_fields_table(client: TestClient, tmp_path: Any) -> None:
    import pyogrio

    response = client.get("/api/layers/grids/template.gpkg")
    assert response.status_code == 200
    path = tmp_path / "grids.gpkg"
    path.write_bytes(response.content)
    assert [name for name, _ in pyogrio.list_layers(path)] == ["grids", "fields"]
    info = pyogrio.read_info(path, layer="grids")
    types = dict(zip(info["fields"], info["dtypes"], strict=True))
    assert list(types) == REGISTRY["grids"].field_names
    assert types["households"] == "int32" and types["name"] == "object"
    assert info["features"] == 1 and info["geometry_type"] == "MultiPolygon" and "4490" in info["crs"]
    _, _, _, values = pyogrio.raw.read(path, layer="fields")
    assert list(values[0]) == REGISTRY["grids"].field_names and "基础网格" in "".join(values[5])


def test_the_surveyor_guide_lists_every_field_of_every_layer() -> None:
    from pathlib import Path

    from layers.templates import GUIDE_BEGIN, GUIDE_END, guide_fields

    guide = (Path(__file__).resolve().parent.parent / "docs" / "surveyor-guide.md").read_text(encoding="utf-8")
    block = guide[guide.index(GUIDE_BEGIN) : guide.index(GUIDE_END) + len(GUIDE_END)]
    ordered = sorted((x for x in REGISTRY.values() if x.module.startswith("layers.")), key=lambda x: (x.order, x.id))
    assert block == guide_fields(ordered), "run: python -m layers.templates docs/surveyor-guide.md"
    for layer in ordered:
        for f in layer.fields:
            assert f"| `{f.name}` | {f.zh} |" in block, (layer.id, f.name)


def test_renames_alone_take_the_remembered_plan_and_still_translate() -> None:
    parcels = REGISTRY["parcels"]
    mapper = Mapper.of(parcels, {"说明": None})
    feature = {"DKBM": "1", "QSXZ": "20", "说明": "x", "id": 7}
    for _ in range(3):
        assert mapper.apply(dict(feature)) == ({"code": "1", "ownership": "国有"}, None)
    assert list(mapper.plans.values()) == [(("DKBM", "code"), ("QSXZ", "ownership"))]
    assert mapper.translated == {"ownership": 3} and mapper.dropped == {"说明": "chosen"}
    slow = Mapper.of(parcels, {"说明": None})
    slow.plans = {tuple(feature): None}  # the field-by-field path gives the same
    props, extra = slow.apply(dict(feature))
    assert extra is None and {k: v for k, v in props.items() if k != "id"} == {"code": "1", "ownership": "国有"}


BAD_FILES = [b"", b"{not json", b'{"type": "FeatureCollection", "features": [', "地块".encode("gbk")]


@pytest.mark.parametrize("body", BAD_FILES)
def test_inspecting_a_bad_file_is_a_clear_refusal(client: TestClient, body: bytes) -> None:
    response = inspect(client, body)
    assert response.status_code in (400, 422), response.text
    assert response.json()["code"]


def test_inspecting_a_ledger_lists_no_fields(client: TestClient) -> None:
    template = client.get("/api/layers/shops/template.xlsx").content
    files = {"file": ("a.xlsx", template, "application/octet-stream")}
    body = client.post(UPLOADS.format(layer="shops") + "/inspect", files=files).json()
    assert body["format"] == "xlsx" and body["fields"] == [] and body["proposed"] == {}
