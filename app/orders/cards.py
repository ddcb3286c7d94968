"""Send an order card (order_share) to the buyer from the sidebar: a reply like any other (the outbox,
the 5-in-48h budget, ``request_id`` idempotency, app/desk/conversations.py), plus an audit entry."""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import gettext as _

from app import audit
from app.desk import conversations
from app.extensions import db
from app.models import AuditLog, Order, User
from app.orders.actions import ActionError

CARD_SENT = "order.card_sent"


def send_order_card(user: User, conversation_id: int, order_pk: int, request_id: str) -> dict:
    """Queue the card; returns the message (pending). Sending again with ``request_id`` returns it."""
    order = db.session.get(Order, order_pk)
    if order is None:
        raise ActionError("not_found", _("This order does not exist, or it belongs to a shop you do not serve."), 404)
    order_id, shop_id = order.order_id, order.shop_id
    message = conversations.send_reply(user, conversation_id, request_id, "order_share", {"order_id": order_id})
    already = db.session.scalar(
        sa.select(AuditLog.id).where(
            AuditLog.subject_kind == "message", AuditLog.subject_id == str(message["id"]), AuditLog.action == CARD_SENT
        )
    )
    if already is None:
        audit.record(
            CARD_SENT,
            user=user,
            shop_id=shop_id,
            subject_kind="message",
            subject_id=str(message["id"]),
            details={"order_id": order_id, "conversation_id": conversation_id, "request_id": request_id},
        )
        db.session.commit()
    return message
