"""What /healthz reports: the database, Redis, the scheduler's leader, poller lag, queue backlogs.

The answer is 503 when this process cannot work (the database, or Redis when configured, does not
answer): a load balancer then takes it out of rotation. Everything else is reported with
``warnings`` and the status ``degraded`` but still 200, because a web process without a scheduler
or with a lagging poller still serves agents well. No secrets: shop ids, counts and ages only.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Flask

from app import tenancy
from app.extensions import db
from app.models import InboxEvent, OutboxCall, Shop, SyncCursor

# A poller further behind than this many of its intervals is reported (a run may be in progress).
LAG_INTERVALS = 3
BACKLOG_WARNING = 1000


def _database() -> dict:
    started = time.perf_counter()
    db.session.execute(sa.text("SELECT 1"))
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _redis(app: Flask) -> tuple[dict, object | None]:
    url = app.config.get("REDIS_URL")
    if not url:
        return {"configured": False, "ok": None}, None
    from app import leader

    client = _clients.get(url)
    if client is None:
        client = _clients[url] = leader.redis_client(url, app.config["SCHEDULER_LEASE_SECONDS"])
    started = time.perf_counter()
    try:
        client.ping()
    except Exception as exc:
        app.logger.warning("health check: Redis unreachable: %s", type(exc).__name__)
        return {"configured": True, "ok": False}, None
    return {"configured": True, "ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}, client


_clients: dict[str, object] = {}


def _scheduler(app: Flask, client) -> dict:
    if app.extensions.get("channeldesk.embedded_scheduler") is not None:
        return {"mode": "in-process", "leader": "this process"}
    if client is None:
        return {"mode": "unknown", "leader": None}
    from app import leader

    return {"mode": "leased", **leader.status(client, leader.lock_key(app.config))}


def _pollers(app: Flask, now: datetime) -> tuple[list[dict], list[str]]:
    intervals = {
        "orders": app.config["POLL_ORDERS_SECONDS"],
        "after_sales": app.config["POLL_AFTER_SALES_SECONDS"],
        "addresses": app.config["POLL_ADDRESSES_SECONDS"],
    }
    cursor = SyncCursor
    rows = db.session.execute(
        sa.select(Shop.id, cursor.kind, cursor.synced_until, cursor.last_error_at, cursor.last_success_at)
        .join(SyncCursor, SyncCursor.shop_id == Shop.id, isouter=True)
        .where(Shop.is_active)
        .order_by(Shop.id, SyncCursor.kind)
    ).all()
    shops: dict[int, dict] = {}
    warnings = []
    for shop_id, kind, synced_until, error_at, success_at in rows:
        entry = shops.setdefault(shop_id, {"shop_id": shop_id, "lag_seconds": {}})
        if kind is None:
            continue
        lag = round((now - synced_until).total_seconds(), 1) if synced_until else None
        entry["lag_seconds"][kind] = lag
        failing = error_at is not None and (success_at is None or error_at > success_at)
        if failing:
            entry.setdefault("failing", []).append(kind)
        limit = intervals.get(kind, 60) * LAG_INTERVALS + app.config["SYNC_OVERLAP_SECONDS"]
        if lag is None or lag > limit:
            warnings.append(f"shop {shop_id} {kind} poller is behind")
    return list(shops.values()), warnings


def _backlog(model, unfinished: tuple, failed, now: datetime) -> dict:
    count, oldest = db.session.execute(
        sa.select(sa.func.count(), sa.func.min(model.id)).where(model.status.in_(unfinished))
    ).one()
    result = {"unfinished": count}
    if oldest is not None:
        created = model.received_at if model is InboxEvent else model.created_at
        first = db.session.scalar(sa.select(created).where(model.id == oldest))
        result["oldest_seconds"] = round((now - first).total_seconds(), 1) if first else None
    result["failed"] = db.session.scalar(sa.select(sa.func.count()).where(model.status == failed))
    return result


def report(app: Flask) -> tuple[dict, int]:
    from app.models.integration import InboxStatus, OutboxStatus

    body: dict = {"status": "ok"}
    warnings: list[str] = []
    try:
        body["database"] = _database()
    except Exception as exc:
        app.logger.warning("health check: database unreachable: %s", type(exc).__name__)
        db.session.rollback()
        body["database"] = {"ok": False}
    body["redis"], client = _redis(app)
    try:
        body["scheduler"] = _scheduler(app, client)
    except Exception as exc:  # Redis went away between the ping and this
        body["scheduler"] = {"leader": None, "error": type(exc).__name__}
    # Only a leased scheduler can be seen from here; without Redis there is nothing to check.
    if body["scheduler"].get("mode") != "unknown" and body["scheduler"].get("leader") is None:
        warnings.append("no scheduler holds the lead")
    if body["database"]["ok"]:
        now = datetime.now(UTC)
        try:
            with tenancy.system_scope(db.session):
                body["pollers"], lagging = _pollers(app, now)
                body["inbox"] = _backlog(
                    InboxEvent, (InboxStatus.PENDING, InboxStatus.PROCESSING), InboxStatus.FAILED, now
                )
                body["outbox"] = _backlog(
                    OutboxCall, (OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT), OutboxStatus.FAILED, now
                )
            warnings += lagging
            for queue in ("inbox", "outbox"):
                if body[queue]["unfinished"] > BACKLOG_WARNING:
                    warnings.append(f"{queue} backlog of {body[queue]['unfinished']}")
        except Exception as exc:
            app.logger.warning("health check: reading the queues failed: %s", type(exc).__name__)
            db.session.rollback()
            body["database"]["ok"] = False
    # Only the database makes a process useless: without Redis it still stores pushes and serves
    # the console (realtime degrades, sign-in throttles in memory), so taking every web process out
    # of the balancer during a Redis restart would turn a degradation into an outage.
    if body["redis"]["ok"] is False:
        warnings.append("redis is not answering: realtime events and wake-ups are degraded")
    down = not body["database"]["ok"]
    if down:
        body["status"] = "down"
    elif warnings:
        body["status"] = "degraded"
    body["warnings"] = warnings
    return body, 503 if down else 200
