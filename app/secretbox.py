"""Encryption of shop credentials at rest (AppSecret, push Token, EncodingAESKey).

A MultiFernet key ring per app: the first key encrypts, every key decrypts, so keys rotate without
downtime (`flask shops rekey` re-encrypts every row with the newest key). The ring lives in
``app.extensions`` so two apps in one process (tests, tools) never read each other's keys.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app

EXTENSION_KEY = "channeldesk.secretbox"


class CredentialsKeyError(RuntimeError):
    """The stored secret cannot be decrypted with the configured keys."""


def derive_key(secret_key: str) -> bytes:
    """A Fernet key derived from SECRET_KEY, for setups that configure no CREDENTIALS_KEYS."""
    digest = hashlib.sha256(b"channeldesk-credentials:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


def init_app(app: Flask) -> None:
    """Build the app's key ring from CREDENTIALS_KEYS, else from SECRET_KEY."""
    keys = app.config.get("CREDENTIALS_KEYS")
    if keys:
        fernets = [Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()]
    elif app.config.get("SECRET_KEY"):
        fernets = [Fernet(derive_key(app.config["SECRET_KEY"]))]
    else:
        raise RuntimeError("no CREDENTIALS_KEYS and no SECRET_KEY: cannot protect shop credentials")
    app.extensions[EXTENSION_KEY] = MultiFernet(fernets)


def _ring() -> MultiFernet:
    try:
        return current_app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError("secretbox.init_app(app) was not called (create_app does it)") from None


def encrypt(plaintext: str) -> str:
    return _ring().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _ring().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise CredentialsKeyError(
            "a stored shop credential cannot be decrypted: CREDENTIALS_KEYS/SECRET_KEY changed?"
        ) from exc


def mask(secret: str | None, keep: int = 4) -> str:
    """What the UI shows of a secret: its last few characters at most."""
    if not secret:
        return ""
    if len(secret) <= keep * 2:
        return "•" * 8
    return "•" * 8 + secret[-keep:]
