"""Console fixtures: socket clients signed in as a user, agents made present, a served desk + simulator."""

from __future__ import annotations

import uuid

import pytest

from app.extensions import db, socketio
from app.models import AgentConnection
from tests.platform.conftest import desk, pushing_shop, simulator  # noqa: F401 (fixtures)

NS = "/desk"


def request_id() -> str:
    return uuid.uuid4().hex


class Sock:
    """A signed-in Socket.IO test client on /desk, with acknowledged calls."""

    def __init__(self, app, client):
        self.sio = socketio.test_client(app, namespace=NS, flask_test_client=client)
        assert self.sio.is_connected(NS), "the console socket was refused"

    def call(self, event: str, data: dict | None = None) -> dict:
        return self.sio.emit(event, data or {}, namespace=NS, callback=True)

    def ok(self, event: str, data: dict | None = None) -> dict:
        answer = self.call(event, data)
        assert answer["ok"], answer
        return answer

    def received(self, name: str | None = None) -> list:
        return [m["args"][0] for m in self.sio.get_received(NS) if name is None or m["name"] == name]

    def close(self) -> None:
        if self.sio.is_connected(NS):
            self.sio.disconnect(namespace=NS)


@pytest.fixture
def sock(app, login):
    opened: list[Sock] = []

    def _sock(username: str) -> Sock:
        s = Sock(app, login(username))
        opened.append(s)
        return s

    yield _sock
    for s in opened:
        s.close()


def make_present(user_id: int, sid: str | None = None) -> str:
    """An agent with a live console connection (what a connected tab records)."""
    sid = sid or uuid.uuid4().hex
    db.session.add(AgentConnection(sid=sid, user_id=user_id))
    db.session.commit()
    return sid
