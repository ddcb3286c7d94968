"""Chat: conversations between a shop and a buyer, their messages, and quick replies."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, IdMixin, JSONType, TimestampMixin, utcnow
from app.tenancy import ShopScoped


def _str_enum(enum_cls: type[enum.StrEnum], length: int = 16) -> sa.Enum:
    """A portable enum column stored as its string values (VARCHAR, no native type)."""
    return sa.Enum(enum_cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e])


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class MessageDirection(enum.StrEnum):
    INBOUND = "inbound"  # from the buyer
    OUTBOUND = "outbound"  # to the buyer, through the platform
    INTERNAL = "internal"  # notes and system lines, never sent


class SenderKind(enum.StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"  # a human reply: the only kind that stops the 3-minute clock
    AUTO = "auto"  # welcome, busy, off-hours, rule templates
    SYSTEM = "system"


class DeliveryState(enum.StrEnum):
    RECEIVED = "received"  # inbound, stored
    PENDING = "pending"  # outbound, queued in the outbox
    SENT = "sent"
    FAILED = "failed"


class Conversation(ShopScoped, IdMixin, TimestampMixin, Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # At most one open conversation per buyer: concurrent intakes cannot open two.
        sa.Index(
            "uq_conversations_open_customer",
            "customer_id",
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        ),
        sa.Index("ix_conversations_shop_status_last", "shop_id", "status", "last_message_at"),
        sa.Index("ix_conversations_assignee_status", "assignee_id", "status"),
        sa.Index("ix_conversations_queue", "status", "assignee_id", "queued_at"),
    )

    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    status: Mapped[ConversationStatus] = mapped_column(_str_enum(ConversationStatus), default=ConversationStatus.OPEN)
    assignee_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    assigned_at: Mapped[datetime | None]
    last_message_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_buyer_message_at: Mapped[datetime | None]
    last_human_reply_at: Mapped[datetime | None]
    unread_count: Mapped[int] = mapped_column(default=0)
    # When it started waiting for an agent with capacity (open and unassigned); drained oldest first.
    queued_at: Mapped[datetime | None]
    # Messages are numbered 1, 2, 3 ... under this row's lock, so seq order is commit order.
    last_seq: Mapped[int] = mapped_column(default=0)
    last_message_preview: Mapped[str | None] = mapped_column(sa.String(200))
    last_message_direction: Mapped[str | None] = mapped_column(sa.String(16))
    # The platform's budget: at most 5 messages to the buyer within 48 h of their last message.
    replies_since_buyer: Mapped[int] = mapped_column(default=0)
    auto_replies_since_buyer: Mapped[int] = mapped_column(default=0)
    # The buyer's oldest message not yet answered by a human (None: nothing waiting).
    waiting_since: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))

    customer = relationship("Customer", lazy="joined")
    assignee = relationship("User", foreign_keys=[assignee_id])
    shop = relationship("Shop")


class Message(ShopScoped, IdMixin, Base):
    __tablename__ = "messages"
    __table_args__ = (
        # A platform message is stored once per shop, however often it is pushed.
        sa.UniqueConstraint("shop_id", "platform_msg_id"),
        sa.Index("ix_messages_conversation_created", "conversation_id", "created_at", "id"),
        sa.UniqueConstraint("conversation_id", "seq"),
    )

    conversation_id: Mapped[int] = mapped_column(sa.ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(default=0)  # 1, 2, 3 ... within the conversation, in commit order
    direction: Mapped[MessageDirection] = mapped_column(_str_enum(MessageDirection))
    sender_kind: Mapped[SenderKind] = mapped_column(_str_enum(SenderKind))
    sender_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    # text, image, video, file, voice, product_share, order_share (platform types) or note.
    msg_type: Mapped[str] = mapped_column(sa.String(20), default="text")
    text: Mapped[str | None] = mapped_column(sa.Text)
    # The platform's body for non-text types (image cos_url, order_share order_id, ...).
    body: Mapped[dict | None] = mapped_column(JSONType)
    platform_msg_id: Mapped[str | None] = mapped_column(sa.String(64))
    # Outbound idempotency key sent to the platform as request_id.
    request_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    delivery_state: Mapped[DeliveryState] = mapped_column(_str_enum(DeliveryState), default=DeliveryState.RECEIVED)
    delivery_error: Mapped[str | None] = mapped_column(sa.Text)
    # Which automatic message this is (welcome, busy, off_hours), for auto-replies only.
    auto_kind: Mapped[str | None] = mapped_column(sa.String(16))
    platform_time: Mapped[datetime | None]  # CreateTime of the push, buyer's clock on the platform
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    sender = relationship("User")


class QuickReply(ShopScoped, IdMixin, TimestampMixin, Base):
    """A canned answer, shop-wide (owner_id NULL) or personal, inserted by typing /shortcut."""

    __tablename__ = "quick_replies"
    __table_args__ = (
        sa.UniqueConstraint("shop_id", "owner_id", "shortcut"),
        sa.Index(
            "uq_quick_replies_shop_shortcut_shared",
            "shop_id",
            "shortcut",
            unique=True,
            sqlite_where=sa.text("owner_id IS NULL"),
            postgresql_where=sa.text("owner_id IS NULL"),
        ),
    )

    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    shortcut: Mapped[str] = mapped_column(sa.String(32))
    title: Mapped[str] = mapped_column(sa.String(100))
    content: Mapped[str] = mapped_column(sa.Text)


class AutoReplyConfig(ShopScoped, IdMixin, TimestampMixin, Base):
    """A shop's automatic messages: welcome, all-agents-busy and off-hours (sent as auto, never human)."""

    __tablename__ = "auto_reply_configs"
    __table_args__ = (sa.UniqueConstraint("shop_id"),)

    welcome_enabled: Mapped[bool] = mapped_column(default=False)
    welcome_text: Mapped[str] = mapped_column(sa.Text, default="")
    busy_enabled: Mapped[bool] = mapped_column(default=False)
    busy_text: Mapped[str] = mapped_column(sa.Text, default="")
    off_hours_enabled: Mapped[bool] = mapped_column(default=False)
    off_hours_text: Mapped[str] = mapped_column(sa.Text, default="")
    # Working hours in the shop's time zone, "HH:MM"; end before start spans midnight.
    work_start: Mapped[str] = mapped_column(sa.String(5), default="09:00")
    work_end: Mapped[str] = mapped_column(sa.String(5), default="22:00")
    # ISO weekdays worked, e.g. "1234567" (Monday = 1).
    work_days: Mapped[str] = mapped_column(sa.String(7), default="1234567")
