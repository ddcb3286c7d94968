"""Background jobs (APScheduler 3.x): per-shop pollers, the inbox and outbox safety nets, the
assignment queue's periodic drain.

One scheduler per deployment: embedded in `flask serve` for the demo (one process, no lock needed),
or `flask scheduler` as its own process in production. With Redis, several `flask scheduler`
processes may run: the one holding the lease (app/leader.py) runs the jobs, the others wait paused
and take over within seconds when it dies.

Jobs are module-level functions with fixed ids, run inside an app context. Every run goes through
``guarded``: it runs only while this process holds the lease (when it runs under one), and on
PostgreSQL only while it holds an advisory lock named after the job, so a job still running in a
leader that just lost its lease (a pause, a Redis hiccup) is never run a second time at once by the
new leader. The advisory lock lives on the job's own connection and dies with it (a killed process
frees its locks at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from flask import Flask

from app.extensions import db
from app.models import Shop

log = logging.getLogger(__name__)
_app: Flask | None = None
# Set by `flask scheduler` when it runs under a Redis lease (app/leader.py); None: run always.
leadership = None


def _advisory_key(job_id: str) -> int:
    """A stable signed 64-bit key per job id (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.blake2b(f"scheduler:{job_id}".encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.contextmanager
def job_lock(job_id: str):
    """Yields True when this process may run the job now (PostgreSQL: a session advisory lock on a
    connection of its own; elsewhere: one process, APScheduler's max_instances suffices)."""
    engine = db.engine
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = _advisory_key(job_id)
    with engine.connect() as conn:
        got = conn.scalar(sa.select(sa.func.pg_try_advisory_lock(key)))
        conn.commit()
        try:
            yield bool(got)
        finally:
            if got:
                try:
                    conn.scalar(sa.select(sa.func.pg_advisory_unlock(key)))
                    conn.commit()
                except Exception:
                    # Never hand a connection holding the lock back to the pool.
                    conn.invalidate()
                    raise


def guarded(job_id: str, func, *args) -> None:
    """Run one job if this process leads (or runs unled) and no other run of it is under way."""
    lead = leadership
    if lead is not None and not lead.holds():
        return
    with _app.app_context():
        try:
            with job_lock(job_id) as free:
                if not free:
                    log.info("job %s is still running elsewhere; this run is skipped", job_id)
                    return
                if lead is not None and not lead.holds():
                    return  # the lease ran out while waiting for the lock
                started = time.time()
                try:
                    func(*args)
                finally:
                    if lead is not None:
                        from app import leader

                        lead.record_run(leader.runs_key(_app.config), job_id, started, time.time())
        finally:
            db.session.remove()


def _add(scheduler: BaseScheduler, job_id: str, func, seconds: float, args: tuple = (), **options) -> None:
    scheduler.add_job(
        guarded,
        "interval",
        seconds=seconds,
        args=(job_id, func, *args),
        id=job_id,
        replace_existing=True,
        max_instances=1,
        coalesce=True,
        **options,
    )


def sync_job(kind: str, shop_id: int) -> None:
    from app.ingest.pollers import SYNCS

    with _app.app_context():
        try:
            shop = db.session.get(Shop, shop_id)
            if shop is None or not shop.is_active:
                return
            result = SYNCS[kind](shop)
            if result.listed or result.errors:
                log.info(
                    "shop %s %s: listed %d, changed %d, errors %s",
                    shop_id,
                    kind,
                    result.listed,
                    result.changed,
                    result.errors or "none",
                )
        except Exception:
            log.exception("shop %s: %s sync crashed", shop_id, kind)
        finally:
            db.session.remove()


def drain_inbox_job() -> None:
    from app.ingest.worker import InboxWorkers

    # A one-off drain in this thread: covers processes that run no inbox worker threads.
    InboxWorkers(_app, threads=0).drain()


def drain_outbox_job() -> None:
    from app.ingest.worker import OutboxWorkers

    OutboxWorkers(_app, threads=0).drain()


def assignment_job() -> None:
    """The queue's safety net: assign what waits (missed triggers, agents back online), prune dead tabs."""
    from app.desk import assignment

    with _app.app_context():
        try:
            assignment.prune_connections()
            assigned = assignment.drain_queue()
            if assigned:
                log.info("assigned %d queued conversations", assigned)
        except Exception:
            log.exception("assignment job failed")
        finally:
            db.session.remove()


def rules_sweep_job() -> None:
    """The rules' safety net: evaluations for waiting after-sales that have none (see app/rules/live.py)."""
    from app.rules import live

    with _app.app_context():
        try:
            queued = live.sweep()
            if queued:
                log.info("queued %d missed rule evaluations", queued)
        except Exception:
            log.exception("rules sweep failed")
        finally:
            db.session.remove()


def reconcile_job(scheduler: BaseScheduler) -> None:
    """Keep one poller job per active shop and kind, at the configured intervals."""
    with _app.app_context():
        try:
            shop_ids = set(db.session.scalars(sa.select(Shop.id).where(Shop.is_active)))
        finally:
            db.session.remove()
    config = _app.config
    intervals = {
        "orders": config["POLL_ORDERS_SECONDS"],
        "after_sales": config["POLL_AFTER_SALES_SECONDS"],
        "addresses": config["POLL_ADDRESSES_SECONDS"],
    }
    wanted = {f"sync:{kind}:{shop_id}": (kind, shop_id) for shop_id in shop_ids for kind in intervals}
    for job in scheduler.get_jobs():
        if job.id.startswith("sync:") and job.id not in wanted:
            job.remove()
    for job_id, (kind, shop_id) in wanted.items():
        if scheduler.get_job(job_id) is None:
            _add(scheduler, job_id, sync_job, intervals[kind], (kind, shop_id), next_run_time=_now())


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def configure(app: Flask, scheduler: BaseScheduler) -> BaseScheduler:
    global _app
    _app = app
    _add(scheduler, "shops:reconcile", reconcile_job, 60, (scheduler,), next_run_time=_now())
    _add(scheduler, "inbox:drain", drain_inbox_job, 2)
    _add(scheduler, "outbox:drain", drain_outbox_job, 2)
    _add(scheduler, "rules:sweep", rules_sweep_job, 30)
    _add(scheduler, "desk:assign", assignment_job, 15)
    return scheduler


# A run that starts late (a busy machine) still runs, once: APScheduler's default grace of one second
# would skip it, and the shop's data would wait a whole extra interval.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


def start_background(app: Flask) -> BackgroundScheduler:
    from app.sla import timer

    scheduler = configure(app, BackgroundScheduler(timezone="UTC", job_defaults=JOB_DEFAULTS))
    scheduler.start()
    timer.start(app)  # the reply clocks' deadline queue lives with the scheduler
    return scheduler
