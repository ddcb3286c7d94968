"""The SLA dashboards on 30 days of a busy desk, and the delay from a breach to the supervisors' board.

Production shape on loopback: PostgreSQL, Redis, one gunicorn web process (the board's Socket.IO),
one ``flask workers`` process (the inbox: buyer messages start clocks), one ``flask scheduler``
process (the deadline queue; it emits through Redis).

Data, generated in SQL (``generate_series``, no ORM): 5 shops, 50 agents (10 a shop), 100,000
buyers with one conversation each, 400,000 buyer turns over the last 30 days (hour-of-day profile
peaking 18:00-22:00 shop-local), with MESSAGES buyer messages (1 to 4 a turn, 2.5 on average)
and an agent reply to 90% of the turns (65% within 180 s). The rollups are then built from those raw
turns by the real ``flask sla rollup`` (the same code that rebuilds them in production).

Measured, signed in as a supervisor of the five shops, one request at a time:
- history for 30 days (``GET /api/sla/history``: rates per shop/day/agent, heatmap, medians, trend,
  after-sale figures), for today, and the live board (``GET /api/sla/board``);
- breach to board: BREACHES buyers write through the signed push URL to a shop whose threshold is 3 s;
  a Socket.IO client on the board (``sla.watch``) records when each ``sla.turn`` breach arrives,
  against the turn's deadline; then it reads the board once and checks the breach is listed.

    python bench/sla.py [--messages 1000000] [--requests 60] [--breaches 20]

Prints one JSON line. Goal (issue 8): 30-day dashboard p95 <= 300 ms, breach to board <= 1 s.
"""

# ruff: noqa: S608  (the generated SQL interpolates only our own integer constants and ids)
from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import requests
import socketio
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    AES_KEY,
    BIN,
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

PASSWORD = "bench-password-0123"
TOKEN = "benchtoken"
SHOPS, AGENTS_PER_SHOP, CONVERSATIONS_PER_SHOP, TURNS_PER_CONVERSATION = 5, 10, 20_000, 4
TZ = ZoneInfo("Asia/Shanghai")
# Turns per hour of the day (shop-local): the evening livestream peak 18-22.
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 1, 1, 2, 3, 3, 4, 4, 4, 4, 4, 4, 5, 6, 9, 10, 10, 10, 9, 3]
NAMESPACE = "/desk"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
REDIS_URL = "redis://127.0.0.1:6379/0"


