"""Presence and assignment: who is online, who gets a new conversation, the queue, transfers.

Presence: a user is *online* while they have at least one live console connection (a tab, counted in
``agent_connections``, kept alive by heartbeats) and their own choice is "online"; "away" when they
chose so; *offline* with no live connection. Several tabs count once.

Assignment of a new (or queued) conversation, in one transaction under the assignment lock:
1. candidates: active users linked to the conversation's shop who are online, and have fewer open
   conversations (across all their shops) than their capacity;
2. the agent who last answered this buyer within 24 hours, if a candidate (sticky);
3. otherwise the candidate with the fewest open conversations, ties to the one whose last assignment
   is oldest (the longest idle), then the lowest id.
Nobody available: the conversation waits in the queue (``queued_at``), drained oldest first whenever
capacity frees (a resolve, a transfer, an agent coming online) and by a periodic job.

The lock: PostgreSQL ``pg_advisory_xact_lock`` (every web and worker process), so two arrivals never
both see the same agent's spare capacity; SQLite (one process) a process lock plus its write lock.
A new conversation's assignment sends the lock, the pick and the commit together
(``_assign_and_commit``): the lock is held for as long as PostgreSQL runs the pick and the commit.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask_babel import gettext as _

from app import events, tenancy
from app.db import driver_statement, utcnow
from app.desk import views
from app.desk.conversations import Changes, DeskError, lock_conversation
from app.extensions import db
from app.ingest import store
from app.ingest.store import locked
from app.models import AgentConnection, Conversation, ConversationStatus, Role, User, user_shops

PRESENCE_TTL = timedelta(seconds=75)  # three missed heartbeats (25 s) and a connection no longer counts
STICKY_FOR = timedelta(hours=24)
ASSIGNMENT_LOCK_KEY = 0x43484E4C  # "CHNL": one advisory lock for all assignment decisions
PRESENCE_CHOICES = ("online", "away")
_sqlite_lock = threading.RLock()


@contextmanager
def assignment_lock():
    """Serialise assignment decisions until the caller's commit (or rollback) ends the transaction."""
    if db.engine.dialect.name == "postgresql":
        _advisory_lock()
        yield
        return
    with _sqlite_lock:
        locked(sa.select(User))  # SQLite: take the write lock now, not at the first write
        try:
            yield
        finally:
            if db.session().in_transaction():
                db.session.rollback()  # the caller commits inside; anything left is abandoned


_ADVISORY_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")
_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"  # the same, for the driver (``_assign_and_commit``)


def _advisory_lock() -> None:
    # On the session's connection (Core): every new conversation takes it.
    db.session.connection().execute(_ADVISORY_LOCK, {"key": ASSIGNMENT_LOCK_KEY})


# --- presence -----------------------------------------------------------------------------------


def _live_connection(user_id_column, now):
    return (
        sa.select(AgentConnection.sid)
        .where(AgentConnection.user_id == user_id_column, AgentConnection.seen_at >= now - PRESENCE_TTL)
        .exists()
    )


def presence_of(user: User) -> str:
    now = utcnow()
    live = db.session.scalar(sa.select(_live_connection(sa.literal(user.id), now)))
    if not live:
        return "offline"
    return user.presence if user.presence in PRESENCE_CHOICES else "online"


def _shop_ids(user: User) -> list[int] | None:
    return None if user.role == Role.ADMIN else [shop.id for shop in user.shops]


def _announce_presence(user: User, presence: str) -> None:
    events.emit(events.presence_changed, 0, user_id=user.id, presence=presence, shop_ids=_shop_ids(user))


def connected(user_id: int, sid: str) -> str:
    """A console connection opened; returns the user's presence. Drains the queue if they came online."""
    now = utcnow()
    user = db.session.get(User, user_id)
    before = presence_of(user)
    db.session.merge(AgentConnection(sid=sid, user_id=user_id, connected_at=now, seen_at=now))
    db.session.commit()
    after = presence_of(user)
    if after != before:
        _announce_presence(user, after)
    if after == "online":
        drain_queue()
    return after


def heartbeat(sid: str) -> None:
    db.session.execute(sa.update(AgentConnection).where(AgentConnection.sid == sid).values(seen_at=utcnow()))
    db.session.commit()


def disconnected(user_id: int, sid: str) -> None:
    db.session.execute(sa.delete(AgentConnection).where(AgentConnection.sid == sid))
    db.session.commit()
    user = db.session.get(User, user_id)
    if user is not None and presence_of(user) == "offline":
        _announce_presence(user, "offline")


