"""A simulator of the WeChat Channels shop platform, for the demo, the tests and the benchmarks.

It speaks ../shared/docs/platform-api.md over real HTTP: mounted under ``/sim`` in the desk's own
process (``make run``), or on a port of its own (``flask simulator run --port 5001``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Flask

from app.platform.simulator.pushes import DEFAULT_RETRY_DELAYS, PushSender
from app.platform.simulator.state import SimPlatform, SimShop

EXTENSION_KEY = "channeldesk.simulator"


@dataclass
class Simulator:
    platform: SimPlatform
    sender: PushSender
    bursts: list = field(default_factory=list)
    demo: list = field(default_factory=list)

    @classmethod
    def create(cls, retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS, push_workers: int = 4) -> Simulator:
        platform = SimPlatform()
        sender = PushSender(workers=push_workers, retry_delays=retry_delays)
        platform.push = sender.enqueue
        sender.is_down = lambda: platform.down
        return cls(platform=platform, sender=sender)

    def mount(self, app: Flask, url_prefix: str = "/sim") -> None:
        from app.platform.simulator.api import bp

        app.extensions[EXTENSION_KEY] = self
        app.register_blueprint(bp, url_prefix=url_prefix)

    def stop(self) -> None:
        for runner in self.demo:
            runner.stopping.set()
        self.sender.stop()


def create_simulator_app(simulator: Simulator | None = None) -> Flask:
    """A Flask app that is only the simulator (platform paths at the root), for its own port."""
    from app.extensions import csrf

    app = Flask("channeldesk-simulator")
    simulator = simulator or Simulator.create()
    simulator.mount(app, url_prefix="")
    csrf.exempt("app.platform.simulator.api")
    return app


__all__ = ["SimPlatform", "SimShop", "Simulator", "create_simulator_app"]
