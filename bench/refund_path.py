"""What one automatic refund costs the desk: statements and CPU, one case at a time.

`bench/rules.py` measures the burst with every process competing for two cores, which moves its
numbers by a third between runs. This one takes contention out: in one process, one thread drives
each case through the production code end to end on PostgreSQL, the simulator answering over real
HTTP on a thread of its own:

    the after-sale's push -> inbox (fetch, store, the default rule evaluated inline, the approval
    queued) -> outbox (acceptapply, the read-back) -> the platform's push of the refund's success

and counts the statements the desk sends and the CPU time of that thread (`time.thread_time`: the
simulator's threads and PostgreSQL are not in it). Rounds of `--cases` cases; medians over rounds.
A last round, not timed, counts the Python and C function calls that thread makes per case
(`sys.setprofile`): the same for the same code whatever else the machine is doing, where the CPU
time of one code moves by a third between runs on a shared machine.

    python bench/refund_path.py [--cases 50] [--rounds 5]

Prints one JSON line. Compare two commits by running it in each checkout, interleaved.
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

from app.platform.simulator import Simulator
from app.platform.simulator.scenario import CATALOGUE
from bench.common import (
    AES_KEY,
    ROOT,
    SimulatorServer,
    add_shop,
    desk_env,
    emit,
    flask,
    free_port,
    postgres_database,
    rounds_summary,
)

APPID = "wxbe9c4000000000ab"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.environ.get("REFUND_PATH_SHOP_ID"):
        measure(args)
        return
    # The desk's configuration is read from the environment at import: the measuring runs in a
    # child process, started with the environment of a fresh database that this one prepares.
    port = free_port()
    with postgres_database() as database_url:
        env = desk_env(database_url, INBOX_WORKERS_IN_WEB="0", RULES_EVALUATE_INLINE="1")
        flask(env, "db", "upgrade")
        shop_id, _key = add_shop(env, APPID, f"http://127.0.0.1:{port}")
        flask(env, "rules", "default", "--shop", APPID, "--live")
        env.update(REFUND_PATH_SHOP_ID=str(shop_id), REFUND_PATH_SIM_PORT=str(port))
        child = subprocess.run([sys.executable, __file__, "--cases", str(args.cases), "--rounds", str(args.rounds)],
                               env=env, cwd=ROOT, check=False)
    sys.exit(child.returncode)


def measure(args) -> None:
    from app import create_app
    from app.extensions import db
    from app.ingest import inbox, store
    from app.models import Shop
    from app.outbox import claim, process_claimed
    from app.platform import client_for

    shop_id = int(os.environ["REFUND_PATH_SHOP_ID"])
    simulator = Simulator.create(push_workers=1)
    server = SimulatorServer(simulator, port=int(os.environ["REFUND_PATH_SIM_PORT"]))
    database_url = os.environ["DATABASE_URL"]
    app = create_app()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:  # caps far above the run
        conn.execute(sa.text(
            "INSERT INTO rule_settings (shop_id, paused, daily_count_cap, daily_amount_cap_fen, allow_auto_reject, "
            "updated_at) VALUES (:s, false, 1000000, 100000000000, false, now())"), {"s": shop_id})
    engine.dispose()
    # Pushes are delivered by hand below (each case's own, in order): the simulator's go nowhere.
    sim_shop = simulator.platform.add_shop(APPID, "bench-secret-0123456789", "benchtoken", AES_KEY,
                                           "http://127.0.0.1:9/unused")
    statements: list[int] = []

    def count(*_):
        statements[-1] += 1

    def push(record: dict) -> None:
        payload = {"Event": "channels_ec_aftersale_update", "CreateTime": int(time.time()),
                   "finder_shop_aftersale_status_update": {
                       "status": record["status"], "after_sale_order_id": record["after_sale_order_id"],
                       "order_id": record["order_id"]}}
        with app.app_context():
            inbox.receive(shop_id, payload, f"{record['after_sale_order_id']}:{record['status']}")
            db.session.commit()
            inbox.process_claimed(inbox.claim())
            db.session.remove()

    def drain() -> None:
        with app.app_context():
            while True:
                claimed = claim(limit=20)
                if not claimed.ids:
                    break
                process_claimed(claimed)
            db.session.remove()

    def order() -> str:
        placed = simulator.platform.place_order(sim_shop, f"o_path_{time.time_ns()}", [dict(CATALOGUE[0], sku_cnt=1)])
        with app.app_context():
            shop = db.session.get(Shop, shop_id)
            store.upsert_order(shop_id, client_for(shop).get_order(placed["order_id"]))
            db.session.commit()
            db.session.remove()
        return placed["order_id"]

    def case(order_id: str) -> None:
        record = simulator.platform.open_after_sale(sim_shop, order_id, "REFUND")
        push(record)
        drain()
        with simulator.platform.lock:
            done = dict(sim_shop.after_sales[record["after_sale_order_id"]])
        if done["status"] != "MERCHANT_REFUND_SUCCESS":
            raise RuntimeError(f"case {record['after_sale_order_id']} not refunded: {done['status']}")
        push(done)

    for _ in range(5):  # warm: the rule actor, the caches, first-call paths
        case(order())
    with app.app_context():
        db_engine = db.engine
    cpu_per_case, statements_per_case = [], []
    for _ in range(args.rounds):
        orders = [order() for _ in range(args.cases)]
        statements.append(0)
        sa.event.listen(db_engine, "before_cursor_execute", count)
        started = time.thread_time()
        for order_id in orders:
            case(order_id)
        cpu_per_case.append(1000 * (time.thread_time() - started) / args.cases)
        sa.event.remove(db_engine, "before_cursor_execute", count)
        statements_per_case.append(statements[-1] / args.cases)
    orders = [order() for _ in range(args.cases)]
    calls = [0]

    def profile(_frame, event, _arg):
        if event in ("call", "c_call"):
            calls[0] += 1

    sys.setprofile(profile)  # this thread only: the simulator's threads are not counted
    try:
        for order_id in orders:
            case(order_id)
    finally:
        sys.setprofile(None)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    simulator.stop()
    server.shutdown()
    emit({
        "bench": "refund_path",
        "cases_per_round": args.cases,
        "rounds": args.rounds,
        "statements_per_case": round(statistics.median(statements_per_case), 1),
        "desk_cpu_ms_per_case": rounds_summary(cpu_per_case),
        "function_calls_per_case": round(calls[0] / args.cases),
    })


if __name__ == "__main__":
    main()
