"""Conversations: replies, notes, auto-replies, resolve/reopen, read state. Domain code, no Flask
request or Socket.IO here: functions commit their own transaction and announce what changed
(``app.events``) after the commit; the socket namespace and HTTP API are thin adapters.

Replies go out through the outbox (``commkf.sendmsg``) with the message's ``request_id`` as the
idempotency key. The platform lets a shop send at most 5 messages within 48 hours after the buyer's
last message; the desk counts them on the conversation row (under its lock) and refuses the sixth
with a reason instead of letting the platform drop it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask_babel import gettext as _

from app import events, outbox
from app.db import utcnow
from app.desk import views
from app.extensions import db
from app.ingest import store
from app.ingest.store import locked, message_preview
from app.models import (
    Conversation,
    ConversationStatus,
    Customer,
    DeliveryState,
    Message,
    MessageDirection,
    Order,
    OutboxCall,
    OutboxStatus,
    Role,
    SenderKind,
    Shop,
    User,
)
from app.platform import client_for
from app.platform.client import (
    ApiBlocked,
    NotAuthorized,
    PlatformError,
    PlatformUnavailable,
    QuotaExhausted,
    RateLimited,
)
from app.sla import clock

SEND_OPERATION = "commkf.sendmsg"
MAX_TEXT = 1000
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# The platform's errcodes for a spent budget are not in its public documents; these are the
# simulator's (app/platform/simulator/state.py). A real code not listed here still fails the
# message visibly, as "refused", with the platform's own errmsg.
REPLY_LIMIT_ERRCODES = frozenset({10500011})
REPLY_WINDOW_ERRCODES = frozenset({10500012})


class DeskError(Exception):
    """A refusal the agent sees: ``code`` from docs/api.md, ``message`` in their language."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def not_found() -> DeskError:
    return DeskError("not_found", _("This conversation does not exist, or it belongs to a shop you do not serve."))


@dataclass
class Changes:
    """What a transaction changed, announced after its commit."""

    conversations: list[tuple[int, str, dict | None, set[int]]] = field(default_factory=list)
    messages: list[tuple[dict, bool]] = field(default_factory=list)

    def conversation(self, conversation: Conversation, reason: str, message: dict | None = None, *notify: int | None):
        self.conversations.append((conversation.id, reason, message, {u for u in notify if u}))

    def message(self, message: Message, created: bool) -> dict:
        data = views.message_dict(message)
        self.messages.append((data, created))
        return data

    def announce(self) -> None:
        for data, created in self.messages:
            events.emit(events.message_changed, data["shop_id"], message=data, created=created)
        for conversation_id, reason, message, notify in self.conversations:
            # Changed in this scope a moment ago (so it is the caller's to see): read it back with its
            # summary's joined fields in one statement on a connection of its own, not five lazy loads
            # of the session's expired rows.
            with db.engine.connect() as connection:
                state = store.conversation_state(conversation_id, connection=connection)
            if state is None:
                continue
            tags = store.state_tags(state)
            events.emit(
                events.conversation_changed,
                state.shop_id,
                conversation=views.summary_from_state(state, tags),
                reason=reason,
                message=message,
                notify_user_ids=notify | ({state.assignee_id} if state.assignee_id else set()),
            )


def lock_conversation(conversation_id: int) -> Conversation:
    """The conversation, locked until commit (scoped: another shop's is not found)."""
    conversation = db.session.scalar(locked(sa.select(Conversation).where(Conversation.id == conversation_id)))
    if conversation is None:
        raise not_found()
    return conversation


def get_conversation(conversation_id: int) -> Conversation:
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None:
        raise not_found()
    return conversation


def add_message(conversation: Conversation, **values) -> Message:
    """Append a message to a locked conversation: next seq, preview, last message time."""
    now = utcnow()
    conversation.last_seq += 1
    message = Message(
        shop_id=conversation.shop_id,
        conversation_id=conversation.id,
        seq=conversation.last_seq,
        created_at=now,
        **values,
    )
    db.session.add(message)
    conversation.last_message_at = now
    conversation.last_message_preview = message_preview(message.msg_type, message.text)
    conversation.last_message_direction = message.direction.value
    return message


