"""Which return address an after-sale's parcel goes back to (一货一址).

Precedence, first usable wins:

1. a binding of the SKU (``AddressBinding`` scope ``sku``),
2. a binding of the product (scope ``product``),
3. a binding of the whole shop (scope ``shop``),
4. the shop's default return address on the platform (``default_recv``),
5. none: the agent must pick one (the platform refuses a return approval without ``address_id``).

A bound address that the platform no longer lists (``deleted_on_platform``) or that is no longer a
return address (``recv_addr`` false) is not usable: resolution falls through to the next level and
says so in ``warnings``, so the agent (and issue 6's address book) can see the broken binding.

Pure domain code: reads through the caller's (scoped) session, writes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import sqlalchemy as sa

from app.extensions import db
from app.models import AddressBinding, BindingScope, ReturnAddress


class AddressSource(enum.StrEnum):
    SKU = "sku"
    PRODUCT = "product"
    SHOP = "shop"
    DEFAULT = "default"  # the platform's default return address of the shop
    MANUAL = "manual"  # picked by the agent (never produced by resolve(); recorded by actions)


class WarningKind(enum.StrEnum):
    DELETED_ON_PLATFORM = "deleted_on_platform"
    NOT_A_RETURN_ADDRESS = "not_a_return_address"


@dataclass(frozen=True)
class BindingWarning:
    kind: WarningKind
    scope: BindingScope
    address_pk: int
    address_name: str


@dataclass(frozen=True)
class Resolution:
    address: ReturnAddress | None
    source: AddressSource | None
    warnings: list[BindingWarning] = field(default_factory=list)

    @property
    def address_id(self) -> str | None:
        return self.address.address_id if self.address is not None else None


def usable(address: ReturnAddress | None) -> bool:
    return address is not None and address.is_return_address and not address.deleted_on_platform


def _targets(product_id: str | None, sku_id: str | None) -> list[tuple[BindingScope, str, AddressSource]]:
    targets = []
    if sku_id:
        targets.append((BindingScope.SKU, AddressBinding.key_for(BindingScope.SKU, sku_id=sku_id), AddressSource.SKU))
    if product_id:
        key = AddressBinding.key_for(BindingScope.PRODUCT, product_id=product_id)
        targets.append((BindingScope.PRODUCT, key, AddressSource.PRODUCT))
    targets.append((BindingScope.SHOP, AddressBinding.key_for(BindingScope.SHOP), AddressSource.SHOP))
    return targets


Key = tuple[int, str | None, str | None]  # (shop_id, product_id, sku_id)


def resolve(shop_id: int, product_id: str | None, sku_id: str | None) -> Resolution:
    """The return address for a parcel of ``sku_id`` (of ``product_id``) in the shop."""
    return resolve_many([(shop_id, product_id, sku_id)])[(shop_id, product_id, sku_id)]


def resolve_many(keys: list[Key]) -> dict[Key, Resolution]:
    """``resolve`` for many parcels at once, in one query (the after-sale queue's page)."""
    return resolve_with_choices(keys)[0]


def resolve_with_choices(keys: list[Key]) -> tuple[dict[Key, Resolution], dict[int, list[ReturnAddress]]]:
    """``resolve_many`` and the shops' ``choices``, in one query: each shop's address book (small)
    with the bindings of the wanted SKUs, products and the shop itself."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}, {}
    shops = sorted({shop_id for shop_id, _, _ in keys})
    target_keys = sorted({key for _, product_id, sku_id in keys for _, key, _ in _targets(product_id, sku_id)})
    rows = db.session.execute(
        sa.select(ReturnAddress, AddressBinding.target_key)
        .outerjoin(
            AddressBinding,
            sa.and_(
                AddressBinding.address_pk == ReturnAddress.id,
                AddressBinding.shop_id == ReturnAddress.shop_id,
                AddressBinding.target_key.in_(target_keys),
            ),
        )
        .where(ReturnAddress.shop_id.in_(shops))
        .order_by(ReturnAddress.shop_id, ReturnAddress.is_default_return.desc(), ReturnAddress.name, ReturnAddress.id)
    )
    bound: dict[tuple[int, str], ReturnAddress] = {}
    usable_by_shop: dict[int, list[ReturnAddress]] = {}
    for address, target_key in rows:
        if target_key is not None:
            bound[(address.shop_id, target_key)] = address
        listed = usable_by_shop.setdefault(address.shop_id, [])
        if usable(address) and address not in listed:
            listed.append(address)
    defaults = {}
    for shop_id, listed in usable_by_shop.items():
        default = next((a for a in listed if a.is_default_return), None)
        if default is not None:
            defaults[shop_id] = default
    resolutions = {key: _resolve_one(key, bound, defaults) for key in keys}
    return resolutions, {shop_id: listed for shop_id, listed in usable_by_shop.items() if listed}


def _resolve_one(
    key: Key, bound: dict[tuple[int, str], ReturnAddress], defaults: dict[int, ReturnAddress]
) -> Resolution:
    shop_id, product_id, sku_id = key
    warnings: list[BindingWarning] = []
    for scope, target_key, source in _targets(product_id, sku_id):
        address = bound.get((shop_id, target_key))
        if address is None:
            continue
        if usable(address):
            return Resolution(address, source, warnings)
        kind = WarningKind.DELETED_ON_PLATFORM if address.deleted_on_platform else WarningKind.NOT_A_RETURN_ADDRESS
        warnings.append(BindingWarning(kind, scope, address.id, address.name))
    default = defaults.get(shop_id)
    if default is not None:
        return Resolution(default, AddressSource.DEFAULT, warnings)
    return Resolution(None, None, warnings)


def choices(shop_id: int) -> list[ReturnAddress]:
    """The addresses an agent may pick instead: the shop's usable return addresses, default first."""
    return return_addresses([shop_id]).get(shop_id, [])


def return_addresses(shop_ids: list[int]) -> dict[int, list[ReturnAddress]]:
    """``choices`` of several shops in one query."""
    found: dict[int, list[ReturnAddress]] = {}
    if not shop_ids:
        return found
    for address in db.session.scalars(
        sa.select(ReturnAddress)
        .where(
            ReturnAddress.shop_id.in_(sorted(set(shop_ids))),
            ReturnAddress.is_return_address.is_(True),
            ReturnAddress.deleted_on_platform.is_(False),
        )
        .order_by(ReturnAddress.shop_id, ReturnAddress.is_default_return.desc(), ReturnAddress.name, ReturnAddress.id)
    ):
        found.setdefault(address.shop_id, []).append(address)
    return found
