"""The four layers, divisions and land-use codes.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 05:22:50.488251
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# (code, name, level-1 code, level-1 name, schemes)
LAND_USE_CODES = [
    ("0101", "水田", "01", "耕地", "gbt21010,sandiao"),
    ("0102", "水浇地", "01", "耕地", "gbt21010,sandiao"),
    ("0103", "旱地", "01", "耕地", "gbt21010,sandiao"),
    ("0201", "果园", "02", "园地", "gbt21010,sandiao"),
    ("0202", "茶园", "02", "园地", "gbt21010,sandiao"),
    ("0203", "橡胶园", "02", "园地", "gbt21010,sandiao"),
    ("0204", "其他园地", "02", "园地", "gbt21010,sandiao"),
    ("0301", "乔木林地", "03", "林地", "gbt21010,sandiao"),
    ("0302", "竹林地", "03", "林地", "gbt21010,sandiao"),
    ("0303", "红树林地", "03", "林地", "gbt21010,sandiao"),
    ("0304", "森林沼泽", "03", "林地", "gbt21010,sandiao"),
    ("0305", "灌木林地", "03", "林地", "gbt21010,sandiao"),
    ("0306", "灌丛沼泽", "03", "林地", "gbt21010,sandiao"),
    ("0307", "其他林地", "03", "林地", "gbt21010,sandiao"),
    ("0401", "天然牧草地", "04", "草地", "gbt21010,sandiao"),
    ("0402", "沼泽草地", "04", "草地", "gbt21010,sandiao"),
    ("0403", "人工牧草地", "04", "草地", "gbt21010,sandiao"),
    ("0404", "其他草地", "04", "草地", "gbt21010,sandiao"),
    ("0501", "零售商业用地", "05", "商服用地", "gbt21010"),
    ("0502", "批发市场用地", "05", "商服用地", "gbt21010"),
    ("0503", "餐饮用地", "05", "商服用地", "gbt21010"),
    ("0504", "旅馆用地", "05", "商服用地", "gbt21010"),
    ("0505", "商务金融用地", "05", "商服用地", "gbt21010"),
    ("0506", "娱乐用地", "05", "商服用地", "gbt21010"),
    ("0507", "其他商服用地", "05", "商服用地", "gbt21010"),
    ("0601", "工业用地", "06", "工矿仓储用地", "gbt21010,sandiao"),
    ("0602", "采矿用地", "06", "工矿仓储用地", "gbt21010,sandiao"),
    ("0603", "盐田", "06", "工矿仓储用地", "gbt21010,sandiao"),
    ("0604", "仓储用地", "06", "工矿仓储用地", "gbt21010"),
    ("0701", "城镇住宅用地", "07", "住宅用地", "gbt21010,sandiao"),
    ("0702", "农村宅基地", "07", "住宅用地", "gbt21010,sandiao"),
    ("0801", "机关团体用地", "08", "公共管理与公共服务用地", "gbt21010"),
    ("0802", "新闻出版用地", "08", "公共管理与公共服务用地", "gbt21010"),
    ("0803", "教育用地", "08", "公共管理与公共服务用地", "gbt21010"),
    ("0804", "科研用地", "08", "公共管理与公共服务用地", "gbt21010"),
    ("0805", "医疗卫生用地", "08", "公共管理与公共服务用地", "gbt21010"),
    ("0806", "社会福利用地", "08", "公共管理与公共服务用地", "gbt21010"),
    ("0807", "文化设施用地", "08", "公共管理与公共服务用地", "gbt21010"),
    ("0808", "体育用地", "08", "公共管理与公共服务用地", "gbt21010"),
    ("0809", "公用设施用地", "08", "公共管理与公共服务用地", "gbt21010,sandiao"),
    ("0810", "公园与绿地", "08", "公共管理与公共服务用地", "gbt21010,sandiao"),
    ("0901", "军事设施用地", "09", "特殊用地", "gbt21010"),
    ("0902", "使领馆用地", "09", "特殊用地", "gbt21010"),
    ("0903", "监教场所用地", "09", "特殊用地", "gbt21010"),
    ("0904", "宗教用地", "09", "特殊用地", "gbt21010"),
    ("0905", "殡葬用地", "09", "特殊用地", "gbt21010"),
    ("0906", "风景名胜设施用地", "09", "特殊用地", "gbt21010"),
    ("1001", "铁路用地", "10", "交通运输用地", "gbt21010,sandiao"),
    ("1002", "轨道交通用地", "10", "交通运输用地", "gbt21010,sandiao"),
    ("1003", "公路用地", "10", "交通运输用地", "gbt21010,sandiao"),
    ("1004", "城镇村道路用地", "10", "交通运输用地", "gbt21010,sandiao"),
    ("1005", "交通服务场站用地", "10", "交通运输用地", "gbt21010,sandiao"),
    ("1006", "农村道路", "10", "交通运输用地", "gbt21010,sandiao"),
    ("1007", "机场用地", "10", "交通运输用地", "gbt21010,sandiao"),
    ("1008", "港口码头用地", "10", "交通运输用地", "gbt21010,sandiao"),
    ("1009", "管道运输用地", "10", "交通运输用地", "gbt21010,sandiao"),
    ("1101", "河流水面", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1102", "湖泊水面", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1103", "水库水面", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1104", "坑塘水面", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1105", "沿海滩涂", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1106", "内陆滩涂", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1107", "沟渠", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1108", "沼泽地", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1109", "水工建筑用地", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1110", "冰川及永久积雪", "11", "水域及水利设施用地", "gbt21010,sandiao"),
    ("1201", "空闲地", "12", "其他土地", "gbt21010,sandiao"),
    ("1202", "设施农用地", "12", "其他土地", "gbt21010,sandiao"),
    ("1203", "田坎", "12", "其他土地", "gbt21010,sandiao"),
    ("1204", "盐碱地", "12", "其他土地", "gbt21010,sandiao"),
    ("1205", "沙地", "12", "其他土地", "gbt21010,sandiao"),
    ("1206", "裸土地", "12", "其他土地", "gbt21010,sandiao"),
    ("1207", "裸岩石砾地", "12", "其他土地", "gbt21010,sandiao"),
    ("0201K", "可调整果园", "02", "种植园用地", "sandiao"),
    ("0202K", "可调整茶园", "02", "种植园用地", "sandiao"),
    ("0203K", "可调整橡胶园", "02", "种植园用地", "sandiao"),
    ("0204K", "可调整其他园地", "02", "种植园用地", "sandiao"),
    ("0301K", "可调整乔木林地", "03", "林地", "sandiao"),
    ("0302K", "可调整竹林地", "03", "林地", "sandiao"),
    ("0307K", "可调整其他林地", "03", "林地", "sandiao"),
    ("0403K", "可调整人工牧草地", "04", "草地", "sandiao"),
    ("05H1", "商业服务业设施用地", "05", "商业服务业用地", "sandiao"),
    ("0508", "物流仓储用地", "05", "商业服务业用地", "sandiao"),
    ("08H1", "机关团体新闻出版用地", "08", "公共管理与公共服务用地", "sandiao"),
    ("08H2", "科教文卫用地", "08", "公共管理与公共服务用地", "sandiao"),
    ("08H2A", "高教用地", "08", "公共管理与公共服务用地", "sandiao"),
    ("0810A", "广场用地", "08", "公共管理与公共服务用地", "sandiao"),
    ("09", "特殊用地", "09", "特殊用地", "sandiao"),
    ("1104A", "养殖坑塘", "11", "水域及水利设施用地", "sandiao"),
    ("1104K", "可调整养殖坑塘", "11", "水域及水利设施用地", "sandiao"),
    ("1107A", "干渠", "11", "水域及水利设施用地", "sandiao"),
]


def upgrade() -> None:
    """Apply this migration."""
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_geospatial_table(
        "divisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=4490,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("code", sa.String(length=12), nullable=False, comment="区划代码 Division code"),
        sa.Column("name", sa.String(length=60), nullable=False, comment="名称 Name"),
        sa.Column("level", sa.String(length=2), nullable=False, comment="级别 Level"),
        sa.Column("parent_code", sa.String(length=9), nullable=True, comment="上级代码 Parent code"),
        sa.Column(
            "area_m2",
            sa.Float(),
            sa.Computed("ST_Area(geom::geography, true)", persisted=True),
            nullable=True,
            comment="面积（平方米，椭球面） geodesic area m²",
        ),
        sa.Column(
            "area_mu",
            sa.Float(),
            sa.Computed("ST_Area(geom::geography, true) * 3 / 2000", persisted=True),
            nullable=True,
            comment="面积（亩） area in mu",
        ),
        sa.CheckConstraint("code ~ '^([0-9]{9}|[0-9]{12})$'", name=op.f("ck_divisions_code_format")),
        sa.CheckConstraint("level IN ('街道', '社区')", name=op.f("ck_divisions_level_enum")),
        sa.CheckConstraint("parent_code ~ '^([0-9]{6}|[0-9]{9})$'", name=op.f("ck_divisions_parent_code_format")),
        sa.CheckConstraint("NOT ST_IsEmpty(geom)", name=op.f("ck_divisions_geom_not_empty")),
        sa.CheckConstraint("ST_IsValid(geom)", name=op.f("ck_divisions_geom_valid")),
        sa.CheckConstraint("ST_SRID(geom) = 4490", name=op.f("ck_divisions_geom_srid")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_divisions")),
        sa.UniqueConstraint("code", name="uq_divisions_key"),
    )
    op.create_geospatial_index(
        "ix_divisions_geom", "divisions", ["geom"], unique=False, postgresql_using="gist", postgresql_ops={}
    )
    op.create_geospatial_table(
        "grids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=4490,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False, comment="网格编码 Grid code"),
        sa.Column("name", sa.String(length=60), nullable=False, comment="网格名称 Grid name"),
        sa.Column("kind", sa.String(length=4), nullable=False, comment="网格类型 Kind"),
        sa.Column("community_code", sa.String(length=12), nullable=False, comment="社区/村代码 Community code"),
        sa.Column("manager", sa.String(length=40), nullable=True, comment="网格员 Grid manager"),
        sa.Column("manager_phone", sa.String(length=20), nullable=True, comment="网格员电话 Manager phone"),
        sa.Column("households", sa.Integer(), nullable=True, comment="户数 Households"),
        sa.Column("valid_from", sa.Date(), nullable=False, comment="生效日期 Valid from"),
        sa.Column("valid_to", sa.Date(), nullable=True, comment="失效日期 Valid to"),
        sa.Column(
            "area_m2",
            sa.Float(),
            sa.Computed("ST_Area(geom::geography, true)", persisted=True),
            nullable=True,
            comment="面积（平方米，椭球面） geodesic area m²",
        ),
        sa.Column(
            "area_mu",
            sa.Float(),
            sa.Computed("ST_Area(geom::geography, true) * 3 / 2000", persisted=True),
            nullable=True,
            comment="面积（亩） area in mu",
        ),
        sa.CheckConstraint("code ~ '^[0-9]{14,16}$'", name=op.f("ck_grids_code_format")),
        sa.CheckConstraint("community_code ~ '^[0-9]{12}$'", name=op.f("ck_grids_community_code_format")),
        sa.CheckConstraint("kind IN ('基础网格', '专属网格', '单元网格')", name=op.f("ck_grids_kind_enum")),
        sa.CheckConstraint("manager_phone ~ '^[0-9+ -]{5,20}$'", name=op.f("ck_grids_manager_phone_format")),
        sa.CheckConstraint("NOT ST_IsEmpty(geom)", name=op.f("ck_grids_geom_not_empty")),
        sa.CheckConstraint("ST_IsValid(geom)", name=op.f("ck_grids_geom_valid")),
        sa.CheckConstraint("ST_SRID(geom) = 4490", name=op.f("ck_grids_geom_srid")),
        sa.CheckConstraint("households <= 100000", name=op.f("ck_grids_households_max")),
        sa.CheckConstraint("households >= 0", name=op.f("ck_grids_households_min")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grids")),
        sa.UniqueConstraint("code", name="uq_grids_key"),
    )
    op.create_index("ix_grids_community_code", "grids", ["community_code"], unique=False)
    op.create_geospatial_index(
        "ix_grids_geom", "grids", ["geom"], unique=False, postgresql_using="gist", postgresql_ops={}
    )
    op.create_table(
        "land_use_codes",
        sa.Column("code", sa.String(length=5), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("level1", sa.String(length=2), nullable=False),
        sa.Column("level1_name", sa.String(length=40), nullable=False),
        sa.Column("schemes", sa.String(length=40), nullable=False, comment="gbt21010, sandiao or both"),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_land_use_codes")),
        comment="地类编码 land-use codes (GB/T 21010-2017 + 三调工作分类)",
    )
    # The code lists as they stood at this revision (data/*.csv), frozen here; a later change
    # to the lists gets a migration of its own (tests/test_migrations.py compares them).
    op.bulk_insert(
        sa.table(
            "land_use_codes",
            sa.column("code"),
            sa.column("name"),
            sa.column("level1"),
            sa.column("level1_name"),
            sa.column("schemes"),
        ),
        [dict(zip(("code", "name", "level1", "level1_name", "schemes"), row, strict=True)) for row in LAND_USE_CODES],
    )
    op.create_geospatial_table(
        "shops",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "geom",
            Geometry(
                srid=4490,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("code", sa.String(length=19), nullable=False, comment="商铺编号 Shop code"),
        sa.Column("name", sa.String(length=100), nullable=False, comment="名称 Name"),
        sa.Column("address", sa.String(length=200), nullable=True, comment="地址 Address"),
        sa.Column("street_segment", sa.String(length=100), nullable=True, comment="路段 Street segment"),
        sa.Column("floor", sa.Integer(), nullable=True, comment="楼层 Floor"),
        sa.Column("floor_area", sa.Float(), nullable=True, comment="建筑面积(m²) Floor area m²"),
        sa.Column("usable_area", sa.Float(), nullable=True, comment="使用面积(m²) Usable area m²"),
        sa.Column("ownership", sa.String(length=2), nullable=False, comment="权属 Ownership"),
        sa.Column("owner", sa.String(length=100), nullable=True, comment="产权人 Owner"),
        sa.Column("status", sa.String(length=2), nullable=False, comment="状态 Status"),
        sa.Column("idle_since", sa.Date(), nullable=True, comment="闲置起始 Idle since"),
        sa.Column("former_business", sa.String(length=100), nullable=True, comment="原业态 Former business"),
        sa.Column("intended_business", sa.String(length=100), nullable=True, comment="拟引入业态 Intended business"),
        sa.Column("asking_rent", sa.Float(), nullable=True, comment="意向租金(元/月) Asking rent CNY/month"),
        sa.Column("letting_status", sa.String(length=3), nullable=True, comment="招租状态 Letting status"),
        sa.Column("community_code", sa.String(length=12), nullable=True, comment="社区/村代码 Community code"),
        sa.Column("grid_code", sa.String(length=16), nullable=True, comment="网格编码 Grid code"),
        sa.CheckConstraint("ST_GeometryType(geom) IN ('ST_Point', 'ST_MultiPolygon')", name=op.f("ck_shops_geom_type")),
        sa.CheckConstraint("code ~ '^[0-9]{12}([GJZ][A-Z][0-9]{5}|[0-9]{7})$'", name=op.f("ck_shops_code_format")),
        sa.CheckConstraint("community_code ~ '^[0-9]{12}$'", name=op.f("ck_shops_community_code_format")),
        sa.CheckConstraint("grid_code ~ '^[0-9]{14,16}$'", name=op.f("ck_shops_grid_code_format")),
        sa.CheckConstraint(
            "letting_status IN ('未招租', '招租中', '已签约', '不招租')", name=op.f("ck_shops_letting_status_enum")
        ),
        sa.CheckConstraint(
            "ownership IN ('集体', '国有', '个人', '企业', '不明')", name=op.f("ck_shops_ownership_enum")
        ),
        sa.CheckConstraint("status IN ('闲置', '在营', '装修')", name=op.f("ck_shops_status_enum")),
        sa.CheckConstraint("NOT ST_IsEmpty(geom)", name=op.f("ck_shops_geom_not_empty")),
        sa.CheckConstraint("ST_IsValid(geom)", name=op.f("ck_shops_geom_valid")),
        sa.CheckConstraint("ST_SRID(geom) = 4490", name=op.f("ck_shops_geom_srid")),
        sa.CheckConstraint("asking_rent <= 1000000000.0", name=op.f("ck_shops_asking_rent_max")),
        sa.CheckConstraint("asking_rent >= 0", name=op.f("ck_shops_asking_rent_min")),
        sa.CheckConstraint("floor <= 200", name=op.f("ck_shops_floor_max")),
        sa.CheckConstraint("floor >= -5", name=op.f("ck_shops_floor_min")),
        sa.CheckConstraint("floor_area <= 1000000.0", name=op.f("ck_shops_floor_area_max")),
        sa.CheckConstraint("floor_area >= 0", name=op.f("ck_shops_floor_area_min")),
        sa.CheckConstraint("usable_area <= 1000000.0", name=op.f("ck_shops_usable_area_max")),
        sa.CheckConstraint("usable_area >= 0", name=op.f("ck_shops_usable_area_min")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shops")),
        sa.UniqueConstraint("code", name="uq_shops_key"),
    )
    op.create_index("ix_shops_community_code", "shops", ["community_code"], unique=False)
    op.create_geospatial_index(
        "ix_shops_geom", "shops", ["geom"], unique=False, postgresql_using="gist", postgresql_ops={}
    )
    op.create_index("ix_shops_grid_code", "shops", ["grid_code"], unique=False)
    op.create_geospatial_table(
        "zones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=4490,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("code", sa.String(length=19), nullable=False, comment="责任区编码 Zone code"),
        sa.Column("household_head", sa.String(length=40), nullable=False, comment="户主 Household head"),
        sa.Column("house_number", sa.String(length=60), nullable=True, comment="门牌号 House number"),
        sa.Column(
            "homestead_parcel_code", sa.String(length=19), nullable=True, comment="宅基地地块编码 Homestead parcel"
        ),
        sa.Column("scope", sa.String(length=4), nullable=False, comment="责任范围 Scope"),
        sa.Column("duties", sa.String(length=200), nullable=True, comment="责任内容 Duties"),
        sa.Column("rating", sa.Integer(), nullable=True, comment="星级 Rating"),
        sa.Column("grid_code", sa.String(length=16), nullable=False, comment="网格编码 Grid code"),
        sa.Column("community_code", sa.String(length=12), nullable=True, comment="社区/村代码 Community code"),
        sa.Column(
            "area_m2",
            sa.Float(),
            sa.Computed("ST_Area(geom::geography, true)", persisted=True),
            nullable=True,
            comment="面积（平方米，椭球面） geodesic area m²",
        ),
        sa.Column(
            "area_mu",
            sa.Float(),
            sa.Computed("ST_Area(geom::geography, true) * 3 / 2000", persisted=True),
            nullable=True,
            comment="面积（亩） area in mu",
        ),
        sa.CheckConstraint("code ~ '^[0-9]{17,19}$'", name=op.f("ck_zones_code_format")),
        sa.CheckConstraint("community_code ~ '^[0-9]{12}$'", name=op.f("ck_zones_community_code_format")),
        sa.CheckConstraint("grid_code ~ '^[0-9]{14,16}$'", name=op.f("ck_zones_grid_code_format")),
        sa.CheckConstraint(
            "homestead_parcel_code ~ '^[0-9]{12}([GJZ][A-Z][0-9]{5}|[0-9]{7})$'",
            name=op.f("ck_zones_homestead_parcel_code_format"),
        ),
        sa.CheckConstraint("scope IN ('房前', '屋后', '两侧', '房前屋后')", name=op.f("ck_zones_scope_enum")),
        sa.CheckConstraint("NOT ST_IsEmpty(geom)", name=op.f("ck_zones_geom_not_empty")),
        sa.CheckConstraint("ST_IsValid(geom)", name=op.f("ck_zones_geom_valid")),
        sa.CheckConstraint("ST_SRID(geom) = 4490", name=op.f("ck_zones_geom_srid")),
        sa.CheckConstraint("rating <= 5", name=op.f("ck_zones_rating_max")),
        sa.CheckConstraint("rating >= 0", name=op.f("ck_zones_rating_min")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zones")),
        sa.UniqueConstraint("code", name="uq_zones_key"),
    )
    op.create_index("ix_zones_community_code", "zones", ["community_code"], unique=False)
    op.create_geospatial_index(
        "ix_zones_geom", "zones", ["geom"], unique=False, postgresql_using="gist", postgresql_ops={}
    )
    op.create_index("ix_zones_grid_code", "zones", ["grid_code"], unique=False)
    op.create_geospatial_table(
        "parcels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "geom",
            Geometry(
                geometry_type="MULTIPOLYGON",
                srid=4490,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("code", sa.String(length=19), nullable=False, comment="地块编码 Parcel code"),
        sa.Column("name", sa.String(length=100), nullable=True, comment="名称 Name"),
        sa.Column("land_use_code", sa.String(length=5), nullable=False, comment="地类编码 Land-use code"),
        sa.Column("ownership", sa.String(length=2), nullable=False, comment="权属 Ownership"),
        sa.Column("use_status", sa.String(length=3), nullable=False, comment="利用现状 Use status"),
        sa.Column("stage", sa.String(length=3), nullable=True, comment="盘活进度 Revitalisation stage"),
        sa.Column("mode", sa.String(length=4), nullable=True, comment="盘活方式 Revitalisation mode"),
        sa.Column("idle_since", sa.Date(), nullable=True, comment="闲置起始 Idle since"),
        sa.Column("idle_reason", sa.String(length=200), nullable=True, comment="闲置原因 Idle reason"),
        sa.Column("owner", sa.String(length=100), nullable=True, comment="权利人 Owner"),
        sa.Column("address", sa.String(length=200), nullable=True, comment="坐落 Location"),
        sa.Column("community_code", sa.String(length=12), nullable=True, comment="社区/村代码 Community code"),
        sa.Column("grid_code", sa.String(length=16), nullable=True, comment="网格编码 Grid code"),
        sa.Column(
            "area_m2",
            sa.Float(),
            sa.Computed("ST_Area(geom::geography, true)", persisted=True),
            nullable=True,
            comment="面积（平方米，椭球面） geodesic area m²",
        ),
        sa.Column(
            "area_mu",
            sa.Float(),
            sa.Computed("ST_Area(geom::geography, true) * 3 / 2000", persisted=True),
            nullable=True,
            comment="面积（亩） area in mu",
        ),
        sa.CheckConstraint("code ~ '^[0-9]{12}([GJZ][A-Z][0-9]{5}|[0-9]{7})$'", name=op.f("ck_parcels_code_format")),
        sa.CheckConstraint("community_code ~ '^[0-9]{12}$'", name=op.f("ck_parcels_community_code_format")),
        sa.CheckConstraint("grid_code ~ '^[0-9]{14,16}$'", name=op.f("ck_parcels_grid_code_format")),
        sa.CheckConstraint("land_use_code ~ '^[0-9]{2}[0-9A-Z]{0,3}$'", name=op.f("ck_parcels_land_use_code_format")),
        sa.CheckConstraint(
            "mode IN ('出租', '入股', '合作经营', '自营', '调整用途', '拆除复垦')", name=op.f("ck_parcels_mode_enum")
        ),
        sa.CheckConstraint("ownership IN ('集体', '国有', '争议')", name=op.f("ck_parcels_ownership_enum")),
        sa.CheckConstraint("stage IN ('未盘活', '招商中', '已签约', '已盘活')", name=op.f("ck_parcels_stage_enum")),
        sa.CheckConstraint(
            "use_status IN ('自用', '出租', '出借', '承包', '入股', '闲置', '在建', '待处置', '已处置')",
            name=op.f("ck_parcels_use_status_enum"),
        ),
        sa.CheckConstraint("NOT ST_IsEmpty(geom)", name=op.f("ck_parcels_geom_not_empty")),
        sa.CheckConstraint("ST_IsValid(geom)", name=op.f("ck_parcels_geom_valid")),
        sa.CheckConstraint("ST_SRID(geom) = 4490", name=op.f("ck_parcels_geom_srid")),
        sa.ForeignKeyConstraint(
            ["land_use_code"],
            ["land_use_codes.code"],
            name=op.f("fk_parcels_land_use_code_land_use_codes"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parcels")),
        sa.UniqueConstraint("code", name="uq_parcels_key"),
    )
    op.create_index("ix_parcels_community_code", "parcels", ["community_code"], unique=False)
    op.create_geospatial_index(
        "ix_parcels_geom", "parcels", ["geom"], unique=False, postgresql_using="gist", postgresql_ops={}
    )
    op.create_index("ix_parcels_grid_code", "parcels", ["grid_code"], unique=False)

    for table, comment in (
        ("divisions", "行政区划 Divisions"),
        ("grids", "网格 Grids"),
        ("parcels", "地块 Land parcels"),
        ("shops", "商铺 Shops"),
        ("zones", "一户一区 Courtyard zones"),
    ):
        op.create_table_comment(table, comment)


def downgrade() -> None:
    """Revert this migration."""
    op.drop_index("ix_parcels_grid_code", table_name="parcels")
    op.drop_geospatial_index("ix_parcels_geom", table_name="parcels", postgresql_using="gist", column_name="geom")
    op.drop_index("ix_parcels_community_code", table_name="parcels")
    op.drop_geospatial_table("parcels")
    op.drop_index("ix_zones_grid_code", table_name="zones")
    op.drop_geospatial_index("ix_zones_geom", table_name="zones", postgresql_using="gist", column_name="geom")
    op.drop_index("ix_zones_community_code", table_name="zones")
    op.drop_geospatial_table("zones")
    op.drop_index("ix_shops_grid_code", table_name="shops")
    op.drop_geospatial_index("ix_shops_geom", table_name="shops", postgresql_using="gist", column_name="geom")
    op.drop_index("ix_shops_community_code", table_name="shops")
    op.drop_geospatial_table("shops")
    op.drop_table("land_use_codes")
    op.drop_geospatial_index("ix_grids_geom", table_name="grids", postgresql_using="gist", column_name="geom")
    op.drop_index("ix_grids_community_code", table_name="grids")
    op.drop_geospatial_table("grids")
    op.drop_geospatial_index("ix_divisions_geom", table_name="divisions", postgresql_using="gist", column_name="geom")
    op.drop_geospatial_table("divisions")
