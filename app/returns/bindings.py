"""Bindings (一货一址): which return address a SKU, a product or the whole shop uses.

Every change is audited (who, when, target, old and new address) and runs through the caller's scoped
session: another shop's address or SKU is simply not found. Products and SKUs are the ones known from
ingested orders (the ``skus`` catalogue the store keeps): a binding of something never sold would be
a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from flask_babel import gettext as _

from app import audit
from app.extensions import db
from app.models import AddressBinding, BindingScope, ReturnAddress, Sku, User
from app.returns import resolver


class BindingError(Exception):
    """A refusal shown to the user in plain words."""


@dataclass
class Target:
    scope: BindingScope
    product_id: str | None = None
    sku_id: str | None = None

    @property
    def key(self) -> str:
        return AddressBinding.key_for(self.scope, product_id=self.product_id, sku_id=self.sku_id)


@dataclass
class KnownSku:
    """A SKU seen in the shop's orders, with its explicit bindings and what a return would use now."""

    shop_id: int
    product_id: str
    sku_id: str
    title: str
    sku_code: str | None
    units: int
    last_sold_at: datetime | None
    sku_binding: AddressBinding | None = None
    product_binding: AddressBinding | None = None
    resolution: resolver.Resolution | None = None
    attrs: list = field(default_factory=list)

    @property
    def explicitly_bound(self) -> bool:
        return self.sku_binding is not None or self.product_binding is not None


def _address_of_shop(shop_id: int, address_pk: int) -> ReturnAddress:
    address = db.session.get(ReturnAddress, address_pk)
    if address is None or address.shop_id != shop_id:
        raise BindingError(_("That address is not in this shop's address book."))
    if not resolver.usable(address):
        raise BindingError(
            _("“%(name)s” cannot receive returns (deleted on the platform or not a return address).", name=address.name)
        )
    return address


def known_sku_ids(shop_id: int, sku_ids: list[str]) -> dict[str, str]:
    """Of ``sku_ids``, those seen in the shop's orders, with their product id."""
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(sku_ids))):
        for sku_id, product_id in db.session.execute(
            sa.select(Sku.sku_id, sa.func.max(Sku.product_id))
            .where(Sku.shop_id == shop_id, Sku.sku_id.in_(chunk))
            .group_by(Sku.sku_id)
        ):
            found[sku_id] = product_id
    return found