def set_presence(user: User, presence: str) -> str:
    if presence not in PRESENCE_CHOICES:
        raise DeskError("invalid", _("Presence must be online or away."))
    user.presence = presence
    db.session.commit()
    effective = presence_of(user)
    _announce_presence(user, effective)
    if effective == "online":
        drain_queue()
    return effective


def prune_connections() -> int:
    """Forget connections whose process died (no heartbeat); returns how many."""
    cutoff = utcnow() - PRESENCE_TTL * 4
    result = db.session.execute(sa.delete(AgentConnection).where(AgentConnection.seen_at < cutoff))
    db.session.commit()
    return result.rowcount or 0


def agents_for_shop(shop_id: int) -> list[dict]:
    """Active users serving the shop, with presence and load (the transfer list)."""
    now = utcnow()
    live = _live_connection(User.id, now)
    rows = db.session.execute(
        sa.select(User, live.label("live"))
        .join(user_shops, user_shops.c.user_id == User.id)
        .where(user_shops.c.shop_id == shop_id, User.is_active)
        .order_by(User.display_name, User.id)
    ).all()
    return [
        {
            "id": user.id,
            "name": user.display_name,
            "role": user.role.value,
            "presence": (user.presence if user.presence in PRESENCE_CHOICES else "online") if live else "offline",
            "open_count": user.open_conversations,  # kept by triggers (users.open_conversations)
            "capacity": user.capacity,
        }
        for user, live in rows
    ]


# --- assignment ---------------------------------------------------------------------------------


def sticky_agent(last_agent_id: int | None, last_agent_at, now) -> int | None:
    """The agent a buyer sticks to: whoever last answered them, within STICKY_FOR."""
    if last_agent_id and last_agent_at and now - last_agent_at <= STICKY_FOR:
        return last_agent_id
    return None


@functools.cache
def _pick_statement(dialect: str) -> sa.Select:
    """The agent to assign, in ONE statement built once: the shop's active, online agents with a
    live connection and spare capacity; the sticky one first if among them, then the fewest open
    conversations, the longest idle (never assigned first), the lowest id. Bound per call:
    ``pick_shop_id``, ``seen_after`` (a connection seen since counts as live), ``sticky`` and ``exclude``
    (0: none; ids start at 1).

    It runs under the assignment lock, once per new conversation, so on PostgreSQL its work must not
    depend on the planner's statistics: at a livestream's start they are those of tables that were
    nearly empty a moment before, and any join may then be run as a nested loop rescanning its
    inner side per row (12-77 ms for 200 agents, while the lock queues every other new
    conversation). So nothing is joined: the shop's agents and the live connections are id lists
    computed once (``= ANY(ARRAY(...))``, an InitPlan each), and an agent's load is a column of
    their row, ``users.open_conversations``, which triggers on conversations keep (capacity is per
    person, so it counts every shop's). Counting the open conversations here instead grew with
    them: 2.2 ms mean with 1,000 open (``pg_stat_statements`` under ``bench/chat.py``).
    tests/desk/test_assignment_plan.py bounds the rows the plan touches. On SQLite (the
    single-process demo) the same with ``IN``. The statement runs after the lock was taken: its
    snapshot sees every assignment committed before.
    """
    shop_id = sa.bindparam("pick_shop_id", type_=sa.Integer)
    members = sa.select(user_shops.c.user_id).where(user_shops.c.shop_id == shop_id)
    if dialect == "postgresql":

        def among(column, ids: sa.Select):
            return column == sa.any_(sa.func.array(ids.scalar_subquery()))
    else:

        def among(column, ids: sa.Select):
            return column.in_(ids)

    # The shop's agents only: the other shops' agents cost this pick nothing.
    connected = sa.select(AgentConnection.user_id).where(
        AgentConnection.seen_at >= sa.bindparam("seen_after", type_=AgentConnection.seen_at.type),
        among(AgentConnection.user_id, members),
    )
    load = User.open_conversations
    return (
        sa.select(User.id)
        .where(
            User.is_active,
            User.presence == "online",
            among(User.id, members),
            among(User.id, connected),
            User.id != sa.bindparam("exclude", type_=sa.Integer),
            User.capacity > load,
        )
        .order_by(
            sa.case((User.id == sa.bindparam("sticky", type_=sa.Integer), 0), else_=1),
            load,
            User.last_assigned_at.asc().nulls_first(),
            User.id,
        )
        .limit(1)
    )