def load(engine: sa.Engine, shop_ids: list[int], agent_ids: list[list[int]], messages: int) -> dict:
    """Generate the raw data in SQL; returns counts and the time it took."""
    started = time.monotonic()
    turns = int(messages / 2.5)
    conversations = SHOPS * CONVERSATIONS_PER_SHOP
    turns_per_conversation = max(1, turns // conversations)
    now_local = datetime.now(TZ)
    base_local = now_local.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)
    base = base_local.astimezone(UTC).replace(tzinfo=None)
    now = datetime.now(UTC).replace(tzinfo=None)
    hours = [hour for hour, weight in enumerate(HOUR_WEIGHTS) for _ in range(weight)]
    shops_array = "ARRAY[" + ",".join(str(s) for s in shop_ids) + "]::bigint[]"
    agents_array = "ARRAY[" + ",".join("[" + ",".join(str(a) for a in row) + "]" for row in agent_ids) + "]::bigint[]"
    hours_array = "ARRAY[" + ",".join(str(h) for h in hours) + "]"
    params = {"n": conversations, "turns": turns, "base": base, "now": now, "tpc": turns_per_conversation}
    statements = [
        # Buyers and their conversations (resolved: the history's part of the desk), ids 1..n.
        f"""INSERT INTO customers (id, shop_id, openid, nickname, created_at)
            SELECT i, ({shops_array})[1 + (i - 1) %% {SHOPS}], 'o_' || i, '买家' || i, %(base)s
            FROM generate_series(1, %(n)s) i""",
        f"""INSERT INTO conversations (id, shop_id, customer_id, status, assignee_id, last_message_at,
                last_buyer_message_at, last_human_reply_at, unread_count, last_seq, replies_since_buyer,
                auto_replies_since_buyer, resolved_at, created_at, updated_at)
            SELECT i, ({shops_array})[1 + (i - 1) %% {SHOPS}], i, 'resolved',
                   ({agents_array})[1 + (i - 1) %% {SHOPS}][1 + i %% {AGENTS_PER_SHOP}],
                   %(now)s, %(now)s, %(now)s, 0, 50, 0, 0, %(now)s, %(base)s, %(now)s
            FROM generate_series(1, %(n)s) i""",
        "SELECT setval(pg_get_serial_sequence('customers', 'id'), (SELECT max(id) FROM customers))",
        "SELECT setval(pg_get_serial_sequence('conversations', 'id'), (SELECT max(id) FROM conversations))",
        # Turns: conversation c, its k-th turn; a day of the 30, an hour by the profile, a second.
        # Reproducible pseudo-random choices (setseed, then random() in this session).
        "SELECT setseed(0.42)",
        f"""CREATE TEMP TABLE gen AS
            SELECT t, c, k, shop, agent, started, reply,
                   1 + t %% 4 AS buyer_messages,
                   extract(hour FROM started + interval '8 hours') >= 8 AS counted
            FROM (
              SELECT t, c, k, ({shops_array})[1 + (c - 1) %% {SHOPS}] AS shop,
                     ({agents_array})[1 + (c - 1) %% {SHOPS}][1 + floor(random() * {AGENTS_PER_SHOP})::int] AS agent,
                     LEAST(%(base)s + floor(random() * 30) * interval '1 day'
                                    + ({hours_array})[1 + floor(random() * {len(hours)})::int] * interval '1 hour'
                                    + floor(random() * 3600) * interval '1 second',
                           %(now)s - interval '10 minutes' - (t %% 3600) * interval '1 second') AS started,
                     CASE WHEN u < 0.65 THEN 5 + floor(random() * 175)::int
                          WHEN u < 0.90 THEN 181 + floor(random() * 900)::int
                          ELSE NULL END AS reply
              FROM (SELECT t, 1 + (t - 1) %% %(n)s AS c, (t - 1) / %(n)s AS k, random() AS u
                    FROM generate_series(1, %(turns)s) t) s
            ) g""",
        """INSERT INTO reply_turns (shop_id, conversation_id, customer_id, started_at, first_seq, threshold_seconds,
                deadline_at, warn_at, counted, assignee_start_id, outcome, agent_id, warned_at, breached_at,
                closed_at, answered_at, answered_by_id, first_reply_seconds, buyer_messages, messages_met,
                first_of_day, created_at)
            SELECT shop, c, c, started, k * 10 + 1, 180,
                   started + interval '180 seconds', started + interval '100 seconds', counted, agent,
                   CASE WHEN reply <= 180 THEN 'met' WHEN reply IS NOT NULL OR t %% 2 = 0 THEN 'breached'
                        ELSE 'unanswered' END,
                   agent,
                   CASE WHEN reply IS NULL OR reply > 100 THEN started + interval '100 seconds' END,
                   CASE WHEN reply > 180 OR (reply IS NULL AND t %% 2 = 0) THEN started + interval '180 seconds' END,
                   CASE WHEN reply IS NOT NULL THEN started + reply * interval '1 second'
                        WHEN t %% 2 = 1 THEN started + interval '150 seconds'
                        ELSE started + interval '600 seconds' END,
                   started + reply * interval '1 second',
                   CASE WHEN reply IS NOT NULL THEN agent END,
                   reply, buyer_messages,
                   CASE WHEN reply <= 180 THEN buyer_messages WHEN reply IS NOT NULL THEN buyer_messages - 1
                        ELSE 0 END,
                   reply IS NOT NULL AND k = 0,
                   started
            FROM gen""",
        # The buyer's messages of each turn, 20 s apart, and the agent's reply.
        """INSERT INTO messages (shop_id, conversation_id, seq, direction, sender_kind, msg_type, text,
                platform_msg_id, delivery_state, platform_time, created_at)
            SELECT shop, c, k * 10 + j, 'inbound', 'customer', 'text', '在吗？这个什么时候发货',
                   'bm-' || t || '-' || j, 'received', started + (j - 1) * interval '20 seconds',
                   started + (j - 1) * interval '20 seconds'
            FROM gen JOIN generate_series(1, 4) j ON j <= gen.buyer_messages""",
        """INSERT INTO messages (shop_id, conversation_id, seq, direction, sender_kind, sender_user_id, msg_type,
                text, request_id, delivery_state, created_at, sent_at)
            SELECT shop, c, k * 10 + 5, 'outbound', 'agent', agent, 'text', '您好，今天发货', 'rq-' || t, 'sent',
                   started + reply * interval '1 second', started + reply * interval '1 second'
            FROM gen WHERE reply IS NOT NULL""",
        "DROP TABLE gen",
    ]
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement, params)
    generated = time.monotonic() - started
    with engine.connect() as conn:
        counts = {
            "buyer_messages": conn.scalar(sa.text("SELECT count(*) FROM messages WHERE direction = 'inbound'")),
            "turns": conn.scalar(sa.text("SELECT count(*) FROM reply_turns")),
            "conversations": conn.scalar(sa.text("SELECT count(*) FROM conversations")),
        }
    counts["generate_seconds"] = round(generated, 1)
    counts["first_day"] = base_local.date().isoformat()
    return counts


