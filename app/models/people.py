"""People: desk users (agents, supervisors, admins) and the shops' buyers (customers)."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from flask import current_app, has_app_context
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.db import Base, IdMixin, TimestampMixin, utcnow
from app.tenancy import ShopScoped


class Role(enum.StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


# Which shops each user may serve. Admins serve every shop regardless of rows here.
user_shops = sa.Table(
    "user_shops",
    Base.metadata,
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("shop_id", sa.ForeignKey("shops.id", ondelete="CASCADE"), primary_key=True, index=True),
)

MIN_PASSWORD_LENGTH = 8
_dummy_hashes: dict[str, str] = {}


def _hash_method() -> str:
    return current_app.config.get("PASSWORD_HASH_METHOD", "scrypt") if has_app_context() else "scrypt"


def normalize_username(username: str) -> str:
    """Usernames are case-insensitive: stored and looked up in lower case."""
    return username.strip().lower()


def burn_password_check(password: str) -> bool:
    """Spend the time of a real password check (for unknown accounts); always False."""
    method = _hash_method()
    if method not in _dummy_hashes:
        _dummy_hashes[method] = generate_password_hash("channeldesk-dummy-password", method=method)
    check_password_hash(_dummy_hashes[method], password)
    return False


class User(UserMixin, IdMixin, TimestampMixin, Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(sa.String(64), unique=True)  # lower case (normalize_username)
    display_name: Mapped[str] = mapped_column(sa.String(100))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[Role] = mapped_column(
        sa.Enum(Role, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=Role.AGENT,
    )
    # How many open conversations the assignment engine may give this agent at once.
    capacity: Mapped[int] = mapped_column(default=10)
    language: Mapped[str] = mapped_column(sa.String(8), default="zh_CN")
    is_active: Mapped[bool] = mapped_column(default=True)
    # Bumped on password change or forced sign-out: every session of the old value ends.
    session_version: Mapped[int] = mapped_column(default=1)
    last_login_at: Mapped[datetime | None]
    # The agent's own choice (online or away); with no live connection they are offline regardless.
    presence: Mapped[str] = mapped_column(sa.String(16), default="online")
    # Assignment gives ties to whoever has waited longest for a conversation.
    last_assigned_at: Mapped[datetime | None]
    # The agent's open conversations in every shop (capacity is per person), kept by the database:
    # triggers on conversations (migration 5c9e1f7a2b34), whatever changes a conversation's status
    # or assignee. The assignment's pick reads it instead of counting under its lock.
    open_conversations: Mapped[int] = mapped_column(default=0, server_default="0")

    # Loaded when used (the request's scope, forms), not with every user row (agent lists, assignment).
    shops = relationship("Shop", secondary=user_shops, lazy="select", order_by="Shop.id")

    def set_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
        self.password_hash = generate_password_hash(password, method=_hash_method())

    def check_password(self, password: str) -> bool:
        return bool(self.password_hash) and check_password_hash(self.password_hash, password)

    def get_id(self) -> str:
        # Flask-Login stores this in the session; the version makes old sessions invalid.
        return f"{self.id}:{self.session_version}"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_supervisor(self) -> bool:
        """Supervisors and admins: may configure rules, addresses, quick replies, see SLA boards."""
        return self.role in (Role.SUPERVISOR, Role.ADMIN)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username} {self.role}>"


class Customer(ShopScoped, IdMixin, Base):
    """A buyer as one shop knows them (openid). unionid links the same person across shops."""

    __tablename__ = "customers"
    __table_args__ = (sa.UniqueConstraint("shop_id", "openid"),)

    openid: Mapped[str] = mapped_column(sa.String(128))
    unionid: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    nickname: Mapped[str | None] = mapped_column(sa.String(100))
    avatar_url: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]
    # Who last answered this buyer, and when: new conversations stick to them for 24 h.
    last_agent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    last_agent_at: Mapped[datetime | None]

    tags = relationship("CustomerTag", cascade="all, delete-orphan", lazy="select", order_by="CustomerTag.tag")

    @property
    def tag_names(self) -> list[str]:
        return [t.tag for t in self.tags]


class CustomerTag(ShopScoped, Base):
    __tablename__ = "customer_tags"
    __table_args__ = (sa.Index("ix_customer_tags_shop_tag", "shop_id", "tag"),)

    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentConnection(Base):
    """One live console connection (a browser tab). A user with none is offline.

    Rows are removed on disconnect; a process that dies leaves rows behind, so a connection also
    counts only while its heartbeat (``seen_at``) is recent.
    """

    __tablename__ = "agent_connections"

    sid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    connected_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
