"""Depth first: the inbox worker that stored an after-sale push evaluates the rules on it at once, in
its own thread (RULES_EVALUATE_INLINE), through the outbox's claim so that nothing is decided twice;
against the simulator over real HTTP."""

from __future__ import annotations

import json

import sqlalchemy as sa

from app.extensions import db
from app.ingest import inbox
from app.models import OutboxCall, OutboxStatus
from app.rules import live
from tests.rules.conftest import ACCEPT, add_rule, decisions


def _push_after_sale(desk, order_id: str) -> str:
    """The buyer asks; the platform pushes; the desk's inbox works the push (as its workers do)."""
    record = desk.platform.open_after_sale(desk.sim_shop, order_id, "REFUND")
    payload = {
        "ToUserName": desk.sim_shop.appid,
        "CreateTime": 1,
        "MsgType": "event",
        "Event": inbox.AFTER_SALE_EVENT,
        "finder_shop_aftersale_status_update": {
            "status": "MERCHANT_PROCESSING",
            "after_sale_order_id": record["after_sale_order_id"],
            "order_id": order_id,
        },
    }
    with desk.app.app_context():
        inbox.receive(desk.shop_id, payload, json.dumps(payload))
        db.session.commit()
        claimed = inbox.claim()
        assert inbox.process_claimed(claimed) == len(claimed.ids) >= 1
        db.session.remove()
    return record["after_sale_order_id"]


def _evaluations(app) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(OutboxCall.status, OutboxCall.idempotency_key)
            .where(OutboxCall.operation == live.OPERATION)
            .order_by(OutboxCall.id)
        ).all()
        db.session.remove()
    return [(status.value if hasattr(status, "value") else status, key) for status, key in rows]


def test_the_inbox_worker_decides_the_case_it_stored(app, rules_shop):
    rule_id = add_rule(app, rules_shop.shop_id)
    _push_after_sale(rules_shop, rules_shop.order())
    # No outbox worker has run: the inbox's thread evaluated, decided and queued the approval.
    [(status, _key)] = _evaluations(app)
    assert status == OutboxStatus.SUCCEEDED.value
    [decision] = decisions(app, rule_id=rule_id)
    assert decision.outcome == "approving" and decision.action_id is not None
    assert rules_shop.calls(ACCEPT) == [], "the approval itself goes through the outbox's urgent lane"
    rules_shop.drain()
    assert len([c for c in rules_shop.calls(ACCEPT) if c[3] == 0]) == 1
    assert decisions(app, rule_id=rule_id)[0].outcome == "approved"


def test_switched_off_the_evaluation_waits_for_the_outbox_workers(app, rules_shop, monkeypatch):
    monkeypatch.setitem(app.config, "RULES_EVALUATE_INLINE", False)
    add_rule(app, rules_shop.shop_id)
    _push_after_sale(rules_shop, rules_shop.order())
    [(status, _key)] = _evaluations(app)
    assert status == OutboxStatus.PENDING.value and decisions(app) == []
    rules_shop.drain()
    assert len(rules_shop.calls(ACCEPT)) == 1 and decisions(app)[0].outcome == "approved"


def test_a_second_case_of_an_order_waits_its_turn(app, rules_shop):
    """The order's first approval is still unfinished: the second evaluation is not claimed inline
    (calls of one order go in order); the outbox works both, in order, each approved once."""
    add_rule(app, rules_shop.shop_id)
    order_id = rules_shop.order()
    _push_after_sale(rules_shop, order_id)
    _push_after_sale(rules_shop, order_id)
    statuses = [status for status, _key in _evaluations(app)]
    assert statuses == [OutboxStatus.SUCCEEDED.value, OutboxStatus.PENDING.value]
    rules_shop.drain()
    assert [status for status, _key in _evaluations(app)] == [OutboxStatus.SUCCEEDED.value] * 2
    outcomes = sorted(d.outcome for d in decisions(app))
    # The second refund of the order meets the platform's one-per-minute limit: deferred, not lost.
    assert outcomes[0] == "approved" and outcomes[1] in ("approved", "approving")


