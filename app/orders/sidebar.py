"""What the order sidebar shows beside a conversation, and finding a buyer. Read-only domain code.

A handful of indexed queries, whatever the buyer's history: the buyer's orders in this shop
(``orders(shop_id, openid, platform_created_at)``), the same person's orders in the merchant's other
shops the user serves (``orders(unionid)``, marked), those orders' after-sales
(``after_sales(shop_id, order_id)``), their latest actions, and the return address each open return
would be approved with. Everything runs through the request's scoped session: other shops' rows
are never found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import defer, joinedload

from app.extensions import db
from app.models import (
    AfterSale,
    AfterSaleAction,
    AfterSaleActionKind,
    AfterSaleActionState,
    Conversation,
    ConversationStatus,
    Customer,
    Order,
    ReturnAddress,
    Shop,
)
from app.orders import actions
from app.returns import resolver

PAGE = 10  # newest first; older ones a click away (agents ask about the latest orders)
OTHER_SHOPS = 5


@dataclass
class AfterSaleView:
    row: AfterSale
    allowed: list[AfterSaleActionKind]
    last_action: AfterSaleAction | None = None
    queued_until: datetime | None = None  # waiting for the refund-per-minute limit
    resolution: resolver.Resolution | None = None

    @property
    def pending(self) -> AfterSaleAction | None:
        action = self.last_action
        return action if action is not None and action.state == AfterSaleActionState.PENDING else None

    @property
    def actions(self) -> list[AfterSaleActionKind]:
        """Buttons to offer: nothing while an action is on its way."""
        return [] if self.pending is not None else self.allowed


@dataclass
class OrderView:
    order: Order
    shop: Shop | None
    other_shop: bool
    after_sales: list[AfterSaleView] = field(default_factory=list)

    @property
    def waybills(self) -> list[dict]:
        return [d for d in (self.order.deliveries or []) if isinstance(d, dict) and d.get("waybill_id")]


@dataclass
class Sidebar:
    conversation: Conversation
    customer: Customer
    orders: list[OrderView]
    has_more: bool
    page: int
    address_choices: dict[int, list[ReturnAddress]]
    decodes_left: dict[int, int]


def _newest(where, limit: int, offset: int = 0) -> sa.Select:
    return (
        sa.select(Order.id)
        .where(*where)
        .order_by(Order.platform_created_at.desc(), Order.id.desc())
        .limit(limit)
        .offset(offset)
    )


def _orders(*pages: sa.Select) -> list[Order]:
    """The orders the id queries pick, with their items, in one statement, newest first."""
    ids = sa.union_all(*(sa.select(p.subquery().c.id) for p in pages)).subquery()
    return list(
        db.session.scalars(
            sa.select(Order)
            .where(Order.id.in_(sa.select(ids.c.id)))
            .options(defer(Order.raw), joinedload(Order.items))
            .order_by(Order.platform_created_at.desc(), Order.id.desc())
        ).unique()
    )


def _after_sales(orders: list[Order]) -> tuple[dict[tuple[int, str], list[AfterSale]], dict[int, AfterSaleAction]]:
    """The orders' after-sales, and the newest action of each, in one statement."""
    if not orders:
        return {}, {}
    pairs = {(o.shop_id, o.order_id) for o in orders}
    by_shop: dict[int, list[str]] = {}
    for shop_id, order_id in pairs:
        by_shop.setdefault(shop_id, []).append(order_id)
    match = sa.or_(*(sa.and_(AfterSale.shop_id == s, AfterSale.order_id.in_(ids)) for s, ids in by_shop.items()))
    newest = (
        sa.select(sa.func.max(AfterSaleAction.id))
        .where(AfterSaleAction.after_sale_pk == AfterSale.id)
        .correlate(AfterSale)
        .scalar_subquery()
    )
    grouped: dict[tuple[int, str], list[AfterSale]] = {}
    latest: dict[int, AfterSaleAction] = {}
    rows = db.session.execute(
        sa.select(AfterSale, AfterSaleAction)
        .outerjoin(AfterSaleAction, AfterSaleAction.id == newest)
        .where(match)
        .options(defer(AfterSale.raw))
        .order_by(AfterSale.platform_created_at.desc(), AfterSale.id.desc())
    )
    for row, action in rows:
        grouped.setdefault((row.shop_id, row.order_id), []).append(row)
        if action is not None:
            latest[row.id] = action
    return grouped, latest


def latest_actions(after_sale_pks: list[int]) -> dict[int, AfterSaleAction]:
    """The newest action of each after-sale (who handled it, how it went)."""
    if not after_sale_pks:
        return {}
    latest: dict[int, AfterSaleAction] = {}
    rows = db.session.scalars(
        sa.select(AfterSaleAction)
        .where(AfterSaleAction.after_sale_pk.in_(after_sale_pks))
        .order_by(AfterSaleAction.after_sale_pk, AfterSaleAction.created_at.desc(), AfterSaleAction.id.desc())
    )
    for row in rows:
        latest.setdefault(row.after_sale_pk, row)
    return latest


