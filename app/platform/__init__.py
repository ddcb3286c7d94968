"""The shop platform: the API client (client.py), push crypto (crypto.py) and the simulator (simulator/)."""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import Shop
from app.platform.client import Credentials, PlatformClient, TokenStore


def client_for(shop: Shop) -> PlatformClient:
    """A client for one shop, configured from the app (timeouts, retries) and sharing the token table."""
    config = current_app.config
    return PlatformClient(
        Credentials(
            shop_id=shop.id,
            appid=shop.appid,
            secret=shop.app_secret if "app_secret" not in sa.inspect(shop).unloaded else _secret_reader(shop.id),
            base_url=shop.api_base_url,
            timezone=shop.timezone,
        ),
        TokenStore(db.engine),
        timeout=(config["PLATFORM_CONNECT_TIMEOUT"], config["PLATFORM_READ_TIMEOUT"]),
        max_attempts=config["PLATFORM_MAX_ATTEMPTS"],
        backoff_base=config["PLATFORM_BACKOFF_BASE"],
        rate_limit_wait_cap=config["PLATFORM_RATE_LIMIT_WAIT_CAP"],
    )


def _secret_reader(shop_id: int):
    """Read (and decrypt) the shop's app secret when a token is fetched, in a session of its own."""
    engine, app = db.engine, current_app._get_current_object()

    def read() -> str:
        # Decrypting needs the app's key ring; pollers fetch in threads of their own.
        with contextlib.ExitStack() as stack:
            if not has_app_context():
                stack.enter_context(app.app_context())
            with Session(engine) as session:
                return session.scalar(sa.select(Shop.app_secret).where(Shop.id == shop_id)) or ""

    return read
