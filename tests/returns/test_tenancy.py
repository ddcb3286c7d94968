"""Return addresses across shops: another shop's addresses, bindings and SKUs are not found."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import AddressBinding
from tests.returns.test_bindings import bind


def test_a_supervisor_cannot_touch_another_shops_addresses_or_bindings(app, world, login):
    b = login("supervisor_b")
    a_shop, a_address = world.a.shop_id, world.a.address_pk
    # Binding in shop A (not served), or to shop A's address from shop B: not found / refused.
    assert bind(b, a_shop, a_address, skus=("p_A/sku_A",)).status_code == 404
    bind(b, world.b.shop_id, a_address, skus=("p_B/sku_B",))
    with app.app_context():
        binding_a = db.session.scalar(sa.select(AddressBinding).where(AddressBinding.shop_id == a_shop))
        b_bound = db.session.scalar(
            sa.select(AddressBinding.address_pk).where(AddressBinding.shop_id == world.b.shop_id)
        )
        db.session.remove()
    assert b_bound == world.b.address_pk  # unchanged: still shop B's own address
    assert b.post(f"/return-addresses/bindings/{binding_a.id}/delete").status_code == 404
    assert b.get(f"/return-addresses/{a_address}/edit").status_code == 404
    assert b.post(f"/return-addresses/{a_address}/edit", data={"name": "x"}).status_code == 404
    assert b.get(f"/return-addresses/new?shop={a_shop}").status_code == 404
    assert b.post("/return-addresses/sync", data={"shop_id": a_shop}).status_code == 404
    assert b.get(f"/return-addresses/?shop={a_shop}").status_code == 404
    assert b.get(f"/return-addresses/bindings.csv?shop={a_shop}").status_code == 404
    csv = b.get("/return-addresses/bindings.csv").get_data(as_text=True)
    assert "sku_B" in csv and "sku_A" not in csv and world.a.address_name not in csv
    with app.app_context():
        assert db.session.get(AddressBinding, binding_a.id) is not None
        db.session.remove()


def test_csv_cannot_bind_in_another_shop(app, world, login):
    import io

    from app.models import Shop

    with app.app_context():
        appid_a = db.session.get(Shop, world.a.shop_id).appid
        db.session.remove()
    text = f"shop_appid,target,id,address_id\n{appid_a},sku,sku_A,addr_A\n,sku,sku_B,addr_A\n"
    answer = login("supervisor_b").post(
        "/return-addresses/bindings/import",
        data={"shop_id": world.b.shop_id, "file": (io.BytesIO(text.encode()), "b.csv")},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    assert '<td class="num">2</td>' in html and '<td class="num">3</td>' in html
