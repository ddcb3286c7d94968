"""What agents and supervisors see on each page, with real data."""

from __future__ import annotations

import re

from app.extensions import db
from app.models import Conversation, Customer, Message, MessageDirection, SenderKind


def test_console_lists_conversations_and_opens_one(world, login):
    client = login("agent_a")
    inbox = client.get("/").get_data(as_text=True)  # "mine" by default
    assert world.a.nickname in inbox and f"/conversations/{world.a.conversation_id}" in inbox
    page = client.get(f"/conversations/{world.a.conversation_id}").get_data(as_text=True)
    assert world.a.message_text in page and "回复A：今天发货" in page
    assert f'<div class="bubble">{world.a.message_text}</div>' in page, "no stray whitespace in pre-wrap bubbles"
    assert world.a.order_id in page and "商品A" in page and "¥129.00" in page and "待发货" in page
    assert "黑色" in page, "SKU attributes show beside the item"


def test_inbox_filters(app, world, login):
    client = login("agent_a")
    assert world.a.nickname not in client.get("/?view=unassigned").get_data(as_text=True)
    assert world.a.nickname not in client.get("/?view=resolved").get_data(as_text=True)
    assert world.a.nickname in client.get("/?view=all&q=买家A").get_data(as_text=True)
    assert world.a.nickname not in client.get("/?view=all&q=nobody").get_data(as_text=True)
    assert client.get("/?view=bogus").status_code == 200


def test_buyer_text_is_escaped_everywhere(app, world, login):
    evil = '<img src=x onerror="alert(1)">'
    with app.app_context():
        db.session.get(Customer, world.a.customer_id).nickname = evil
        db.session.add(
            Message(
                shop_id=world.a.shop_id,
                conversation_id=world.a.conversation_id,
                direction=MessageDirection.INBOUND,
                sender_kind=SenderKind.CUSTOMER,
                text=f"hi {evil}",
            )
        )
        db.session.commit()
    client = login("agent_a")
    for path in ("/?view=all", f"/conversations/{world.a.conversation_id}"):
        html = client.get(path).get_data(as_text=True)
        assert evil not in html and "&lt;img src=x onerror=" in html


def test_waiting_buyers_carry_a_ticking_clock(app, world, login):
    html = login("agent_a").get("/?view=all").get_data(as_text=True)
    assert re.search(r'class="waiting" data-since="\d{4}-\d\d-\d\dT', html)
    supervisor = login("supervisor_a").get("/sla/").get_data(as_text=True)
    assert world.a.name in supervisor and 'data-since="' in supervisor


def test_resolved_conversations_stop_waiting(app, world, login):
    with app.app_context():
        conversation = db.session.get(Conversation, world.a.conversation_id)
        conversation.status = "resolved"
        db.session.commit()
    client = login("agent_a")
    assert world.a.nickname in client.get("/?view=resolved").get_data(as_text=True)
    assert "data-since" not in client.get("/?view=resolved").get_data(as_text=True)


def test_after_sale_queue_sorts_by_deadline_and_filters_by_type(app, world, login):
    from datetime import timedelta

    from app.models import AfterSale

    with app.app_context():
        urgent = db.session.get(AfterSale, world.b.after_sale_pk)
        urgent.deadline_at = db.session.get(AfterSale, world.a.after_sale_pk).deadline_at - timedelta(hours=5)
        db.session.commit()
    client = login("admin")
    html = client.get("/after-sales/").get_data(as_text=True)
    assert 0 <= html.index(world.b.after_sale_order_id) < html.index(world.a.after_sale_order_id), "nearest first"
    assert world.a.after_sale_order_id not in client.get("/after-sales/?type=RETURN").get_data(as_text=True)
    assert world.a.after_sale_order_id in client.get("/after-sales/?type=REFUND").get_data(as_text=True)


def test_rules_and_addresses_pages_show_their_data(world, login):
    client = login("supervisor_a")
    rules = client.get("/rules/").get_data(as_text=True)
    assert world.a.rule_name in rules and "已关闭" in rules
    addresses = client.get("/return-addresses/").get_data(as_text=True)
    assert world.a.address_name in addresses and "默认退货地址" in addresses


def test_junk_query_arguments_do_not_break_pages(world, login):
    client = login("agent_a")
    for path in (
        "/after-sales/?page=99999999999999999999",
        "/after-sales/?shop=99999999999999999999&page=-3",
        "/?view=all&shop=99999999999999999999",
        "/after-sales/?type=<script>",
    ):
        assert client.get(path).status_code == 200, path


def test_errors_are_pages_in_the_users_language_or_json(world, login):
    client = login("agent_a")
    response = client.get("/conversations/999999")
    assert response.status_code == 404 and "页面不存在" in response.get_data(as_text=True)
    response = client.get("/conversations/999999", headers={"Accept": "application/json"})
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
