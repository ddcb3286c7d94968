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

import contextvars
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from app import events
from app.db import (
    SECOND_LANE,
    claim_rows,
    claimed_ids,
    commit_keeping,
    in_turn,
    insert_new,
    keeping,
    sql_literals,
    utcnow,
)
from app.extensions import db
from app.ingest import store
from app.models import Customer, InboxEvent, InboxStatus, Shop
from app.platform import client_for
from app.platform.client import PlatformError

log = logging.getLogger(__name__)
# The claim lease (INBOX_LEASE_SECONDS, default 5 minutes), renewed before an event once a tenth of it
# has passed since the claim or the last renewal; it outlives the slowest single handling (timeouts x
# retries) many times.


def _lease() -> timedelta:
    return timedelta(seconds=current_app.config.get("INBOX_LEASE_SECONDS", 300))


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


def subject_of(payload: dict) -> str | None:
    """A buyer's messages share a subject: they are handled one after another, in arrival order."""
    if payload.get("Event") == MESSAGE_EVENT and payload.get("FromUserName"):
        return f"buyer:{payload['FromUserName']}"[:160]
    return None


def receive(shop_id: int, payload: dict, plaintext: str, connection: sa.Connection | None = None) -> bool:
    """Store a push once; True when it is new. The caller commits (its session, or ``connection``)."""
    executor = connection or db.session
    return insert_new(executor, InboxEvent.__table__, _event_values(shop_id, payload, plaintext)).scalar() is not None


def _event_values(shop_id: int, payload: dict, plaintext: str) -> dict:
    now = utcnow()
    return {
        "shop_id": shop_id,
        "dedupe_key": dedupe_key(payload, plaintext),
        "event": str(payload.get("Event", ""))[:64],
        "subject": subject_of(payload),
        "payload": payload,
        "status": InboxStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now,
    }


@dataclass(frozen=True)
class Claim:
    token: str
    ids: list[int]
    # The inbox's claims carry what each event needs (shop id, payload): no second read per event.
    items: dict[int, tuple[int, dict]] = field(default_factory=dict)
    claimed_at: float = field(default_factory=time.monotonic)


def _mine(event_id: int, token: str):
    """The condition that an event is still held by this claim (its lease was not taken over)."""
    return sa.and_(
        InboxEvent.id == event_id, InboxEvent.status == InboxStatus.PROCESSING, InboxEvent.claim_token == token
    )


@functools.cache
def _held_update() -> sa.Update:
    """``UPDATE inbox_events SET <the keys given> WHERE`` the event is still held by the claim (bound:
    ``event_id``, ``token``; the same condition as ``_mine``), built once: every event runs one."""
    table = InboxEvent.__table__
    return sa.update(table).where(
        table.c.id == sa.bindparam("event_id"),
        table.c.status == InboxStatus.PROCESSING,
        table.c.claim_token == sa.bindparam("token"),
    )


@functools.cache
def _finish_statement() -> sa.Update:
    """Done (``processed_at`` given at execution)."""
    table = InboxEvent.__table__
    return _held_update().values(status=InboxStatus.DONE, attempts=table.c.attempts + 1, last_error=None)


# Literal, to match the partial indexes' predicate (app/models/integration.py) in prepared statements.
UNFINISHED = sql_literals(InboxStatus.PENDING.value, InboxStatus.PROCESSING.value)


