"""What agents and supervisors see on each page, with real data."""

from __future__ import annotations

import re

from app.extensions import db
from app.models import Conversation, Customer


def test_console_lists_conversations_and_opens_one(world, login):
    client = login("agent_a")
    assert client.get("/").status_code == 200
    inbox = client.get("/api/inbox").get_json()  # "mine" by default
    row = next(c for c in inbox["conversations"] if c["id"] == world.a.conversation_id)
    assert row["customer"]["nickname"] == world.a.nickname and row["shop_name"] == world.a.name
    assert row["last_message_preview"] == "回复A：今天发货" and row["replies_left"] == 5
    assert inbox["counts"]["mine"] == 1
    opened = client.get(f"/api/conversations/{world.a.conversation_id}").get_json()
    assert [m["text"] for m in opened["messages"]] == [world.a.message_text, "回复A：今天发货"]
    assert [m["seq"] for m in opened["messages"]] == [1, 2]
    page = client.get(f"/conversations/{world.a.conversation_id}").get_data(as_text=True)
    assert world.a.order_id in page and "商品A" in page and "¥129.00" in page and "待发货" in page
    assert "黑色" in page, "SKU attributes show beside the item"
    fragment = client.get(f"/conversations/{world.a.conversation_id}/sidebar").get_data(as_text=True)
    assert f'data-order-id="{world.a.order_id}"' in fragment and "<html" not in fragment


def _ids(client, query: str) -> list[int]:
    return [c["id"] for c in client.get(f"/api/inbox?{query}").get_json()["conversations"]]


def test_inbox_filters(app, world, login):
    client = login("agent_a")
    assert world.a.conversation_id not in _ids(client, "view=unassigned")
    assert world.a.conversation_id not in _ids(client, "view=resolved")
    assert _ids(client, "view=all&q=买家A") == [world.a.conversation_id]
    assert _ids(client, f"view=all&q={world.a.nickname[:2]}") == [world.a.conversation_id]
    assert _ids(client, "view=all&q=nobody") == []
    assert _ids(client, "view=all&q=%25") == [world.a.conversation_id]  # a wildcard is just text
    assert client.get("/api/inbox?view=bogus").status_code == 200
    assert client.get("/api/inbox?before=junk").status_code == 400


def test_buyer_text_is_escaped_in_pages(app, world, login):
    evil = '<img src=x onerror="alert(1)">'
    with app.app_context():
        db.session.get(Customer, world.a.customer_id).nickname = evil
        db.session.commit()
    client = login("agent_a")
    for path in ("/?view=all", f"/conversations/{world.a.conversation_id}"):
        html = client.get(path).get_data(as_text=True)
        assert evil not in html
    # The API carries it as data; the console puts it in the page with textContent only.
    assert client.get("/api/inbox?view=all").get_json()["conversations"][0]["customer"]["nickname"] == evil


def test_waiting_buyers_carry_a_clock(app, world, login):
    with app.app_context():
        conversation = db.session.get(Conversation, world.a.conversation_id)
        conversation.waiting_since = conversation.last_buyer_message_at
        db.session.commit()
    row = login("agent_a").get("/api/inbox?view=all").get_json()["conversations"][0]
    assert re.match(r"\d{4}-\d\d-\d\dT", row["waiting_since"])
    supervisor = login("supervisor_a").get("/sla/").get_data(as_text=True)
    assert world.a.name in supervisor and 'data-since="' in supervisor


def test_resolved_conversations_stop_waiting(app, world, login):
    with app.app_context():
        conversation = db.session.get(Conversation, world.a.conversation_id)
        conversation.status = "resolved"
        conversation.waiting_since = conversation.last_buyer_message_at
        db.session.commit()
    client = login("agent_a")
    rows = client.get("/api/inbox?view=resolved").get_json()["conversations"]
    assert [r["id"] for r in rows] == [world.a.conversation_id] and rows[0]["waiting_since"] is None


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
