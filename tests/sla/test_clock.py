"""The reply clock's definition, edge by edge (docs/sla.md): what starts a turn, what stops it, when it
is met, breached or unanswered, and which turns count."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from app.desk import assignment, conversations
from app.extensions import db
from app.ingest import inbox
from app.models import Conversation, Message, ReplyTurn, SenderKind, Shop, TurnOutcome, User
from app.sla import clock
from tests.sla.conftest import local, noon_yesterday, set_policy, turns


def test_a_reply_at_179_seconds_is_met_and_at_181_is_breached(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        fast = desk_world.buyer("o_fast", t0)
        slow = desk_world.buyer("o_slow", t0)
        desk_world.reply(desk_world.agent_id, fast, t0 + timedelta(seconds=179))
        desk_world.reply(desk_world.agent_id, slow, t0 + timedelta(seconds=181))
        [met], [breached] = turns(fast), turns(slow)
        assert (met.outcome, met.first_reply_seconds, met.agent_id) == (TurnOutcome.MET, 179, desk_world.agent_id)
        assert (breached.outcome, breached.first_reply_seconds) == (TurnOutcome.BREACHED, 181)
        assert breached.breached_at == t0 + timedelta(seconds=180)
        assert met.counted and breached.counted and met.closed_at and breached.closed_at


def test_exactly_180_seconds_is_still_met(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_edge", t0)
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(seconds=180))
        assert turns(conversation)[0].outcome == TurnOutcome.MET


def test_auto_replies_and_notes_do_not_stop_the_clock(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_auto", t0)
        welcome = conversations.send_auto(conversation, "welcome", "欢迎光临！", "auto-welcome-o_auto-0001")
        assert welcome is not None and welcome["sender_kind"] == "auto"
        agent = db.session.get(User, desk_world.agent_id)
        conversations.add_note(agent, conversation, "买家问尺码")
        db.session.remove()
        [turn] = turns(conversation)
        assert turn.outcome == TurnOutcome.OPEN and turn.closed_at is None
        assert db.session.get(Conversation, conversation).waiting_since == t0
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(seconds=60))
        [turn] = turns(conversation)
        assert turn.outcome == TurnOutcome.MET and turn.first_reply_seconds == 60
        answer = db.session.get(Message, turn.answer_message_id)
        assert answer.sender_kind == SenderKind.AGENT and answer.text == "您好，在的"


def test_five_buyer_messages_make_one_turn_from_the_first(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        for i in range(5):
            conversation = desk_world.buyer("o_chatty", t0 + timedelta(seconds=40 * i), text=f"第{i + 1}条")
        [turn] = turns(conversation)
        assert turn.started_at == t0 and turn.outcome == TurnOutcome.OPEN
        # Answered at 170 s after the first message: the turn is met; per message, the first
        # (170 s) is in time and so are the rest (130, 90, 50, 10 s).
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(seconds=170))
        [turn] = turns(conversation)
        assert (turn.outcome, turn.buyer_messages, turn.messages_met) == (TurnOutcome.MET, 5, 5)
        # The next turn: five messages, answered 200 s after the first: breached, and per message
        # only those written within 180 s of the reply count as met (200, 160, 120, 80, 40 s -> 4).
        t1 = t0 + timedelta(minutes=10)
        for i in range(5):
            desk_world.buyer("o_chatty", t1 + timedelta(seconds=40 * i))
        desk_world.reply(desk_world.agent_id, conversation, t1 + timedelta(seconds=200))
        first, second = turns(conversation)
        assert (second.outcome, second.buyer_messages, second.messages_met) == (TurnOutcome.BREACHED, 5, 4)
        assert second.started_at == t1 and first.id != second.id


def test_a_second_reply_opens_no_turn_and_the_buyers_next_message_opens_one(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_two", t0)
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(seconds=30))
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(seconds=40), text="还有别的吗？")
        assert len(turns(conversation)) == 1
        desk_world.buyer("o_two", t0 + timedelta(seconds=90))
        first, second = turns(conversation)
        assert first.outcome == TurnOutcome.MET and second.outcome == TurnOutcome.OPEN
        assert second.started_at == t0 + timedelta(seconds=90)


def test_a_turn_is_counted_by_where_it_starts_in_the_assessment_window(app, desk_world):
    with app.app_context():
        shop = desk_world.shop_id
        day = noon_yesterday(shop).astimezone(db.session.get(Shop, shop).tz)
        y, m, d = day.year, day.month, day.day
        # 23:59:00 shop-local, answered at 00:01:30 the next day: inside the window, counted, met (150 s).
        late = desk_world.buyer("o_late", local(shop, y, m, d, 23, 59))
        desk_world.reply(desk_world.agent_id, late, local(shop, y, m, d, 23, 59) + timedelta(seconds=150))
        # 07:59 shop-local, answered at 08:01: started before the window opens: not counted.
        early_at = local(shop, y, m, d, 7, 59)
        early = desk_world.buyer("o_early", early_at)
        desk_world.reply(desk_world.agent_id, early, early_at + timedelta(seconds=120))
        # 08:00 exactly: counted.
        opening = desk_world.buyer("o_opening", local(shop, y, m, d, 8, 0))
        [late_turn], [early_turn], [opening_turn] = turns(late), turns(early), turns(opening)
        assert late_turn.counted and late_turn.outcome == TurnOutcome.MET
        assert not early_turn.counted and early_turn.outcome == TurnOutcome.MET
        assert opening_turn.counted
        # A shop that assesses 09:00-21:00 does not count 08:00.
        set_policy(shop, window_start="09:00", window_end="21:00")
        nine = desk_world.buyer("o_nine", local(shop, y, m, d, 8, 30))
        assert not turns(nine)[0].counted


def test_reassigned_mid_turn_the_clock_keeps_running_and_the_answer_is_booked_to_who_answered(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_moved", t0)
        assert db.session.get(Conversation, conversation).assignee_id == desk_world.agent_id
        db.session.remove()
        supervisor = desk_world.scoped(desk_world.supervisor_id)
        assignment.assign(supervisor, conversation, desk_world.other_agent_id)
        db.session.remove()
        [turn] = turns(conversation)
        assert turn.outcome == TurnOutcome.OPEN and turn.started_at == t0
        desk_world.reply(desk_world.other_agent_id, conversation, t0 + timedelta(seconds=150))
        [turn] = turns(conversation)
        assert turn.outcome == TurnOutcome.MET and turn.first_reply_seconds == 150
        assert turn.agent_id == turn.answered_by_id == desk_world.other_agent_id


def test_a_breach_is_booked_to_the_assignee_at_the_deadline_and_claimed_once(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_miss", t0)
        turn_id = turns(conversation)[0].id
        first = clock.fire(turn_id, "breach")
        second = clock.fire(turn_id, "breach")
        assert first is not None and first["outcome"] == "breached" and second is None
        [turn] = turns(conversation)
        assert turn.outcome == TurnOutcome.BREACHED and turn.agent_id == desk_world.agent_id
        assert turn.breached_at == t0 + timedelta(seconds=180) and turn.closed_at is None
        # Answered late by the supervisor: the outcome stays, the reply time is recorded.
        desk_world.reply(desk_world.supervisor_id, conversation, t0 + timedelta(seconds=400))
        [turn] = turns(conversation)
        assert turn.outcome == TurnOutcome.BREACHED and turn.first_reply_seconds == 400
        assert turn.agent_id == desk_world.agent_id and turn.answered_by_id == desk_world.supervisor_id


def test_a_breach_is_not_claimed_before_its_deadline_nor_after_the_answer(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_early_fire", t0)
        turn_id = turns(conversation)[0].id
        assert clock.fire(turn_id, "breach", now=t0 + timedelta(seconds=179)) is None
        assert clock.fire(turn_id, "warn", now=t0 + timedelta(seconds=99)) is None
        assert clock.fire(turn_id, "warn", now=t0 + timedelta(seconds=100))["outcome"] == "open"
        assert clock.fire(turn_id, "warn", now=t0 + timedelta(seconds=101)) is None  # once
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(seconds=120))
        assert clock.fire(turn_id, "breach") is None
        assert turns(conversation)[0].outcome == TurnOutcome.MET


def test_resolved_while_waiting_the_turn_is_unanswered_and_a_reopened_conversation_starts_afresh(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_resolved", t0)
        desk_world.mp.setattr(conversations, "utcnow", lambda: t0 + timedelta(seconds=60))
        conversations.resolve(desk_world.scoped(desk_world.agent_id), conversation)
        db.session.remove()
        [turn] = turns(conversation)
        assert turn.outcome == TurnOutcome.UNANSWERED and turn.closed_at == t0 + timedelta(seconds=60)
        assert turn.agent_id == desk_world.agent_id
        # Reopening starts no clock: nobody is waiting until the buyer writes again.
        desk_world.mp.setattr(conversations, "utcnow", lambda: t0 + timedelta(seconds=300))
        conversations.reopen(desk_world.scoped(desk_world.agent_id), conversation)
        db.session.remove()
        assert len(turns(conversation)) == 1
        assert db.session.get(Conversation, conversation).waiting_since is None
        desk_world.buyer("o_resolved", t0 + timedelta(seconds=400))
        assert desk_world.buyer("o_resolved", t0 + timedelta(seconds=410)) == conversation
        first, second = turns(conversation)
        assert second.outcome == TurnOutcome.OPEN and second.started_at == t0 + timedelta(seconds=400)
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(seconds=450))
        first, second = turns(conversation)
        assert (first.outcome, second.outcome) == (TurnOutcome.UNANSWERED, TurnOutcome.MET)
        assert second.first_reply_seconds == 50 and second.buyer_messages == 2


def test_resolved_after_the_deadline_counts_as_breached(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_resolved_late", t0)
        desk_world.mp.setattr(conversations, "utcnow", lambda: t0 + timedelta(seconds=200))
        conversations.resolve(desk_world.scoped(desk_world.agent_id), conversation)
        db.session.remove()
        [turn] = turns(conversation)
        assert turn.outcome == TurnOutcome.BREACHED and turn.breached_at == t0 + timedelta(seconds=180)


def test_the_threshold_is_per_shop_and_kept_by_the_turn(app, desk_world):
    with app.app_context():
        set_policy(desk_world.shop_id, threshold_seconds=60, warning_seconds=30)
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_strict", t0)
        desk_world.buyer("o_strict", t0 + timedelta(seconds=30))
        set_policy(desk_world.shop_id, threshold_seconds=300)  # a later change does not move this turn
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(seconds=61))
        [turn] = turns(conversation)
        assert turn.threshold_seconds == 60 and turn.warn_at == t0 + timedelta(seconds=30)
        assert turn.outcome == TurnOutcome.BREACHED
        # Per message too: the first waited 61 s (late under the turn's 60), the second 31 s.
        assert (turn.buyer_messages, turn.messages_met) == (2, 1)


def test_a_conversation_counts_once_per_agent_and_shop_day_as_handled(app, desk_world):
    """``first_of_day``: the agent's first answer in the conversation that local day (the history's
    "conversations handled"); another agent's first answer counts for them."""
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        conversation = desk_world.buyer("o_daily", t0)
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(seconds=20))
        desk_world.buyer("o_daily", t0 + timedelta(minutes=10))
        desk_world.reply(desk_world.agent_id, conversation, t0 + timedelta(minutes=10, seconds=20))
        desk_world.buyer("o_daily", t0 + timedelta(minutes=20))
        desk_world.reply(desk_world.supervisor_id, conversation, t0 + timedelta(minutes=20, seconds=20))
        next_day = t0 + timedelta(hours=12)  # the shop's midnight: a new local day
        desk_world.buyer("o_daily", next_day)
        desk_world.reply(desk_world.agent_id, conversation, next_day + timedelta(seconds=20))
        assert [(turn.answered_by_id, turn.first_of_day) for turn in turns(conversation)] == [
            (desk_world.agent_id, True),
            (desk_world.agent_id, False),
            (desk_world.supervisor_id, True),
            (desk_world.agent_id, True),
        ]
        # Another conversation the same day is another conversation handled.
        other = desk_world.buyer("o_daily_too", t0 + timedelta(minutes=30))
        desk_world.reply(desk_world.agent_id, other, t0 + timedelta(minutes=30, seconds=20))
        assert [turn.first_of_day for turn in turns(other)] == [True]


def test_a_pushed_again_message_starts_nothing_twice(app, desk_world):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        payload = {
            "Event": "commkf_send_msg_to_kf",
            "FromUserName": "o_dup",
            "CreateTime": int(t0.timestamp()),
            "msg_id": "dup-1",
            "msg_type": "text",
            "text": {"content": "hi"},
        }
        for _ in range(2):
            inbox.handle(desk_world.shop_id, payload)
            db.session.commit()
        count = db.session.scalar(sa.select(sa.func.count()).select_from(ReplyTurn))
        assert count == 1
