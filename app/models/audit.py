"""Audit trail: who did what, when, to which subject. Append-only."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, IdMixin, JSONType, utcnow
from app.tenancy import ShopScoped


class AuditLog(ShopScoped, IdMixin, Base):
    """Shop-less entries (sign-in, user admin) have shop_id NULL and are visible to admins only."""

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_shop_created", "shop_id", "created_at"),
        sa.Index("ix_audit_log_user_created", "user_id", "created_at"),
        sa.Index("ix_audit_log_subject", "subject_kind", "subject_id"),
    )

    shop_id: Mapped[int | None] = mapped_column(sa.ForeignKey("shops.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(sa.String(64))
    subject_kind: Mapped[str | None] = mapped_column(sa.String(20))
    subject_id: Mapped[str | None] = mapped_column(sa.String(64))
    details: Mapped[dict | None] = mapped_column(JSONType)
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
