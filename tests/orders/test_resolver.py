"""The return-address resolver: SKU binding > product binding > shop binding > the shop's default
return address > none; a bound address deleted on the platform falls back with a warning."""

from __future__ import annotations

import pytest

from app import tenancy
from app.extensions import db
from app.models import AddressBinding, BindingScope, ReturnAddress
from app.returns import resolver
from app.returns.resolver import AddressSource, WarningKind
from tests.factories import make_shop


def address(shop_id: int, name: str, default: bool = False, **kw) -> ReturnAddress:
    row = ReturnAddress(
        shop_id=shop_id,
        address_id=f"addr_{name}",
        name=name,
        province="浙江省",
        city="杭州市",
        detail=f"{name}路1号",
        is_return_address=kw.pop("is_return_address", True),
        is_default_return=default,
        **kw,
    )
    db.session.add(row)
    db.session.flush()
    return row


def bind(shop_id: int, target: ReturnAddress, scope: BindingScope, product_id=None, sku_id=None) -> None:
    db.session.add(
        AddressBinding(
            shop_id=shop_id,
            scope=scope,
            product_id=product_id,
            sku_id=sku_id,
            target_key=AddressBinding.key_for(scope, product_id=product_id, sku_id=sku_id),
            address_pk=target.id,
        )
    )
    db.session.flush()


@pytest.fixture
def shop(app):
    with app.app_context():
        shop = make_shop("退货测试店")
        db.session.flush()
        yield shop
        db.session.rollback()
        db.session.remove()


def test_precedence_sku_then_product_then_shop_then_default(shop):
    default = address(shop.id, "默认仓", default=True)
    assert resolver.resolve(shop.id, "p1", "s1") == resolver.Resolution(default, AddressSource.DEFAULT, [])
    shop_wide, product, sku = address(shop.id, "店铺仓"), address(shop.id, "商品仓"), address(shop.id, "规格仓")
    bind(shop.id, shop_wide, BindingScope.SHOP)
    assert resolver.resolve(shop.id, "p1", "s1").source is AddressSource.SHOP
    bind(shop.id, product, BindingScope.PRODUCT, product_id="p1")
    found = resolver.resolve(shop.id, "p1", "s1")
    assert (found.address, found.source) == (product, AddressSource.PRODUCT)
    bind(shop.id, sku, BindingScope.SKU, sku_id="s1")
    found = resolver.resolve(shop.id, "p1", "s1")
    assert (found.address, found.source, found.address_id) == (sku, AddressSource.SKU, "addr_规格仓")
    # Another SKU of the same product still uses the product's binding; another product the shop's.
    assert resolver.resolve(shop.id, "p1", "s2").address == product
    assert resolver.resolve(shop.id, "p9", "s9").address == shop_wide


def test_no_binding_and_no_default_resolves_to_none(shop):
    address(shop.id, "普通仓")
    found = resolver.resolve(shop.id, "p1", "s1")
    assert (found.address, found.source, found.warnings, found.address_id) == (None, None, [], None)


def test_a_bound_address_deleted_on_the_platform_falls_back_with_a_warning(shop):
    default = address(shop.id, "默认仓", default=True)
    gone = address(shop.id, "已删仓", deleted_on_platform=True)
    product = address(shop.id, "商品仓")
    bind(shop.id, gone, BindingScope.SKU, sku_id="s1")
    found = resolver.resolve(shop.id, "p1", "s1")
    assert found.address == default and found.source is AddressSource.DEFAULT
    assert [(w.kind, w.scope, w.address_name) for w in found.warnings] == [
        (WarningKind.DELETED_ON_PLATFORM, BindingScope.SKU, "已删仓")
    ]
    bind(shop.id, product, BindingScope.PRODUCT, product_id="p1")
    found = resolver.resolve(shop.id, "p1", "s1")
    assert found.address == product and len(found.warnings) == 1, "the next level in line, still warned"


def test_an_address_that_is_no_longer_a_return_address_is_skipped(shop):
    sender = address(shop.id, "发货仓", is_return_address=False)
    bind(shop.id, sender, BindingScope.SKU, sku_id="s1")
    found = resolver.resolve(shop.id, "p1", "s1")
    assert found.address is None and found.warnings[0].kind is WarningKind.NOT_A_RETURN_ADDRESS


def test_a_deleted_default_is_not_used(shop):
    address(shop.id, "旧默认", default=True, deleted_on_platform=True)
    assert resolver.resolve(shop.id, "p1", "s1").address is None


def test_resolve_many_agrees_with_resolve_across_shops(app, shop):
    other = make_shop("另一家")
    db.session.flush()
    mine, theirs = address(shop.id, "我的仓", default=True), address(other.id, "他的仓", default=True)
    sku = address(shop.id, "规格仓")
    bind(shop.id, sku, BindingScope.SKU, sku_id="s1")
    bind(other.id, theirs, BindingScope.SKU, sku_id="s1")  # same sku id in another shop: its own binding
    keys = [(shop.id, "p1", "s1"), (shop.id, "p2", "s2"), (other.id, "p1", "s1"), (shop.id, None, None)]
    many = resolver.resolve_many(keys)
    assert [many[k].address for k in keys] == [sku, mine, theirs, mine]
    assert all(many[k] == resolver.resolve(*k) for k in keys)


def test_resolution_respects_the_shop_scope(app, shop):
    other = make_shop("另一家")
    db.session.flush()
    theirs = address(other.id, "他的仓", default=True)
    bind(other.id, theirs, BindingScope.SKU, sku_id="s1")
    shop_id, other_id = shop.id, other.id
    db.session.commit()
    tenancy.set_scope(db.session(), {shop_id})
    assert resolver.resolve(other_id, "p1", "s1").address is None, "another shop's addresses are not found"
    assert resolver.choices(other_id) == []
    tenancy.set_scope(db.session(), None)


def test_choices_are_usable_return_addresses_default_first(shop):
    address(shop.id, "B仓")
    default = address(shop.id, "Z默认", default=True)
    address(shop.id, "已删", deleted_on_platform=True)
    address(shop.id, "发货", is_return_address=False)
    assert [a.name for a in resolver.choices(shop.id)] == [default.name, "B仓"]


def test_bindings_from_the_command_line(app, shop):
    address(shop.id, "默认仓", default=True)
    sku = address(shop.id, "规格仓")
    gone = address(shop.id, "已删仓", deleted_on_platform=True)
    db.session.commit()
    runner = app.test_cli_runner()
    done = runner.invoke(args=["returns", "bind", "--shop", shop.appid, "--sku", "s1", "--address", "规格仓"])
    assert done.exit_code == 0, done.output
    assert resolver.resolve(shop.id, "p1", "s1").address.id == sku.id
    again = runner.invoke(args=["returns", "bind", "--shop", str(shop.id), "--sku", "s1", "--address", gone.address_id])
    assert again.exit_code != 0 and "not a usable" in again.output
    missing = runner.invoke(args=["returns", "bind", "--shop", shop.appid, "--product", "p1", "--address", "无此仓"])
    assert missing.exit_code != 0 and "flask sync addresses" in missing.output
    listed = runner.invoke(args=["returns", "bindings", "--shop", shop.appid])
    assert "sku:s1\t规格仓" in listed.output
