"""The agent console: every conversation of the shops the agent serves, in one inbox."""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template, request
from flask_login import current_user, login_required

from app.auth.access import accessible_shops
from app.desk import bp
from app.extensions import db
from app.models import Conversation, ConversationStatus, Customer, Message, Order
from app.web import int_arg

INBOX_VIEWS = ("mine", "unassigned", "all", "resolved")
INBOX_PAGE_SIZE = 100
MESSAGE_PAGE_SIZE = 50
SIDEBAR_ORDERS = 20


def inbox_query(view: str, shop_id: int | None, search: str | None) -> sa.Select:
    stmt = sa.select(Conversation).join(Conversation.customer)
    if view == "resolved":
        stmt = stmt.where(Conversation.status == ConversationStatus.RESOLVED)
    else:
        stmt = stmt.where(Conversation.status == ConversationStatus.OPEN)
        if view == "mine":
            stmt = stmt.where(Conversation.assignee_id == current_user.id)
        elif view == "unassigned":
            stmt = stmt.where(Conversation.assignee_id.is_(None))
    if shop_id:
        stmt = stmt.where(Conversation.shop_id == shop_id)
    if search:
        pattern = f"%{search.replace('%', '').replace('_', '')}%"
        stmt = stmt.where(sa.or_(Customer.nickname.ilike(pattern), Customer.openid == search))
    return stmt.order_by(Conversation.last_message_at.desc(), Conversation.id.desc()).limit(INBOX_PAGE_SIZE)


@bp.route("/")
@login_required
def console():
    return _render_console(None)


@bp.route("/conversations/<int:conversation_id>")
@login_required
def conversation(conversation_id: int):
    return _render_console(db.get_or_404(Conversation, conversation_id))


def _render_console(selected: Conversation | None):
    view = request.args.get("view", "mine" if selected is None else "all")
    if view not in INBOX_VIEWS:
        view = "mine"
    shop_id = int_arg("shop")
    search = (request.args.get("q") or "").strip()[:64] or None
    conversations = db.session.scalars(inbox_query(view, shop_id, search)).unique().all()
    messages, orders = [], []
    if selected is not None:
        messages = list(
            reversed(
                db.session.scalars(
                    sa.select(Message)
                    .where(Message.conversation_id == selected.id)
                    .order_by(Message.created_at.desc(), Message.id.desc())
                    .limit(MESSAGE_PAGE_SIZE)
                ).all()
            )
        )
        orders = db.session.scalars(
            sa.select(Order)
            .where(Order.shop_id == selected.shop_id, Order.openid == selected.customer.openid)
            .order_by(Order.platform_created_at.desc())
            .limit(SIDEBAR_ORDERS)
        ).all()
    shops = accessible_shops()
    return render_template(
        "desk/console.html",
        conversations=conversations,
        selected=selected,
        messages=messages,
        orders=orders,
        view=view,
        views=INBOX_VIEWS,
        shop_id=shop_id,
        search=search or "",
        shops=shops,
        shops_by_id={s.id: s for s in shops},
    )
