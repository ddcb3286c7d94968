"""Database engine tuning that models and migrations should not have to know about."""

from __future__ import annotations

import sqlite3
import time

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

# A pooled connection unused for this long is checked before it is handed out (see ping_when_idle).
IDLE_PING_SECONDS = 10.0

_installed = False


def install_sqlite_pragmas() -> None:
    """Foreign keys on (SQLite ignores them otherwise), WAL for concurrent readers, a busy timeout."""
    global _installed
    if _installed:
        return
    _installed = True

    @event.listens_for(Engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")  # the demo's many writer threads queue, not fail
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle for IDLE_PING_SECONDS.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip per transaction, several per
    buyer message on the hot path. A connection returned moments ago is alive unless the server went
    away in those moments, and then its statement fails (once per process: the failure invalidates
    the pool) and the work is retried like any other failure; one that waited longer is pinged, and
    if dead the whole pool is replaced.
    """
    if engine.dialect.name == "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_connection, record):
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection, record):
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy):
        if time.monotonic() - record.info.get("returned_at", 0.0) < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The server went away: every pooled connection is as dead as this one. The pool drops
            # them all and hands out a fresh one (what pool_pre_ping does).
            raise exc.InvalidatePoolError(f"pooled connection is dead: {error}") from error
