"""Return addresses (the shop's address book, synced from the platform) and SKU bindings (一货一址)."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, IdMixin, TimestampMixin
from app.tenancy import ShopScoped


class ReturnAddress(ShopScoped, IdMixin, TimestampMixin, Base):
    __tablename__ = "return_addresses"
    __table_args__ = (sa.UniqueConstraint("shop_id", "address_id"),)

    address_id: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(100), default="")
    contact_name: Mapped[str] = mapped_column(sa.String(100), default="")
    phone: Mapped[str] = mapped_column(sa.String(32), default="")
    province: Mapped[str] = mapped_column(sa.String(50), default="")
    city: Mapped[str] = mapped_column(sa.String(50), default="")
    county: Mapped[str] = mapped_column(sa.String(50), default="")
    detail: Mapped[str] = mapped_column(sa.String(300), default="")
    postal_code: Mapped[str | None] = mapped_column(sa.String(16))
    landline: Mapped[str | None] = mapped_column(sa.String(32))
    is_return_address: Mapped[bool] = mapped_column(default=False)  # recv_addr
    is_send_address: Mapped[bool] = mapped_column(default=False)  # send_addr
    is_default_return: Mapped[bool] = mapped_column(default=False)  # default_recv
    is_default_send: Mapped[bool] = mapped_column(default=False)  # default_send
    # The platform no longer lists it: bindings to it are flagged and fall back by precedence.
    deleted_on_platform: Mapped[bool] = mapped_column(default=False)
    synced_at: Mapped[datetime | None]

    @property
    def one_line(self) -> str:
        return f"{self.province}{self.city}{self.county}{self.detail}"


class BindingScope(enum.StrEnum):
    SKU = "sku"
    PRODUCT = "product"
    SHOP = "shop"


class AddressBinding(ShopScoped, IdMixin, TimestampMixin, Base):
    """Which return address a SKU, a product or the whole shop uses. Precedence: SKU > product > shop."""

    __tablename__ = "address_bindings"
    __table_args__ = (sa.UniqueConstraint("shop_id", "target_key"),)

    scope: Mapped[BindingScope] = mapped_column(
        sa.Enum(BindingScope, native_enum=False, length=8, values_callable=lambda e: [m.value for m in e])
    )
    product_id: Mapped[str | None] = mapped_column(sa.String(64))
    sku_id: Mapped[str | None] = mapped_column(sa.String(64))
    # "sku:<id>", "product:<id>" or "shop": one binding per target, enforced by the database.
    target_key: Mapped[str] = mapped_column(sa.String(80))
    address_pk: Mapped[int] = mapped_column(sa.ForeignKey("return_addresses.id", ondelete="RESTRICT"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))

    address = relationship("ReturnAddress", lazy="joined")

    @staticmethod
    def key_for(scope: BindingScope, product_id: str | None = None, sku_id: str | None = None) -> str:
        if scope is BindingScope.SKU:
            if not sku_id:
                raise ValueError("a SKU binding needs a sku_id")
            return f"sku:{sku_id}"
        if scope is BindingScope.PRODUCT:
            if not product_id:
                raise ValueError("a product binding needs a product_id")
            return f"product:{product_id}"
        return "shop"
