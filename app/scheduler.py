"""Background jobs (APScheduler 3.x): per-shop pollers, the inbox and outbox safety nets, the
assignment queue's periodic drain.

One scheduler per deployment: embedded in `flask serve` for the demo, or `flask scheduler` as its own
process in production (a lock that makes a second one wait arrives with the production-shape work).
Jobs are module-level functions with fixed ids, run inside an app context, never two at once per id.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from flask import Flask

from app.extensions import db
from app.models import Shop

log = logging.getLogger(__name__)
_app: Flask | None = None


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
            scheduler.add_job(
                sync_job,
                "interval",
                seconds=intervals[kind],
                args=(kind, shop_id),
                id=job_id,
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                next_run_time=_now(),
            )


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def configure(app: Flask, scheduler: BaseScheduler) -> BaseScheduler:
    global _app
    _app = app
    scheduler.add_job(
        reconcile_job,
        "interval",
        seconds=60,
        args=(scheduler,),
        id="shops:reconcile",
        replace_existing=True,
        max_instances=1,
        coalesce=True,
        next_run_time=_now(),
    )
    scheduler.add_job(
        drain_inbox_job, "interval", seconds=2, id="inbox:drain", replace_existing=True, max_instances=1, coalesce=True
    )
    scheduler.add_job(
        drain_outbox_job,
        "interval",
        seconds=2,
        id="outbox:drain",
        replace_existing=True,
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        assignment_job, "interval", seconds=15, id="desk:assign", replace_existing=True, max_instances=1, coalesce=True
    )
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
