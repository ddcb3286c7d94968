"""The after-sale queue page: open cases across the user's shops by platform deadline, filters, who
handled what, and bulk approval that a double submit cannot repeat."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import AfterSale, AfterSaleAction, OutboxCall
from tests.orders.conftest import request_id


def add_after_sale(app, shop_id: int, order_id: str, tag: str, **kw) -> int:
    now = utcnow()
    values = {
        "type": "REFUND",
        "status": "MERCHANT_PROCESSING",
        "refund_amount_fen": 10000,
        "deadline_at": now + timedelta(hours=10),
        "platform_created_at": now - timedelta(hours=1),
        "product_id": "p_A",
        "sku_id": "sku_A",
        **kw,
    }
    with app.app_context():
        row = AfterSale(
            shop_id=shop_id,
            after_sale_order_id=f"as_{tag}",
            order_id=order_id,
            openid="o_A_buyer",
            platform_updated_at=now,
            **values,
        )
        db.session.add(row)
        db.session.commit()
        pk = row.id
        db.session.remove()
    return pk


def shown(html: str) -> list[str]:
    return re.findall(r'<span class="mono">(as_[^<]+)</span>', html)


def test_open_after_sales_by_deadline_nearest_first(app, world, login):
    a = world.a
    add_after_sale(app, a.shop_id, a.order_id, "later", deadline_at=utcnow() + timedelta(hours=30))
    add_after_sale(app, a.shop_id, a.order_id, "soon", deadline_at=utcnow() + timedelta(hours=1))
    add_after_sale(app, a.shop_id, a.order_id, "undated", deadline_at=None)
    add_after_sale(app, a.shop_id, a.order_id, "done", status="MERCHANT_REFUND_SUCCESS")
    html = login("agent_a").get("/after-sales/").get_data(as_text=True)
    assert shown(html) == ["as_soon", a.after_sale_order_id, "as_later", "as_undated"]
    assert 'data-total="4"' in html
    assert "data-deadline=" in html
    assert "as_done" in login("agent_a").get("/after-sales/?show=all").get_data(as_text=True)


def test_filters_by_type_status_amount_and_age(app, world, login):
    a = world.a
    add_after_sale(app, a.shop_id, a.order_id, "ret", type="RETURN", refund_amount_fen=50000)
    add_after_sale(app, a.shop_id, a.order_id, "wait", type="RETURN", status="MERCHANT_WAIT_RECEIPT")
    add_after_sale(app, a.shop_id, a.order_id, "old", platform_created_at=utcnow() - timedelta(days=5))
    client = login("agent_a")

    def get(query: str) -> list[str]:
        return shown(client.get("/after-sales/?" + query).get_data(as_text=True))

    assert set(get("type=RETURN")) == {"as_ret", "as_wait"}
    assert get("status=MERCHANT_WAIT_RECEIPT") == ["as_wait"]
    assert get("min=200&max=600") == ["as_ret"]
    assert set(get("max=129")) == {a.after_sale_order_id, "as_wait", "as_old"}, "¥129.00 and under"
    assert get("age=old") == ["as_old"]
    assert "as_old" not in get("age=4h")
    assert set(get("min=abc")) == {a.after_sale_order_id, "as_ret", "as_wait", "as_old"}, "junk is ignored"
    assert get(f"shop={world.b.shop_id}") == [], "another shop's filter shows nothing"


def test_who_handled_what(app, world, login):
    client = login("agent_a")
    client.post(
        f"/api/after-sales/{world.a.after_sale_pk}/actions", json={"kind": "approve_refund", "request_id": request_id()}
    )
    html = client.get("/after-sales/").get_data(as_text=True)
    row = html[html.index(f'data-after-sale-row="{world.a.after_sale_pk}"') :]
    assert "agent_a" in row[:3000] and "同意退款" in row[:3000]


def test_bulk_approve_queues_each_once_whatever_the_submits(app, world, login):
    a = world.a
    second = add_after_sale(app, a.shop_id, a.order_id, "two")
    forbidden = add_after_sale(app, a.shop_id, a.order_id, "waiting", status="USER_WAIT_RETURN", type="RETURN")
    client = login("agent_a")
    page = client.get("/after-sales/").get_data(as_text=True)
    assert f'name="ids" value="{a.after_sale_pk}"' in page and f'name="ids" value="{forbidden}"' not in page
    batch = re.search(r'name="batch" value="([0-9a-f]{32})"', page).group(1)
    form = {"ids": [str(a.after_sale_pk), str(second), str(forbidden)], "batch": batch, "type": "REFUND"}
    first = client.post("/after-sales/bulk-approve", data=form)
    assert first.status_code == 302 and first.headers["Location"].endswith("/after-sales/?type=REFUND")
    again = client.post("/after-sales/bulk-approve", data=form)  # a double submit
    assert again.status_code == 302
    with app.app_context():
        queued = db.session.scalars(sa.select(AfterSaleAction).order_by(AfterSaleAction.after_sale_pk)).all()
        assert [(q.after_sale_pk, q.kind) for q in queued] == [
            (a.after_sale_pk, "approve_refund"),
            (second, "approve_refund"),
        ]
        assert (
            db.session.scalar(
                sa.select(sa.func.count()).select_from(OutboxCall).where(OutboxCall.operation == "aftersale.action")
            )
            == 2
        )
        db.session.remove()
    flashes = client.get("/after-sales/").get_data(as_text=True)
    assert "as_waiting" in flashes  # the refused one is named with its reason


def test_bulk_approve_without_a_selection_says_so(app, world, login):
    client = login("agent_a")
    client.get("/after-sales/")
    assert client.post("/after-sales/bulk-approve", data={"batch": "0" * 32}).status_code == 302
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AfterSaleAction)) == 0
        db.session.remove()
