"""The durable edges: every push received (inbox) and every call to the platform (outbox)."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, JSONType, utcnow
from app.tenancy import ShopScoped


class InboxStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"  # retries exhausted: visible to admins, replayable


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanent error or retries exhausted: shown with its reason


_INBOX_UNFINISHED = sa.text("status IN ('pending', 'processing')")
# The messages lane (app/ingest/inbox.py): buyer messages are the events with a subject.
_INBOX_MESSAGES_UNFINISHED = sa.text("status IN ('pending', 'processing') AND subject IS NOT NULL")
_OUTBOX_UNFINISHED = sa.text("status IN ('pending', 'in_flight')")
# The urgent lane (app/outbox.py): every call but the rule engine's evaluations.
_OUTBOX_URGENT_UNFINISHED = sa.text("status IN ('pending', 'in_flight') AND operation <> 'rules.evaluate'")


def _enum(enum_cls: type[enum.StrEnum]) -> sa.Enum:
    return sa.Enum(enum_cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class InboxEvent(ShopScoped, IdMixin, Base):
    """A decrypted platform push, stored before it is acknowledged and processed once."""

    __tablename__ = "inbox_events"
    __table_args__ = (
        # The same push re-delivered (the platform retries ~10 times) lands on the same key.
        sa.UniqueConstraint("shop_id", "dedupe_key"),
        sa.Index("ix_inbox_events_status_next", "status", "next_attempt_at"),
        # Claims walk only the unfinished events, in id order, and stop at their batch: a backlog of
        # thousands of pushes (a livestream burst) costs a claim a few rows, not the whole backlog.
        sa.Index(
            "ix_inbox_events_unfinished", "id", sqlite_where=_INBOX_UNFINISHED, postgresql_where=_INBOX_UNFINISHED
        ),
        # The messages lane: buyer messages are claimed before the other pushes.
        sa.Index(
            "ix_inbox_events_messages_unfinished",
            "id",
            sqlite_where=_INBOX_MESSAGES_UNFINISHED,
            postgresql_where=_INBOX_MESSAGES_UNFINISHED,
        ),
        # "Is an earlier event of this buyer unfinished?" reads unfinished events only.
        sa.Index(
            "ix_inbox_events_subject_unfinished",
            "shop_id",
            "subject",
            "id",
            sqlite_where=_INBOX_UNFINISHED,
            postgresql_where=_INBOX_UNFINISHED,
        ),
    )

    dedupe_key: Mapped[str] = mapped_column(sa.String(160))
    event: Mapped[str] = mapped_column(sa.String(64))
    # Events about the same subject (a buyer's messages) are handled in the order they arrived.
    subject: Mapped[str | None] = mapped_column(sa.String(160))
    payload: Mapped[dict] = mapped_column(JSONType)
    status: Mapped[InboxStatus] = mapped_column(_enum(InboxStatus), default=InboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Which claim holds the event while processing: only that worker may finish it.
    claim_token: Mapped[str | None] = mapped_column(sa.String(32))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]


class OutboxCall(ShopScoped, IdMixin, Base):
    """A call the desk owes the platform, retried with backoff until it succeeds or fails visibly."""

    __tablename__ = "outbox_calls"
    __table_args__ = (
        sa.UniqueConstraint("shop_id", "idempotency_key"),
        sa.Index("ix_outbox_calls_status_next", "status", "next_attempt_at"),
        # Claims walk only the unfinished calls, in id order (as the inbox's).
        sa.Index(
            "ix_outbox_calls_unfinished", "id", sqlite_where=_OUTBOX_UNFINISHED, postgresql_where=_OUTBOX_UNFINISHED
        ),
        sa.Index(
            "ix_outbox_calls_urgent_unfinished",
            "id",
            sqlite_where=_OUTBOX_URGENT_UNFINISHED,
            postgresql_where=_OUTBOX_URGENT_UNFINISHED,
        ),
        sa.Index("ix_outbox_calls_subject", "shop_id", "subject_kind", "subject_id"),
    )

    # Also the platform's request_id where the API takes one (commkf/sendmsg).
    idempotency_key: Mapped[str] = mapped_column(sa.String(64))
    operation: Mapped[str] = mapped_column(sa.String(64))  # e.g. aftersale.accept, commkf.sendmsg
    payload: Mapped[dict] = mapped_column(JSONType)
    status: Mapped[OutboxStatus] = mapped_column(_enum(OutboxStatus), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Which claim holds the call while it is in flight: only that worker may record its outcome.
    claim_token: Mapped[str | None] = mapped_column(sa.String(32))
    last_errcode: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    response: Mapped[dict | None] = mapped_column(JSONType)
    subject_kind: Mapped[str | None] = mapped_column(sa.String(20))
    subject_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class PlatformToken(Base):
    """The shop's current access token, shared by every process (one row per shop)."""

    __tablename__ = "platform_tokens"

    shop_id: Mapped[int] = mapped_column(sa.ForeignKey("shops.id", ondelete="CASCADE"), primary_key=True)
    access_token: Mapped[str] = mapped_column(sa.String(600))  # tokens can be up to 512 characters
    expires_at: Mapped[datetime]
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When a forced refresh was last asked for (the platform allows one per 30 s, 20 a day).
    forced_at: Mapped[datetime | None]


class ApiBlock(ShopScoped, IdMixin, Base):
    """An API the desk must not call for a while (daily quota reached, not authorised for this app)."""

    __tablename__ = "api_blocks"
    __table_args__ = (sa.UniqueConstraint("shop_id", "api"),)

    api: Mapped[str] = mapped_column(sa.String(120))
    errcode: Mapped[int]
    errmsg: Mapped[str | None] = mapped_column(sa.Text)
    blocked_until: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncCursor(ShopScoped, IdMixin, Base):
    """How far a poller has read a shop's data (orders, after_sales, addresses), and its health."""

    __tablename__ = "sync_cursors"
    __table_args__ = (sa.UniqueConstraint("shop_id", "kind"),)

    kind: Mapped[str] = mapped_column(sa.String(20))
    # Everything updated before this instant has been read (the next run starts a little earlier).
    synced_until: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_error_at: Mapped[datetime | None]
    items_last_run: Mapped[int] = mapped_column(default=0)
