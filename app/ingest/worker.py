"""Background queue workers: threads that work the inbox (received pushes) and the outbox (calls to
the platform) as soon as something is stored.

The webhook route wakes the inbox workers after each commit and the console wakes the outbox workers
after each queued reply, so work is usually picked up within milliseconds. Work put off to a later
time (a refund's per-order spacing, a retry's backoff, an API block) wakes them when it falls due
(``wake_at``); they also look every second on their own (other processes' deferrals, expired leases).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from flask import Flask, current_app

from app.db import utcnow
from app.extensions import db
from app.ingest import inbox

log = logging.getLogger(__name__)
EXTENSION_KEY = "channeldesk.inbox_workers"
OUTBOX_KEY = "channeldesk.outbox_workers"


class QueueWorkers:
    """Threads that claim and process a durable queue (``claim(batch)`` -> Claim, ``process(claim)``)."""

    def __init__(
        self,
        app: Flask,
        claim: Callable,
        process: Callable,
        threads: int = 4,
        batch: int = 10,
        name: str = "queue",
        poll_seconds: float = 1.0,
    ):
        self.app = app
        self.poll_seconds = poll_seconds
        self.claim, self.process = claim, process
        self.batch = batch
        # Wake-ups waiting for a thread: each wake-up rouses one idle thread (not all of them: a
        # herd of threads claiming one new event costs a query each and finds nothing).
        self._wakeups = 0
        self._idle = 0  # threads waiting in _wait
        lock = threading.Lock()
        self._ready = threading.Condition(lock)
        self._spare = threading.Condition(lock)  # an idle thread no wake-up is meant for yet
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(threads)]

    def start(self) -> QueueWorkers:
        for thread in self.threads:
            thread.start()
        return self

    def wake(self) -> None:
        with self._ready:
            # More wake-ups than threads change nothing: a woken thread drains until nothing is due.
            self._wakeups = min(self._wakeups + 1, len(self.threads))
            self._ready.notify()

    def stop(self) -> None:
        self.stopping.set()
        with self._ready:
            self._ready.notify_all()
            self._spare.notify_all()
        for thread in self.threads:
            thread.join(timeout=10)

    def wait_for_spare(self, timeout: float) -> bool:
        """Until a thread is idle that no wake-up is meant for yet (or ``timeout``): whether one is.
        A worker process takes wake-ups from Redis only then (``listen_for_wakes``), so a process
        whose threads are all busy leaves them to one that can start at once."""
        with self._spare:
            return self._spare.wait_for(lambda: self._idle > self._wakeups or self.stopping.is_set(), timeout=timeout)

    def _wait(self, timeout: float) -> None:
        """Until a wake-up is ours, or ``timeout`` (then look anyway: retries falling due, expired leases)."""
        with self._ready:
            self._idle += 1
            self._spare.notify_all()
            try:
                if self._ready.wait_for(lambda: self._wakeups > 0 or self.stopping.is_set(), timeout=timeout):
                    self._wakeups = max(0, self._wakeups - 1)
            finally:
                self._idle -= 1

    def _run(self) -> None:
        while not self.stopping.is_set():
            self._wait(timeout=self.poll_seconds)
            try:
                self.drain()
            except Exception:
                log.exception("%s worker failed; retrying in a second", threading.current_thread().name)
                self.stopping.wait(1.0)

    def drain(self) -> int:
        """Process until nothing is due; returns how many items were handled."""
        handled = 0
        with self.app.app_context():
            try:
                while not self.stopping.is_set():
                    claimed = self.claim(self.batch)
                    if not claimed.ids:
                        break
                    if len(claimed.ids) == self.batch:
                        self.wake()  # more waiting: let another thread help
                    handled += self.process(claimed)
            finally:
                db.session.remove()
        return handled


def InboxWorkers(app: Flask, threads: int = 4, batch: int = 2) -> QueueWorkers:  # noqa: N802 (a factory)
    # Small claims: an event never waits behind a long batch held by one thread.
    return QueueWorkers(app, inbox.claim, inbox.process_claimed, threads=threads, batch=batch, name="inbox")


def OutboxWorkers(app: Flask, threads: int = 4, batch: int = 5) -> QueueWorkers:  # noqa: N802 (a factory)
    from app import outbox

    return QueueWorkers(app, outbox.claim, outbox.process_claimed, threads=threads, batch=batch, name="outbox")


def start_workers(app: Flask, threads: int | None = None) -> QueueWorkers:
    """Start (once per app) this process's inbox and outbox workers; returns the inbox's."""
    with _start_lock:
        workers = app.extensions.get(EXTENSION_KEY)
        if workers is None:
            workers = InboxWorkers(app, threads=threads or app.config["INBOX_WORKER_THREADS"]).start()
            app.extensions[EXTENSION_KEY] = workers
        if app.extensions.get(OUTBOX_KEY) is None:
            app.extensions[OUTBOX_KEY] = OutboxWorkers(app, threads=app.config["OUTBOX_WORKER_THREADS"]).start()
    return workers


_start_lock = threading.RLock()


def stop_workers(app: Flask) -> None:
    """Stop this process's inbox and outbox threads on a clean shutdown: each finishes the batch it
    claimed (a row killed mid-batch would wait out its claim lease before another process takes it)."""
    for key in (EXTENSION_KEY, OUTBOX_KEY):
        workers = app.extensions.pop(key, None)
        if workers is not None:
            workers.stop()


def _ensure_started(app: Flask, key: str) -> QueueWorkers | None:
    workers = app.extensions.get(key)
    if workers is None and app.config["INBOX_WORKERS_IN_WEB"] and not app.testing:
        start_workers(app)
        workers = app.extensions.get(key)
    return workers


def wake(app: Flask) -> None:
    """Wake inbox workers: this process's (web processes start theirs on the first push received),
    or, when web processes run none, the worker processes' through Redis."""
    _wake(app, EXTENSION_KEY, "inbox")


