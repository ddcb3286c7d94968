"""Service level per shop: who is waiting now. The live board and history grow from here."""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template

from app.auth.access import accessible_shops, supervisor_required
from app.extensions import db
from app.i18n import utc_now
from app.models import Conversation, ConversationStatus
from app.sla import bp


def waiting_condition():
    """A buyer is waiting when their last message is newer than the last human reply."""
    return sa.and_(
        Conversation.status == ConversationStatus.OPEN,
        Conversation.last_buyer_message_at.is_not(None),
        sa.or_(
            Conversation.last_human_reply_at.is_(None),
            Conversation.last_human_reply_at < Conversation.last_buyer_message_at,
        ),
    )


@bp.route("/")
@supervisor_required
def index():
    open_ = Conversation.status == ConversationStatus.OPEN
    rows = db.session.execute(
        sa.select(
            Conversation.shop_id,
            sa.func.count().filter(open_).label("open"),
            sa.func.count().filter(open_, Conversation.assignee_id.is_(None)).label("unassigned"),
            sa.func.count().filter(waiting_condition()).label("waiting"),
            sa.func.min(Conversation.last_buyer_message_at).filter(waiting_condition()).label("oldest_wait"),
        ).group_by(Conversation.shop_id)
    ).all()
    stats = {row.shop_id: row for row in rows}
    return render_template("sla/index.html", shops=accessible_shops(), stats=stats, now=utc_now())
