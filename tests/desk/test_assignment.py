"""Assignment: fewest open first, longest idle on ties, capacity, stickiness, the queue, presence, races."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import events
from app.db import utcnow
from app.desk import assignment, conversations, intake
from app.extensions import db
from app.ingest import inbox, store
from app.models import (
    AgentConnection,
    AutoReplyConfig,
    Conversation,
    ConversationStatus,
    Customer,
    CustomerTag,
    InboxEvent,
    InboxStatus,
    Message,
    Role,
    Shop,
    User,
)
from tests.desk.conftest import make_present
from tests.factories import make_shop, make_user


def arrive(shop_id: int, openid: str | None = None, text: str = "在吗") -> int:
    """A buyer message handled as the inbox handles its push: filed (on PostgreSQL a new conversation
    is assigned in that transaction), committed, then announced."""
    openid = openid or f"o_{uuid.uuid4().hex[:12]}"
    payload = {
        "Event": inbox.MESSAGE_EVENT,
        "FromUserName": openid,
        "msg_id": uuid.uuid4().hex,
        "msg_type": "text",
        "text": {"content": text},
        "CreateTime": int(utcnow().timestamp()),
    }
    announcements = inbox.handle(shop_id, payload)
    db.session.commit()
    for announce in announcements:
        announce()
    message = db.session.scalar(sa.select(Message).where(Message.platform_msg_id == payload["msg_id"]))
    return message.conversation_id


def open_counts(user_ids: list[int]) -> dict[int, int]:
    """Open conversations per user, across every shop, counted (not the column the pick reads)."""
    rows = db.session.execute(
        sa.select(Conversation.assignee_id, sa.func.count())
        .where(Conversation.status == ConversationStatus.OPEN, Conversation.assignee_id.in_(user_ids))
        .group_by(Conversation.assignee_id)
    ).all()
    return dict(rows)


def assignee(conversation_id: int) -> int | None:
    db.session.expire_all()
    return db.session.get(Conversation, conversation_id).assignee_id


@pytest.fixture
def team(app):
    """A shop and three agents serving it (capacity 2 each), all online; one agent of another shop."""
    with app.app_context():
        shop = make_shop("直播间")
        other = make_shop("别的店")
        agents = [make_user(f"agent{i}", shops=[shop], capacity=2) for i in range(3)]
        outsider = make_user("outsider", shops=[other], capacity=5)
        db.session.commit()
        for user in [*agents, outsider]:
            make_present(user.id)
        ids = type("Team", (), {"shop": shop.id, "other": other.id, "agents": [a.id for a in agents]})
        ids.outsider = outsider.id
        yield ids
        db.session.remove()


def test_new_conversations_go_to_the_least_loaded_then_longest_idle(app, team):
    a0, a1, a2 = team.agents
    first = [assignee(arrive(team.shop)) for _ in range(3)]
    assert sorted(first) == sorted(team.agents), "one each before anyone gets a second"
    assert first == [a0, a1, a2], "ties go to the longest idle (never assigned: lowest id first)"
    # Everyone has one: the next goes to whoever was assigned longest ago.
    assert assignee(arrive(team.shop)) == a0
    assert team.outsider not in first, "only agents serving the shop"


def test_capacity_is_respected_and_the_queue_drains_oldest_first(app, team):
    conversation_ids = [arrive(team.shop) for _ in range(8)]
    assigned = [c for c in conversation_ids if assignee(c)]
    queued = [c for c in conversation_ids if not assignee(c)]
    assert len(assigned) == 6 and queued == conversation_ids[6:]
    loads = open_counts(team.agents)
    assert all(loads[a] == 2 for a in team.agents)
    assert all(db.session.get(Conversation, c).queued_at is not None for c in queued)
    # Resolving frees a seat: the oldest queued conversation takes it.
    freed = assigned[0]
    agent = db.session.get(User, assignee(freed))
    conversations.resolve(agent, freed)
    assignment.drain_queue()
    assert assignee(queued[0]) == agent.id and assignee(queued[1]) is None
    assert db.session.get(Conversation, queued[0]).queued_at is None


def test_capacity_counts_every_shop_and_the_pick_passes_over_stale_and_excluded_agents(app, team):
    """Capacity is per person: open conversations in another shop count. A connection without a
    recent heartbeat is not live; ``exclude`` (a transfer away) leaves its agent out."""
    a0, a1, a2 = team.agents
    both = make_user("both_shops", shops=[db.session.get(User, a0).shops[0], db.session.get(Shop, team.other)],
                     capacity=1)
    db.session.commit()
    make_present(both.id)
    busy_elsewhere = arrive(team.other)  # the outsider (capacity 5) or "both": whoever is least loaded
    db.session.execute(sa.update(Conversation).where(Conversation.id == busy_elsewhere).values(assignee_id=both.id))
    db.session.commit()
    # "both" is full through the other shop: this shop's pick passes over them.
    assert assignment.pick_agent(team.shop, sticky=None) == a0
    assert assignment.pick_agent(team.shop, sticky=both.id) == a0, "a full agent is not sticky either"
    db.session.execute(
        sa.update(AgentConnection).where(AgentConnection.user_id == a0).values(seen_at=utcnow() - timedelta(minutes=5))
    )
    db.session.commit()
    assert assignment.pick_agent(team.shop, sticky=None) == a1, "a0's only connection is stale"
    assert assignment.pick_agent(team.shop, sticky=None, exclude=a1) == a2
    assert assignment.pick_agent(team.shop, sticky=a2) == a2


def test_offline_and_away_agents_get_nothing_and_coming_online_drains(app, team):
    a0, a1, a2 = team.agents
    db.session.execute(sa.delete(AgentConnection).where(AgentConnection.user_id.in_([a1, a2])))
    db.session.get(User, a0).presence = "away"
    db.session.commit()
    waiting = arrive(team.shop)
    assert assignee(waiting) is None, "away and offline agents take nothing"
    user = db.session.get(User, a2)
    assert assignment.presence_of(user) == "offline"
    assignment.connected(a2, "tab-1")  # a2 opens the console
    assert assignee(waiting) == a2
    # A stale connection (its process died: no heartbeat) does not count as present.
    db.session.execute(
        sa.update(AgentConnection).where(AgentConnection.user_id == a2).values(seen_at=utcnow() - timedelta(minutes=5))
    )
    db.session.commit()
    assert assignment.presence_of(db.session.get(User, a2)) == "offline"


def test_several_tabs_count_once_and_closing_one_keeps_the_agent_online(app, team):
    a0 = team.agents[0]
    user = db.session.get(User, a0)
    assignment.connected(a0, "tab-2")
    assignment.disconnected(a0, "tab-2")
    assert assignment.presence_of(user) == "online", "the fixture's other tab is still open"
    db.session.execute(sa.delete(AgentConnection).where(AgentConnection.user_id == a0))
    db.session.commit()
    assert assignment.presence_of(user) == "offline"


def test_a_returning_buyer_sticks_to_the_agent_who_served_them(app, team):
    _a0, _a1, _a2 = team.agents
    openid = "o_returning_buyer"
    first = arrive(team.shop, openid)
    served_by = assignee(first)
    conversations.send_reply(
        db.session.get(User, served_by), first, uuid.uuid4().hex, "text", {"text": "您好，马上为您处理"}
    )
    conversations.resolve(db.session.get(User, served_by), first)
    # Make the sticky agent the busiest one (still under capacity): stickiness wins over load.
    others = [a for a in team.agents if a != served_by]
    arrive(team.shop)  # goes to someone else (fewest open)
    again = arrive(team.shop, openid)
    assert again != first and assignee(again) == served_by
    # Beyond 24 hours the buyer is anyone's.
    conversations.resolve(db.session.get(User, served_by), again)
    customer = db.session.scalar(sa.select(Customer).where(Customer.openid == openid))
    customer.last_agent_at = utcnow() - timedelta(hours=25)
    db.session.commit()
    later = arrive(team.shop, openid)
    assert assignee(later) in others or open_counts([served_by]).get(served_by, 0) <= min(
        open_counts(others).values()
    )


def test_sticky_agent_away_means_normal_assignment(app, team):
    a0 = team.agents[0]
    openid = "o_sticky_away"
    customer = store.ensure_customer(team.shop, openid)
    customer.last_agent_id, customer.last_agent_at = a0, utcnow()
    db.session.get(User, a0).presence = "away"
    db.session.commit()
    assert assignee(arrive(team.shop, openid)) != a0


def test_transfers_and_the_queue_follow_the_role_rules(app, team):
    a0, _a1, _a2 = team.agents
    supervisor = make_user("lead", role=Role.SUPERVISOR, shops=[db.session.get(User, a0).shops[0]])
    db.session.commit()
    conversation_id = arrive(team.shop)
    owner = db.session.get(User, assignee(conversation_id))
    stranger = db.session.get(User, next(a for a in team.agents if a != owner.id))
    with pytest.raises(conversations.DeskError) as refused:
        assignment.assign(stranger, conversation_id, stranger.id)
    assert refused.value.code == "forbidden"
    with pytest.raises(conversations.DeskError) as refused:
        assignment.assign(owner, conversation_id, team.outsider)
    assert refused.value.code == "invalid", "only to someone serving the shop"
    summary = assignment.assign(owner, conversation_id, stranger.id)
    assert summary["assignee"]["id"] == stranger.id
    summary = assignment.assign(supervisor, conversation_id, owner.id)
    assert summary["assignee"]["id"] == owner.id
    # Back to the queue: someone else with capacity takes it, not the agent who gave it back.
    assignment.assign(owner, conversation_id, None)
    assert assignee(conversation_id) not in (None, owner.id)


def test_concurrent_arrivals_never_exceed_capacity(app, team):
    """Twenty buyers at once from eight threads: six seats, six assigned (two each), fourteen queued."""
    results: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def buyers(n: int):
        with app.app_context():
            try:
                start.wait()
                for _ in range(n):
                    results.append(arrive(team.shop))
            except BaseException as exc:
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=buyers, args=(n,)) for n in (3, 3, 3, 3, 2, 2, 2, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == 20
    db.session.expire_all()
    loads = open_counts(team.agents)
    assert loads == {a: 2 for a in team.agents}
    queued = db.session.scalar(
        sa.select(sa.func.count()).where(
            Conversation.status == ConversationStatus.OPEN, Conversation.assignee_id.is_(None)
        )
    )
    assert queued == 14


def test_the_console_hears_of_a_new_buyer_once_as_assigned_with_their_tags(app, team):
    """The first message of a conversation: one conversation.updated with the assignee already set
    (plus conversation.assigned), the buyer's tags from the same statement that locked the conversation."""
    openid = "o_tagged_buyer"
    customer = store.ensure_customer(team.shop, openid)
    db.session.flush()
    db.session.add_all([CustomerTag(shop_id=team.shop, customer_id=customer.id, tag=t) for t in ("VIP", "回头客")])
    db.session.commit()
    heard = []

    def listen(_shop_id, **kwargs):
        heard.append(kwargs)

    events.conversation_changed.connect(listen)
    try:
        conversation_id = arrive(team.shop, openid, "第一句")
        arrive(team.shop, openid, "第二句")
    finally:
        events.conversation_changed.disconnect(listen)
    first, second = heard
    assert first["reason"] == "new" and first["assigned"] is True
    assert first["conversation"]["id"] == conversation_id
    assert first["conversation"]["assignee"]["id"] in team.agents
    assert first["conversation"]["customer"]["tags"] == ["VIP", "回头客"]
    assert first["message"]["text"] == "第一句"
    assert second["reason"] == "message" and second["conversation"]["assignee"] == first["conversation"]["assignee"]
    assert second["conversation"]["customer"]["tags"] == ["VIP", "回头客"]
    assert second["conversation"]["last_seq"] == 2 and second["conversation"]["unread_count"] == 2