def sign_in(base: str, username: str) -> requests.Session:
    session = requests.Session()
    token = CSRF_META.search(session.get(f"{base}/login", timeout=10).text).group(1)
    answer = session.post(
        f"{base}/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302, f"sign-in of {username} failed: {answer.status_code}"
    return session


def timed(session: requests.Session, url: str, n: int, warmup: int = 5) -> tuple[list[float], dict]:
    body: dict = {}
    for _ in range(warmup):
        body = session.get(url, timeout=60).json()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        response = session.get(url, timeout=60)
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code, response.text[:200])
        body = response.json()
    return samples, body


class Board:
    """A supervisor's board over Socket.IO: when each breach was heard."""

    def __init__(self, base: str, session: requests.Session):
        self.heard: dict[int, tuple[float, dict]] = {}
        self.ready = threading.Event()
        self.sio = socketio.Client(reconnection=False, logger=False, engineio_logger=False)
        self.sio.on("hello", lambda data: self.ready.set(), namespace=NAMESPACE)
        self.sio.on("sla.turn", self._on_turn, namespace=NAMESPACE)
        cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
        self.sio.connect(base, headers={"Cookie": cookie}, transports=["websocket"], namespaces=[NAMESPACE])
        if not self.ready.wait(30):
            raise RuntimeError("the board socket got no hello")
        answer = self.sio.call("sla.watch", {}, namespace=NAMESPACE, timeout=30)
        if not answer.get("ok"):
            raise RuntimeError(f"sla.watch refused: {answer}")
        self.shop_ids = answer["shop_ids"]

    def _on_turn(self, data: dict) -> None:
        if data.get("reason") == "breach":
            self.heard.setdefault(data["turn"]["id"], (time.time(), data["turn"]))

    def close(self) -> None:
        self.sio.disconnect()