def _pick_params(shop_id: int, sticky: int | None, exclude: int | None, now) -> dict:
    return {"pick_shop_id": shop_id, "seen_after": now - PRESENCE_TTL, "sticky": sticky or 0, "exclude": exclude or 0}


def pick_agent(shop_id: int, sticky: int | None, exclude: int | None = None) -> int | None:
    """The id of the agent to assign (see ``_pick_statement``); None if nobody can."""
    with tenancy.system_scope(db.session()):
        session = db.session()
        statement = _pick_statement(session.get_bind().dialect.name)
        return session.execute(statement, _pick_params(shop_id, sticky, exclude, utcnow())).scalar()


@functools.cache
def _pick_and_assign_statement() -> sa.Update:
    """PostgreSQL: pick (``_pick_statement``) and assign in ONE statement, built once: the agent's
    ``last_assigned_at`` and the conversation's assignee, returning the agent's id and name (no row
    when nobody can take it). One round trip under the assignment lock instead of four."""
    conversations_table, users = Conversation.__table__, User.__table__
    now = sa.bindparam("now", type_=users.c.last_assigned_at.type)
    chosen = _pick_statement("postgresql").cte("chosen")
    agent = (
        sa.update(users)
        .where(users.c.id == chosen.c.id)
        .values(last_assigned_at=now, updated_at=now)
        # The conversation's id rides along: the statement below joins on it (no cartesian product).
        .returning(users.c.id, users.c.display_name,
                   sa.bindparam("conversation_id", type_=sa.Integer).label("conversation_id"))
        .cte("agent")
    )
    return (
        sa.update(conversations_table)
        .where(conversations_table.c.id == agent.c.conversation_id)
        .values(assignee_id=agent.c.id, assigned_at=now, queued_at=None, updated_at=now)
        .returning(agent.c.id, agent.c.display_name)
    )


@dataclass(frozen=True)
class Assigned:
    agent_id: int
    summary: dict  # the conversation as it stands, assigned (views.conversation_summary)
    now: bool = True  # False: it was assigned already (by someone else, meanwhile)


def assign_now(conversation_id: int, exclude: int | None = None, tags: list[str] | None = None) -> Assigned | None:
    """Give an open, unassigned conversation to the best available agent, announcing nothing.

    None if it is not open, or nobody can take it (then it waits in the queue); ``now`` False if
    it was assigned already (its current state). Core statements under the assignment lock: lock
    the conversation, pick, assign, commit. ``tags``: the buyer's, when the caller has them.
    """
    session = db.session()
    with tenancy.system_scope(session), assignment_lock():
        state = store.conversation_state(conversation_id, lock=True)
        if state is not None and state.status == ConversationStatus.OPEN and state.assignee_id is not None:
            # Someone else assigned it meanwhile: the state as it is now, for whoever announces.
            session.rollback()
            return Assigned(state.assignee_id, views.summary_from_state(state, tags or store.state_tags(state)), False)
        if state is None or state.status != ConversationStatus.OPEN:
            session.rollback()
            return None
        now = utcnow()
        assigned = _give_best(state, now, exclude)
        if assigned is None:
            if state.queued_at is None:
                conversations_table = Conversation.__table__
                session.connection().execute(
                    sa.update(conversations_table)
                    .where(conversations_table.c.id == conversation_id)
                    .values(queued_at=now, updated_at=now)
                )
                session.commit()
            else:
                session.rollback()
            return None
        if tags is None:
            tags = store.state_tags(state)
        session.commit()
    return Assigned(assigned.assignee_id, views.summary_from_state(assigned, tags))


def _assign_params(state: store.Record, now, exclude: int | None) -> dict:
    """The pick's parameters for this conversation, and the assignment's (``now``, its id)."""
    sticky = sticky_agent(state.customer_last_agent_id, state.customer_last_agent_at, now)
    return _pick_params(state.shop_id, sticky, exclude, now) | {"now": now, "conversation_id": state.id}