def test_a_message_pushed_again_after_its_conversation_was_resolved_opens_nothing(app, team):
    payload = {
        "Event": inbox.MESSAGE_EVENT,
        "FromUserName": "o_pushes_twice",
        "msg_id": "msg-pushed-twice",
        "msg_type": "text",
        "text": {"content": "在吗"},
        "CreateTime": int(utcnow().timestamp()),
    }
    inbox.handle(team.shop, payload)
    db.session.commit()
    conversation = db.session.scalar(sa.select(Conversation))
    conversation.status = ConversationStatus.RESOLVED
    db.session.commit()
    assert inbox.handle(team.shop, payload) == []  # the platform's late re-delivery
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversation)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1


def test_when_assigning_fails_the_console_still_hears_and_no_busy_reply_goes_out(app, team, monkeypatch):
    busy = AutoReplyConfig(shop_id=team.shop, busy_enabled=True, busy_text="忙", work_start="00:00", work_end="00:00")
    db.session.add(busy)
    db.session.commit()
    intake.forget_settings()

    def broken(*args, **kwargs):
        raise RuntimeError("assignment lock timed out")

    monkeypatch.setattr(assignment, "assign_now", broken)
    heard = []
    events.conversation_changed.connect(listen := lambda _shop, **kw: heard.append(kw))
    try:
        # Announced by ids only: the intake assigns after the commit (as on SQLite).
        payload = {"FromUserName": "o_unlucky", "msg_id": "m-unlucky", "msg_type": "text", "text": {"content": "hi"}}
        stored = store.store_buyer_message(team.shop, payload)
        db.session.commit()
        ids = {"conversation_id": stored.conversation.id, "message_id": stored.message.id}
        events.emit(events.buyer_message_received, team.shop, new_conversation=True, **ids)
    finally:
        events.conversation_changed.disconnect(listen)
    (event,) = heard
    assert event["message"]["text"] == "hi" and event["conversation"]["assignee"] is None
    assert db.session.scalar(sa.select(sa.func.count()).where(Message.auto_kind == "busy")) == 0


