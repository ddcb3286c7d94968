"""A bound address deleted on the platform: the binding is flagged, approval falls back by precedence
with a warning, the address used is stored on the after-sale and in the audit log, the report lists it."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import AfterSale, AfterSaleAction, AuditLog
from tests.orders.test_actions import post_action, row
from tests.returns.conftest import address_pk
from tests.returns.test_bindings import bind


def test_deleted_bound_address_falls_back_with_a_warning(app, supervised, login):
    shop_id = supervised.shop_id
    supervisor = login("zhang")
    guangzhou = address_pk(app, shop_id, "广州退货仓")
    bind(supervisor, shop_id, guangzhou)
    with app.app_context():
        from app.models import ReturnAddress

        guangzhou_id = db.session.get(ReturnAddress, guangzhou).address_id
        hangzhou_id = db.session.get(ReturnAddress, address_pk(app, shop_id, "杭州总仓")).address_id
        db.session.remove()
    # Deleted in the platform's back office; the desk's sync (here by hand) flags it.
    supervised.platform.delete_address(supervised.sim_shop, {"address_id": guangzhou_id})
    assert supervisor.post("/return-addresses/sync", data={"shop_id": shop_id}).status_code == 302
    page = supervisor.get(f"/return-addresses/?shop={shop_id}").get_data(as_text=True)
    assert "data-binding-problem" in page

    pk = supervised.after_sale(supervised.order("o_buyer_9"), "RETURN")
    action = post_action(login("li"), pk, "approve_return").get_json()["action"]
    assert (action["address_id"], action["address_source"]) == (hangzhou_id, "default")
    supervised.drain()
    assert supervised.calls()[0][2]["address_id"] == hangzhou_id

    stored = row(app, AfterSale, pk)
    assert stored.return_address_source == "default"
    assert stored.return_address_pk == address_pk(app, shop_id, "杭州总仓")
    assert row(app, AfterSaleAction, action["id"]).address_fallback is True
    with app.app_context():
        details = db.session.scalar(sa.select(AuditLog.details).where(AuditLog.action == "after_sale.approve_return"))
        db.session.remove()
    assert details["address_id"] == hangzhou_id and details["address_fallback"] is True
    assert details["address_warnings"] == [
        {"kind": "deleted_on_platform", "scope": "sku", "address_name": "广州退货仓"}
    ]

    report = supervisor.get("/return-addresses/report").get_data(as_text=True)
    assert f'data-fallback="{stored.after_sale_order_id}"' in report and "杭州总仓" in report


def test_report_lists_sold_skus_without_a_binding(app, supervised, login):
    client = login("zhang")
    report = client.get("/return-addresses/report").get_data(as_text=True)
    assert 'data-unbound-sku="20000101"' in report
    bind(client, supervised.shop_id, address_pk(app, supervised.shop_id, "广州退货仓"), "product")
    report = client.get("/return-addresses/report").get_data(as_text=True)
    assert 'data-unbound-sku="20000101"' not in report