def _give_best(state: store.Record, now, exclude: int | None = None) -> store.Record | None:
    """Pick the agent for a conversation and assign it, in the caller's transaction (under the
    assignment lock); the conversation's new state, or None if nobody can take it."""
    connection = db.session.connection()
    params = _assign_params(state, now, exclude)
    if connection.dialect.name == "postgresql":
        row = connection.execute(_pick_and_assign_statement(), params).first()
        if row is None:
            return None
        agent_id, name = row
    else:
        agent_id = connection.execute(_pick_statement(connection.dialect.name), params).scalar()
        if agent_id is None:
            return None
        conversations_table, users = Conversation.__table__, User.__table__
        connection.execute(
            sa.update(conversations_table)
            .where(conversations_table.c.id == state.id)
            .values(assignee_id=agent_id, assigned_at=now, queued_at=None, updated_at=now)
        )
        name = connection.execute(
            sa.update(users)
            .where(users.c.id == agent_id)
            .values(last_assigned_at=now, updated_at=now)
            .returning(users.c.display_name)
        ).scalar_one()
    return store.Record(state, assignee_id=agent_id, assigned_at=now, queued_at=None, assignee_name=name)


def assign_on_opening(shop_id: int, conversation: store.Record, tags: list[str]) -> store.Record | None:
    """``conversation_opening`` receiver: give a new conversation to an agent in the transaction that
    opens it (PostgreSQL); returns its state after trying (unassigned: nobody free, it stays queued),
    or None when it did not try.

    Lock order: the assignment lock is awaited while this transaction holds the new conversation
    (and its entry in the one-open-conversation-per-buyer index) and the buyer's row. Nobody holding
    the lock waits for those: assignments lock committed conversations only, and nothing that locks
    a buyer's row takes the lock. The one other writer of that index entry, ``reopen``, waits for it
    before it locks the agent's row this transaction may go on to update, so no cycle closes (and
    should PostgreSQL ever see one, it aborts a side and the push is retried). With psycopg's
    pipeline mode this also commits the opening transaction (``_assign_and_commit``). On SQLite (the
    demo's single process) the process lock would be awaited while holding the database's write lock, so
    there the conversation is assigned after the commit instead (``assign_now``).
    """
    if db.engine.dialect.name != "postgresql" or conversation.assignee_id is not None:
        return None
    return _assign_and_commit(conversation, utcnow(), db.session.connection()) or conversation


def _assign_and_commit(state: store.Record, now, connection: sa.Connection) -> store.Record | None:
    """End a new conversation's opening transaction on PostgreSQL: take the assignment lock, pick
    and assign (``_pick_and_assign_statement``), and commit, sent together in psycopg's pipeline mode
    (psycopg 3 with its bundled libpq, 14 or later: requirements.txt).

    The lock is held from the moment PostgreSQL grants it to the commit right behind the pick:
    the pick's run and the commit's, not a round trip to this process and back, nor this process's
    wait for its interpreter between them (which, with a livestream's first minutes opening a
    conversation every few milliseconds, made the lock the queue). Each statement takes its own
    snapshot (READ COMMITTED), so the pick sees what the lock's previous holder committed.

    The caller's transaction is committed here (the caller's own commit then finds nothing to do);
    an error in any of the three rolls it all back, and reaches the caller as before.
    """
    db.session.flush()  # what the ORM holds for this transaction goes with it
    pick = driver_statement(_pick_and_assign_statement(), connection.dialect)
    driver = connection.connection.driver_connection
    with driver.pipeline():
        driver.execute(_LOCK_SQL, (ASSIGNMENT_LOCK_KEY,))
        picked = driver.execute(pick.sql, pick.params(_assign_params(state, now, None)))
        driver.commit()
    row = picked.fetchone()
    if row is None:
        return None
    agent_id, name = row
    return store.Record(state, assignee_id=agent_id, assigned_at=now, queued_at=None, assignee_name=name)



def try_assign(conversation_id: int, exclude: int | None = None, message: dict | None = None) -> int | None:
    """Give an open, unassigned conversation to the best available agent and announce it; their id or None."""
    assigned = assign_now(conversation_id, exclude=exclude)
    if assigned is None or not assigned.now:
        return None
    events.emit(
        events.conversation_changed,
        assigned.summary["shop_id"],
        conversation=assigned.summary,
        reason="assigned",
        message=message,
        notify_user_ids={assigned.agent_id},
    )
    return assigned.agent_id


