"""The Redis side of realtime: what one event costs the process that publishes it and the web process
that receives it, with the parser redis-py picks (hiredis when installed) against its pure-Python one.

Every console event a worker announces is published to Redis by its write-only Socket.IO, and every
web process's listener thread reads it back (python-socketio's RedisManager: ``PUBLISH``, then
``pubsub.listen()``); at 100 buyer messages a second that is a few hundred events a second in each
web process. Here one thread publishes `--events` events shaped like the desk's
``conversation.updated`` (the JSON python-socketio publishes, about 1.3 KB) while this process's
listener reads them, the way the web's listener does; CPU seconds per event of each thread (its own
clock), over interleaved rounds of each parser (Redis is on loopback; its own CPU is not counted).

    python bench/pubsub.py [--events 20000] [--rounds 5]

Needs Redis at 127.0.0.1:6379 (BENCH_REDIS_URL, default database 9). Prints one JSON line: per
parser, the median/min/max over rounds of CPU microseconds per event for the listener and for the
publisher, and the ratios of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import redis
from redis._parsers import _HiredisParser, _RESP3Parser
from redis.utils import HIREDIS_AVAILABLE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import emit, rounds_summary

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


def event(i: int) -> str:
    """python-socketio's published form of a ``conversation.updated`` with a message."""
    conversation = {
        "id": 1000 + i,
        "shop": {"id": 1, "name": "压测店", "badge": "压"},
        "customer": {"id": 5000 + i, "nickname": f"买家{i}", "openid": f"o_buyer_{i:06d}", "tags": ["回头客"]},
        "status": "open",
        "assignee": {"id": 7, "name": "客服小王"},
        "unread_count": 2,
        "waiting_since": "2026-12-02T05:10:00.123456+00:00",
        "last_message_at": "2026-12-02T05:10:00.123456+00:00",
        "last_message_preview": "在吗？这个什么时候发货，我昨天晚上在直播间下的单",
        "last_message_direction": "inbound",
        "replies_since_buyer": 0,
        "replies_left": 5,
    }
    message = {
        "id": 90000 + i,
        "conversation_id": 1000 + i,
        "shop_id": 1,
        "seq": 3,
        "direction": "inbound",
        "sender": None,
        "msg_type": "text",
        "text": "在吗？这个什么时候发货，我昨天晚上在直播间下的单",
        "delivery_state": None,
        "created_at": "2026-12-02T05:10:00.123456+00:00",
    }
    return json.dumps(
        {
            "method": "emit",
            "event": "conversation.updated",
            "data": {"conversation": conversation, "reason": "message", "message": message},
            "namespace": "/desk",
            "room": ["watch:1", f"conversation:{1000 + i}", "user:7"],
            "skip_sid": None,
            "callback": None,
            "host_id": uuid.uuid4().hex,
        },
        ensure_ascii=False,
    )


def one_round(parser_class, events: list[str], channel: str) -> tuple[float, float]:
    """CPU seconds per event of the publishing thread and of the listening one (this)."""
    publisher = redis.Redis.from_url(REDIS_URL, parser_class=parser_class)
    listener = redis.Redis.from_url(REDIS_URL, parser_class=parser_class)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    while pubsub.get_message(timeout=1.0) is None and not pubsub.subscribed:
        pass

    publish_cpu = []

    def publish():
        started = time.thread_time()
        for data in events:
            publisher.publish(channel, data)
        publish_cpu.append(time.thread_time() - started)

    started = time.thread_time()
    thread = threading.Thread(target=publish)
    thread.start()
    received = 0
    for message in pubsub.listen():
        if message["type"] == "message":
            json.loads(message["data"])  # what the manager does with each
            received += 1
            if received == len(events):
                break
    listen_cpu = time.thread_time() - started
    thread.join()
    pubsub.close()
    publisher.close()
    listener.close()
    return publish_cpu[0] / len(events), listen_cpu / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not HIREDIS_AVAILABLE:
        sys.exit("hiredis is not installed (requirements.txt): nothing to compare")
    events = [event(i) for i in range(args.events)]
    channel = f"bench-pubsub-{uuid.uuid4().hex[:8]}"
    parsers = {"hiredis": _HiredisParser, "python": _RESP3Parser}
    publish: dict[str, list[float]] = {name: [] for name in parsers}
    listen: dict[str, list[float]] = {name: [] for name in parsers}
    one_round(_HiredisParser, events[:500], channel)  # warm-up
    for _ in range(args.rounds):
        for name, parser_class in parsers.items():
            published, listened = one_round(parser_class, events, channel)
            publish[name].append(published * 1e6)
            listen[name].append(listened * 1e6)

    def ratio(figures: dict[str, list[float]]) -> float:
        return round(statistics.median(figures["python"]) / statistics.median(figures["hiredis"]), 2)

    emit(
        {
            "bench": "pubsub",
            "events_per_round": args.events,
            "event_bytes": len(events[0].encode()),
            "rounds": args.rounds,
            "redis_version": redis.__version__,
            "listen_cpu_us_per_event": {name: rounds_summary(values, 1) for name, values in listen.items()},
            "publish_cpu_us_per_event": {name: rounds_summary(values, 1) for name, values in publish.items()},
            "listen_python_over_hiredis": ratio(listen),
            "publish_python_over_hiredis": ratio(publish),
        }
    )


if __name__ == "__main__":
    main()
