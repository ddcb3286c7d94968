"""Automatic refunds: from an after-sale push to the platform's `acceptapply`, and a livestream burst.

Production shape on loopback: PostgreSQL, one gunicorn web process (`-w 1 --threads N`) with the inbox
and outbox workers in it, the platform simulator in this process pushing encrypted webhooks to the
desk. The shop has the default rule "refund within 4 hours if not shipped" switched on (live), and
caps high enough not to stop the run (`rule_settings`). Orders are placed first and stored by the desk,
every push about them handled (not measured); then:

- latency (not rate-limited): `--cases` after-sales of distinct orders, one every 1/`--rate` s (open
  loop). Per case: from the desk's receipt of the after-sale push (`inbox_events.received_at`) to the
  simulator's receipt of the successful `acceptapply` for it (`push_received_to_acceptapply`); also
  from the moment the simulator created the after-sale (push delivery included), and the stages
  (push received -> decision row; decision -> acceptapply).
- burst: `--burst` after-sales opened as fast as the simulator can (a livestream's regret wave), of
  which `--second` are a second after-sale on an order that already has one. The platform allows one
  refund call per order per minute (errcode 10021059), so those cannot be refunded sooner than 60 s
  after their order's first: the floor for clearing the burst is 60 s (the platform page documents no
  other number: the per-minute API quota 45011 has no published size). `cleared_s` is from the first
  after-sale to the last successful acceptapply; `first_refunds_cleared_s` the same for the after-sales
  that the per-order limit does not hold back (our own throughput);
  `first_refund_of_twice_refunded_orders_s` when the first refund of each order refunded twice went
  out (the burst clears no sooner than the last of these + 60 s), and
  `until_first_refund_of_twice_refunded_orders` who had the machine in those seconds (CPU sampled
  every 0.25 s: each process group's cores used, how busy the machine was, the refunds sent).

Checks: every after-sale refunded by exactly one successful acceptapply; the platform's refusals
(10021059 = we called too early) counted. Exits 1 when a case was not refunded exactly once.

Mixed load: with ``--messages-per-s R`` buyers write to the shop at R messages a second while the burst
is worked (open loop, 200 buyers; nobody is online, so they queue): `burst.buyer_messages` gives
how long a message waited in the inbox (received -> handled) behind the burst's pushes.
``--inline 0`` leaves every rule evaluation to the outbox threads (RULES_EVALUATE_INLINE=0) instead
of the inbox worker that stored the after-sale (the default, depth first).

With ``--worker-processes K`` (K >= 1) the production shape of docs/deploy.md for a busy shop: the
web process only accepts pushes (INBOX_WORKERS_IN_WEB=0) and K `flask workers` processes work the
inbox, the rules and the outbox, woken through a Redis server of the run's own.

    python bench/rules.py [--cases 100] [--rate 5] [--burst 1250] [--second 125] [--threads 32]
                          [--worker-processes 0] [--messages-per-s 0] [--inline 1]

Goal (rule engine issue): p95 <= 2 s while not rate-limited; the burst cleared as fast as the
platform's per-order limit allows. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.platform.simulator import Simulator
from app.platform.simulator.scenario import CATALOGUE
from bench.common import (
    AES_KEY,
    CpuMeter,
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

APPID = "wxbe9c4000000000aa"
TOKEN = "benchtoken"
SECRET = "bench-secret-0123456789"
ACCEPT = "/channels/ec/aftersale/acceptapply"
REFUND_TOO_FAST = 10021059
FLOOR_PER_ORDER_S = 60.0


def log(message: str) -> None:
    print(f"[rules bench] {message}", file=sys.stderr, flush=True)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=value.tzinfo or UTC).timestamp()


def wait_for(condition, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def place_orders(simulator, sim_shop, count: int) -> list[str]:
    platform = simulator.platform
    orders = []
    for i in range(count):
        openid = f"o_bench_{i:06d}"
        item = dict(CATALOGUE[i % len(CATALOGUE)], sku_cnt=1)
        orders.append(platform.place_order(sim_shop, openid, [item])["order_id"])
    return orders


def orders_settled(engine, shop_id: int, count: int) -> bool:
    """Every order stored and every push about them handled (new + pay: two each), so the measured
    after-sales do not queue behind the setup's pushes."""
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM orders WHERE shop_id = :s"), {"s": shop_id}).scalar()
        pushes, unfinished = conn.execute(
            sa.text(
                "SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'processing')) "
                "FROM inbox_events WHERE shop_id = :s"
            ),
            {"s": shop_id},
        ).one()
    return stored >= count and pushes >= 2 * count and unfinished == 0


def refunded(simulator, sim_shop, ids: set[str]) -> int:
    with simulator.platform.lock:
        return sum(1 for i in ids if sim_shop.after_sales[i]["status"] == "MERCHANT_REFUND_SUCCESS")