def drain_queue(limit: int = 200) -> int:
    """Assign queued conversations, oldest first, while agents have capacity; returns how many.

    The queue is read under the assignment lock: a conversation being opened right now (which
    found nobody free, in the transaction that files its first message) is committed before the
    lock is free, so it is seen here rather than waiting for the next periodic drain.
    """
    with tenancy.system_scope(db.session()), assignment_lock():
        queued = db.session.scalars(
            sa.select(Conversation.id)
            .where(Conversation.status == ConversationStatus.OPEN, Conversation.assignee_id.is_(None))
            .order_by(Conversation.queued_at.is_(None), Conversation.queued_at, Conversation.id)
            .limit(limit)
        ).all()
        db.session.commit()
    assigned = 0
    for conversation_id in queued:
        if try_assign(conversation_id) is not None:
            assigned += 1
    return assigned


def queue_position(conversation: Conversation) -> int | None:
    if conversation.assignee_id is not None or conversation.queued_at is None:
        return None
    with tenancy.system_scope(db.session()):
        ahead = db.session.scalar(
            sa.select(sa.func.count()).where(
                Conversation.shop_id == conversation.shop_id,
                Conversation.status == ConversationStatus.OPEN,
                Conversation.assignee_id.is_(None),
                Conversation.queued_at < conversation.queued_at,
            )
        )
    return (ahead or 0) + 1


def assign(actor: User, conversation_id: int, user_id: int | None) -> dict:
    """Take, transfer, reassign, or return to the queue (``user_id`` None), with the role rules.

    Under the assignment lock, as every other assignment decision: a transfer moves both agents'
    open counts (``users.open_conversations``, kept by a trigger), and two transfers crossing
    between the same two agents, or one crossing an automatic reassignment, would otherwise lock
    their rows in opposite orders."""
    changes = Changes()
    with assignment_lock():
        conversation = lock_conversation(conversation_id)
        previous = conversation.assignee_id
        is_supervisor = actor.role in (Role.SUPERVISOR, Role.ADMIN)
        if not is_supervisor and previous not in (None, actor.id):
            raise DeskError("forbidden", _("Only the assigned agent or a supervisor can transfer this conversation."))
        if not is_supervisor and previous is None and user_id not in (actor.id, None):
            raise DeskError("forbidden", _("Take the conversation yourself, or ask a supervisor to assign it."))
        if conversation.status != ConversationStatus.OPEN:
            raise DeskError("resolved", _("This conversation is resolved. Reopen it first."))
        now = utcnow()
        if user_id is None and previous is None:
            db.session.rollback()  # already waiting in the queue: keep its place
            return views.conversation_summary(conversation)
        if user_id is None:
            conversation.assignee_id = None
            conversation.assigned_at = None
            conversation.queued_at = now
        else:
            target = db.session.get(User, user_id)
            serves = (
                target is not None
                and target.is_active
                and (target.role == Role.ADMIN or any(shop.id == conversation.shop_id for shop in target.shops))
            )
            if not serves:
                raise DeskError("invalid", _("That person does not serve this shop."))
            conversation.assignee_id = target.id
            conversation.assigned_at = now
            conversation.queued_at = None
            target.last_assigned_at = now
        if conversation.assignee_id != previous:
            changes.conversation(conversation, "assigned", None, previous)
        db.session.commit()
    summary = views.conversation_summary(conversation)
    changes.announce()
    if user_id is None:
        try_assign(conversation_id, exclude=previous)
    if previous is not None and previous != user_id:
        drain_queue()  # the previous agent has room for one more
    return summary


def reassign_unanswered(conversation_id: int) -> int | None:
    """The SLA's optional auto-reassign (per shop, ``sla_settings.reassign_after_seconds``): the buyer is
    still waiting, so hand the conversation to another available agent; their id, or None (nobody
    free, already answered, resolved). The reply clock keeps running: the turn started when it started."""
    session = db.session()
    with tenancy.system_scope(session), assignment_lock():
        state = store.conversation_state(conversation_id, lock=True)
        if state is None or state.status != ConversationStatus.OPEN or state.waiting_since is None:
            session.rollback()
            return None
        previous = state.assignee_id
        assigned = _give_best(store.Record(state, customer_last_agent_id=None), utcnow(), exclude=previous)
        if assigned is None:
            session.rollback()
            return None
        session.commit()
    events.emit(
        events.conversation_changed,
        assigned.shop_id,
        conversation=views.summary_from_state(assigned, store.state_tags(state)),
        reason="assigned",
        message=None,
        notify_user_ids={assigned.assignee_id, previous} - {None},
    )
    return assigned.assignee_id
