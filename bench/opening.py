"""A livestream's start: how many new conversations a second the desk opens and assigns.

Every buyer's first message opens a conversation that is assigned in the transaction that files it,
under one assignment lock for all shops (app/desk/assignment.py). When thousands of buyers write in
the first minutes of a livestream, that lock decides how fast conversations reach agents. This
drives the inbox's handling of new buyers' messages (`inbox.handle` + commit, as a worker does) on
PostgreSQL from `--processes` processes of `--threads` threads each, every thread opening
conversations one after another as fast as it can, for `--seconds`, with `--agents` agents online
serving the shop (capacity to spare: nothing queues). Measured:

- `openings_per_s`: conversations opened and assigned a second, all threads together;
- `opening_ms`: one opening's wall time (file, assign, commit), p50/p95/p99;
- `cpu_ms_per_opening`: the threads' CPU (`time.thread_time`) per opening;
- checks: every conversation assigned, and the agents' loads within one of each other (fairness).

    python bench/opening.py [--processes 2] [--threads 4] [--seconds 10] [--agents 200]

Prints one JSON line; exits 1 if a conversation was left unassigned or the loads were unfair.
Compare two commits by running it in each checkout, interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, add_shop, desk_env, emit, flask, postgres_database, summary_ms

APPID = "wxbe9c4000000000f1"
HASH = {"PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000"}  # creating the agents fast
PASSWORD = "bench-password"  # the bench's agents, never signed in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    # The desk reads its configuration from the environment at import: it runs in child processes.
    with postgres_database() as database_url:
        env = desk_env(database_url, INBOX_WORKERS_IN_WEB="0", **HASH)
        flask(env, "db", "upgrade")
        shop_id, _key = add_shop(env, APPID, "http://127.0.0.1:9")
        env.update(OPENING_SHOP_ID=str(shop_id))
        setup = subprocess.run([sys.executable, __file__, "--child", "--agents", str(args.agents), "--threads", "0"],
                               env=env, cwd=ROOT, check=True, capture_output=True, text=True)
        agent_ids = json.loads(setup.stdout)
        start_at = time.time() + 3.0  # every process imported and connected before the clock starts
        env.update(OPENING_START_AT=repr(start_at))
        children = [
            subprocess.Popen([sys.executable, __file__, "--child", "--threads", str(args.threads),
                              "--seconds", str(args.seconds)], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            for _ in range(args.processes)
        ]
        results = [json.loads(process.communicate()[0]) for process in children]
        if any(process.returncode for process in children):
            sys.exit("a child process failed")
        engine = sa.create_engine(database_url)
        with engine.connect() as connection:
            loads = dict(connection.execute(sa.text(
                "SELECT assignee_id, count(*) FROM conversations WHERE assignee_id IS NOT NULL GROUP BY assignee_id"
            )).all())
            unassigned = connection.scalar(sa.text("SELECT count(*) FROM conversations WHERE assignee_id IS NULL"))
        engine.dispose()
    walls = [w for result in results for w in result["walls"]]
    cpu = sum(result["cpu_s"] for result in results)
    spread = [loads.get(agent_id, 0) for agent_id in agent_ids]
    fair = max(spread) - min(spread) <= 1
    emit({
        "bench": "opening",
        "config": {"processes": args.processes, "threads": args.threads, "seconds": args.seconds,
                   "agents": args.agents},
        "openings": len(walls),
        "openings_per_s": round(len(walls) / args.seconds, 1),
        "opening_ms": summary_ms(walls),
        "cpu_ms_per_opening": round(1000 * cpu / len(walls), 2) if walls else None,
        "unassigned": unassigned,
        "loads": {"min": min(spread), "max": max(spread)},
        "fair": fair,
    })
    sys.exit(0 if fair and not unassigned else 1)


def child(args) -> None:
    from app import create_app

    app = create_app()  # first: it imports the desk's modules in their order
    from app.db import utcnow
    from app.extensions import db
    from app.ingest import inbox
    from app.models import AgentConnection, Shop
    from app.settings import services

    shop_id = int(os.environ["OPENING_SHOP_ID"])
    if args.threads == 0:  # set-up: the agents, online, with room for every conversation
        with app.app_context():
            shop = db.session.get(Shop, shop_id)
            users = [services.create_user(username=f"agent{n:04d}", display_name=f"Agent {n}",
                                          password=PASSWORD, shops=[shop]) for n in range(args.agents)]
            for user in users:
                user.capacity = 100_000
            db.session.flush()
            # A live console connection each (what a tab records; the pick asks for one seen lately).
            db.session.add_all(AgentConnection(sid=uuid.uuid4().hex, user_id=user.id) for user in users)
            db.session.commit()
            print(json.dumps([user.id for user in users]))
        return

    def opening() -> None:
        payload = {"Event": inbox.MESSAGE_EVENT, "FromUserName": f"o_{uuid.uuid4().hex[:16]}",
                   "msg_id": uuid.uuid4().hex, "msg_type": "text", "text": {"content": "在吗"},
                   "CreateTime": int(utcnow().timestamp())}
        inbox.handle(shop_id, payload)
        db.session.commit()

    walls: list[float] = []
    cpu: list[float] = []
    lock = threading.Lock()
    start_at = float(os.environ["OPENING_START_AT"])
    stop_at = start_at + args.seconds

    def run() -> None:
        mine, started_cpu = [], None
        with app.app_context():
            opening()  # warm: the statement caches, this thread's connection
            time.sleep(max(0.0, start_at - time.time()))
            started_cpu = time.thread_time()
            while (t0 := time.time()) < stop_at:
                opening()
                mine.append(time.time() - t0)
            used = time.thread_time() - started_cpu
            db.session.remove()
        with lock:
            walls.extend(mine)
            cpu.append(used)

    threads = [threading.Thread(target=run) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"walls": walls, "cpu_s": sum(cpu)}))


if __name__ == "__main__":
    main()
