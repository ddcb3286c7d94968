"""Background inbox workers: threads that process received pushes as soon as they are stored.

The webhook route wakes them after each commit, so a push is usually handled within milliseconds;
they also look every second on their own (events due for a retry, other processes' expired leases).
"""

from __future__ import annotations

import logging
import threading

from flask import Flask

from app.extensions import db
from app.ingest import inbox

log = logging.getLogger(__name__)
EXTENSION_KEY = "channeldesk.inbox_workers"


class InboxWorkers:
    def __init__(self, app: Flask, threads: int = 4, batch: int = 10):
        self.app = app
        self.batch = batch
        self.wake_event = threading.Event()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, name=f"inbox-{i}", daemon=True) for i in range(threads)]

    def start(self) -> InboxWorkers:
        for thread in self.threads:
            thread.start()
        return self

    def wake(self) -> None:
        self.wake_event.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wake_event.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wake_event.wait(timeout=1.0)
            self.wake_event.clear()
            try:
                self.drain()
            except Exception:
                log.exception("inbox worker failed; retrying in a second")
                self.stopping.wait(1.0)

    def drain(self) -> int:
        """Process until nothing is due; returns how many events were handled."""
        handled = 0
        with self.app.app_context():
            try:
                while not self.stopping.is_set():
                    claimed = inbox.claim(self.batch)
                    if not claimed.ids:
                        break
                    if len(claimed.ids) == self.batch:
                        self.wake_event.set()  # more waiting: let the other threads help
                    handled += inbox.process_claimed(claimed)
            finally:
                db.session.remove()
        return handled


def start_workers(app: Flask, threads: int | None = None) -> InboxWorkers:
    """Start (once per app) the inbox workers of this process."""
    workers = app.extensions.get(EXTENSION_KEY)
    if workers is None:
        workers = InboxWorkers(app, threads=threads or app.config["INBOX_WORKER_THREADS"]).start()
        app.extensions[EXTENSION_KEY] = workers
    return workers


_start_lock = threading.Lock()


def wake(app: Flask) -> None:
    """Wake this process's inbox workers; web processes start theirs on the first push received."""
    workers = app.extensions.get(EXTENSION_KEY)
    if workers is None and app.config["INBOX_WORKERS_IN_WEB"] and not app.testing:
        with _start_lock:
            workers = start_workers(app)
    if workers is not None:
        workers.wake()
