"""Realtime chat: from a buyer's message to the agent's screen, and from the agent's reply to the platform.

Production shape on loopback: PostgreSQL, Redis (Flask-SocketIO's message queue), one gunicorn web
process (`-w 1 --threads N`; each open websocket holds a thread, so N = agents + 64) with the inbox and
outbox workers in it, and the platform simulator in this process. N agents sign in over HTTP and keep
a Socket.IO connection (websocket transport) on `/desk`, each with a heartbeat every 25 s; they serve
the shop, with capacity to spare so nothing queues. Once every agent has said hello, the clock starts:

- push -> agent: buyer messages arrive as encrypted webhooks at a fixed rate, open loop (message i is
  due at start + i/rate, sent by whichever sender thread is free, whatever the answers), from a pool
  of B buyers (message i from buyer i % B, so the first B messages each open a conversation that is
  assigned, the rest reach conversations already assigned). Each text carries a token; latency is
  from just before the POST to the moment the assigned agent receives a `conversation.updated` (or
  `conversation.assigned`) carrying that message. `push_to_agent_from_schedule` counts from the due
  time instead (it differs when every sender was waiting for a slow webhook answer:
  `schedule_lateness`). After the load, the run waits until nothing has arrived for `--drain`
  seconds; what never arrived is lost (must be 0), and every message must be stored exactly once.
  `push_to_agent_by_second` gives p50/p95 per second of the load (where a run's tail comes from).
- bare emit: the same run, interleaved with the load, this process publishes `bench.ping` to a
  random agent's room through Redis (a write-only Socket.IO manager on the desk's SOCKETIO_CHANNEL):
  the delivery path alone, the floor push -> agent is compared with (`ratio_p95`, `ratio_p99`).
  At `--bare-rate` a second (default 20, a probe that adds a fifth of an event per message rather
  than one: at the messages' own rate it was 40% of the events the desk delivered).
- floor: the same run, at `--floor-rate` a second (default 20, between the pings), this process
  POSTs to the first web process's `/bench-floor` (bench/floor_app.py, in the web process only when
  this bench starts it): one row inserted and committed on the desk's engine, then `bench.floor`
  emitted to a random agent's room through the desk's Socket.IO server. The least any design that
  stores a push before showing it can do: the HTTP request into the web process, one commit, the
  delivery. `floor_ratio_p95` / `floor_ratio_p99` say how much of the 3x goal that alone takes;
  `push_over_floor_p95` is the desk's own work (verify, decrypt, inbox, worker, conversation,
  assignment) on top.
- warm-up: before the clock, `--warmup` messages (100) from buyers of their own at `--warmup-rate`
  (20 a second), one in ten answered: a desk's processes have been running when a livestream starts,
  while a freshly started process compiles its statements and fills its caches first (in the first
  second of a cold run that is more CPU than this machine has). `--warmup 0` measures the cold start.
  Warm-up messages are left out of every count and latency.
- agent send -> platform: agents answer a share of the messages with `message.send`; latency is from
  the emit to the simulator's receipt of `commkf/sendmsg` with that request_id.
- where the time goes: the server's own timestamps (inbox_events.received_at / processed_at,
  messages.created_at, outbox_calls.created_at) split the latencies into stages (`breakdown`); CPU
  seconds of the web worker, PostgreSQL and Redis, and how busy the machine was, idle (agents
  connected) and over load + drain (`cpu_*`, `web_cpu_ms_per_message`).

With ``--web-processes K`` K such web processes (docs/deploy.md: one per core, behind nginx):
agent n connects to process n % K, as nginx's ``ip_hash`` pins each console to one, and the pushes
are spread over them (sender thread n posts to process n % K); events cross between them through
Redis. With ``--worker-processes K`` the inbox and outbox run in K `flask workers` processes instead
of the web processes (INBOX_WORKERS_IN_WEB=0), the busy-shop shape.

    python bench/chat.py [--agents 200] [--rate 100] [--seconds 30] [--buyers 1000] [--reply-share 0.1]
                         [--bare-rate 20] [--floor-rate 20] [--web-processes 1] [--worker-processes 0]
                         [--warmup 100]

Needs Redis at 127.0.0.1:6379 (BENCH_REDIS_URL, default database 9, flushed first; a Socket.IO
channel of the run's own) and the websocket-client package (requirements-dev.txt). Set BENCH_LOG_DIR
to keep the web process's log. Prints one JSON line; exits 1 if a message was lost.
Goal (realtime chat issue): at 100 messages/s with 200 agents, push -> agent p95 <= 50 ms and
p99 <= 150 ms, and <= 3x the bare emit.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import re
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
import requests
import socketio
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.platform.crypto import PushCrypto
from app.platform.simulator import Simulator
from bench import floor_app
from bench.common import (
    AES_KEY,
    BIN,
    CpuMeter,
    SimulatorServer,
    add_shop,
    desk_env,
    emit,
    flask,
    free_port,
    postgres_database,
    signed_push,
    start_process,
    start_web,
    stop,
    summary_ms,
)

APPID = "wxbe9c4000000000cc"
TOKEN = "benchtoken"
SECRET = "bench-secret-0123456789"
PASSWORD = "bench-password"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
# The desk's SOCKETIO_CHANNEL, ours alone: other processes on this Redis publish on the default one.
SOCKETIO_CHANNEL = f"channeldesk-bench-chat-{os.getpid()}"
NAMESPACE = "/desk"
HEARTBEAT_SECONDS = 25.0
TOKEN_RE = re.compile(r"\[bench-(\d+)\]")
WARMUP_RE = re.compile(r"\[warmup-(\d+)\]")
WARMUP_BUYER = "o_bench_warmup_"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def log(message: str) -> None:
    print(f"[chat {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- setup ------------------------------------------------------------------------------------------


def serve_simulator() -> tuple[Simulator, str, object]:
    simulator = Simulator.create(push_workers=1)
    server = SimulatorServer(simulator)
    return simulator, server.url, server


def create_agents(database_url: str, shop_id: int, count: int, capacity: int) -> list[tuple[int, str]]:
    """Agents serving the shop, with a cheap password hash so signing them all in is quick."""
    from app import create_app
    from app.extensions import db
    from app.models import Shop
    from app.settings import services
    from config import ProductionConfig

    bench_config = type(
        "BenchConfig",
        (ProductionConfig,),
        {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "SECRET_KEY": "bench-" + "k" * 40,
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
            "LOG_LEVEL": "WARNING",
        },
    )
    app = create_app(bench_config)
    with app.app_context():
        shop = db.session.get(Shop, shop_id)
        users = []
        for n in range(count):
            user = services.create_user(
                username=f"agent{n:04d}", display_name=f"Agent {n}", password=PASSWORD, shops=[shop]
            )
            user.capacity = capacity  # above the settings page's limit on purpose: nothing may queue
            users.append(user)
        db.session.commit()
        agents = [(user.id, user.username) for user in users]
        db.session.remove()
        db.engines[None].dispose()
    return agents


# --- the agents ---------------------------------------------------------------------------------------


class Recorder:
    """What the agents saw, keyed by message number / ping id / request_id; times are time.time()."""

    def __init__(self, reply_to: set[int]):
        self.lock = threading.Lock()
        self.push_due: dict[int, float] = {}
        self.push_t0: dict[int, float] = {}
        self.push_t1: dict[int, float] = {}
        self.push_receiver: dict[int, int] = {}
        self.ping_t0: dict[int, float] = {}
        self.ping_t1: dict[int, float] = {}
        self.floor_t0: dict[int, float] = {}
        self.floor_t1: dict[int, float] = {}
        self.reply_to = reply_to
        self.replies: dict[str, dict] = {}  # request_id -> {"t_send", "ack"}
        self.events = Counter()  # conversation events carrying a bench message, by kind
        self.first_events = Counter()  # the kind that arrived first
        self.warmup_seen: set[int] = set()  # warm-up messages that reached their agent
        self.warmup_replies: set[str] = set()  # request_ids of the agents' warm-up replies


class Agent:
    def __init__(self, user_id: int, username: str, base_url: str, recorder: Recorder):
        self.user_id, self.username, self.base_url, self.recorder = user_id, username, base_url, recorder
        self.hello = threading.Event()
        self.disconnects = 0  # before the end of the run: each one can lose events
        self.closing = False
        self.sio = socketio.Client(reconnection=False, logger=False, engineio_logger=False)
        self.sio.on("hello", self._on_hello, namespace=NAMESPACE)
        self.sio.on("conversation.updated", self._on_updated, namespace=NAMESPACE)
        self.sio.on("conversation.assigned", self._on_assigned, namespace=NAMESPACE)
        self.sio.on("bench.ping", self._on_ping, namespace=NAMESPACE)
        self.sio.on("bench.floor", self._on_floor, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)

    def sign_in(self) -> str:
        session = requests.Session()
        page = session.get(f"{self.base_url}/login", timeout=30)
        match = CSRF_META.search(page.text)
        if match is None:
            raise RuntimeError("no csrf-token meta tag on /login")
        answer = session.post(
            f"{self.base_url}/login",
            data={"username": self.username, "password": PASSWORD, "csrf_token": match.group(1)},
            allow_redirects=False,
            timeout=30,
        )
        if answer.status_code != 302:
            raise RuntimeError(f"sign-in of {self.username} failed: {answer.status_code}")
        return "; ".join(f"{name}={value}" for name, value in session.cookies.items())

    def connect(self) -> None:
        cookie = self.sign_in()
        self.sio.connect(
            self.base_url,
            headers={"Cookie": cookie},
            transports=["websocket"],
            namespaces=[NAMESPACE],
            wait_timeout=30,
        )
        if not self.hello.wait(30):
            raise RuntimeError(f"{self.username}: no hello")

    def _on_hello(self, data):
        if data["user"]["id"] != self.user_id:
            raise RuntimeError(f"hello for {data['user']['id']}, expected {self.user_id}")
        self.hello.set()

    def _on_disconnect(self, reason=None):
        if not self.closing:
            self.disconnects += 1
            log(f"{self.username} disconnected: {reason}")

    def _on_ping(self, data):
        self.recorder.ping_t1.setdefault(data["id"], time.time())

    def _on_floor(self, data):
        self.recorder.floor_t1.setdefault(data["id"], time.time())

    def _on_updated(self, data):
        self._on_conversation(time.time(), data, f"updated:{data.get('reason')}")

    def _on_assigned(self, data):
        self._on_conversation(time.time(), data, "assigned")

    def _on_conversation(self, t1: float, data: dict, kind: str) -> None:
        message = data.get("message") or {}
        text = (message.get("text") or "") if message.get("direction") == "inbound" else ""
        match = TOKEN_RE.search(text)
        if match is None:
            warmup = WARMUP_RE.search(text)
            if warmup is not None:
                self._on_warmup(int(warmup.group(1)), data)
            return
        i = int(match.group(1))
        recorder = self.recorder
        with recorder.lock:
            recorder.events[kind] += 1
            if i in recorder.push_t1:
                return
            recorder.first_events[kind] += 1
            recorder.push_t1[i] = t1
            recorder.push_receiver[i] = self.user_id
        assignee = (data.get("conversation") or {}).get("assignee") or {}
        if i in recorder.reply_to and assignee.get("id") == self.user_id:
            self.reply(data["conversation"]["id"], i)

    def _on_warmup(self, n: int, data: dict) -> None:
        recorder = self.recorder
        with recorder.lock:
            if n in recorder.warmup_seen:
                return
            recorder.warmup_seen.add(n)
        assignee = (data.get("conversation") or {}).get("assignee") or {}
        if n % WARMUP_REPLY_EVERY == 0 and assignee.get("id") == self.user_id:
            request_id = uuid.uuid4().hex
            with recorder.lock:
                recorder.warmup_replies.add(request_id)
            self._send(data["conversation"]["id"], request_id, "您好")

    def reply(self, conversation_id: int, i: int) -> None:
        request_id = uuid.uuid4().hex
        entry = {"i": i, "t_send": time.time(), "ack": None}
        with self.recorder.lock:
            self.recorder.replies[request_id] = entry

        def acknowledged(answer):
            entry["t_ack"] = time.time()
            entry["ack"] = "ok" if answer.get("ok") else answer.get("error", {}).get("code", "error")

        self._send(conversation_id, request_id, f"您好，马上为您查询 #{i}", acknowledged)

    def _send(self, conversation_id: int, request_id: str, text: str, callback=None) -> None:
        """The console's ``message.send``."""
        payload = {"conversation_id": conversation_id, "request_id": request_id, "text": text}
        self.sio.emit("message.send", payload, namespace=NAMESPACE, callback=callback)

    def heartbeat(self) -> None:
        if self.sio.connected:
            self.sio.emit("heartbeat", {}, namespace=NAMESPACE)

    def close(self) -> None:
        self.closing = True
        if self.sio.connected:
            self.sio.disconnect()


