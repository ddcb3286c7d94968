"""The desk's web app with one bench-only URL in front of it: the floor of push -> agent.

``gunicorn 'bench.floor_app:create()'`` serves everything ``wsgi:app`` serves, plus ``POST /bench-floor``
(``bench/chat.py --floor-rate``): the least any design that stores a push before showing it can do.
The request arrives in the same web process as the platform's pushes, one row is inserted into
``bench_floor`` and committed on the desk's own engine, and one event is emitted to the agent's room
through the desk's own Socket.IO server (with ``REDIS_URL``: published to Redis, delivered by the
process's listener, as every desk event is). No verification, decryption, inbox, worker, conversation
or assignment: what push -> agent pays on top of this is the desk's own work; what this pays on top
of the bare emit is the HTTP request and one commit.

Never part of the desk: only the benchmark starts a web process with this module.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from app.desk.realtime import NAMESPACE, user_room
from app.extensions import db, socketio

PATH = "/bench-floor"
_insert = sa.text("INSERT INTO bench_floor (id, body) VALUES (:id, :body)")


def create_table(connection: sa.Connection) -> None:
    """The probe's table, in the benchmark's own database (before the web process starts)."""
    connection.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_floor (id integer PRIMARY KEY, body text NOT NULL)"))


def drop_table(connection: sa.Connection) -> None:
    connection.execute(sa.text("DROP TABLE IF EXISTS bench_floor"))


class FloorProbe:
    """WSGI: ``POST /bench-floor`` with ``{"id": n, "user_id": agent}`` is answered here (row ``n``
    committed, then ``bench.floor`` ``{"id": n}`` emitted to the agent's room); the rest goes on."""

    def __init__(self, flask_app):
        self.flask_app = flask_app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.flask_app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        probe = json.loads(environ["wsgi.input"].read(length))
        with self.flask_app.app_context():
            with db.engine.begin() as connection:
                connection.execute(_insert, {"id": probe["id"], "body": json.dumps(probe)})
            socketio.emit("bench.floor", {"id": probe["id"]}, to=user_room(probe["user_id"]), namespace=NAMESPACE)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
        return [b"success"]


def create():
    """The web process's app (gunicorn's factory call): the desk as wsgi.py starts it, the probe in front."""
    from wsgi import app as desk

    return FloorProbe(desk)
