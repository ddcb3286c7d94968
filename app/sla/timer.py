"""The deadline queue: a thread that sleeps until the next clock falls due (warning, breach,
auto-reassign) and fires it — no periodic scan.

One queue runs in the process that runs the scheduler (``flask serve`` embedded, or ``flask
scheduler``). It loads the running turns from the database when it starts (the partial index of open
turns), then hears of new ones:

- in the same process, directly (``events.sla_turn_started`` -> ``schedule``);
- from other processes (``flask workers`` storing buyer messages) through Redis pub/sub on
  ``<SOCKETIO_CHANNEL>:sla``.

Firing claims the turn with ``UPDATE ... WHERE outcome = 'open' ... RETURNING`` (clock.fire), so a
second queue (a scheduler restarted while the old one still runs, a test) never announces a breach
twice. A reload every ``RELOAD_SECONDS`` is the safety net for a pub/sub message lost while Redis
was away: it re-reads the open turns, it does not decide anything by itself.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context

from app import events
from app.db import utcnow
from app.extensions import db

log = logging.getLogger(__name__)
EXTENSION_KEY = "channeldesk.sla_timer"
RELOAD_SECONDS = 60.0
KINDS = ("warn", "breach", "reassign")
RANK = {kind: rank for rank, kind in enumerate(KINDS)}  # due together: the warning before the breach


class DeadlineQueue:
    def __init__(self, app: Flask):
        self.app = app
        self._heap: list[tuple[datetime, int, int, str]] = []
        self._queued: set[tuple[int, str]] = set()
        self._ready = threading.Condition()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sla-deadlines", daemon=True)
        self.fired: list[tuple[str, int, float]] = []  # (kind, turn id, seconds late) of claims made here

    def start(self) -> DeadlineQueue:
        self.reload()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self._ready:
            self._ready.notify_all()
        self.thread.join(timeout=5)

    def add(self, turn_id: int, kind: str, when: datetime) -> None:
        with self._ready:
            if (turn_id, kind) in self._queued:
                return
            self._queued.add((turn_id, kind))
            heapq.heappush(self._heap, (when, RANK[kind], turn_id, kind))
            if self._heap[0][2:] == (turn_id, kind):
                self._ready.notify()  # the new item is the next one: sleep less

    def schedule(self, turn: dict) -> None:
        for kind, key in (("warn", "warn_at"), ("breach", "deadline_at"), ("reassign", "reassign_at")):
            when = turn.get(key)
            if when is not None:
                self.add(int(turn["id"]), kind, _as_datetime(when))

    def reload(self) -> int:
        """Queue every running turn's pending deadlines (on start, and as the safety net)."""
        from app.models import ReplyTurn, TurnOutcome
        from app.sla.policy import policy_for

        t = ReplyTurn.__table__
        with self.app.app_context():
            try:
                rows = db.session.execute(
                    sa.select(
                        t.c.id,
                        t.c.shop_id,
                        t.c.started_at,
                        t.c.warn_at,
                        t.c.deadline_at,
                        t.c.warned_at,
                        t.c.reassigned_at,
                        t.c.outcome,
                    ).where(t.c.closed_at.is_(None))  # still waiting (the one-running-clock index)
                ).all()
                for row in rows:
                    turn: dict = {"id": row.id}
                    if row.outcome == TurnOutcome.OPEN:  # breached ones wait for an answer, or a reassignment
                        turn["deadline_at"] = row.deadline_at
                        if row.warned_at is None:
                            turn["warn_at"] = row.warn_at
                    reassign = policy_for(row.shop_id).reassign_after_seconds
                    if reassign and row.reassigned_at is None:
                        turn["reassign_at"] = row.started_at + timedelta(seconds=reassign)
                    self.schedule(turn)
            finally:
                db.session.remove()
        return len(rows)

    def _next_due(self) -> tuple[datetime, int, int, str] | None:
        """Wait until the first item is due (or a wake-up); pop and return it, or None."""
        with self._ready:
            if not self._heap:
                self._ready.wait(timeout=RELOAD_SECONDS)
                return None
            wait = (self._heap[0][0] - utcnow()).total_seconds()
            if wait > 0:
                self._ready.wait(timeout=min(wait, RELOAD_SECONDS))
                return None
            item = heapq.heappop(self._heap)
            self._queued.discard((item[2], item[3]))
            return item

    def _run(self) -> None:
        from app.sla import clock

        reload_at = utcnow() + timedelta(seconds=RELOAD_SECONDS)
        while not self.stopping.is_set():
            try:
                if utcnow() >= reload_at:
                    reload_at = utcnow() + timedelta(seconds=RELOAD_SECONDS)
                    self.reload()
                item = self._next_due()
                if item is None or self.stopping.is_set():
                    continue
                when, _rank, turn_id, kind = item
                with self.app.app_context():
                    try:
                        if clock.fire(turn_id, kind) is not None:
                            self.fired.append((kind, turn_id, (utcnow() - when).total_seconds()))
                            del self.fired[:-1000]
                    finally:
                        db.session.remove()
            except Exception:
                log.exception("the SLA deadline queue failed; going on in a second")
                self.stopping.wait(1.0)


def _as_datetime(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def channel(app: Flask) -> str:
    return f"{app.config['SOCKETIO_CHANNEL']}:sla"


def start(app: Flask) -> DeadlineQueue:
    """Start this process's deadline queue (once per app), listening to other processes through Redis."""
    queue = app.extensions.get(EXTENSION_KEY)
    if queue is None:
        queue = app.extensions[EXTENSION_KEY] = DeadlineQueue(app).start()
        if app.config.get("REDIS_URL"):
            _listen(app, queue)
    return queue


def stop(app: Flask) -> None:
    queue = app.extensions.pop(EXTENSION_KEY, None)
    if queue is not None:
        queue.stop()


def _listen(app: Flask, queue: DeadlineQueue) -> None:
    from app.ingest.worker import _redis

    def run() -> None:
        while not queue.stopping.is_set():
            try:
                pubsub = _redis(app).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel(app))
                queue.reload()  # whatever started while we were not listening
                for message in pubsub.listen():
                    if queue.stopping.is_set():
                        break
                    queue.schedule(json.loads(message["data"]))
            except Exception:
                log.warning("SLA deadline listener lost Redis; reconnecting in a second", exc_info=True)
                threading.Event().wait(1.0)

    threading.Thread(target=run, name="sla-listener", daemon=True).start()


def _on_turn_started(_shop_id: int, turn: dict) -> None:
    if not has_app_context():
        return
    app = current_app._get_current_object()
    queue = app.extensions.get(EXTENSION_KEY)
    if queue is not None:
        queue.schedule(turn)
    elif app.config.get("REDIS_URL") and not app.testing:
        from app.ingest.worker import _redis

        payload = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in turn.items()}
        try:
            _redis(app).publish(channel(app), json.dumps(payload))
        except Exception:  # the queue's reload picks it up
            log.warning("could not publish a new reply clock", exc_info=True)


def install() -> None:
    events.sla_turn_started.connect(_on_turn_started)
