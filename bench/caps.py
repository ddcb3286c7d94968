"""The daily cap check late in a busy day: what one automatic approval's count of "approved today" costs.

Every automatic approval counts, under its shop's cap lock (one at a time per shop), the count and
amount the shop approved automatically today (`app/rules/live.py` `_used_today`), so its cost is
both latency and a ceiling on approvals a second per shop. This fills a fresh PostgreSQL database
with `--decisions` decisions of today (shop-local day) for one shop, one in `--counted-every`
of them an approval and the rest evaluations that matched nothing (what a shop with several rules
writes for every after-sale), then times the check as the desk runs it (the scoped session,
prepared statements after psycopg's fifth run), in rounds of `--calls`:

- `fresh_rows`: the day's rows just written (not yet vacuumed: PostgreSQL must visit the table to
  know they are visible);
- `vacuumed`: after VACUUM, as autovacuum leaves most of a day's rows.

    python bench/caps.py [--decisions 40000] [--counted-every 4] [--calls 100] [--rounds 5]

Prints one JSON line: each state's median milliseconds per check (median over rounds). Compare
two commits by running it in each checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import utcnow
from bench.common import ROOT, add_shop, desk_env, emit, flask, postgres_database, rounds_summary

APPID = "wxbe9c4000000000ca"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=40_000)
    parser.add_argument("--counted-every", type=int, default=4)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.environ.get("CAPS_SHOP_ID"):
        measure(args, int(os.environ["CAPS_SHOP_ID"]))
        return
    # The desk's configuration is read from the environment at import: the measuring runs in a
    # child process, started with the environment of a fresh database that this one prepares.
    with postgres_database() as database_url:
        env = desk_env(database_url)
        flask(env, "db", "upgrade")
        shop_id, _key = add_shop(env, APPID, "http://127.0.0.1:9")
        env["CAPS_SHOP_ID"] = str(shop_id)
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env, cwd=ROOT, check=False)
    sys.exit(child.returncode)


def fill(engine: sa.Engine, shop_id: int, decisions: int, counted_every: int, day_start) -> None:
    """Today's decisions of the shop, spread over the last minutes since ``day_start`` (its local
    day's; fewer just after midnight), with an inputs snapshot and a trace of realistic size."""
    spread = max(1, min(600, int((utcnow() - day_start).total_seconds()) - 5))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rule_decisions (rule_version, trigger, subject_kind, subject_id, idempotency_key,"
                " outcome, dry_run, amount_fen, inputs, trace, created_at, shop_id)"
                " SELECT 1, 'after_sale.created', 'after_sale', 'as' || g, 'bench-caps-' || g,"
                " CASE WHEN g % :every = 0 THEN 'approved' ELSE 'no_match' END, false,"
                " CASE WHEN g % :every = 0 THEN 1990 END,"
                " jsonb_build_object('order', repeat('x', 600), 'after_sale', repeat('y', 300)),"
                " jsonb_build_object('conditions', repeat('z', 200)),"
                " (now() AT TIME ZONE 'UTC') - (g % :spread) * interval '1 second', :shop"
                " FROM generate_series(1, :n) g"
            ),
            {"every": counted_every, "shop": shop_id, "n": decisions, "spread": spread},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE rule_decisions"))


def measure(args, shop_id: int) -> None:
    from app import create_app
    from app.extensions import db
    from app.models import Shop
    from app.rules import live

    app = create_app()
    with app.app_context():
        shop = db.session.get(Shop, shop_id)
        fill(db.engine, shop_id, args.decisions, args.counted_every, live._local_day_start(shop.tz, utcnow()))
        expected = args.decisions // args.counted_every

        def rounds() -> dict:
            per_round = []
            for _ in range(args.rounds):
                times = []
                for _ in range(args.calls):
                    started = time.perf_counter()
                    count, _amount = live.used_today(shop)
                    db.session.commit()
                    times.append((time.perf_counter() - started) * 1000)
                if count != expected:
                    raise SystemExit(f"counted {count} approvals today, expected {expected}")
                per_round.append(statistics.median(times))
            return rounds_summary(per_round, 3)

        fresh = rounds()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE rule_decisions"))
        vacuumed = rounds()
    emit(
        {
            "bench": "caps",
            "decisions_today": args.decisions,
            "approvals_today": expected,
            "calls_per_round": args.calls,
            "rounds": args.rounds,
            "ms_per_check": {"fresh_rows": fresh, "vacuumed": vacuumed},
        }
    )


if __name__ == "__main__":
    main()
