"""Configuration: production refuses unsafe settings; cookies are secure there."""

from __future__ import annotations

import pytest

from app import create_app
from config import CONFIGS, ProductionConfig, config_from_env


def _production(**attrs):
    return type("Prod", (ProductionConfig,), attrs)


def test_production_refuses_to_start_without_secret_key_or_database():
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(_production(SECRET_KEY=None, SQLALCHEMY_DATABASE_URI="sqlite://"))
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(_production(SECRET_KEY="short", SQLALCHEMY_DATABASE_URI="sqlite://"))
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        create_app(_production(SECRET_KEY="x" * 40, SQLALCHEMY_DATABASE_URI=None))
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(_production(SECRET_KEY="dev-only-not-secret-change-me" * 2, SQLALCHEMY_DATABASE_URI="sqlite://"))


def test_production_cookies_are_secure_and_headers_strict():
    app = create_app(_production(SECRET_KEY="k" * 48, SQLALCHEMY_DATABASE_URI="sqlite://"))
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["REMEMBER_COOKIE_SECURE"]
    assert app.config["SESSION_COOKIE_HTTPONLY"] and app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    response = app.test_client().get("/login")
    assert "Strict-Transport-Security" in response.headers
    cookie = response.headers.get("Set-Cookie", "")
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_config_is_chosen_by_environment(monkeypatch):
    monkeypatch.setenv("CHANNELDESK_CONFIG", "testing")
    assert config_from_env() is CONFIGS["testing"]
    monkeypatch.setenv("CHANNELDESK_CONFIG", "staging")
    with pytest.raises(RuntimeError, match="CHANNELDESK_CONFIG"):
        config_from_env()


def test_every_page_sends_security_headers(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


def test_health_check_reports_the_database(client):
    response = client.get("/healthz")
    body = response.get_json()
    assert response.status_code == 200 and body["database"]["ok"] is True
    assert body["redis"] == {"configured": False, "ok": None}
    assert body["inbox"]["unfinished"] == 0 and body["outbox"]["unfinished"] == 0
