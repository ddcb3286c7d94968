"""inbox claims take buyer messages before other pushes: a partial index of the messages lane

Revision ID: 4b8d2e6f9c13
Revises: 9e2b7c4d1a60
Create Date: 2026-12-01 18:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "4b8d2e6f9c13"
down_revision = "9e2b7c4d1a60"
branch_labels = None
depends_on = None

# Buyer messages are the inbox events with a subject (app/ingest/inbox.py subject_of).
MESSAGES_UNFINISHED = sa.text("status IN ('pending', 'processing') AND subject IS NOT NULL")


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        # CONCURRENTLY: the inbox keeps taking pushes while the index builds (see f0f8dedfdecf).
        with op.get_context().autocommit_block():
            op.create_index("ix_inbox_events_messages_unfinished", "inbox_events", ["id"],
                            postgresql_where=MESSAGES_UNFINISHED, postgresql_concurrently=True)
        return
    op.create_index("ix_inbox_events_messages_unfinished", "inbox_events", ["id"], sqlite_where=MESSAGES_UNFINISHED)


def downgrade():
    op.drop_index("ix_inbox_events_messages_unfinished", table_name="inbox_events")
