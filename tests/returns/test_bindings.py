"""Bindings made in the UI: precedence SKU > product > shop binding > shop default > none, bulk
selection, role gates, audit; addresses created and edited through the platform."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import ReturnAddress
from app.returns import resolver
from tests.returns.conftest import address_pk, audit_of, bindings_of

SKU, PRODUCT = "20000101", "10000101"
OTHER_SKU = dict(
    product_id="10000202", sku_id="20000202", title="真丝衬衫", sku_cnt=1, sale_price=29900, real_price=29900
)


def bind(client, shop_id: int, address: int, scope: str = "sku", skus=(f"{PRODUCT}/{SKU}",)):
    return client.post(
        "/return-addresses/bind", data={"shop_id": shop_id, "address_pk": address, "scope": scope, "sku": list(skus)}
    )


def resolution(app, shop_id: int, product_id: str = PRODUCT, sku_id: str = SKU):
    with app.app_context():
        found = resolver.resolve(shop_id, product_id, sku_id)
        answer = (found.address.name if found.address else None, found.source.value if found.source else None)
        db.session.remove()
    return answer


def new_address(client, shop_id: int, name: str, **kw):
    data = {
        "name": name,
        "contact_name": "赵仓管",
        "phone": "13900000000",
        "province": "北京市",
        "city": "北京市",
        "county": "朝阳区",
        "detail": f"{name}物流园1号",
        "is_return_address": "y",
        **kw,
    }
    return client.post(f"/return-addresses/new?shop={shop_id}", data=data)


def test_precedence_through_the_ui(app, supervised, login):
    client = login("zhang")
    shop_id = supervised.shop_id
    guangzhou = address_pk(app, shop_id, "广州退货仓")
    # A third warehouse, created on the platform from the desk.
    assert new_address(client, shop_id, "北京退货仓").status_code == 302
    beijing = address_pk(app, shop_id, "北京退货仓")
    assert beijing and resolution(app, shop_id) == ("杭州总仓", "default")

    assert bind(client, shop_id, guangzhou, "product").status_code == 302
    assert resolution(app, shop_id) == ("广州退货仓", "product")
    assert bind(client, shop_id, beijing, "sku").status_code == 302
    assert resolution(app, shop_id) == ("北京退货仓", "sku")
    assert bindings_of(app, shop_id) == {f"product:{PRODUCT}": "广州退货仓", f"sku:{SKU}": "北京退货仓"}

    # The page lists the SKU with what a return would use.
    html = client.get(f"/return-addresses/?shop={shop_id}&q={SKU}").get_data(as_text=True)
    assert 'data-sku-row="20000101"' in html and "北京退货仓" in html and 'data-resolved-source="sku"' in html

    # Removing the SKU binding: the product's applies again; then the shop default; then none.
    with app.app_context():
        from app.models import AddressBinding

        ids = {b.target_key: b.id for b in db.session.scalars(sa.select(AddressBinding))}
        db.session.remove()
    assert client.post(f"/return-addresses/bindings/{ids[f'sku:{SKU}']}/delete").status_code == 302
    assert resolution(app, shop_id) == ("广州退货仓", "product")
    assert client.post(f"/return-addresses/bindings/{ids[f'product:{PRODUCT}']}/delete").status_code == 302
    assert resolution(app, shop_id) == ("杭州总仓", "default")
    assert bind(client, shop_id, beijing, "shop", skus=()).status_code == 302
    assert resolution(app, shop_id) == ("北京退货仓", "shop")

    trail = [(a, s) for a, s, _ in audit_of(app)]
    assert ("return_address.created", trail[0][1]) == trail[0]
    assert ("return_address.bind", f"sku:{SKU}") in trail and ("return_address.unbind", f"sku:{SKU}") in trail


def test_none_is_a_visible_problem(app, supervised, login):
    with app.app_context():
        for address in db.session.scalars(sa.select(ReturnAddress)):
            address.is_default_return = False
        db.session.commit()
        db.session.remove()
    assert resolution(app, supervised.shop_id) == (None, None)
    html = login("zhang").get(f"/return-addresses/?shop={supervised.shop_id}").get_data(as_text=True)
    assert "data-no-default" in html
    assert 'data-sku-row="20000101" class="is-problem"' in html


def test_bulk_binding_of_a_selection(app, supervised, login):
    supervised.order("o_buyer_2", items=[OTHER_SKU])
    shop_id = supervised.shop_id
    guangzhou = address_pk(app, shop_id, "广州退货仓")
    answer = bind(login("zhang"), shop_id, guangzhou, skus=(f"{PRODUCT}/{SKU}", "10000202/20000202"))
    assert answer.status_code == 302
    assert bindings_of(app, shop_id) == {f"sku:{SKU}": "广州退货仓", "sku:20000202": "广州退货仓"}
    assert len([a for a in audit_of(app) if a[0] == "return_address.bind"]) == 2


def test_unknown_sku_and_unusable_address_are_refused(app, supervised, login):
    shop_id = supervised.shop_id
    client = login("zhang")
    guangzhou = address_pk(app, shop_id, "广州退货仓")
    bind(client, shop_id, guangzhou, skus=("1/never-sold",))
    assert bindings_of(app, shop_id) == {}
    with app.app_context():
        db.session.get(ReturnAddress, guangzhou).deleted_on_platform = True
        db.session.commit()
        db.session.remove()
    bind(client, shop_id, guangzhou)
    assert bindings_of(app, shop_id) == {}


def test_agents_may_look_but_not_change(app, supervised, login):
    shop_id = supervised.shop_id
    agent = login("li")
    page = agent.get(f"/return-addresses/?shop={shop_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "广州退货仓" in html and 'data-sku-row="20000101"' in html
    assert "data-bind-submit" not in html and "data-shop-binding-form" not in html and "data-import-form" not in html
    manager = login("zhang").get(f"/return-addresses/?shop={shop_id}").get_data(as_text=True)
    assert "data-bind-submit" in manager and "data-shop-binding-form" in manager and "data-import-form" in manager
    assert agent.get("/return-addresses/report").status_code == 200
    assert agent.get("/return-addresses/bindings.csv").status_code == 200
    assert bind(agent, shop_id, address_pk(app, shop_id, "广州退货仓")).status_code == 403
    assert agent.get(f"/return-addresses/new?shop={shop_id}").status_code == 403
    assert agent.post("/return-addresses/sync", data={"shop_id": shop_id}).status_code == 403
    assert bindings_of(app, shop_id) == {}


def test_editing_an_address_goes_through_the_platform(app, supervised, login):
    shop_id = supervised.shop_id
    pk = address_pk(app, shop_id, "广州退货仓")
    client = login("zhang")
    form = client.get(f"/return-addresses/{pk}/edit").get_data(as_text=True)
    assert "广州退货仓" in form
    answer = client.post(
        f"/return-addresses/{pk}/edit",
        data={
            "name": "广州退货仓(新)",
            "contact_name": "王仓管",
            "phone": "13800138000",
            "province": "广东省",
            "city": "广州市",
            "county": "白云区",
            "detail": "新仓路1号",
            "is_return_address": "y",
            "is_default_return": "y",
        },
    )
    assert answer.status_code == 302
    with app.app_context():
        row = db.session.get(ReturnAddress, pk)
        on_platform = supervised.sim_shop.addresses[row.address_id]
        assert (row.name, row.detail, row.is_default_return) == ("广州退货仓(新)", "新仓路1号", True)
        assert on_platform["name"] == "广州退货仓(新)" and on_platform["default_recv"] is True
        # One default return address per shop, as on the platform.
        defaults = db.session.scalars(sa.select(ReturnAddress.name).where(ReturnAddress.is_default_return)).all()
        assert defaults == ["广州退货仓(新)"]
        db.session.remove()
    updates = supervised.platform.calls(supervised.sim_shop, "/channels/ec/merchant/address/update")
    assert len(updates) == 1 and updates[0][2]["address_detail"]["address_id"]
    assert [a for a in audit_of(app) if a[0] == "return_address.updated"]


def test_a_platform_refusal_is_shown_in_plain_words_and_nothing_is_stored(app, supervised, login):
    supervised.sim_shop.faults.api_errors = {"/channels/ec/merchant/address/add": 10020099}
    client = login("zhang")
    answer = new_address(client, supervised.shop_id, "上海退货仓")
    assert answer.status_code == 200
    html = answer.get_data(as_text=True)
    assert "平台拒绝了该地址" in html and "10020099" in html
    assert address_pk(app, supervised.shop_id, "上海退货仓") is None
    assert [a for a in audit_of(app) if a[0] == "return_address.save_failed"]
