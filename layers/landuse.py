"""Land-use code lists: GB/T 21010-2017 second-level classes and the 三调 working codes."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from spatial.db import Base

DATA = Path(__file__).resolve().parent / "data"
"""The repository's data/ (layers/data links to it; a wheel holds a copy)."""


class LandUseCode(Base):
    """One assignable land-use code (the target of parcels.land_use_code)."""

    __tablename__ = "land_use_codes"
    __table_args__ = {"comment": "地类编码 land-use codes (GB/T 21010-2017 + 三调工作分类)"}

    code: Mapped[str] = mapped_column(String(5), primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    level1: Mapped[str] = mapped_column(String(2))
    level1_name: Mapped[str] = mapped_column(String(40))
    schemes: Mapped[str] = mapped_column(String(40), comment="gbt21010, sandiao or both")


@dataclass(frozen=True)
class Code:
    """A land-use code with its class names."""

    code: str
    name: str
    level1: str
    level1_name: str
    schemes: str


@lru_cache
def land_use_codes() -> dict[str, Code]:
    """Return every assignable code, from the CSV files shipped in data/."""
    codes: dict[str, Code] = {}
    level1: dict[str, str] = {}
    with (DATA / "gbt21010_2017.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["level"] == "1":
                level1[row["code"]] = row["name"]
            else:
                codes[row["code"]] = Code(row["code"], row["name"], row["parent"], row["parent_name"], "gbt21010")
    with (DATA / "sandiao_work_classification.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            known = codes.get(row["code"])
            if known:  # keep the GB/T class (三调 files 0303 etc. under 00 湿地 too)
                codes[row["code"]] = Code(known.code, known.name, known.level1, known.level1_name, "gbt21010,sandiao")
            else:
                codes[row["code"]] = Code(row["code"], row["name"], row["level1"], row["level1_name"], "sandiao")
    return codes


def land_use_names() -> dict[str, str]:
    """Return the name of every assignable code (0810 → 公园与绿地)."""
    return {code.code: code.name for code in land_use_codes().values()}


def land_use_classes() -> list[tuple[str, str]]:
    """Return the first-level classes (code, name), in code order: what a filter offers and a count groups by."""
    return sorted({code.level1: code.level1_name for code in land_use_codes().values()}.items())
