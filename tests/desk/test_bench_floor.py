"""bench/floor_app.py, the floor `bench/chat.py` measures push -> agent against: it must do what it
says (commit a row, then reach the agent's room) and leave every other URL to the desk."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from werkzeug.test import Client

from app.extensions import db
from bench import floor_app


@pytest.fixture
def probe(app):
    with app.app_context(), db.engine.begin() as connection:
        floor_app.create_table(connection)
    yield Client(floor_app.FloorProbe(app))
    with app.app_context(), db.engine.begin() as connection:
        floor_app.drop_table(connection)


def test_a_probe_is_committed_then_reaches_its_agent_only(app, world, sock, probe):
    agent, other = sock("agent_a"), sock("agent_b")

    response = probe.post(floor_app.PATH, json={"id": 7, "user_id": world.users["agent_a"]})

    assert response.status_code == 200 and response.get_data() == b"success"
    assert agent.received("bench.floor") == [{"id": 7}]
    assert other.received("bench.floor") == []
    with app.app_context():
        body = db.session.scalar(sa.text("SELECT body FROM bench_floor WHERE id = 7"))
    assert json.loads(body) == {"id": 7, "user_id": world.users["agent_a"]}


def test_every_other_request_goes_on_to_the_desk(probe):
    assert probe.get(floor_app.PATH).status_code == 404  # only a POST is the probe: the desk has no such page
    assert probe.get("/login").status_code == 200
