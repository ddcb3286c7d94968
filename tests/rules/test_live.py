"""The live path against the simulator over real HTTP: an after-sale push -> evaluation -> decision ->
acceptapply once; kill switch, dry run, caps, duplicates, retries then escalation."""

from __future__ import annotations

from tests.rules.conftest import ACCEPT, add_rule, after_sale_row, decisions, request_after_sale


def test_default_rule_refunds_an_unshipped_order_once(app, rules_shop):
    rule_id = add_rule(app, rules_shop.shop_id)
    pk = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    rules_shop.drain()
    calls = rules_shop.calls(ACCEPT)
    assert len(calls) == 1
    [decision] = decisions(app, rule_id=rule_id)
    assert decision.outcome == "approved" and decision.amount_fen == 19900
    assert decision.platform_response["result"] == "succeeded"
    assert decision.inputs["hours_since_paid"] is not None and decision.trace["matched"] is True
    assert after_sale_row(app, pk).status == "MERCHANT_REFUND_SUCCESS"
