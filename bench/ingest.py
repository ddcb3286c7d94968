"""A livestream burst through the whole intake: from an order created on the platform to stored in the desk.

Production shape on loopback: PostgreSQL, one gunicorn web process (webhooks + inbox workers), one
`flask scheduler` process (pollers), and the platform simulator (in this process) playing a burst of
N orders over T seconds, 25% of them turning into after-sales, 20% of buyers writing first.

Modes, each on a fresh database:
- push: the simulator pushes every change to the desk's webhook (pollers run too, as in production);
- poll: pushes off; only the pollers (every POLL_ORDERS_SECONDS) bring data in.
After the burst, a catch-up re-reads every order from scratch with `flask sync orders` to measure
detail-fetch throughput (bounded concurrency, DETAIL_FETCH_CONCURRENCY).

    python bench/ingest.py [--orders 5000] [--seconds 300] [--mode both|push|poll] [--poll-seconds 60]

Prints one JSON line. Goal (issue 3): completeness 100%; p95 lag <= 5 s with pushes,
<= poll interval + 10 s without.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.platform.simulator import Simulator
from app.platform.simulator.scenario import Burst
from bench.common import (
    AES_KEY,
    BIN,
    SimulatorServer,
    add_shop,
    desk_env,
    emit,
    flask,
    free_port,
    postgres_database,
    start_process,
    start_web,
    stop,
    summary_ms,
)

APPID = "wxbe9c4000000000bb"


def serve_simulator() -> tuple[Simulator, str, object]:
    simulator = Simulator.create(push_workers=8)
    server = SimulatorServer(simulator)
    return simulator, server.url, server


def desk_rows(engine, shop_id: int) -> tuple[dict, dict]:
    with engine.connect() as conn:
        orders = {
            oid: (status, int(updated.replace(tzinfo=UTC).timestamp()), created.replace(tzinfo=UTC).timestamp())
            for oid, status, updated, created in conn.execute(
                sa.text("SELECT order_id, status, platform_updated_at, created_at FROM orders WHERE shop_id = :s"),
                {"s": shop_id},
            )
        }
        after_sales = {
            aid: (status, int(updated.replace(tzinfo=UTC).timestamp()), created.replace(tzinfo=UTC).timestamp())
            for aid, status, updated, created in conn.execute(
                sa.text(
                    "SELECT after_sale_order_id, status, platform_updated_at, created_at FROM after_sales "
                    "WHERE shop_id = :s"
                ),
                {"s": shop_id},
            )
        }
    return orders, after_sales


def platform_rows(simulator: Simulator, sim_shop) -> tuple[dict, dict]:
    with simulator.platform.lock:
        return (
            {oid: (o["status"], o["update_time"]) for oid, o in sim_shop.orders.items()},
            {aid: (a["status"], a["update_time"]) for aid, a in sim_shop.after_sales.items()},
        )


def complete(expected: dict, stored: dict) -> int:
    return sum(1 for key, value in expected.items() if key in stored and stored[key][:2] == value)


def run_mode(mode: str, orders: int, seconds: float, poll_seconds: int, workdir: Path) -> dict:
    simulator, sim_url, sim_server = serve_simulator()
    with postgres_database() as database_url:
        env = desk_env(
            database_url, POLL_ORDERS_SECONDS=poll_seconds, POLL_AFTER_SALES_SECONDS=poll_seconds, SYNC_INITIAL_DAYS=1
        )
        flask(env, "db", "upgrade")
        shop_id, key = add_shop(env, APPID, sim_url)
        port = free_port()
        web = start_web(env, port, 16, workdir / f"web-{mode}.log")
        scheduler = start_process([str(BIN / "flask"), "scheduler"], env, workdir / f"scheduler-{mode}.log")
        engine = sa.create_engine(database_url)
        try:
            push_url = f"http://127.0.0.1:{port}/webhooks/{key}" if mode == "push" else None
            sim_shop = simulator.platform.add_shop(APPID, "bench-secret-0123456789", "benchtoken", AES_KEY, push_url)
            time.sleep(2)  # the scheduler's first (empty) poll
            burst = Burst(
                simulator.platform,
                sim_shop,
                orders=orders,
                seconds=seconds,
                after_sale_rate=0.25,
                message_rate=0.2,
                seed=42,
            )
            started = time.time()
            burst.start()
            burst.done.wait()
            burst_seconds = time.time() - started
            deadline = time.time() + poll_seconds + 90
            while True:
                expected_orders, expected_after_sales = platform_rows(simulator, sim_shop)
                stored_orders, stored_after_sales = desk_rows(engine, shop_id)
                done = complete(expected_orders, stored_orders) == len(expected_orders) and complete(
                    expected_after_sales, stored_after_sales
                ) == len(expected_after_sales)
                if done or time.time() > deadline:
                    break
                time.sleep(1)
            settle_seconds = time.time() - started - burst_seconds
            order_lags = [stored_orders[oid][2] - at for oid, at in burst.created if oid in stored_orders]
            after_sale_lags = [
                stored_after_sales[aid][2] - at for aid, at in burst.after_sales if aid in stored_after_sales
            ]
            detail_calls = len(simulator.platform.calls(sim_shop, "/channels/ec/order/get")) + len(
                simulator.platform.calls(sim_shop, "/channels/ec/aftersale/getaftersaleorder")
            )
            # Catch-up: forget the cursor, re-read every order of the burst with the poller, timed.
            stop(scheduler)
            scheduler = None
            with engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE sync_cursors SET synced_until = NOW() - INTERVAL '1 hour' WHERE kind = 'orders'")
                )
            catch_up_started = time.time()
            flask(env, "sync", "orders")
            catch_up_seconds = time.time() - catch_up_started
            with engine.connect() as conn:
                duplicates = conn.execute(
                    sa.text("SELECT (SELECT count(*) FROM orders) - (SELECT count(DISTINCT order_id) FROM orders)")
                ).scalar()
            return {
                "orders": len(expected_orders),
                "after_sales": len(expected_after_sales),
                "buyer_messages": burst.messages,
                "burst_seconds": round(burst_seconds, 1),
                "completeness_orders_pct": round(
                    100 * complete(expected_orders, stored_orders) / max(1, len(expected_orders)), 2
                ),
                "completeness_after_sales_pct": round(
                    100 * complete(expected_after_sales, stored_after_sales) / max(1, len(expected_after_sales)), 2
                ),
                "stored_twice": duplicates,
                "order_lag": {k.replace("_ms", "_s"): round(v / 1000, 3) for k, v in summary_ms(order_lags).items()},
                "after_sale_lag": {
                    k.replace("_ms", "_s"): round(v / 1000, 3) for k, v in summary_ms(after_sale_lags).items()
                },
                "settled_after_burst_s": round(settle_seconds, 1),
                "detail_fetches_during_burst": detail_calls,
                "catch_up_orders": len(expected_orders),
                "catch_up_seconds": round(catch_up_seconds, 1),
                "detail_fetch_throughput_per_s": round(len(expected_orders) / catch_up_seconds, 1),
            }
        finally:
            stop(scheduler)
            stop(web)
            engine.dispose()
            simulator.stop()
            sim_server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--mode", choices=["both", "push", "poll"], default="both")
    parser.add_argument("--poll-seconds", type=int, default=60)
    args = parser.parse_args()
    result = {
        "bench": "ingest",
        "database": "postgresql",
        "orders_requested": args.orders,
        "burst_seconds_requested": args.seconds,
        "poll_interval_s": args.poll_seconds,
    }
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(os.environ.get("BENCH_LOG_DIR") or tmp)  # set BENCH_LOG_DIR to keep the processes' logs
        logs.mkdir(parents=True, exist_ok=True)
        for mode in ["push", "poll"] if args.mode == "both" else [args.mode]:
            result[f"{mode}_mode"] = run_mode(mode, args.orders, args.seconds, args.poll_seconds, logs)
    emit(result)


if __name__ == "__main__":
    main()