def known_product_ids(shop_id: int, product_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(sorted(set(product_ids))):
        found.update(
            db.session.scalars(
                sa.select(Sku.product_id).where(Sku.shop_id == shop_id, Sku.product_id.in_(chunk)).distinct()
            )
        )
    return found


def _chunks(values: list[str], size: int = 500):
    for i in range(0, len(values), size):
        yield values[i : i + size]


def bindings_by_key(shop_id: int, keys: list[str]) -> dict[str, AddressBinding]:
    found: dict[str, AddressBinding] = {}
    for chunk in _chunks(sorted(set(keys))):
        for binding in db.session.scalars(
            sa.select(AddressBinding).where(AddressBinding.shop_id == shop_id, AddressBinding.target_key.in_(chunk))
        ):
            found[binding.target_key] = binding
    return found


def apply(user: User, shop_id: int, targets: list[Target], address: ReturnAddress, *, via: str) -> int:
    """Bind every target to ``address`` (create or repoint), audit each change; no commit.

    Returns how many bindings changed. ``via`` says where the change came from (ui, bulk, csv).
    """
    existing = bindings_by_key(shop_id, [t.key for t in targets])
    changed = 0
    for target in targets:
        binding = existing.get(target.key)
        previous = binding.address if binding is not None else None
        if previous is not None and previous.id == address.id:
            continue
        if binding is None:
            binding = AddressBinding(shop_id=shop_id, scope=target.scope, target_key=target.key, created_by_id=user.id)
            db.session.add(binding)
            existing[target.key] = binding
        binding.sku_id, binding.product_id = target.sku_id, target.product_id
        binding.address_pk = address.id
        binding.address = address
        changed += 1
        audit.record(
            "return_address.bind",
            user=user,
            shop_id=shop_id,
            subject_kind="address_binding",
            subject_id=target.key,
            details={
                "via": via,
                "address_id": address.address_id,
                "address_name": address.name,
                "previous_address_id": previous.address_id if previous is not None else None,
            },
        )
    db.session.flush()
    return changed


def bind(user: User, shop_id: int, targets: list[Target], address_pk: int, *, via: str = "ui") -> int:
    """Bind SKUs / products (known from orders) or the shop to one of the shop's return addresses; commit."""
    if not targets:
        raise BindingError(_("Select the SKUs or products to bind first."))
    address = _address_of_shop(shop_id, address_pk)
    skus = known_sku_ids(shop_id, [t.sku_id for t in targets if t.scope is BindingScope.SKU and t.sku_id])
    products = known_product_ids(
        shop_id, [t.product_id for t in targets if t.scope is BindingScope.PRODUCT and t.product_id]
    )
    for target in targets:
        if target.scope is BindingScope.SKU:
            if target.sku_id not in skus:
                raise BindingError(_("SKU %(id)s is not known from this shop's orders.", id=target.sku_id))
            target.product_id = skus[target.sku_id]
        elif target.scope is BindingScope.PRODUCT:
            if target.product_id not in products:
                raise BindingError(_("Product %(id)s is not known from this shop's orders.", id=target.product_id))
            target.sku_id = None
        else:
            target.product_id = target.sku_id = None
    changed = apply(user, shop_id, list({t.key: t for t in targets}.values()), address, via=via)
    db.session.commit()
    return changed


def unbind(user: User, binding_pk: int) -> AddressBinding:
    """Remove a binding (the next level of precedence applies again); audited; commit."""
    binding = db.session.get(AddressBinding, binding_pk)
    if binding is None:
        raise BindingError(_("That binding no longer exists."))
    audit.record(
        "return_address.unbind",
        user=user,
        shop_id=binding.shop_id,
        subject_kind="address_binding",
        subject_id=binding.target_key,
        details={"address_id": binding.address.address_id, "address_name": binding.address.name},
    )
    db.session.delete(binding)
    db.session.commit()
    return binding


def shop_bindings(shop_ids: list[int]) -> list[AddressBinding]:
    """Every binding of the shops, problems (unusable addresses) first."""
    rows = db.session.scalars(
        sa.select(AddressBinding)
        .where(AddressBinding.shop_id.in_(shop_ids or [0]))
        .order_by(AddressBinding.shop_id, AddressBinding.scope, AddressBinding.target_key)
    ).all()
    return sorted(rows, key=lambda b: (resolver.usable(b.address), b.shop_id))


def known_skus(
    shop_id: int, query: str = "", *, only_unbound: bool = False, since: datetime | None = None, limit: int = 200
) -> list[KnownSku]:
    """SKUs of the shop's orders (newest sale first), each with its bindings and current resolution.

    ``query`` matches the SKU id, product id, SKU code or title; ``since`` keeps SKUs sold since then.
    Units are over every stored order of the SKU.
    """
    stmt = (
        sa.select(Sku.product_id, Sku.sku_id, Sku.title, Sku.sku_code, Sku.units_sold, Sku.last_sold_at)
        .where(Sku.shop_id == shop_id)
        .order_by(Sku.last_sold_at.desc(), Sku.sku_id)
    )
    if since is not None:
        stmt = stmt.where(Sku.last_sold_at >= since)
    query = (query or "").strip()
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{escaped}%"
        stmt = stmt.where(
            sa.or_(
                Sku.sku_id == query,
                Sku.product_id == query,
                Sku.title.like(like, escape="\\"),
                Sku.sku_code.like(like, escape="\\"),
            )
        )
    if only_unbound:
        explicit = sa.select(AddressBinding.id).where(
            AddressBinding.shop_id == Sku.shop_id,
            AddressBinding.target_key.in_([sa.literal("sku:") + Sku.sku_id, sa.literal("product:") + Sku.product_id]),
        )
        stmt = stmt.where(~explicit.exists())
    rows = [
        KnownSku(shop_id, product_id, sku_id, title or "", sku_code, int(units or 0), sold)
        for product_id, sku_id, title, sku_code, units, sold in db.session.execute(stmt.limit(limit))
    ]
    keys = [f"sku:{r.sku_id}" for r in rows] + [f"product:{r.product_id}" for r in rows]
    bound = bindings_by_key(shop_id, keys)
    resolutions = resolver.resolve_many([(shop_id, r.product_id, r.sku_id) for r in rows])
    for row in rows:
        row.sku_binding = bound.get(f"sku:{row.sku_id}")
        row.product_binding = bound.get(f"product:{row.product_id}")
        row.resolution = resolutions[(shop_id, row.product_id, row.sku_id)]
    return rows
