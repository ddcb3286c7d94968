"""after-sale actions record a return-address fallback

Revision ID: b6c1d2e3f4a5
Revises: f0f8dedfdecf
Create Date: 2026-12-01 09:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "b6c1d2e3f4a5"
down_revision = "f0f8dedfdecf"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("after_sale_actions") as batch_op:
        batch_op.add_column(sa.Column("address_fallback", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    with op.batch_alter_table("after_sale_actions") as batch_op:
        batch_op.drop_column("address_fallback")
