"""End-to-end fixtures: the desk served like `make run` does, driven by Debian's Chromium via Playwright.

The server is a real process (`flask db upgrade`, `flask demo seed`, `flask serve`) on a free loopback
port with its own SQLite file. Tests skip, loudly, only when Chromium or Playwright is absent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_PASSWORD = "e2e-demo-password"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, tmp: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CHANNELDESK_CONFIG": "development",
            "DATABASE_URL": f"sqlite:///{tmp / 'e2e.db'}",
            "SECRET_KEY": "e2e-secret-key-" + "x" * 32,
            "DEMO_PASSWORD": DEMO_PASSWORD,
            "LOG_LEVEL": "WARNING",
            "FLASK_APP": "wsgi",
            # The demo shop's simulated buyers arrive every second or so.
            "SIMULATOR_DEMO_TRAFFIC_SECONDS": "1",
        }
        self.env.pop("REDIS_URL", None)
        self.log = (tmp / "server.log").open("w")
        self.process: subprocess.Popen | None = None

    def flask(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "flask", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> None:
        self.env["SIMULATOR_URL"] = f"{self.url}/sim"
        self.flask("db", "upgrade")
        self.flask("demo", "seed")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"the desk did not come up on {self.url}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("e2e"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make install)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"!!! Chromium not found at {CHROMIUM}: browser tests SKIPPED (apt-get install chromium) !!!")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _is_script_error(msg) -> bool:
    # A 4xx page the test provoked on purpose (a form with errors) is logged as a resource error;
    # what must never happen is a script error or a failed asset.
    return msg.type == "error" and "the server responded with a status of 4" not in msg.text


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 860}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if _is_script_error(msg) else None)
    yield page
    context.close()
    assert not errors, f"browser errors: {errors}"
