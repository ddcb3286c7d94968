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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from app.db import utcnow
from app.extensions import db
from app.ingest import inbox, store
from app.models import AfterSale, Order, ReturnAddress, Shop, SyncCursor
from app.platform import client_for
from app.platform.client import PlatformClient, PlatformError

log = logging.getLogger(__name__)

ORDER_SLICE = timedelta(days=7)
AFTER_SALE_SLICE = timedelta(hours=24)
UPSERT_BATCH = 100


@dataclass
class SyncResult:
    kind: str
    listed: int = 0
    skipped: int = 0  # listed, but stored from a fetch made after their slice ended
    changed: int = 0
    slices: int = 0
    synced_until: datetime | None = None
    errors: list[str] = field(default_factory=list)


def cursor_for(shop_id: int, kind: str) -> SyncCursor:
    lookup = sa.select(SyncCursor).where(SyncCursor.shop_id == shop_id, SyncCursor.kind == kind)
    cursor = db.session.scalar(lookup)
    if cursor is None:
        store.insert_or_get(SyncCursor, {"shop_id": shop_id, "kind": kind, "items_last_run": 0}, lookup)
        cursor = db.session.scalar(lookup)
    return cursor


def _fetch_all(client: PlatformClient, fetch: Callable[[PlatformClient, str], dict], ids: list[str]) -> list:
    """Fetch details concurrently; returns details and PlatformErrors in the order of ``ids``."""

    def one(item_id: str):
        try:
            return fetch(client, item_id)
        except PlatformError as exc:
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


def _windowed_sync(
    shop: Shop,
    kind: str,
    model,
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
    id_column = model.order_id if kind == "orders" else model.after_sale_order_id
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
            fresh = _fresh_ids(model, id_column, shop_id, ids, end + margin)
            result.skipped += len(fresh)
            failures = _store_details(
                shop_id, client, [i for i in ids if i not in fresh], fetch, upsert, announce, result
            )
            if failures:
                raise failures[0]
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
    cursor.last_error = None
    cursor.items_last_run = result.listed
    db.session.commit()
    return result


def _store_details(shop_id, client, ids, fetch, upsert, announce, result: SyncResult) -> list[PlatformError]:
    failures: list[PlatformError] = []
    for offset in range(0, len(ids), UPSERT_BATCH):
        batch = ids[offset : offset + UPSERT_BATCH]
        announcements = []
        for detail in _fetch_all(client, fetch, batch):
            if isinstance(detail, PlatformError):
                failures.append(detail)
                continue
            outcome = upsert(shop_id, detail)
            if outcome.changed:
                result.changed += 1
            announcements.append(announce(shop_id, outcome))
        db.session.commit()
        for announcement in announcements:
            announcement()
    return failures


def _order_page(client: PlatformClient, start: int, end: int, next_key: str | None):
    answer = client.list_orders(start, end, next_key=next_key)
    return answer.get("order_id_list") or [], answer.get("next_key"), bool(answer.get("has_more"))


def _after_sale_page(client: PlatformClient, start: int, end: int, next_key: str | None):
    answer = client.list_after_sales(start, end, next_key=next_key)
    return answer.get("after_sale_order_id_list") or [], answer.get("next_key"), bool(answer.get("has_more"))


def sync_orders(shop: Shop, until: datetime | None = None) -> SyncResult:
    return _windowed_sync(
        shop,
        "orders",
        Order,
        ORDER_SLICE,
        _order_page,
        lambda c, i: c.get_order(i),
        store.upsert_order,
        inbox.announce_order,
        until,
    )


def sync_after_sales(shop: Shop, until: datetime | None = None) -> SyncResult:
    return _windowed_sync(
        shop,
        "after_sales",
        AfterSale,
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
            page = client.list_addresses(offset=len(ids), limit=100)
            ids.extend(page)
            if len(page) < 100:
                break
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
