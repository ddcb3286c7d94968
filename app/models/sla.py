"""Service level: the 3-minute manual reply clock (one row per buyer turn), per-shop settings, rollups.

The single definition (docs/sla.md): a *turn* starts with the buyer's first message after the last
human reply and ends with the next human agent reply. It is *met* when that reply came within the
shop's threshold (180 s), *breached* when the threshold passed first, *unanswered* when the
conversation was resolved before the threshold without a human reply. A turn *counts* when it
started inside the shop's daily assessment window (shop-local time).
"""

from __future__ import annotations

import enum
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, TimestampMixin, utcnow
from app.models.chat import _str_enum
from app.tenancy import ShopScoped


class TurnOutcome(enum.StrEnum):
    OPEN = "open"
    MET = "met"
    BREACHED = "breached"
    UNANSWERED = "unanswered"  # resolved before the deadline without a human reply: not met


class SlaUnit(enum.StrEnum):
    TURN = "turn"  # one unit per buyer turn (default)
    MESSAGE = "message"  # one unit per buyer message, each against its own 180 s


class SlaSettings(ShopScoped, IdMixin, TimestampMixin, Base):
    """A shop's SLA policy. No row means the defaults (``app/sla/policy.py``)."""

    __tablename__ = "sla_settings"
    __table_args__ = (sa.UniqueConstraint("shop_id"),)

    threshold_seconds: Mapped[int] = mapped_column(default=180)
    warning_seconds: Mapped[int] = mapped_column(default=100)
    unit: Mapped[SlaUnit] = mapped_column(_str_enum(SlaUnit), default=SlaUnit.TURN)
    # The daily assessment window in shop-local time, "HH:MM"; window_end "24:00" is midnight.
    window_start: Mapped[str] = mapped_column(sa.String(5), default="08:00")
    window_end: Mapped[str] = mapped_column(sa.String(5), default="24:00")
    # Optional: hand the conversation to another agent when its assignee has not answered by then.
    reassign_after_seconds: Mapped[int | None]


class ReplyTurn(ShopScoped, IdMixin, Base):
    __tablename__ = "reply_turns"
    __table_args__ = (
        # One running clock per conversation: a concurrent or repeated start cannot open two.
        sa.Index(
            "uq_reply_turns_open_conversation",
            "conversation_id",
            unique=True,
            sqlite_where=sa.text("closed_at IS NULL"),
            postgresql_where=sa.text("closed_at IS NULL"),
        ),
        # The deadline queue loads what is still running from here when its process starts.
        sa.Index(
            "ix_reply_turns_open_deadline",
            "deadline_at",
            sqlite_where=sa.text("outcome = 'open'"),
            postgresql_where=sa.text("outcome = 'open'"),
        ),
        sa.Index("ix_reply_turns_shop_started", "shop_id", "started_at"),
        sa.Index("ix_reply_turns_shop_breached", "shop_id", "breached_at"),
    )

    conversation_id: Mapped[int] = mapped_column(sa.ForeignKey("conversations.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    started_at: Mapped[datetime]  # = the conversation's waiting_since
    first_seq: Mapped[int]  # the buyer's first message of the turn (messages.seq)
    threshold_seconds: Mapped[int]  # the policy in force when the turn started
    deadline_at: Mapped[datetime]
    warn_at: Mapped[datetime]
    counted: Mapped[bool]  # started inside the shop's assessment window
    assignee_start_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    outcome: Mapped[TurnOutcome] = mapped_column(_str_enum(TurnOutcome), default=TurnOutcome.OPEN)
    # Who the outcome is booked to: the replier (met, or answered late), else the assignee when decided.
    agent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    warned_at: Mapped[datetime | None]
    breached_at: Mapped[datetime | None]
    reassigned_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]  # answered or resolved: the clock stopped
    answered_at: Mapped[datetime | None]
    answered_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    answer_message_id: Mapped[int | None] = mapped_column(sa.ForeignKey("messages.id", ondelete="SET NULL"))
    first_reply_seconds: Mapped[int | None]
    # Per-message unit: the buyer's messages in the turn, and how many were answered within the threshold.
    buyer_messages: Mapped[int] = mapped_column(default=1)
    messages_met: Mapped[int] = mapped_column(default=0)
    # The replier's first answer in this conversation on this shop-local day ("conversations handled").
    first_of_day: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SlaHourly(ShopScoped, Base):
    """Counted turns rolled up per shop, agent (0 = nobody) and UTC hour of the turn's start.

    Maintained in the transaction that decides a turn; ``flask sla rollup`` rebuilds it from
    ``reply_turns`` and must give the same rows (tests/sla/test_rollup.py).
    """

    __tablename__ = "sla_hourly"
    __table_args__ = (
        sa.PrimaryKeyConstraint("shop_id", "hour_start", "agent_id"),
        # History reads by shop-local day: plain columns, so no time-zone arithmetic per row.
        sa.Index("ix_sla_hourly_shop_day", "shop_id", "day"),
    )

    agent_id: Mapped[int] = mapped_column(sa.BigInteger)
    hour_start: Mapped[datetime]
    day: Mapped[date] = mapped_column(sa.Date)  # the shop-local day and hour of hour_start
    local_hour: Mapped[int] = mapped_column(sa.SmallInteger)
    turns: Mapped[int] = mapped_column(default=0)
    met: Mapped[int] = mapped_column(default=0)
    breached: Mapped[int] = mapped_column(default=0)
    unanswered: Mapped[int] = mapped_column(default=0)
    messages: Mapped[int] = mapped_column(default=0)
    messages_met: Mapped[int] = mapped_column(default=0)
    answered: Mapped[int] = mapped_column(default=0)
    reply_seconds: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    conversations: Mapped[int] = mapped_column(default=0)


class SlaReplyHistogram(ShopScoped, Base):
    """First-reply times of answered counted turns in buckets (``app/sla/rollup.bucket_of``), for medians,
    per shop-local day of the turn's start (hours would multiply the rows by 24 for no use)."""

    __tablename__ = "sla_reply_histogram"
    __table_args__ = (sa.PrimaryKeyConstraint("shop_id", "day", "agent_id", "bucket"),)

    agent_id: Mapped[int] = mapped_column(sa.BigInteger)
    day: Mapped[date] = mapped_column(sa.Date)
    bucket: Mapped[int]  # lower bound in seconds
    turns: Mapped[int] = mapped_column(default=0)
