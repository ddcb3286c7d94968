"""The queue workers' threads: a wake-up rouses one idle thread, and a process says whether it has
one free (worker processes take wake-ups from Redis only then: app/ingest/worker.py)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from app.ingest.worker import QueueWorkers


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
