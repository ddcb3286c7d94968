"""The shop platform: the API client (client.py), push crypto (crypto.py) and the simulator (simulator/)."""

from __future__ import annotations

from flask import current_app

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
            secret=shop.app_secret,
            base_url=shop.api_base_url,
            timezone=shop.timezone,
        ),
        TokenStore(db.engine),
        timeout=(config["PLATFORM_CONNECT_TIMEOUT"], config["PLATFORM_READ_TIMEOUT"]),
        max_attempts=config["PLATFORM_MAX_ATTEMPTS"],
        backoff_base=config["PLATFORM_BACKOFF_BASE"],
        rate_limit_wait_cap=config["PLATFORM_RATE_LIMIT_WAIT_CAP"],
    )
