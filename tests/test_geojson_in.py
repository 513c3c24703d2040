"""Reading uploaded GeoJSON: every broken file gets its own code, a good one its features."""

from __future__ import annotations

import pytest

from spatial.errors import MalformedInput
from spatial.geojson_in import read_geojson

POINT = b'{"type": "Point", "coordinates": [120.4, 36.3]}'
FC = b'{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": ' + POINT + b', "properties": {}}]}'


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "body_empty"),
        (b"   \n", "body_empty"),
        (b'{"type": "FeatureCollection", "features": [', "json_truncated"),
        (FC[:-7], "json_truncated"),
        (b'{"type": "Feature" "geometry": null}', "invalid_json"),
        (b'{"type": "Point", "coordinates": [NaN, 36.3]}', "json_nan"),
        (b'{"type": "Point", "coordinates": [-Infinity, 36.3]}', "json_nan"),
        (b"[" * 5000 + b"]" * 5000, "nesting_too_deep"),
        (b'{"type": "Point", "coordinates": [120.4, 36.3]}\x00', "nul_bytes"),
        ('{"type": "Feature", "properties": {"name": "城阳"}}'.encode("gbk"), "not_utf8"),
        (b'{"type": "FeatureCollection", "features": {}}', "features_not_array"),
        (b'{"type": "Topology"}', "wrong_top_level_type"),
        (b"[1, 2, 3]", "wrong_top_level_type"),
        (b'"just a string"', "wrong_top_level_type"),
        (b'{"type": {"name": "FeatureCollection"}, "features": []}', "wrong_top_level_type"),
    ],
)
def test_broken_files_get_their_own_code(raw: bytes, code: str) -> None:
    with pytest.raises(MalformedInput) as caught:
        read_geojson(raw)
    assert caught.value.code == code
    assert caught.value.problems[0].message_zh


def test_gbk_gets_a_hint() -> None:
    with pytest.raises(MalformedInput) as caught:
        read_geojson('{"type": "Feature", "properties": {"name": "城阳区夏庄街道"}}'.encode("gbk"))
    assert "GBK" in caught.value.problems[0].message


def test_invalid_json_names_line_and_column() -> None:
    with pytest.raises(MalformedInput) as caught:
        read_geojson(b'{"type": "FeatureCollection",\n "features": [}\n')
    assert caught.value.problems[0].where.location == [2, 15]


def test_collections_features_and_bare_geometries_are_read() -> None:
    assert len(read_geojson(FC).features) == 1
    assert read_geojson(b"\xef\xbb\xbf" + FC).features[0]["geometry"]["type"] == "Point"  # a BOM is fine
    feature = read_geojson(POINT).features[0]
    assert feature == {"type": "Feature", "geometry": {"type": "Point", "coordinates": [120.4, 36.3]}, "properties": {}}
    legacy = (
        b'{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:4549"}}, "features": []}'
    )
    assert read_geojson(legacy).crs_name == "EPSG:4549"
