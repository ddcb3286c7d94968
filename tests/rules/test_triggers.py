"""Rules on the other triggers, over real pushes: a buyer message that asks for a refund gets the buyer
tagged and an automatic message (within the automatic share of the 5-in-48h budget); a paid order of a
listed SKU gets its buyer tagged; a message that does not match does nothing."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import Customer, CustomerTag
from app.platform.simulator.scenario import CATALOGUE
from tests.platform.conftest import desk, pushing_shop, wait_until  # noqa: F401 (fixtures)
from tests.rules.conftest import add_rule, decisions

SEND = "/channels/ec/commkf/sendmsg"


def tags(app, shop_id: int, openid: str) -> list[str]:
    with app.app_context():
        found = db.session.scalars(
            sa.select(CustomerTag.tag).join(Customer, Customer.id == CustomerTag.customer_id)
            .where(Customer.shop_id == shop_id, Customer.openid == openid)
        ).all()
        db.session.remove()
    return sorted(found)


def test_a_message_rule_tags_the_buyer_and_answers_once(app, simulator, pushing_shop):  # noqa: F811
    shop_id, sim_shop = pushing_shop
    rule_id = add_rule(app, shop_id, {
        "trigger": "message.received",
        "conditions": [{"field": "message_text", "op": "contains", "value": "退款"}],
        "actions": [{"kind": "tag_buyer", "tag": "想退款"},
                    {"kind": "send_message", "text": "亲，退款申请提交后会自动审核，请放心。"}],
    })
    simulator.platform.buyer_message(sim_shop, "o_refund_buyer", "在吗")
    simulator.platform.buyer_message(sim_shop, "o_refund_buyer", "我想退款")
    assert wait_until(lambda: len(decisions(app, rule_id=rule_id)) == 2)
    assert wait_until(lambda: any(c[3] == 0 for c in simulator.platform.calls(sim_shop, SEND)))
    assert sorted(d.outcome for d in decisions(app, rule_id=rule_id)) == ["acted", "no_match"]
    # The decision is written first; the actions' results land on it once they have all run.
    assert wait_until(lambda: any((d.platform_response or {}).get("actions")
                                  for d in decisions(app, rule_id=rule_id)))
    acted = next(d for d in decisions(app, rule_id=rule_id) if d.outcome == "acted")
    assert [a["kind"] for a in acted.platform_response["actions"]] == ["tag_buyer", "send_message"]
    assert tags(app, shop_id, "o_refund_buyer") == ["想退款"]
    sent = [c[2]["text"]["content"] for c in simulator.platform.calls(sim_shop, SEND) if c[3] == 0]
    assert sent == ["亲，退款申请提交后会自动审核，请放心。"]


def test_an_order_rule_tags_buyers_of_a_listed_sku(app, simulator, pushing_shop):  # noqa: F811
    shop_id, sim_shop = pushing_shop
    add_rule(app, shop_id, {
        "trigger": "order.paid",
        "conditions": [{"field": "sku", "op": "in", "value": ["20000101"]}],
        "actions": [{"kind": "tag_buyer", "tag": "围巾买家"}],
    })
    simulator.platform.place_order(sim_shop, "o_scarf", [dict(CATALOGUE[0], sku_cnt=1)])
    simulator.platform.place_order(sim_shop, "o_cup", [dict(CATALOGUE[2], sku_cnt=1)])
    assert wait_until(lambda: len(decisions(app)) == 2)
    # A decision is committed before its actions run: wait for the tag, not just the decision.
    assert wait_until(lambda: tags(app, shop_id, "o_scarf") == ["围巾买家"])
    assert wait_until(lambda: all(d.outcome != "acted" or (d.platform_response or {}).get("actions")
                                  for d in decisions(app)))
    assert tags(app, shop_id, "o_cup") == []
