"""Races and edge cases found in review: a resend racing the first send, a reply's budget slot across
buyer turns."""

from __future__ import annotations

import dataclasses
import threading
import time

import sqlalchemy as sa

from app import outbox
from app.desk import conversations
from app.extensions import db
from app.models import Conversation, Message, User
from app.platform.client import BusinessError
from tests.desk.conftest import request_id
from tests.desk.test_assignment import arrive, assignee, team  # noqa: F401 (fixture)
from tests.statements import statements


def _work_outbox() -> int:
    return outbox.process_claimed(outbox.claim(10))


def test_a_resend_racing_the_first_send_gets_the_same_message(app, team):  # noqa: F811
    conversation_id = arrive(team.shop, openid="o_race")
    agent_id = assignee(conversation_id)
    rid = request_id()
    start = threading.Barrier(2)
    answers, errors = [], []

    def send():
        with app.app_context():
            try:
                user = db.session.get(User, agent_id)
                start.wait()
                answers.append(conversations.send_reply(user, conversation_id, rid, "text", {"text": "一次"})["id"])
            except Exception as exc:  # reported below
                errors.append(repr(exc))
            finally:
                db.session.remove()

    hold = db.engine.connect()  # both sends queue behind this lock, then race for it
    transaction = hold.begin()
    if db.engine.dialect.name == "postgresql":
        hold.execute(sa.text("SELECT id FROM conversations WHERE id = :i FOR UPDATE"), {"i": conversation_id})
    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    transaction.rollback()
    hold.close()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(answers) == 2 and answers[0] == answers[1]
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).where(Message.request_id == rid)) == 1


def test_a_retried_reply_from_an_earlier_turn_does_not_leak_a_slot(app, team, monkeypatch):  # noqa: F811
    handler = outbox.HANDLERS[conversations.SEND_OPERATION]

    def refuse(shop, call):
        raise BusinessError("refused", api="/channels/ec/commkf/sendmsg", errcode=12345, errmsg="no")

    monkeypatch.setitem(outbox.HANDLERS, conversations.SEND_OPERATION, dataclasses.replace(handler, perform=refuse))
    conversation_id = arrive(team.shop, openid="o_turns")
    agent = db.session.get(User, assignee(conversation_id))
    sent = conversations.send_reply(agent, conversation_id, request_id(), "text", {"text": "在的"})
    _work_outbox()
    db.session.expire_all()
    assert db.session.get(Message, sent["id"]).delivery_state.value == "failed"
    assert db.session.get(Conversation, conversation_id).replies_since_buyer == 0
    time.sleep(1.1)  # the platform's clock has whole seconds
    arrive(team.shop, openid="o_turns", text="还在吗")  # a new turn
    conversations.retry_message(db.session.get(User, agent.id), sent["id"])
    db.session.expire_all()
    assert db.session.get(Conversation, conversation_id).replies_since_buyer == 1
    _work_outbox()  # fails again: the slot it took in this turn comes back
    db.session.expire_all()
    assert db.session.get(Conversation, conversation_id).replies_since_buyer == 0


def test_a_request_id_used_on_another_conversation_is_refused_and_queues_nothing(app, team):  # noqa: F811
    first = arrive(team.shop, openid="o_first")
    other = arrive(team.shop, openid="o_other")
    rid = request_id()
    with app.app_context():
        user = db.session.get(User, assignee(first))
        sent = conversations.send_reply(user, first, rid, "text", {"text": "您好"})
        user = db.session.get(User, assignee(other))
        try:
            conversations.send_reply(user, other, rid, "text", {"text": "别的"})
        except conversations.DeskError as exc:
            refused = exc.code
        else:
            refused = None
        assert refused == "invalid"
        assert db.session.scalars(sa.select(Message.id).where(Message.request_id == rid)).all() == [sent["id"]]
        assert db.session.get(Conversation, other).replies_since_buyer == 0, "nothing was spent on the refusal"
        db.session.remove()


def test_a_reply_looks_its_request_id_up_once_under_the_lock_and_writes_each_row_once(app, team):  # noqa: F811
    conversation_id = arrive(team.shop, openid="o_once")  # the buyer's clock is running
    with app.app_context():
        user = db.session.get(User, assignee(conversation_id))
        engine = db.engine
        sent = statements(engine, lambda: conversations.send_reply(user, conversation_id, request_id(), "text",
                                                                   {"text": "在的"}))
        lookups = [n for n, s in enumerate(sent) if s.startswith("SELECT") and "messages.request_id =" in s]
        lock = next(n for n, s in enumerate(sent) if s.startswith("SELECT") and "FROM conversations" in s)
        assert len(lookups) == 1 and lookups[0] > lock, sent
        # The conversation and the buyer's turn are each written by one UPDATE (the clock's queries
        # come before its writes; the conversation's reply fields are set before the queueing's flush).
        assert len([s for s in sent if s.startswith("UPDATE conversations")]) == 1, sent
        assert len([s for s in sent if s.startswith("UPDATE reply_turns")]) == 1, sent
        db.session.remove()