def test_claim_one_takes_a_call_once_and_only_when_due(app, rules_shop, monkeypatch):
    from app import outbox

    add_rule(app, rules_shop.shop_id)
    monkeypatch.setitem(app.config, "RULES_EVALUATE_INLINE", False)
    _push_after_sale(rules_shop, rules_shop.order())
    with app.app_context():
        call_id = db.session.scalar(sa.select(OutboxCall.id).where(OutboxCall.operation == live.OPERATION))
        first = outbox.claim_one(call_id)
        assert first.ids == [call_id]
        assert outbox.claim_one(call_id).ids == [], "in flight: nobody else takes it"
        assert outbox.claim().ids == [], "nor a batch claim while its lease runs"
        assert outbox.process_claimed(first) == 1
        assert outbox.claim_one(call_id).ids == [], "done: nothing to take"
        db.session.remove()


def test_a_failure_while_evaluating_at_once_leaves_the_case_to_the_workers(app, rules_shop, monkeypatch):
    """The inline part breaks (here: a statement that fails, leaving PostgreSQL's transaction
    aborted): the inbox's next event is still handled, and the outbox workers decide both cases."""
    from app import outbox

    add_rule(app, rules_shop.shop_id)
    first, second = rules_shop.order(), rules_shop.order(openid="o_buyer_2")

    def broken_claim_one(call_id):
        db.session.execute(sa.text("SELECT * FROM no_such_table"))

    monkeypatch.setattr(outbox, "claim_one", broken_claim_one)
    with app.app_context():
        for order_id in (first, second):
            record = rules_shop.platform.open_after_sale(rules_shop.sim_shop, order_id, "REFUND")
            payload = {"Event": inbox.AFTER_SALE_EVENT, "CreateTime": 1, "finder_shop_aftersale_status_update": {
                "status": "MERCHANT_PROCESSING", "after_sale_order_id": record["after_sale_order_id"],
                "order_id": order_id}}
            inbox.receive(rules_shop.shop_id, payload, json.dumps(payload))
        db.session.commit()
        claimed = inbox.claim(limit=2)
        assert len(claimed.ids) == 2, "both in one batch: the second comes after the failure"
        assert inbox.process_claimed(claimed) == 2
        db.session.remove()
    assert [status for status, _key in _evaluations(app)] == [OutboxStatus.PENDING.value] * 2
    monkeypatch.undo()
    rules_shop.drain()
    assert len([c for c in rules_shop.calls(ACCEPT) if c[3] == 0]) == 2
    assert sorted(d.outcome for d in decisions(app)) == ["approved", "approved"]


def test_a_case_that_changed_after_the_inbox_stored_it_is_not_approved_on_the_stored_state(
    app, rules_shop, monkeypatch
):
    """The inline evaluation decides on the rows the inbox has just stored, not read again. If
    another worker stores a newer state meanwhile (here: the buyer withdrew the request), the
    approval's locked read sees it and nothing is sent: the decision is handed to people instead."""
    from app.models import AfterSale, AfterSaleAction, AfterSaleStatus

    rule_id = add_rule(app, rules_shop.shop_id)
    real_enqueue = live.enqueue_evaluation

    def withdrawn_meanwhile(shop_id, trigger, subject_kind, subject_id, *rest):
        with rules_shop.platform.lock:
            for record in rules_shop.sim_shop.after_sales.values():
                record["status"] = AfterSaleStatus.USER_CANCELD.value
        with db.engine.begin() as conn:  # the other worker's commit of the withdrawal's push
            conn.execute(sa.update(AfterSale.__table__).where(AfterSale.__table__.c.id == int(subject_id))
                         .values(status=AfterSaleStatus.USER_CANCELD.value))
        return real_enqueue(shop_id, trigger, subject_kind, subject_id, *rest)

    monkeypatch.setattr(live, "enqueue_evaluation", withdrawn_meanwhile)
    _push_after_sale(rules_shop, rules_shop.order())
    rules_shop.drain()
    [decision] = decisions(app, rule_id=rule_id)
    assert decision.outcome == "escalated" and decision.error.startswith("forbidden_transition")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AfterSaleAction)) == 0
        db.session.remove()
    assert rules_shop.calls(ACCEPT) == []
