"""Shared fixtures: the app on SQLite (default) or PostgreSQL, a clean database per test, users, shops.

`CHANNELDESK_TEST_DB` picks the database: unset means a SQLite file per test session; a PostgreSQL
URL (the server's admin connection) means a fresh database created for this run and dropped after it.
Tests that touch the database are marked `db` automatically (by using the `app` fixture), so
`pytest -m db` is the part `make test` runs again on PostgreSQL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.extensions import db, limiter
from app.testing import temporary_database
from config import TestingConfig
from tests import factories

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def pytest_collection_modifyitems(items):
    for item in items:
        if "app" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


def _postgres_admin_url() -> str | None:
    url = os.environ.get("CHANNELDESK_TEST_DB", "")
    return url if url.startswith("postgresql") else None


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    admin_url = _postgres_admin_url()
    if admin_url is None:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    try:
        with temporary_database(admin_url, "channeldesk_test") as url:
            yield url
    except sa.exc.OperationalError as exc:
        pytest.exit(f"PostgreSQL at {admin_url} is not usable: {exc}", returncode=1)


def make_config(database_url: str, **overrides) -> type[TestingConfig]:
    attrs = {"SQLALCHEMY_DATABASE_URI": database_url, **overrides}
    return type("TestConfig", (TestingConfig,), attrs)


@pytest.fixture(scope="session")
def _app(database_url) -> Iterator[Flask]:
    app = create_app(make_config(database_url))
    app.test_client_class = Client
    with app.app_context():
        from flask_migrate import upgrade

        # The schema the tests use is the one migrations build: a broken migration fails here.
        upgrade()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(_app) -> Iterator[Flask]:
    """The app with an empty database; every table is emptied after the test."""
    limiter.reset()
    from app.desk import intake

    intake.forget_settings()  # shop ids repeat between tests
    from app.sla import policy

    policy.forget()
    from app.platform.client import TokenStore

    TokenStore.forget_all()
    from app.orders import realtime as sidebar_realtime

    sidebar_realtime.forget()
    from app.rules import live as rules_live

    rules_live.forget_rules()
    yield _app
    with _app.app_context():
        db.session.remove()
        _empty_tables()


def _empty_tables() -> None:
    tables = [t for t in reversed(db.metadata.sorted_tables)]
    engine = db.engine
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


class Client(FlaskClient):
    """A test client that sends the CSRF token like the browser does (form field or header)."""

    csrf_token: str | None = None

    def refresh_csrf(self, path: str = "/login") -> str:
        html = self.get(path).get_data(as_text=True)
        match = CSRF_META.search(html)
        assert match, f"no csrf meta tag on {path}"
        self.csrf_token = match.group(1)
        return self.csrf_token

    def post(self, *args, csrf: bool = True, **kwargs):
        if csrf:
            if self.csrf_token is None:
                self.refresh_csrf()
            if "json" in kwargs or isinstance(kwargs.get("data"), str | bytes):
                kwargs.setdefault("headers", {})["X-CSRFToken"] = self.csrf_token
            else:
                data = dict(kwargs.pop("data", None) or {})
                data.setdefault("csrf_token", self.csrf_token)
                kwargs["data"] = data
        return super().post(*args, **kwargs)

    def login(self, username: str, password: str = factories.PASSWORD):
        self.csrf_token = None
        response = self.post("/login", data={"username": username, "password": password})
        assert response.status_code == 302, f"login of {username} failed: {response.status_code}"
        # Sign-in starts a fresh session: take the new session's token.
        self.refresh_csrf("/settings/")
        return response


@pytest.fixture
def client(app) -> Client:
    return app.test_client()


@pytest.fixture
def world(app) -> factories.World:
    """Two shops with data in each, and users of every role (see factories.build_world)."""
    with app.app_context():
        return factories.build_world()


@pytest.fixture
def login(app):
    """login("agent_a") -> a signed-in client."""

    def _login(username: str) -> Client:
        client = app.test_client()
        client.login(username)
        return client

    return _login
