"""The daily caps' count of today's automatic approvals (app/rules/live.py ``_used_today``): what it
counts, and that it reads only the counted decisions (``ix_rule_decisions_counted``)."""

from __future__ import annotations

import importlib.util
import re
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import RuleDecision
from app.models.rules import COUNTED_DECISIONS
from app.rules import live
from tests.factories import make_shop

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"
MIGRATION = MIGRATIONS / "20261203_7d2a9c4e1b56_rule_decisions_counted_index.py"


def test_the_index_predicate_names_exactly_the_counted_outcomes():
    """The literal predicate (the index's and the check's) is the outcomes that use up the caps,
    dry runs left out; the migration that built the index says the same."""
    assert set(re.findall(r"'(\w+)'", COUNTED_DECISIONS)) == set(live.COUNTED)
    assert "dry_run IS false" in COUNTED_DECISIONS
    spec = importlib.util.spec_from_file_location("counted_index_migration", MIGRATION)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.COUNTED_DECISIONS == COUNTED_DECISIONS


def _decision(shop_id: int, n: int, outcome: str, amount: int | None, at, dry_run: bool = False) -> RuleDecision:
    return RuleDecision(
        shop_id=shop_id, rule_version=1, trigger="after_sale.created", subject_kind="after_sale",
        subject_id=f"as{n}", idempotency_key=f"caps-{shop_id}-{n}", outcome=outcome, dry_run=dry_run,
        amount_fen=amount, created_at=at,
    )


def test_used_today_counts_the_days_approvals_only(app):
    with app.app_context():
        shop = make_shop("上限店")
        other = make_shop("别的店")
        db.session.commit()
        now = utcnow()
        today = live._local_day_start(shop.tz, now)
        rows = [
            _decision(shop.id, 1, live.APPROVED, 1990, now),
            _decision(shop.id, 2, live.APPROVING, 500, today),  # the day's first moment counts
            _decision(shop.id, 3, live.APPROVED, 10, today - timedelta(seconds=1)),  # yesterday, shop-local
            _decision(shop.id, 4, live.APPROVED, 700, now, dry_run=True),
            _decision(shop.id, 5, live.NO_MATCH, None, now),
            _decision(shop.id, 6, live.CAPPED, 300, now),
            _decision(shop.id, 7, live.ESCALATED, 400, now),
            _decision(other.id, 8, live.APPROVED, 9000, now),
        ]
        db.session.add_all(rows)
        db.session.commit()
        assert live.used_today(shop, now) == (2, 2490)
        assert live.used_today(other, now) == (1, 9000)


def test_the_check_reads_the_counted_index_even_in_a_generic_plan(app):
    """psycopg prepares a statement after its fifth run; PostgreSQL may then plan it once for any
    parameters. The counted outcomes are literals in the statement, so that plan can prove the
    index's predicate and read the day's approvals only."""
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("PostgreSQL's plans (runs in make test-postgres)")
        sql = str(live._used_statement().compile(dialect=db.engine.dialect))
        positional = sql.replace("%(shop_id)s", "$1").replace("%(since)s", "$2")
        assert "%(" not in positional, f"only the shop and the day may be bound: {sql}"
        connection = db.session.connection()
        connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        connection.exec_driver_sql(f"PREPARE used_today (bigint, timestamp) AS {positional}")
        try:
            plan = "\n".join(
                row[0]
                for row in connection.execute(sa.text("EXPLAIN EXECUTE used_today (1, now() AT TIME ZONE 'UTC')"))
            )
        finally:
            connection.exec_driver_sql("DEALLOCATE used_today")
            db.session.rollback()
        assert "ix_rule_decisions_counted" in plan, plan
