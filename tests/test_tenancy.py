"""Shop access: a user of shop A never sees or changes shop B, on any route, socket or query."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import tenancy
from app.extensions import db, socketio
from app.models import (
    AfterSale,
    AuditLog,
    Conversation,
    Message,
    MessageDirection,
    Order,
    RuleDecision,
    SenderKind,
    Shop,
)

# Every endpoint of the app and how its shop access is tested. A new route fails
# test_every_route_is_classified until it is added here (and so tested). The push URL is not a Flask
# route: it is authenticated by the shop's push signature (app/ingest/webhooks.py, tests/platform/test_webhooks.py).
PUBLIC = "public"  # no shop data at all
SELF = "self"  # about the signed-in user only
LIST = "list"  # shows data of many shops: must show only the user's
DETAIL = "detail"  # one shop-bound object by id: another shop's id is 404
ADMIN = "admin"  # admins only (403 for everyone else)

ROUTES: dict[str, tuple[str, str | None]] = {
    "static": (PUBLIC, None),
    "healthz": (PUBLIC, None),
    "auth.login": (PUBLIC, None),
    "auth.logout": (SELF, None),
    "settings.profile": (SELF, None),
    "settings.change_password": (SELF, None),
    "settings.set_language": (SELF, None),
    "desk.console": (SELF, None),
    "desk_api.inbox": (LIST, "/api/inbox?view=all"),
    "desk_api.quick_replies": (LIST, "/api/quick-replies?x=1"),
    "orders.queue": (LIST, "/after-sales/?show=all"),
    "orders_api.buyers": (LIST, "/api/buyers?q=昵称"),
    # After-sale and order actions by id: their cross-shop checks are in tests/orders/test_tenancy.py.
    "orders.bulk_approve": (DETAIL, None),
    "orders_api.act": (DETAIL, None),
    "orders_api.reject_reasons": (DETAIL, None),
    "orders_api.reveal_address": (DETAIL, None),
    "orders_api.send_card": (DETAIL, None),
    "rules.index": (LIST, "/rules/"),
    "rules.decisions": (LIST, "/rules/decisions"),
    "rules.settings": (DETAIL, "/rules/settings/{shop_id}"),
    "rules.new": (DETAIL, "/rules/new?shop={shop_id}"),
    # Rules and decisions by id: their cross-shop checks are in tests/rules/test_pages.py.
    "rules.detail": (DETAIL, None),
    "rules.edit": (DETAIL, None),
    "rules.toggle": (DETAIL, None),
    "rules.move": (DETAIL, None),
    "rules.add_template": (DETAIL, None),
    "rules.decision": (DETAIL, None),
    "rules.backtest_rule": (DETAIL, None),
    "returns.index": (LIST, "/return-addresses/"),
    "returns.report_page": (LIST, "/return-addresses/report"),
    "returns.export_csv": (LIST, "/return-addresses/bindings.csv"),
    # Changes by id or upload: their cross-shop checks are in tests/returns/test_tenancy.py.
    "returns.bind": (DETAIL, None),
    "returns.unbind": (DETAIL, None),
    "returns.import_csv": (DETAIL, None),
    "returns.sync": (DETAIL, None),
    "returns.edit_address": (DETAIL, None),
    "returns.new_address": (DETAIL, "/return-addresses/new?shop={shop_id}"),
    "sla.index": (LIST, "/sla/"),
    "sla.history_page": (LIST, "/sla/history"),
    "sla_api.board_json": (LIST, "/api/sla/board"),
    "sla_api.history_json": (LIST, "/api/sla/history"),
    "sla_api.me_json": (SELF, None),
    # The CSV lists only shops with counted turns: its cross-shop check is in tests/sla/test_pages.py.
    "sla.history_csv": (DETAIL, None),
    "sla.settings": (DETAIL, "/sla/settings/{shop_id}"),
    "settings.shops": (LIST, "/settings/shops"),
    "settings.quick_replies": (LIST, "/settings/quick-replies?x=1"),
    "settings.new_quick_reply": (SELF, None),
    "settings.quick_reply": (DETAIL, None),  # tests/test_replies_settings.py: another shop's is 404
    "settings.delete_quick_reply": (DETAIL, None),
    "settings.auto_replies": (DETAIL, "/settings/shops/{shop_id}/auto-replies"),
    "desk.conversation": (DETAIL, "/conversations/{conversation_id}"),
    "desk.sidebar": (DETAIL, "/conversations/{conversation_id}/sidebar"),
    "desk_api.conversation": (DETAIL, "/api/conversations/{conversation_id}"),
    "desk_api.messages": (DETAIL, "/api/conversations/{conversation_id}/messages"),
    # Detail routes needing an upload: their cross-shop checks are in tests/desk/test_images.py.
    "desk_api.send_image": (DETAIL, None),
    "desk_api.message_image": (DETAIL, None),
    "desk_api.agents": (DETAIL, "/api/agents?shop={shop_id}"),
    "settings.shop": (DETAIL, "/settings/shops/{shop_id}"),
    "settings.new_shop": (ADMIN, "/settings/shops/new"),
    "settings.users": (ADMIN, "/settings/users"),
    "settings.new_user": (ADMIN, "/settings/users/new"),
    "settings.user": (ADMIN, "/settings/users/{user_id}"),
    "settings.test_connection": (ADMIN, "/settings/shops/{shop_id}/test"),
    "settings.retry_inbox": (ADMIN, "/settings/shops/{shop_id}/inbox/retry"),
}

# Pages that only supervisors and admins open; the others are for agents too.
SUPERVISOR_PAGES = {
    "rules.index",
    "rules.decisions",
    "rules.settings",
    "rules.new",
    "returns.index",
    "returns.new_address",
    "sla.index",
    "sla.history_page",
    "sla.history_csv",
    "sla.settings",
    "sla_api.board_json",
    "sla_api.history_json",
    "settings.shops",
    "settings.shop",
    "settings.auto_replies",
}


def test_every_route_is_classified(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints == set(ROUTES), "classify new routes in ROUTES so their shop access is tested"


def _methods(app, endpoint: str) -> set[str]:
    return {m for rule in app.url_map.iter_rules(endpoint) for m in rule.methods}


def _viewer(endpoint: str, shop: str) -> str:
    role = "supervisor" if endpoint in SUPERVISOR_PAGES else "agent"
    return f"{role}_{shop}"


@pytest.mark.parametrize("endpoint", [e for e, (kind, _) in ROUTES.items() if kind == LIST])
def test_list_pages_show_only_the_users_shops(endpoint, world, login):
    path = ROUTES[endpoint][1]
    for mine, theirs in ((world.a, world.b), (world.b, world.a)):
        viewer = _viewer(endpoint, "a" if mine is world.a else "b")
        html = login(viewer).get(path).get_data(as_text=True)
        assert any(marker in html for marker in mine.markers), f"{endpoint}: {viewer} should see own shop data"
        leaked = [marker for marker in theirs.markers if marker in html]
        assert not leaked, f"{endpoint}: {viewer} sees another shop's data: {leaked}"


@pytest.mark.parametrize("endpoint", ["desk.console", "orders.queue"])
def test_shop_filter_cannot_reach_another_shop(endpoint, world, login):
    path = ROUTES[endpoint][1]
    html = login("agent_a").get(f"{path}&shop={world.b.shop_id}").get_data(as_text=True)
    assert not [m for m in world.b.markers if m in html]


@pytest.mark.parametrize("endpoint", [e for e, (kind, path) in ROUTES.items() if kind == DETAIL and path])
def test_detail_pages_of_another_shop_are_not_found(endpoint, app, world, login):
    template = ROUTES[endpoint][1]
    for viewer_shop, target in (("a", world.b), ("b", world.a)):
        client = login(_viewer(endpoint, viewer_shop))
        path = template.format(conversation_id=target.conversation_id, shop_id=target.shop_id)
        assert client.get(path).status_code == 404
        if "POST" in _methods(app, endpoint):
            assert client.post(path, data={"name": "hijack"}).status_code in (403, 404)
    own = template.format(conversation_id=world.a.conversation_id, shop_id=world.a.shop_id)
    assert login(_viewer(endpoint, "a")).get(own).status_code == 200


@pytest.mark.parametrize("endpoint", [e for e, (kind, _) in ROUTES.items() if kind == ADMIN])
def test_admin_pages_refuse_everyone_else(endpoint, app, world, login):
    path = ROUTES[endpoint][1].format(user_id=world.users["agent_b"], shop_id=world.a.shop_id)
    methods = _methods(app, endpoint)
    for username in ("agent_a", "supervisor_a"):
        client = login(username)
        if "GET" in methods:
            assert client.get(path).status_code == 403
        if "POST" in methods:
            assert client.post(path, data={"username": "x"}).status_code == 403
    admin = login("admin")
    if "GET" in methods:
        assert admin.get(path).status_code == 200


def test_admin_sees_every_shop(world, login):
    client = login("admin")
    for path in ("/api/inbox?view=all", "/after-sales/?show=all", "/rules/", "/return-addresses/", "/settings/shops"):
        html = client.get(path).get_data(as_text=True)
        assert world.a.name in html or world.a.nickname in html
        assert world.b.name in html or world.b.nickname in html


def test_user_without_shops_sees_nothing(app, world, login):
    from tests.factories import make_user

    with app.app_context():
        make_user("lonely")
        db.session.commit()
    client = login("lonely")
    for path in ("/?view=all", "/after-sales/?show=all"):
        html = client.get(path).get_data(as_text=True)
        assert not [m for m in world.a.markers + world.b.markers if m in html]


def test_deactivated_shop_leaves_the_scope(app, world, login):
    with app.app_context():
        db.session.get(Shop, world.a.shop_id).is_active = False
        db.session.commit()
    assert login("agent_a").get(f"/conversations/{world.a.conversation_id}").status_code == 404
    # The user's shop list is loaded before the scope is set: it must not answer session.get().
    assert login("supervisor_a").get(f"/settings/shops/{world.a.shop_id}").status_code == 404


def test_anonymous_requests_are_sent_to_sign_in(app, world, client):
    for endpoint, (kind, path) in ROUTES.items():
        if kind in (PUBLIC, SELF) or path is None:
            continue
        path = path.format(conversation_id=world.a.conversation_id, shop_id=world.a.shop_id, user_id=1)
        response = client.get(path) if "GET" in _methods(app, endpoint) else client.post(path)
        if path.startswith("/api/"):
            assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized", endpoint
        else:
            assert response.status_code == 302 and "/login" in response.headers["Location"], endpoint


# --- The mechanism itself, below the routes ---------------------------------------------------


@pytest.fixture
def scoped_a(app, world):
    """An app context whose session may see shop A only."""
    with app.app_context():
        tenancy.set_scope(db.session(), {world.a.shop_id})
        yield world
        db.session.rollback()
        db.session.remove()


def test_select_get_and_aggregates_are_scoped(scoped_a):
    world = scoped_a
    assert {o.shop_id for o in db.session.scalars(sa.select(Order))} == {world.a.shop_id}
    assert db.session.get(Order, world.b.order_pk) is None
    assert db.session.get(Shop, world.b.shop_id) is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversation)) == 1
    assert db.session.scalar(sa.select(sa.func.count(RuleDecision.id))) == 1
    joined = db.session.execute(
        sa.select(Order.order_id, AfterSale.after_sale_order_id).join(AfterSale, AfterSale.order_id == Order.order_id)
    ).all()
    assert joined == [(world.a.order_id, world.a.after_sale_order_id)]
    # Relationship loads follow the scope of the statement that loaded their parent.
    order = db.session.get(Order, world.a.order_pk)
    assert [item.shop_id for item in order.items] == [world.a.shop_id]


def test_bulk_update_and_delete_are_scoped(app, scoped_a):
    world = scoped_a
    db.session.execute(sa.update(Order).values(status=250))
    db.session.execute(sa.delete(AuditLog))
    db.session.commit()
    with tenancy.system_scope(db.session()):
        statuses = dict(db.session.execute(sa.select(Order.shop_id, Order.status)).all())
        audit_shops = set(db.session.scalars(sa.select(AuditLog.shop_id)))
    assert statuses == {world.a.shop_id: 250, world.b.shop_id: 20}
    assert audit_shops == {world.b.shop_id}


def test_writes_to_another_shop_are_refused(scoped_a):
    world = scoped_a
    db.session.add(
        Message(
            shop_id=world.b.shop_id,
            conversation_id=world.b.conversation_id,
            direction=MessageDirection.INTERNAL,
            sender_kind=SenderKind.SYSTEM,
            text="planted",
        )
    )
    with pytest.raises(tenancy.TenantViolation):
        db.session.flush()


def test_rows_loaded_before_the_scope_are_not_found_after_it(app, world):
    with app.app_context():
        session = db.session()
        assert session.get(Shop, world.b.shop_id) is not None  # unrestricted: now in the identity map
        tenancy.set_scope(session, {world.a.shop_id})
        assert session.get(Shop, world.b.shop_id) is None
        assert session.get(Order, world.b.order_pk) is None
        with tenancy.system_scope(session):
            order = session.get(Order, world.b.order_pk)
            order.status = 30  # pending change made unrestricted
        assert session.get(Order, world.b.order_pk) is None
        session.commit()
        tenancy.set_scope(session, None)
        assert session.get(Order, world.b.order_pk).status == 30, "system-scope changes are kept"
        db.session.remove()


def test_statements_that_would_bypass_the_criteria_are_refused(scoped_a):
    world = scoped_a
    values = {
        "shop_id": world.b.shop_id,
        "conversation_id": world.b.conversation_id,
        "direction": "internal",
        "sender_kind": "system",
        "msg_type": "note",
        "delivery_state": "received",
        "created_at": None,
    }
    with pytest.raises(tenancy.TenantViolation):
        db.session.execute(sa.insert(Message).values(**{k: v for k, v in values.items() if v is not None}))
    with pytest.raises(tenancy.TenantViolation):
        db.session.execute(sa.select(Message.__table__))
    with pytest.raises(tenancy.TenantViolation):
        db.session.execute(sa.update(Order.__table__).values(status=250))
    with pytest.raises(tenancy.TenantViolation):
        db.session.execute(sa.select(sa.func.count()).select_from(Order.__table__))


def test_creating_shops_needs_the_unrestricted_scope(scoped_a):
    from tests.factories import make_shop

    with pytest.raises(tenancy.TenantViolation):
        make_shop("new shop")


def test_system_scope_sees_everything_and_restores(scoped_a):
    world = scoped_a
    with tenancy.system_scope(db.session()):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Order)) == 2
    assert tenancy.get_scope(db.session()) == frozenset({world.a.shop_id})


# --- Socket.IO ------------------------------------------------------------------------------------


def test_socket_refuses_anonymous_connections(app, world, client):
    sio = socketio.test_client(app, namespace="/desk", flask_test_client=client)
    assert not sio.is_connected("/desk")
    default = socketio.test_client(app, flask_test_client=client)
    assert not default.is_connected("/")


def test_socket_joins_only_the_users_shop_rooms(app, world, login):
    for username, expected in (("agent_a", [world.a.shop_id]), ("agent_b", [world.b.shop_id])):
        sio = socketio.test_client(app, namespace="/desk", flask_test_client=login(username))
        assert sio.is_connected("/desk")
        hello = [m for m in sio.get_received("/desk") if m["name"] == "hello"]
        assert hello and hello[0]["args"][0]["shop_ids"] == expected
        sio.disconnect(namespace="/desk")


def test_an_outbox_call_queued_in_a_scoped_session_stays_in_its_shop(scoped_a):
    """``outbox.enqueue_once`` is a Core INSERT (no ORM flush guard): it checks the scope itself."""
    from app import outbox
    from app.models import OutboxCall

    world = scoped_a
    key = "rules:after_sale:1:MERCHANT_PROCESSING"
    call_id = outbox.enqueue_once(world.a.shop_id, outbox.BACKGROUND_OPERATION, {"subject_id": "1"}, key)
    assert call_id is not None
    assert outbox.enqueue_once(world.a.shop_id, outbox.BACKGROUND_OPERATION, {}, key) is None, "queued once"
    with pytest.raises(tenancy.TenantViolation):
        outbox.enqueue_once(world.b.shop_id, outbox.BACKGROUND_OPERATION, {}, key)
    assert tenancy.get_scope(db.session()) == frozenset({world.a.shop_id}), "the scope is restored"
    with tenancy.system_scope(db.session()):
        queued = db.session.execute(sa.select(OutboxCall.shop_id).where(OutboxCall.idempotency_key == key)).all()
    assert [tuple(row) for row in queued] == [(world.a.shop_id,)]
