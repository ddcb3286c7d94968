"""Shops: one WeChat Channels shop connected in self-built mode, with its platform credentials."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, validates

from app.db import Base, EncryptedText, IdMixin, TimestampMixin

APPID_RE = re.compile(r"^wx[0-9a-zA-Z]{14,30}$")
AES_KEY_RE = re.compile(r"^[A-Za-z0-9+/]{43}$")
DEFAULT_API_BASE = "https://api.weixin.qq.com"


def new_webhook_key() -> str:
    return secrets.token_urlsafe(18)


class Shop(IdMixin, TimestampMixin, Base):
    __tablename__ = "shops"

    name: Mapped[str] = mapped_column(sa.String(100))
    appid: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Credentials: encrypted at rest, never rendered back in full (secretbox.mask).
    # Deferred: loading a shop (every conversation summary, every request's shop list) does not
    # decrypt them; the first access loads all three in one query.
    app_secret: Mapped[str] = mapped_column(EncryptedText, deferred=True, deferred_group="credentials")
    push_token: Mapped[str] = mapped_column(EncryptedText, deferred=True, deferred_group="credentials")
    encoding_aes_key: Mapped[str] = mapped_column(EncryptedText, deferred=True, deferred_group="credentials")
    api_base_url: Mapped[str] = mapped_column(sa.String(255), default=DEFAULT_API_BASE)
    # The unguessable path segment of this shop's push URL: /webhooks/<webhook_key>.
    webhook_key: Mapped[str] = mapped_column(sa.String(32), unique=True, default=new_webhook_key)
    timezone: Mapped[str] = mapped_column(sa.String(64), default="Asia/Shanghai")
    is_active: Mapped[bool] = mapped_column(default=True)
    is_demo: Mapped[bool] = mapped_column(default=False)
    connected_at: Mapped[datetime | None]

    @validates("appid")
    def _check_appid(self, _key: str, value: str) -> str:
        value = value.strip()
        if not APPID_RE.match(value):
            raise ValueError("appid must look like wx followed by 14-30 letters or digits")
        return value

    @validates("encoding_aes_key")
    def _check_aes_key(self, _key: str, value: str) -> str:
        value = value.strip()
        if not AES_KEY_RE.match(value):
            raise ValueError("EncodingAESKey must be 43 characters of base64 (A-Z, a-z, 0-9, +, /)")
        return value

    @validates("timezone")
    def _check_timezone(self, _key: str, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @validates("api_base_url")
    def _check_api_base(self, _key: str, value: str) -> str:
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("API base URL must start with http:// or https://")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def __repr__(self) -> str:
        return f"<Shop {self.id} {self.name!r} {self.appid}>"
