"""The facts a rule sees: a plain JSON snapshot built from stored rows (order, after-sale, buyer history).

The same functions serve the live path and the backtest, and the snapshot is what the decision log
keeps as the decision's inputs: what a rule decided can always be replayed and explained.

Times are compared in UTC: ``hours_since_paid`` is the after-sale's request time (the platform's
create time) minus the order's pay time, so "within 4 hours" means exactly that whatever the shop's
time zone; only ``shop_hours`` reads the local clock (the shop's zone, default Asia/Shanghai).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import AfterSale, Customer, CustomerTag, Message, Order, Shop

HISTORY = timedelta(days=30)


def _hours(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds() / 3600, 6)


def _buyer(shop_id: int, openid: str, event_time: datetime, exclude_pk: int | None) -> dict:
    """The buyer's after-sales in the 30 days before the event (this one excluded) and their tags."""
    count = sa.select(sa.func.count()).select_from(AfterSale).where(
        AfterSale.shop_id == shop_id,
        AfterSale.openid == openid,
        AfterSale.platform_created_at >= event_time - HISTORY,
        AfterSale.platform_created_at < event_time,
    )
    if exclude_pk is not None:
        count = count.where(AfterSale.id != exclude_pk)
    sqlite = db.engine.dialect.name == "sqlite"
    # Sorted as ORDER BY tag sorts them: in the database's collation (SQLite's is by code point).
    tags = sa.select(
        sa.func.json_group_array(CustomerTag.tag)
        if sqlite
        else sa.func.array_agg(CustomerTag.tag).aggregate_order_by(CustomerTag.tag)
    )
    tags = tags.join(Customer, Customer.id == CustomerTag.customer_id).where(
        Customer.shop_id == shop_id, Customer.openid == openid
    )
    # One round trip for both: the history count and the tags (every evaluation asks).
    history, tag_list = db.session.execute(sa.select(count.scalar_subquery(), tags.scalar_subquery())).one()
    if sqlite:  # a JSON array, in no particular order
        tag_list = sorted(json.loads(tag_list or "[]"))
    return {"buyer_after_sales_30d": history or 0, "buyer_tags": list(tag_list or [])}


def _order_facts(order: Order | None, event_time: datetime) -> dict:
    if order is None:
        return {"order_id": None, "order_status": None, "hours_since_paid": None, "hours_since_created": None,
                "paid_at": None, "order_created_at": None, "skus": [], "products": [], "order_price_fen": None}
    return {
        "order_id": order.order_id,
        "order_status": order.status,
        "paid_at": order.paid_at.isoformat() if order.paid_at else None,
        "order_created_at": order.platform_created_at.isoformat(),
        "shipped_at": order.shipped_at.isoformat() if order.shipped_at else None,
        "hours_since_paid": _hours(event_time, order.paid_at),
        "hours_since_created": _hours(event_time, order.platform_created_at),
        "skus": sorted({i.sku_id for i in order.items}),
        "products": sorted({i.product_id for i in order.items}),
        "order_price_fen": order.order_price_fen,
    }


def for_after_sale(after_sale: AfterSale, shop: Shop) -> dict:
    """The snapshot for an after-sale trigger. The event time is when the buyer asked."""
    event_time = after_sale.platform_created_at
    order = after_sale.order or db.session.scalar(
        sa.select(Order).where(Order.shop_id == after_sale.shop_id, Order.order_id == after_sale.order_id)
    )
    facts = {
        "subject_kind": "after_sale",
        "after_sale_pk": after_sale.id,
        "after_sale_order_id": after_sale.after_sale_order_id,
        "after_sale_type": after_sale.type,
        "after_sale_status": after_sale.status,
        "refund_amount_fen": after_sale.refund_amount_fen,
        "event_time": event_time.isoformat(),
        "shop_timezone": shop.timezone,
        "openid": after_sale.openid,
        **_order_facts(order, event_time),
        **_buyer(after_sale.shop_id, after_sale.openid, event_time, after_sale.id),
    }
    # The after-sale names its SKU: that is what the buyer wants refunded, not the whole order.
    if after_sale.sku_id:
        facts["skus"] = [after_sale.sku_id]
    if after_sale.product_id:
        facts["products"] = [after_sale.product_id]
    return facts


def for_order(order: Order, shop: Shop) -> dict:
    event_time = order.platform_updated_at
    return {
        "subject_kind": "order",
        "event_time": event_time.isoformat(),
        "shop_timezone": shop.timezone,
        "openid": order.openid,
        **_order_facts(order, event_time),
        **_buyer(order.shop_id, order.openid, event_time, None),
    }


def for_message(message: Message, openid: str, shop: Shop) -> dict:
    event_time = message.created_at
    return {
        "subject_kind": "conversation",
        "conversation_id": message.conversation_id,
        "message_id": message.id,
        "message_text": message.text or "",
        "event_time": event_time.isoformat(),
        "shop_timezone": shop.timezone,
        "openid": openid,
        "hours_since_paid": None,
        "hours_since_created": None,
        **_buyer(shop.id, openid, event_time, None),
    }
