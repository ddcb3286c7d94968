"""outbox claims take people's calls before rule evaluations: a partial index of the urgent lane

Revision ID: 9e2b7c4d1a60
Revises: 5a1c0d3e7f21
Create Date: 2026-12-01 15:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "9e2b7c4d1a60"
down_revision = "5a1c0d3e7f21"
branch_labels = None
depends_on = None

URGENT_UNFINISHED = sa.text("status IN ('pending', 'in_flight') AND operation <> 'rules.evaluate'")


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        # CONCURRENTLY: the outbox keeps taking calls while the index builds (see f0f8dedfdecf).
        with op.get_context().autocommit_block():
            op.create_index("ix_outbox_calls_urgent_unfinished", "outbox_calls", ["id"],
                            postgresql_where=URGENT_UNFINISHED, postgresql_concurrently=True)
        return
    op.create_index("ix_outbox_calls_urgent_unfinished", "outbox_calls", ["id"], sqlite_where=URGENT_UNFINISHED)


def downgrade():
    op.drop_index("ix_outbox_calls_urgent_unfinished", table_name="outbox_calls")
