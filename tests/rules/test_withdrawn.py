"""An approval a rule queued is checked again just before it goes out: it may wait minutes in the
outbox (platform retries, the per-order refund limit) while a supervisor pulls the kill switch or the
buyer changes the amount; then nothing is sent and the case goes to people."""

from __future__ import annotations

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import AfterSale, AfterSaleAction, OutboxCall, OutboxStatus
from tests.rules.conftest import (
    ACCEPT,
    add_rule,
    after_sale_row,
    decisions,
    request_after_sale,
    set_settings,
)


def ok_calls(desk) -> list:
    return [c for c in desk.calls(ACCEPT) if c[3] == 0]


def _approval_waiting(app, shop) -> int:
    """A rule's approval that the platform refused once (busy): it waits for its retry."""
    add_rule(app, shop.shop_id)
    shop.sim_shop.faults.update(api_errors={ACCEPT: -1})
    pk = request_after_sale(shop, shop.order(), "REFUND")
    shop.drain(rounds=2)
    assert ok_calls(shop) == [] and [d.outcome for d in decisions(app)] == ["approving"]
    shop.sim_shop.faults.update(api_errors={})
    return pk


def _retry_now(app, shop) -> None:
    with app.app_context():
        db.session.execute(
            sa.update(OutboxCall).where(OutboxCall.status == OutboxStatus.PENDING).values(next_attempt_at=utcnow())
        )
        db.session.commit()
        db.session.remove()
    shop.drain(rounds=2)


def _action(app) -> AfterSaleAction:
    with app.app_context():
        action = db.session.scalar(sa.select(AfterSaleAction))
        db.session.expunge(action)
        db.session.remove()
    return action


def test_the_kill_switch_stops_an_approval_already_waiting(app, rules_shop):
    pk = _approval_waiting(app, rules_shop)
    calls_before = len(rules_shop.calls(ACCEPT))
    set_settings(app, rules_shop.shop_id, paused=True)
    _retry_now(app, rules_shop)
    assert len(rules_shop.calls(ACCEPT)) == calls_before, "nothing more reached the platform"
    action = _action(app)
    assert (action.state, action.error_code) == ("failed", "withdrawn") and "kill switch" in action.errmsg
    [decision] = decisions(app)
    assert decision.outcome == "escalated"
    assert "自动审批失败" in after_sale_row(app, pk).human_note


def test_a_changed_amount_stops_an_approval_already_waiting(app, rules_shop):
    pk = _approval_waiting(app, rules_shop)
    calls_before = len(rules_shop.calls(ACCEPT))
    with app.app_context():  # the buyer raised the amount (as a re-fetched after-sale would store it)
        db.session.execute(sa.update(AfterSale).where(AfterSale.id == pk).values(refund_amount_fen=99_900))
        db.session.commit()
        db.session.remove()
    _retry_now(app, rules_shop)
    assert len(rules_shop.calls(ACCEPT)) == calls_before
    action = _action(app)
    assert (action.state, action.error_code) == ("failed", "withdrawn") and "amount changed" in action.errmsg


def test_an_unchanged_case_goes_out_after_the_wait(app, rules_shop):
    _approval_waiting(app, rules_shop)
    _retry_now(app, rules_shop)
    assert len(ok_calls(rules_shop)) == 1
    assert [d.outcome for d in decisions(app)] == ["approved"]


def test_an_after_sale_without_an_amount_is_not_approved(app, rules_shop):
    """No known refund amount (a detail without refund_info is stored as 0): the caps and "amount <= X"
    saw nothing, so the rule hands the case to people instead of approving."""
    add_rule(app, rules_shop.shop_id)
    pk = request_after_sale(rules_shop, rules_shop.order(), "REFUND")  # stored, evaluation queued
    with app.app_context():
        db.session.execute(sa.update(AfterSale).where(AfterSale.id == pk).values(refund_amount_fen=0))
        db.session.commit()
        db.session.remove()
    rules_shop.drain()
    assert ok_calls(rules_shop) == []
    [decision] = decisions(app)
    assert decision.outcome == "escalated" and decision.error == "refund amount unknown"
    assert "金额未知" in after_sale_row(app, pk).human_note


def test_an_approval_that_finishes_before_its_decision_names_it_still_settles_the_decision(app, rules_shop):
    """The action may go out (another worker, the retry timer) before the decision row records its id."""
    from app.models import RuleDecision

    _approval_waiting(app, rules_shop)
    with app.app_context():
        db.session.execute(sa.update(RuleDecision).values(action_id=None))
        db.session.commit()
        db.session.remove()
    _retry_now(app, rules_shop)
    assert len(ok_calls(rules_shop)) == 1
    (decision,) = decisions(app)
    assert decision.outcome == "approved" and decision.action_id == _action(app).id
