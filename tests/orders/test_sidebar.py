"""The order sidebar beside a conversation: what it shows (as the platform has it), which actions it
offers, the same buyer in the merchant's other shops, a bounded number of queries, finding a buyer,
the full address on request (audited, within the quota) and the order card."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import (
    AfterSaleAction,
    AuditLog,
    Conversation,
    Customer,
    Message,
    Order,
    OrderItem,
    Role,
    Shop,
)
from app.orders import addresses, cards
from tests.factories import make_user
from tests.orders.conftest import request_id


def open_conversation(app, shop_id: int, openid: str, buyer_wrote: bool = True) -> int:
    with app.app_context():
        customer = db.session.scalar(sa.select(Customer).where(Customer.shop_id == shop_id, Customer.openid == openid))
        if customer is None:
            customer = Customer(shop_id=shop_id, openid=openid, nickname="小鱼儿")
            db.session.add(customer)
            db.session.flush()
        customer.nickname = customer.nickname or "小鱼儿"
        conversation = Conversation(
            shop_id=shop_id,
            customer_id=customer.id,
            last_message_at=utcnow(),
            last_buyer_message_at=utcnow() if buyer_wrote else None,
        )
        db.session.add(conversation)
        db.session.commit()
        found = conversation.id
        db.session.remove()
    return found


def sidebar(client, conversation_id: int, page: int = 1) -> str:
    response = client.get(f"/conversations/{conversation_id}/sidebar" + (f"?page={page}" if page > 1 else ""))
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_orders_newest_first_as_the_platform_has_them(app, desk_shop, login):
    older = desk_shop.order()
    newer_placed = desk_shop.platform.place_order(
        desk_shop.sim_shop,
        "o_buyer_1",
        [
            {
                "product_id": "10000202",
                "sku_id": "20000201",
                "title": "保温杯 316不锈钢 500ml",
                "sale_price": 8900,
                "real_price": 7990,
                "sku_cnt": 2,
                "thumb_img": "https://img.example/cup.jpg",
                "sku_attrs": [{"attr_key": "容量", "attr_value": "500ml"}],
            }
        ],
    )
    newer = newer_placed["order_id"]
    with desk_shop.platform.lock:  # the platform's clock has one-second steps: make the order clear
        desk_shop.sim_shop.orders[newer]["create_time"] += 5
    desk_shop.platform.ship_order(desk_shop.sim_shop, newer)
    desk_shop.fetch_order(newer)
    conversation_id = open_conversation(app, desk_shop.shop_id, "o_buyer_1")
    html = sidebar(login("li"), conversation_id)
    assert html.index(newer) < html.index(older), "newest first"
    assert "已发货" in html  # status in words (30: shipped)
    assert "¥79.90" in html and "¥89.00" in html and "× 2" in html  # yuan from fen; sale price struck
    assert "容量: 500ml" in html and "颜色: 驼色" in html
    assert 'src="https://img.example/cup.jpg"' in html
    waybill = desk_shop.sim_shop.orders[newer]["order_detail"]["delivery_info"]["delivery_product_info"][0][
        "waybill_id"
    ]
    assert waybill in html and "顺丰速运" in html
    assert "林*" in html and "139****5678" in html, "masked address"
    assert "13912345678" not in html, "never the full phone unless asked"
    assert html.count("data-send-order=") == 2


def test_after_sales_show_type_status_amount_reason_deadline_and_allowed_actions(app, desk_shop, login):
    _, guangzhou_id = desk_shop.address("广州退货仓")
    desk_shop.bind(guangzhou_id)
    order_id = desk_shop.order()
    desk_shop.after_sale(order_id, "RETURN", reason="尺码不合适")
    conversation_id = open_conversation(app, desk_shop.shop_id, "o_buyer_1")
    html = sidebar(login("li"), conversation_id)
    assert "退货退款" in html and "¥199.00" in html and "尺码不合适" in html
    assert re.search(r'data-deadline="[0-9T:\-+.]+"', html)
    assert 'data-act="approve_return"' in html and "data-reject-open" in html
    assert 'data-act="approve_refund"' not in html and 'data-act="confirm_receipt"' not in html
    selected = re.search(r'<option value="(\d+)" data-address-id="([^"]+)" selected>', html)
    assert selected and selected.group(2) == guangzhou_id, "prefilled from the SKU binding"
    assert 'data-address-source="sku"' in html


def test_a_pending_action_replaces_the_buttons(app, desk_shop, login):
    pk = desk_shop.after_sale(desk_shop.order(), "REFUND")
    conversation_id = open_conversation(app, desk_shop.shop_id, "o_buyer_1")
    client = login("li")
    client.post(f"/api/after-sales/{pk}/actions", json={"kind": "approve_refund", "request_id": request_id()})
    html = sidebar(client, conversation_id)
    assert 'data-action-state="pending"' in html and "data-act=" not in html
    desk_shop.drain()
    html = sidebar(client, conversation_id)
    assert 'data-action-state="succeeded"' in html and "客服小李" in html
    assert "退款成功" in html and "data-act=" not in html, "refunded: nothing left to offer"


def test_the_same_buyer_in_another_shop_is_marked_and_only_for_its_agents(app, world, login):
    with app.app_context():
        a, b = world.a, world.b
        customer_b = db.session.get(Customer, b.customer_id)
        customer_b.unionid = "u_A"  # shop B's buyer is shop A's buyer (same unionid)
        db.session.get(Order, b.order_pk).unionid = "u_A"
        make_user("both", Role.AGENT, [db.session.get(Shop, a.shop_id), db.session.get(Shop, b.shop_id)])
        db.session.commit()
        db.session.remove()
    html = sidebar(login("both"), world.a.conversation_id)
    assert world.a.order_id in html and world.b.order_id in html
    assert "is-other-shop" in html and world.b.name in html
    assert html.count("data-send-order=") == 1, "an order card only for the conversation's own shop"
    html = sidebar(login("agent_a"), world.a.conversation_id)
    assert world.b.order_id not in html and world.b.name not in html


def test_the_sidebar_makes_the_same_queries_for_1_or_30_orders(app, desk_shop, login):
    counts = {}
    client = login("li")
    for n, openid in ((1, "o_few"), (30, "o_many")):
        for _ in range(n):
            pk = desk_shop.after_sale(desk_shop.order(openid), "RETURN")
        assert pk
        conversation_id = open_conversation(app, desk_shop.shop_id, openid)
        statements = []

        def count(conn, cursor, statement, *args, seen=statements):
            seen.append(statement)

        with app.app_context():
            sa.event.listen(db.engine, "before_cursor_execute", count)
            try:
                html = sidebar(client, conversation_id)
            finally:
                sa.event.remove(db.engine, "before_cursor_execute", count)
        counts[n] = len(statements)
        assert html.count('class="order-card') == min(n, 10)
    assert counts[30] == counts[1], counts
    assert 'data-sidebar-page="2"' in sidebar(client, conversation_id)
    assert sidebar(client, conversation_id, page=2).count('class="order-card') == 10


def test_find_a_buyer_by_order_id_phone_tail_or_nickname(app, desk_shop, login):
    order_id = desk_shop.order()
    conversation_id = open_conversation(app, desk_shop.shop_id, "o_buyer_1")
    client = login("li")
    by_order = client.get(f"/api/buyers?q={order_id}").get_json()["buyers"]
    assert [(b["openid"], b["conversation_id"], b["matched"]) for b in by_order] == [
        ("o_buyer_1", conversation_id, "order_id")
    ]
    by_phone = client.get("/api/buyers?q=5678").get_json()["buyers"]
    assert [b["order_id"] for b in by_phone] == [order_id] and by_phone[0]["matched"] == "phone_tail"
    by_name = client.get("/api/buyers?q=鱼儿").get_json()["buyers"]
    assert [b["customer_id"] for b in by_name] and by_name[0]["matched"] == "nickname"
    assert client.get("/api/buyers?q=0000").get_json()["buyers"] == []
    assert client.get("/api/buyers?q=").get_json()["buyers"] == []


def test_the_full_address_is_decoded_once_audited_and_within_the_quota(app, desk_shop, login, monkeypatch):
    order_pk = desk_shop.fetch_order(desk_shop.order())
    client = login("li")
    first = client.post(f"/api/orders/{order_pk}/address", json={})
    assert first.status_code == 200
    data = first.get_json()
    assert data["address"]["user_name"] == "林晓" and data["address"]["tel_number"] == "13912345678"
    assert data["decoded_now"] is True and data["decodes_left"] == 29
    again = client.post(f"/api/orders/{order_pk}/address", json={}).get_json()
    assert again["decoded_now"] is False and again["address"] == data["address"]
    assert len(desk_shop.calls("/channels/ec/order/sensitiveinfo/decode")) == 1, "the desk's copy: no quota used"
    with app.app_context():
        trail = db.session.execute(sa.select(AuditLog.action, AuditLog.user_id, AuditLog.details)).all()
        decoded = [t for t in trail if t[0] in (addresses.DECODED, addresses.VIEWED)]
        assert [t[0] for t in decoded] == [addresses.DECODED, addresses.VIEWED] and all(t[1] for t in decoded)
        assert "13912345678" not in str(trail), "the address itself is never audited"
        stored = db.session.execute(sa.text("SELECT decoded_address FROM orders")).scalar()
        assert stored and "林晓" not in stored, "encrypted at rest"
        db.session.remove()
    monkeypatch.setitem(app.config, "ADDRESS_DECODE_DAILY_QUOTA", 1)
    other_pk = desk_shop.fetch_order(desk_shop.order("o_buyer_2"))
    refused = client.post(f"/api/orders/{other_pk}/address", json={})
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "decode_quota"
    assert "明天" in refused.get_json()["error"]["message"] or "午夜" in refused.get_json()["error"]["message"]
    assert len(desk_shop.calls("/channels/ec/order/sensitiveinfo/decode")) == 1, "refused before the platform"


def test_the_platforms_decode_quota_is_explained(app, desk_shop, login):
    order_pk = desk_shop.fetch_order(desk_shop.order())
    with desk_shop.platform.lock:
        desk_shop.sim_shop.decodes = {day: 30 for day in _days()}
    refused = login("li").post(f"/api/orders/{order_pk}/address", json={})
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "decode_quota"


def _days() -> list[str]:
    import time

    now = time.time()
    return [time.strftime("%Y%m%d", time.gmtime(now + 8 * 3600 + d)) for d in (-86400, 0, 86400)]


def test_the_order_card_is_sent_once_and_audited(app, desk_shop, login):
    order_id = desk_shop.order()
    order_pk = desk_shop.fetch_order(order_id)
    desk_shop.platform.buyer_message(desk_shop.sim_shop, "o_buyer_1", "我的订单呢")  # opens the reply window
    conversation_id = open_conversation(app, desk_shop.shop_id, "o_buyer_1")
    client = login("li")
    rid = request_id()
    body = {"conversation_id": conversation_id, "request_id": rid}
    first = client.post(f"/api/orders/{order_pk}/card", json=body)
    again = client.post(f"/api/orders/{order_pk}/card", json=body)
    assert first.status_code == again.status_code == 201
    assert first.get_json()["message"]["id"] == again.get_json()["message"]["id"]
    assert first.get_json()["message"]["msg_type"] == "order_share"
    desk_shop.drain()
    sent = [m for m in desk_shop.sim_shop.sent if m["msg_type"] == "order_share"]
    assert [(m["order_share"], m["request_id"]) for m in sent] == [({"order_id": order_id}, rid)]
    with app.app_context():
        entries = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == cards.CARD_SENT)).all()
        assert len(entries) == 1 and entries[0].details["order_id"] == order_id and entries[0].user_id
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1
        db.session.remove()


def test_an_order_card_outside_the_reply_window_is_refused(app, desk_shop, login):
    order_pk = desk_shop.fetch_order(desk_shop.order())
    conversation_id = open_conversation(app, desk_shop.shop_id, "o_buyer_1", buyer_wrote=False)
    answer = login("li").post(
        f"/api/orders/{order_pk}/card", json={"conversation_id": conversation_id, "request_id": request_id()}
    )
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "reply_window"
    with app.app_context():
        assert (
            db.session.scalar(
                sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == cards.CARD_SENT)
            )
            == 0
        )
        db.session.remove()


def test_failed_actions_show_why_in_the_sidebar(app, desk_shop, login):
    pk = desk_shop.after_sale(desk_shop.order(), "REFUND")
    conversation_id = open_conversation(app, desk_shop.shop_id, "o_buyer_1")
    desk_shop.sim_shop.faults.update(api_errors={"/channels/ec/aftersale/acceptapply": 48001})
    client = login("li")
    client.post(f"/api/after-sales/{pk}/actions", json={"kind": "approve_refund", "request_id": request_id()})
    desk_shop.drain()
    with app.app_context():
        assert db.session.scalar(sa.select(AfterSaleAction.error_code)) == "not_authorised"
        db.session.remove()
    html = sidebar(client, conversation_id)
    assert 'data-action-state="failed"' in html and "48001" in html
    assert 'data-act="approve_refund"' in html, "the agent may try again once the shop is fixed"


def test_times_are_in_the_shops_time_zone(app, desk_shop, login):
    desk_shop.order()
    with app.app_context():
        order = db.session.scalar(sa.select(Order))
        order.platform_created_at = utcnow().replace(hour=16, minute=30, second=0, microsecond=0) - timedelta(days=1)
        created = order.platform_created_at
        db.session.commit()
        db.session.remove()
    conversation_id = open_conversation(app, desk_shop.shop_id, "o_buyer_1")
    html = sidebar(login("li"), conversation_id)
    local = (created + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M")
    assert local in html  # Asia/Shanghai, UTC+8


def test_items_keep_their_order(app, world, login):
    with app.app_context():
        order = db.session.get(Order, world.a.order_pk)
        order.items.append(OrderItem(shop_id=world.a.shop_id, product_id="p2", sku_id="s2", title="第二件", quantity=3))
        db.session.commit()
        db.session.remove()
    html = sidebar(login("agent_a"), world.a.conversation_id)
    assert html.index("商品A") < html.index("第二件") and "× 3" in html
