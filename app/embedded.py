"""The one-process demo (`make run` -> `flask serve`): simulator, pushes, inbox workers, scheduler.

Demo shops are registered with the mounted simulator, which then pushes to this very process over
HTTP, as the platform would; a gentle trickle of buyers keeps the console alive.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask

from app.extensions import db
from app.models import Shop

log = logging.getLogger(__name__)


def start(app: Flask, host: str, port: int) -> None:
    from app import scheduler
    from app.ingest import worker

    worker.start_workers(app)
    simulator = app.extensions.get("channeldesk.simulator")
    if simulator is not None:
        register_demo_shops(app, simulator, f"http://{host}:{port}")
    app.extensions["channeldesk.embedded_scheduler"] = scheduler.start_background(app)


def register_demo_shops(app: Flask, simulator, base_url: str) -> list[str]:
    from app.platform.simulator.scenario import DemoTraffic

    registered = []
    with app.app_context():
        shops = db.session.scalars(sa.select(Shop).where(Shop.is_demo, Shop.is_active)).all()
        for shop in shops:
            if not shop.api_base_url.startswith(base_url):
                log.warning(
                    "demo shop %s points at %s, not at this server's simulator (%s/sim)",
                    shop.name,
                    shop.api_base_url,
                    base_url,
                )
            sim_shop = simulator.platform.add_shop(
                shop.appid,
                shop.app_secret,
                shop.push_token,
                shop.encoding_aes_key,
                f"{base_url}/webhooks/{shop.webhook_key}",
            )
            interval = app.config["SIMULATOR_DEMO_TRAFFIC_SECONDS"]
            if interval > 0:
                traffic = DemoTraffic(simulator.platform, sim_shop, interval=interval)
                traffic.start()
                simulator.demo.append(traffic)
            registered.append(shop.appid)
        db.session.remove()
    return registered
