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
    SQLALCHEMY_ENGINE_OPTIONS: dict = {}
    # PostgreSQL connections kept open per process: enough for every worker thread and a burst of
    # requests, so that none is opened and closed per transaction (the server starts a backend for
    # each). Idle ones are checked before use (app/dbsetup.py: ping_when_idle), not every checkout.
    DB_POOL_SIZE = env_int("DB_POOL_SIZE", 20)
    DB_MAX_OVERFLOW = env_int("DB_MAX_OVERFLOW", 20)
    SQLALCHEMY_RECORD_QUERIES = False

    REDIS_URL = env_str("REDIS_URL")
    # The Redis pub/sub channel web processes share Socket.IO events on (one per deployment).
    SOCKETIO_CHANNEL = env_str("SOCKETIO_CHANNEL", "flask-socketio")
    # `flask scheduler` leadership (app/leader.py): the lease on the Redis lock, and how often the
    # leader renews it and a standby tries to take it. A standby leads at most lease + renew seconds
    # after the leader died.
    SCHEDULER_LEASE_SECONDS = float(env_str("SCHEDULER_LEASE_SECONDS", "5"))
    SCHEDULER_RENEW_SECONDS = float(env_str("SCHEDULER_RENEW_SECONDS", "1"))

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
    # Redis away for a moment must not lock everyone out: count in this process's memory meanwhile.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True
    RATELIMIT_HEADERS_ENABLED = False

    # Platform client (app/platform/client.py).
    PLATFORM_CONNECT_TIMEOUT = float(env_str("PLATFORM_CONNECT_TIMEOUT", "3.05"))
    PLATFORM_READ_TIMEOUT = float(env_str("PLATFORM_READ_TIMEOUT", "10"))
    PLATFORM_MAX_ATTEMPTS = env_int("PLATFORM_MAX_ATTEMPTS", 4)
    PLATFORM_BACKOFF_BASE = float(env_str("PLATFORM_BACKOFF_BASE", "0.2"))
    PLATFORM_RATE_LIMIT_WAIT_CAP = float(env_str("PLATFORM_RATE_LIMIT_WAIT_CAP", "10"))

    # Pollers (app/ingest/pollers.py): how often, how far back on first run, how much overlap.
    POLL_ORDERS_SECONDS = env_int("POLL_ORDERS_SECONDS", 60)
    POLL_AFTER_SALES_SECONDS = env_int("POLL_AFTER_SALES_SECONDS", 60)
    POLL_ADDRESSES_SECONDS = env_int("POLL_ADDRESSES_SECONDS", 600)
    SYNC_OVERLAP_SECONDS = env_int("SYNC_OVERLAP_SECONDS", 30)
    # Clock difference allowed between the platform's update times and ours.
    SYNC_CLOCK_MARGIN_SECONDS = env_int("SYNC_CLOCK_MARGIN_SECONDS", 5)
    SYNC_INITIAL_DAYS = env_int("SYNC_INITIAL_DAYS", 7)
    SYNC_SETTLE_SECONDS = env_int("SYNC_SETTLE_SECONDS", 2)
    SYNC_MAX_SLICES_PER_RUN = env_int("SYNC_MAX_SLICES_PER_RUN", 60)
    DETAIL_FETCH_CONCURRENCY = env_int("DETAIL_FETCH_CONCURRENCY", 8)
    # Inbox (received pushes): attempts before an event is marked failed for an admin to see.
    INBOX_MAX_ATTEMPTS = env_int("INBOX_MAX_ATTEMPTS", 8)
    INBOX_RETRY_BASE_SECONDS = float(env_str("INBOX_RETRY_BASE_SECONDS", "2"))  # doubles per attempt, max 300
    # How long a claimed push stays with its worker: a worker process that dies leaves its claimed
    # pushes to the others after this. Long enough for the slowest handling (platform timeouts x
    # retries); renewed before each event after a tenth of it.
    INBOX_LEASE_SECONDS = env_int("INBOX_LEASE_SECONDS", 300)
    # Threads per process that handle received pushes (each fetches details from the platform).
    INBOX_WORKER_THREADS = env_int("INBOX_WORKER_THREADS", 4)
    # Start inbox and outbox workers in web processes (they wake on each received push or reply).
    # Off: `flask workers` processes (and the scheduler) do the work, woken through Redis
    # (REDIS_URL), else within a second by their own polling. Off is the production shape: the web
    # processes then only take requests and serve websockets.
    INBOX_WORKERS_IN_WEB = env_bool("INBOX_WORKERS_IN_WEB", True)
    # Outbox (calls to the platform: replies, after-sale actions): attempts on retryable errors
    # (busy, unavailable) before a call fails visibly; backoff doubles from the base, max 60 s.
    OUTBOX_MAX_ATTEMPTS = env_int("OUTBOX_MAX_ATTEMPTS", 5)
    OUTBOX_RETRY_BASE_SECONDS = float(env_str("OUTBOX_RETRY_BASE_SECONDS", "1"))
    OUTBOX_WORKER_THREADS = env_int("OUTBOX_WORKER_THREADS", 4)
    # Rules: an inbox worker that stored an order or after-sale evaluates the rules on it at once
    # (depth first: in a burst the first cases are decided first, not after every push is stored);
    # the evaluation is queued in the outbox first either way. Off: outbox workers take it.
    RULES_EVALUATE_INLINE = env_bool("RULES_EVALUATE_INLINE", True)

    # Agent console. Assignment: a conversation waits in the queue when no online agent serving its
    # shop has capacity. Auto-replies may use at most this many of the platform's 5 messages per
    # buyer turn, so agents always keep the rest.
    AUTO_REPLY_BUDGET = env_int("AUTO_REPLY_BUDGET", 2)
    # Order sidebar: full addresses the platform decodes per shop and day (its quota is reported as
    # ~30), and how long the platform's reject-reason list is reused before it is read again.
    ADDRESS_DECODE_DAILY_QUOTA = env_int("ADDRESS_DECODE_DAILY_QUOTA", 30)
    REJECT_REASONS_CACHE_SECONDS = env_int("REJECT_REASONS_CACHE_SECONDS", 600)
    # Where images agents send are kept (the platform keeps its copy 14 days).
    MEDIA_DIR = env_str("MEDIA_DIR", str(BASE_DIR / "instance" / "media"))

    # The bundled platform simulator, mounted under /sim (never in production).
    SIMULATOR_ENABLED = False
    # Demo traffic on the demo shop: a buyer every N seconds on average (0: none).
    SIMULATOR_DEMO_TRAFFIC_SECONDS = env_int("SIMULATOR_DEMO_TRAFFIC_SECONDS", 45)

    # Largest request body accepted (agents' image uploads; the platform takes files up to 30 MB).
    MAX_CONTENT_LENGTH = 32 * 1024 * 1024

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
    SIMULATOR_ENABLED = env_bool("SIMULATOR_ENABLED", True)


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "testing-secret-key"
    SQLALCHEMY_DATABASE_URI = "sqlite://"  # tests/conftest.py picks the real one
    RATELIMIT_STORAGE_URI = "memory://"
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"
    # Fast failure paths against the simulator on loopback.
    PLATFORM_READ_TIMEOUT = 1.0
    PLATFORM_BACKOFF_BASE = 0.01
    PLATFORM_RATE_LIMIT_WAIT_CAP = 0.05
    SYNC_SETTLE_SECONDS = 0
    SYNC_OVERLAP_SECONDS = 5
    INBOX_WORKER_THREADS = 2
    INBOX_RETRY_BASE_SECONDS = 0.05
    OUTBOX_RETRY_BASE_SECONDS = 0.05
    OUTBOX_WORKER_THREADS = 2
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
