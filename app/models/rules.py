"""Automation rules (data, evaluated by app/rules), their versions and every decision they made."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, Fen, IdMixin, JSONType, TimestampMixin, utcnow
from app.tenancy import ShopScoped


class Rule(ShopScoped, IdMixin, TimestampMixin, Base):
    __tablename__ = "rules"
    __table_args__ = (sa.Index("ix_rules_shop_trigger_position", "shop_id", "trigger", "position"),)

    name: Mapped[str] = mapped_column(sa.String(100))
    position: Mapped[int] = mapped_column(default=0)
    # aftersale.created, aftersale.updated, order.paid, order.cancelled, order.shipped, message.received
    trigger: Mapped[str] = mapped_column(sa.String(40))
    conditions: Mapped[list] = mapped_column(JSONType, default=list)
    actions: Mapped[list] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(default=False)
    # New rules start in dry-run: they log what they would do and call nothing.
    dry_run: Mapped[bool] = mapped_column(default=True)
    version: Mapped[int] = mapped_column(default=1)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    updated_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))


class RuleVersion(ShopScoped, IdMixin, Base):
    """An immutable copy of a rule as it was at one version: decisions point here."""

    __tablename__ = "rule_versions"
    __table_args__ = (sa.UniqueConstraint("rule_id", "version"),)

    rule_id: Mapped[int] = mapped_column(sa.ForeignKey("rules.id", ondelete="CASCADE"))
    version: Mapped[int]
    definition: Mapped[dict] = mapped_column(JSONType)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# The decisions that use up a shop's daily caps (app/rules/live.py COUNTED, not dry runs), as the
# cap check writes them: literal, so that a prepared statement's generic plan can use the index.
COUNTED_DECISIONS = "outcome IN ('approving', 'approved') AND dry_run IS false"


class RuleDecision(ShopScoped, IdMixin, Base):
    __tablename__ = "rule_decisions"
    __table_args__ = (
        sa.Index("ix_rule_decisions_shop_created", "shop_id", "created_at"),
        # The cap check under the shop's lock reads only the day's counted decisions (not every
        # evaluation of the day, most of them no match), and their amounts from the index itself.
        sa.Index(
            "ix_rule_decisions_counted",
            "shop_id",
            "created_at",
            "amount_fen",
            postgresql_where=sa.text(COUNTED_DECISIONS),
        ),
        sa.Index("ix_rule_decisions_rule_created", "rule_id", "created_at"),
        sa.Index("ix_rule_decisions_subject", "shop_id", "subject_kind", "subject_id"),
    )

    rule_id: Mapped[int | None] = mapped_column(sa.ForeignKey("rules.id", ondelete="SET NULL"))
    rule_version: Mapped[int]
    trigger: Mapped[str] = mapped_column(sa.String(40))
    subject_kind: Mapped[str] = mapped_column(sa.String(20))  # after_sale, order, conversation
    subject_id: Mapped[str] = mapped_column(sa.String(64))
    # rule + version + subject + subject state: a re-delivered event can never decide twice.
    idempotency_key: Mapped[str] = mapped_column(sa.String(200), unique=True)
    # approved, would_approve, skipped, capped, killed, failed, escalated, ...
    outcome: Mapped[str] = mapped_column(sa.String(32))
    dry_run: Mapped[bool] = mapped_column(default=False)
    amount_fen: Mapped[int | None] = mapped_column(Fen)
    inputs: Mapped[dict | None] = mapped_column(JSONType)
    # The engine's per-condition trace and the planned actions (app/rules/engine.py).
    trace: Mapped[dict | None] = mapped_column(JSONType)
    # The after-sale action the decision queued (approve refund / return), whose outcome it records.
    action_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("after_sale_actions.id", ondelete="SET NULL"), index=True
    )
    platform_response: Mapped[dict | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RuleSettings(ShopScoped, IdMixin, Base):
    """A shop's automation safety settings: the kill switch, daily caps, whether rules may reject."""

    __tablename__ = "rule_settings"
    __table_args__ = (sa.UniqueConstraint("shop_id"),)

    # The kill switch: while on, no rule acts (each case is logged as "killed" and left to people).
    paused: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # Per shop-local day: automatic approvals (count and refund amount) beyond these go to people.
    daily_count_cap: Mapped[int] = mapped_column(default=200, server_default="200")
    daily_amount_cap_fen: Mapped[int] = mapped_column(Fen, default=2_000_000, server_default="2000000")
    # Rejecting takes money from the buyer: no rule may do it unless the shop turned this on.
    allow_auto_reject: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