def _check_budget(conversation: Conversation, now: datetime) -> None:
    if conversation.status != ConversationStatus.OPEN:
        raise DeskError("resolved", _("This conversation is resolved. Reopen it to reply."))
    if conversation.last_buyer_message_at is None or now - conversation.last_buyer_message_at > views.REPLY_WINDOW:
        raise DeskError("reply_window", views.refused("reply_window"))
    if conversation.replies_since_buyer >= views.REPLIES_PER_TURN:
        raise DeskError("reply_limit", views.refused("reply_limit"))


def _platform_content(conversation: Conversation, msg_type: str, data: dict) -> tuple[dict, str | None]:
    """The platform body for a reply, and the text kept for the console (validated)."""
    if msg_type == "text":
        text = str(data.get("text") or "").strip()
        if not text:
            raise DeskError("invalid", _("Type a message first."))
        if len(text) > MAX_TEXT:
            raise DeskError("invalid", _("A message can have at most %(n)d characters.", n=MAX_TEXT))
        return {"content": text}, text
    if msg_type == "order_share":
        order_id = str(data.get("order_id") or "")
        order = db.session.scalar(
            sa.select(Order).where(
                Order.shop_id == conversation.shop_id,
                Order.order_id == order_id,
                Order.openid == conversation.customer.openid,
            )
        )
        if order is None:
            raise DeskError("invalid", _("This buyer has no such order."))
        return {"order_id": order.order_id}, None
    if msg_type == "product_share":
        product_id = str(data.get("product_id") or "")
        if not product_id.isdigit() or len(product_id) > 32:
            raise DeskError("invalid", _("Pick a product to share."))
        return {"product_id": product_id}, None
    if msg_type == "image":
        cos_url = str(data.get("cos_url") or "")
        if not cos_url:
            raise DeskError("invalid", _("Choose an image to send."))
        return {"cos_url": cos_url}, None
    raise DeskError("invalid", _("This kind of message cannot be sent."))


def _existing_request(request_id: str) -> Message | None:
    return db.session.scalar(sa.select(Message).where(Message.request_id == request_id))


def send_reply(
    user: User, conversation_id: int, request_id: str, msg_type: str, data: dict, media: dict | None = None
) -> dict:
    """Queue an agent's reply; returns the message (state ``pending``). Idempotent on ``request_id``."""
    if not REQUEST_ID_RE.match(request_id or ""):
        raise DeskError("invalid", _("The message has no valid request id; reload the page."))
    changes = Changes()
    conversation = lock_conversation(conversation_id)
    # Looked up once, under the lock: a resend after a lost acknowledgement, or a concurrent resend
    # that got here first, finds the message queued before.
    existing = _existing_request(request_id)
    if existing is not None:
        if existing.conversation_id != conversation_id:
            db.session.rollback()
            raise DeskError("invalid", _("The message has no valid request id; reload the page."))
        answer = views.message_dict(existing)
        db.session.rollback()
        return answer
    previous = conversation.assignee_id
    if previous not in (None, user.id) and user.role == Role.AGENT:
        raise DeskError(
            "forbidden",
            _(
                "%(name)s is serving this buyer. Ask them or a supervisor to transfer it.",
                name=conversation.assignee.display_name,
            ),
        )
    now = utcnow()
    _check_budget(conversation, now)
    content, text = _platform_content(conversation, msg_type, data)
    body = dict(content, **(media or {})) if msg_type != "text" else None
    # A human answered: the buyer's wait (and the 3-minute clock) stops, the buyer sticks to this agent.
    # Set before the message is queued, so the queueing's flush writes the conversation once.
    conversation.waiting_since = None
    conversation.last_human_reply_at = now
    conversation.unread_count = 0
    customer = db.session.get(Customer, conversation.customer_id)
    customer.last_agent_id, customer.last_agent_at = user.id, now
    if conversation.assignee_id is None:
        _assign(conversation, user, now)
    message = _queue_outbound(conversation, request_id, msg_type, content, text, body, SenderKind.AGENT, user.id)
    db.session.flush()
    turn = clock.answer(conversation, message, user.id, now)
    data_ = changes.message(message, created=True)
    changes.conversation(conversation, "assigned" if previous is None else "message", data_, previous)
    db.session.commit()
    changes.announce()
    clock.announce(turn, "answered")  # not conversation.shop_id: the row expired at the commit (a SELECT)
    return data_


