"""The 3-minute manual reply clock: one ``reply_turns`` row per buyer turn (docs/sla.md).

- **start**: the buyer-message path (``store.store_buyer_message``) calls ``start_turn`` in its own
  transaction when the conversation was not waiting (``waiting_since`` was empty): one INSERT per
  turn, none for the buyer's further messages in that turn.
- **stop**: the first human agent reply (``conversations.send_reply``) calls ``answer``; resolving
  the conversation calls ``close_unanswered``. Auto-replies, welcome/busy/off-hours messages, notes
  and system lines never reach these functions, so they never stop a clock.
- **breach / warning**: the deadline queue (``app/sla/timer.py``) claims a turn with one
  ``UPDATE ... WHERE outcome = 'open' ... RETURNING``: whichever process gets the row announces it,
  so a breach is announced once however many timers run.

Everything is booked into the rollups (``rollup.py``) in the same transaction as the change.
Announcements go out after the commit through ``events.sla_changed``.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

import sqlalchemy as sa

from app import events, tenancy
from app.db import insert_new, utcnow
from app.extensions import db
from app.models import Message, MessageDirection, ReplyTurn, TurnOutcome
from app.sla import rollup
from app.sla.policy import policy_for

_turns = ReplyTurn.__table__


def turn_dict(turn) -> dict:
    """A turn as the board and the console see it (ORM row or Core row)."""

    def iso(value):
        return value.isoformat() if value is not None else None

    outcome = turn.outcome.value if hasattr(turn.outcome, "value") else str(turn.outcome)
    return {
        "id": turn.id,
        "shop_id": turn.shop_id,
        "conversation_id": turn.conversation_id,
        "started_at": iso(turn.started_at),
        "deadline_at": iso(turn.deadline_at),
        "warn_at": iso(turn.warn_at),
        "counted": bool(turn.counted),
        "outcome": outcome,
        "agent_id": turn.agent_id,
        "breached_at": iso(turn.breached_at),
        "answered_at": iso(turn.answered_at),
        "answered_by_id": turn.answered_by_id,
        "first_reply_seconds": turn.first_reply_seconds,
        "closed": turn.closed_at is not None,
    }


def start_turn(connection: sa.Connection, shop_id: int, conversation, seq: int, started_at: datetime) -> dict | None:
    """Open the conversation's turn in the caller's transaction (Core: the hot path); None if one runs."""
    policy = policy_for(shop_id)
    values = {
        "shop_id": shop_id,
        "conversation_id": conversation.id,
        "customer_id": conversation.customer_id,
        "started_at": started_at,
        "first_seq": seq,
        "threshold_seconds": policy.threshold_seconds,
        "deadline_at": policy.deadline(started_at),
        "warn_at": policy.warn_at(started_at),
        "counted": policy.counts(started_at),
        "assignee_start_id": conversation.assignee_id,
        "outcome": TurnOutcome.OPEN,
        "buyer_messages": 1,
        "messages_met": 0,
        "first_of_day": False,
        "created_at": utcnow(),
    }
    turn_id = insert_new(connection, _turns, values).scalar()
    if turn_id is None:
        return None
    return {
        "id": turn_id,
        "shop_id": shop_id,
        "conversation_id": conversation.id,
        "deadline_at": values["deadline_at"],
        "warn_at": values["warn_at"],
        "reassign_at": (
            started_at + timedelta(seconds=policy.reassign_after_seconds) if policy.reassign_after_seconds else None
        ),
    }


def running_turn(conversation_id: int) -> ReplyTurn | None:
    """The conversation's turn whose clock has not stopped (open, or breached and not yet answered)."""
    return db.session.scalar(
        sa.select(ReplyTurn).where(ReplyTurn.conversation_id == conversation_id, ReplyTurn.closed_at.is_(None))
    )


def _inbound_of_turn(turn, *since):
    """A count of the turn's buyer messages (``since``: those at or after a time), as a scalar
    subquery correlated to ``turn`` (the ReplyTurn entity, or an alias of it)."""
    # ORM entities, not the table: this runs in the agent's scoped session (app/tenancy.py).
    return (
        sa.select(sa.func.count(Message.id))
        .where(
            Message.conversation_id == turn.conversation_id,
            Message.seq >= turn.first_seq,
            Message.direction == MessageDirection.INBOUND,
            *(Message.created_at >= moment for moment in since),
        )
        .scalar_subquery()
    )


