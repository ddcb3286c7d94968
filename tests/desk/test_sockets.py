"""The /desk namespace: authentication, acknowledgements, rooms, and shop access of every event."""

from __future__ import annotations

import inspect

import pytest
import sqlalchemy as sa

from app.desk.sockets import DeskNamespace
from app.extensions import db
from app.models import Conversation, Message, OutboxCall, User
from tests.desk.conftest import request_id

# Every client event, with a payload aimed at shop B's conversation/message (filled in per test).
EVENTS = {
    "conversation.open": lambda b: {"conversation_id": b.conversation_id},
    "conversation.read": lambda b: {"conversation_id": b.conversation_id},
    "message.send": lambda b: {"conversation_id": b.conversation_id, "request_id": request_id(), "text": "hijack"},
    "message.retry": lambda b: {"message_id": b.message_id},
    "note.add": lambda b: {"conversation_id": b.conversation_id, "text": "hijack"},
    "conversation.resolve": lambda b: {"conversation_id": b.conversation_id},
    "conversation.reopen": lambda b: {"conversation_id": b.conversation_id},
    "conversation.assign": lambda b: {"conversation_id": b.conversation_id, "user_id": None},
    "inbox.watch": lambda b: {"view": "all", "shop_id": b.shop_id},
    "sla.watch": lambda b: {"shop_id": b.shop_id},  # supervisors' SLA board (app/sla/realtime.py)
}
# Events that name no shop object: nothing to cross.
SELF_EVENTS = {"heartbeat", "presence.set", "conversation.close"}


def test_every_client_event_is_checked_for_shop_access():
    handlers = {
        name[3:].replace("_", ".", 1) for name, _ in inspect.getmembers(DeskNamespace) if name.startswith("on_")
    }
    handlers -= {"connect", "disconnect"}
    assert handlers == set(EVENTS) | SELF_EVENTS, "classify new socket events in EVENTS or SELF_EVENTS"


@pytest.fixture
def b_target(app, world):
    with app.app_context():
        message_id = db.session.scalar(
            sa.select(Message.id).where(Message.conversation_id == world.b.conversation_id, Message.seq == 2)
        )
    world.b.message_id = message_id
    return world.b


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_events_on_another_shop_are_not_found_and_change_nothing(event, app, world, b_target, sock):
    def state():
        with app.app_context():
            return (
                db.session.execute(sa.select(Conversation.__table__)).all(),
                db.session.execute(sa.select(Message.__table__)).all(),
                db.session.execute(sa.select(OutboxCall.__table__)).all(),
            )

    before = state()
    for username in ("agent_a", "supervisor_a"):
        answer = sock(username).call(event, EVENTS[event](b_target))
        assert answer["ok"] is False and answer["error"]["code"] == "not_found", (username, answer)
    assert state() == before


def test_events_on_ones_own_shop_work(app, world, sock):
    s = sock("agent_a")
    opened = s.ok("conversation.open", {"conversation_id": world.a.conversation_id})
    assert opened["conversation"]["unread_count"] == 0, "the assignee opening it reads it"
    note = s.ok("note.add", {"conversation_id": world.a.conversation_id, "text": "买家是老客户"})["message"]
    assert note["direction"] == "internal" and note["seq"] == 3
    # The note reached the conversation room (this tab) as message.created.
    assert any(m["message"]["id"] == note["id"] for m in s.received("message.created"))


def test_malformed_payloads_get_a_reason_not_a_crash(app, world, sock):
    s = sock("agent_a")
    for event, data in (
        ("message.send", {"conversation_id": "x", "request_id": request_id(), "text": "hi"}),
        ("message.send", {"conversation_id": world.a.conversation_id, "request_id": "short", "text": "hi"}),
        ("message.send", {"conversation_id": world.a.conversation_id, "request_id": request_id(), "text": "  "}),
        ("message.send", {"conversation_id": world.a.conversation_id, "request_id": request_id(), "text": "x" * 1001}),
        ("message.send", {"conversation_id": world.a.conversation_id, "request_id": request_id(), "msg_type": "exe"}),
        ("message.send", {"conversation_id": [1], "request_id": request_id(), "text": "hi"}),
        ("inbox.watch", {"view": "everything"}),
        ("presence.set", {"presence": "asleep"}),
        ("note.add", {"conversation_id": world.a.conversation_id}),
    ):
        answer = s.call(event, data)
        assert answer["ok"] is False and answer["error"]["code"] == "invalid", (event, data, answer)
        assert answer["error"]["message"]
    assert s.call("message.send", None)["error"]["code"] == "invalid"


def test_a_deactivated_user_is_cut_off_at_the_next_event(app, world, sock):
    s = sock("agent_a")
    with app.app_context():
        db.session.get(User, world.users["agent_a"]).is_active = False
        db.session.commit()
    answer = s.call("note.add", {"conversation_id": world.a.conversation_id, "text": "still here?"})
    assert answer["ok"] is False and answer["error"]["code"] == "unauthorized"
    assert not s.sio.is_connected("/desk")


def test_watch_rooms_follow_the_view(app, world, sock):
    watcher = sock("supervisor_a")
    agent = sock("agent_a")
    watcher.ok("inbox.watch", {"view": "all", "shop_id": None})
    watcher.received()
    agent.ok("note.add", {"conversation_id": world.a.conversation_id, "text": "看一下"})
    updates = watcher.received("conversation.updated")
    assert updates and updates[-1]["conversation"]["id"] == world.a.conversation_id
    assert updates[-1]["message"]["text"] == "看一下"
    watcher.ok("inbox.watch", {"view": "mine"})
    agent.ok("note.add", {"conversation_id": world.a.conversation_id, "text": "再看一下"})
    assert not watcher.received("conversation.updated"), "the mine view watches no shop room"


def test_a_user_who_loses_a_shop_stops_hearing_it_at_the_next_event(app, world, sock):
    from app.models import user_shops

    watcher = sock("supervisor_a")
    watcher.ok("inbox.watch", {"view": "all", "shop_id": None})
    watcher.ok("conversation.open", {"conversation_id": world.a.conversation_id})
    with app.app_context():
        db.session.execute(sa.delete(user_shops).where(user_shops.c.user_id == world.users["supervisor_a"]))
        db.session.commit()
    watcher.ok("heartbeat")
    watcher.received()
    sock("agent_a").ok("note.add", {"conversation_id": world.a.conversation_id, "text": "内部消息"})
    assert not watcher.received(), "no event of a shop the user no longer serves"
