"""Sign-in, sign-out, sessions, throttling, CSRF and role gates."""

from __future__ import annotations

import re

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, User
from tests.factories import PASSWORD


def test_sign_in_and_out(world, client):
    response = client.post("/login", data={"username": "agent_a", "password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    client.refresh_csrf("/settings/")
    response = client.post("/logout")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert client.get("/").status_code == 302


def test_username_is_case_insensitive(world, client):
    assert client.post("/login", data={"username": "Agent_A", "password": PASSWORD}).status_code == 302


def test_wrong_password_is_refused_and_audited(app, world, client):
    response = client.post("/login", data={"username": "agent_a", "password": "nope-nope"})
    assert response.status_code == 200
    assert "用户名或密码错误" in response.get_data(as_text=True)
    client.post("/login", data={"username": "my-password-typed-here", "password": "x"})
    with app.app_context():
        entries = db.session.scalars(
            sa.select(AuditLog).where(AuditLog.action == "auth.login_failed").order_by(AuditLog.id)
        ).all()
        assert entries[0].subject_id == str(world.users["agent_a"])
        assert entries[1].subject_id is None and entries[1].details == {"unknown_account": True}
        assert "my-password-typed-here" not in repr([(e.subject_id, e.details) for e in entries])


def test_unknown_accounts_cost_a_password_check_too(world, client, monkeypatch):
    """Without it, the answer time tells which usernames exist."""
    import app.models.people as people

    checks = []
    real = people.check_password_hash
    monkeypatch.setattr(people, "check_password_hash", lambda h, p: checks.append(h) or real(h, p))
    client.post("/login", data={"username": "nobody-here", "password": "whatever-pw"})
    client.post("/login", data={"username": "agent_a", "password": "whatever-pw"})
    assert len(checks) == 2


def test_inactive_user_cannot_sign_in(app, world, client):
    with app.app_context():
        db.session.get(User, world.users["agent_a"]).is_active = False
        db.session.commit()
    response = client.post("/login", data={"username": "agent_a", "password": PASSWORD})
    assert response.status_code == 200 and "用户名或密码错误" in response.get_data(as_text=True)


def test_deactivation_and_password_change_end_existing_sessions(app, world, login):
    first = login("agent_a")
    second = login("agent_a")
    response = first.post(
        "/settings/password",
        data={"pw-current_password": PASSWORD, "pw-new_password": "new-password-123", "pw-confirm": "new-password-123"},
    )
    assert response.status_code == 302
    assert first.get("/").status_code == 200, "the session that changed the password stays signed in"
    assert second.get("/").status_code == 302, "other sessions end"

    other = login("agent_b")
    with app.app_context():
        user = db.session.get(User, world.users["agent_b"])
        user.is_active = False
        db.session.commit()
    assert other.get("/").status_code == 302


def test_open_redirects_are_refused(app, world):
    for target, expected in [
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("evil", "/"),
        ("/after-sales/", "/after-sales/"),
    ]:
        client = app.test_client()
        response = client.post(f"/login?next={target}", data={"username": "agent_a", "password": PASSWORD})
        assert response.headers["Location"] == expected, target


def test_session_is_renewed_at_sign_in(world, client):
    client.get("/login")
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    client.post("/login", data={"username": "agent_a", "password": PASSWORD})
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.get("_user_id")


def test_behind_a_proxy_the_client_address_is_recorded(database_url, world):
    from app import create_app
    from tests.conftest import make_config

    proxied = create_app(make_config(database_url, PROXY_FIX_HOPS=1))
    client = proxied.test_client()
    html = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)
    client.post(
        "/login",
        data={"username": "nobody", "password": "x", "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    with proxied.app_context():
        assert db.session.scalar(sa.select(AuditLog.ip).where(AuditLog.action == "auth.login_failed")) == "203.0.113.7"
        db.session.remove()
        db.engine.dispose()


def test_failed_sign_ins_are_throttled_per_account(world, client):
    statuses = [
        client.post("/login", data={"username": "agent_a", "password": "wrong-password"}).status_code for _ in range(6)
    ]
    assert statuses == [200] * 5 + [429]
    # Even the right password waits now; another account is unaffected.
    assert client.post("/login", data={"username": "agent_a", "password": PASSWORD}).status_code == 429
    assert client.post("/login", data={"username": "agent_b", "password": PASSWORD}).status_code == 302


def test_successful_sign_ins_do_not_count_towards_the_limit(world, client):
    for _ in range(8):
        client.csrf_token = None
        assert client.post("/login", data={"username": "agent_a", "password": PASSWORD}).status_code == 302
        client.refresh_csrf("/settings/")
        client.post("/logout")


def test_state_changes_need_a_csrf_token(world, client, login):
    assert client.post("/login", data={"username": "agent_a", "password": PASSWORD}, csrf=False).status_code == 400
    signed_in = login("agent_a")
    assert signed_in.post("/logout", csrf=False).status_code == 400
    assert signed_in.post("/settings/language", data={"language": "en"}, csrf=False).status_code == 400
    assert signed_in.get("/logout").status_code == 405, "sign-out is POST only"


def test_roles_gate_pages(world, login):
    agent = login("agent_a")
    for path in ("/rules/", "/sla/", "/settings/shops", "/settings/users"):
        assert agent.get(path).status_code == 403, path
    # Agents may look up return addresses and bindings (changing them is for supervisors: tests/returns).
    assert agent.get("/return-addresses/").status_code == 200
    supervisor = login("supervisor_a")
    for path in ("/rules/", "/return-addresses/", "/sla/", "/settings/shops"):
        assert supervisor.get(path).status_code == 200, path
    assert supervisor.get("/settings/users").status_code == 403


def test_navigation_shows_only_what_the_role_may_open(world, login):
    agent_html = login("agent_a").get("/").get_data(as_text=True)
    assert 'href="/rules/"' not in agent_html and 'href="/after-sales/"' in agent_html
    assert 'href="/return-addresses/"' in agent_html
    supervisor_html = login("supervisor_a").get("/").get_data(as_text=True)
    assert 'href="/rules/"' in supervisor_html and 'href="/sla/"' in supervisor_html
