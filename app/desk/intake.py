"""What happens when a buyer writes (after the ingest committed the message):

1. an unassigned conversation is given to an agent, or waits in the queue;
2. the console hears of the message once, with its conversation as it stands after that;
3. the shop's auto-replies: off-hours (outside working hours, at most once every 4 hours), else a
   welcome on a new conversation and an "all agents busy" note when it had to queue (once per stay
   in the queue).

Auto-replies are ordinary outbound messages marked ``auto`` (never a human reply) with a request_id
derived from the buyer's message, so handling the same message twice sends nothing twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from app import events, tenancy
from app.db import utcnow
from app.desk import assignment, conversations, views
from app.extensions import db
from app.ingest import store
from app.models import AutoReplyConfig, ConversationStatus, Message, Shop

log = logging.getLogger(__name__)
OFF_HOURS_REPEAT = timedelta(hours=4)
CONFIG_TTL = 10.0  # seconds a shop's auto-reply settings are cached per process


def _parse_hhmm(value: str) -> clock_time:
    hours, minutes = value.split(":")
    return clock_time(int(hours), int(minutes))


def within_working_hours(config: AutoReplyConfig, when: datetime, tz) -> bool:
    local = when.astimezone(tz)
    start, end = _parse_hhmm(config.work_start), _parse_hhmm(config.work_end)
    now = local.time()
    if start == end:
        in_hours, day = True, local
    elif start < end:
        in_hours, day = start <= now < end, local
    else:  # spans midnight: 20:00-02:00; after midnight belongs to the previous day's shift
        in_hours = now >= start or now < end
        day = local if now >= start else local - timedelta(days=1)
    return in_hours and str(day.isoweekday()) in (config.work_days or "")


def on_buyer_message(
    shop_id: int,
    conversation_id: int,
    message_id: int,
    new_conversation: bool,
    message_row=None,
    conversation=None,
    tags: list[str] | None = None,
    assigned: bool | None = None,
) -> None:
    """Runs in the thread that stored the message, after its commit; every step commits its own work.

    The inbox hands over the committed state (``message_row``, ``conversation``, ``tags``), so a message to
    an assigned conversation reaches the console without another query; an unassigned one is first
    given to an agent, and the console hears of it once, as it stands after that. ``assigned``: whether
    the transaction that opened the conversation gave it to an agent (``assign_on_opening``; False:
    nobody was free, it waits in the queue), None if it did not try.
    """
    try:
        if message_row is None or conversation is None:
            message, conversation, tags = _load(conversation_id, message_id)
            if conversation is None:
                return
        else:
            message = views.message_dict(message_row)
        summary = views.summary_from_state(conversation, tags or [])
        assigned_to = conversation.assignee_id if assigned else None
        unassigned = conversation.assignee_id is None and conversation.status == ConversationStatus.OPEN
        queued = unassigned and assigned is False  # the opening transaction found nobody free
        if unassigned and assigned is None:  # not tried in the opening transaction
            try:
                given = assignment.assign_now(conversation_id, tags=tags)
                queued = given is None
            except Exception:  # the queue job assigns it later; the console must hear of the message now
                db.session.rollback()
                log.exception("assigning conversation %s failed", conversation_id)
                given = None  # not known to be queued: no "all agents busy" reply
            if given is not None:
                summary = given.summary  # as it stands now, even if someone else took it meanwhile
                assigned_to = given.agent_id if given.now else None
        events.emit(
            events.conversation_changed,
            shop_id,
            conversation=summary,
            reason="new" if new_conversation else "assigned" if assigned_to else "message",
            message=message,
            notify_user_ids={summary["assignee"]["id"]} if summary["assignee"] else set(),
            assigned=assigned_to is not None,
        )
        events.emit(events.message_changed, shop_id, message=message, created=True)
        _auto_replies(shop_id, conversation_id, message_id, new_conversation, queued=queued)
    except Exception:
        db.session.rollback()
        raise


def _load(conversation_id: int, message_id: int):
    with tenancy.system_scope(db.session()):
        state = store.conversation_state(conversation_id)
        row = db.session.get(Message, message_id)
        if state is None or row is None:
            db.session.rollback()
            return None, None, None
        message = views.message_dict(row)
        tags = store.state_tags(state)
        db.session.commit()
    return message, state, tags


@dataclass(frozen=True)
class _ShopReplies:
    config: AutoReplyConfig | None
    tz: ZoneInfo
    read_at: float


_configs: dict[int, _ShopReplies] = {}


def _shop_replies(shop_id: int) -> _ShopReplies:
    """The shop's auto-reply settings, read at most every CONFIG_TTL seconds (every buyer message asks)."""
    cached = _configs.get(shop_id)
    if cached is not None and time.monotonic() - cached.read_at < CONFIG_TTL:
        return cached
    with tenancy.system_scope(db.session()):
        config = db.session.scalar(sa.select(AutoReplyConfig).where(AutoReplyConfig.shop_id == shop_id))
        timezone = db.session.scalar(sa.select(Shop.timezone).where(Shop.id == shop_id)) or "Asia/Shanghai"
        if config is not None:
            db.session.expunge(config)
        db.session.commit()
    cached = _configs[shop_id] = _ShopReplies(config, ZoneInfo(timezone), time.monotonic())
    return cached


def forget_settings(shop_id: int | None = None) -> None:
    """Drop cached settings (this process at once; other processes within CONFIG_TTL)."""
    if shop_id is None:
        _configs.clear()
    else:
        _configs.pop(shop_id, None)


def _auto_replies(shop_id: int, conversation_id: int, message_id: int, new_conversation: bool, queued: bool) -> None:
    with tenancy.system_scope(db.session()):
        sent = _send_auto_replies(shop_id, conversation_id, message_id, new_conversation, queued)
    if sent:
        from flask import current_app

        from app.ingest import worker

        worker.wake_outbox(current_app._get_current_object())


def _send_auto_replies(
    shop_id: int, conversation_id: int, message_id: int, new_conversation: bool, queued: bool
) -> bool:
    replies = _shop_replies(shop_id)
    config = replies.config
    if config is None or not (config.welcome_enabled or config.busy_enabled or config.off_hours_enabled):
        return False
    if config.off_hours_enabled and not within_working_hours(config, utcnow(), replies.tz):
        text = config.off_hours_text
        return bool(
            conversations.send_auto(
                conversation_id, "off_hours", text, f"auto-off-{message_id}", once_within=OFF_HOURS_REPEAT
            )
        )
    sent = False
    if new_conversation and config.welcome_enabled:
        text = config.welcome_text
        sent |= bool(conversations.send_auto(conversation_id, "welcome", text, f"auto-welcome-{message_id}"))
    if queued and config.busy_enabled:
        text = config.busy_text
        sent |= bool(
            conversations.send_auto(conversation_id, "busy", text, f"auto-busy-{message_id}", once_per_queue=True)
        )
    return sent


def install() -> None:
    events.conversation_opening.connect(assignment.assign_on_opening)
    events.buyer_message_received.connect(on_buyer_message)
