"""Orders and after-sales as the platform reports them. Ids are strings, money is fen."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, EncryptedText, Fen, IdMixin, JSONType, TimestampMixin, utcnow
from app.tenancy import ShopScoped


class OrderStatus(enum.IntEnum):
    """Order status codes of the platform (platform-api.md, Orders)."""

    AWAITING_PAYMENT = 10
    AWAITING_SHIPMENT = 20
    PARTLY_SHIPPED = 21
    SHIPPED = 30
    COMPLETED = 100
    CANCELLED_OVERSOLD = 190
    CANCELLED_ALL_AFTER_SOLD = 200
    CANCELLED = 250


class AfterSaleType(enum.StrEnum):
    REFUND = "REFUND"  # refund only
    RETURN = "RETURN"  # return and refund
    EXCHANGE = "EXCHANGE"


class AfterSaleStatus(enum.StrEnum):
    """After-sale statuses exactly as the platform spells them (USER_CANCELD sic)."""

    MERCHANT_PROCESSING = "MERCHANT_PROCESSING"
    USER_WAIT_RETURN = "USER_WAIT_RETURN"
    MERCHANT_WAIT_RECEIPT = "MERCHANT_WAIT_RECEIPT"
    MERCHANT_REFUND_SUCCESS = "MERCHANT_REFUND_SUCCESS"
    MERCHANT_RETURN_SUCCESS = "MERCHANT_RETURN_SUCCESS"
    MERCHANT_REJECT_REFUND = "MERCHANT_REJECT_REFUND"
    MERCHANT_REJECT_RETURN = "MERCHANT_REJECT_RETURN"
    USER_CANCELD = "USER_CANCELD"
    RETURN_CLOSED = "RETURN_CLOSED"
    MERCHANT_OVERDUE_REFUND = "MERCHANT_OVERDUE_REFUND"
    PLATFORM_REFUNDING = "PLATFORM_REFUNDING"
    PLATFORM_REFUND_FAIL = "PLATFORM_REFUND_FAIL"
    USER_WAIT_CONFIRM = "USER_WAIT_CONFIRM"
    MERCHANT_REFUND_RETRY_FAIL = "MERCHANT_REFUND_RETRY_FAIL"
    MERCHANT_FAIL = "MERCHANT_FAIL"


# Still needs someone: the merchant, the buyer or the platform has a step left.
OPEN_AFTER_SALE_STATUSES = frozenset(
    {
        AfterSaleStatus.MERCHANT_PROCESSING,
        AfterSaleStatus.USER_WAIT_RETURN,
        AfterSaleStatus.MERCHANT_WAIT_RECEIPT,
        AfterSaleStatus.PLATFORM_REFUNDING,
        AfterSaleStatus.PLATFORM_REFUND_FAIL,
        AfterSaleStatus.USER_WAIT_CONFIRM,
        AfterSaleStatus.MERCHANT_REFUND_RETRY_FAIL,
    }
)


_OPEN_SQL = "status IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(OPEN_AFTER_SALE_STATUSES)))


class Order(ShopScoped, IdMixin, TimestampMixin, Base):
    __tablename__ = "orders"
    __table_args__ = (
        sa.UniqueConstraint("shop_id", "order_id"),
        # The sidebar: a buyer's orders, newest first.
        sa.Index("ix_orders_shop_openid_created", "shop_id", "openid", "platform_created_at"),
        sa.Index("ix_orders_shop_status_updated", "shop_id", "status", "platform_updated_at"),
        sa.Index("ix_orders_unionid", "unionid"),
        # "Find a buyer by the last digits of their phone".
        sa.Index("ix_orders_shop_phone_tail", "shop_id", "phone_tail"),
    )

    order_id: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[int] = mapped_column(sa.SmallInteger)
    openid: Mapped[str] = mapped_column(sa.String(128))
    unionid: Mapped[str | None] = mapped_column(sa.String(128))
    customer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("customers.id", ondelete="SET NULL"))
    platform_created_at: Mapped[datetime]
    # The platform's update_time: a detail older than what is stored never overwrites it.
    platform_updated_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    shipped_at: Mapped[datetime | None]
    product_price_fen: Mapped[int] = mapped_column(Fen, default=0)
    order_price_fen: Mapped[int] = mapped_column(Fen, default=0)
    freight_fen: Mapped[int] = mapped_column(Fen, default=0)
    discounted_price_fen: Mapped[int] = mapped_column(Fen, default=0)
    # Masked as the platform gives it (林**); the full address needs an audited decode.
    address: Mapped[dict | None] = mapped_column(JSONType)
    # Last digits of the receiver's phone, for "find a buyer by phone tail".
    phone_tail: Mapped[str | None] = mapped_column(sa.String(8))
    deliveries: Mapped[list | None] = mapped_column(JSONType)
    # The platform's detail as fetched, kept for support; never read on a hot path: loaded on access only.
    raw: Mapped[dict | None] = mapped_column(JSONType, deferred=True)
    fetched_at: Mapped[datetime | None]
    # The full address from sensitiveinfo/decode (a small daily quota), encrypted at rest, with the
    # masked address it was decoded for: once the platform's masked address changes, it is stale.
    decoded_address: Mapped[str | None] = mapped_column(EncryptedText, deferred=True)
    decoded_for: Mapped[dict | None] = mapped_column(JSONType, deferred=True)
    decoded_at: Mapped[datetime | None]

    items = relationship(
        "OrderItem", cascade="all, delete-orphan", lazy="selectin", order_by="OrderItem.id", back_populates="order"
    )


class OrderItem(ShopScoped, IdMixin, Base):
    __tablename__ = "order_items"
    __table_args__ = (
        sa.Index("ix_order_items_order", "order_pk"),
        sa.Index("ix_order_items_shop_sku", "shop_id", "sku_id"),
    )

    order_pk: Mapped[int] = mapped_column(sa.ForeignKey("orders.id", ondelete="CASCADE"))
    product_id: Mapped[str] = mapped_column(sa.String(64))
    sku_id: Mapped[str] = mapped_column(sa.String(64))
    sku_code: Mapped[str | None] = mapped_column(sa.String(100))
    title: Mapped[str] = mapped_column(sa.String(300), default="")
    thumb_img: Mapped[str | None] = mapped_column(sa.String(500))
    sku_attrs: Mapped[list | None] = mapped_column(JSONType)
    quantity: Mapped[int] = mapped_column(default=1)
    sale_price_fen: Mapped[int] = mapped_column(Fen, default=0)
    real_price_fen: Mapped[int] = mapped_column(Fen, default=0)
    on_aftersale_count: Mapped[int] = mapped_column(default=0)
    finished_aftersale_count: Mapped[int] = mapped_column(default=0)

    order = relationship("Order", back_populates="items")


class Sku(ShopScoped, IdMixin, Base):
    """The shop's SKU catalogue, as learnt from its orders: one row per SKU ever sold, kept current as
    orders are stored (app/ingest/store.py), so pages that list SKUs (return-address bindings, the
    unbound report) read a few hundred rows instead of aggregating every order item."""

    __tablename__ = "skus"
    __table_args__ = (
        sa.UniqueConstraint("shop_id", "product_id", "sku_id"),
        sa.Index("ix_skus_shop_last_sold", "shop_id", "last_sold_at"),
        sa.Index("ix_skus_shop_sku", "shop_id", "sku_id"),
    )

    product_id: Mapped[str] = mapped_column(sa.String(64))
    sku_id: Mapped[str] = mapped_column(sa.String(64))
    # From the newest order that sold it.
    sku_code: Mapped[str | None] = mapped_column(sa.String(100))
    title: Mapped[str] = mapped_column(sa.String(300), default="")
    thumb_img: Mapped[str | None] = mapped_column(sa.String(500))
    units_sold: Mapped[int] = mapped_column(default=0)  # over all stored orders
    first_sold_at: Mapped[datetime]  # platform creation time of the orders
    last_sold_at: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AfterSale(ShopScoped, IdMixin, TimestampMixin, Base):
    __tablename__ = "after_sales"
    __table_args__ = (
        sa.UniqueConstraint("shop_id", "after_sale_order_id"),
        # The after-sale queue: open cases by platform deadline.
        sa.Index("ix_after_sales_shop_status_deadline", "shop_id", "status", "deadline_at"),
        sa.Index("ix_after_sales_shop_order", "shop_id", "order_id"),
        sa.Index("ix_after_sales_shop_openid", "shop_id", "openid"),
        # The queue page across shops: open cases in deadline order, read straight off the index;
        # with shop_id in it, counting a user's open cases is an index-only scan.
        sa.Index(
            "ix_after_sales_open_deadline",
            "deadline_at",
            "id",
            "shop_id",
            postgresql_where=sa.text(_OPEN_SQL),
            sqlite_where=sa.text(_OPEN_SQL),
        ),
    )

    after_sale_order_id: Mapped[str] = mapped_column(sa.String(64))
    order_id: Mapped[str] = mapped_column(sa.String(64))
    order_pk: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id", ondelete="SET NULL"))
    openid: Mapped[str] = mapped_column(sa.String(128))
    customer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("customers.id", ondelete="SET NULL"))
    type: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(40))
    product_id: Mapped[str | None] = mapped_column(sa.String(64))
    sku_id: Mapped[str | None] = mapped_column(sa.String(64))
    count: Mapped[int] = mapped_column(default=1)
    refund_amount_fen: Mapped[int] = mapped_column(Fen, default=0)
    refund_reason: Mapped[str | None] = mapped_column(sa.String(200))
    reason: Mapped[str | None] = mapped_column(sa.String(100))
    reason_text: Mapped[str | None] = mapped_column(sa.Text)
    description: Mapped[str | None] = mapped_column(sa.Text)
    prove_imgs: Mapped[list | None] = mapped_column(JSONType)
    return_waybill_id: Mapped[str | None] = mapped_column(sa.String(64))
    return_delivery_name: Mapped[str | None] = mapped_column(sa.String(100))
    # When the merchant must have acted (the platform sends seconds left; stored absolute).
    deadline_at: Mapped[datetime | None]
    platform_created_at: Mapped[datetime]
    platform_updated_at: Mapped[datetime]
    # The return address used on approval, and how it was chosen (sku/product/shop/manual).
    return_address_pk: Mapped[int | None] = mapped_column(sa.ForeignKey("return_addresses.id", ondelete="SET NULL"))
    return_address_source: Mapped[str | None] = mapped_column(sa.String(16))
    # The platform's detail as fetched, kept for support; never read on a hot path: loaded on access only.
    raw: Mapped[dict | None] = mapped_column(JSONType, deferred=True)
    fetched_at: Mapped[datetime | None]
    # A rule handed the case to people, and why (a route-to-human action, a cap, a failed approval).
    human_note: Mapped[str | None] = mapped_column(sa.Text)
    human_note_at: Mapped[datetime | None]

    order = relationship("Order")


class AfterSaleActionKind(enum.StrEnum):
    """What an agent asks the platform to do with an after-sale (all through acceptapply / rejectapply)."""

    APPROVE_REFUND = "approve_refund"  # refund only: one acceptapply refunds
    APPROVE_RETURN = "approve_return"  # return (or exchange): acceptapply with the return address_id
    CONFIRM_RECEIPT = "confirm_receipt"  # the parcel arrived: acceptapply accept_type 2 refunds
    REJECT = "reject"  # rejectapply with a reason from the platform's list


class AfterSaleActionState(enum.StrEnum):
    PENDING = "pending"  # queued in the outbox (or waiting for the refund-per-minute limit)
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AfterSaleAction(ShopScoped, IdMixin, Base):
    """One agent action on an after-sale, as sent to the platform through the outbox.

    ``request_id`` (made by the browser, unique per shop) makes a repeated request return the same
    action; the partial unique index allows one pending action per after-sale, so a double click or
    two agents at once cannot send two calls.
    """

    __tablename__ = "after_sale_actions"
    __table_args__ = (
        sa.UniqueConstraint("shop_id", "request_id"),
        sa.Index("ix_after_sale_actions_after_sale", "after_sale_pk", "created_at"),
        sa.Index("ix_after_sale_actions_shop_order", "shop_id", "order_id", "completed_at"),
        sa.Index(
            "ix_after_sale_actions_one_pending",
            "after_sale_pk",
            unique=True,
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        ),
    )

    after_sale_pk: Mapped[int] = mapped_column(sa.ForeignKey("after_sales.id", ondelete="CASCADE"))
    after_sale_order_id: Mapped[str] = mapped_column(sa.String(64))
    order_id: Mapped[str] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(20))
    state: Mapped[str] = mapped_column(sa.String(12), default=AfterSaleActionState.PENDING.value)
    request_id: Mapped[str] = mapped_column(sa.String(64))
    # The after-sale's status and type when the agent acted (what the action was allowed from).
    from_status: Mapped[str] = mapped_column(sa.String(40))
    address_pk: Mapped[int | None] = mapped_column(sa.ForeignKey("return_addresses.id", ondelete="SET NULL"))
    address_id: Mapped[str | None] = mapped_column(sa.String(64))
    address_source: Mapped[str | None] = mapped_column(sa.String(16))
    # A bound address was unusable (deleted on the platform, no longer a return address) and the
    # resolver fell back to the next level: the returns report lists these.
    address_fallback: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    reject_reason_type: Mapped[int | None]
    reject_reason: Mapped[str | None] = mapped_column(sa.String(200))
    # Failure: our code (negotiate_first, address_invalid, ...) and the platform's errcode/errmsg.
    error_code: Mapped[str | None] = mapped_column(sa.String(40))
    errcode: Mapped[int | None]
    errmsg: Mapped[str | None] = mapped_column(sa.Text)
    requested_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]

    requested_by = relationship("User", lazy="joined")
