"""Each agent's open conversations, counted on their row (``users.open_conversations``) by triggers
on conversations (migration 5c9e1f7a2b34), equal the true count after every kind of change: the
assignment's pick reads the column instead of counting under its lock."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from app.db import utcnow
from app.desk import assignment, conversations
from app.extensions import db
from app.models import Conversation, ConversationStatus, Customer, Role, User
from tests.desk.conftest import make_present
from tests.desk.test_assignment import arrive, assignee
from tests.factories import make_shop, make_user


def kept_and_true() -> tuple[dict[int, int], dict[int, int]]:
    """(the column, a count of the open conversations) for every user."""
    with db.engine.connect() as conn:
        kept = dict(conn.execute(sa.text("SELECT id, open_conversations FROM users")).all())
        counted = dict(conn.execute(sa.text(
            "SELECT assignee_id, count(*) FROM conversations WHERE status = 'open' AND assignee_id IS NOT NULL"
            " GROUP BY assignee_id")).all())
    return kept, {user_id: counted.get(user_id, 0) for user_id in kept}


def assert_kept() -> dict[int, int]:
    kept, counted = kept_and_true()
    assert kept == counted
    return kept


@pytest.fixture
def desk(app):
    with app.app_context():
        shop = make_shop("计数")
        agents = [make_user(f"count{i}", shops=[shop], capacity=5) for i in range(2)]
        boss = make_user("count_boss", role=Role.SUPERVISOR, shops=[shop])
        db.session.commit()
        for agent in agents:
            make_present(agent.id)
        ids = type("Desk", (), {"shop": shop.id, "agents": [a.id for a in agents], "boss": boss.id})
        yield ids
        db.session.remove()


def test_the_count_follows_every_change_of_status_and_assignee(app, desk):
    a, b = desk.agents
    boss = db.session.get(User, desk.boss)
    first, second = arrive(desk.shop), arrive(desk.shop)  # assigned by the pick, one each
    assert {assignee(first), assignee(second)} == {a, b}
    assert assert_kept()[a] == 1
    on_a = first if assignee(first) == a else second
    assignment.assign(boss, on_a, b)  # a supervisor's transfer
    assert assert_kept()[b] == 2
    assignment.assign(boss, on_a, None)  # back to the queue: the pick gives it to a, now free
    kept = assert_kept()
    assert assignee(on_a) == a and (kept[a], kept[b]) == (1, 1)
    conversations.resolve(db.session.get(User, a), on_a)
    assert assert_kept()[a] == 0
    conversations.reopen(db.session.get(User, a), on_a)
    assert assert_kept()[a] == 1
    # Any writer, not only the desk's code paths: a bare UPDATE, a row inserted assigned, a delete.
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE conversations SET assignee_id = :b WHERE id = :id"), {"b": b, "id": on_a})
    assert assert_kept()[b] == 2
    customer = Customer(shop_id=desk.shop, openid="o_count_raw")
    db.session.add(customer)
    db.session.flush()
    extra = Conversation(shop_id=desk.shop, customer_id=customer.id, status=ConversationStatus.OPEN,
                         assignee_id=a, last_message_at=utcnow())
    db.session.add(extra)
    db.session.commit()
    assert assert_kept()[a] == 1
    db.session.delete(extra)
    db.session.commit()
    assert assert_kept()[a] == 0
    # A resolved conversation moved between agents changes nobody's load.
    conversations.resolve(db.session.get(User, b), second if assignee(second) == b else on_a)
    before = assert_kept()
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE conversations SET assignee_id = :a WHERE status = 'resolved'"), {"a": a})
    assert assert_kept() == before


def test_capacity_counts_what_the_column_says_across_shops(app, desk):
    """The pick passes over an agent whose open conversations (in any shop) fill their capacity."""
    a, b = desk.agents
    other = make_shop("另一家")
    db.session.execute(sa.update(User).where(User.id == a).values(capacity=1))
    db.session.commit()
    with db.engine.begin() as conn:
        customer = conn.execute(sa.text(
            "INSERT INTO customers (shop_id, openid, created_at) VALUES (:s, 'o_elsewhere', :t) RETURNING id"),
            {"s": other.id, "t": utcnow()}).scalar()
        conn.execute(sa.text(
            "INSERT INTO conversations (shop_id, customer_id, status, assignee_id, last_message_at, unread_count,"
            " last_seq, replies_since_buyer, auto_replies_since_buyer, created_at, updated_at)"
            " VALUES (:s, :c, 'open', :a, :t, 0, 0, 0, 0, :t, :t)"),
            {"s": other.id, "c": customer, "a": a, "t": utcnow()})
    assert assert_kept()[a] == 1
    assert [assignee(arrive(desk.shop)) for _ in range(2)] == [b, b]


def at_once(app, *workloads, rounds: int = 15) -> list[BaseException]:
    """Run each list of steps ``rounds`` times over, each list in a thread (and session) of its
    own, all started together; what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(workloads))

    def run(steps) -> None:
        with app.app_context():
            try:
                start.wait()
                for _ in range(rounds):
                    for step in steps:
                        step()
            except BaseException as exc:  # reported to the test
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(steps,)) for steps in workloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def user(user_id: int) -> User:
    return db.session.get(User, user_id)


def test_crossing_transfers_at_once_keep_the_count_and_never_deadlock(app, desk):
    """Two supervisors move conversations between the same two agents in opposite directions, at
    once, over and over: every transfer succeeds and the counts stay true."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("concurrent writers are PostgreSQL's (SQLite has one writer)")
    a, b = desk.agents
    ids = [arrive(desk.shop) for _ in range(2)]
    on_a, on_b = sorted(ids, key=lambda c: assignee(c) != a)
    assert (assignee(on_a), assignee(on_b)) == (a, b)
    db.session.remove()
    errors = at_once(
        app,
        [lambda: assignment.assign(user(desk.boss), on_a, b), lambda: assignment.assign(user(desk.boss), on_a, a)],
        [lambda: assignment.assign(user(desk.boss), on_b, a), lambda: assignment.assign(user(desk.boss), on_b, b)],
    )
    assert errors == []
    kept = assert_kept()
    assert (kept[a], kept[b]) == (1, 1)


def test_a_reopen_crossing_a_transfer_never_deadlocks(app, desk):
    """An agent reopens a conversation another agent held while a supervisor moves a conversation
    between the same two agents, over and over, at once: reopening assigns in the UPDATE that
    reopens, so it locks the reopening agent's row only, never the previous assignee's first
    (which deadlocked, and reached the agent as "this buyer already has an open conversation")."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("concurrent writers are PostgreSQL's (SQLite has one writer)")
    a, b = desk.agents
    reopened, moved = (arrive(desk.shop) for _ in range(2))
    for conversation_id in (reopened, moved):
        assignment.assign(user(desk.boss), conversation_id, a)
    db.session.remove()
    errors = at_once(
        app,
        [
            lambda: conversations.resolve(user(desk.boss), reopened),
            lambda: conversations.reopen(user(b), reopened),  # was a's
            lambda: assignment.assign(user(desk.boss), reopened, a),
        ],
        [lambda: assignment.assign(user(desk.boss), moved, b), lambda: assignment.assign(user(desk.boss), moved, a)],
    )
    assert errors == []
    assert assert_kept()[a] == 2
