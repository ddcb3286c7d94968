"""A livestream burst with 25% after-sales, pushed over real HTTP to the desk's webhook, the inbox and
outbox workers running, the default rule "refund within 4 hours if not shipped" on: every eligible
case is approved exactly once (the simulator receives one acceptapply for it), no ineligible one is
(returns, and refunds of orders already shipped), even with a fifth of the pushes delivered twice."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import RuleDecision
from app.platform.simulator.scenario import Burst
from tests.platform.conftest import desk, pushing_shop, wait_until  # noqa: F401 (fixtures)
from tests.rules.conftest import ACCEPT, add_rule


def test_burst_with_the_default_rule_approves_each_eligible_case_once(app, simulator, pushing_shop):  # noqa: F811
    shop_id, sim_shop = pushing_shop
    add_rule(app, shop_id)
    sim_shop.faults.update(duplicate_push_rate=0.2, seed=7)
    burst = Burst(simulator.platform, sim_shop, orders=160, seconds=4, after_sale_rate=0.25, message_rate=0.1,
                  return_share=0.3, ship_rate=0.2, seed=11)
    burst.start()
    assert burst.done.wait(60)
    with simulator.platform.lock:
        records = {aid: dict(r) for aid, r in sim_shop.after_sales.items()}
    eligible = {aid for aid, r in records.items() if r["type"] == "REFUND" and r["order_id"] not in burst.shipped}
    ineligible = set(records) - eligible
    assert len(records) == len(burst.after_sales) and 25 <= len(records) <= 60, len(records)
    assert eligible and ineligible

    def refunded() -> set[str]:
        with simulator.platform.lock:
            return {aid for aid, r in sim_shop.after_sales.items() if r["status"] == "MERCHANT_REFUND_SUCCESS"}

    assert wait_until(lambda: refunded() >= eligible, timeout=90), f"{len(eligible - refunded())} not refunded"
    # Give late duplicates and re-evaluations their chance to do something wrong.
    wait_until(lambda: False, timeout=2)
    accepted = [c[2]["after_sale_order_id"] for c in simulator.platform.calls(sim_shop, ACCEPT) if c[3] == 0]
    assert sorted(accepted) == sorted(eligible), "each eligible case once, nothing else"
    assert refunded() == eligible
    with app.app_context():
        outcomes = db.session.execute(
            sa.select(RuleDecision.outcome, sa.func.count()).group_by(RuleDecision.outcome)
        ).all()
        db.session.remove()
    counts = dict(outcomes)
    assert counts.get("approved") == len(eligible)
    assert counts.get("no_match") == len(ineligible)
    assert set(counts) == {"approved", "no_match"}
