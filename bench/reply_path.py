"""What one agent's reply costs the web process: statements and CPU of `send_reply`, one at a time.

Under `bench/chat.py` the web process spends more of its interpreter on agents' replies (10 a
second) than on the 100 buyer pushes a second (docs/architecture.md). This drives replies through
the production code on PostgreSQL, as the console's `message.send` does in the agent's scoped
session: a buyer writes (the inbox files the message and starts the reply clock), then the agent
answers it. Only the answer is measured: the statements the desk sends and the CPU time of the
thread (`time.thread_time`). The outbox call it queues is not worked. Rounds of `--cases`
replies; medians over rounds.

    python bench/reply_path.py [--cases 50] [--rounds 5]

Prints one JSON line. Compare two commits by running it in each checkout, interleaved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, add_shop, desk_env, emit, flask, postgres_database, rounds_summary

APPID = "wxbe9c4000000000ef"
PASSWORD = "bench-password"  # the bench's own agent, never signed in
HASH = {"PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000"}  # creating the agent fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.environ.get("REPLY_PATH_SHOP_ID"):
        measure(args)
        return
    # The desk reads its configuration from the environment at import: measure in a child process.
    with postgres_database() as database_url:
        env = desk_env(database_url, INBOX_WORKERS_IN_WEB="0", **HASH)
        flask(env, "db", "upgrade")
        shop_id, _key = add_shop(env, APPID, "http://127.0.0.1:9")
        env.update(REPLY_PATH_SHOP_ID=str(shop_id))
        child = subprocess.run([sys.executable, __file__, "--cases", str(args.cases), "--rounds", str(args.rounds)],
                               env=env, cwd=ROOT, check=False)
        sys.exit(child.returncode)


def measure(args) -> None:
    from app import create_app

    app = create_app()  # first: it imports the desk's modules in their order
    from app import tenancy
    from app.db import utcnow
    from app.desk import conversations
    from app.extensions import db
    from app.ingest import inbox
    from app.models import Message, Shop, User
    from app.settings import services

    shop_id = int(os.environ["REPLY_PATH_SHOP_ID"])
    with app.app_context():
        agent = services.create_user(username="agent_reply", display_name="Agent", password=PASSWORD,
                                     shops=[db.session.get(Shop, shop_id)])
        agent.capacity = 100_000
        db.session.commit()
        agent_id = agent.id
        db.session.remove()

    def buyer_writes() -> int:
        """A new buyer's message, filed and announced as the inbox does: its conversation's id."""
        payload = {"Event": inbox.MESSAGE_EVENT, "FromUserName": f"o_{uuid.uuid4().hex[:12]}",
                   "msg_id": uuid.uuid4().hex, "msg_type": "text", "text": {"content": "在吗"},
                   "CreateTime": int(utcnow().timestamp())}
        with app.app_context():
            announcements = inbox.handle(shop_id, payload)
            db.session.commit()
            for announce in announcements:
                announce()
            conversation_id = db.session.scalar(
                sa.select(Message.conversation_id).where(Message.platform_msg_id == payload["msg_id"]))
            db.session.remove()
        return conversation_id

    statements: list[int] = []

    def count(*_):
        statements[-1] += 1

    def reply(conversation_id: int) -> None:
        with app.test_request_context():
            session = db.session()
            tenancy.set_scope(session, [shop_id])  # the console's scope: the agent's shops
            user = db.session.get(User, agent_id)
            sa.event.listen(db.engine, "before_cursor_execute", count)
            started = time.thread_time()
            conversations.send_reply(user, conversation_id, uuid.uuid4().hex, "text", {"text": "您好，在的"})
            cpu.append(time.thread_time() - started)
            sa.event.remove(db.engine, "before_cursor_execute", count)
            db.session.remove()

    for _ in range(5):  # warm: the statement caches, first-call paths
        cpu: list[float] = []
        statements.append(0)
        reply(buyer_writes())
    cpu_per_reply, statements_per_reply = [], []
    for _ in range(args.rounds):
        waiting = [buyer_writes() for _ in range(args.cases)]
        cpu = []
        statements.append(0)
        for conversation_id in waiting:
            reply(conversation_id)
        cpu_per_reply.append(1000 * sum(cpu) / args.cases)
        statements_per_reply.append(statements[-1] / args.cases)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    emit({
        "bench": "reply_path",
        "cases_per_round": args.cases,
        "rounds": args.rounds,
        "statements_per_reply": round(statistics.median(statements_per_reply), 1),
        "cpu_ms_per_reply": rounds_summary(cpu_per_reply),
    })


if __name__ == "__main__":
    main()
