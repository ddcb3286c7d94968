"""The security review's checks (docs/security.md), over every route the app has.

Route and socket-event shop access are classified and tested one by one in tests/test_tenancy.py and
tests/desk/test_sockets.py; here: every route refuses anonymous requests and every state change
without a CSRF token, whatever it is; buyer-controlled text is escaped on every page that shows it
and never reaches an HTML sink in the scripts; secrets never reach the log or a page; headers.
"""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AfterSale, Conversation, Customer, Message, Order, Shop, User

ROOT = Path(__file__).resolve().parents[2]
# Reachable without signing in, each for a reason: assets, the load balancer's check, the sign-in page.
ANONYMOUS_OK = {"static", "healthz", "auth.login"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
SCRIPT = '<script>alert("xss")</script>'
IMG = '<img src=x onerror="alert(1)">'


def _path(rule) -> str:
    values = {}
    for name, converter in rule._converters.items():
        values[name] = 1 if type(converter).__name__ in ("IntegerConverter", "NumberConverter") else "x"
    return rule.build(values, append_unknown=False)[1]


def _rules(app):
    return [r for r in app.url_map.iter_rules() if not r.endpoint.startswith("simulator.")]


def test_every_route_refuses_anonymous_requests(app, world, client):
    """A new route without login_required (or a role check) fails here, whatever it does."""
    checked = 0
    for rule in _rules(app):
        if rule.endpoint in ANONYMOUS_OK:
            continue
        path = _path(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.post(path) if method == "POST" else client.open(path, method=method)
            checked += 1
            if path.startswith("/api/"):
                assert response.status_code == 401, (rule.endpoint, method, response.status_code)
            else:
                assert response.status_code == 302 and "/login" in response.headers["Location"], (
                    rule.endpoint,
                    method,
                    response.status_code,
                )
    assert checked > 40


def test_every_state_change_needs_a_csrf_token(app, world, login):
    """Signed in (so only CSRF stands in the way): every non-GET route refuses a request without the
    token, as a form post or as JSON."""
    admin = login("admin")
    checked = 0
    for rule in _rules(app):
        for method in sorted(rule.methods & STATE_CHANGING):
            path = _path(rule)
            form = admin.open(path, method=method, data={"x": "1"})
            as_json = admin.open(path, method=method, json={"x": "1"})
            for response in (form, as_json):
                assert response.status_code == 400, (rule.endpoint, method, response.status_code)
            assert "csrf" in as_json.get_data(as_text=True).lower() or "表单" in form.get_data(as_text=True)
            checked += 1
    assert checked > 20


def test_a_token_from_another_session_is_refused(app, world, login):
    first, second = login("agent_a"), login("agent_b")
    response = second.post("/settings/language", data={"language": "en", "csrf_token": first.csrf_token}, csrf=False)
    assert response.status_code == 400


def test_the_session_cookie_is_replaced_at_sign_in_and_cannot_be_replayed_after_sign_out(app, world, client):
    client.get("/login")
    before = client.get_cookie("channeldesk_session")
    client.login("agent_a")
    after = client.get_cookie("channeldesk_session")
    assert before is None or before.value != after.value
    assert after.http_only and after.same_site == "Lax"
    stolen = after.value
    client.post("/logout")
    replay = app.test_client()
    replay.set_cookie("channeldesk_session", stolen)
    # A signed cookie stays valid after sign-out unless the server invalidates it: sign-out bumps the
    # user's session_version, so the copied cookie no longer signs anyone in.
    assert replay.get("/").status_code == 302


@pytest.fixture
def hostile(app, world):
    """Buyer-controlled text (nicknames, messages, after-sale reasons, item titles) made of markup."""
    with app.app_context():
        db.session.execute(sa.update(Customer).values(nickname=f"{SCRIPT}{IMG}"))
        db.session.execute(sa.update(Message).values(text=f"{IMG}{SCRIPT}"))
        db.session.execute(sa.update(Conversation).values(last_message_preview=f"{SCRIPT}"))
        db.session.execute(sa.update(AfterSale).values(reason_text=IMG, description=SCRIPT, refund_reason=IMG))
        db.session.execute(sa.update(Shop).values(name=f"店{IMG}"))
        db.session.execute(sa.update(User).where(User.username == "agent_a").values(display_name=f"客服{SCRIPT}"))
        db.session.commit()
        order_id = db.session.scalar(sa.select(Order.order_id).where(Order.shop_id == world.a.shop_id).limit(1))
    return {"order_id": order_id}


class _Elements(HTMLParser):
    """What a browser would build from the page: handlers, inline scripts, image sources."""

    def __init__(self):
        super().__init__()
        self.handlers, self.inline_scripts, self.images = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.handlers += [(tag, name) for name in attrs if name.startswith("on")]
        if tag == "script" and "src" not in attrs and attrs.get("type") != "application/json":
            self.inline_scripts.append(attrs)
        if tag == "img":
            self.images.append(attrs.get("src"))


def test_buyer_text_is_escaped_on_every_page_that_shows_it(app, world, hostile, login):
    a = world.a
    pages = {
        "agent_a": [
            "/",
            f"/conversations/{a.conversation_id}",
            f"/conversations/{a.conversation_id}/sidebar",
            "/after-sales/?show=all",
            "/return-addresses/",
        ],
        "supervisor_a": ["/sla/", "/rules/", "/return-addresses/report", "/settings/shops"],
        "admin": ["/settings/users", f"/settings/shops/{a.shop_id}"],
    }
    shown = 0
    for username, paths in pages.items():
        client = login(username)
        for path in paths:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            html = response.get_data(as_text=True)
            assert SCRIPT not in html and IMG not in html, path
            elements = _Elements()
            elements.feed(html)
            assert not elements.handlers, (path, elements.handlers)
            assert not elements.inline_scripts, (path, elements.inline_scripts)
            assert not [e for e in elements.images if e == "x"], path
            shown += html.count("&lt;script&gt;") + html.count("&lt;img")
    assert shown > 5, "the hostile text was not shown anywhere: the test tested nothing"


def test_scripts_write_data_through_text_never_markup():
    """The consoles render buyer data in the browser: no HTML sink except one allowed, commented use."""
    sinks = re.compile(r"\.innerHTML\s*=|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(")
    found = []
    for path in sorted((ROOT / "static" / "js").glob("*.js")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if sinks.search(line) and not line.lstrip().startswith(("//", "*")):
                found.append(f"{path.name}:{number}: {line.strip()}")
    # The sidebar fragment is our own template, rendered (escaped) by Jinja on the server.
    assert found == ["sidebar.js:91: root.innerHTML = html; // our own server-rendered template (escaped by Jinja)"]


def test_secrets_never_reach_the_log_or_a_page(app, world, login, simulator, polled_shop, caplog):
    """A run through sign-in, a connection test, polling (tokens in URLs) and failures, logging at
    DEBUG: no password, AppSecret, Token, EncodingAESKey or access token in any record."""
    from app.ingest import pollers
    from app.models import PlatformToken
    from tests.factories import PASSWORD

    caplog.set_level(logging.DEBUG)
    admin = login("admin")
    admin.post("/login", data={"username": "agent_a", "password": "wrong-" + PASSWORD})
    shop_id, sim_shop = polled_shop
    with app.app_context():
        shop = db.session.get(Shop, shop_id)
        secrets = [shop.app_secret, shop.push_token, shop.encoding_aes_key, PASSWORD]
        pollers.sync_orders(shop)
        sim_shop.faults.update(busy_rate=1.0)
        pollers.sync_after_sales(shop)
        sim_shop.faults.update(busy_rate=0.0)
        token = db.session.scalar(sa.select(PlatformToken.access_token).where(PlatformToken.shop_id == shop.id))
        secrets.append(token)
        shop_page = admin.get(f"/settings/shops/{shop.id}").get_data(as_text=True)
        admin.post(f"/settings/shops/{shop.id}/test")
    assert token, "no platform call was made: the test tested nothing"
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert len(caplog.records) > 3
    for secret in secrets:
        assert secret not in text
        assert secret not in shop_page


def test_security_headers_on_every_page(app, world, login):
    admin = login("admin")
    for path in ("/", "/settings/", "/after-sales/", "/login", "/healthz", "/api/inbox"):
        response = admin.get(path)
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"


def test_templates_carry_no_inline_script_or_handler():
    """The CSP forbids inline scripts; this says so before a browser does (tests/test_templates.py
    checks the same per template with more detail)."""
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
    handler = re.compile(r"\son[a-z]+\s*=", re.I)
    for path in (ROOT / "templates").rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        assert not inline_script.search(html.replace('type="application/json"', "")), path
        assert not handler.search(html), path
