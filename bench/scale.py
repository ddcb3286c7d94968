"""Scale-out: push -> agent latency and accepted pushes/s with 1 and with 2 web processes, and the
scheduler's failover time. Prints ONE JSON line.

Production shape on loopback (tests/prod/cluster.py): PostgreSQL (a fresh database), a Redis server
of the run's own, gunicorn web processes (`-w 1 --threads 32`, each working the inbox of the pushes
it accepted: INBOX_WORKERS_IN_WEB=1, so a second process brings its own inbox threads), agents on
websockets spread over the web processes (so most events cross processes through Redis).

- Load: buyer messages as signed, encrypted pushes (built before the clock starts), open loop at a
  fixed offered rate (message i due at start + i/rate), round-robin over the web processes as nginx
  would; steps of rising rate. Per step: accepted pushes/s (answered 200, over the step's wall
  time, late answers included), push -> agent latency p50/p95/p99 (from the POST to the first
  console event carrying the message), lost (never reached an agent within the drain time).
- Saturation: the highest step whose p95 stays within --p95-budget-ms and that accepted >= 95% of
  what was offered, with nothing lost; `scale_ratio` = saturation(2) / saturation(1). Goal >= 1.5.
- Failover: two `flask scheduler` processes; kill -9 the leader, time until /healthz names the other
  (--failovers times, median). Goal <= 10 s (lease 5 s, renew 1 s).
- Load average (1 min) is recorded with every step: on a shared machine the numbers move with it.

    python bench/scale.py [--rates 40,80,120,160,220,300] [--seconds 8] [--agents 10] [--buyers 200]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, percentile, postgres_database, signed_push
from tests.prod.cluster import AES_KEY, Cluster, RedisServer, wait_for

APPID = "wx5ca1e000000000000a"
TOKEN = "scaletoken"


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _gunicorn_worker(arbiter_pid: int) -> int:
    children = Path(f"/proc/{arbiter_pid}/task/{arbiter_pid}/children").read_text().split()
    return int(children[0]) if children else arbiter_pid


class Cpu:
    """Over one step: CPU seconds per second of each web process's worker (1.0 = one core, what one
    Python interpreter can use), of this bench process, and how busy the whole machine was."""

    def __init__(self, web_pids: list[int]):
        self.pids = [_gunicorn_worker(pid) for pid in web_pids]

    def _sample(self) -> tuple:
        machine = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        own = os.times()
        webs = [_cpu_seconds(pid) for pid in self.pids]
        return time.monotonic(), webs, own.user + own.system, sum(machine), machine[3] + machine[4]

    def start(self) -> None:
        self.before = self._sample()

    def result(self) -> dict:
        (t0, webs0, own0, total0, idle0), (t1, webs1, own1, total1, idle1) = self.before, self._sample()
        wall = t1 - t0
        return {
            "web_cores": [round((b - a) / wall, 2) for a, b in zip(webs0, webs1, strict=True)],
            "bench_cores": round((own1 - own0) / wall, 2),
            "machine_busy_pct": round(100 * (1 - (idle1 - idle0) / (total1 - total0)), 1) if total1 > total0 else None,
        }


class Receipts:
    def __init__(self):
        self.lock = threading.Lock()
        self.first: dict[str, float] = {}

    def on_event(self, data: dict) -> None:
        text = ((data or {}).get("message") or {}).get("text") or ""
        start = text.rfind("[")
        if start < 0:
            return
        token = text[start + 1 : -1]
        now = time.monotonic()
        with self.lock:
            self.first.setdefault(token, now)


def connect_agents(cluster: Cluster, webs: list[str], count: int, receipts: Receipts) -> list:
    import socketio

    clients = []
    for n in range(count):
        web = webs[n % len(webs)]
        http = cluster.sign_in(web, f"agent{n}")
        cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies)
        client = socketio.Client(reconnection=False)
        hello = threading.Event()
        client.on("hello", lambda data, h=hello: h.set(), namespace="/desk")
        client.on("conversation.updated", receipts.on_event, namespace="/desk")
        client.on("conversation.assigned", receipts.on_event, namespace="/desk")
        client.connect(
            cluster.url(web),
            namespaces=["/desk"],
            headers={"Cookie": cookie},
            transports=["websocket"],
            wait_timeout=15,
        )
        if not hello.wait(15):
            raise RuntimeError("agent got no hello")
        clients.append(client)
    return clients


def build(step: int, count: int, buyers: int, path: str) -> list[tuple[str, str, bytes]]:
    from app.platform.crypto import PushCrypto

    crypto = PushCrypto(TOKEN, AES_KEY, APPID)
    pushes = []
    for i in range(count):
        token = f"s{step}-{i}"
        timestamp, nonce = str(int(time.time())), secrets.token_hex(4)
        message = {
            "ToUserName": APPID,
            "FromUserName": f"o_scale_{i % buyers:04d}",
            "CreateTime": int(timestamp),
            "MsgType": "event",
            "Event": "commkf_send_msg_to_kf",
            "msg_id": f"scale-{token}",
            "msg_type": "text",
            "text": {"content": f"请问什么时候发货 [{token}]"},
        }
        pushes.append((token, *signed_push(crypto, TOKEN, APPID, path, message, timestamp, nonce)))
    return pushes


def run_step(
    ports: list[int], pushes, rate: float, receipts: Receipts, senders: int, drain: float, cpu: Cpu | None = None
) -> dict:
    sent_at: dict[str, float] = {}
    accepted, errors = [], []
    counter = itertools.count()
    lock = threading.Lock()
    start = time.monotonic() + 0.2

    def sender() -> None:
        conns: dict[int, http.client.HTTPConnection] = {}
        while True:
            with lock:
                i = next(counter)
            if i >= len(pushes):
                break
            token, url, body = pushes[i]
            port = ports[i % len(ports)]
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.monotonic()
            sent_at[token] = t0
            for _attempt in range(3):
                conn = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conns[port] = conn
                try:
                    conn.request("POST", url, body=body, headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conns.pop(port, None)
                    continue
                (accepted if response.status == 200 else errors).append(time.monotonic())
                break
            else:
                errors.append(time.monotonic())
        for conn in conns.values():
            conn.close()

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    load_before = load_average()
    if cpu:
        cpu.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = cpu.result() if cpu else {}
    wall = max(accepted + errors + [start]) - start
    tokens = [token for token, _, _ in pushes]
    wait_for(lambda: all(t in receipts.first for t in tokens), timeout=drain, interval=0.2)
    latencies = [receipts.first[t] - sent_at[t] for t in tokens if t in receipts.first and t in sent_at]
    lost = sum(1 for t in tokens if t not in receipts.first)
    ms = [v * 1000 for v in latencies]
    return {
        "offered_per_s": rate,
        "accepted_per_s": round(len(accepted) / wall, 1) if wall > 0 else None,
        "refused": len(errors),
        "lost": lost,
        "p50_ms": round(statistics.median(ms), 1) if ms else None,
        "p95_ms": round(percentile(ms, 95), 1) if ms else None,
        "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        "load_avg_1m": [load_before, load_average()],
        **usage,
    }


def saturation(steps: list[dict], budget_ms: float) -> dict | None:
    good = [
        s
        for s in steps
        if s["lost"] == 0
        and s["p95_ms"] is not None
        and s["p95_ms"] <= budget_ms
        and (s["accepted_per_s"] or 0) >= 0.95 * s["offered_per_s"]
    ]
    return max(good, key=lambda s: s["offered_per_s"]) if good else None


def measure_webs(args, web_count: int, tmp: Path) -> dict:
    with postgres_database() as url:
        redis = RedisServer(tmp)
        redis.start()
        settings = {"INBOX_WORKERS_IN_WEB": "1", "LOG_LEVEL": "WARNING", "INBOX_WORKER_THREADS": "4"}
        cluster = Cluster(tmp, url, redis, **settings)
        try:
            cluster.migrate()
            shop = cluster.add_shop("扩容店", APPID, TOKEN)
            for n in range(args.agents):
                cluster.add_agent(f"agent{n}", [APPID], capacity=200)
            webs = [f"web{n}" for n in range(web_count)]
            for web in webs:
                cluster.start_web(web, threads=32 + args.agents)
            receipts = Receipts()
            clients = connect_agents(cluster, webs, args.agents, receipts)
            ports = [cluster.ports[w] for w in webs]
            path = f"/webhooks/{shop['key']}"
            # Warm up: every buyer's conversation opened (and assigned) before the clock starts.
            warm = build(0, args.buyers, args.buyers, path)
            run_step(ports, warm, 40.0, receipts, args.senders, args.drain)
            steps = []
            cpu = Cpu([cluster.processes[w].pid for w in webs])
            for n, rate in enumerate(args.rates, start=1):
                pushes = build(n, int(rate * args.seconds), args.buyers, path)
                step = run_step(ports, pushes, rate, receipts, args.senders, args.drain, cpu)
                log(f"{web_count} web: {step}")
                steps.append(step)
                if step["lost"] or (step["p95_ms"] or 0) > 4 * args.p95_budget_ms:
                    break  # far past saturation: the next step only builds a backlog
            for client in clients:
                client.disconnect()
            return {"steps": steps, "saturation": saturation(steps, args.p95_budget_ms)}
        finally:
            cluster.stop_all()
            redis.stop()


def measure_failover(args, tmp: Path) -> dict:
    with postgres_database() as url:
        redis = RedisServer(tmp)
        redis.start()
        cluster = Cluster(tmp, url, redis, LOG_LEVEL="WARNING")
        try:
            cluster.migrate()
            cluster.start_web("web0")
            cluster.start_standby("sched_a")
            cluster.start_standby("sched_b")
            times = []
            for _ in range(args.failovers):
                leader = wait_for(lambda: cluster.health("web0")["scheduler"].get("leader"), timeout=20)
                pid = int(leader.split(":")[1])
                name = next(n for n, p in cluster.processes.items() if p.pid == pid)
                time.sleep(1.5)  # a leader in its stride, not one that just took over
                cluster.kill(name, signal.SIGKILL)
                killed = time.monotonic()
                new = wait_for(
                    lambda old=leader: (lambda lead: lead if lead and lead != old else None)(
                        cluster.health("web0")["scheduler"].get("leader")
                    ),
                    timeout=30,
                    interval=0.05,
                )
                times.append(round(time.monotonic() - killed, 2) if new else None)
                cluster.start_standby(name)
            done = [t for t in times if t is not None]
            return {
                "runs_s": times,
                "median_s": round(statistics.median(done), 2) if done else None,
                "max_s": max(done) if done else None,
                "load_avg_1m": load_average(),
            }
        finally:
            cluster.stop_all()
            redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="40,80,120,160,220,300")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--buyers", type=int, default=200)
    parser.add_argument("--senders", type=int, default=24)
    parser.add_argument("--drain", type=float, default=20.0)
    parser.add_argument("--p95-budget-ms", type=float, default=500.0)
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--webs", default="1,2")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    result: dict = {
        "bench": "scale",
        "cpus": os.cpu_count(),
        "p95_budget_ms": args.p95_budget_ms,
        "seconds_per_step": args.seconds,
        "agents": args.agents,
        "buyers": args.buyers,
        "load_avg_1m_start": load_average(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for count in (int(w) for w in args.webs.split(",")):
            workdir = Path(tmp) / f"web{count}"
            workdir.mkdir()
            result[f"web_{count}"] = measure_webs(args, count, workdir)
        workdir = Path(tmp) / "failover"
        workdir.mkdir()
        result["scheduler_failover"] = measure_failover(args, workdir)
    one, two = result.get("web_1", {}).get("saturation"), result.get("web_2", {}).get("saturation")
    if one and two:
        result["scale_ratio"] = round(two["offered_per_s"] / one["offered_per_s"], 2)
        result["accepted_ratio"] = round(two["accepted_per_s"] / one["accepted_per_s"], 2)
    result["load_avg_1m_end"] = load_average()
    emit(result)


if __name__ == "__main__":
    main()
