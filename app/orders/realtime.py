"""The open sidebar follows its buyer's orders and after-sales: a changed order, after-sale or action
becomes ``sidebar.changed`` in the rooms of the buyer's open conversations (``conversation:<id>``),
including the same person's conversations in the merchant's other shops (unionid). Browsers then
re-read the sidebar over HTTP, scoped to their user, so the event itself carries only ids.

Runs in whatever process announced the change (inbox worker, poller, outbox worker), after its
commit, reading in a session of its own so the announcer's session and scope are left alone.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import events
from app.desk.realtime import conversation_room, emit
from app.extensions import db
from app.models import AfterSale, AfterSaleAction, Conversation, ConversationStatus, Customer, Order

log = logging.getLogger(__name__)
EVENT = "sidebar.changed"
MAX_ROOMS = 20


def _conversations(session: Session, shop_id: int, openid: str | None, unionid: str | None) -> list[tuple[int, int]]:
    """(conversation id, its shop id) of the buyer's open conversations, across the merchant's shops."""
    if not openid and not unionid:
        return []
    buyer = sa.and_(Customer.shop_id == shop_id, Customer.openid == openid) if openid else sa.false()
    if unionid:
        buyer = sa.or_(buyer, Customer.unionid == unionid)
    customers = sa.select(Customer.id).where(buyer)
    return [
        tuple(row)
        for row in session.execute(
            sa.select(Conversation.id, Conversation.shop_id)
            .where(Conversation.customer_id.in_(customers), Conversation.status == ConversationStatus.OPEN)
            .order_by(Conversation.id.desc())
            .limit(MAX_ROOMS)
        )
    ]


def _announce(shop_id: int, buyer: sa.Select, data: dict) -> None:
    with Session(db.engine) as session:
        row = session.execute(buyer).first()
        if row is None:
            return
        openid, unionid, order_id = row
        conversations = _conversations(session, shop_id, openid, unionid)
    same = [conversation_room(c) for c, s in conversations if s == shop_id]
    other = [conversation_room(c) for c, s in conversations if s != shop_id]
    if same:
        emit(EVENT, {"shop_id": shop_id, "order_id": order_id, **data}, same)
    if other:
        # The same person in another shop: its agents may not serve this shop, so no ids go along.
        emit(EVENT, {"reason": "other_shop"}, other)


def _on_order(shop_id: int, order_pk: int, order_id: str, **_kw) -> None:
    buyer = sa.select(Order.openid, Order.unionid, Order.order_id).where(Order.id == order_pk)
    _announce(shop_id, buyer, {"reason": "order", "after_sale_order_id": None})


def _after_sale_buyer(after_sale_pk: int) -> sa.Select:
    return (
        sa.select(AfterSale.openid, Customer.unionid, AfterSale.order_id)
        .outerjoin(Customer, Customer.id == AfterSale.customer_id)
        .where(AfterSale.id == after_sale_pk)
    )


def _on_after_sale(shop_id: int, after_sale_pk: int, after_sale_order_id: str, **_kw) -> None:
    _announce(
        shop_id, _after_sale_buyer(after_sale_pk), {"reason": "after_sale", "after_sale_order_id": after_sale_order_id}
    )


def _on_action(shop_id: int, action_id: int, after_sale_pk: int, kind: str, state: str) -> None:
    buyer = _after_sale_buyer(after_sale_pk)
    with Session(db.engine) as session:
        after_sale_order_id = session.scalar(
            sa.select(AfterSaleAction.after_sale_order_id).where(AfterSaleAction.id == action_id)
        )
    _announce(
        shop_id,
        buyer,
        {"reason": "action", "after_sale_order_id": after_sale_order_id, "action": {"kind": kind, "state": state}},
    )


def install() -> None:
    events.order_changed.connect(_on_order)
    events.after_sale_changed.connect(_on_after_sale)
    events.after_sale_action_changed.connect(_on_action)
