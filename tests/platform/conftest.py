"""Real HTTP for platform tests: the simulator and the desk each served on a free loopback port."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from werkzeug.serving import make_server

from app.extensions import db
from app.ingest import worker
from app.platform.simulator import Simulator, create_simulator_app
from tests.factories import make_shop

FAST_RETRIES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)


logging.getLogger("werkzeug").setLevel(logging.WARNING)  # request lines carry access tokens


class Served:
    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    sim = Simulator.create(retry_delays=FAST_RETRIES, push_workers=4)
    served = Served(create_simulator_app(sim))
    sim.url = served.url
    yield sim
    sim.stop()
    served.stop()


@pytest.fixture
def desk(app) -> Iterator[Served]:
    """The desk app on a real port, with its inbox workers running."""
    served = Served(app)
    worker.start_workers(app)
    yield served
    for key in (worker.EXTENSION_KEY, worker.OUTBOX_KEY):
        app.extensions.pop(key).stop()
    served.stop()


def connect_shop(app, simulator: Simulator, push_base: str | None, name: str = "直播旗舰店"):
    """A shop in the desk pointing at the simulator; pushes go to ``push_base`` (None: polling only)."""
    with app.app_context():
        shop = make_shop(name, api_base_url=simulator.url)
        db.session.commit()
        sim_shop = simulator.platform.add_shop(
            shop.appid,
            shop.app_secret,
            shop.push_token,
            shop.encoding_aes_key,
            f"{push_base}/webhooks/{shop.webhook_key}" if push_base else None,
        )
        shop_id = shop.id
        db.session.remove()
    return shop_id, sim_shop


@pytest.fixture
def polled_shop(app, simulator):
    return connect_shop(app, simulator, None)


@pytest.fixture
def pushing_shop(app, simulator, desk):
    return connect_shop(app, simulator, desk.url)
