"""Encryption of shop credentials at rest (AppSecret, push Token, EncodingAESKey).

A MultiFernet key ring: the first key encrypts, every key decrypts, so keys rotate without
downtime (`flask shops rekey` re-encrypts every row with the newest key).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_ring: MultiFernet | None = None


class CredentialsKeyError(RuntimeError):
    """The stored secret cannot be decrypted with the configured keys."""


def derive_key(secret_key: str) -> bytes:
    """A Fernet key derived from SECRET_KEY, for setups that configure no CREDENTIALS_KEYS."""
    digest = hashlib.sha256(b"channeldesk-credentials:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


def configure(keys: str | None, secret_key: str | None) -> None:
    global _ring
    if keys:
        fernets = [Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()]
    elif secret_key:
        fernets = [Fernet(derive_key(secret_key))]
    else:
        raise RuntimeError("no CREDENTIALS_KEYS and no SECRET_KEY: cannot protect shop credentials")
    _ring = MultiFernet(fernets)


def _require_ring() -> MultiFernet:
    if _ring is None:
        raise RuntimeError("secretbox.configure() was not called (create_app does it)")
    return _ring


def encrypt(plaintext: str) -> str:
    return _require_ring().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _require_ring().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise CredentialsKeyError(
            "a stored shop credential cannot be decrypted: CREDENTIALS_KEYS/SECRET_KEY changed?"
        ) from exc


def rotate(token: str) -> str:
    return _require_ring().rotate(token.encode()).decode()


def mask(secret: str | None, keep: int = 4) -> str:
    """What the UI shows of a secret: its last few characters at most."""
    if not secret:
        return ""
    if len(secret) <= keep * 2:
        return "•" * 8
    return "•" * 8 + secret[-keep:]
