"""Bindings as CSV: export every binding, import many at once (all or nothing).

Columns (a header row; UTF-8, with or without the BOM Excel writes; extra columns are ignored):

=============  ====================================================================================
shop_appid     the shop (may be left empty when the user serves a single shop)
target         ``sku``, ``product`` or ``shop`` (the whole shop's binding)
id             the SKU id or product id (empty for ``shop``)
address_id     the platform's address id; or leave it empty and give ``address_name``
address_name   the address's name in the address book (used only when ``address_id`` is empty)
title          ignored on import (the export writes the product title for people)
=============  ====================================================================================

Import checks every row before writing anything: the shop is one the user serves, the target kind
is known, the SKU / product was seen in that shop's orders, the address is a usable return address
of the same shop, and no target appears twice. Any error rejects the whole file, listing each bad row
by its line number in the file (the header is line 1); otherwise every row is applied in one
transaction and audited.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.models import AddressBinding, BindingScope, ReturnAddress, Shop, User
from app.returns import bindings, resolver

COLUMNS = ["shop_appid", "target", "id", "address_id", "address_name", "title"]
REQUIRED = {"target", "id"}
MAX_ROWS = 20_000
MAX_BYTES = 4 * 1024 * 1024


@dataclass
class RowError:
    line: int
    message: str


@dataclass
class ImportResult:
    rows: int = 0
    changed: int = 0
    errors: list[RowError] | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def export_csv(shops: list[Shop]) -> str:
    """Every binding of the shops, with a BOM so Excel opens it as UTF-8."""
    by_id = {s.id: s for s in shops}
    titles = _titles([s.id for s in shops])
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    rows = db.session.scalars(
        sa.select(AddressBinding)
        .where(AddressBinding.shop_id.in_(list(by_id) or [0]))
        .order_by(AddressBinding.shop_id, AddressBinding.scope, AddressBinding.target_key)
    )
    for b in rows:
        target_id = b.sku_id if b.scope is BindingScope.SKU else b.product_id if b.scope is BindingScope.PRODUCT else ""
        title = titles.get((b.shop_id, b.scope.value, target_id or ""), "")
        writer.writerow(
            [by_id[b.shop_id].appid, b.scope.value, target_id or "", b.address.address_id, b.address.name, title]
        )
    return out.getvalue()


def _titles(shop_ids: list[int]) -> dict[tuple[int, str, str], str]:
    from app.models import OrderItem

    found: dict[tuple[int, str, str], str] = {}
    for shop_id, product_id, sku_id, title in db.session.execute(
        sa.select(OrderItem.shop_id, OrderItem.product_id, OrderItem.sku_id, sa.func.max(OrderItem.title))
        .where(OrderItem.shop_id.in_(shop_ids or [0]))
        .group_by(OrderItem.shop_id, OrderItem.product_id, OrderItem.sku_id)
    ):
        found[(shop_id, "sku", sku_id)] = title or ""
        found.setdefault((shop_id, "product", product_id), title or "")
    return found


def _decode(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def import_csv(user: User, data: bytes, shops: list[Shop]) -> ImportResult:
    """Validate every row, then apply all of them in one transaction, or none (``result.errors``)."""
    result = ImportResult(errors=[])
    errors = result.errors
    if len(data) > MAX_BYTES:
        errors.append(RowError(0, _("The file is larger than %(mb)d MB.", mb=MAX_BYTES // (1024 * 1024))))
        return result
    text = _decode(data)
    if text is None:
        errors.append(RowError(0, _("The file is not UTF-8 text. Save it as “CSV UTF-8” and try again.")))
        return result
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        errors.append(RowError(1, _("The file is empty: it needs a header row and one row per binding.")))
        return result
    names = [h.strip().lower() for h in header]
    missing = sorted(REQUIRED - set(names))
    if missing or not ({"address_id", "address_name"} & set(names)):
        errors.append(
            RowError(
                1,
                _(
                    "The header row must name the columns %(columns)s (and address_id or address_name).",
                    columns=", ".join(["shop_appid", "target", "id"]),
                ),
            )
        )
        return result
    by_appid = {s.appid: s for s in shops}
    single = shops[0] if len(shops) == 1 else None
    addresses = _address_books([s.id for s in shops])
    parsed: list[tuple[int, Shop, bindings.Target, str, str]] = []  # line, shop, target, address id, name
    for line, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue  # blank lines (Excel leaves some at the end)
        if len(parsed) >= MAX_ROWS:
            errors.append(RowError(line, _("At most %(n)d rows per file.", n=MAX_ROWS)))
            break
        row = {name: (values[i].strip() if i < len(values) else "") for i, name in enumerate(names)}
        appid = row.get("shop_appid", "")
        shop = by_appid.get(appid) if appid else single
        if shop is None:
            errors.append(
                RowError(line, _("Unknown shop “%(appid)s”.", appid=appid) if appid else _("Name the shop_appid."))
            )
            continue
        try:
            scope = BindingScope(row.get("target", "").lower())
        except ValueError:
            errors.append(RowError(line, _("target must be sku, product or shop, not “%(v)s”.", v=row.get("target"))))
            continue
        target_id = row.get("id", "")
        if scope is not BindingScope.SHOP and not target_id:
            errors.append(RowError(line, _("The %(target)s id is missing.", target=scope.value)))
            continue
        target = bindings.Target(
            scope,
            product_id=target_id if scope is BindingScope.PRODUCT else None,
            sku_id=target_id if scope is BindingScope.SKU else None,
        )
        parsed.append((line, shop, target, row.get("address_id", ""), row.get("address_name", "")))
    result.rows = len(parsed)
    if not parsed and not errors:
        errors.append(RowError(2, _("The file has a header but no bindings.")))
    # Targets known from orders, per shop, in a few queries.
    known_skus: dict[int, dict[str, str]] = {}
    known_products: dict[int, set[str]] = {}
    for shop in shops:
        mine = [t for _, s, t, _, _ in parsed if s.id == shop.id]
        known_skus[shop.id] = bindings.known_sku_ids(shop.id, [t.sku_id for t in mine if t.sku_id])
        known_products[shop.id] = bindings.known_product_ids(shop.id, [t.product_id for t in mine if t.product_id])
    seen: dict[tuple[int, str], int] = {}
    plan: dict[tuple[int, int], list[bindings.Target]] = {}  # (shop, address pk) -> targets
    chosen: dict[int, ReturnAddress] = {}
    for line, shop, target, address_id, address_name in parsed:
        if target.scope is BindingScope.SKU:
            product_id = known_skus[shop.id].get(target.sku_id or "")
            if product_id is None:
                errors.append(RowError(line, _("SKU %(id)s is not known from this shop's orders.", id=target.sku_id)))
                continue
            target.product_id = product_id
        elif target.scope is BindingScope.PRODUCT and target.product_id not in known_products[shop.id]:
            errors.append(
                RowError(line, _("Product %(id)s is not known from this shop's orders.", id=target.product_id))
            )
            continue
        first = seen.setdefault((shop.id, target.key), line)
        if first != line:
            errors.append(
                RowError(line, _("%(target)s is already bound on line %(line)d.", target=target.key, line=first))
            )
            continue
        address, problem = _find_address(addresses.get(shop.id, []), address_id, address_name, shop)
        if address is None:
            errors.append(RowError(line, problem))
            continue
        chosen[address.id] = address
        plan.setdefault((shop.id, address.id), []).append(target)
    if errors:
        errors.sort(key=lambda e: e.line)
        db.session.rollback()
        return result
    try:
        for (shop_id, address_pk), targets in plan.items():
            result.changed += bindings.apply(user, shop_id, targets, chosen[address_pk], via="csv")
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return result


def _address_books(shop_ids: list[int]) -> dict[int, list[ReturnAddress]]:
    found: dict[int, list[ReturnAddress]] = {}
    for address in db.session.scalars(
        sa.select(ReturnAddress).where(ReturnAddress.shop_id.in_(shop_ids or [0])).order_by(ReturnAddress.id)
    ):
        found.setdefault(address.shop_id, []).append(address)
    return found


def _find_address(
    book: list[ReturnAddress], address_id: str, name: str, shop: Shop
) -> tuple[ReturnAddress | None, str]:
    if address_id:
        matches = [a for a in book if a.address_id == address_id]
        wanted = address_id
    elif name:
        matches = [a for a in book if a.name == name]
        wanted = name
        if len(matches) > 1:
            return None, _("Several addresses are named “%(name)s”: give the address_id.", name=name)
    else:
        return None, _("Give an address_id or an address_name.")
    if not matches:
        return None, _("No address “%(address)s” in the address book of %(shop)s.", address=wanted, shop=shop.name)
    address = matches[0]
    if not resolver.usable(address):
        return None, _(
            "“%(name)s” cannot receive returns (deleted on the platform or not a return address).", name=address.name
        )
    return address, ""
