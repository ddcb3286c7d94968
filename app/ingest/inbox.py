"""The durable inbox: every decrypted push is stored before it is acknowledged, then processed once.

- ``receive``: insert with a dedupe key (the platform re-delivers a push up to ~10 times); a repeat
  is recognised by the unique key and stored nothing.
- ``claim`` / ``process_claimed``: any process may work the inbox. A claim marks rows ``processing``
  with a lease (``next_attempt_at``); PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so two workers
  never take the same row, and a crashed worker's rows come back when the lease runs out.
- Handling an event fetches what the push only names (order, after-sale details) and stores it; a
  retryable platform error puts the event back with backoff, a permanent one (or too many attempts)
  marks it ``failed`` with the reason, visible to admins.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app import events
from app.db import utcnow
from app.extensions import db
from app.ingest import store
from app.models import InboxEvent, InboxStatus, Shop
from app.platform import client_for
from app.platform.client import PlatformError

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)
ORDER_EVENTS = frozenset(
    {
        "channels_ec_order_new",
        "channels_ec_order_pay",
        "channels_ec_order_cancel",
        "channels_ec_order_wait_shipping",
        "channels_ec_order_deliver",
        "channels_ec_order_confirm",
        "channels_ec_order_settle",
        "channels_ec_order_ext_info_update",
    }
)
AFTER_SALE_EVENT = "channels_ec_aftersale_update"
MESSAGE_EVENT = "commkf_send_msg_to_kf"


def dedupe_key(payload: dict, plaintext: str) -> str:
    """Buyer messages by msg_id; every other event by the digest of its exact decrypted text."""
    if payload.get("Event") == MESSAGE_EVENT and payload.get("msg_id"):
        return f"msg:{payload['msg_id']}"
    return f"sha256:{hashlib.sha256(plaintext.encode()).hexdigest()}"


def receive(shop_id: int, payload: dict, plaintext: str) -> bool:
    """Store a push once; True when it is new. The caller commits."""
    table = InboxEvent.__table__
    dialect_insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    stmt = (
        dialect_insert(table)
        .values(
            shop_id=shop_id,
            dedupe_key=dedupe_key(payload, plaintext),
            event=str(payload.get("Event", ""))[:64],
            payload=payload,
            status=InboxStatus.PENDING,
            attempts=0,
            next_attempt_at=utcnow(),
            received_at=utcnow(),
        )
        .on_conflict_do_nothing()
        .returning(table.c.id)
    )
    return db.session.execute(stmt).scalar() is not None


def claim(limit: int = 50) -> list[int]:
    """Take up to ``limit`` due events for this worker; returns their ids (committed).

    One ``UPDATE ... WHERE id IN (due rows) RETURNING id``: atomic on SQLite (one writer at a time),
    and on PostgreSQL the subquery's ``FOR UPDATE SKIP LOCKED`` keeps concurrent claimers apart.
    """
    now = utcnow()
    due = sa.or_(
        sa.and_(InboxEvent.status == InboxStatus.PENDING, InboxEvent.next_attempt_at <= now),
        sa.and_(InboxEvent.status == InboxStatus.PROCESSING, InboxEvent.next_attempt_at <= now),  # lease ran out
    )
    candidates = sa.select(InboxEvent.id).where(due).order_by(InboxEvent.id).limit(limit)
    if db.engine.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    stmt = (
        sa.update(InboxEvent)
        .where(InboxEvent.id.in_(candidates.scalar_subquery()), due)
        .values(status=InboxStatus.PROCESSING, next_attempt_at=now + LEASE)
        .returning(InboxEvent.id)
        .execution_options(synchronize_session=False)
    )
    ids = sorted(db.session.execute(stmt).scalars())
    db.session.commit()
    return ids


Announcement = Callable[[], None]


def process_claimed(event_ids: list[int]) -> int:
    """Handle claimed events one by one, each in its own transaction. Returns how many succeeded."""
    done = 0
    for event_id in event_ids:
        event = db.session.get(InboxEvent, event_id)
        if event is None or event.status != InboxStatus.PROCESSING:
            db.session.rollback()
            continue
        shop = db.session.get(Shop, event.shop_id)
        try:
            announcements = handle(shop, event.payload)
        except PlatformError as exc:
            db.session.rollback()
            _retry_or_fail(event_id, exc, retryable=exc.retryable)
            continue
        except Exception as exc:
            db.session.rollback()
            log.exception("inbox event %s (%s) failed", event_id, event.event if event else "?")
            _retry_or_fail(event_id, exc, retryable=True)
            continue
        event.status = InboxStatus.DONE
        event.processed_at = utcnow()
        event.attempts += 1
        event.last_error = None
        db.session.commit()
        done += 1
        for announce in announcements:
            announce()
    return done


def _retry_or_fail(event_id: int, exc: Exception, retryable: bool) -> None:
    event = db.session.get(InboxEvent, event_id)
    event.attempts += 1
    event.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    max_attempts = current_app.config["INBOX_MAX_ATTEMPTS"]
    if retryable and event.attempts < max_attempts:
        event.status = InboxStatus.PENDING
        base = current_app.config["INBOX_RETRY_BASE_SECONDS"]
        event.next_attempt_at = utcnow() + timedelta(seconds=min(300.0, base * 2 ** (event.attempts - 1)))
    else:
        event.status = InboxStatus.FAILED
        log.error("inbox event %s failed for good: %s", event_id, event.last_error)
    db.session.commit()


def handle(shop: Shop, payload: dict) -> list[Announcement]:
    """Apply one push; returns the announcements to make once the transaction is committed."""
    kind = payload.get("Event")
    if kind == MESSAGE_EVENT:
        stored = store.store_buyer_message(shop.id, payload)
        if not stored.created:
            return []
        ids = {
            "conversation_id": stored.conversation.id,
            "message_id": stored.message.id,
            "new_conversation": stored.new_conversation,
        }
        return [lambda: events.emit(events.buyer_message_received, shop.id, **ids)]
    # Every HTTP call first, then the writes: no database lock is held while the platform answers.
    if kind in ORDER_EVENTS:
        order_id = (payload.get("order_info") or {}).get("order_id")
        if not order_id:
            return []
        detail = client_for(shop).get_order(str(order_id))
        return [announce_order(shop.id, store.upsert_order(shop.id, detail))]
    if kind == AFTER_SALE_EVENT:
        info = payload.get("finder_shop_aftersale_status_update") or {}
        after_sale_id = info.get("after_sale_order_id")
        if not after_sale_id:
            return []
        client = client_for(shop)
        after_sale = client.get_after_sale(str(after_sale_id))
        # The order changes with its after-sales (counts, update_time) but gets no push of its own.
        order = client.get_order(str(info["order_id"])) if info.get("order_id") else None
        announcements = [announce_after_sale(shop.id, store.upsert_after_sale(shop.id, after_sale))]
        if order is not None:
            announcements.append(announce_order(shop.id, store.upsert_order(shop.id, order)))
        return announcements
    log.info("shop %s: push %r stored, nothing to do for it", shop.id, kind)
    return []


def announce_order(shop_id: int, result: store.Upserted) -> Announcement:
    if not result.changed:
        return lambda: None
    row = result.row
    ids = {"order_pk": row.id, "order_id": row.order_id, "status": row.status, "created": result.created}
    return lambda: events.emit(events.order_changed, shop_id, **ids)


def announce_after_sale(shop_id: int, result: store.Upserted) -> Announcement:
    if not result.changed:
        return lambda: None
    row = result.row
    ids = {
        "after_sale_pk": row.id,
        "after_sale_order_id": row.after_sale_order_id,
        "status": row.status,
        "type": row.type,
        "created": result.created,
    }
    return lambda: events.emit(events.after_sale_changed, shop_id, **ids)


def backlog() -> dict[str, int]:
    rows = db.session.execute(sa.select(InboxEvent.status, sa.func.count()).group_by(InboxEvent.status)).all()
    return {str(status): count for status, count in rows}


def payload_text(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)
