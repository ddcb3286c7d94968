"""How a worked outbox call is finished: one guarded UPDATE, the handler given the call as claimed
with what was written, and a lease taken over meanwhile leaving the other worker's outcome."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import outbox
from app.extensions import db
from app.models import OutboxCall, OutboxStatus
from tests.factories import make_shop
from tests.statements import statements

OPERATION = "test.finish"


@pytest.fixture
def handler_log():
    """A handler whose perform commits (as the real ones do, expiring the call) and may run a
    ``during`` hook; its succeeded hook records what it saw of the call."""
    seen: dict = {"during": None, "succeeded": []}

    def perform(shop, call):
        call_id, n = call.id, call.payload["n"]  # read before the commit, as the real handlers do
        db.session.commit()
        if seen["during"] is not None:
            seen["during"](call_id)
        return {"ok": True, "echo": n}

    def succeeded(call, answer):
        seen["succeeded"].append((dict(call.payload), call.idempotency_key, call.status, call.attempts,
                                  call.response, call.claim_token))
        return []

    outbox.register(OPERATION, outbox.Handler(perform=perform, succeeded=succeeded, failed=lambda call, exc: []))
    yield seen
    outbox.HANDLERS.pop(OPERATION, None)


def _queued(n: int) -> int:
    shop = make_shop("店")
    db.session.commit()
    call = outbox.enqueue(shop.id, OPERATION, {"n": n}, f"finish-{n}")
    db.session.commit()
    return call.id


def test_a_done_call_is_marked_in_one_update_and_its_handler_sees_the_call(app, handler_log):
    with app.app_context():
        call_id = _queued(1)
        claimed = outbox.claim(5)
        assert claimed.ids == [call_id]
        done: list[int] = []
        sent = statements(db.engine, lambda: done.append(outbox.process_claimed(claimed)))
        assert done == [1]
        # The call is read once, at the start; nothing reads it again after the platform call.
        assert len([s for s in sent if s.startswith("SELECT") and "FROM outbox_calls" in s]) == 1
        finishing = [s for s in sent if s.startswith("UPDATE outbox_calls")]
        assert len(finishing) == 1 and "claim_token" in finishing[0]
        # The handler got the payload as claimed and the state as written.
        assert handler_log["succeeded"] == [({"n": 1}, "finish-1", OutboxStatus.SUCCEEDED, 1,
                                             {"ok": True, "echo": 1}, None)]
        db.session.remove()
        row = db.session.get(OutboxCall, call_id)
        assert (row.status, row.attempts, row.response, row.claim_token) == (
            OutboxStatus.SUCCEEDED, 1, {"ok": True, "echo": 1}, None)
        assert row.completed_at is not None and row.last_error is None
        db.session.remove()


def test_a_lease_taken_over_during_the_call_leaves_the_other_worker_s_outcome(app, handler_log):
    def taken_over(call_id):
        with db.engine.begin() as conn:  # another worker took the expired lease meanwhile
            conn.execute(sa.update(OutboxCall.__table__).where(OutboxCall.__table__.c.id == call_id)
                         .values(claim_token="theirs", attempts=5))

    handler_log["during"] = taken_over
    with app.app_context():
        call_id = _queued(2)
        assert outbox.process_claimed(outbox.claim(5)) == 0
        assert handler_log["succeeded"] == [], "the handler's outcome is the other worker's to write"
        db.session.remove()
        row = db.session.get(OutboxCall, call_id)
        assert (row.status, row.claim_token, row.attempts, row.response) == (
            OutboxStatus.IN_FLIGHT, "theirs", 5, None)
        db.session.remove()