def desk_times(engine, shop_id: int) -> tuple[dict[str, float], dict[str, float], dict[str, float], Counter]:
    """Per after-sale id: when the desk received its first push; when it stored the after-sale; when
    the rule decided it. And the decisions' outcomes."""
    with engine.connect() as conn:
        stored = {
            row[0]: _epoch(row[1])
            for row in conn.execute(
                sa.text("SELECT after_sale_order_id, created_at FROM after_sales WHERE shop_id = :s"), {"s": shop_id}
            )
        }
        received = {
            row[0]: _epoch(row[1])
            for row in conn.execute(
                sa.text(
                    "SELECT payload->'finder_shop_aftersale_status_update'->>'after_sale_order_id', min(received_at) "
                    "FROM inbox_events WHERE shop_id = :s AND event = 'channels_ec_aftersale_update' GROUP BY 1"
                ),
                {"s": shop_id},
            )
        }
        decided = {
            row[0]: _epoch(row[1])
            for row in conn.execute(
                sa.text(
                    "SELECT a.after_sale_order_id, min(d.created_at) FROM rule_decisions d "
                    "JOIN after_sales a ON a.id = CAST(d.subject_id AS BIGINT) "
                    "WHERE d.shop_id = :s AND d.subject_kind = 'after_sale' GROUP BY 1"
                ),
                {"s": shop_id},
            )
        }
        outcomes = Counter(
            dict(conn.execute(sa.text("SELECT outcome, count(*) FROM rule_decisions GROUP BY outcome")).all())
        )
    return received, stored, decided, outcomes


def buyers_write(simulator, sim_shop, rate: float, stop: threading.Event, buyers: int = 200) -> None:
    """Open loop: message i is due at start + i/rate, from buyer i % buyers, until ``stop``."""
    start = time.time()
    for i in itertools.count():
        if stop.is_set():
            return
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        simulator.platform.buyer_message(sim_shop, f"o_bench_buyer_{i % buyers:04d}", f"在吗 {i}")


def messages_pending(engine, shop_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM inbox_events WHERE shop_id = :s AND event = 'commkf_send_msg_to_kf' "
                    "AND status <> 'done'"),
            {"s": shop_id},
        ).scalar()