def breach_to_board(base: str, session: requests.Session, key: str, appid: str, count: int) -> dict:
    from app.platform.crypto import PushCrypto

    board = Board(base, session)
    crypto = PushCrypto(TOKEN, AES_KEY, appid)
    sent = []
    try:
        for i in range(count):
            timestamp, nonce = str(int(time.time())), secrets.token_hex(4)
            openid = f"o_breach_{i}_{secrets.token_hex(3)}"
            message = {
                "ToUserName": appid,
                "FromUserName": openid,
                "CreateTime": int(timestamp),
                "MsgType": "event",
                "Event": "commkf_send_msg_to_kf",
                "msg_id": f"breach-{i}-{nonce}",
                "msg_type": "text",
                "text": {"content": "在吗？"},
            }
            path, body = signed_push(crypto, TOKEN, appid, f"/webhooks/{key}", message, timestamp, nonce)
            response = requests.post(base + path, data=body, headers={"Content-Type": "application/json"}, timeout=10)
            assert response.status_code == 200, response.text
            sent.append(openid)
            time.sleep(0.25)
        deadline = time.time() + 30
        while len(board.heard) < count and time.time() < deadline:
            time.sleep(0.05)
        delays = []
        for heard_at, turn in board.heard.values():
            due = datetime.fromisoformat(turn["deadline_at"]).timestamp()
            delays.append(heard_at - due)
        listed = session.get(f"{base}/api/sla/board", timeout=30).json()
        listed_ids = {b["id"] for b in listed["breaches"]}
    finally:
        board.close()
    return {
        "sent": len(sent),
        "heard": len(board.heard),
        "listed_on_board": len(listed_ids & set(board.heard)),
        "p50_ms": round(statistics.median(delays) * 1000, 1) if delays else None,
        "p95_ms": round(sorted(delays)[max(0, round(0.95 * (len(delays) - 1)))] * 1000, 1) if delays else None,
        "max_ms": round(max(delays) * 1000, 1) if delays else None,
    }


