"""Signing out ends the user's open consoles at once: every tab's socket hears ``session.ended`` and
is disconnected by the server (other processes' through the message queue), instead of receiving
events until its next heartbeat finds the session void."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import AgentConnection
from tests.desk.conftest import NS, Sock


def test_signing_out_disconnects_every_console_of_the_user(app, world, login):
    first_tab = login("agent_a")
    tabs = [Sock(app, first_tab), Sock(app, login("agent_a"))]
    other_user = Sock(app, login("agent_b"))
    for tab in (*tabs, other_user):
        tab.received()
    assert first_tab.post("/logout").status_code == 302
    for tab in tabs:
        assert not tab.sio.is_connected(NS), "the server closed the socket"
        # What reached the tab before the close (the test client stops reading once disconnected).
        told = [p["args"][0] for p in tab.sio.queue if p["namespace"] == NS and p["name"] == "session.ended"]
        assert told == [{"reason": "signed_out"}], "each console was told why first"
    assert other_user.sio.is_connected(NS) and other_user.received("session.ended") == []
    with app.app_context():
        users = set(db.session.scalars(sa.select(AgentConnection.user_id)))
        db.session.remove()
    assert users == {world.users["agent_b"]}, "only the other user's console is still recorded as live"
    other_user.close()