def _counted(count, met, answered: bool) -> tuple[int, int]:
    count = max(1, int(count or 0))
    return count, (min(count, int(met or 0)) if answered else 0)


def _messages_met(turn: ReplyTurn, until: datetime, answered: bool) -> tuple[int, int]:
    """The buyer's messages in the turn and, for an answer at ``until``, how many it met in time."""
    limit = until - timedelta(seconds=turn.threshold_seconds)
    row = db.session.execute(
        sa.select(_inbound_of_turn(ReplyTurn), _inbound_of_turn(ReplyTurn, limit)).where(ReplyTurn.id == turn.id)
    ).one()
    return _counted(row[0], row[1], answered)


@functools.cache
def _answer_query() -> sa.Select:
    """What an answer needs to know, in one statement built once: the conversation's running turn,
    its buyer messages and how many were written at or after ``met_since`` (the answer's time less
    the shop's threshold), and whether ``user_id`` answered the conversation since ``local_day``
    (the shop-local day's start) in an earlier turn."""
    earlier = sa.orm.aliased(ReplyTurn)
    answered_today = (
        sa.select(earlier.id)
        .where(
            earlier.conversation_id == ReplyTurn.conversation_id,
            earlier.answered_by_id == sa.bindparam("user_id"),
            earlier.answered_at >= sa.bindparam("local_day"),
            earlier.id != ReplyTurn.id,
        )
        .exists()
    )
    return sa.select(
        ReplyTurn,
        _inbound_of_turn(ReplyTurn),
        _inbound_of_turn(ReplyTurn, sa.bindparam("met_since")),
        answered_today,
    ).where(ReplyTurn.conversation_id == sa.bindparam("conversation_id"), ReplyTurn.closed_at.is_(None))


