"""A production-shaped deployment on loopback, for the fault tests and bench/scale.py.

Real processes: a Redis server of its own (on a spare port, so restarting it disturbs nobody else),
a fresh PostgreSQL database, the platform simulator on its own port, gunicorn web processes,
`flask workers` and `flask scheduler` processes. Everything is started and stopped here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PASSWORD = "cluster-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


class RedisServer:
    """redis-server on a port of its own, without persistence (as ChannelDesk needs none)."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> None:
        with (self.workdir / "redis.log").open("a") as log:
            self._spawn(log)
        if not wait_for(self.ping, timeout=10):
            raise RuntimeError("redis-server did not start")

    def _spawn(self, log) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class Cluster:
    """Processes by name, all sharing one environment (database, Redis, channel)."""

    def __init__(self, workdir: Path, database_url: str, redis: RedisServer, **settings: str):
        self.workdir = workdir
        self.redis = redis
        self.database_url = database_url
        self.env = {
            **os.environ,
            "CHANNELDESK_CONFIG": "production",
            "SESSION_COOKIE_SECURE": "false",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "SOCKETIO_CHANNEL": f"cluster-{redis.port}",
            "SECRET_KEY": "cluster-secret-" + "c" * 40,
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
            "INBOX_WORKERS_IN_WEB": "0",
            "LOG_LEVEL": "INFO",
            "FLASK_APP": "wsgi",
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], dict]] = {}
        self.ports: dict[str, int] = {}
        self.sim_port = free_port()
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.shops: dict[str, dict] = {}

    # --- setup -------------------------------------------------------------------------------

    def run(self, *args: str, **extra_env: str) -> str:
        env = {**self.env, **extra_env}
        result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def migrate(self) -> None:
        self.run("-m", "flask", "db", "upgrade")

    def add_shop(self, name: str, appid: str, token: str) -> dict:
        script = (
            "import json\n"
            "from app import create_app; from app.extensions import db; from app.settings import services\n"
            "app = create_app()\n"
            "with app.app_context():\n"
            f"    shop = services.create_shop(services.ShopInput(name={name!r}, appid={appid!r},"
            f" app_secret='secret-{appid}', push_token={token!r}, encoding_aes_key={AES_KEY!r},"
            f" api_base_url={self.sim_url!r}))\n"
            "    db.session.commit()\n"
            "    print(json.dumps({'id': shop.id, 'key': shop.webhook_key}))\n"
        )
        shop = {"name": name, "appid": appid, "token": token, **json.loads(self.run("-c", script))}
        self.shops[appid] = shop
        return shop

    def add_agent(self, username: str, appids: list[str], capacity: int = 200) -> int:
        script = (
            "import sqlalchemy as sa\n"
            "from app import create_app; from app.extensions import db; from app.models import Shop\n"
            "from app.settings import services\n"
            "app = create_app()\n"
            "with app.app_context():\n"
            f"    shops = db.session.scalars(sa.select(Shop).where(Shop.appid.in_({appids!r}))).all()\n"
            f"    user = services.create_user(username={username!r}, display_name={username!r},"
            f" password={PASSWORD!r}, role='agent', shops=shops, capacity={capacity})\n"
            "    db.session.commit()\n"
            "    print(user.id)\n"
        )
        return int(self.run("-c", script).strip())

    # --- processes ---------------------------------------------------------------------------

    def start(self, name: str, args: list[str], wait_url: str | None = None, **extra_env: str) -> subprocess.Popen:
        env = {**self.env, **extra_env}
        self.commands[name] = (args, extra_env)
        with (self.workdir / f"{name}.log").open("a") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes[name] = process
        if wait_url and not wait_for(lambda: self._up(wait_url) or process.poll() is not None, timeout=40):
            raise RuntimeError(f"{name} did not come up; see {self.workdir / (name + '.log')}")
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited at start; see {self.workdir / (name + '.log')}")
        return process

    @staticmethod
    def _up(url: str) -> bool:
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    def start_web(self, name: str, threads: int = 16, port: int | None = None, **extra_env: str) -> str:
        port = port or self.ports.get(name) or free_port()
        self.ports[name] = port
        args = ["-m", "gunicorn", "-w", "1", "--threads", str(threads), "-b", f"127.0.0.1:{port}"]
        args += ["--graceful-timeout", "5", "wsgi:app"]
        self.start(name, args, wait_url=f"http://127.0.0.1:{port}/login", **extra_env)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start_simulator(self, push_to: dict[str, str | None], retry_delays: str = "0.3,0.5,1,1,2,2,3,5,5,5") -> None:
        args = ["-m", "flask", "simulator", "run", "--port", str(self.sim_port), "--retry-delays", retry_delays]
        for appid, web in push_to.items():
            shop = self.shops[appid]
            spec = f"{appid}:secret-{appid}:{shop['token']}:{AES_KEY}"
            if web:
                spec += f":{self.url(web)}/webhooks/{shop['key']}"
            args += ["--shop", spec]
        self.start("simulator", args, wait_url=f"{self.sim_url}/_sim/pushes")

    def start_workers(self, name: str = "workers", **extra_env: str) -> None:
        self.start(name, ["-m", "flask", "workers"], **extra_env)

    def start_scheduler(self, name: str, **extra_env: str) -> None:
        self.start(name, ["-m", "flask", "scheduler"], **extra_env)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, sig)  # gunicorn's worker with its arbiter
            process.wait(timeout=20)

    def log_size(self, name: str) -> int:
        path = self.workdir / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def wait_log(self, name: str, text: str, after: int = 0, timeout: float = 60.0) -> bool:
        """Until the process's log shows ``text`` past byte ``after``."""
        path = self.workdir / f"{name}.log"

        def seen() -> bool:
            with path.open("rb") as log:
                log.seek(after)
                return text.encode() in log.read()

        return bool(wait_for(seen, timeout=timeout, interval=0.1))

    def start_standby(self, name: str) -> None:
        """(Re)start a scheduler and wait until it is a ready standby (waiting for the lead)."""
        offset = self.log_size(name)
        if name in self.commands:
            self.restart(name)
        else:
            self.start_scheduler(name)
        if not self.wait_log(name, "waiting for the lead", after=offset):
            raise RuntimeError(f"{name} did not start")

    def restart(self, name: str) -> None:
        args, extra_env = self.commands[name]
        wait_url = f"{self.url(name)}/login" if name in self.ports else None
        self.start(name, args, wait_url=wait_url, **extra_env)

    def stop_all(self) -> None:
        for name in list(self.processes):
            try:
                self.kill(name, signal.SIGTERM)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                process = self.processes.pop(name, None)
                if process is not None:
                    process.kill()

    # --- the platform and the desk --------------------------------------------------------------

    def sim(self, path: str, **body) -> dict:
        response = requests.post(f"{self.sim_url}/_sim/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def pushes_settled(self) -> bool:
        state = requests.get(f"{self.sim_url}/_sim/pushes", timeout=5).json()
        return state["pending"] == 0 and not state["in_flight"]

    def push_counters(self) -> dict:
        return requests.get(f"{self.sim_url}/_sim/pushes", timeout=5).json()

    def health(self, web: str) -> dict:
        return requests.get(f"{self.url(web)}/healthz", timeout=5).json()

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.database_url, poolclass=sa.pool.NullPool)

    def sign_in(self, web: str, username: str) -> requests.Session:
        http = requests.Session()
        page = http.get(f"{self.url(web)}/login", timeout=10).text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        response = http.post(
            f"{self.url(web)}/login",
            data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)},
            allow_redirects=False,
            timeout=10,
        )
        if response.status_code != 302:
            raise RuntimeError(f"sign-in failed: {response.status_code} {response.text[:300]}")
        return http

    def agent_socket(self, web: str, http: requests.Session, received: list, reconnect: bool = False):
        import socketio

        cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies)
        client = socketio.Client(reconnection=reconnect)
        hello = threading.Event()

        @client.on("hello", namespace="/desk")
        def _hello(data):
            hello.set()

        @client.on("*", namespace="/desk")
        def _any(event, data):
            received.append((time.monotonic(), event, data))

        client.connect(
            self.url(web), namespaces=["/desk"], headers={"Cookie": cookie}, transports=["websocket"], wait_timeout=15
        )
        if not hello.wait(15):
            raise RuntimeError("no hello from the console namespace")
        return client
