"""A rural deployment in miniature: one 乡镇 with two 行政村, their 网格 and parcels (GUATU_HIERARCHY=rural).

西村 is cut into three grids that tile it; 东村 into two grids with a 50 m strip between
them (a gap the checks must find); one parcel of 西村 straddles its first two grids.
Coordinates near 薛城 (Zaozhuang); the codes follow the national scheme, the names are made up.
"""

from __future__ import annotations

from typing import Any

from shapely.geometry import box, mapping

from tests.samples import feature

COUNTY = "370403"
TOWNSHIP = "370403100"
WEST, EAST = TOWNSHIP + "201", TOWNSHIP + "202"
X0, Y0, X1, Y1 = 117.30, 34.80, 117.34, 34.83
XM = (X0 + X1) / 2
GAP = 0.0005  # ~46 m of longitude here
STRADDLER = WEST + "0100001"


def _polygon(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return dict(mapping(box(x0, y0, x1, y1)))


def features() -> dict[str, list[dict[str, Any]]]:
    """Return the fixture's features per layer, in load order (frame first)."""
    third = (XM - X0) / 3
    west_grids = [(X0 + i * third, X0 + (i + 1) * third) for i in range(3)]
    east_grids = [(XM, (XM + X1) / 2 - GAP / 2), ((XM + X1) / 2 + GAP / 2, X1)]
    divisions = [
        feature(_polygon(X0, Y0, X1, Y1), code=TOWNSHIP, name="示范镇", level="乡镇", parent_code=COUNTY),
        feature(_polygon(X0, Y0, XM, Y1), code=WEST, name="西村", level="行政村", parent_code=TOWNSHIP),
        feature(_polygon(XM, Y0, X1, Y1), code=EAST, name="东村", level="行政村", parent_code=TOWNSHIP),
    ]
    grids = []
    for village, name, spans in ((WEST, "西村", west_grids), (EAST, "东村", east_grids)):
        for seq, (a, b) in enumerate(spans, start=1):
            grids.append(
                feature(
                    _polygon(a, Y0, b, Y1),
                    code=f"{village}{seq:03d}",
                    name=f"{name}第{seq}网格",
                    kind="基础网格",
                    community_code=village,
                    valid_from="2024-01-01",
                )
            )
    parcels = []
    for n, (village, (a, b)) in enumerate(
        [(WEST, west_grids[0]), (WEST, west_grids[2]), (EAST, east_grids[0]), (EAST, east_grids[1])], start=2
    ):
        x = (a + b) / 2
        parcels.append(
            feature(
                _polygon(x - 0.001, Y0 + 0.01, x + 0.001, Y0 + 0.011),
                code=f"{village}01{n:05d}",
                land_use_code="0101",
                ownership="集体",
                use_status="闲置" if n % 2 else "承包",
            )
        )
    edge = west_grids[0][1]
    parcels.append(
        feature(
            _polygon(edge - 0.001, Y0 + 0.02, edge + 0.001, Y0 + 0.021),
            code=STRADDLER,
            land_use_code="0702",
            ownership="集体",
            use_status="自用",
        )
    )
    return {"divisions": divisions, "grids": grids, "parcels": parcels}
