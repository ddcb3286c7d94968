"""Configuration classes, read from the environment with typed defaults.

Pick one with ``CHANNELDESK_CONFIG`` (development, testing, production); ``create_app``
also accepts a class or an instance directly. Every variable is listed in README.md.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {value!r}") from exc


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


class Config:
    """Settings shared by every environment."""

    ENV_NAME = "base"
    SECRET_KEY = env_str("SECRET_KEY")
    # Fernet keys (comma separated, newest first) that encrypt shop credentials at rest.
    # Unset: derived from SECRET_KEY, so rotating SECRET_KEY then needs `flask shops rekey`.
    CREDENTIALS_KEYS = env_str("CREDENTIALS_KEYS")

    SQLALCHEMY_DATABASE_URI = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'instance' / 'channeldesk.db'}")
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    SQLALCHEMY_RECORD_QUERIES = False

    REDIS_URL = env_str("REDIS_URL")

    # Languages: Simplified Chinese by default, English on request.
    BABEL_DEFAULT_LOCALE = "zh_CN"
    BABEL_DEFAULT_TIMEZONE = "Asia/Shanghai"
    LANGUAGES = {"zh_CN": "简体中文", "en": "English"}
    BABEL_TRANSLATION_DIRECTORIES = str(BASE_DIR / "app" / "translations")

    # Shop defaults; each shop keeps its own time zone.
    DEFAULT_SHOP_TIMEZONE = env_str("DEFAULT_SHOP_TIMEZONE", "Asia/Shanghai")
    PLATFORM_API_BASE = env_str("PLATFORM_API_BASE", "https://api.weixin.qq.com")
    # Where the bundled simulator is reachable (demo shop's API base).
    SIMULATOR_URL = env_str("SIMULATOR_URL", "http://127.0.0.1:5000/sim")

    # Sessions and cookies.
    SESSION_COOKIE_NAME = "channeldesk_session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    REMEMBER_COOKIE_DURATION = timedelta(days=env_int("REMEMBER_DAYS", 14))
    PERMANENT_SESSION_LIFETIME = timedelta(hours=env_int("SESSION_HOURS", 12))

    # Werkzeug's default (scrypt); tests use a cheap method so fixtures stay fast.
    PASSWORD_HASH_METHOD = "scrypt"

    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = None  # tied to the session; agents keep a tab open all day

    # Login throttling (Flask-Limiter syntax); failures only are counted.
    LOGIN_RATE_LIMIT = env_str("LOGIN_RATE_LIMIT", "5 per minute;20 per hour")
    RATELIMIT_STORAGE_URI = env_str("RATELIMIT_STORAGE_URI") or (REDIS_URL if REDIS_URL else "memory://")
    RATELIMIT_ENABLED = True
    RATELIMIT_HEADERS_ENABLED = False

    LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
    # How many reverse proxies (nginx) stand in front: their X-Forwarded-* headers are trusted
    # for that many hops, so rate limits and the audit log see the client's address, not the proxy's.
    PROXY_FIX_HOPS = env_int("PROXY_FIX_HOPS", 0)

    @classmethod
    def validate(cls) -> None:
        """Refuse configurations that must never run."""


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    # A fixed key is acceptable only on a developer's own machine: sessions survive restarts.
    SECRET_KEY = env_str("SECRET_KEY", "dev-only-not-secret-change-me")


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "testing-secret-key"
    SQLALCHEMY_DATABASE_URI = "sqlite://"  # tests/conftest.py picks the real one
    RATELIMIT_STORAGE_URI = "memory://"
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"
    LOG_LEVEL = "WARNING"


class ProductionConfig(Config):
    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SQLALCHEMY_DATABASE_URI = env_str("DATABASE_URL")

    @classmethod
    def validate(cls) -> None:
        problems = []
        if not cls.SECRET_KEY or len(cls.SECRET_KEY) < 32 or "change-me" in cls.SECRET_KEY:
            problems.append("SECRET_KEY must be set to a random value of at least 32 characters")
        if not cls.SQLALCHEMY_DATABASE_URI:
            problems.append("DATABASE_URL must be set (PostgreSQL in production)")
        if problems:
            raise RuntimeError("Refusing to start in production: " + "; ".join(problems))


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_from_env() -> type[Config]:
    name = env_str("CHANNELDESK_CONFIG", "development")
    try:
        return CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"CHANNELDESK_CONFIG must be one of {sorted(CONFIGS)}, got {name!r}") from None