def check_can_reply(user: User, conversation: Conversation, request_id: str) -> None:
    """The refusals a reply can meet before it is queued (without locking), for the upload path."""
    if not REQUEST_ID_RE.match(request_id or ""):
        raise DeskError("invalid", _("The message has no valid request id; reload the page."))
    if conversation.assignee_id not in (None, user.id) and user.role == Role.AGENT:
        raise DeskError(
            "forbidden",
            _(
                "%(name)s is serving this buyer. Ask them or a supervisor to transfer it.",
                name=conversation.assignee.display_name,
            ),
        )
    _check_budget(conversation, utcnow())


def _assign(conversation: Conversation, user: User, now: datetime) -> None:
    conversation.assignee_id = user.id
    conversation.assigned_at = now
    conversation.queued_at = None
    user.last_assigned_at = now


def _queue_outbound(
    conversation: Conversation,
    request_id: str,
    msg_type: str,
    content: dict,
    text: str | None,
    body: dict | None,
    sender_kind: SenderKind,
    user_id: int | None,
    auto_kind: str | None = None,
) -> Message:
    conversation.replies_since_buyer += 1
    if sender_kind == SenderKind.AUTO:
        conversation.auto_replies_since_buyer += 1
    message = add_message(
        conversation,
        direction=MessageDirection.OUTBOUND,
        sender_kind=sender_kind,
        sender_user_id=user_id,
        msg_type=msg_type,
        text=text,
        body=body,
        request_id=request_id,
        delivery_state=DeliveryState.PENDING,
        auto_kind=auto_kind,
    )
    db.session.flush()
    outbox.enqueue(
        conversation.shop_id,
        SEND_OPERATION,
        {
            "message_id": message.id,
            "open_id": conversation.customer.openid,
            "msg_type": msg_type,
            "content": content,
            "turn": _turn(conversation),
        },
        request_id,
        subject=("conversation", str(conversation.id)),
        created_by_id=user_id,
    )
    return message


def _turn(conversation: Conversation) -> str | None:
    """Which buyer turn a reply's budget slot belongs to (the buyer's last message time)."""
    return views.iso(conversation.last_buyer_message_at)


def send_auto(
    conversation_id: int,
    kind: str,
    text: str,
    request_id: str,
    *,
    once_within: timedelta | None = None,
    once_per_queue: bool = False,
) -> dict | None:
    """Queue an automatic message (welcome, busy, off-hours), once per ``request_id``.

    Sent only while it leaves agents their share of the platform's 5-message budget
    (``AUTO_REPLY_BUDGET``); never counted as a human reply. ``once_within``: not if one of this kind
    went out that recently; ``once_per_queue``: only while queued, once per stay in the queue. Both
    are decided under the conversation lock, so two buyer messages handled at once send one.
    Returns the message, or None if skipped.
    """
    from flask import current_app

    if _existing_request(request_id) is not None or not text.strip():
        return None
    changes = Changes()
    conversation = lock_conversation(conversation_id)
    now = utcnow()
    since = None
    if once_per_queue:
        if conversation.assignee_id is not None or conversation.queued_at is None:
            db.session.rollback()
            return None
        since = conversation.queued_at
    elif once_within is not None:
        since = now - once_within
    if since is not None and db.session.scalar(
        sa.select(Message.id)
        .where(Message.conversation_id == conversation_id, Message.auto_kind == kind, Message.created_at >= since)
        .limit(1)
    ):
        db.session.rollback()
        return None
    try:
        _check_budget(conversation, now)
    except DeskError:
        db.session.rollback()
        return None
    if conversation.replies_since_buyer >= current_app.config["AUTO_REPLY_BUDGET"]:
        db.session.rollback()
        return None
    text = text.strip()[:MAX_TEXT]
    message = _queue_outbound(
        conversation, request_id, "text", {"content": text}, text, None, SenderKind.AUTO, None, auto_kind=kind
    )
    db.session.flush()
    data = changes.message(message, created=True)
    changes.conversation(conversation, "message", data)
    db.session.commit()
    changes.announce()
    return data


