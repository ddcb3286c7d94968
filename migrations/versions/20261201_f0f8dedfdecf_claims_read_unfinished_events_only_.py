"""claims read unfinished events only: partial indexes

Revision ID: f0f8dedfdecf
Revises: a4f3979f55bf
Create Date: 2026-12-01 09:11:08.218251
"""

import sqlalchemy as sa
from alembic import op

revision = 'f0f8dedfdecf'
down_revision = 'a4f3979f55bf'
branch_labels = None
depends_on = None


INBOX_UNFINISHED = sa.text("status IN ('pending', 'processing')")
OUTBOX_UNFINISHED = sa.text("status IN ('pending', 'in_flight')")
NEW_INDEXES = [
    ("ix_inbox_events_subject_unfinished", "inbox_events", ["shop_id", "subject", "id"], INBOX_UNFINISHED),
    ("ix_inbox_events_unfinished", "inbox_events", ["id"], INBOX_UNFINISHED),
    ("ix_outbox_calls_unfinished", "outbox_calls", ["id"], OUTBOX_UNFINISHED),
]


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        # CONCURRENTLY: the push table keeps taking inserts while the indexes build (a deploy
        # during a livestream must not make pushes wait); outside a transaction, as it requires.
        with op.get_context().autocommit_block():
            for name, table, columns, where in NEW_INDEXES:
                op.create_index(name, table, columns, postgresql_where=where, postgresql_concurrently=True)
            op.drop_index("ix_inbox_events_subject", table_name="inbox_events", postgresql_concurrently=True)
        return
    for name, table, columns, where in NEW_INDEXES:
        op.create_index(name, table, columns, sqlite_where=where)
    op.drop_index("ix_inbox_events_subject", table_name="inbox_events")


def downgrade():
    op.create_index("ix_inbox_events_subject", "inbox_events", ["shop_id", "subject", "id"])
    for name, table, _columns, _where in reversed(NEW_INDEXES):
        op.drop_index(name, table_name=table)
