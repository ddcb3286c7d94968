"""the SKU catalogue: one row per SKU sold, kept current as orders are stored

Revision ID: c3d4e5f6a7b8
Revises: b6c1d2e3f4a5
Create Date: 2026-12-01 11:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "c3d4e5f6a7b8"
down_revision = "b6c1d2e3f4a5"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "skus",
        sa.Column("shop_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("sku_id", sa.String(length=64), nullable=False),
        sa.Column("sku_code", sa.String(length=100), nullable=True),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("thumb_img", sa.String(length=500), nullable=True),
        sa.Column("units_sold", sa.Integer(), nullable=False),
        sa.Column("first_sold_at", sa.DateTime(), nullable=False),
        sa.Column("last_sold_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name=op.f("fk_skus_shop_id_shops"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skus")),
        sa.UniqueConstraint("shop_id", "product_id", "sku_id", name=op.f("uq_skus_shop_id_product_id_sku_id")),
    )
    op.create_index(op.f("ix_skus_shop_id"), "skus", ["shop_id"], unique=False)
    op.create_index("ix_skus_shop_last_sold", "skus", ["shop_id", "last_sold_at"], unique=False)
    op.create_index("ix_skus_shop_sku", "skus", ["shop_id", "sku_id"], unique=False)
    # Learn the catalogue from the orders stored so far (the same sums the store keeps from now on).
    op.execute(
        """
        INSERT INTO skus (shop_id, product_id, sku_id, sku_code, title, thumb_img, units_sold,
                          first_sold_at, last_sold_at, updated_at)
        SELECT i.shop_id, i.product_id, i.sku_id, max(i.sku_code), max(i.title), max(i.thumb_img),
               sum(i.quantity), min(o.platform_created_at), max(o.platform_created_at), CURRENT_TIMESTAMP
        FROM order_items i JOIN orders o ON o.id = i.order_pk
        GROUP BY i.shop_id, i.product_id, i.sku_id
        """
    )


def downgrade():
    op.drop_index("ix_skus_shop_sku", table_name="skus")
    op.drop_index("ix_skus_shop_last_sold", table_name="skus")
    op.drop_index(op.f("ix_skus_shop_id"), table_name="skus")
    op.drop_table("skus")
