"""the daily cap check reads only the day's counted decisions (an index of them)

Every automatic approval counts, under its shop's cap lock, what the shop approved automatically
today (app/rules/live.py ``_used_today``). Through ``ix_rule_decisions_shop_created`` that read
every decision of the day, most of them evaluations that matched nothing, and each row from the
table. The partial index holds the counted decisions only, with their amounts. On SQLite (one
process, the demo) the index is a plain one.

Revision ID: 7d2a9c4e1b56
Revises: 5c9e1f7a2b34
Create Date: 2026-12-03 16:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "7d2a9c4e1b56"
down_revision = "5c9e1f7a2b34"
branch_labels = None
depends_on = None

COUNTED_DECISIONS = "outcome IN ('approving', 'approved') AND dry_run IS false"  # app/models/rules.py


def upgrade():
    op.create_index(
        "ix_rule_decisions_counted",
        "rule_decisions",
        ["shop_id", "created_at", "amount_fen"],
        postgresql_where=sa.text(COUNTED_DECISIONS),
    )


def downgrade():
    op.drop_index("ix_rule_decisions_counted", table_name="rule_decisions")