def after_sale_views(
    rows: list[AfterSale],
    addresses: dict[int, list[ReturnAddress]] | None = None,
    latest: dict[int, AfterSaleAction] | None = None,
) -> list[AfterSaleView]:
    """Views of after-sales with their latest actions (``latest``, else read) and, for returns to
    approve, the resolved address. ``addresses`` collects the usable return addresses of the shops
    that need one."""
    if latest is None:
        latest = latest_actions([r.id for r in rows])
    views = []
    for row in rows:
        views.append(AfterSaleView(row=row, allowed=actions.allowed_kinds(row), last_action=latest.get(row.id)))
    queued = actions.queued_for_refund_limits([v.pending for v in views if v.pending is not None])
    for view in views:
        if view.pending is not None:
            view.queued_until = queued.get(view.pending.id)
    returns = [v for v in views if AfterSaleActionKind.APPROVE_RETURN in v.actions]
    resolved, found = resolver.resolve_with_choices([(v.row.shop_id, v.row.product_id, v.row.sku_id) for v in returns])
    if addresses is not None:
        addresses.update(found)
    for v in returns:
        v.resolution = resolved[(v.row.shop_id, v.row.product_id, v.row.sku_id)]
    return views


def load(conversation: Conversation, shops: dict[int, Shop], page: int = 1) -> Sidebar:
    from app.orders import addresses

    customer = conversation.customer
    own_page = _newest(
        [Order.shop_id == conversation.shop_id, Order.openid == customer.openid], PAGE + 1, (page - 1) * PAGE
    )
    pages = [own_page]
    if page == 1 and customer.unionid:
        pages.append(_newest([Order.unionid == customer.unionid, Order.shop_id != conversation.shop_id], OTHER_SHOPS))
    found = _orders(*pages)
    own = [o for o in found if o.shop_id == conversation.shop_id and o.openid == customer.openid]
    others = [o for o in found if not (o.shop_id == conversation.shop_id and o.openid == customer.openid)]
    has_more = len(own) > PAGE
    own = own[:PAGE]
    grouped, latest = _after_sales(own + others)
    choices: dict[int, list[ReturnAddress]] = {}
    views = after_sale_views([a for rows in grouped.values() for a in rows], choices, latest)
    by_pk = {v.row.id: v for v in views}
    orders = []
    for order in own + others:
        order_views = [by_pk[a.id] for a in grouped.get((order.shop_id, order.order_id), [])]
        orders.append(OrderView(order, shops.get(order.shop_id), order.shop_id != conversation.shop_id, order_views))
    shop_ids = {o.order.shop_id for o in orders if o.order.address}
    decodes = addresses.decodes_left_of([shops[s] for s in sorted(shop_ids) if s in shops])
    return Sidebar(conversation, customer, orders, has_more, page, choices, decodes)


# --- finding a buyer ---------------------------------------------------------------------------------


@dataclass
class BuyerMatch:
    customer: Customer
    shop: Shop | None
    conversation_id: int | None
    matched: str  # order_id, phone_tail or nickname
    order_id: str | None = None


def _conversation_of(customer_ids: list[int]) -> dict[int, int]:
    """Each customer's open conversation (one at most; its partial unique index answers this)."""
    if not customer_ids:
        return {}
    rows = db.session.execute(
        sa.select(Conversation.customer_id, Conversation.id).where(
            Conversation.customer_id.in_(customer_ids), Conversation.status == ConversationStatus.OPEN
        )
    )
    return dict(rows.all())


def search(query: str, shops: dict[int, Shop], limit: int = 20) -> list[BuyerMatch]:
    """An order id (exact), a phone tail (the last 4 digits on the order's address) or a nickname."""
    query = (query or "").strip()
    if not query:
        return []
    found: list[tuple[Customer | None, str, str | None, str, int]] = []
    if query.isdigit() and len(query) >= 8:
        for order in db.session.scalars(sa.select(Order).where(Order.order_id == query).limit(limit)):
            found.append((None, order.openid, order.order_id, "order_id", order.shop_id))
    elif query.isdigit() and len(query) == 4:
        rows = db.session.execute(
            sa.select(Order.shop_id, Order.openid, sa.func.max(Order.order_id))
            .where(Order.phone_tail == query)
            .group_by(Order.shop_id, Order.openid)
            .limit(limit)
        )
        found += [(None, openid, order_id, "phone_tail", shop_id) for shop_id, openid, order_id in rows]
    if not found:
        pattern = "%" + query.replace("\\", "").replace("%", "").replace("_", "") + "%"
        customers = db.session.scalars(
            sa.select(Customer).where(Customer.nickname.ilike(pattern)).order_by(Customer.id.desc()).limit(limit)
        )
        found += [(c, c.openid, None, "nickname", c.shop_id) for c in customers]
    matches = []
    for customer, openid, order_id, matched, shop_id in found:
        if customer is None:
            customer = db.session.scalar(
                sa.select(Customer).where(Customer.shop_id == shop_id, Customer.openid == openid)
            )
            if customer is None:
                continue
        matches.append(BuyerMatch(customer, shops.get(shop_id), None, matched, order_id))
    conversations = _conversation_of([m.customer.id for m in matches])
    for m in matches:
        m.conversation_id = conversations.get(m.customer.id)
    return matches
