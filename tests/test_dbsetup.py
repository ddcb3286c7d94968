"""Pooled connections: checked before use only after sitting idle (app/dbsetup.py: ping_when_idle)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import dbsetup
from app.extensions import db


def _kill_pooled_connection(url: str) -> None:
    """Terminate the backend of the connection the app's pool holds (from a connection of our own)."""
    pid = db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    db.session.commit()  # back to the pool, still open
    killer = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with killer.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()
    killer.dispose()


@pytest.fixture
def postgres_app(app):
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("PostgreSQL only: SQLite files have no server to lose (runs in make test-postgres)")
        db.engine.dispose()  # a pool of one fresh connection
        yield app
        db.session.remove()
        db.engine.dispose()


def test_an_idle_connection_that_died_is_replaced_before_use(postgres_app, monkeypatch):
    monkeypatch.setattr(dbsetup, "IDLE_PING_SECONDS", 0.0)  # every checkout counts as idle
    _kill_pooled_connection(db.engine.url.render_as_string(hide_password=False))
    assert db.session.execute(sa.text("SELECT 1")).scalar() == 1


def test_a_connection_used_moments_ago_is_not_pinged(postgres_app, monkeypatch):
    monkeypatch.setattr(dbsetup, "IDLE_PING_SECONDS", 3600.0)
    _kill_pooled_connection(db.engine.url.render_as_string(hide_password=False))
    # No ping: the dead connection is handed out, the statement fails once and the pool is reset ...
    with pytest.raises(sa.exc.OperationalError):
        db.session.execute(sa.text("SELECT 1"))
    db.session.rollback()
    # ... and the next transaction gets a fresh connection.
    assert db.session.execute(sa.text("SELECT 1")).scalar() == 1