def profile_in_process(database_url: str, today) -> None:
    """Where a 30-day history request spends its time (stderr), with the Flask test client."""
    import cProfile
    import pstats

    from app import create_app
    from app.extensions import db
    from app.models import User
    from app.sla import history
    from app.sla.routes import accessible_shops
    from config import DevelopmentConfig

    app = create_app(type("Profiled", (DevelopmentConfig,), {"SQLALCHEMY_DATABASE_URI": database_url}))
    with app.test_request_context():
        from flask_login import login_user

        login_user(db.session.scalar(sa.select(User).where(User.username == "boss")))
        app.preprocess_request()
        shops = list(accessible_shops())
        filters = history.Filters(today - timedelta(days=29), today, shops)
        history.report(filters)
        # Each statement's time, beside the profile: the database's share of a request.
        statements: dict[str, list[float]] = {}

        @sa.event.listens_for(db.engine, "before_cursor_execute")
        def _started(conn, cursor, statement, params, context, executemany):
            conn.info["started"] = time.perf_counter()

        @sa.event.listens_for(db.engine, "after_cursor_execute")
        def _ended(conn, cursor, statement, params, context, executemany):
            took = time.perf_counter() - conn.info["started"]
            statements.setdefault(" ".join(statement.split())[:110], []).append(took)

        started = time.perf_counter()
        for _ in range(5):
            history.report(filters)
        print(f"history.report: {(time.perf_counter() - started) / 5 * 1000:.1f} ms a request", file=sys.stderr)
        for text, times in sorted(statements.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {statistics.median(times) * 1000:7.1f} ms  {text}", file=sys.stderr)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5):
            history.report(filters)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=60, help="timed requests per dashboard query")
    parser.add_argument("--breaches", type=int, default=20)
    args = parser.parse_args()

    from werkzeug.security import generate_password_hash

    with postgres_database() as database_url, tempfile.TemporaryDirectory() as tmp:
        env = desk_env(database_url, INBOX_WORKERS_IN_WEB="0", REDIS_URL=REDIS_URL, SOCKETIO_CHANNEL="bench-sla")
        flask(env, "db", "upgrade")
        shops = [add_shop(env, f"wxbe5d10000000sla{i}", "http://127.0.0.1:9", name=f"店铺{i}") for i in range(SHOPS)]
        shop_ids = [shop_id for shop_id, _key in shops]
        engine = sa.create_engine(database_url)
        password_hash = generate_password_hash(PASSWORD)
        agent_ids: list[list[int]] = []
        with engine.begin() as conn:
            for s, shop_id in enumerate(shop_ids):
                row = []
                for a in range(AGENTS_PER_SHOP):
                    user_id = conn.scalar(
                        sa.text(
                            "INSERT INTO users (username, display_name, password_hash, role, capacity, language,"
                            " is_active, session_version, presence, created_at, updated_at)"
                            " VALUES (:u, :n, :h, 'agent', 10, 'zh_CN', true, 1, 'online', now(), now()) RETURNING id"
                        ),
                        {"u": f"agent{s}_{a}", "n": f"客服{s}-{a}", "h": password_hash},
                    )
                    conn.execute(
                        sa.text("INSERT INTO user_shops (user_id, shop_id) VALUES (:u, :s)"),
                        {"u": user_id, "s": shop_id},
                    )
                    row.append(user_id)
                agent_ids.append(row)
            boss = conn.scalar(
                sa.text(
                    "INSERT INTO users (username, display_name, password_hash, role, capacity, language, is_active,"
                    " session_version, presence, created_at, updated_at)"
                    " VALUES ('boss', '主管', :h, 'supervisor', 10, 'zh_CN', true, 1, 'online', now(), now())"
                    " RETURNING id"
                ),
                {"h": password_hash},
            )
            for shop_id in shop_ids:
                conn.execute(
                    sa.text("INSERT INTO user_shops (user_id, shop_id) VALUES (:u, :s)"), {"u": boss, "s": shop_id}
                )
            # The shop that receives the live buyers: a 3-second threshold, so breaches come quickly.
            conn.execute(
                sa.text(
                    "INSERT INTO sla_settings (shop_id, threshold_seconds, warning_seconds, unit, window_start,"
                    " window_end, created_at, updated_at) VALUES (:s, 3, 2, 'turn', '00:00', '00:00', now(), now())"
                ),
                {"s": shop_ids[0]},
            )
        made = load(engine, shop_ids, agent_ids, args.messages)
        rollup_started = time.monotonic()
        today = datetime.now(TZ).date()
        flask(env, "sla", "rollup", "--from", (today - timedelta(days=31)).isoformat(), "--to", today.isoformat())
        made["rollup_seconds"] = round(time.monotonic() - rollup_started, 1)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        with engine.connect() as conn:
            made["hourly_rows"] = conn.scalar(sa.text("SELECT count(*) FROM sla_hourly"))
            made["histogram_rows"] = conn.scalar(sa.text("SELECT count(*) FROM sla_reply_histogram"))
        engine.dispose()
        if os.environ.get("BENCH_SLA_PROFILE"):
            profile_in_process(database_url, today)

        port = free_port()
        logs = Path(tmp)
        web = start_web(env, port, threads=8, log_path=logs / "web.log")
        workers = start_process([str(BIN / "flask"), "workers"], env, logs / "workers.log")
        scheduler = start_process([str(BIN / "flask"), "scheduler"], env, logs / "scheduler.log")
        try:
            base = f"http://127.0.0.1:{port}"
            session = sign_in(base, "boss")
            start = (today - timedelta(days=29)).isoformat()
            month, report = timed(
                session, f"{base}/api/sla/history?start={start}&end={today.isoformat()}", args.requests
            )
            day, _ = timed(
                session, f"{base}/api/sla/history?start={today.isoformat()}&end={today.isoformat()}", args.requests
            )
            live, board_now = timed(session, f"{base}/api/sla/board", args.requests)
            time.sleep(2)  # the scheduler's deadline queue is up (it loads the open turns when it starts)
            breach = breach_to_board(base, session, shops[0][1], "wxbe5d10000000sla0", args.breaches)
        finally:
            for process in (scheduler, workers, web):
                stop(process)
    overall = report["overall"]
    emit(
        {
            "bench": "sla",
            "data": made,
            "dashboard_30_days": {
                **summary_ms(month),
                "turns": overall["turns"],
                "rate": overall["rate"],
                "first_reply_median_s": overall["first_reply_median"],
            },
            "dashboard_today": summary_ms(day),
            "board_now": {**summary_ms(live), "waiting": len(board_now["waiting"])},
            "breach_to_board": breach,
            "goal": {"dashboard_30_days_p95_ms": 300, "breach_to_board_ms": 1000},
            "met": {
                "dashboard_30_days": summary_ms(month)["p95_ms"] <= 300,
                "breach_to_board": breach["max_ms"] is not None
                and breach["max_ms"] <= 1000
                and breach["heard"] == breach["sent"],
            },
        }
    )


if __name__ == "__main__":
    main()
