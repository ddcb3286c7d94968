"""The console's JSON shapes (docs/api.md): conversation summaries, messages, agents.

Plain dicts built from loaded rows, used by the HTTP API, socket acknowledgements and the events the
domain announces. Texts meant for people (delivery errors) are translated into the current locale:
the user's in a request, the desk's default language in background workers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask_babel import gettext, lazy_gettext

from app.models import Conversation, ConversationStatus, Message

REPLIES_PER_TURN = 5
REPLY_WINDOW = timedelta(hours=48)

# Delivery failures the desk explains itself (stored in English, shown translated).
DELIVERY_ERRORS = {
    "reply_limit": lazy_gettext(
        "The platform allows 5 messages after the buyer's last message; wait for the buyer to write again."
    ),
    "reply_window": lazy_gettext("More than 48 hours have passed since the buyer's last message."),
    "unavailable": lazy_gettext("The platform did not answer; tried several times."),
    "rejected": lazy_gettext("The platform refused the message."),
    "blocked": lazy_gettext("The platform's quota for sending messages is used up for now."),
    "not_authorised": lazy_gettext("This shop has not authorised the desk to send messages."),
}


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def replies_left(conversation) -> int:
    return max(0, REPLIES_PER_TURN - (conversation.replies_since_buyer or 0))


def reply_window_ends_at(conversation) -> datetime | None:
    if conversation.last_buyer_message_at is None:
        return None
    return conversation.last_buyer_message_at + REPLY_WINDOW


def conversation_summary(conversation: Conversation) -> dict:
    customer = conversation.customer
    assignee = conversation.assignee
    return _summary(
        conversation,
        {"id": customer.id, "nickname": customer.nickname, "openid": customer.openid, "tags": customer.tag_names},
        conversation.shop.name if conversation.shop is not None else None,
        {"id": assignee.id, "name": assignee.display_name} if assignee is not None else None,
    )


def summary_from_state(state, tags: list[str]) -> dict:
    """The same summary from a conversation row with its joined fields (``store.conversation_state``):
    what the buyer-message path builds without loading ORM objects."""
    return _summary(
        state,
        {"id": state.customer_id, "nickname": state.customer_nickname, "openid": state.customer_openid, "tags": tags},
        state.shop_name,
        {"id": state.assignee_id, "name": state.assignee_name} if state.assignee_id is not None else None,
    )


def _summary(conversation, customer: dict, shop_name: str | None, assignee: dict | None) -> dict:
    """``conversation``: anything with the conversation's columns as attributes (ORM row or Record)."""
    status = ConversationStatus(conversation.status)
    return {
        "id": conversation.id,
        "shop_id": conversation.shop_id,
        "shop_name": shop_name,
        "status": status.value,
        "customer": customer,
        "assignee": assignee,
        "assigned_at": iso(conversation.assigned_at),
        "last_message_at": iso(conversation.last_message_at),
        "last_message_preview": conversation.last_message_preview,
        "last_message_direction": conversation.last_message_direction,
        "unread_count": conversation.unread_count,
        "waiting_since": iso(conversation.waiting_since) if status == ConversationStatus.OPEN else None,
        "queued_at": iso(conversation.queued_at) if conversation.assignee_id is None else None,
        "last_buyer_message_at": iso(conversation.last_buyer_message_at),
        "reply_window_ends_at": iso(reply_window_ends_at(conversation)),
        "replies_left": replies_left(conversation),
        "last_seq": conversation.last_seq,
        "resolved_at": iso(conversation.resolved_at),
    }


def delivery_error_text(message: Message) -> str | None:
    if not message.delivery_error:
        return None
    code, _, detail = message.delivery_error.partition(":")
    known = DELIVERY_ERRORS.get(code)
    if known is None:
        return message.delivery_error
    text = str(known)
    return f"{text} ({detail.strip()})" if detail.strip() else text


def image_url(message: Message) -> str | None:
    if message.msg_type != "image":
        return None
    body = message.body or {}
    if body.get("media"):
        return f"/api/messages/{message.id}/image"
    url = body.get("url") or body.get("cos_url")
    return url if isinstance(url, str) and url.startswith(("https://", "http://", "/")) else None


def message_dict(message: Message) -> dict:
    """``message``: an ORM Message, or a Record of the messages row (buyer messages: no sender)."""
    sender = message.sender if message.sender_user_id else None
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "shop_id": message.shop_id,
        "seq": message.seq,
        "direction": message.direction.value,
        "sender_kind": message.sender_kind.value,
        "sender": {"id": sender.id, "name": sender.display_name} if sender is not None else None,
        "auto_kind": message.auto_kind,
        "msg_type": message.msg_type,
        "text": message.text,
        "body": message.body,
        "image_url": image_url(message),
        "request_id": message.request_id,
        "delivery_state": message.delivery_state.value,
        "delivery_error": delivery_error_text(message),
        "created_at": iso(message.created_at),
        "sent_at": iso(message.sent_at),
    }


def refused(code: str) -> str:
    """The sentence shown when the desk refuses to send (same codes as delivery errors)."""
    return str(DELIVERY_ERRORS[code]) if code in DELIVERY_ERRORS else gettext("The message was not sent.")
