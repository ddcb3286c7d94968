"""Several web processes share console events through Redis; a process with no browsers (the
scheduler) emits through a write-only Socket.IO. Real gunicorn processes on PostgreSQL and Redis, a
real python-socketio client; skipped (loudly) when PostgreSQL or Redis is not reachable."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from app.platform.crypto import PushCrypto, sha1_signature

ROOT = Path(__file__).resolve().parents[2]
# Runs in the PostgreSQL half of `make test` (CHANNELDESK_TEST_DB set), against that server.
PG_ADMIN = os.environ.get("CHANNELDESK_TEST_DB", "")
REDIS_URL = os.environ.get("CHANNELDESK_TEST_REDIS", "redis://127.0.0.1:6379/0")
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx7e57c4a7e1d2b9f0aa"
TOKEN = "proctesttoken"
pytestmark = pytest.mark.db


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A fresh PostgreSQL database, a shop and an agent, two gunicorn web processes on one Redis channel."""
    if not PG_ADMIN.startswith("postgresql"):
        pytest.skip("runs in the PostgreSQL half of make test (CHANNELDESK_TEST_DB)")
    if not _redis_up():
        pytest.skip(f"!!! Redis not reachable at {REDIS_URL}: multi-process test SKIPPED !!!")
    from app.testing import temporary_database

    tmp = tmp_path_factory.mktemp("procs")
    channel = f"channeldesk-test-{uuid.uuid4().hex[:8]}"
    database = temporary_database(PG_ADMIN, "channeldesk_proc")
    url = database.__enter__()
    env = {
        **os.environ,
        "CHANNELDESK_CONFIG": "development",
        "DATABASE_URL": url,
        "REDIS_URL": REDIS_URL,
        "SOCKETIO_CHANNEL": channel,
        "SIMULATOR_ENABLED": "0",
        "SECRET_KEY": "process-test-secret-" + "x" * 32,
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        "LOG_LEVEL": "WARNING",
        "FLASK_APP": "wsgi",
    }
    run = {"cwd": ROOT, "env": env, "check": True, "capture_output": True}
    subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], **run)
    script = (
        "from app import create_app; from app.extensions import db; from app.settings import services\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        f"    shop = services.create_shop(services.ShopInput(name='多进程店', appid={APPID!r},"
        f" app_secret='secret-0123456789abcdef', push_token={TOKEN!r}, encoding_aes_key={AES_KEY!r},"
        " api_base_url='http://127.0.0.1:9'))\n"
        "    user = services.create_user(username='proc', display_name='多进程客服', password='proc-password',"
        " role='agent', shops=[shop])\n"
        "    db.session.commit()\n"
        "    print(shop.webhook_key, user.id)\n"
    )
    key, user_id = subprocess.run([sys.executable, "-c", script], **run, text=True).stdout.split()
    processes, urls, logs = [], [], []
    # Web process 0 works its own inbox; web process 1 leaves it to a `flask workers` process,
    # which it wakes through Redis (the production shape).
    commands = {
        "web0": (None, ["-m", "gunicorn", "-w", "1", "--threads", "16", "-b", "127.0.0.1:{port}", "wsgi:app"]),
        "web1": ("0", ["-m", "gunicorn", "-w", "1", "--threads", "16", "-b", "127.0.0.1:{port}", "wsgi:app"]),
        "workers": ("0", ["-m", "flask", "workers"]),
    }
    for name, (in_web, args) in commands.items():
        port = _free_port()
        log = (tmp / f"{name}.log").open("w")
        logs.append(log)
        process_env = {**env, **({"INBOX_WORKERS_IN_WEB": in_web} if in_web else {})}
        processes.append(
            subprocess.Popen(
                [sys.executable, *(a.format(port=port) for a in args)],
                cwd=ROOT,
                env=process_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        if name.startswith("web"):
            urls.append(f"http://127.0.0.1:{port}")
    for base in urls:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"{base} did not start; see {tmp}")
    yield {"urls": urls, "key": key, "user_id": int(user_id), "env": env, "channel": channel}
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
    for log in logs:
        log.close()
    database.__exit__(None, None, None)


def _agent_socket(base: str, received: list, connected: threading.Event):
    import socketio

    http = requests.Session()
    page = http.get(f"{base}/login").text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'<meta name="csrf-token" content="([^"]+)"', page
    )
    response = http.post(
        f"{base}/login",
        data={"username": "proc", "password": "proc-password", "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert response.status_code == 302, response.text[:500]
    cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies)
    client = socketio.Client(reconnection=False)

    @client.on("hello", namespace="/desk")
    def _hello(data):
        connected.set()

    @client.on("*", namespace="/desk")
    def _any(event, data):
        received.append((time.monotonic(), event, data))

    client.connect(base, namespaces=["/desk"], headers={"Cookie": cookie}, transports=["websocket"])
    return client


def _push(base: str, key: str, openid: str, text: str) -> None:
    payload = {
        "ToUserName": APPID,
        "FromUserName": openid,
        "CreateTime": int(time.time()),
        "MsgType": "event",
        "Event": "commkf_send_msg_to_kf",
        "msg_id": uuid.uuid4().hex,
        "msg_type": "text",
        "msg_event": "send_msg",
        "text": {"content": text},
    }
    crypto = PushCrypto(TOKEN, AES_KEY, APPID)
    encrypted = crypto.encrypt(json.dumps(payload, ensure_ascii=False))
    timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
    params = {
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "signature": sha1_signature(TOKEN, timestamp, nonce),
        "msg_signature": sha1_signature(TOKEN, timestamp, nonce, encrypted),
    }
    answer = requests.post(
        f"{base}/webhooks/{key}", params=params, json={"ToUserName": APPID, "Encrypt": encrypted}, timeout=10
    )
    assert answer.status_code == 200 and answer.text in ("success", ""), answer.text


def _wait(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_push_to_one_process_reaches_an_agent_on_another(deployment):
    """Web 1 stores the push and wakes the workers process, which handles it and emits through
    Redis; web 0 delivers to the agent's websocket."""
    received: list = []
    connected = threading.Event()
    client = _agent_socket(deployment["urls"][0], received, connected)
    try:
        assert connected.wait(10), "no hello from the console namespace"
        text = f"跨进程消息 {uuid.uuid4().hex[:6]}"
        _push(deployment["urls"][1], deployment["key"], "o_cross_process", text)
        assert _wait(
            lambda: any(
                event == "conversation.updated" and (data.get("message") or {}).get("text") == text
                for _, event, data in received
            )
        ), f"the agent on process 0 never heard of the push to process 1: {[e for _, e, _ in received]}"
        assert _wait(lambda: any(e == "conversation.assigned" for _, e, _ in received))
        assigned = [d for _, e, d in received if e == "conversation.assigned"]
        assert assigned[0]["conversation"]["assignee"]["id"] == deployment["user_id"]
    finally:
        client.disconnect()


def test_a_process_without_browsers_emits_through_redis(deployment):
    """What the scheduler process does: a write-only Socket.IO on the same Redis channel."""
    received: list = []
    connected = threading.Event()
    client = _agent_socket(deployment["urls"][1], received, connected)
    script = (
        "from app import create_app; from app.desk import realtime\n"
        "app = create_app()\n"
        "realtime.use_write_only(app)\n"
        f"realtime.emit('presence.changed', {{'user_id': {deployment['user_id']}, 'presence': 'away'}},"
        f" [realtime.user_room({deployment['user_id']})])\n"
    )
    try:
        assert connected.wait(10)
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=deployment["env"], check=True, timeout=60)
        assert _wait(lambda: any(e == "presence.changed" and d["presence"] == "away" for _, e, d in received))
    finally:
        client.disconnect()


def test_web_processes_wake_worker_processes_through_redis():
    """The wake-up itself: a web process without workers publishes; a worker process listens."""
    from flask import Flask

    from app.ingest import worker

    if not _redis_up():
        pytest.skip(f"!!! Redis not reachable at {REDIS_URL} !!!")
    config = {"REDIS_URL": REDIS_URL, "SOCKETIO_CHANNEL": f"wake-test-{uuid.uuid4().hex[:8]}"}
    config["INBOX_WORKERS_IN_WEB"] = False
    woke = {"inbox": threading.Event(), "outbox": threading.Event()}

    class Workers:
        def __init__(self, queue: str):
            self.queue = queue
            self.stopping = threading.Event()

        def wait_for_spare(self, timeout: float) -> bool:
            return True

        def wake(self) -> None:
            woke[self.queue].set()

    worker_process = Flask("workers")
    worker_process.config.update(config)
    worker_process.extensions[worker.EXTENSION_KEY] = Workers("inbox")
    worker_process.extensions[worker.OUTBOX_KEY] = Workers("outbox")
    worker.listen_for_wakes(worker_process)
    web_process = Flask("web")
    web_process.config.update(config)
    try:
        for queue, wake in (("inbox", worker.wake), ("outbox", worker.wake_outbox)):
            wake(web_process)
            assert woke[queue].wait(10), queue
    finally:
        for key in (worker.EXTENSION_KEY, worker.OUTBOX_KEY):
            worker_process.extensions[key].stopping.set()


def test_each_wake_up_rouses_one_worker_process_with_a_thread_free():
    """Two worker processes listen; every wake-up reaches exactly one of them (a publish woke a
    thread in each, and all but one claimed nothing). A process whose threads are all busy takes
    none: the free one gets them all, and none is lost meanwhile."""
    from flask import Flask

    from app.ingest import worker

    if not _redis_up():
        pytest.skip(f"!!! Redis not reachable at {REDIS_URL} !!!")
    config = {"REDIS_URL": REDIS_URL, "SOCKETIO_CHANNEL": f"wake-test-{uuid.uuid4().hex[:8]}",
              "INBOX_WORKERS_IN_WEB": False}

    class Workers:
        def __init__(self):
            self.stopping, self.free = threading.Event(), threading.Event()
            self.free.set()
            self.wakes = 0
            self._lock = threading.Lock()

        def wait_for_spare(self, timeout: float) -> bool:
            return self.free.wait(timeout)

        def wake(self) -> None:
            with self._lock:
                self.wakes += 1

    processes = []
    for name in ("workers-1", "workers-2"):
        app = Flask(name)
        app.config.update(config)
        app.extensions[worker.EXTENSION_KEY], app.extensions[worker.OUTBOX_KEY] = Workers(), Workers()
        worker.listen_for_wakes(app)
        processes.append(app)
    inboxes = [app.extensions[worker.EXTENSION_KEY] for app in processes]
    web_process = Flask("web")
    web_process.config.update(config)
    try:
        time.sleep(0.5)  # both listeners connected and waiting: Redis hands each entry to the longest waiting
        for _ in range(40):
            worker.wake(web_process)
            time.sleep(0.01)
        assert _wait(lambda: sum(w.wakes for w in inboxes) == 40)
        time.sleep(0.3)
        assert sum(w.wakes for w in inboxes) == 40, "a wake-up reached more than one process"
        assert all(w.wakes > 0 for w in inboxes), "both listen"

        busy, free = inboxes
        busy.free.clear()
        time.sleep(1.2)  # the busy one's listener is past its last take
        before = (busy.wakes, free.wakes)
        for _ in range(10):
            worker.wake(web_process)
        assert _wait(lambda: free.wakes == before[1] + 10)
        assert busy.wakes == before[0]
    finally:
        for app in processes:
            for key in (worker.EXTENSION_KEY, worker.OUTBOX_KEY):
                app.extensions[key].free.set()
                app.extensions[key].stopping.set()
