"""Store what the platform says: idempotent upserts of orders, after-sales, addresses and buyer messages.

Rules that keep data single and current, whoever calls (push processing, pollers, several processes):
- one row per platform id (unique constraints); a concurrent insert of the same id is caught and
  turned into an update of the winner's row;
- a detail older than the stored one (``update_time``) never overwrites it; with equal times, the
  later status in the lifecycle wins (the platform's times have one-second resolution);
- rows are locked while compared and written (``SELECT ... FOR UPDATE`` on PostgreSQL).
Callers own the transaction (commit) and announce changes (app/events.py) after committing.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.db import columns_of, insert_new, insert_new_row, sql_literals, utcnow
from app.extensions import db
from app.models import (
    AfterSale,
    Conversation,
    ConversationStatus,
    Customer,
    Message,
    MessageDirection,
    Order,
    OrderItem,
    ReturnAddress,
    SenderKind,
    Sku,
)
from app.models.chat import DeliveryState

# Lifecycle rank of after-sale statuses: with equal update_time, a higher rank is the newer state.
AFTER_SALE_RANK = {
    "MERCHANT_PROCESSING": 0,
    "USER_WAIT_RETURN": 1,
    "MERCHANT_WAIT_RECEIPT": 2,
    "USER_WAIT_CONFIRM": 2,
    "PLATFORM_REFUNDING": 3,
    "PLATFORM_REFUND_FAIL": 3,
    "MERCHANT_REFUND_RETRY_FAIL": 3,
}
TERMINAL_RANK = 4


def from_unix(value: Any) -> datetime | None:
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(seconds, UTC) if seconds > 0 else None


def locked(stmt: sa.Select) -> sa.Select:
    """Make read-compare-write atomic for the row ``stmt`` selects.

    PostgreSQL: a row lock (``FOR UPDATE OF`` the selected entity only: eager joins, like a
    conversation's customer, would otherwise be refused). SQLite has no row locks: take its single
    write lock first (an UPDATE that matches nothing still opens a write transaction), so no other
    writer can commit between our read and our write.

    Either way the row is read into the session afresh, even one the session holds loaded
    (``app.db.keeping``): what is compared is the database's value.
    """
    stmt = stmt.execution_options(populate_existing=True)
    if db.engine.dialect.name == "postgresql":
        return stmt.with_for_update(of=stmt.column_descriptions[0]["entity"])
    _write_lock_sqlite(db.session.connection())
    return stmt


@dataclass
class Upserted:
    row: Any
    created: bool
    changed: bool
    # The buyer's row when the upsert read it: the session keeps rows only while they are referenced,
    # so whoever announces the change would otherwise read it again.
    customer: Any = None


def insert_or_get(model: type, values: dict[str, Any], lookup: sa.Select) -> tuple[Any, bool]:
    """Insert a row unless one with the same unique key exists (a concurrent writer's); return the
    row and whether it is new.

    ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` the row on both SQLite and PostgreSQL: no
    exception, no savepoint, the transaction carries on either way. A new row comes back from the
    INSERT (locked by it until the commit); an existing one is read with ``lookup``, locked.
    """
    row = insert_new_row(db.session, model, values)
    if row is not None:
        return row, True
    return db.session.scalar(locked(lookup)), False


def ensure_customer(shop_id: int, openid: str, unionid: str | None = None, nickname: str | None = None) -> Customer:
    lookup = sa.select(Customer).where(Customer.shop_id == shop_id, Customer.openid == openid)
    customer = db.session.scalar(lookup)
    if customer is None:
        customer, _ = insert_or_get(
            Customer, {"shop_id": shop_id, "openid": openid, "unionid": unionid, "nickname": nickname}, lookup
        )
    if unionid and customer.unionid != unionid:
        customer.unionid = unionid
    if nickname and not customer.nickname:
        customer.nickname = nickname
    return customer


# --- orders ---------------------------------------------------------------------------------------


def _phone_tail(address: dict) -> str | None:
    digits = "".join(c for c in str(address.get("tel_number", "")) if c.isdigit())
    return digits[-4:] if len(digits) >= 4 else None


def _order_is_stale(row: Order, updated_at: datetime, status: int) -> bool:
    return row.platform_updated_at > updated_at or (row.platform_updated_at == updated_at and row.status > status)


def _after_sale_is_stale(row: AfterSale, updated_at: datetime, status: str) -> bool:
    return row.platform_updated_at > updated_at or (
        row.platform_updated_at == updated_at and _after_sale_rank(row.status) > _after_sale_rank(status)
    )


def upsert_order(shop_id: int, detail: dict, fetched_at: datetime | None = None) -> Upserted:
    """Store an order detail. ``fetched_at``: when the HTTP call that returned it started."""
    order_id = str(detail["order_id"])
    updated_at = from_unix(detail.get("update_time")) or from_unix(detail.get("create_time")) or utcnow()
    status = int(detail.get("status", 0))
    lookup = sa.select(Order).where(Order.shop_id == shop_id, Order.order_id == order_id)
    order = db.session.scalar(locked(lookup))
    created = False
    if order is None:
        order, created = insert_or_get(
            Order,
            {
                "shop_id": shop_id,
                "order_id": order_id,
                "status": status,
                "openid": str(detail.get("openid", "")),
                "platform_created_at": from_unix(detail.get("create_time")) or updated_at,
                "platform_updated_at": updated_at,
            },
            lookup,
        )
    if not created and _order_is_stale(order, updated_at, status):
        return Upserted(order, created=False, changed=False)  # what we have is newer
    changed = created or order.platform_updated_at != updated_at or order.status != status
    _apply_order(order, detail, status, updated_at)
    _raw_if_new(order, detail, changed, *order.items)
    order.fetched_at = fetched_at or utcnow()
    return Upserted(order, created=created, changed=changed)


def _raw_if_new(row, detail: dict, changed: bool, *related) -> None:
    """``raw`` is deferred (not loaded to compare): rewritten when the detail says something new, a
    new version or any column it sets (on ``row`` or its ``related`` rows) changed. Call it before
    setting the columns that change with every fetch."""
    if changed or db.session.is_modified(row) or any(db.session.is_modified(r) for r in related):
        row.raw = detail


def _apply_order(order: Order, detail: dict, status: int, updated_at: datetime) -> None:
    body = detail.get("order_detail") or {}
    prices = body.get("price_info") or {}
    delivery = body.get("delivery_info") or {}
    address = delivery.get("address_info") or {}
    order.status = status
    order.platform_updated_at = updated_at
    order.openid = str(detail.get("openid") or order.openid)
    order.unionid = detail.get("unionid") or order.unionid
    order.paid_at = from_unix((body.get("pay_info") or {}).get("pay_time"))
    order.shipped_at = from_unix(delivery.get("ship_done_time"))
    order.product_price_fen = int(prices.get("product_price") or 0)
    order.order_price_fen = int(prices.get("order_price") or 0)
    order.freight_fen = int(prices.get("freight") or 0)
    order.discounted_price_fen = int(prices.get("discounted_price") or 0)
    order.address = address or None
    order.phone_tail = _phone_tail(address)
    order.deliveries = delivery.get("delivery_product_info") or []
    if order.customer_id is None and order.openid:
        order.customer_id = ensure_customer(order.shop_id, order.openid, order.unionid).id
    sold_before = _units_by_sku(order.items)
    fields = [
        {
            "product_id": str(info.get("product_id", "")),
            "sku_id": str(info.get("sku_id", "")),
            "sku_code": info.get("sku_code") or None,
            "title": str(info.get("title", ""))[:300],
            "thumb_img": info.get("thumb_img") or None,
            "sku_attrs": info.get("sku_attrs") or [],
            "quantity": int(info.get("sku_cnt") or 1),
            "sale_price_fen": int(info.get("sale_price") or 0),
            "real_price_fen": int(info.get("real_price") or 0),
            "on_aftersale_count": int(info.get("on_aftersale_sku_cnt") or 0),
            "finished_aftersale_count": int(info.get("finish_aftersale_sku_cnt") or 0),
        }
        for info in body.get("product_infos") or []
    ]
    items = list(order.items)
    if [(i.product_id, i.sku_id) for i in items] == [(f["product_id"], f["sku_id"]) for f in fields]:
        # The same lines (a re-fetch, an after-sale's counts): updated in place, only what changed.
        for item, values in zip(items, fields, strict=True):
            for key, value in values.items():
                if getattr(item, key) != value:
                    setattr(item, key, value)
    else:
        items = [OrderItem(shop_id=order.shop_id, **values) for values in fields]
        order.items = items
    count_skus(order.shop_id, order.platform_created_at, sold_before, items)


# --- the SKU catalogue ---------------------------------------------------------------------------


def _units_by_sku(items) -> Counter:
    units: Counter = Counter()
    for item in items:
        units[(item.product_id, item.sku_id)] += item.quantity
    return units


def count_skus(shop_id: int, sold_at: datetime, sold_before: Counter, items: list[OrderItem]) -> None:
    """Keep ``skus`` current for one order whose items went from ``sold_before`` to ``items``.

    Only the difference is applied (a re-fetched order changes nothing; an order seen for the first
    time adds its units), so the catalogue's units always equal the sum over the stored order items.
    The caller holds the order's row lock, so ``sold_before`` cannot change under us; keys are
    written in a fixed order so two orders of the same SKUs cannot deadlock.
    """
    sold_now = _units_by_sku(items)
    newest = {}
    for item in items:
        newest[(item.product_id, item.sku_id)] = item
    changed = sorted(key for key in set(sold_before) | set(sold_now) if sold_now[key] != sold_before[key])
    if not changed:
        return
    table = Sku.__table__
    dialect_insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    for key in changed:
        delta = sold_now[key] - sold_before[key]
        item = newest.get(key)
        if item is None:  # the order no longer has this SKU: take its units back
            db.session.execute(
                sa.update(table)
                .where(table.c.shop_id == shop_id, table.c.product_id == key[0], table.c.sku_id == key[1])
                .values(units_sold=table.c.units_sold + delta, updated_at=now)
            )
            continue
        stmt = dialect_insert(table).values(
            shop_id=shop_id,
            product_id=key[0],
            sku_id=key[1],
            sku_code=item.sku_code,
            title=item.title or "",
            thumb_img=item.thumb_img,
            units_sold=delta,
            first_sold_at=sold_at,
            last_sold_at=sold_at,
            updated_at=now,
        )
        new = stmt.excluded
        newer = new.last_sold_at >= table.c.last_sold_at
        db.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["shop_id", "product_id", "sku_id"],
                set_={
                    "units_sold": table.c.units_sold + new.units_sold,
                    "first_sold_at": sa.case(
                        (new.first_sold_at < table.c.first_sold_at, new.first_sold_at), else_=table.c.first_sold_at
                    ),
                    "last_sold_at": sa.case((newer, new.last_sold_at), else_=table.c.last_sold_at),
                    "title": sa.case((newer, new.title), else_=table.c.title),
                    "sku_code": sa.case((newer, new.sku_code), else_=table.c.sku_code),
                    "thumb_img": sa.case((newer, new.thumb_img), else_=table.c.thumb_img),
                    "updated_at": new.updated_at,
                },
            )
        )


# --- after-sales ----------------------------------------------------------------------------------


def _after_sale_rank(status: str) -> int:
    return AFTER_SALE_RANK.get(status, TERMINAL_RANK)


def _after_sale_fields(detail: dict, status: str, updated_at: datetime, fetched_at: datetime,
                       row: AfterSale | None) -> dict[str, Any]:
    """The columns an after-sale detail sets (``row``: the stored one, whose ids are kept where the
    detail leaves them out)."""
    product = detail.get("product_info") or {}
    refund = detail.get("refund_info") or {}
    returned = detail.get("return_info") or {}
    details = detail.get("details") or {}
    deadline = int(detail.get("deadline") or 0)
    return {
        "order_id": str(detail.get("order_id", row.order_id if row is not None else "")),
        "openid": str(detail.get("openid") or (row.openid if row is not None else "")),
        "type": str(detail.get("type", row.type if row is not None else "")),
        "status": status,
        "product_id": str(product["product_id"]) if product.get("product_id") else None,
        "sku_id": str(product["sku_id"]) if product.get("sku_id") else None,
        "count": int(product.get("count") or 1),
        "refund_amount_fen": int(refund.get("amount") or 0),
        "refund_reason": refund.get("refund_reason"),
        "reason": detail.get("reason"),
        "reason_text": detail.get("reason_text"),
        "description": details.get("desc"),
        "prove_imgs": details.get("prove_imgs") or [],
        "return_waybill_id": returned.get("waybill_id"),
        "return_delivery_name": returned.get("delivery_name"),
        "deadline_at": fetched_at + timedelta(seconds=deadline) if deadline > 0 else None,
        "platform_updated_at": updated_at,
        "fetched_at": fetched_at,
    }


# Columns that change with every fetch, whatever the platform says (set after ``_raw_if_new``).
_EVERY_FETCH = frozenset({"fetched_at", "deadline_at"})


def _order_pk(shop_id: int, order_id: str, order: Order | None = None) -> int | None:
    """The stored order's id: ``order``'s when that is the after-sale's order (no query then)."""
    if order is not None and order.order_id == order_id:
        return order.id
    return db.session.scalar(sa.select(Order.id).where(Order.shop_id == shop_id, Order.order_id == order_id))


def after_sale_known_since(shop_id: int, after_sale_id: str, status: str | None, pushed_at: Any) -> bool:
    """Whether the stored after-sale already holds what a status push announces: the push says
    "``status`` as of ``pushed_at``" (its CreateTime), and the stored detail has that very status
    and was changed on the platform in that second or later. This is the push of a change the desk
    read back itself after its own approval. Fetching the detail again would bring nothing the push
    announces: status pushes come for status changes only, and the pollers reconcile the rest. A
    push with another status is always followed up, whatever the times say (the platform's push and
    update clocks need not agree to the second)."""
    pushed = from_unix(pushed_at)
    if pushed is None or not status:
        return False
    row = db.session.execute(
        sa.select(AfterSale.status, AfterSale.platform_updated_at).where(
            AfterSale.shop_id == shop_id, AfterSale.after_sale_order_id == after_sale_id
        )
    ).first()
    if row is None or row.platform_updated_at is None:
        return False
    return row.status == str(status) and row.platform_updated_at >= pushed


def upsert_after_sale(shop_id: int, detail: dict, fetched_at: datetime | None = None,
                      order: Order | None = None) -> Upserted:
    """Store an after-sale detail. ``fetched_at``: when the HTTP call that returned it started;
    ``order``: its order's row, when the caller has just stored it."""
    fetched_at = fetched_at or utcnow()
    after_sale_id = str(detail["after_sale_order_id"])
    updated_at = from_unix(detail.get("update_time")) or from_unix(detail.get("create_time")) or utcnow()
    status = str(detail.get("status", ""))
    lookup = sa.select(AfterSale).where(AfterSale.shop_id == shop_id, AfterSale.after_sale_order_id == after_sale_id)
    row = db.session.scalar(locked(lookup))
    if row is None:
        # A new after-sale is inserted whole, its buyer and order resolved first: one INSERT, not an
        # INSERT and then an UPDATE for each of them.
        fields = _after_sale_fields(detail, status, updated_at, fetched_at, None)
        customer = ensure_customer(shop_id, fields["openid"], detail.get("unionid")) if fields["openid"] else None
        values = {
            "shop_id": shop_id,
            "after_sale_order_id": after_sale_id,
            "platform_created_at": from_unix(detail.get("create_time")) or updated_at,
            "customer_id": customer.id if customer is not None else None,
            "order_pk": _order_pk(shop_id, fields["order_id"], order),
            "raw": detail,
            **fields,
        }
        row, created = insert_or_get(AfterSale, values, lookup)
        if created:
            return Upserted(row, created=True, changed=True, customer=customer)
        # A concurrent writer stored it first: what this detail says is applied like an update.
    if _after_sale_is_stale(row, updated_at, status):
        return Upserted(row, created=False, changed=False)
    changed = row.platform_updated_at != updated_at or row.status != status or row.type != detail.get("type")
    fields = _after_sale_fields(detail, status, updated_at, fetched_at, row)
    every_fetch = {key: fields.pop(key) for key in _EVERY_FETCH}
    for key, value in fields.items():
        setattr(row, key, value)
    _raw_if_new(row, detail, changed)
    for key, value in every_fetch.items():
        setattr(row, key, value)
    if row.customer_id is None and row.openid:
        row.customer_id = ensure_customer(shop_id, row.openid, detail.get("unionid")).id
    if row.order_pk is None:
        row.order_pk = _order_pk(shop_id, row.order_id, order)
    return Upserted(row, created=False, changed=changed)


# --- return addresses -----------------------------------------------------------------------------


def upsert_address(shop_id: int, detail: dict) -> ReturnAddress:
    address_id = str(detail["address_id"])
    lookup = sa.select(ReturnAddress).where(ReturnAddress.shop_id == shop_id, ReturnAddress.address_id == address_id)
    row = db.session.scalar(lookup)
    if row is None:
        row, _ = insert_or_get(ReturnAddress, {"shop_id": shop_id, "address_id": address_id}, lookup)
    info = detail.get("address_info") or {}
    row.name = str(detail.get("name") or "")[:100]
    row.contact_name = str(info.get("user_name") or "")[:100]
    row.phone = str(info.get("tel_number") or "")[:32]
    row.province = str(info.get("province_name") or "")[:50]
    row.city = str(info.get("city_name") or "")[:50]
    row.county = str(info.get("county_name") or "")[:50]
    row.detail = str(info.get("detail_info") or "")[:300]
    row.postal_code = info.get("postal_code") or None
    row.landline = detail.get("landline") or None
    row.is_return_address = bool(detail.get("recv_addr"))
    row.is_send_address = bool(detail.get("send_addr"))
    row.is_default_return = bool(detail.get("default_recv"))
    row.is_default_send = bool(detail.get("default_send"))
    row.deleted_on_platform = False
    row.synced_at = utcnow()
    return row


# --- buyer messages -------------------------------------------------------------------------------


def message_preview(msg_type: str, text: str | None) -> str:
    """The inbox's one-line preview: the text, or the type in brackets ([image], [order_share])."""
    if msg_type in ("text", "note") and text:
        return " ".join(text.split())[:200]
    return f"[{msg_type}]"


class Record(dict):
    """A row as plain data with attribute access (``row.id``), for code that reads ORM rows the same way."""

    __slots__ = ()

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class StoredMessage:
    """A filed buyer message, as plain rows (no ORM objects: this is the hot path of every push).

    ``message`` is the messages row; ``conversation`` the conversation row as it stands after the
    message, with the buyer's and the shop's fields joined in (``_state_statement``); ``tags`` the
    buyer's tags.
    """

    message: Record
    conversation: Record
    tags: list[str]
    created: bool
    new_conversation: bool
    turn: dict | None = None  # the reply clock this message started (app/sla/clock.py), if any


_conversations = Conversation.__table__
_customers = Customer.__table__
_messages = Message.__table__


TAG_SEPARATOR = "\x1f"  # between a buyer's tags in one aggregated column (tags are short words)
@functools.cache
def _state_statement(dialect: str, by: str, lock: bool) -> sa.Select:
    """The conversation with everything its summary needs (the buyer, their tags, the shop's name, the
    assignee's name), in one statement built once: ``by`` "id" (``:conversation_id``) or "buyer"
    (the open conversation of ``:shop_id`` + ``:openid``); row-locked when ``lock`` (PostgreSQL)."""
    from app.models import CustomerTag, Shop, User

    shops, users, tags = Shop.__table__, User.__table__, CustomerTag.__table__
    separator = sa.literal(TAG_SEPARATOR)
    aggregate = (
        sa.func.string_agg(tags.c.tag, separator)
        if dialect == "postgresql"
        else sa.func.group_concat(tags.c.tag, separator)
    )
    buyer_tags = (
        sa.select(aggregate).where(tags.c.customer_id == _customers.c.id).correlate(_customers).scalar_subquery()
    )
    stmt = sa.select(
        _conversations,
        _customers.c.openid.label("customer_openid"),
        _customers.c.nickname.label("customer_nickname"),
        _customers.c.last_agent_id.label("customer_last_agent_id"),
        _customers.c.last_agent_at.label("customer_last_agent_at"),
        _customers.c.last_seen_at.label("customer_last_seen_at"),
        buyer_tags.label("customer_tags"),
        shops.c.name.label("shop_name"),
        users.c.display_name.label("assignee_name"),
    ).select_from(
        _conversations.join(_customers, _customers.c.id == _conversations.c.customer_id)
        .join(shops, shops.c.id == _conversations.c.shop_id)
        .outerjoin(users, users.c.id == _conversations.c.assignee_id)
    )
    if by == "id":
        stmt = stmt.where(_conversations.c.id == sa.bindparam("conversation_id"))
    else:
        # The buyer first (a scalar subquery, run once), then their open conversation by the partial
        # unique index: a plan that cannot start from the conversations, whatever the statistics say
        # (a fresh or just-grown table once made the planner scan every open conversation).
        buyer = (
            sa.select(_customers.c.id)
            .where(_customers.c.shop_id == sa.bindparam("shop_id"), _customers.c.openid == sa.bindparam("openid"))
            .scalar_subquery()
        )
        stmt = stmt.where(
            _conversations.c.customer_id == buyer,
            # Literal: that index is partial (status = 'open'), and a bound status would keep a
            # prepared statement's generic plan off it.
            _conversations.c.status == sql_literals(ConversationStatus.OPEN.value)[0],
        )
    if lock and dialect == "postgresql":
        stmt = stmt.with_for_update(of=_conversations)
    return stmt


def _state(connection: sa.Connection, lock: bool, **where) -> Record | None:
    by = "id" if "conversation_id" in where else "buyer"
    row = connection.execute(_state_statement(connection.dialect.name, by, lock), where).first()
    if row is None:
        return None
    state = Record(row._mapping)
    if state.assignee_id is not None and state.assignee_name is None:
        # After waiting for the row lock, PostgreSQL re-checks the newer conversation row but keeps
        # the joined rows it read before: an assignee changed meanwhile comes without a name.
        from app.models import User

        users = User.__table__
        name = connection.execute(sa.select(users.c.display_name).where(users.c.id == state.assignee_id)).scalar()
        state = Record(state, assignee_name=name)
    return state


def state_tags(state) -> list[str]:
    """The buyer's tags from a conversation state's aggregated column, sorted."""
    return sorted(state.customer_tags.split(TAG_SEPARATOR)) if state.customer_tags else []


def conversation_state(
    conversation_id: int, lock: bool = False, connection: sa.Connection | None = None
) -> Record | None:
    """A conversation row with its summary's joined fields (see StoredMessage), in this session's
    transaction (or on ``connection``: unscoped, for code that already holds the right to see it)."""
    connection = connection or db.session.connection()
    if lock:
        _write_lock_sqlite(connection)
    return _state(connection, lock, conversation_id=conversation_id)


def _write_lock_sqlite(connection: sa.Connection) -> None:
    """SQLite has no row locks: take its one write lock now (see ``locked``)."""
    if connection.dialect.name == "sqlite":
        connection.execute(sa.text("UPDATE sync_cursors SET id = id WHERE 0 = 1"))


@functools.cache
def _customer_lookup() -> sa.Select:
    return sa.select(_customers.c.id, _customers.c.last_seen_at).where(
        _customers.c.shop_id == sa.bindparam("shop_id"), _customers.c.openid == sa.bindparam("openid")
    )


@functools.cache
def _update_by_pk(table: sa.Table) -> sa.Update:
    """``UPDATE table SET <the keys given at execution> WHERE id = :pk``, built once per table (so no
    table of it may have a column named ``pk``; pass the values through ``columns_of``)."""
    return sa.update(table).where(table.c.id == sa.bindparam("pk"))


def store_buyer_message(shop_id: int, payload: dict) -> StoredMessage:
    """File a commkf_send_msg_to_kf push into the buyer's open conversation, once per msg_id.

    Core statements on the session's connection (the caller commits): find or add the buyer, lock
    (or open) their conversation, insert the message with the next ``seq`` (a repeated msg_id
    inserts nothing), update the conversation. Three statements for a buyer who is already talking.
    """
    connection = db.session.connection()
    msg_id = str(payload["msg_id"])
    openid = str(payload["FromUserName"])
    now = utcnow()

    _write_lock_sqlite(connection)
    # A buyer already talking: their open conversation, locked, with everything else, in one statement.
    conversation = _state(connection, True, shop_id=shop_id, openid=openid)
    new_conversation = False
    if conversation is not None:
        customer = Record(id=conversation.customer_id, last_seen_at=conversation.customer_last_seen_at)
    else:
        buyer = {"shop_id": shop_id, "openid": openid}
        customer = connection.execute(_customer_lookup(), buyer).first()
        # A buyer the desk has never seen has filed nothing.
        if customer is not None and (duplicate := _filed(connection, shop_id, msg_id)) is not None:
            return duplicate  # pushed again after its conversation was resolved: opens nothing
        if customer is None:
            # Seen now: a new buyer needs no second UPDATE for it below.
            seen = {**buyer, "created_at": now, "last_seen_at": now}
            added = insert_new(connection, _customers, seen, ("id", "last_seen_at")).first()
            customer = added or connection.execute(_customer_lookup(), buyer).one()  # or a concurrent writer's
        opened = {
            "shop_id": shop_id,
            "customer_id": customer.id,
            "status": ConversationStatus.OPEN,
            "last_message_at": now,
            "unread_count": 0,
            "last_seq": 0,
            "replies_since_buyer": 0,
            "auto_replies_since_buyer": 0,
            "created_at": now,
            "updated_at": now,
        }
        added_id = insert_new(connection, _conversations, opened).scalar()
        new_conversation = added_id is not None
        conversation = _state(connection, True, shop_id=shop_id, openid=openid)

    msg_type = str(payload.get("msg_type") or "text")
    body = payload.get(msg_type) if isinstance(payload.get(msg_type), dict) else None
    text = (body or {}).get("content") if msg_type == "text" else None
    # When the buyer wrote, by the platform's clock: a push retried hours later keeps its place.
    platform_time = from_unix(payload.get("CreateTime"))
    sent_at = platform_time if platform_time and platform_time <= now + timedelta(minutes=5) else now
    # The conversation row is locked: numbering in commit order (a retry re-runs the whole).
    seq = conversation.last_seq + 1
    filed = {
        "shop_id": shop_id,
        "conversation_id": conversation.id,
        "seq": seq,
        "direction": MessageDirection.INBOUND,
        "sender_kind": SenderKind.CUSTOMER,
        "msg_type": msg_type,
        "text": text,
        "body": body,
        "platform_msg_id": msg_id,
        "delivery_state": DeliveryState.RECEIVED,
        "platform_time": platform_time,
        "created_at": now,
    }
    message_id = insert_new(connection, _messages, filed).scalar()
    if message_id is None:  # pushed again: filed before, nothing changes
        return _filed(connection, shop_id, msg_id)

    changes = {
        "last_seq": seq,
        "last_message_at": max(conversation.last_message_at or sent_at, sent_at),
        "last_message_preview": message_preview(msg_type, text),
        "last_message_direction": MessageDirection.INBOUND.value,
        "unread_count": (conversation.unread_count or 0) + 1,
        "updated_at": now,
    }
    if conversation.last_buyer_message_at is None or sent_at >= conversation.last_buyer_message_at:
        changes["last_buyer_message_at"] = sent_at
        # The buyer spoke: the platform's 5-replies-in-48-hours budget starts again.
        changes["replies_since_buyer"] = 0
        changes["auto_replies_since_buyer"] = 0
    turn = None
    if conversation.waiting_since is None:
        changes["waiting_since"] = sent_at
        # The buyer's first message since the last human reply: the 3-minute clock starts (one
        # INSERT per turn; the turn's further messages add nothing here).
        from app.sla.clock import start_turn

        turn = start_turn(connection, shop_id, conversation, seq, sent_at)
    if conversation.assignee_id is None and conversation.queued_at is None:
        changes["queued_at"] = now
    updated = columns_of(_conversations, {**changes, "pk": conversation.id}, "pk")
    connection.execute(_update_by_pk(_conversations), updated)
    if customer.last_seen_at is None or now - customer.last_seen_at > timedelta(minutes=1):
        # Minute precision: not an UPDATE per message in a chatty burst.
        seen = columns_of(_customers, {"last_seen_at": now, "pk": customer.id}, "pk")
        connection.execute(_update_by_pk(_customers), seen)
    # The row as inserted (what message_dict reads), without reading it back.
    no_sender = {"sender_user_id": None, "request_id": None, "delivery_error": None, "auto_kind": None}
    message = Record(id=message_id, sent_at=None, **no_sender, **filed)
    state = Record(conversation, **changes)
    return StoredMessage(
        message, state, state_tags(conversation), created=True, new_conversation=new_conversation, turn=turn
    )


@functools.cache
def _filed_lookup() -> sa.Select:
    return sa.select(_messages).where(
        _messages.c.shop_id == sa.bindparam("shop_id"), _messages.c.platform_msg_id == sa.bindparam("msg_id")
    )


def _filed(connection: sa.Connection, shop_id: int, msg_id: str) -> StoredMessage | None:
    """The message with this msg_id as filed before (and its conversation), or None."""
    message = connection.execute(_filed_lookup(), {"shop_id": shop_id, "msg_id": msg_id}).first()
    if message is None:
        return None
    existing = _state(connection, False, conversation_id=message.conversation_id)
    return StoredMessage(Record(message._mapping), existing, state_tags(existing), False, False)