def add_note(user: User, conversation_id: int, text: str, request_id: str | None = None) -> dict:
    """An internal note (never sent). An optional ``request_id`` makes it idempotent like a reply."""
    if request_id:
        if not REQUEST_ID_RE.match(request_id):
            raise DeskError("invalid", _("The message has no valid request id; reload the page."))
        existing = _existing_request(request_id)
        if existing is not None:
            if existing.conversation_id != conversation_id:
                raise DeskError("invalid", _("The message has no valid request id; reload the page."))
            return views.message_dict(existing)
    text = str(text or "").strip()
    if not text:
        raise DeskError("invalid", _("Type a note first."))
    if len(text) > 4000:
        raise DeskError("invalid", _("A note can have at most %(n)d characters.", n=4000))
    changes = Changes()
    conversation = lock_conversation(conversation_id)
    if request_id and (existing := _existing_request(request_id)) is not None:
        db.session.rollback()
        return views.message_dict(existing)
    message = add_message(
        conversation,
        direction=MessageDirection.INTERNAL,
        sender_kind=SenderKind.AGENT,
        sender_user_id=user.id,
        msg_type="note",
        text=text,
        request_id=request_id or None,
        delivery_state=DeliveryState.SENT,
    )
    db.session.flush()
    data = changes.message(message, created=True)
    changes.conversation(conversation, "note", data)
    db.session.commit()
    changes.announce()
    return data


def retry_message(user: User, message_id: int) -> dict:
    """Send a failed reply again (same request_id: the platform never delivers it twice)."""
    message = db.session.get(Message, message_id)
    if message is None or message.direction != MessageDirection.OUTBOUND:
        raise DeskError("not_found", _("No such message."))
    changes = Changes()
    conversation = lock_conversation(message.conversation_id)
    db.session.refresh(message)
    if message.delivery_state != DeliveryState.FAILED:
        raise DeskError("conflict", _("Only a failed message can be sent again."))
    _check_budget(conversation, utcnow())
    call = db.session.scalar(
        sa.select(OutboxCall).where(
            OutboxCall.shop_id == message.shop_id,
            OutboxCall.idempotency_key == message.request_id,
            OutboxCall.status == OutboxStatus.FAILED,
        )
    )
    if call is None:
        raise DeskError("conflict", _("Only a failed message can be sent again."))
    conversation.replies_since_buyer += 1
    call.payload = {**call.payload, "turn": _turn(conversation)}  # the slot is taken in this turn
    outbox.retry(call)
    message.delivery_state = DeliveryState.PENDING
    message.delivery_error = None
    db.session.flush()
    data = changes.message(message, created=False)
    db.session.commit()
    changes.announce()
    return data


def resolve(user: User, conversation_id: int) -> dict:
    changes = Changes()
    turn = None
    conversation = lock_conversation(conversation_id)
    if conversation.assignee_id not in (None, user.id) and user.role == Role.AGENT:
        raise DeskError("forbidden", _("Only the assigned agent or a supervisor can resolve this conversation."))
    if conversation.status == ConversationStatus.OPEN:
        conversation.status = ConversationStatus.RESOLVED
        conversation.resolved_at = utcnow()
        conversation.resolved_by_id = user.id
        conversation.queued_at = None
        conversation.waiting_since = None
        conversation.unread_count = 0
        turn = clock.close_unanswered(conversation, conversation.resolved_at)
        changes.conversation(conversation, "resolved")
    db.session.commit()
    changes.announce()
    if conversation.status == ConversationStatus.RESOLVED:
        clock.announce(turn, "closed")
    return views.conversation_summary(conversation)