def answer(conversation, message: Message, user_id: int, now: datetime) -> dict | None:
    """A human agent replied: stop the running clock (in the caller's transaction, before its commit).

    Returns the turn's announcement data for after the commit, or None when no clock was running.
    Everything is read first (``_answer_query``), then written: a query autoflushes what was set
    before it, and the turn would be written in several UPDATEs.
    """
    policy = policy_for(conversation.shop_id)
    local_day = now.astimezone(policy.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    row = db.session.execute(
        _answer_query(),
        {
            "conversation_id": conversation.id,
            "user_id": user_id,
            "local_day": local_day,
            "met_since": now - timedelta(seconds=policy.threshold_seconds),
        },
    ).first()
    if row is None:
        return None
    turn, count, met, first_of_day = row[0], row[1], row[2], not row[3]
    elapsed = now - turn.started_at
    if turn.threshold_seconds == policy.threshold_seconds:
        buyer_messages, messages_met = _counted(count, met, answered=True)
    else:  # the shop changed its threshold during the turn: the turn keeps the one it started with
        buyer_messages, messages_met = _messages_met(turn, now, answered=True)
    decided = turn.outcome == TurnOutcome.OPEN
    if decided:
        turn.agent_id = user_id
        if elapsed <= timedelta(seconds=turn.threshold_seconds):
            turn.outcome = TurnOutcome.MET
        else:  # the queue had not announced it yet: the reply settles it
            turn.outcome = TurnOutcome.BREACHED
            turn.breached_at = turn.deadline_at
    turn.answered_at = now
    turn.answered_by_id = user_id
    turn.answer_message_id = message.id
    turn.first_reply_seconds = max(0, int(elapsed.total_seconds()))
    turn.closed_at = now
    turn.buyer_messages, turn.messages_met = buyer_messages, messages_met
    turn.first_of_day = first_of_day
    db.session.flush()
    if turn.counted:
        with tenancy.system_scope(db.session()):
            connection = db.session.connection()
            outcome = {}
            if decided:
                outcome = {"turns": 1, turn.outcome.value: 1}
            rollup.book(
                connection,
                turn.shop_id,
                turn.agent_id,
                turn.started_at,
                **outcome,
                messages=turn.buyer_messages,
                messages_met=turn.messages_met,
                answered=1,
                reply_seconds=turn.first_reply_seconds,
                conversations=int(turn.first_of_day),
            )
            rollup.book_reply(connection, turn.shop_id, turn.agent_id, turn.started_at, turn.first_reply_seconds)
    return turn_dict(turn)


def close_unanswered(conversation, now: datetime) -> dict | None:
    """The conversation was resolved with the buyer still waiting: the clock stops unanswered."""
    turn = running_turn(conversation.id)
    if turn is None:
        return None
    decided = turn.outcome == TurnOutcome.OPEN
    if decided:
        turn.agent_id = conversation.assignee_id
        if now >= turn.deadline_at:
            turn.outcome = TurnOutcome.BREACHED
            turn.breached_at = turn.deadline_at
        else:
            turn.outcome = TurnOutcome.UNANSWERED
    turn.closed_at = now
    turn.buyer_messages, turn.messages_met = _messages_met(turn, now, answered=False)
    db.session.flush()
    if turn.counted:
        with tenancy.system_scope(db.session()):
            outcome = {"turns": 1, turn.outcome.value: 1} if decided else {}
            rollup.book(
                db.session.connection(),
                turn.shop_id,
                turn.agent_id,
                turn.started_at,
                **outcome,
                messages=turn.buyer_messages,
            )
    return turn_dict(turn)


def _claim(connection: sa.Connection, turn_id: int, now: datetime, kind: str):
    from app.models import Conversation

    conversations = Conversation.__table__
    assignee = (
        sa.select(conversations.c.assignee_id).where(conversations.c.id == _turns.c.conversation_id).scalar_subquery()
    )
    running = sa.update(_turns).where(_turns.c.id == turn_id, _turns.c.closed_at.is_(None))
    base = running.where(_turns.c.outcome == TurnOutcome.OPEN.value)
    if kind == "breach":
        stmt = base.where(_turns.c.deadline_at <= now).values(
            outcome=TurnOutcome.BREACHED.value, breached_at=_turns.c.deadline_at, agent_id=assignee
        )
    elif kind == "warn":
        stmt = base.where(_turns.c.warn_at <= now, _turns.c.warned_at.is_(None)).values(warned_at=now)
    else:  # reassign: the buyer is still waiting, before or after the deadline
        stmt = running.where(_turns.c.reassigned_at.is_(None)).values(reassigned_at=now)
    return connection.execute(stmt.returning(*_turns.c)).first()


def fire(turn_id: int, kind: str, now: datetime | None = None) -> dict | None:
    """Claim a due breach / warning / reassignment for a turn (once, across processes) and announce it.

    Returns the turn's data when this call claimed it, None when it was not (or no longer) due.
    """
    now = now or utcnow()
    session = db.session()
    with tenancy.system_scope(session):
        connection = session.connection()
        row = _claim(connection, turn_id, now, kind)
        if row is None:
            session.rollback()
            return None
        if kind == "breach" and row.counted:
            rollup.book(connection, row.shop_id, row.agent_id, row.started_at, turns=1, breached=1)
    session.commit()
    data = turn_dict(row)
    data["assignee_id"] = _assignee(row.conversation_id)
    if kind == "reassign":
        _reassign(row)
    events.emit(events.sla_changed, row.shop_id, turn=data, reason=kind)
    return data


def _assignee(conversation_id: int) -> int | None:
    from app.models import Conversation

    conversations = Conversation.__table__
    with db.engine.connect() as connection:
        return connection.execute(
            sa.select(conversations.c.assignee_id).where(conversations.c.id == conversation_id)
        ).scalar()


def _reassign(turn) -> None:
    """Hand the conversation to another agent if its assignee has not answered (optional, per shop)."""
    from app.desk import assignment

    try:
        assignment.reassign_unanswered(turn.conversation_id)
    except Exception:  # best effort: the clock and the breach go on regardless
        import logging

        logging.getLogger(__name__).exception("auto-reassign of conversation %s failed", turn.conversation_id)


def announce(turn: dict | None, reason: str) -> None:
    """After the commit: the change of a turn (``turn_dict``, or None for no turn) to its shop."""
    if turn is not None:
        events.emit(events.sla_changed, turn["shop_id"], turn=turn, reason=reason)
