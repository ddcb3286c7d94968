"""Shop access of the sidebar's endpoints: another shop's after-sale, order or conversation is not
found, nothing is queued or audited for it, and events reach only the rooms of its own buyers."""

from __future__ import annotations

import sqlalchemy as sa

from app import events
from app.extensions import db
from app.models import AfterSaleAction, AuditLog, OutboxCall
from tests.desk.conftest import sock  # noqa: F401 (fixture)
from tests.orders.conftest import request_id


def nothing_queued(app) -> None:
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AfterSaleAction)) == 0
        assert (
            db.session.scalar(
                sa.select(sa.func.count()).select_from(OutboxCall).where(OutboxCall.operation == "aftersale.action")
            )
            == 0
        )
        assert (
            db.session.scalar(
                sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action.like("after_sale.%"))
            )
            == 0
        )
        db.session.remove()


def test_another_shops_after_sale_cannot_be_acted_on(app, world, login):
    client = login("agent_a")
    for kind in ("approve_refund", "reject"):
        answer = client.post(
            f"/api/after-sales/{world.b.after_sale_pk}/actions",
            json={"kind": kind, "request_id": request_id(), "reject_reason_type": 1},
        )
        assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"
    assert client.get(f"/api/after-sales/{world.b.after_sale_pk}/reject-reasons").status_code == 404
    nothing_queued(app)


def test_an_address_of_another_shop_cannot_be_chosen(app, world, login):
    with app.app_context():
        from app.models import AfterSale

        db.session.get(AfterSale, world.a.after_sale_pk).type = "RETURN"
        db.session.commit()
        db.session.remove()
    answer = login("agent_a").post(
        f"/api/after-sales/{world.a.after_sale_pk}/actions",
        json={"kind": "approve_return", "request_id": request_id(), "address_pk": world.b.address_pk},
    )
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid"
    nothing_queued(app)


def test_another_shops_order_address_and_card_are_not_found(app, world, login):
    client = login("agent_a")
    assert client.post(f"/api/orders/{world.b.order_pk}/address", json={}).status_code == 404
    card = {"conversation_id": world.a.conversation_id, "request_id": request_id()}
    assert client.post(f"/api/orders/{world.b.order_pk}/card", json=card).status_code == 404
    card = {"conversation_id": world.b.conversation_id, "request_id": request_id()}
    assert client.post(f"/api/orders/{world.a.order_pk}/card", json=card).status_code == 404
    with app.app_context():
        assert (
            db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action.like("order.%")))
            == 0
        )
        db.session.remove()


def test_bulk_approval_skips_another_shops_after_sales(app, world, login):
    client = login("agent_a")
    client.get("/after-sales/")
    answer = client.post("/after-sales/bulk-approve", data={"ids": [str(world.b.after_sale_pk)], "batch": "ab" * 16})
    assert answer.status_code == 302
    nothing_queued(app)
    flashed = client.get("/after-sales/").get_data(as_text=True)
    assert world.b.after_sale_order_id not in flashed


def test_buyer_search_finds_only_the_users_shops(app, world, login):
    client = login("agent_a")
    assert client.get(f"/api/buyers?q={world.b.order_id}").get_json()["buyers"] == []
    found = client.get(f"/api/buyers?q={world.a.order_id}").get_json()["buyers"]
    assert [b["conversation_id"] for b in found] == [world.a.conversation_id]


def test_sidebar_events_reach_only_the_buyers_conversations(app, world, sock):  # noqa: F811
    agent_a, agent_b = sock("agent_a"), sock("agent_b")
    agent_a.ok("conversation.open", {"conversation_id": world.a.conversation_id})
    agent_b.ok("conversation.open", {"conversation_id": world.b.conversation_id})
    agent_a.received(), agent_b.received()
    with app.app_context():
        events.emit(
            events.after_sale_changed,
            world.a.shop_id,
            after_sale_pk=world.a.after_sale_pk,
            after_sale_order_id=world.a.after_sale_order_id,
            status="MERCHANT_REFUND_SUCCESS",
            type="REFUND",
            created=False,
        )
        events.emit(
            events.order_changed,
            world.a.shop_id,
            order_pk=world.a.order_pk,
            order_id=world.a.order_id,
            status=30,
            created=False,
        )
        db.session.remove()
    got = agent_a.received("sidebar.changed")
    assert [(e["reason"], e["order_id"]) for e in got] == [
        ("after_sale", world.a.order_id),
        ("order", world.a.order_id),
    ]
    assert got[0]["after_sale_order_id"] == world.a.after_sale_order_id
    assert agent_b.received("sidebar.changed") == []


def test_the_same_buyer_in_another_shop_hears_about_it(app, world, sock):  # noqa: F811
    from app.models import Customer, Order

    with app.app_context():
        db.session.get(Customer, world.b.customer_id).unionid = "u_A"
        db.session.get(Order, world.a.order_pk).unionid = "u_A"
        db.session.commit()
        db.session.remove()
    agent_b = sock("agent_b")
    agent_b.ok("conversation.open", {"conversation_id": world.b.conversation_id})
    with app.app_context():
        events.emit(
            events.order_changed,
            world.a.shop_id,
            order_pk=world.a.order_pk,
            order_id=world.a.order_id,
            status=30,
            created=False,
        )
        db.session.remove()
    # Re-read the sidebar (scoped to agent_b's shops); the event names nothing of shop A.
    assert agent_b.received("sidebar.changed") == [{"reason": "other_shop"}]


def _buyer(app, order_pk: int) -> tuple[str, str | None]:
    from app.models import Order

    with app.app_context():
        order = db.session.get(Order, order_pk)
        found = order.openid, order.unionid
        db.session.remove()
    return found


def test_a_change_that_names_its_buyer_is_announced_without_reading_the_buyer(app, world, sock):  # noqa: F811
    """The ingest names the buyer in its signals: a burst of changes costs no lookups for the sidebar."""
    agent_a = sock("agent_a")
    agent_a.ok("conversation.open", {"conversation_id": world.a.conversation_id})
    agent_a.received()
    openid, unionid = _buyer(app, world.a.order_pk)
    read: list[str] = []

    def count(conn, cursor, statement, *_):
        if any(table in statement for table in ("customers", "conversations", "FROM orders", "FROM after_sales")):
            read.append(statement)

    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", count)
        try:
            events.emit(events.order_changed, world.a.shop_id, order_pk=world.a.order_pk, order_id=world.a.order_id,
                        status=30, created=False, openid=openid, unionid=unionid)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", count)
        db.session.remove()
    assert read == []
    got = agent_a.received("sidebar.changed")
    assert [(e["reason"], e["order_id"]) for e in got] == [("order", world.a.order_id)], "once, not also as other_shop"


def test_closing_the_conversation_stops_its_sidebar_events(app, world, sock):  # noqa: F811
    agent_a = sock("agent_a")
    agent_a.ok("conversation.open", {"conversation_id": world.a.conversation_id})
    agent_a.ok("conversation.close", {"conversation_id": world.a.conversation_id})
    agent_a.received()
    with app.app_context():
        events.emit(events.order_changed, world.a.shop_id, order_pk=world.a.order_pk, order_id=world.a.order_id,
                    status=30, created=False)
        db.session.remove()
    assert agent_a.received("sidebar.changed") == []
