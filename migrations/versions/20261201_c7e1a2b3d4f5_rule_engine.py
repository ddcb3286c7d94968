"""rule engine: shop automation settings, decision trace and action, after-sale human notes

Revision ID: c7e1a2b3d4f5
Revises: c3d4e5f6a7b8
Create Date: 2026-12-01 11:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "c7e1a2b3d4f5"
down_revision = "c3d4e5f6a7b8"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade():
    op.create_table(
        "rule_settings",
        sa.Column("id", BigId, nullable=False),
        sa.Column("shop_id", BigId, nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("daily_count_cap", sa.Integer(), server_default="200", nullable=False),
        sa.Column("daily_amount_cap_fen", BigId, server_default="2000000", nullable=False),
        sa.Column("allow_auto_reject", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by_id", BigId, nullable=True),
        sa.ForeignKeyConstraint(
            ["shop_id"], ["shops.id"], name=op.f("fk_rule_settings_shop_id_shops"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["users.id"], name=op.f("fk_rule_settings_updated_by_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_settings")),
        sa.UniqueConstraint("shop_id", name=op.f("uq_rule_settings_shop_id")),
    )
    with op.batch_alter_table("rule_settings") as batch_op:
        batch_op.create_index(batch_op.f("ix_rule_settings_shop_id"), ["shop_id"], unique=False)
    with op.batch_alter_table("rule_decisions") as batch_op:
        batch_op.add_column(sa.Column("trace", JSONType, nullable=True))
        batch_op.add_column(sa.Column("action_id", BigId, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_rule_decisions_action_id_after_sale_actions"),
            "after_sale_actions",
            ["action_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(batch_op.f("ix_rule_decisions_action_id"), ["action_id"], unique=False)
    with op.batch_alter_table("after_sales") as batch_op:
        batch_op.add_column(sa.Column("human_note", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("human_note_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("after_sales") as batch_op:
        batch_op.drop_column("human_note_at")
        batch_op.drop_column("human_note")
    with op.batch_alter_table("rule_decisions") as batch_op:
        batch_op.drop_index(batch_op.f("ix_rule_decisions_action_id"))
        batch_op.drop_constraint(batch_op.f("fk_rule_decisions_action_id_after_sale_actions"), type_="foreignkey")
        batch_op.drop_column("action_id")
        batch_op.drop_column("trace")
    with op.batch_alter_table("rule_settings") as batch_op:
        batch_op.drop_index(batch_op.f("ix_rule_settings_shop_id"))
    op.drop_table("rule_settings")
