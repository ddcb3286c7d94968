"""The snapshot a rule sees, from stored rows: hours since payment and since ordering (UTC), the
after-sale's own SKU, the buyer's after-sales in the 30 days before this request (this one and older
ones not counted), the buyer's tags, the shop's time zone; all JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from app.extensions import db
from app.models import AfterSale, Customer, CustomerTag, Order, OrderItem
from app.rules import facts
from tests.factories import make_shop

ASKED = datetime(2026, 11, 30, 16, 10, tzinfo=UTC)  # 00:10 on Dec 1 in Shanghai


def _after_sale(shop_id, n: int, asked: datetime, order_id: str = "o1", openid: str = "o_buyer") -> AfterSale:
    row = AfterSale(shop_id=shop_id, after_sale_order_id=f"as{n}", order_id=order_id, openid=openid, type="REFUND",
                    status="MERCHANT_PROCESSING", product_id="p1", sku_id="s2", refund_amount_fen=5000,
                    platform_created_at=asked, platform_updated_at=asked)
    db.session.add(row)
    return row


def test_the_snapshot_of_an_after_sale(app):
    with app.app_context():
        shop = make_shop("时区店", timezone="Europe/Berlin")
        db.session.flush()
        order = Order(shop_id=shop.id, order_id="o1", status=20, openid="o_buyer",
                      platform_created_at=ASKED - timedelta(hours=3, minutes=30),
                      platform_updated_at=ASKED, paid_at=ASKED - timedelta(hours=3, minutes=59),
                      order_price_fen=10000,
                      items=[OrderItem(shop_id=shop.id, product_id="p1", sku_id="s1"),
                             OrderItem(shop_id=shop.id, product_id="p1", sku_id="s2")])
        db.session.add(order)
        customer = Customer(shop_id=shop.id, openid="o_buyer")
        db.session.add(customer)
        db.session.flush()
        for tag in ("vip", "blacklist-watch", "回头客"):
            db.session.add(CustomerTag(shop_id=shop.id, customer_id=customer.id, tag=tag))
        other = Customer(shop_id=shop.id, openid="o_other")
        db.session.add(other)
        db.session.flush()
        db.session.add(CustomerTag(shop_id=shop.id, customer_id=other.id, tag="another buyer's"))
        _after_sale(shop.id, 1, ASKED - timedelta(days=31))  # too old
        _after_sale(shop.id, 2, ASKED - timedelta(days=5))  # counts
        _after_sale(shop.id, 3, ASKED - timedelta(days=2), openid="o_other")  # another buyer
        current = _after_sale(shop.id, 4, ASKED)
        _after_sale(shop.id, 5, ASKED + timedelta(hours=1))  # later than this request
        db.session.commit()
        snapshot = facts.for_after_sale(current, shop)
        db.session.remove()
    assert json.loads(json.dumps(snapshot)) == snapshot, "plain JSON"
    assert snapshot["hours_since_paid"] == round(3 + 59 / 60, 6)
    assert snapshot["hours_since_created"] == 3.5
    assert snapshot["skus"] == ["s2"] and snapshot["products"] == ["p1"]
    assert snapshot["buyer_after_sales_30d"] == 1
    assert snapshot["buyer_tags"] == ["blacklist-watch", "vip", "回头客"], "this buyer's tags, in order"
    assert snapshot["order_status"] == 20 and snapshot["refund_amount_fen"] == 5000
    assert snapshot["shop_timezone"] == "Europe/Berlin"
    assert snapshot["event_time"] == ASKED.isoformat()


def test_an_unpaid_order_has_no_hours_since_payment(app):
    with app.app_context():
        shop = make_shop("未付款店")
        db.session.flush()
        db.session.add(Order(shop_id=shop.id, order_id="o1", status=10, openid="o_buyer",
                             platform_created_at=ASKED - timedelta(hours=1), platform_updated_at=ASKED))
        current = _after_sale(shop.id, 1, ASKED)
        db.session.commit()
        snapshot = facts.for_after_sale(current, shop)
        db.session.remove()
    assert snapshot["hours_since_paid"] is None and snapshot["hours_since_created"] == 1.0
    assert snapshot["buyer_tags"] == [] and snapshot["buyer_after_sales_30d"] == 0, "a buyer with no history"
