"""Lease contracts (经济合同): contracts, the assets they cover, the payments received.

- ``contracts``: parties, term, rent, unit and payment cycle, deposit; the community code of
  its assets (``area_code``) for row-level security, as the layers have.
- ``contract_assets``: (contract, layer, asset key): a contract may cover several assets.
- ``contract_payments``: payments received, appended, never changed.
- row-level security on the three (layers.contracts.policies): read inside the area, written
  by the roles that keep contracts (planners, administrators) inside it.
- the lessee's name and ID number are not readable by the app role: ``guatu_shown_contracts``
  (run as the owner) gives them, masked unless the role sees personal values.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 17:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from layers import access, contracts

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "contracts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(40), nullable=False, comment="合同编号 contract number"),
        sa.Column("title", sa.String(100), nullable=True, comment="合同名称 title"),
        sa.Column("lessor", sa.String(100), nullable=False, comment="出租方/发包方 lessor"),
        sa.Column("lessee_name", sa.String(100), nullable=False, comment="承租方 lessee (personal)"),
        sa.Column("lessee_id", sa.String(30), nullable=True, comment="承租方证件号码 lessee ID number (personal)"),
        sa.Column("trade_mode", sa.String(4), nullable=True, comment="交易方式 公开竞价/协议/招标"),
        sa.Column("deliberation_ref", sa.String(200), nullable=True, comment="四议两公开 决议文号 resolution"),
        sa.Column("signed_on", sa.Date(), nullable=True, comment="签订日期 signed on"),
        sa.Column("start_date", sa.Date(), nullable=False, comment="起始日期 first day"),
        sa.Column("end_date", sa.Date(), nullable=False, comment="终止日期 last day (included)"),
        sa.Column("terminated_on", sa.Date(), nullable=True, comment="提前解除日期 terminated on"),
        sa.Column("disputed", sa.Boolean(), server_default="false", nullable=False, comment="纠纷 in dispute"),
        sa.Column("area_m2", MONEY, nullable=True, comment="面积(m²) area"),
        sa.Column("rent", MONEY, nullable=False, comment="租金 rent, in its unit"),
        sa.Column("rent_unit", sa.String(8), nullable=False, comment="租金单位 元/年, 元/月, 元/亩·年, 元/m²·月"),
        sa.Column("cycle", sa.String(2), nullable=False, comment="缴费周期 月/季/半年/年, paid in advance"),
        sa.Column("deposit", MONEY, nullable=True, comment="保证金 deposit"),
        sa.Column("area_code", sa.String(12), nullable=False, comment="资产所在社区/村代码 the assets' community"),
        sa.Column("note", sa.String(500), nullable=True, comment="备注 note"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "version", sa.Integer(), server_default="1", nullable=False, comment="版本 version, raised on every update"
        ),
        sa.CheckConstraint("end_date >= start_date", name=op.f("ck_contracts_dates")),
        sa.CheckConstraint(
            "terminated_on IS NULL OR terminated_on >= start_date", name=op.f("ck_contracts_terminated_after_start")
        ),
        sa.CheckConstraint("trade_mode IN ('公开竞价', '协议', '招标')", name=op.f("ck_contracts_trade_mode_enum")),
        sa.CheckConstraint(
            "rent_unit IN ('元/年', '元/月', '元/亩·年', '元/m²·月')", name=op.f("ck_contracts_rent_unit_enum")
        ),
        sa.CheckConstraint("cycle IN ('月', '季', '半年', '年')", name=op.f("ck_contracts_cycle_enum")),
        sa.CheckConstraint("rent >= 0", name=op.f("ck_contracts_rent_min")),
        sa.CheckConstraint("deposit >= 0", name=op.f("ck_contracts_deposit_min")),
        sa.CheckConstraint("area_m2 >= 0", name=op.f("ck_contracts_area_m2_min")),
        sa.CheckConstraint("area_code ~ '^[0-9]{12}$'", name=op.f("ck_contracts_area_code_format")),
        sa.UniqueConstraint("number", name=op.f("uq_contracts_number")),
        comment="经济合同 lease contracts of collective assets",
    )
    op.create_index(op.f("ix_contracts_area_code"), "contracts", ["area_code"])
    op.create_table(
        "contract_assets",
        sa.Column(
            "contract_id",
            sa.Integer(),
            sa.ForeignKey("contracts.id", ondelete="CASCADE", name=op.f("fk_contract_assets_contract_id_contracts")),
            primary_key=True,
        ),
        sa.Column("layer", sa.String(40), primary_key=True, comment="图层 layer id"),
        sa.Column("asset_code", sa.String(19), primary_key=True, comment="资产编码 the feature's key"),
        comment="合同标的 the assets of a contract",
    )
    op.create_index("ix_contract_assets_asset", "contract_assets", ["layer", "asset_code"])
    op.create_table(
        "contract_payments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "contract_id",
            sa.Integer(),
            sa.ForeignKey("contracts.id", ondelete="CASCADE", name=op.f("fk_contract_payments_contract_id_contracts")),
            nullable=False,
        ),
        sa.Column("paid_on", sa.Date(), nullable=False, comment="收款日期 paid on"),
        sa.Column("amount", MONEY, nullable=False, comment="金额(元) amount"),
        sa.Column("note", sa.String(200), nullable=True, comment="备注 note (receipt number)"),
        sa.Column("recorded_by", sa.String(60), nullable=False, comment="登记人 recorded by"),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_contract_payments_amount_positive")),
        comment="合同收款 payments received",
    )
    op.create_index(op.f("ix_contract_payments_contract_id"), "contract_payments", ["contract_id"])
    op.execute(contracts.parties_function_sql())
    for policy in access.declared_policies():
        if policy.table in contracts.TABLES:
            op.execute(policy.sql)


def downgrade() -> None:
    """Revert this migration."""
    op.execute(f"DROP FUNCTION IF EXISTS {contracts.PARTIES_FUNCTION}(integer[])")
    op.drop_table("contract_payments")
    op.drop_table("contract_assets")
    op.drop_table("contracts")
