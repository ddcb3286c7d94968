"""Pollers: read each shop's orders, after-sales and return addresses from the platform's list APIs.

Pushes already bring most changes within a second; polling is what makes the data complete anyway
(pushes lost while the desk was down, pushes turned off, a push the platform never sent).

Orders and after-sales are read by update time in windows: from the stored cursor minus an overlap
(changes stamped in the same second as the last read, clock skew, a list index that lags) up to a few
seconds ago, in slices the API allows (7 days for orders, 24 hours for after-sales), paging with
``next_key``. Details are fetched concurrently (bounded), stored by the idempotent upserts, and the
cursor moves only past a slice that was read completely: a desk down for three days catches up slice
by slice.

The overlap is read as a slice of its own, and a listed row we fetched after that slice ended (plus a
clock margin) is not fetched again: the list says its update time lies inside the slice, so it has not
changed since we fetched it (a later change would have stamped a later time). Without this, every
order would be fetched once per overlapping run.

A second pass lists by *creation* time and fetches only ids never stored. Reading by update time alone,
a new order that changes again just before a run (a livestream buyer asking for a refund seconds
after paying) has its update time past the run's window and would wait a whole extra interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import OperationalError

from app.db import utcnow
from app.extensions import db
from app.ingest import inbox, store
from app.models import AfterSale, Order, ReturnAddress, Shop, SyncCursor
from app.platform import client_for
from app.platform.client import NotAuthorized, PlatformClient, PlatformError

log = logging.getLogger(__name__)

ORDER_SLICE = timedelta(days=7)
AFTER_SALE_SLICE = timedelta(hours=24)
FETCH_BATCH = 100  # details fetched (concurrently) before they are stored


@dataclass
class SyncResult:
    kind: str
    listed: int = 0
    skipped: int = 0  # listed, but stored from a fetch made after their slice ended
    discovered: int = 0  # new rows found by the creation-time pass
    changed: int = 0
    slices: int = 0
    synced_until: datetime | None = None
    errors: list[str] = field(default_factory=list)


def cursor_for(shop_id: int, kind: str) -> SyncCursor:
    lookup = sa.select(SyncCursor).where(SyncCursor.shop_id == shop_id, SyncCursor.kind == kind)
    cursor = db.session.scalar(lookup)
    if cursor is None:
        cursor, _ = store.insert_or_get(SyncCursor, {"shop_id": shop_id, "kind": kind, "items_last_run": 0}, lookup)
    return cursor


def _fetch_all(client: PlatformClient, fetch: Callable[[PlatformClient, str], dict], ids: list[str]) -> list:
    """Fetch details concurrently; returns details and PlatformErrors in the order of ``ids``."""

    def one(item_id: str):
        try:
            return fetch(client, item_id)
        except PlatformError as exc:
            exc.item_id = item_id
            return exc

    workers = max(1, current_app.config["DETAIL_FETCH_CONCURRENCY"])
    if len(ids) <= 1 or workers == 1:
        return [one(i) for i in ids]
    with ThreadPoolExecutor(max_workers=min(workers, len(ids)), thread_name_prefix="fetch") as pool:
        return list(pool.map(one, ids))


def _fresh_ids(model, id_column, shop_id: int, ids: list[str], fetched_after: datetime) -> set[str]:
    """Of ``ids``, those stored from a fetch made after ``fetched_after``."""
    if not ids:
        return set()
    return set(
        db.session.scalars(
            sa.select(id_column).where(model.shop_id == shop_id, id_column.in_(ids), model.fetched_at > fetched_after)
        )
    )


def _slices(start: datetime, synced_until: datetime | None, end: datetime, span: timedelta):
    """The overlap (start -> last synced point) first, then forward in steps of at most ``span``."""
    if synced_until is not None and start < synced_until < end:
        yield start, synced_until
        start = synced_until
    while start < end:
        yield start, min(start + span, end)
        start = min(start + span, end)


def _stored_ids(model, id_column, shop_id: int, ids: list[str], fetched_after: datetime) -> set[str]:
    """Of ``ids``, those stored at all (the creation-time pass looks for new rows only)."""
    if not ids:
        return set()
    return set(db.session.scalars(sa.select(id_column).where(model.shop_id == shop_id, id_column.in_(ids))))


def _windowed_sync(
    shop: Shop,
    kind: str,
    model,
    id_column,
    skip: Callable,
    span: timedelta,
    list_page: Callable[[PlatformClient, int, int, str | None], tuple[list[str], str | None, bool]],
    fetch: Callable[[PlatformClient, str], dict],
    upsert: Callable[[int, dict], store.Upserted],
    announce: Callable[[int, store.Upserted], Callable[[], None]],
    until: datetime | None = None,
) -> SyncResult:
    config = current_app.config
    result = SyncResult(kind=kind)
    client = client_for(shop)
    cursor = cursor_for(shop.id, kind)
    cursor.last_run_at = utcnow()
    db.session.commit()
    end_of_run = until or utcnow() - timedelta(seconds=config["SYNC_SETTLE_SECONDS"])
    start = (cursor.synced_until or end_of_run - timedelta(days=config["SYNC_INITIAL_DAYS"])) - timedelta(
        seconds=config["SYNC_OVERLAP_SECONDS"]
    )
    shop_id = shop.id
    permanent: list[str] = []
    margin = timedelta(seconds=config["SYNC_CLOCK_MARGIN_SECONDS"])
    try:
        for slice_start, end in _slices(start, cursor.synced_until, end_of_run, span):
            if result.slices >= config["SYNC_MAX_SLICES_PER_RUN"]:
                break
            ids: list[str] = []
            next_key: str | None = None
            while True:
                page, next_key, has_more = list_page(
                    client, int(slice_start.timestamp()), int(end.timestamp()), next_key
                )
                ids.extend(page)
                if not has_more or not page:
                    break
            ids = list(dict.fromkeys(ids))
            result.listed += len(ids)
            fresh = skip(model, id_column, shop_id, ids, end + margin)
            result.skipped += len(fresh)
            failures = _store_details(
                shop_id, client, [i for i in ids if i not in fresh], fetch, upsert, announce, result
            )
            # Retryable trouble (busy, timeouts, quota, a block) holds the cursor: the slice is read
            # again next run. An item the platform refuses for good (not found, bad request) must not
            # pin the cursor forever: it is reported and passed.
            holding = [f for f in failures if f.retryable or f.until is not None or isinstance(f, NotAuthorized)]
            if holding:
                raise holding[0]
            for failure in failures:
                log.warning("shop %s: %s item %s skipped: %s", shop_id, kind, failure.item_id, failure)
                permanent.append(f"{failure.item_id}: {failure}")
            cursor = cursor_for(shop_id, kind)
            cursor.synced_until = end
            db.session.commit()
            result.slices += 1
            result.synced_until = end
    except PlatformError as exc:
        db.session.rollback()
        cursor = cursor_for(shop_id, kind)
        cursor.last_error = str(exc)[:2000]
        cursor.last_error_at = utcnow()
        cursor.items_last_run = result.listed
        db.session.commit()
        result.errors.append(str(exc))
        log.warning("shop %s: %s sync stopped: %s", shop_id, kind, exc)
        return result
    cursor = cursor_for(shop_id, kind)
    cursor.last_success_at = utcnow()
    cursor.last_error = (
        (f"{len(permanent)} item(s) refused by the platform: " + "; ".join(permanent[:3]))[:2000] if permanent else None
    )
    cursor.items_last_run = result.listed
    db.session.commit()
    result.errors.extend(permanent)
    return result


def _store_details(shop_id, client, ids, fetch, upsert, announce, result: SyncResult) -> list[PlatformError]:
    """Fetch details in batches (concurrently), then store each in a short transaction of its own.

    One row per transaction: pollers and inbox workers touch the same rows (an order, its buyer's
    customer row) in different orders, and long multi-row transactions would deadlock each other.
    """
    failures: list[PlatformError] = []
    for offset in range(0, len(ids), FETCH_BATCH):
        batch = ids[offset : offset + FETCH_BATCH]
        fetched_at = utcnow()  # before the calls: a change after this is not in what they return
        for detail in _fetch_all(client, fetch, batch):
            if isinstance(detail, PlatformError):
                failures.append(detail)
                continue
            outcome = _store_one(lambda d=detail, at=fetched_at: upsert(shop_id, d, at))
            if outcome.changed:
                result.changed += 1
            announce(shop_id, outcome)()
    return failures


def _store_one(write: Callable[[], store.Upserted], attempts: int = 3) -> store.Upserted:
    """Run one upsert and commit it; if the database picked it as a deadlock victim, do it again."""
    for attempt in range(1, attempts + 1):
        try:
            outcome = write()
            db.session.commit()
            return outcome
        except OperationalError as exc:
            db.session.rollback()
            if attempt == attempts or not _is_transient(exc):
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _is_transient(exc: OperationalError) -> bool:
    """Deadlock or serialisation failure (PostgreSQL), database locked (SQLite): worth one more try."""
    code = getattr(exc.orig, "sqlstate", None)
    return code in ("40P01", "40001") or "database is locked" in str(exc.orig)


def _order_page(by: str):
    def page(client: PlatformClient, start: int, end: int, next_key: str | None):
        answer = client.list_orders(start, end, next_key=next_key, by=by)
        return answer.get("order_id_list") or [], answer.get("next_key"), bool(answer.get("has_more"))

    return page


def _after_sale_page(by: str):
    def page(client: PlatformClient, start: int, end: int, next_key: str | None):
        answer = client.list_after_sales(start, end, next_key=next_key, by=by)
        return answer.get("after_sale_order_id_list") or [], answer.get("next_key"), bool(answer.get("has_more"))

    return page


def _two_passes(shop: Shop, kind: str, model, id_column, span, page, fetch, upsert, announce, until) -> SyncResult:
    """Changes by update time, then rows that are new by creation time (see the module docstring)."""
    changes = _windowed_sync(
        shop, kind, model, id_column, _fresh_ids, span, page("update"), fetch, upsert, announce, until
    )
    new = _windowed_sync(
        shop, f"{kind}_new", model, id_column, _stored_ids, span, page("create"), fetch, upsert, announce, until
    )
    changes.changed += new.changed
    changes.discovered = new.listed - new.skipped
    changes.errors += new.errors
    return changes


def sync_orders(shop: Shop, until: datetime | None = None) -> SyncResult:
    return _two_passes(
        shop,
        "orders",
        Order,
        Order.order_id,
        ORDER_SLICE,
        _order_page,
        lambda c, i: c.get_order(i),
        store.upsert_order,
        inbox.announce_order,
        until,
    )


def sync_after_sales(shop: Shop, until: datetime | None = None) -> SyncResult:
    return _two_passes(
        shop,
        "after_sales",
        AfterSale,
        AfterSale.after_sale_order_id,
        AFTER_SALE_SLICE,
        _after_sale_page,
        lambda c, i: c.get_after_sale(i),
        store.upsert_after_sale,
        inbox.announce_after_sale,
        until,
    )


def sync_addresses(shop: Shop) -> SyncResult:
    """All of the shop's addresses; ones the platform no longer lists are flagged, not deleted."""
    from app import events

    result = SyncResult(kind="addresses")
    client = client_for(shop)
    shop_id = shop.id
    cursor = cursor_for(shop_id, "addresses")
    cursor.last_run_at = utcnow()
    db.session.commit()
    try:
        ids: list[str] = []
        while True:
            # Until an empty page: the platform may cap the page below the limit we ask for.
            page = client.list_addresses(offset=len(ids), limit=100)
            if not page:
                break
            ids.extend(page)
        details = _fetch_all(client, lambda c, i: c.get_address(i), ids)
        errors = [d for d in details if isinstance(d, PlatformError)]
        if errors:
            raise errors[0]
        for detail in details:
            store.upsert_address(shop_id, detail)
        gone = db.session.scalars(
            sa.select(ReturnAddress).where(
                ReturnAddress.shop_id == shop_id,
                ReturnAddress.address_id.not_in(ids or [""]),
                ReturnAddress.deleted_on_platform.is_(False),
            )
        ).all()
        for address in gone:
            address.deleted_on_platform = True
        cursor = cursor_for(shop_id, "addresses")
        cursor.synced_until = cursor.last_success_at = utcnow()
        cursor.last_error = None
        cursor.items_last_run = result.listed = len(ids)
        db.session.commit()
        result.changed = len(gone)
        events.emit(events.addresses_synced, shop_id, count=len(ids), deleted=len(gone))
    except PlatformError as exc:
        db.session.rollback()
        cursor = cursor_for(shop_id, "addresses")
        cursor.last_error, cursor.last_error_at = str(exc)[:2000], utcnow()
        db.session.commit()
        result.errors.append(str(exc))
    return result


SYNCS: dict[str, Callable[[Shop], SyncResult]] = {
    "orders": sync_orders,
    "after_sales": sync_after_sales,
    "addresses": sync_addresses,
}


def health(shop_id: int) -> list[dict]:
    """Per poller: last success, lag (how far behind now the data is complete), last error."""
    now = utcnow()
    rows = db.session.scalars(sa.select(SyncCursor).where(SyncCursor.shop_id == shop_id).order_by(SyncCursor.kind))
    return [
        {
            "kind": row.kind,
            "synced_until": row.synced_until,
            "lag_seconds": int((now - row.synced_until).total_seconds()) if row.synced_until else None,
            "last_success_at": row.last_success_at,
            "last_run_at": row.last_run_at,
            "last_error": row.last_error,
            "last_error_at": row.last_error_at,
            "items_last_run": row.items_last_run,
        }
        for row in rows
    ]
