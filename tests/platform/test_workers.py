"""The queue workers' threads: a wake-up rouses one idle thread, and a process says whether it has
one free (worker processes take wake-ups from Redis only then: app/ingest/worker.py)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from types import SimpleNamespace

from app.db import utcnow
from app.ingest import worker
from app.ingest.worker import Alarm, QueueWorkers


def test_a_process_has_a_spare_thread_only_while_one_is_idle_and_not_spoken_for(app):
    release = threading.Event()
    claims = []

    def claim(batch: int):
        claims.append(threading.current_thread().name)
        if len(claims) <= 2:  # the two woken threads stay busy until released
            release.wait(10)
        return SimpleNamespace(ids=[])

    workers = QueueWorkers(app, claim, lambda claimed: 0, threads=2, name="spare-test").start()
    try:
        assert workers.wait_for_spare(5), "two idle threads"
        workers.wake()
        workers.wake()
        # Both threads are spoken for (woken, then busy claiming): nothing to spare.
        assert not workers.wait_for_spare(0.5)
        release.set()
        assert workers.wait_for_spare(5), "back to waiting once their claims end"
        assert len(set(claims[:2])) == 2, "each wake-up roused another thread"
    finally:
        release.set()
        workers.stop()


def test_an_alarm_fires_at_its_earliest_time_and_once_for_times_due_together():
    fired, first_fired, release = [], threading.Event(), threading.Event()

    def fire():
        fired.append(time.monotonic())
        first_fired.set()
        release.wait(10)

    alarm = Alarm(fire, name="alarm-test")
    now = time.monotonic()
    alarm.at(now + 3600)
    alarm.at(now + 0.05)  # earlier than the one it is waiting for: it wakes for this one
    assert first_fired.wait(10), "the earlier time fired without waiting for the later one"
    # While it fires, two more times fall due: after it, they fire once, together.
    alarm.at(time.monotonic() - 1)
    alarm.at(time.monotonic() - 1)
    release.set()
    deadline = time.monotonic() + 10
    while len(fired) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(fired) == 2, fired
    assert alarm._due == [now + 3600], "the hour-away time is still kept"


def test_work_put_off_wakes_the_workers_when_it_falls_due(app):
    """Workers that would look on their own only every minute are woken at the deferred time."""
    claimed = threading.Event()

    def claim(batch: int):
        claimed.set()
        return SimpleNamespace(ids=[])

    workers = QueueWorkers(app, claim, lambda claimed_: 0, threads=1, name="alarm-wake", poll_seconds=60).start()
    app.extensions[worker.OUTBOX_KEY] = workers
    try:
        assert workers.wait_for_spare(5)
        assert not claimed.is_set()
        worker.wake_at(app, "outbox", utcnow() + timedelta(milliseconds=100))
        assert claimed.wait(10), "woken at the deferred time"
    finally:
        app.extensions.pop(worker.OUTBOX_KEY, None)
        app.extensions.pop("channeldesk.alarm.outbox", None)
        workers.stop()


def test_work_put_off_for_long_keeps_no_alarm(app):
    kept = app.extensions.pop("channeldesk.alarm.inbox", None)  # earlier tests' retries may have made one
    try:
        worker.wake_at(app, "inbox", utcnow() + worker.ALARM_HORIZON + timedelta(minutes=1))
        assert "channeldesk.alarm.inbox" not in app.extensions, "the workers' polling finds it"
    finally:
        if kept is not None:
            app.extensions["channeldesk.alarm.inbox"] = kept