@functools.cache
def _claim_statement(dialect: str, limit: int, lane: str = SECOND_LANE) -> sa.Update:
    """The claim, built once per dialect, batch size and lane (building it costs more than running
    it); ``now``, ``lease_until`` and ``token`` are bound per call. The first lane: buyer messages."""
    now = sa.bindparam("now", type_=InboxEvent.__table__.c.next_attempt_at.type)
    # Pending, or processing with its lease run out (its worker died). The status test matches
    # ix_inbox_events_unfinished, so the claim reads unfinished events in id order and stops early.
    due = sa.and_(InboxEvent.status.in_(UNFINISHED), InboxEvent.next_attempt_at <= now)

    def candidates(messages_only: bool) -> sa.Select:
        # matches ix_inbox_events_messages_unfinished when messages_only
        lane_due = sa.and_(due, InboxEvent.subject.is_not(None)) if messages_only else due
        picked = (
            sa.select(InboxEvent.id)
            # A buyer's next message waits until the one before it is handled (chat order = arrival order).
            .where(lane_due, in_turn(InboxEvent, UNFINISHED, "subject"))
            .order_by(InboxEvent.id)
            .limit(limit)
        )
        return picked.with_for_update(skip_locked=True, of=InboxEvent) if dialect == "postgresql" else picked

    return (
        sa.update(InboxEvent)
        .where(claimed_ids(InboxEvent.id, dialect, lane, candidates))
        .values(
            status=InboxStatus.PROCESSING,
            next_attempt_at=sa.bindparam("lease_until", type_=InboxEvent.__table__.c.next_attempt_at.type),
            claim_token=sa.bindparam("token", type_=InboxEvent.__table__.c.claim_token.type),
        )
        .returning(InboxEvent.id, InboxEvent.shop_id, InboxEvent.payload)
        .execution_options(synchronize_session=False)
    )


def claim(limit: int = 20) -> Claim:
    """Take up to ``limit`` due events for this worker, under a fresh claim token (committed).

    One ``UPDATE ... WHERE id IN (due rows) RETURNING id``: atomic on SQLite (one writer at a time),
    and on PostgreSQL the subquery's ``FOR UPDATE SKIP LOCKED`` keeps concurrent claimers apart. A
    claim is a lease: a worker that dies lets its events come back when the lease runs out.
    """
    now = utcnow()
    token = uuid.uuid4().hex
    params = {"now": now, "lease_until": now + _lease(), "token": token}
    dialect = db.engine.dialect.name
    # Two lanes: buyer messages first (no platform call, and a person is waiting for each), then
    # everything (orders and after-sales fetch their details: in a livestream's burst of
    # after-sales, a buyer's message no longer waits behind every push that came before it).
    rows = claim_rows(db.session.connection(), lambda lane: _claim_statement(dialect, limit, lane), params)
    items = {event_id: (shop_id, payload) for event_id, shop_id, payload in rows}
    db.session.commit()
    return Claim(token, sorted(items), items)


def _renew(event_id: int, token: str) -> bool:
    """Extend the lease before working on one event; False if another worker took it over."""
    params = {"event_id": event_id, "token": token, "next_attempt_at": utcnow() + _lease()}
    result = db.session.connection().execute(_held_update(), params)
    db.session.commit()
    return result.rowcount == 1


Announcement = Callable[[], None]
_announcing = contextvars.ContextVar("inbox_announcing", default=False)


def announcing() -> bool:
    """True while an inbox worker announces what an event stored (in its own thread, after the
    commit): work an announcement queues may be done right here, depth first (``rules.live``)."""
    return _announcing.get()


def process_claimed(claimed: Claim) -> int:
    """Handle claimed events one by one, each in its own transaction. Returns how many succeeded.

    The event's status changes only while this claim still holds it: the ``UPDATE ... WHERE
    claim_token = ...`` (``_finish``) is in the same transaction as what the event stored, so if the
    lease was taken over meanwhile, this worker's work is rolled back rather than applied twice.
    """
    done = 0
    renewed_at = claimed.claimed_at
    renew_after = _lease().total_seconds() / 10
    for event_id in claimed.ids:
        # A lease renewed (or claimed) within a tenth of it has most of it left: no takeover is
        # possible yet. Later events of a claim that waited on slow platform calls renew first.
        if time.monotonic() - renewed_at > renew_after:
            if not _renew(event_id, claimed.token):
                continue
            renewed_at = time.monotonic()
        shop_id, payload = claimed.items[event_id]
        try:
            # A buyer message makes no platform call: its event is marked done first, so a new
            # conversation's assignment can end the transaction (on PostgreSQL it sends the global
            # assignment lock, its pick and the commit together; the commit below then has nothing
            # left to do). Other events are marked after their platform calls: no row is locked
            # while the platform answers.
            done_first = payload.get("Event") == MESSAGE_EVENT
            if done_first and not _finish(event_id, claimed.token):
                continue
            keep: list = []
            announcements = handle(shop_id, payload, keep)
            if not done_first and not _finish(event_id, claimed.token):
                continue
            # The rows as just stored stay loaded while the announcements use them: a rule
            # evaluated inline decides on them without reading them again.
            commit_keeping(db.session, *keep)
        except Exception as exc:
            db.session.rollback()
            if not isinstance(exc, PlatformError):
                log.exception("inbox event %s failed", event_id)
            _retry_or_fail(event_id, claimed.token, exc)
            continue
        done += 1
        marker = _announcing.set(True)
        try:
            with keeping(db.session, *keep):
                for announce in announcements:
                    try:
                        announce()
                    except Exception:  # the event is handled; a subscriber's failure must not stall the batch
                        db.session.rollback()
                        log.exception("announcing inbox event %s failed", event_id)
        finally:
            _announcing.reset(marker)
            # A subscriber that failed inside a signal (logged there) may have left the session in
            # a failed transaction: the next event starts clean. What was kept is read afresh by
            # the next event that uses it (a buyer message keeps nothing: nothing more to do).
            db.session.rollback()
            if keep:
                db.session.expire_all()
    return done