def connect_agents(agents: list[Agent], parallel: int = 8) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        for n, _ in enumerate(pool.map(Agent.connect, agents), 1):
            if n % 50 == 0:
                log(f"{n}/{len(agents)} agents connected")
    log(f"{len(agents)} agents connected in {time.monotonic() - started:.1f} s")


def heartbeats(agents: list[Agent], stopping: threading.Event) -> None:
    """Each agent every 25 s, spread over the period as browsers' timers would be."""
    step = HEARTBEAT_SECONDS / max(1, len(agents))
    for agent in itertools.cycle(agents):
        if stopping.wait(step):
            return
        agent.heartbeat()


# --- the load -----------------------------------------------------------------------------------------


def buyer_push(crypto: PushCrypto, path: str, openid: str, msg_id: str, text: str) -> tuple[str, str, bytes]:
    """(openid, url, body) of one buyer message as the platform pushes it, encrypted and signed."""
    timestamp, nonce = str(int(time.time())), secrets.token_hex(4)
    message = {
        "ToUserName": APPID,
        "FromUserName": openid,
        "CreateTime": int(timestamp),
        "MsgType": "event",
        "Event": "commkf_send_msg_to_kf",
        "msg_id": msg_id,
        "msg_type": "text",
        "text": {"content": text},
    }
    return (openid, *signed_push(crypto, TOKEN, APPID, path, message, timestamp, nonce))