def message_times(engine, shop_id: int) -> list[float]:
    """Seconds each buyer message waited in the inbox: from its receipt to its handling."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT received_at, processed_at FROM inbox_events WHERE shop_id = :s "
                    "AND event = 'commkf_send_msg_to_kf' AND processed_at IS NOT NULL"),
            {"s": shop_id},
        ).all()
    return [_epoch(done) - _epoch(received) for received, done in rows]


def accept_calls(simulator, sim_shop) -> tuple[dict[str, list[float]], Counter]:
    ok: dict[str, list[float]] = defaultdict(list)
    errors: Counter = Counter()
    for t, _api, body, errcode in simulator.platform.calls(sim_shop, ACCEPT):
        if errcode == 0:
            ok[str(body.get("after_sale_order_id"))].append(t)
        else:
            errors[errcode] += 1
    return ok, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100, help="after-sales of the latency phase")
    parser.add_argument("--rate", type=float, default=5.0, help="after-sales per second in the latency phase")
    parser.add_argument("--burst", type=int, default=1250, help="after-sales of the burst")
    parser.add_argument("--second", type=int, default=125, help="of which second after-sales of an order")
    parser.add_argument("--threads", type=int, default=32, help="gunicorn threads")
    parser.add_argument("--push-workers", type=int, default=8, help="simulator threads delivering pushes")
    parser.add_argument("--worker-processes", type=int, default=0,
                        help="`flask workers` processes (0: the web process works the queues itself)")
    parser.add_argument("--messages-per-s", type=float, default=0.0,
                        help="buyer messages per second while the burst is worked (mixed load)")
    parser.add_argument("--inline", type=int, choices=(0, 1), default=1,
                        help="RULES_EVALUATE_INLINE: 1 the inbox worker evaluates what it stored (depth first)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    burst_orders = args.burst - args.second

    simulator = Simulator.create(push_workers=args.push_workers)
    server = SimulatorServer(simulator)
    sim_url = server.url
    result: dict = {"bench": "rules"}
    ok_all = False
    with postgres_database() as database_url, tempfile.TemporaryDirectory() as tmp:
        logs = Path(os.environ.get("BENCH_LOG_DIR") or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        env = desk_env(database_url, RULES_EVALUATE_INLINE=str(args.inline))
        redis_server = None
        if args.worker_processes:
            from tests.prod.cluster import RedisServer

            redis_server = RedisServer(Path(tmp))
            redis_server.start()
            env = desk_env(database_url, REDIS_URL=redis_server.url, INBOX_WORKERS_IN_WEB="0",
                           RULES_EVALUATE_INLINE=str(args.inline))
        flask(env, "db", "upgrade")
        shop_id, key = add_shop(env, APPID, sim_url)
        flask(env, "rules", "default", "--shop", APPID, "--live")
        engine = sa.create_engine(database_url)
        with engine.begin() as conn:  # caps far above the run: the bench measures speed, not the caps
            conn.execute(
                sa.text(
                    "INSERT INTO rule_settings (shop_id, paused, daily_count_cap, daily_amount_cap_fen, "
                    "allow_auto_reject, updated_at) VALUES (:s, false, 1000000, 100000000000, false, now())"
                ),
                {"s": shop_id},
            )
        port = free_port()
        web = start_web(env, port, args.threads, logs / "web.log")
        workers = [
            start_process([str(Path(sys.executable).parent / "flask"), "workers"], env, logs / f"workers{n}.log")
            for n in range(args.worker_processes)
        ]
        try:
            sim_shop = simulator.platform.add_shop(
                APPID, SECRET, TOKEN, AES_KEY, f"http://127.0.0.1:{port}/webhooks/{key}"
            )
            total_orders = args.cases + burst_orders
            log(f"placing {total_orders} orders")
            orders = place_orders(simulator, sim_shop, total_orders)
            if not wait_for(lambda: orders_settled(engine, shop_id, total_orders), args.timeout):
                raise RuntimeError("the desk did not store every order")
            latency_orders, burst_order_ids = orders[: args.cases], orders[args.cases :]

            log(f"latency: {args.cases} after-sales at {args.rate:g}/s")
            opened: dict[str, float] = {}
            start = time.time()
            for i, order_id in enumerate(latency_orders):
                delay = start + i / args.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                record = simulator.platform.open_after_sale(sim_shop, order_id, "REFUND")
                opened[record["after_sale_order_id"]] = time.time()
            latency_ids = set(opened)
            if not wait_for(lambda: refunded(simulator, sim_shop, latency_ids) == len(latency_ids), args.timeout):
                log("latency phase: not every case was refunded")

            log(f"burst: {args.burst} after-sales ({args.second} second ones on an order)")
            burst_opened: dict[str, float] = {}
            seconds: set[str] = set()
            burst_start = time.time()
            meter = CpuMeter(web.pid, [w.pid for w in workers], sa.engine.make_url(database_url).database)
            meter.sample_every(0.25)
            chatting = threading.Event()
            chatter = None
            if args.messages_per_s > 0:
                chatter = threading.Thread(
                    target=buyers_write, args=(simulator, sim_shop, args.messages_per_s, chatting), daemon=True
                )
                chatter.start()
            for order_id in burst_order_ids:
                record = simulator.platform.open_after_sale(sim_shop, order_id, "REFUND")
                burst_opened[record["after_sale_order_id"]] = time.time()
            for order_id in burst_order_ids[: args.second]:
                record = simulator.platform.open_after_sale(sim_shop, order_id, "REFUND")
                burst_opened[record["after_sale_order_id"]] = time.time()
                seconds.add(record["after_sale_order_id"])
            opened_s = time.time() - burst_start
            burst_ids = set(burst_opened)
            if not wait_for(lambda: refunded(simulator, sim_shop, burst_ids) == len(burst_ids), args.timeout, 0.5):
                log("burst: not every case was refunded")
            chatting.set()
            if chatter is not None:
                chatter.join()
                wait_for(lambda: messages_pending(engine, shop_id) == 0, args.timeout, 0.5)
            burst_cpu = meter.result()
        finally:
            for process in [*workers, web]:
                stop(process)
            if redis_server is not None:
                redis_server.stop()
            simulator.stop()
            server.shutdown()
        received, stored, decided, outcomes = desk_times(engine, shop_id)
        message_waits = message_times(engine, shop_id) if args.messages_per_s > 0 else None
        engine.dispose()

    ok_calls, refusals = accept_calls(simulator, sim_shop)
    once = {i for i, times in ok_calls.items() if len(times) == 1}
    all_ids = latency_ids | burst_ids
    ok_all = once >= all_ids and set(ok_calls) == all_ids

    def first_ok(i: str) -> float | None:
        return ok_calls[i][0] if ok_calls.get(i) else None

    lat = [first_ok(i) - received[i] for i in latency_ids if first_ok(i) and received.get(i)]
    lat_sim = [first_ok(i) - opened[i] for i in latency_ids if first_ok(i)]
    to_decision = [decided[i] - received[i] for i in latency_ids if decided.get(i) and received.get(i)]
    to_call = [first_ok(i) - decided[i] for i in latency_ids if first_ok(i) and decided.get(i)]
    burst_done = [first_ok(i) for i in burst_ids if first_ok(i)]
    first_done = [first_ok(i) for i in burst_ids - seconds if first_ok(i)]
    second_wait, first_of_twice = [], []
    for order_id in burst_order_ids[: args.second]:
        with simulator.platform.lock:
            ids = [a for a, r in sim_shop.after_sales.items() if r["order_id"] == order_id]
        times = sorted(t for a in ids for t in ok_calls.get(a, []))
        if len(times) == 2:
            second_wait.append(times[1] - times[0])
            first_of_twice.append(times[0] - burst_start)
    cleared = (max(burst_done) - burst_start) if len(burst_done) == len(burst_ids) else None
    # The seconds that set how far the burst ends over its floor: until the last first refund of an
    # order refunded twice. Who had the two cores then, and how many refunds went out in them.
    critical = None
    if first_of_twice:
        end = burst_start + max(first_of_twice)
        critical = meter.window(burst_start, end)
        # The burst's after-sales the desk had stored, decided and refunded by then. Beyond the 125
        # that set the floor, these counts are the window's work on the cases behind them.
        critical["after_sales_stored"] = sum(1 for i in burst_ids if stored.get(i) and stored[i] <= end)
        critical["after_sales_decided"] = sum(1 for i in burst_ids if decided.get(i) and decided[i] <= end)
        critical["acceptapply_ok"] = sum(1 for i in burst_ids if first_ok(i) and first_ok(i) <= end)
    floor = FLOOR_PER_ORDER_S if args.second else 0.0
    latency = summary_ms(lat)
    result.update(
        {
            "latency": {
                "cases": args.cases,
                "rate_per_s": args.rate,
                "push_received_to_acceptapply": latency,
                "platform_created_to_acceptapply": summary_ms(lat_sim),
                "stages": {
                    "received_to_decided": summary_ms(to_decision),
                    "decided_to_acceptapply": summary_ms(to_call),
                },
            },
            "burst": {
                "after_sales": args.burst,
                "orders": burst_orders,
                "second_after_sales": args.second,
                "opened_in_s": round(opened_s, 2),
                "cleared_s": round(cleared, 2) if cleared is not None else None,
                "first_refunds_cleared_s": round(max(first_done) - burst_start, 2) if first_done else None,
                "first_refunds_per_s": round(len(first_done) / (max(first_done) - burst_start), 1)
                if first_done
                else None,
                "floor_s": floor,
                "over_floor_s": round(cleared - floor, 2) if cleared is not None else None,
                "second_refund_gap_s": summary_ms(second_wait) | {"min_s": round(min(second_wait), 2)}
                if second_wait
                else None,
                # When the first refund of each order refunded twice went out (from the burst's
                # start): the burst cannot clear before the last of these + the per-order 60 s.
                "first_refund_of_twice_refunded_orders_s": {
                    "p50": round(statistics.median(first_of_twice), 2), "max": round(max(first_of_twice), 2)}
                if first_of_twice
                else None,
                "until_first_refund_of_twice_refunded_orders": critical,
                # CPU over the burst: the desk's web worker (inbox, rules, outbox), this process
                # (the simulator answering and pushing), PostgreSQL; how busy the machine was.
                "cpu": burst_cpu,
                "web_cpu_ms_per_after_sale": round(1000 * burst_cpu["web_worker_cpu_s"] / max(1, args.burst), 1),
                "desk_cpu_ms_per_after_sale": round(
                    1000 * (burst_cpu["web_worker_cpu_s"] + burst_cpu.get("workers_cpu_s", 0.0)) / max(1, args.burst), 1
                ),
                "worker_processes": args.worker_processes,
                "rules_evaluate_inline": bool(args.inline),
                "buyer_messages": {"per_s": args.messages_per_s, "handled": len(message_waits),
                                   "received_to_handled": summary_ms(message_waits)}
                if message_waits is not None
                else None,
                "push_received_to_acceptapply_first_refunds": summary_ms(
                    [first_ok(i) - received[i] for i in burst_ids - seconds if first_ok(i) and received.get(i)]
                ),
            },
            "refunded_exactly_once": len(once & all_ids),
            "expected": len(all_ids),
            "platform_refusals": {str(k): v for k, v in refusals.items()},
            "decisions": dict(outcomes),
            "goal": {
                "p95_le_2s": latency["p95_ms"] is not None and latency["p95_ms"] <= 2000,
                "each_refunded_once": ok_all,
                "no_too_fast_refusals": refusals.get(REFUND_TOO_FAST, 0) == 0,
            },
        }
    )
    emit(result)
    sys.exit(0 if ok_all else 1)


if __name__ == "__main__":
    main()