def reopen(user: User, conversation_id: int) -> dict:
    changes = Changes()
    conversation = lock_conversation(conversation_id)
    if conversation.status == ConversationStatus.OPEN:
        return views.conversation_summary(conversation)
    newer = db.session.scalar(
        sa.select(Conversation.id).where(
            Conversation.customer_id == conversation.customer_id, Conversation.status == ConversationStatus.OPEN
        )
    )
    if newer is not None:
        raise DeskError("conflict", _("This buyer already has an open conversation."))
    previous = conversation.assignee_id
    now = utcnow()
    conversation.status = ConversationStatus.OPEN
    conversation.resolved_at = None
    conversation.resolved_by_id = None
    # To the reopening agent in the same UPDATE: the trigger that keeps the agents' open counts
    # (users.open_conversations) then locks their row only (a resolved conversation counts for
    # nobody), not the previous assignee's first and theirs after.
    conversation.assignee_id = user.id
    conversation.assigned_at = now
    conversation.queued_at = None
    try:
        # Open first, alone: if the buyer's new message is opening a conversation right now, wait
        # for it here, in the UPDATE, before the trigger holds the agent's row (that transaction
        # may be assigning to them).
        db.session.flush()
        user.last_assigned_at = now
        changes.conversation(conversation, "reopened", None, previous)
        db.session.commit()
    except (sa.exc.IntegrityError, sa.exc.OperationalError) as exc:
        # The buyer wrote meanwhile and a new conversation opened (or, should a lock cycle still
        # occur, PostgreSQL chose this side): either way the buyer has an open conversation.
        db.session.rollback()
        if isinstance(exc, sa.exc.OperationalError) and getattr(exc.orig, "sqlstate", None) != "40P01":
            raise
        raise DeskError("conflict", _("This buyer already has an open conversation.")) from None
    changes.announce()
    return views.conversation_summary(conversation)


def mark_read(user: User, conversation_id: int) -> dict:
    conversation = get_conversation(conversation_id)
    if conversation.unread_count and conversation.assignee_id == user.id:
        changes = Changes()
        conversation = lock_conversation(conversation_id)
        conversation.unread_count = 0
        changes.conversation(conversation, "read")
        db.session.commit()
        changes.announce()
    return views.conversation_summary(conversation)


# --- the outbox handler: commkf/sendmsg ---------------------------------------------------------


def _perform_send(shop: Shop, call: OutboxCall) -> dict:
    payload = call.payload
    msg_id = client_for(shop).send_message(
        payload["open_id"], payload["msg_type"], payload["content"], request_id=call.idempotency_key
    )
    return {"msg_id": msg_id}


def _sent(call: OutboxCall, answer: dict) -> list:
    message = db.session.get(Message, call.payload["message_id"])
    if message is None:
        return []
    message.delivery_state = DeliveryState.SENT
    message.delivery_error = None
    message.platform_msg_id = answer.get("msg_id") or None
    message.sent_at = utcnow()
    changes = Changes()
    db.session.flush()
    changes.message(message, created=False)
    return [changes.announce]


def failure_reason(exc: Exception) -> str:
    """``code`` or ``code: detail`` stored on the message (views.DELIVERY_ERRORS explains the code)."""
    errcode = getattr(exc, "errcode", None)
    if errcode in REPLY_LIMIT_ERRCODES:
        return "reply_limit"
    if errcode in REPLY_WINDOW_ERRCODES:
        return "reply_window"
    if isinstance(exc, NotAuthorized):
        return "not_authorised"
    if isinstance(exc, QuotaExhausted | ApiBlocked | RateLimited):
        return "blocked"
    if isinstance(exc, PlatformUnavailable):
        return "unavailable"
    if isinstance(exc, PlatformError):
        return f"rejected: {errcode} {getattr(exc, 'errmsg', '') or ''}".strip()
    return "unavailable"


def _send_failed(call: OutboxCall, exc: Exception) -> list:
    message = db.session.get(Message, call.payload["message_id"])
    if message is None:
        return []
    conversation = lock_conversation(message.conversation_id)
    reason = failure_reason(exc)
    message.delivery_state = DeliveryState.FAILED
    message.delivery_error = reason
    same_turn = call.payload.get("turn") == _turn(conversation)  # the buyer has not written since
    if same_turn and reason == "reply_limit":
        conversation.replies_since_buyer = views.REPLIES_PER_TURN  # the platform says so
    elif same_turn and conversation.replies_since_buyer > 0:
        # Not sent: it gives its place in this turn's budget back.
        conversation.replies_since_buyer -= 1
        if message.sender_kind == SenderKind.AUTO and conversation.auto_replies_since_buyer > 0:
            conversation.auto_replies_since_buyer -= 1
    changes = Changes()
    db.session.flush()
    data = changes.message(message, created=False)
    changes.conversation(conversation, "message", data)
    return [changes.announce]


outbox.register(SEND_OPERATION, outbox.Handler(perform=_perform_send, succeeded=_sent, failed=_send_failed))