def test_assign_now_answers_the_current_state_when_someone_else_took_it(app, team):
    conversation_id = arrive(team.shop)
    taken_by = assignee(conversation_id)
    assert taken_by in team.agents
    again = assignment.assign_now(conversation_id)
    assert again.now is False and again.agent_id == taken_by
    assert again.summary["assignee"]["id"] == taken_by and again.summary["id"] == conversation_id
    assert assignment.try_assign(conversation_id) is None, "announces nothing new"


def _buyer_push(openid: str) -> dict:
    return {
        "Event": inbox.MESSAGE_EVENT,
        "FromUserName": openid,
        "msg_id": uuid.uuid4().hex,
        "msg_type": "text",
        "text": {"content": "在吗"},
        "CreateTime": int(utcnow().timestamp()),
    }


def test_a_new_conversation_leaves_the_assignment_lock_as_soon_as_it_is_assigned(app, team):
    """PostgreSQL: the lock, the pick and the commit go together, so when the assignment returns
    the opening transaction is committed (another connection sees the conversation assigned) and
    the lock is free, before the inbox's own commit."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the assignment lock is PostgreSQL's; SQLite assigns after the commit")
    inbox.handle(team.shop, _buyer_push("o_quick"))
    with db.engine.connect() as other:
        row = other.execute(
            sa.select(Conversation.assignee_id, Message.text)
            .join(Message, Message.conversation_id == Conversation.id)
            .join(Customer, Customer.id == Conversation.customer_id)
            .where(Customer.openid == "o_quick")
        ).one()
        assert row.assignee_id in team.agents and row.text == "在吗"
        free = other.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(assignment.ASSIGNMENT_LOCK_KEY)))
        other.rollback()
    assert free is True
    db.session.commit()  # nothing left to commit
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1


def test_a_failed_assignment_rolls_the_opening_back_and_the_push_is_handled_once_later(app, team, monkeypatch):
    """An error in the statements sent with the commit (here the lock's) rolls back everything the
    push stored: the event goes back to the queue with the reason, and its retry files it once."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the assignment lock is PostgreSQL's; SQLite assigns after the commit")
    payload = _buyer_push("o_retried")
    assert inbox.receive(team.shop, payload, "plaintext of the push")
    db.session.commit()
    monkeypatch.setattr(assignment, "_LOCK_SQL", "SELECT pg_advisory_xact_lock(%s), 1 / 0")
    assert inbox.process_claimed(inbox.claim()) == 0
    db.session.expire_all()
    event = db.session.scalar(sa.select(InboxEvent))
    assert event.status == InboxStatus.PENDING and "division by zero" in event.last_error
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Conversation)) == 0

    monkeypatch.undo()
    event.next_attempt_at = utcnow()
    db.session.commit()
    assert inbox.process_claimed(inbox.claim()) == 1
    db.session.expire_all()
    assert db.session.scalar(sa.select(InboxEvent.status)) == InboxStatus.DONE
    (conversation,) = db.session.scalars(sa.select(Conversation)).all()
    assert conversation.assignee_id in team.agents
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 1