def build_pushes(count: int, buyers: int, path: str) -> list[tuple[str, str, bytes]]:
    """(openid, url, body) per message, encrypted before the clock starts."""
    crypto = PushCrypto(TOKEN, AES_KEY, APPID)
    return [
        buyer_push(crypto, path, f"o_bench_buyer_{i % buyers:05d}", f"bench-{i}", f"在吗？这个什么时候发货 [bench-{i}]")
        for i in range(count)
    ]


# One warm-up message in this many is answered by its agent (the reply path warmed as well).
WARMUP_REPLY_EVERY = 10


def warm_up(ports: list[int], path: str, count: int, rate: float, recorder: Recorder, simulator, sim_shop) -> dict:
    """Before the clock: ``count`` messages from buyers of their own, at ``rate`` a second, spread
    over the web processes, one in WARMUP_REPLY_EVERY answered; returns once every one has reached
    its agent and every reply the platform (or after a minute). A desk's processes have been
    running when a livestream starts: a freshly started process first compiles its statements and
    fills its caches, which in the first second of a cold run at 100 messages a second costs more
    CPU than the machine has (``--warmup 0`` measures that start)."""
    crypto = PushCrypto(TOKEN, AES_KEY, APPID)
    platform = simulator.platform
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for port in ports]
    started = time.time()
    for n in range(count):
        conn = conns[n % len(conns)]
        openid, url, body = buyer_push(crypto, path, f"{WARMUP_BUYER}{n:05d}", f"warmup-{n}", f"在吗 [warmup-{n}]")
        with platform.lock:
            sim_shop.replies[openid] = {"last_buyer_at": platform.clock(), "count": 0}
        conn.request("POST", url, body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        time.sleep(max(0.0, started + (n + 1) / rate - time.time()))
    for conn in conns:
        conn.close()

    def delivered() -> int:
        with platform.lock:
            return len({entry.get("request_id") for entry in sim_shop.sent} & recorder.warmup_replies)

    expected_replies = len(range(0, count, WARMUP_REPLY_EVERY))
    deadline = time.time() + 60
    while time.time() < deadline and (len(recorder.warmup_seen) < count or delivered() < expected_replies):
        time.sleep(0.1)
    return {
        "messages": count,
        "reached_agents": len(recorder.warmup_seen),
        "replies_delivered": delivered(),
        "seconds": round(time.time() - started, 1),
    }


class Load:
    """Open loop: message i is due at start + i/rate; free sender threads take the next one due."""

    def __init__(self, ports, pushes, rate, recorder, simulator, sim_shop, agent_ids, senders, seed, probes: Probes):
        # Sender n pushes to ports[n % len(ports)]: the platform's pushes spread over the web processes.
        self.ports, self.pushes, self.rate, self.recorder = ports, pushes, rate, recorder
        self.probes = probes
        self.simulator, self.sim_shop, self.agent_ids, self.senders = simulator, sim_shop, agent_ids, senders
        self.rng = random.Random(seed)
        self.next_index = itertools.count()
        self.index_lock = threading.Lock()
        self.acks: list[float] = []
        self.lateness: list[float] = []
        self.push_errors: Counter = Counter()  # pushes that never got a 200
        self.push_retries: Counter = Counter()
        self.floor_errors: Counter = Counter()
        self.start = 0.0

    def run(self) -> float:
        self.start = time.time() + 0.2
        threads = [
            threading.Thread(target=self._sender, args=(self.ports[n % len(self.ports)],), name=f"sender-{n}")
            for n in range(self.senders)
        ]
        threads.append(threading.Thread(target=self._pinger, name="pinger"))
        if self.probes.floors:
            threads.append(threading.Thread(target=self._floor_prober, name="floor"))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.time() - self.start

    def _sleep_until(self, due: float) -> None:
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)

    def _sender(self, port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        acks, lateness, errors, retries = [], [], Counter(), Counter()
        platform, shop = self.simulator.platform, self.sim_shop
        while True:
            with self.index_lock:
                i = next(self.next_index)
            if i >= len(self.pushes):
                break
            openid, url, body = self.pushes[i]
            due = self.start + i / self.rate
            self._sleep_until(due)
            with platform.lock:  # the platform's side of the buyer writing: the 48 h / 5 replies budget
                shop.replies[openid] = {"last_buyer_at": platform.clock(), "count": 0}
            t0 = time.time()
            lateness.append(t0 - due)
            self.recorder.push_due[i] = due
            self.recorder.push_t0[i] = t0
            for attempt in range(3):
                try:
                    conn.request("POST", url, body=body, headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    # Mostly a keep-alive connection the server closed while this sender was idle: the
                    # push did not arrive; send it again on a new connection (as the platform retries).
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    retries[type(exc).__name__] += 1
                    if attempt == 2:
                        errors[type(exc).__name__] += 1
                    continue
                if response.status == 200:
                    acks.append(time.time() - t0)
                else:
                    errors[str(response.status)] += 1
                break
        conn.close()
        with self.index_lock:
            self.acks.extend(acks)
            self.lateness.extend(lateness)
            self.push_errors.update(errors)
            self.push_retries.update(retries)

    def _pinger(self) -> None:
        manager = socketio.RedisManager(REDIS_URL, channel=SOCKETIO_CHANNEL, write_only=True)
        for j in range(self.probes.pings):
            self._sleep_until(self.start + (j + 0.5) / self.probes.bare_rate)
            room = f"user:{self.rng.choice(self.agent_ids)}"
            t0 = time.time()
            self.recorder.ping_t0[j] = t0
            manager.emit("bench.ping", {"id": j, "t0": t0}, room=room, namespace=NAMESPACE)

    def _floor_prober(self) -> None:
        """The floor (bench/floor_app.py): an HTTP request to the first web process, one commit, one
        emit to a random agent's room; sent as the pushes are, on a keep-alive connection. A probe
        that got no 200 is counted in ``floor_errors`` and left out of the latencies."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[0], timeout=30)
        rng = random.Random(self.rng.random())
        for j in range(self.probes.floors):
            # Between the pings: the two probes never queue behind each other.
            self._sleep_until(self.start + (j + 0.25) / self.probes.floor_rate)
            body = json.dumps({"id": j, "user_id": rng.choice(self.agent_ids)})
            self.recorder.floor_t0[j] = time.time()
            try:
                conn.request("POST", floor_app.PATH, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                failure = None if response.status == 200 else str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.ports[0], timeout=30)
                failure = type(exc).__name__
            if failure is not None:
                self.recorder.floor_t0.pop(j)
                self.floor_errors[failure] += 1
        conn.close()


@dataclass(frozen=True)
class Probes:
    """The two probes sent beside the load: bare emits (the delivery alone) and floors (an HTTP
    request, a commit and the delivery)."""

    pings: int
    bare_rate: float
    floors: int
    floor_rate: float


def replies_settled(recorder: Recorder, platform, sim_shop) -> bool:
    """Every reply acknowledged, and every accepted one received by the platform."""
    with platform.lock:
        delivered = {entry.get("request_id") for entry in sim_shop.sent}
    with recorder.lock:
        entries = list(recorder.replies.items())
    return all(entry["ack"] is not None and (entry["ack"] != "ok" or rid in delivered) for rid, entry in entries)


def drain(progress, target: int, quiet_seconds: float) -> float:
    """Wait until ``progress()`` reaches ``target``, giving up after ``quiet_seconds`` without progress."""
    started = last_change = time.monotonic()
    seen = progress()
    while seen < target and time.monotonic() - last_change < quiet_seconds:
        time.sleep(0.2)
        now_seen = progress()
        if now_seen != seen:
            seen, last_change = now_seen, time.monotonic()
    return time.monotonic() - started


# --- results ------------------------------------------------------------------------------------------


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=value.tzinfo or UTC).timestamp()


def database_facts(database_url: str, shop_id: int, count: int) -> dict:
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        stored = Counter(
            dict(
                conn.execute(
                    sa.text(
                        "SELECT platform_msg_id, count(*) FROM messages "
                        "WHERE shop_id = :s AND platform_msg_id LIKE 'bench-%' GROUP BY platform_msg_id"
                    ),
                    {"s": shop_id},
                ).all()
            )
        )
        inbox = {
            int(key.removeprefix("msg:bench-")): (_epoch(received), _epoch(processed))
            for key, received, processed in conn.execute(
                sa.text("SELECT dedupe_key, received_at, processed_at FROM inbox_events WHERE shop_id = :s"),
                {"s": shop_id},
            )
            if key.startswith("msg:bench-")
        }
        created = {
            int(msg_id.removeprefix("bench-")): _epoch(at)
            for msg_id, at in conn.execute(
                sa.text("SELECT platform_msg_id, created_at FROM messages WHERE platform_msg_id LIKE 'bench-%'")
            )
        }
        inbox_states = dict(
            conn.execute(
                sa.text("SELECT status, count(*) FROM inbox_events WHERE dedupe_key LIKE 'msg:bench-%' GROUP BY status")
            ).all()
        )
        reply_states = dict(
            conn.execute(
                sa.text("SELECT delivery_state, count(*) FROM messages WHERE sender_kind = 'agent' GROUP BY 1")
            ).all()
        )
        outbox = {
            key: _epoch(at) for key, at in conn.execute(sa.text("SELECT idempotency_key, created_at FROM outbox_calls"))
        }
        conversations = conn.execute(
            sa.text(
                "SELECT count(*), count(assignee_id), count(queued_at) FROM conversations"
                " JOIN customers ON customers.id = conversations.customer_id"
                " WHERE conversations.shop_id = :s AND customers.openid NOT LIKE :warmup"
            ),
            {"s": shop_id, "warmup": f"{WARMUP_BUYER}%"},
        ).one()
    engine.dispose()
    expected = {f"bench-{i}" for i in range(count)}
    return {
        "stored": stored,
        "stored_once": sum(1 for key in expected if stored.get(key) == 1),
        "stored_twice_or_more": sum(1 for key in expected if stored.get(key, 0) > 1),
        "not_stored": sum(1 for key in expected if key not in stored),
        "inbox": inbox,
        "created": created,
        "inbox_states": inbox_states,
        "reply_states": reply_states,
        "outbox": outbox,
        "conversations": {"total": conversations[0], "assigned": conversations[1], "queued": conversations[2]},
    }


def breakdown(recorder: Recorder, facts: dict, new_conversation: set[int]) -> dict:
    """Each stage of push -> agent, from the server's own timestamps (same machine clock)."""
    stages = {"webhook_stored": [], "inbox_pickup_and_store": [], "store_to_commit": [], "commit_to_agent": []}
    for i, t1 in recorder.push_t1.items():
        t0 = recorder.push_t0.get(i)
        received, processed = facts["inbox"].get(i, (None, None))
        created = facts["created"].get(i)
        if None in (t0, received, processed, created):
            continue
        stages["webhook_stored"].append(received - t0)
        stages["inbox_pickup_and_store"].append(created - received)
        stages["store_to_commit"].append(processed - created)
        stages["commit_to_agent"].append(t1 - processed)
    latency = {True: [], False: []}
    for i, t1 in recorder.push_t1.items():
        latency[i in new_conversation].append(t1 - recorder.push_t0[i])
    return {
        **{name: summary_ms(values) for name, values in stages.items()},
        "new_conversation_push_to_agent": summary_ms(latency[True]),
        "existing_conversation_push_to_agent": summary_ms(latency[False]),
    }


def reply_results(recorder: Recorder, sim_shop, platform, facts: dict) -> tuple[dict, dict, dict]:
    with platform.lock:
        received = {entry["request_id"]: entry["time"] for entry in sim_shop.sent if entry.get("request_id")}
    to_platform, to_outbox, outbox_to_platform = [], [], []
    acks = Counter()
    for request_id, entry in recorder.replies.items():
        acks[entry["ack"] or "no_ack"] += 1
        if request_id in received:
            to_platform.append(received[request_id] - entry["t_send"])
        queued = facts["outbox"].get(request_id)
        if queued is not None:
            to_outbox.append(queued - entry["t_send"])
            if request_id in received:
                outbox_to_platform.append(received[request_id] - queued)
    replies = {
        "sent": len(recorder.replies),
        "acknowledged_ok": acks.pop("ok", 0),
        "ack_errors": dict(acks),
        "delivered": len(to_platform),
        "failed": facts["reply_states"].get("failed", 0),
        "still_pending": facts["reply_states"].get("pending", 0),
    }
    stages = {"send_to_outbox_row": summary_ms(to_outbox), "outbox_row_to_platform": summary_ms(outbox_to_platform)}
    return summary_ms(to_platform), replies, stages


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def latency_by_second(recorder: Recorder) -> list[list]:
    """Push -> agent per second of the load, by when the push was sent: [second, messages, p50 ms,
    p95 ms]. Where a run's tail comes from: the first seconds of a fresh desk, the opening phase
    (the first ``--buyers`` messages each open a conversation), or a moment of the machine's."""
    if not recorder.push_t0:
        return []
    start = min(recorder.push_t0.values())
    seconds: dict[int, list[float]] = {}
    for i, t1 in recorder.push_t1.items():
        if i in recorder.push_t0:
            seconds.setdefault(int(recorder.push_t0[i] - start), []).append(t1 - recorder.push_t0[i])
    summaries = {second: summary_ms(values) for second, values in sorted(seconds.items())}
    return [[second, len(seconds[second]), s["p50_ms"], s["p95_ms"]] for second, s in summaries.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="buyer messages per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--buyers", type=int, default=1000)
    parser.add_argument("--reply-share", type=float, default=0.1, help="share of messages an agent answers")
    parser.add_argument("--threads", type=int, default=0, help="gunicorn threads (default: agents + 64)")
    parser.add_argument("--senders", type=int, default=64, help="webhook sender threads (keep-alive connections)")
    parser.add_argument(
        "--drain", type=float, default=10.0, help="after the load, stop waiting once nothing arrived for this long"
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=0,
        help="`flask workers` processes for the inbox and outbox (0: they run inside the web process)",
    )
    parser.add_argument(
        "--web-processes",
        type=int,
        default=1,
        help="gunicorn web processes (docs/deploy.md: one per core); each agent connects to one of them, as"
        " nginx's ip_hash pins a console, and the pushes are spread over them",
    )
    parser.add_argument("--bare-rate", type=float, default=20.0, help="bare emits (the probe) per second")
    parser.add_argument(
        "--floor-rate",
        type=float,
        default=20.0,
        help="floor probes per second (bench/floor_app.py: HTTP request, one commit, one emit; 0: none)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="CPU measured with agents connected, idle")
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="messages from buyers of their own before the clock starts (0: measure freshly started processes)",
    )
    parser.add_argument("--warmup-rate", type=float, default=20.0, help="warm-up messages per second")
    args = parser.parse_args()
    count = int(args.rate * args.seconds)
    pings = int(args.bare_rate * args.seconds)
    probes = Probes(pings, args.bare_rate, int(args.floor_rate * args.seconds), args.floor_rate)
    threads = args.threads or args.agents + 64
    rng = random.Random(args.seed)
    recorder = Recorder({i for i in range(count) if rng.random() < args.reply_share})

    redis.Redis.from_url(REDIS_URL).flushdb()  # the rate limiter's counters of earlier runs
    simulator, sim_url, sim_server = serve_simulator()
    sim_shop = simulator.platform.add_shop(APPID, SECRET, TOKEN, AES_KEY)
    with (
        postgres_database() as database_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        logs = Path(os.environ.get("BENCH_LOG_DIR") or tmp)  # set BENCH_LOG_DIR to keep the web log
        logs.mkdir(parents=True, exist_ok=True)
        env = desk_env(database_url, REDIS_URL=REDIS_URL, SOCKETIO_CHANNEL=SOCKETIO_CHANNEL)
        if args.worker_processes:
            env["INBOX_WORKERS_IN_WEB"] = "0"
        flask(env, "db", "upgrade")
        with sa.create_engine(database_url).begin() as connection:
            floor_app.create_table(connection)
        shop_id, key = add_shop(env, APPID, sim_url)
        agent_rows = create_agents(database_url, shop_id, args.agents, capacity=max(200, args.buyers))
        ports = [free_port() for _ in range(args.web_processes)]
        webs = [
            start_web(env, port, threads, logs / f"web{n}.log", app="bench.floor_app:create()")
            for n, port in enumerate(ports)
        ]
        workers = [
            start_process([str(BIN / "flask"), "workers"], env, logs / f"workers{n}.log")
            for n in range(args.worker_processes)
        ]
        base_urls = [f"http://127.0.0.1:{port}" for port in ports]
        agents = [
            Agent(user_id, username, base_urls[n % len(base_urls)], recorder)
            for n, (user_id, username) in enumerate(agent_rows)
        ]
        stopping = threading.Event()
        try:
            connect_agents(agents)
            threading.Thread(target=heartbeats, args=(agents, stopping), daemon=True).start()
            warmup = None
            if args.warmup:
                log(f"warming up: {args.warmup} messages at {args.warmup_rate:g}/s")
                warmup = warm_up(
                    ports, f"/webhooks/{key}", args.warmup, args.warmup_rate, recorder, simulator, sim_shop
                )
            pushes = build_pushes(count, args.buyers, f"/webhooks/{key}")
            load = Load(
                ports,
                pushes,
                args.rate,
                recorder,
                simulator,
                sim_shop,
                [user_id for user_id, _ in agent_rows],
                args.senders,
                args.seed,
                probes,
            )
            database = sa.engine.make_url(database_url).database
            worker_pids = [process.pid for process in workers]
            web_pids = [web.pid for web in webs]
            idle_meter = CpuMeter(web_pids, worker_pids, database)  # the connected agents alone
            time.sleep(args.idle_seconds)
            idle_cpu = idle_meter.result()
            log(f"pushing {count} messages at {args.rate:g}/s, {len(recorder.reply_to)} to be answered")
            cpu_meter = CpuMeter(web_pids, worker_pids, database)
            elapsed = load.run()
            log(f"pushed in {elapsed:.1f} s; draining (up to {args.drain:g} s)")
            drained = drain(
                lambda: len(recorder.push_t1) + len(recorder.ping_t1) + len(recorder.floor_t1),
                count + pings + len(recorder.floor_t0),
                args.drain,
            )
            drained += drain(lambda: int(replies_settled(recorder, simulator.platform, sim_shop)), 1, args.drain)
            log(f"drained in {drained:.1f} s")
            cpu = cpu_meter.result()
        finally:
            stopping.set()
            for agent in agents:
                agent.close()
            for process in [*webs, *workers]:
                stop(process)
            simulator.stop()
            sim_server.shutdown()
        facts = database_facts(database_url, shop_id, count)

    first_of_buyer = set(range(min(count, args.buyers)))  # each opens a conversation, assigned then
    push_latency = [recorder.push_t1[i] - recorder.push_t0[i] for i in recorder.push_t1 if i in recorder.push_t0]
    ping_latency = [recorder.ping_t1[j] - recorder.ping_t0[j] for j in recorder.ping_t1 if j in recorder.ping_t0]
    floor_latency = [recorder.floor_t1[j] - t0 for j, t0 in recorder.floor_t0.items() if j in recorder.floor_t1]
    push, bare, floor = summary_ms(push_latency), summary_ms(ping_latency), summary_ms(floor_latency)
    by_second = latency_by_second(recorder)
    # Including the time a message waited for a free sender (when the desk answers webhooks slowly).
    from_schedule = summary_ms([t1 - recorder.push_due[i] for i, t1 in recorder.push_t1.items()])
    send_to_platform, replies, reply_stages = reply_results(recorder, sim_shop, simulator.platform, facts)
    lost = count - len(recorder.push_t1)
    ratio_p95, ratio_p99 = ratio(push["p95_ms"], bare["p95_ms"]), ratio(push["p99_ms"], bare["p99_ms"])
    goal = {
        "p95_le_50ms": push["p95_ms"] is not None and push["p95_ms"] <= 50,
        "p99_le_150ms": push["p99_ms"] is not None and push["p99_ms"] <= 150,
        "p95_le_3x_bare": ratio_p95 is not None and ratio_p95 <= 3,
        "p99_le_3x_bare": ratio_p99 is not None and ratio_p99 <= 3,
        "none_lost": lost == 0 and facts["stored_once"] == count,
    }
    goal["all"] = all(goal.values())
    emit(
        {
            "bench": "chat",
            "config": {
                "agents": args.agents,
                "buyers": args.buyers,
                "rate_per_s": args.rate,
                "bare_rate_per_s": args.bare_rate,
                "floor_rate_per_s": args.floor_rate,
                "seconds": args.seconds,
                "reply_share": args.reply_share,
                "database": "postgresql",
                "message_queue": "redis",
                "web_processes": args.web_processes,
                "gunicorn_threads": threads,
                "sender_threads": args.senders,
            },
            "warmup": warmup,
            "elapsed_s": round(elapsed, 2),
            "drain_s": round(drained, 1),
            "push_to_agent": push,
            "push_to_agent_from_schedule": from_schedule,
            "push_to_agent_by_second": by_second,
            "bare_emit": bare,
            "ratio_p95": ratio_p95,
            "ratio_p99": ratio_p99,
            "floor": floor,
            "floor_sent": len(recorder.floor_t0),
            "floor_received": len(recorder.floor_t1),
            "floor_errors": dict(load.floor_errors),
            "floor_ratio_p95": ratio(floor["p95_ms"], bare["p95_ms"]),
            "floor_ratio_p99": ratio(floor["p99_ms"], bare["p99_ms"]),
            "push_over_floor_p95": ratio(push["p95_ms"], floor["p95_ms"]),
            "send_to_platform": send_to_platform,
            "sent": count - sum(load.push_errors.values()),
            "push_errors": dict(load.push_errors),
            "push_retries": dict(load.push_retries),
            "received": len(recorder.push_t1),
            "received_by_agents": len(set(recorder.push_receiver.values())),
            "lost": lost,
            "stored_once": facts["stored_once"],
            "stored_twice_or_more": facts["stored_twice_or_more"],
            "not_stored": facts["not_stored"],
            "bare_sent": pings,
            "bare_received": len(recorder.ping_t1),
            "replies": replies,
            "webhook_ack": summary_ms(load.acks),
            "schedule_lateness": summary_ms(load.lateness),
            "events": dict(recorder.events),
            "first_events": dict(recorder.first_events),
            "agent_disconnects": sum(agent.disconnects for agent in agents),
            "cpu_idle_before_load": idle_cpu,
            "cpu_load_and_drain": cpu,
            "web_cpu_ms_per_message": round(cpu["web_worker_cpu_s"] * 1000 / max(1, count), 1),
            "cpu_ms_per_message": {
                name.removesuffix("_cpu_s"): round(cpu.get(name, 0.0) * 1000 / max(1, count), 2)
                for name in (
                    "web_worker_cpu_s",
                    "workers_cpu_s",
                    "postgres_cpu_s",
                    "redis_cpu_s",
                    "bench_process_cpu_s",
                    "postgres_other_cpu_s",
                )
            },
            "worker_processes": args.worker_processes,
            "conversations": facts["conversations"],
            "inbox_states": facts["inbox_states"],
            "breakdown": {**breakdown(recorder, facts, first_of_buyer), **reply_stages},
            "goal_met": goal,
        }
    )
    sys.exit(1 if lost or facts["stored_once"] != count else 0)


if __name__ == "__main__":
    main()