def _finish(event_id: int, token: str) -> bool:
    """Mark a claimed event done in the current transaction (the caller commits); False, rolled
    back, if the lease was taken over meanwhile: the other worker's result stands."""
    params = {"event_id": event_id, "token": token, "processed_at": utcnow()}
    finished = db.session.connection().execute(_finish_statement(), params)
    if finished.rowcount != 1:
        db.session.rollback()
        return False
    return True


def _retry_or_fail(event_id: int, token: str, exc: Exception) -> None:
    """Back to the queue with backoff, deferred past an API block, or failed for good (visible)."""
    event = db.session.scalar(sa.select(InboxEvent).where(_mine(event_id, token)))
    if event is None:
        db.session.rollback()
        return
    event.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    until = getattr(exc, "until", None)
    if until is not None:
        # Daily quota, per-minute quota, missing authorisation: not a failure of this event;
        # wait for the block to lift, without using up attempts.
        event.status = InboxStatus.PENDING
        event.next_attempt_at = until
        db.session.commit()
        _wake_when_due(until)
        return
    event.attempts += 1
    retryable = exc.retryable if isinstance(exc, PlatformError) else True
    due = None
    if retryable and event.attempts < current_app.config["INBOX_MAX_ATTEMPTS"]:
        event.status = InboxStatus.PENDING
        base = current_app.config["INBOX_RETRY_BASE_SECONDS"]
        event.next_attempt_at = due = utcnow() + timedelta(seconds=min(300.0, base * 2 ** (event.attempts - 1)))
    else:
        event.status = InboxStatus.FAILED
        log.error("inbox event %s failed for good: %s", event_id, event.last_error)
    db.session.commit()
    if due is not None:
        _wake_when_due(due)


def _wake_when_due(when) -> None:
    from app.ingest import worker  # (worker imports this module)

    worker.wake_when_due("inbox", when)


