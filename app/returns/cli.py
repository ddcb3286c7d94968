"""`flask returns bind|bindings`: return-address bindings from the command line (scripts and the
sidebar's end-to-end test; people use the return-address pages, which also audit each change)."""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from app.extensions import db
from app.models import AddressBinding, BindingScope, ReturnAddress, Shop
from app.returns import resolver

returns_cli = AppGroup("returns", help="Return addresses and their SKU / product / shop bindings.")


def _shop(ref: str) -> Shop:
    stmt = sa.select(Shop).where(Shop.id == int(ref)) if ref.isdigit() else sa.select(Shop).where(Shop.appid == ref)
    shop = db.session.scalar(stmt)
    if shop is None:
        raise click.BadParameter(f"no shop with id or appid {ref!r}", param_hint="--shop")
    return shop


@returns_cli.command("bind")
@click.option("--shop", "shop_ref", required=True, help="Shop id or appid.")
@click.option("--sku", "sku_id", default=None, help="Bind this SKU (most specific).")
@click.option("--product", "product_id", default=None, help="Bind this product (all its SKUs).")
@click.option("--address", "address_ref", required=True, help="The address's platform address_id or its name.")
def bind_command(shop_ref, sku_id, product_id, address_ref):
    """Bind a SKU, a product, or (with neither) the whole shop to a synced return address."""
    shop = _shop(shop_ref)
    address = db.session.scalar(
        sa.select(ReturnAddress).where(
            ReturnAddress.shop_id == shop.id,
            sa.or_(ReturnAddress.address_id == address_ref, ReturnAddress.name == address_ref),
        )
    )
    if address is None:
        raise click.ClickException(f"no address {address_ref!r} in {shop.name}: run `flask sync addresses` first")
    if not resolver.usable(address):
        raise click.ClickException(f"{address.name} is not a usable return address (deleted or not for returns)")
    scope = BindingScope.SKU if sku_id else BindingScope.PRODUCT if product_id else BindingScope.SHOP
    key = AddressBinding.key_for(scope, product_id=product_id, sku_id=sku_id)
    binding = db.session.scalar(
        sa.select(AddressBinding).where(AddressBinding.shop_id == shop.id, AddressBinding.target_key == key)
    )
    if binding is None:
        binding = AddressBinding(shop_id=shop.id, scope=scope, target_key=key)
        db.session.add(binding)
    binding.sku_id, binding.product_id, binding.address_pk = sku_id, product_id, address.id
    db.session.commit()
    click.echo(f"{shop.name}: {key} -> {address.name} ({address.address_id})")


@returns_cli.command("bindings")
@click.option("--shop", "shop_ref", required=True, help="Shop id or appid.")
def bindings_command(shop_ref):
    """List a shop's bindings, flagging addresses the platform no longer has."""
    shop = _shop(shop_ref)
    for binding in db.session.scalars(
        sa.select(AddressBinding).where(AddressBinding.shop_id == shop.id).order_by(AddressBinding.target_key)
    ):
        state = "" if resolver.usable(binding.address) else "  (NOT USABLE: falls back)"
        click.echo(f"{binding.target_key}\t{binding.address.name}\t{binding.address.address_id}{state}")