def wake_outbox(app: Flask) -> None:
    """Wake outbox workers (started on first use in web processes), here or through Redis."""
    _wake(app, OUTBOX_KEY, "outbox")


class Alarm:
    """Calls ``fire`` at each time given to ``at`` (``time.monotonic()``), from one daemon thread
    started on first use; times that have fallen due together fire once. At most ``limit`` times
    are kept (beyond them, the workers' own polling finds the work a little later)."""

    def __init__(self, fire: Callable[[], None], name: str = "alarm", limit: int = 10_000):
        self._fire, self._name, self._limit = fire, name, limit
        self._due: list[float] = []  # a heap
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def at(self, when: float) -> None:
        with self._changed:
            if len(self._due) >= self._limit:
                return
            heapq.heappush(self._due, when)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0] > time.monotonic():
                    self._changed.wait(self._due[0] - time.monotonic() if self._due else None)
                now = time.monotonic()
                while self._due and self._due[0] <= now:
                    heapq.heappop(self._due)
            try:
                self._fire()
            except Exception:
                log.exception("%s: waking the workers failed", self._name)


# Deferred further than this, work is left to the workers' polling (no alarm kept for it).
ALARM_HORIZON = timedelta(minutes=10)
_QUEUE_KEYS = {"inbox": EXTENSION_KEY, "outbox": OUTBOX_KEY}


def wake_at(app: Flask, queue: str, when: datetime) -> None:
    """Wake ``queue``'s workers ("inbox", "outbox") when work put off until ``when`` (UTC) falls due:
    this process's, or through Redis one worker process's (as ``wake``). Without it the deferred
    work waited for the next poll, up to a second more: a second refund of an order would go out
    up to a second after the platform's per-order minute allowed it."""
    delay = (when - utcnow()).total_seconds()
    if delay > ALARM_HORIZON.total_seconds():
        return
    key = f"channeldesk.alarm.{queue}"
    alarm = app.extensions.get(key)
    if alarm is None:
        with _start_lock:
            alarm = app.extensions.get(key)
            if alarm is None:
                alarm = app.extensions[key] = Alarm(
                    lambda: _wake(app, _QUEUE_KEYS[queue], queue), name=f"{queue}-alarm"
                )
    alarm.at(time.monotonic() + max(0.0, delay))


def wake_when_due(queue: str, when: datetime) -> None:
    """``wake_at`` for the current app: the workers look again when a deferred inbox event or
    outbox call falls due, not at their next poll."""
    wake_at(current_app._get_current_object(), queue, when)


# Wake-ups kept in Redis for the worker processes when none is listening: more than any process
# has threads (each wake-up rouses one), so a restarted process still hears of work at once.
WAKE_BACKLOG = 64


def _wake(app: Flask, key: str, queue: str) -> None:
    workers = _ensure_started(app, key)
    if workers is not None:
        workers.wake()
    elif app.config.get("REDIS_URL") and not app.testing:
        try:
            name = wake_list(app, queue)
            pipe = _redis(app).pipeline(transaction=False)
            pipe.rpush(name, 1)
            pipe.ltrim(name, -WAKE_BACKLOG, -1)
            pipe.execute()
        except Exception:  # the workers also look every second on their own
            log.warning("could not publish a %s wake-up", queue, exc_info=True)


def wake_list(app: Flask, queue: str) -> str:
    """The Redis list of wake-ups for ``queue`` ("inbox", "outbox"): one entry per piece of new
    work, each taken by ONE worker process (``BLPOP``). A publish to every process woke a thread in
    each: all but one of them claimed nothing, a claim statement and a commit each."""
    return f"{app.config['SOCKETIO_CHANNEL']}:wake:{queue}"


_redis_clients: dict[str, object] = {}


def _redis(app: Flask):
    import redis

    url = app.config["REDIS_URL"]
    client = _redis_clients.get(url)
    if client is None:
        client = _redis_clients[url] = redis.Redis.from_url(url)
    return client


def listen_for_wakes(app: Flask) -> list[threading.Thread]:
    """In a worker process: take wake-ups from Redis for this process's inbox and outbox workers, one
    thread per queue, each taking a wake-up only while one of its workers is idle and free for it
    (so a busy process leaves the work to another: ``QueueWorkers.wait_for_spare``)."""
    if not app.config.get("REDIS_URL"):
        return []
    listeners = []
    for key, queue in ((EXTENSION_KEY, "inbox"), (OUTBOX_KEY, "outbox")):
        thread = threading.Thread(target=_listen, args=(app, key, queue), name=f"wake-listener-{queue}", daemon=True)
        thread.start()
        listeners.append(thread)
    return listeners


def _listen(app: Flask, key: str, queue: str) -> None:
    name = wake_list(app, queue)
    while True:
        workers = app.extensions.get(key)
        if workers is None or workers.stopping.is_set():  # stopped (stop_workers): so is this listener
            return
        try:
            if not workers.wait_for_spare(timeout=1.0) or workers.stopping.is_set():
                continue  # (stopping: a wake-up taken now would be lost to the other processes)
            if _redis(app).blpop([name], timeout=1) is not None:
                workers.wake()
        except Exception as exc:
            # Redis restarting is expected now and then: one line, not a traceback.
            log.warning("wake-up listener lost Redis (%s); reconnecting in a second", type(exc).__name__)
            threading.Event().wait(1.0)