def handle(shop_id: int, payload: dict, keep: list | None = None) -> list[Announcement]:
    """Apply one push; returns the announcements to make once the transaction is committed.

    ``keep`` gets the rows an order's or after-sale's push stored (its shop, the order and its
    lines, the after-sale and its buyer), for the caller to keep loaded while it announces them
    (a buyer message's announcements are the console's, and read what they need)."""
    keep = [] if keep is None else keep
    kind = payload.get("Event")
    if kind == MESSAGE_EVENT:
        stored = store.store_buyer_message(shop_id, payload)
        if not stored.created:
            return []
        conversation, assigned = stored.conversation, None
        if stored.new_conversation:
            # Assignment can happen in this very transaction: one commit instead of two.
            opening = events.conversation_opening.send(shop_id, conversation=conversation, tags=stored.tags)
            for _receiver, changed in opening:
                if changed is not None:
                    conversation, assigned = changed, changed.assignee_id is not None
        data = {
            "conversation_id": conversation.id,
            "message_id": stored.message.id,
            "new_conversation": stored.new_conversation,
            # What the console needs, as committed: subscribers need not read it again.
            "message_row": stored.message,
            "conversation": conversation,
            "tags": stored.tags,
            "assigned": assigned,
        }
        announcements = [lambda: events.emit(events.buyer_message_received, shop_id, **data)]
        if stored.turn is not None:
            turn = stored.turn
            announcements.append(lambda: events.emit(events.sla_turn_started, shop_id, turn=turn))
        return announcements
    # Every HTTP call first, then the writes: no database lock is held while the platform answers.
    shop = db.session.get(Shop, shop_id)
    fetched_at = utcnow()
    if kind in ORDER_EVENTS:
        order_id = (payload.get("order_info") or {}).get("order_id")
        if not order_id:
            return []
        detail = client_for(shop).get_order(str(order_id))
        upserted = store.upsert_order(shop.id, detail, fetched_at)
        keep += [shop, *_with_lines(upserted.row)]
        return [announce_order(shop.id, upserted)]
    if kind == AFTER_SALE_EVENT:
        info = payload.get("finder_shop_aftersale_status_update") or {}
        after_sale_id = info.get("after_sale_order_id")
        if not after_sale_id:
            return []
        client = client_for(shop)
        after_sale = None
        if not store.after_sale_known_since(shop.id, str(after_sale_id), info.get("status"), payload.get("CreateTime")):
            after_sale = client.get_after_sale(str(after_sale_id))
        # The order changes with its after-sales (counts, update_time) but gets no push of its own.
        order = client.get_order(str(info["order_id"])) if info.get("order_id") else None
        keep.append(shop)
        # The order first: the after-sale then links to it without looking it up (and a new order
        # is linked at once, not at the after-sale's next fetch). Announced after the after-sale.
        order_upserted = store.upsert_order(shop.id, order, fetched_at) if order is not None else None
        announcements = []
        if after_sale is not None:
            upserted = store.upsert_after_sale(
                shop.id, after_sale, fetched_at, order_upserted.row if order_upserted is not None else None
            )
            keep += [upserted.row, upserted.customer]
            announcements.append(announce_after_sale(shop.id, upserted))
        if order_upserted is not None:
            keep += _with_lines(order_upserted.row)
            announcements.append(announce_order(shop.id, order_upserted))
        return announcements
    log.info("shop %s: push %r stored, nothing to do for it", shop.id, kind)
    return []


def _with_lines(order) -> list:
    """An order and the lines loaded with it (none read for this)."""
    return [order, *(order.items if "items" in sa.inspect(order).dict else ())]


def announce_order(shop_id: int, result: store.Upserted) -> Announcement:
    if not result.changed:
        return lambda: None
    row = result.row
    ids = {"order_pk": row.id, "order_id": row.order_id, "status": row.status, "created": result.created,
           "openid": row.openid, "unionid": row.unionid}
    return lambda: events.emit(events.order_changed, shop_id, **ids)


def announce_after_sale(shop_id: int, result: store.Upserted, buyer: dict | None = None) -> Announcement:
    """``buyer``: ``buyer_of`` the row, when the caller has it already."""
    if not result.changed:
        return lambda: None
    row = result.row
    ids = {
        "after_sale_pk": row.id,
        "after_sale_order_id": row.after_sale_order_id,
        "status": row.status,
        "type": row.type,
        "created": result.created,
        "refund_amount_fen": row.refund_amount_fen,
        **(buyer if buyer is not None else buyer_of(row, result.customer)),
    }
    return lambda: events.emit(events.after_sale_changed, shop_id, **ids)


def buyer_of(after_sale, customer=None) -> dict:
    """Who an after-sale's signals are about (openid, unionid, order id): what the sidebar's rooms
    are named by. ``customer``: the buyer's row if the caller holds it (no query then)."""
    if customer is None or customer.id != after_sale.customer_id:
        customer = db.session.get(Customer, after_sale.customer_id) if after_sale.customer_id else None
    return {"openid": after_sale.openid, "unionid": customer.unionid if customer is not None else None,
            "order_id": after_sale.order_id}
