"""How many pushes one web process accepts, and how fast it answers.

One gunicorn web process (`-w 1 --threads N`, the production shape) on PostgreSQL receives encrypted
buyer-message pushes from C client connections (keep-alive, closed loop) for a fixed count, a share of
them sent twice as the platform's retries would be. Pushes are prepared before the clock starts, so the
client's encryption cost is not measured. Inbox processing runs elsewhere (INBOX_WORKERS_IN_WEB=0):
this measures intake. Afterwards every distinct push must be stored exactly once.

    python bench/webhooks.py [--pushes 10000] [--concurrency 8] [--threads 16] [--duplicates 0.1]

Prints one JSON line. Goal (issue 3): >= 500 pushes/s, median ack <= 20 ms, none lost or doubled.
"""

from __future__ import annotations

import argparse
import http.client
import random
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.platform.crypto import PushCrypto
from bench.common import (
    AES_KEY,
    CpuMeter,
    add_shop,
    desk_env,
    emit,
    flask,
    free_port,
    postgres_database,
    signed_push,
    start_web,
    stop,
    summary_ms,
)

APPID = "wxbe9c4000000000aa"
TOKEN = "benchtoken"


def prepare(count: int, duplicates: float, path: str) -> tuple[list[tuple[str, bytes]], int]:
    crypto = PushCrypto(TOKEN, AES_KEY, APPID)
    rng = random.Random(1)
    requests_: list[tuple[str, bytes]] = []
    distinct = 0
    while len(requests_) < count:
        timestamp, nonce = str(int(time.time())), secrets.token_hex(4)
        message = {
            "ToUserName": APPID,
            "FromUserName": f"o_buyer_{rng.randrange(2000)}",
            "CreateTime": int(timestamp),
            "MsgType": "event",
            "Event": "commkf_send_msg_to_kf",
            "msg_id": f"bench{distinct}",
            "msg_type": "text",
            "text": {"content": "在吗？这个什么时候发货"},
        }
        request = signed_push(crypto, TOKEN, APPID, path, message, timestamp, nonce)
        distinct += 1
        requests_.append(request)
        if rng.random() < duplicates and len(requests_) < count:
            requests_.append(request)  # a platform retry of the same push
    rng.shuffle(requests_)
    return requests_, distinct


def load(port: int, work: list[tuple[str, bytes]], concurrency: int) -> tuple[list[float], list[int], float]:
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    chunks = [work[i::concurrency] for i in range(concurrency)]

    def client(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, codes = [], []
        for url, body in chunk:
            started = time.perf_counter()
            conn.request("POST", url, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            codes.append(response.status)
        conn.close()
        with lock:
            latencies.extend(mine)
            statuses.extend(codes)

    threads = [threading.Thread(target=client, args=(c,)) for c in chunks]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--duplicates", type=float, default=0.1)
    args = parser.parse_args()

    with postgres_database() as database_url, tempfile.TemporaryDirectory() as tmp:
        env = desk_env(database_url, INBOX_WORKERS_IN_WEB="0")
        flask(env, "db", "upgrade")
        _, key = add_shop(env, APPID, "http://127.0.0.1:9/unused")
        port = free_port()
        web = start_web(env, port, args.threads, Path(tmp) / "web.log")
        try:
            work, distinct = prepare(args.pushes, args.duplicates, f"/webhooks/{key}")
            load(port, work[:200], args.concurrency)  # warm-up: connections, caches (stored like the rest)
            meter = CpuMeter(web.pid, database=sa.engine.make_url(database_url).database)
            latencies, statuses, elapsed = load(port, work[200:], args.concurrency)
            cpu = meter.result()
        finally:
            stop(web)
        engine = sa.create_engine(database_url)
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*), count(DISTINCT dedupe_key) FROM inbox_events")).one()
        engine.dispose()
    measured = len(latencies)
    emit(
        {
            "bench": "webhooks",
            "database": "postgresql",
            "web_processes": 1,
            "gunicorn_threads": args.threads,
            "client_connections": args.concurrency,
            "pushes_sent": measured + 200,
            "distinct_pushes": distinct,
            "duplicates_sent": measured + 200 - distinct,
            "pushes_per_second": round(measured / elapsed, 1),
            "ack_latency": summary_ms(latencies),
            # CPU per push: the web process's and its PostgreSQL backends' (this process sends them)
            "web_cpu_ms_per_push": round(1000 * cpu["web_worker_cpu_s"] / measured, 3),
            "postgres_cpu_ms_per_push": round(1000 * cpu["postgres_cpu_s"] / measured, 3),
            "machine_busy_pct": cpu["machine_busy_pct"],
            "non_200": sum(1 for s in statuses if s != 200),
            "stored_rows": stored[0],
            "lost": distinct - stored[1],
            "doubled": stored[0] - stored[1],
        }
    )


if __name__ == "__main__":
    main()
