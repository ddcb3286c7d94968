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


def _run_backtest(app, shop_id: int, rule_id: int | None = None, definition: dict | None = None) -> backtest.Result:
    with app.app_context():
        rule = db.session.get(Rule, rule_id) if rule_id else None
        result = backtest.run(db.session.get(Shop, shop_id), definition or engine.default_template(), rule=rule)
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

    after = _run_backtest(app, desk.shop_id, rule_id)  # the saved rule's own backtest
    assert {c.after_sale_pk for c in after.cases} == picked and after.amount_fen == before.amount_fen
    assert after.taken_earlier == 0


def test_cases_an_earlier_rule_takes_are_not_counted_for_a_later_one(app, rules_shop):
    desk, platform, sim_shop = rules_shop, rules_shop.platform, rules_shop.sim_shop
    for hours in (0.5, 1, 2):
        order_id = desk.order()
        record = platform.open_after_sale(sim_shop, order_id, "REFUND")
        _paid_before_request(app, desk.shop_id, desk.fetch_after_sale(record["after_sale_order_id"]), hours)
    # Live, the first enabled rule that matches acts: a hand-to-people rule for refunds under 1.5 h.
    early = {"trigger": "aftersale.created",
             "conditions": [{"field": "hours_since_paid", "op": "lte", "value": 1.5}],
             "actions": [{"kind": "route_to_human", "text": "先人工看看"}]}
    first = add_rule(app, desk.shop_id, early, position=0)
    later = add_rule(app, desk.shop_id, enabled=False, position=1)
    result = _run_backtest(app, desk.shop_id, later)
    assert (result.evaluated, result.taken_earlier, result.matched) == (3, 2, 1)
    assert result.amount_fen == 19900
    alone = _run_backtest(app, desk.shop_id, first, engine.default_template())
    assert (alone.taken_earlier, alone.matched) == (0, 3), "nothing is placed before the first rule"


def test_a_case_never_seen_is_judged_on_the_order_as_it_was_when_the_buyer_asked(app, rules_shop):
    """Backtesting before any rule ran: an order shipped after the refund request was not shipped then."""
    desk, platform, sim_shop = rules_shop, rules_shop.platform, rules_shop.sim_shop
    order_id = desk.order()
    record = platform.open_after_sale(sim_shop, order_id, "REFUND")
    pk = desk.fetch_after_sale(record["after_sale_order_id"])
    _paid_before_request(app, desk.shop_id, pk, 1)
    with app.app_context():  # shipped an hour after the buyer asked (stored now: status 30)
        after_sale = db.session.get(AfterSale, pk)
        order = db.session.scalar(sa.select(Order).where(Order.order_id == after_sale.order_id))
        order.status, order.shipped_at = 30, after_sale.platform_created_at + timedelta(hours=1)
        db.session.commit()
        db.session.remove()
    result = _run_backtest(app, desk.shop_id)
    assert [c.after_sale_pk for c in result.cases] == [pk], "not shipped when asked: the default rule matches"


def test_status_when_asked():
    asked = "2026-11-30T10:00:00+00:00"
    paid, before, after = "2026-11-30T09:00:00+00:00", "2026-11-30T09:30:00+00:00", "2026-11-30T11:00:00+00:00"
    assert backtest.status_when_asked(30, paid, after, asked) == 20
    assert backtest.status_when_asked(30, paid, before, asked) == 30
    assert backtest.status_when_asked(250, paid, None, asked) == 20, "closed by the refund since"
    assert backtest.status_when_asked(250, None, None, asked) == 250, "never paid: cancelled unpaid"
    assert backtest.status_when_asked(100, paid, before, asked) == 100
