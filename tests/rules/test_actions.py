"""What rules do besides refunds, against the simulator: approve a return with the resolved return
address (the SKU's binding, else the shop default), hand a case to people with a note (and when no
return address can be found), reject only once the shop allowed it."""

from __future__ import annotations

from app.models import BindingScope
from tests.rules.conftest import add_rule, after_sale_row, decisions, request_after_sale, set_settings

ACCEPT = "/channels/ec/aftersale/acceptapply"
REJECT = "/channels/ec/aftersale/rejectapply"
RETURNS = {
    "trigger": "aftersale.created",
    "conditions": [{"field": "after_sale_type", "op": "in", "value": ["RETURN"]},
                   {"field": "hours_since_paid", "op": "lte", "value": 24}],
    "actions": [{"kind": "approve_return"}],
}


def test_a_return_is_approved_with_the_address_bound_to_its_sku(app, rules_shop):
    _pk, guangzhou = rules_shop.address("广州退货仓")
    rules_shop.bind(guangzhou, BindingScope.SKU)
    add_rule(app, rules_shop.shop_id, RETURNS)
    pk = request_after_sale(rules_shop, rules_shop.order(), "RETURN")
    rules_shop.drain()
    calls = [c for c in rules_shop.calls(ACCEPT) if c[3] == 0]
    assert [(c[2].get("address_id"), c[2].get("accept_type")) for c in calls] == [(guangzhou, 1)]
    assert [d.outcome for d in decisions(app)] == ["approved"]
    row = after_sale_row(app, pk)
    assert (row.status, row.return_address_source) == ("USER_WAIT_RETURN", "sku")


def test_without_any_return_address_the_case_goes_to_people(app, rules_shop):
    with rules_shop.platform.lock:  # the shop's warehouses are no return addresses any more
        for address in rules_shop.sim_shop.addresses.values():
            address["recv_addr"] = False
            address["default_recv"] = False
    from app.extensions import db
    from app.ingest import pollers
    from app.models import Shop

    with app.app_context():
        pollers.sync_addresses(db.session.get(Shop, rules_shop.shop_id))
        db.session.remove()
    add_rule(app, rules_shop.shop_id, RETURNS)
    pk = request_after_sale(rules_shop, rules_shop.order(), "RETURN")
    rules_shop.drain()
    assert rules_shop.calls(ACCEPT) == []
    [decision] = decisions(app)
    assert decision.outcome == "escalated" and decision.error.startswith("address_required")
    assert "自动规则无法审批" in after_sale_row(app, pk).human_note


def test_route_to_human_puts_the_note_on_the_case(app, rules_shop):
    add_rule(app, rules_shop.shop_id, {
        "trigger": "aftersale.created",
        "conditions": [{"field": "refund_amount_fen", "op": "gte", "value": 10000}],
        "actions": [{"kind": "route_to_human", "text": "大额退款，请主管审核"}],
    })
    pk = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    rules_shop.drain()
    assert rules_shop.calls(ACCEPT) == []
    assert [d.outcome for d in decisions(app)] == ["acted"]
    assert after_sale_row(app, pk).human_note == "大额退款，请主管审核"


def test_a_rule_rejects_only_once_the_shop_allows_it(app, rules_shop):
    rejecting = {
        "trigger": "aftersale.created",
        "conditions": [{"field": "order_status", "op": "in", "value": [30]}],
        "actions": [{"kind": "reject", "reason_type": 1, "text": "商品已发出"}],
    }
    add_rule(app, rules_shop.shop_id, rejecting)
    shipped = rules_shop.order()
    rules_shop.platform.ship_order(rules_shop.sim_shop, shipped)
    rules_shop.fetch_order(shipped)
    refused_pk = request_after_sale(rules_shop, shipped, "REFUND")
    rules_shop.drain()
    assert rules_shop.calls(REJECT) == [], "not allowed: nothing rejected"
    [refused] = decisions(app)
    assert refused.platform_response["actions"] == [
        {"kind": "reject", "ok": False, "reason": "auto_reject_not_allowed"}
    ]
    assert (refused.outcome, refused.error) == ("escalated", "reject refused: auto_reject_not_allowed")
    assert "自动规则未能拒绝" in after_sale_row(app, refused_pk).human_note, "people decide the case"

    set_settings(app, rules_shop.shop_id, allow_auto_reject=True)
    other = rules_shop.order()
    rules_shop.platform.ship_order(rules_shop.sim_shop, other)
    rules_shop.fetch_order(other)
    pk = request_after_sale(rules_shop, other, "REFUND")
    rules_shop.drain()
    assert [(c[2]["reject_reason_type"], c[3]) for c in rules_shop.calls(REJECT)] == [(1, 0)]
    assert after_sale_row(app, pk).status == "MERCHANT_REJECT_REFUND"
