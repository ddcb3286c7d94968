"""Migrations build the schema from nothing, match the models exactly, and go down again.

Runs on SQLite by default and on PostgreSQL under `make test` (CHANNELDESK_TEST_DB), each time in a
database of its own.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from app import create_app
from app.db import utcnow
from app.extensions import db
from app.testing import temporary_database
from tests.conftest import _postgres_admin_url, make_config

pytestmark = pytest.mark.db


@pytest.fixture
def empty_database_url(tmp_path):
    admin_url = _postgres_admin_url()
    if admin_url is None:
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    with temporary_database(admin_url, "channeldesk_mig") as url:
        yield url


def _diff(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def test_upgrade_from_empty_matches_the_models_and_downgrades(empty_database_url):
    app = create_app(make_config(empty_database_url))
    with app.app_context():
        try:
            upgrade()
            assert _diff(db.engine) == [], "models and migrations differ: run `make migration m=...`"
            downgrade(revision="base")
            assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
            upgrade()
            assert "shops" in sa.inspect(db.engine).get_table_names()
        finally:
            db.session.remove()
            db.engine.dispose()


def test_there_is_one_head(app):
    from alembic.script import ScriptDirectory

    with app.app_context():
        config = app.extensions["migrate"].migrate.get_config()
        assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_the_open_count_migration_backfills_and_goes_down_keeping_every_row(empty_database_url):
    """5c9e1f7a2b34 counts the agents' open conversations already there; going down drops the
    column and the triggers only (on SQLite not by rebuilding users, which with foreign keys on
    would run every ON DELETE action pointing at it: memberships, assignees)."""
    from tests.factories import make_shop

    app = create_app(make_config(empty_database_url))
    with app.app_context():
        try:
            upgrade(revision="4b8d2e6f9c13")
            shop_id = make_shop("迁移").id
            db.session.commit()
            now = utcnow()
            with db.engine.begin() as conn:
                agent = conn.execute(sa.text(
                    "INSERT INTO users (username, display_name, password_hash, role, capacity, language, is_active,"
                    " session_version, presence, created_at, updated_at) VALUES ('mig', '客服', 'x', 'agent', 5,"
                    " 'zh_CN', true, 1, 'online', :t, :t) RETURNING id"), {"t": now}).scalar()
                conn.execute(sa.text("INSERT INTO user_shops (user_id, shop_id) VALUES (:u, :s)"),
                             {"u": agent, "s": shop_id})
                for n, status in enumerate(["open", "open", "resolved"]):
                    customer = conn.execute(sa.text(
                        "INSERT INTO customers (shop_id, openid, created_at) VALUES (:s, :o, :t) RETURNING id"),
                        {"s": shop_id, "o": f"o_mig_{n}", "t": now}).scalar()
                    conn.execute(sa.text(
                        "INSERT INTO conversations (shop_id, customer_id, status, assignee_id, last_message_at,"
                        " unread_count, last_seq, replies_since_buyer, auto_replies_since_buyer, created_at,"
                        " updated_at) VALUES (:s, :c, :status, :a, :t, 0, 0, 0, 0, :t, :t)"),
                        {"s": shop_id, "c": customer, "status": status, "a": agent, "t": now})
            upgrade()
            with db.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT open_conversations FROM users WHERE id = :u"),
                                    {"u": agent}).scalar() == 2
            downgrade(revision="4b8d2e6f9c13")
            with db.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM user_shops WHERE user_id = :u"),
                                    {"u": agent}).scalar() == 1
                assert conn.execute(sa.text("SELECT count(*) FROM conversations WHERE assignee_id = :u"),
                                    {"u": agent}).scalar() == 3
                assert "open_conversations" not in {c["name"] for c in sa.inspect(conn).get_columns("users")}
        finally:
            db.session.remove()
            db.engine.dispose()


def test_going_down_and_up_again_keeps_every_row_of_the_first_schema(empty_database_url):
    """Every migration since the first, down and up again, over a database full of data. On SQLite
    most ALTERs rebuild the table (batch mode) and drop the old copy: with foreign keys on, that
    drop deletes its rows first and runs every ON DELETE action pointing at it (memberships,
    conversations, messages). The migrations run with foreign keys off, checked before they end."""
    from tests.factories import build_world

    def counts(tables) -> dict[str, int]:
        with db.engine.connect() as conn:
            return {t: conn.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar() for t in tables}

    app = create_app(make_config(empty_database_url))
    with app.app_context():
        try:
            upgrade()
            build_world()
            db.session.remove()
            full = counts(set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"})
            assert all(full[t] > 0 for t in ("users", "user_shops", "customers", "conversations", "messages"))
            downgrade(revision="1068ff11ca33")  # the initial schema
            first = set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}
            expected = {t: full[t] for t in first}
            assert counts(first) == expected
            upgrade()
            assert counts(first) == expected
        finally:
            db.session.remove()
            db.engine.dispose()
