"""The deadline queue: a breach is known when it falls due (no scan), announced once however many
queues run, and a queue started later picks up the clocks already running."""

from __future__ import annotations

from datetime import timedelta

from app import events
from app.db import utcnow
from app.extensions import db
from app.models import TurnOutcome
from app.sla import timer
from tests.platform.conftest import wait_until
from tests.sla.conftest import set_policy, turns


def test_the_queue_fires_the_warning_and_the_breach_of_a_new_turn(app, desk_world):
    heard = []

    def listener(shop_id, turn, reason):
        heard.append((reason, turn["id"], utcnow()))

    events.sla_changed.connect(listener)
    queue = timer.start(app)
    try:
        with app.app_context():
            set_policy(desk_world.shop_id, threshold_seconds=2, warning_seconds=1)
            conversation = desk_world.buyer("o_timer", utcnow())
            [turn] = turns(conversation)
            turn_id, deadline = turn.id, turn.deadline_at
            db.session.remove()
        # Heard from the buyer-message path directly (no reload): the queue holds both deadlines.
        # (On a slow machine the warning may already be popped and firing, between the heap and the
        # listener: wait for one or the other, well before any reload.)
        assert wait_until(
            lambda: "warn" in [item[-1] for item in queue._heap] or any(r == "warn" for r, *_ in heard), timeout=3
        )
        assert wait_until(lambda: any(r == "breach" for r, *_ in heard), timeout=10)
        with app.app_context():
            assert turns(conversation)[0].outcome == TurnOutcome.BREACHED
        reasons = [r for r, i, _at in heard if i == turn_id]
        assert reasons == ["warn", "breach"]
        breach_heard_at = next(at for r, _i, at in heard if r == "breach")
        assert breach_heard_at >= deadline
        assert [kind for kind, i, _late in queue.fired if i == turn_id] == ["warn", "breach"]
    finally:
        events.sla_changed.disconnect(listener)
        timer.stop(app)


def test_two_queues_announce_a_breach_once_and_a_late_queue_loads_running_turns(app, desk_world):
    with app.app_context():
        set_policy(desk_world.shop_id, threshold_seconds=2, warning_seconds=2)
        conversation = desk_world.buyer("o_twice", utcnow())
        db.session.remove()
    heard = []

    def listener(shop_id, turn, reason):
        heard.append(reason)

    events.sla_changed.connect(listener)
    # Neither queue was running when the turn started: both find it in the database.
    first, second = timer.DeadlineQueue(app).start(), timer.DeadlineQueue(app).start()
    try:
        assert wait_until(lambda: "breach" in heard, timeout=10)
        wait_until(lambda: False, timeout=0.5)  # give the other queue its chance to (wrongly) fire
        assert heard.count("breach") == 1 and heard.count("warn") == 1
        assert len([k for k, *_ in first.fired + second.fired if k == "breach"]) == 1
        with app.app_context():
            assert turns(conversation)[0].breached_at is not None
    finally:
        events.sla_changed.disconnect(listener)
        first.stop()
        second.stop()


def test_an_answered_turn_is_not_breached_later(app, desk_world):
    queue = timer.start(app)
    try:
        with app.app_context():
            set_policy(desk_world.shop_id, threshold_seconds=2, warning_seconds=1)
            now = utcnow()
            conversation = desk_world.buyer("o_saved", now)
            desk_world.reply(desk_world.agent_id, conversation, now + timedelta(seconds=1))
            db.session.remove()
        assert wait_until(lambda: not queue._heap, timeout=10)
        with app.app_context():
            assert turns(conversation)[0].outcome == TurnOutcome.MET
        assert not [k for k, *_ in queue.fired if k == "breach"]
    finally:
        timer.stop(app)
