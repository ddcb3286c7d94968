"""The outbox's two lanes: calls people wait on (an agent's reply, an approval) are claimed before
the rule engine's evaluations queued earlier, without breaking a subject's order."""

from __future__ import annotations

from app import outbox
from app.desk.conversations import SEND_OPERATION
from app.extensions import db
from app.orders.actions import OPERATION as ACTION_OPERATION
from app.rules.live import OPERATION as EVALUATE
from tests.factories import make_shop
from tests.statements import statements


def _queue(shop_id: int, operation: str, key: str, subject: tuple[str, str]) -> int:
    call = outbox.enqueue(shop_id, operation, {"test": key}, key, subject=subject)
    db.session.commit()
    return call.id


def test_a_reply_and_an_approval_go_before_evaluations_queued_earlier(app):
    with app.app_context():
        shop = make_shop("店")
        db.session.commit()
        evaluations = [_queue(shop.id, EVALUATE, f"e{n}", ("rules", f"after_sale:{n}")) for n in range(3)]
        reply = _queue(shop.id, SEND_OPERATION, "r1", ("conversation", "7"))
        approval = _queue(shop.id, ACTION_OPERATION, "a1", ("order", "o9"))
        assert outbox.claim(1).ids == [reply]
        assert outbox.claim(1).ids == [approval]
        assert outbox.claim(5).ids == evaluations, "the background lane when nothing urgent is due"
        db.session.remove()


def test_an_approval_still_waits_for_the_evaluation_before_it_on_its_order(app):
    with app.app_context():
        shop = make_shop("店")
        db.session.commit()
        evaluation = _queue(shop.id, EVALUATE, "e1", ("order", "o1"))
        approval = _queue(shop.id, ACTION_OPERATION, "a1", ("order", "o1"))
        assert outbox.claim(5).ids == [evaluation], "the order's calls stay in order across lanes"
        assert outbox.claim(5).ids == [], "the approval waits until the evaluation is finished"
        db.session.remove()
        assert approval > evaluation


def test_postgresql_claims_both_lanes_in_one_statement(app):
    """While nothing urgent is due, the same statement takes the evaluations; an empty claim is one
    statement too (SQLite, one process, runs the lanes one after the other)."""
    with app.app_context():
        shop = make_shop("店")
        db.session.commit()
        evaluation = _queue(shop.id, EVALUATE, "e1", ("rules", "after_sale:1"))
        reply = _queue(shop.id, SEND_OPERATION, "r1", ("conversation", "7"))
        lanes = 1 if db.engine.dialect.name == "postgresql" else 2
        taken: list = []
        for expected, statements_expected in (([reply], 1), ([evaluation], lanes), ([], lanes)):
            sent = statements(db.engine, lambda: taken.append(outbox.claim(5)))
            assert taken[-1].ids == expected
            assert len([s for s in sent if s.startswith("UPDATE outbox_calls")]) == statements_expected
        db.session.remove()
