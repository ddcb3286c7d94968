"""Shared pieces of the benchmarks: a fresh PostgreSQL database, desk processes, percentiles.

Benchmarks run the production shape on this machine: PostgreSQL, gunicorn web processes, the
scheduler process, the platform simulator; all on loopback. Each prints one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.testing import temporary_database

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BIN = Path(sys.executable).parent


def signed_push(crypto, token: str, appid: str, path: str, message: dict, timestamp: str, nonce: str):
    """A push as the platform sends it: (URL path with signature query, encrypted JSON body)."""
    from urllib.parse import urlencode

    from app.platform.crypto import sha1_signature

    encrypted, msg_signature = crypto.encrypt_push(json.dumps(message, ensure_ascii=False), timestamp, nonce)
    query = urlencode(
        {
            "signature": sha1_signature(token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "encrypt_type": "aes",
            "msg_signature": msg_signature,
        }
    )
    return f"{path}?{query}", json.dumps({"ToUserName": appid, "Encrypt": encrypted}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SimulatorServer:
    """The platform simulator served from this process on loopback, with keep-alive connections.

    The real platform's HTTPS endpoint keeps a connection open across calls, and the desk's client
    pools them (one requests.Session per thread). Werkzeug's development server answers every request
    with `Connection: close`, so each platform call in a benchmark opened a new TCP connection and a
    new server thread: CPU on both sides that production does not pay. Waitress keeps the connections
    and works requests on a fixed pool of threads.
    """

    def __init__(self, simulator, port: int = 0, threads: int = 16):
        from waitress.server import create_server

        from app.platform.simulator import create_simulator_app

        self._server = create_server(create_simulator_app(simulator), host="127.0.0.1", port=port, threads=threads)
        self.port = self._server.effective_port
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.run, name="simulator-server", daemon=True).start()

    def shutdown(self) -> None:
        self._server.close()
        self._server.task_dispatcher.shutdown()


def _process_cpu(stat_path: Path) -> tuple[str, float]:
    """(command name, CPU seconds) from /proc/<pid>/stat."""
    text = stat_path.read_text()
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return name, (int(fields[11]) + int(fields[12])) / CpuMeter.TICK


class CpuMeter:
    """CPU seconds over a period: the web workers (of one gunicorn master's pid, or several), the
    `flask workers` processes, this process, the PostgreSQL backends of the bench's database (other
    backends, e.g. another run's tests, count as `postgres_other`), Redis, and how busy the whole
    machine was."""

    TICK = os.sysconf("SC_CLK_TCK")
    SERVICES = {"postgres": "postgres_cpu_s", "redis-server": "redis_cpu_s"}

    def __init__(self, web_pid: int | list[int], worker_pids: list[int] = (), database: str = ""):
        self.web_workers = []
        for pid in [web_pid] if isinstance(web_pid, int) else web_pid:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            self.web_workers.append(int(children[0]) if children else pid)
        self.worker_pids = list(worker_pids)
        self.database = database
        self.before = self._sample()
        self.samples: list[dict[str, float]] = [self.before]
        self._sampling: threading.Thread | None = None
        self._stop_sampling = threading.Event()

    def sample_every(self, seconds: float) -> CpuMeter:
        """Also take a sample every ``seconds`` in a thread of its own until ``result``, so that a
        window of the run can be cut out afterwards (``window``)."""

        def run() -> None:
            while not self._stop_sampling.wait(seconds):
                self.samples.append(self._sample())

        self._sampling = threading.Thread(target=run, name="cpu-sampler", daemon=True)
        self._sampling.start()
        return self

    def _sample(self) -> dict[str, float]:
        sample = {"wall_s": time.monotonic(), "at": time.time()}
        for pid in self.web_workers:
            sample[f"web_worker_cpu_s:{pid}"] = _process_cpu(Path(f"/proc/{pid}/stat"))[1]
        for pid in self.worker_pids:
            with contextlib.suppress(OSError):  # exited
                sample[f"workers_cpu_s:{pid}"] = _process_cpu(Path(f"/proc/{pid}/stat"))[1]
        own = os.times()
        sample["bench_process_cpu_s"] = own.user + own.system
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                name, seconds = _process_cpu(stat)
                if name == "postgres" and self.database:
                    mine = self.database in (stat.parent / "cmdline").read_bytes().decode(errors="replace")
                    name = "postgres" if mine else "postgres_other"
            except (OSError, ValueError):
                continue  # exited meanwhile
            if name in self.SERVICES:
                sample[f"{self.SERVICES[name]}:{stat.parent.name}"] = seconds
            elif name == "postgres_other":
                sample[f"postgres_other_cpu_s:{stat.parent.name}"] = seconds
        machine = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        sample["machine_s"], sample["idle_s"] = sum(machine) / self.TICK, (machine[3] + machine[4]) / self.TICK
        return sample

    def result(self) -> dict:
        self._stop_sampling.set()
        if self._sampling is not None:
            self._sampling.join()
        after = self._sample()
        self.samples.append(after)
        return self._between(self.before, after)

    def window(self, start: float, end: float) -> dict:
        """What ``result`` says, over the samples that enclose [``start``, ``end``], plus each process
        group's CPU as cores used (CPU seconds per second of the window) and the window as sampled
        (``from_s``/``to_s``, seconds from ``start``). ``start`` and ``end`` are ``time.time()``
        values; call it after ``result``, on a meter that ``sample_every`` sampled."""
        before = max((s for s in self.samples if s["at"] <= start), key=lambda s: s["at"], default=self.samples[0])
        after = min((s for s in self.samples if s["at"] >= end), key=lambda s: s["at"], default=self.samples[-1])
        figures = self._between(before, after, cores=True)
        figures["from_s"], figures["to_s"] = round(before["at"] - start, 2), round(after["at"] - start, 2)
        return figures

    def _between(self, before: dict[str, float], after: dict[str, float], cores: bool = False) -> dict:
        delta = dict.fromkeys(self.SERVICES.values(), 0.0)
        for key in after:  # a process started meanwhile counts whole; one that exited is missing
            if key == "at":
                continue
            name = key.split(":", 1)[0]
            delta[name] = delta.get(name, 0.0) + after[key] - before.get(key, 0.0)
        machine, idle = delta.pop("machine_s"), delta.pop("idle_s")
        figures = {
            **{key: round(value, 1) for key, value in sorted(delta.items())},
            "machine_busy_pct": round(100 * (1 - idle / machine), 1) if machine else None,
            "cores": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        if cores:
            wall = delta["wall_s"] or 1.0
            figures["cores_used"] = {
                key.removesuffix("_cpu_s"): round(value / wall, 2)
                for key, value in sorted(delta.items())
                if key.endswith("_cpu_s") and value
            }
        return figures


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values_seconds: list[float]) -> dict:
    ms = [v * 1000 for v in values_seconds]
    return {
        "p50_ms": round(statistics.median(ms), 2) if ms else None,
        "p95_ms": round(percentile(ms, 95), 2) if ms else None,
        "p99_ms": round(percentile(ms, 99), 2) if ms else None,
        "max_ms": round(max(ms), 2) if ms else None,
    }


def rounds_summary(per_round: list[float], digits: int = 2) -> dict:
    """A per-round figure's median, min and max (the one-case-at-a-time benches report rounds)."""
    return {
        "median": round(statistics.median(per_round), digits),
        "min": round(min(per_round), digits),
        "max": round(max(per_round), digits),
    }


def postgres_database():
    """A fresh database for one benchmark run, dropped afterwards."""
    return temporary_database(PG_ADMIN, "channeldesk_bench")


def desk_env(database_url: str, **extra: str) -> dict:
    env = {
        **os.environ,
        "CHANNELDESK_CONFIG": "production",
        "SECRET_KEY": "bench-" + "k" * 40,
        "DATABASE_URL": database_url,
        "SESSION_COOKIE_SECURE": "false",
        "LOG_LEVEL": os.environ.get("BENCH_DESK_LOG_LEVEL", "WARNING"),
        "FLASK_APP": "wsgi",
    }
    env.pop("REDIS_URL", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def flask(env: dict, *args: str) -> str:
    result = subprocess.run([str(BIN / "flask"), *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return result.stdout


def start_process(args: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def start_web(env: dict, port: int, threads: int, log_path: Path, app: str = "wsgi:app") -> subprocess.Popen:
    process = start_process(
        [
            str(BIN / "gunicorn"),
            "-w",
            "1",
            "--threads",
            str(threads),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ],
        env,
        log_path,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
    except BaseException:
        stop(process)  # a web process that never came up must not outlive the benchmark
        raise
    return process


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def emit(result: dict) -> None:
    print(json.dumps(result, ensure_ascii=False, sort_keys=True))


AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def add_shop(env: dict, appid: str, api_base: str, name: str = "压测店") -> tuple[int, str]:
    flask(
        env,
        "shops",
        "add",
        "--name",
        name,
        "--appid",
        appid,
        "--secret",
        "bench-secret-0123456789",
        "--token",
        "benchtoken",
        "--aes-key",
        AES_KEY,
        "--api-base",
        api_base,
    )
    engine = sa.create_engine(env["DATABASE_URL"])
    with engine.connect() as conn:
        shop_id, key = conn.execute(sa.text("SELECT id, webhook_key FROM shops WHERE appid = :a"), {"a": appid}).one()
    engine.dispose()
    return shop_id, key
