"""The backtest replays a rule over stored after-sales with the live path's own facts and engine: on the
same data it picks exactly the cases, and the money, that the live engine then approves; and run again
after those cases were refunded (their orders changed since) it still says the same."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import AfterSale, Order, Rule, Shop
from app.rules import backtest, engine, live
from tests.rules.conftest import ACCEPT, add_rule, decisions


def _paid_before_request(app, shop_id: int, pk: int, hours: float) -> None:
    with app.app_context():
        after_sale = db.session.get(AfterSale, pk)
        order = db.session.scalar(
            sa.select(Order).where(Order.shop_id == shop_id, Order.order_id == after_sale.order_id)
        )
        order.paid_at = after_sale.platform_created_at - timedelta(hours=hours)
        order.platform_created_at = order.paid_at
        db.session.commit()
        db.session.remove()


def _run_backtest(app, shop_id: int) -> backtest.Result:
    with app.app_context():
        result = backtest.run(db.session.get(Shop, shop_id), engine.default_template())
        db.session.remove()
    return result


def test_backtest_equals_live_on_the_same_data(app, rules_shop):
    rule_id = add_rule(app, rules_shop.shop_id, enabled=False)
    desk, platform, sim_shop = rules_shop, rules_shop.platform, rules_shop.sim_shop
    pks = {}
    for name, kind, shipped, hours in (
        ("fresh", "REFUND", False, 0.5),
        ("edge", "REFUND", False, 4 - 1 / 60),
        ("late", "REFUND", False, 4 + 1 / 60),
        ("shipped", "REFUND", True, 1),
        ("return", "RETURN", False, 1),
        ("fresh2", "REFUND", False, 2),
    ):
        order_id = desk.order()
        if shipped:
            platform.ship_order(sim_shop, order_id)
            desk.fetch_order(order_id)
        record = platform.open_after_sale(sim_shop, order_id, kind)
        pks[name] = desk.fetch_after_sale(record["after_sale_order_id"])
        _paid_before_request(app, desk.shop_id, pks[name], hours)
    before = _run_backtest(app, desk.shop_id)
    picked = {c.after_sale_pk for c in before.cases}
    assert picked == {pks["fresh"], pks["edge"], pks["fresh2"]}
    assert (before.evaluated, before.matched, before.amount_fen) == (6, 3, 3 * 19900)

    with app.app_context():  # the supervisor switches it on; the sweep finds the waiting cases
        rule = db.session.get(Rule, rule_id)
        rule.enabled = True
        db.session.commit()
        assert live.sweep() == 6
        db.session.remove()
    desk.drain()
    approved = {int(d.subject_id) for d in decisions(app, outcome="approved")}
    assert approved == picked
    assert sum(d.amount_fen for d in decisions(app, outcome="approved")) == before.amount_fen
    refunded = {c[2]["after_sale_order_id"] for c in desk.calls(ACCEPT) if c[3] == 0}
    assert len(refunded) == 3 == len(desk.calls(ACCEPT))

    after = _run_backtest(app, desk.shop_id)
    assert {c.after_sale_pk for c in after.cases} == picked and after.amount_fen == before.amount_fen
