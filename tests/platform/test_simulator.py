"""The simulator keeps the platform's rules (platform-api.md), seen through the real client over HTTP."""

from __future__ import annotations

import random
import time

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Order, Shop
from app.platform import client_for
from app.platform.client import BadRequest, BusinessError
from app.platform.simulator.scenario import CATALOGUE, new_buyer
from tests.platform.conftest import connect_shop, wait_until


@pytest.fixture
def api(app, simulator, polled_shop):
    shop_id, sim_shop = polled_shop
    with app.app_context():
        yield client_for(db.session.get(Shop, shop_id)), sim_shop, simulator.platform
        db.session.remove()


def _order(platform, sim_shop, seed=1):
    buyer = new_buyer(platform, sim_shop, random.Random(seed))
    return platform.place_order(sim_shop, buyer, [dict(CATALOGUE[0])])


def _errcode(call) -> int:
    with pytest.raises(BusinessError) as caught:
        call()
    return caught.value.errcode


def test_one_refund_per_order_per_minute(api):
    client, sim_shop, platform = api
    order = _order(platform, sim_shop)
    first = platform.open_after_sale(sim_shop, order["order_id"], "REFUND")
    second = platform.open_after_sale(sim_shop, order["order_id"], "REFUND")
    client.accept_after_sale(first["after_sale_order_id"])
    assert _errcode(lambda: client.accept_after_sale(second["after_sale_order_id"])) == 10021059
    assert client.get_after_sale(first["after_sale_order_id"])["status"] == "MERCHANT_REFUND_SUCCESS"


def test_approving_a_return_needs_a_valid_return_address(api):
    client, sim_shop, platform = api
    order = _order(platform, sim_shop)
    record = platform.open_after_sale(sim_shop, order["order_id"], "RETURN")
    after_sale_id = record["after_sale_order_id"]
    assert _errcode(lambda: client.accept_after_sale(after_sale_id)) == 10021060
    assert _errcode(lambda: client.accept_after_sale(after_sale_id, address_id="nope")) == 10021062
    address_id = client.list_addresses()[0]
    client.accept_after_sale(after_sale_id, address_id=address_id, accept_type=1)
    assert client.get_after_sale(after_sale_id)["status"] == "USER_WAIT_RETURN"
    platform.buyer_returns_parcel(sim_shop, after_sale_id)
    detail = client.get_after_sale(after_sale_id)
    assert detail["status"] == "MERCHANT_WAIT_RECEIPT" and detail["return_info"]["waybill_id"]
    client.accept_after_sale(after_sale_id, accept_type=2)
    assert client.get_after_sale(after_sale_id)["status"] == "MERCHANT_RETURN_SUCCESS"
    assert _errcode(lambda: client.accept_after_sale(after_sale_id, accept_type=2)) == 10021001, "not twice"


def test_rejections_use_platform_reasons_and_may_require_negotiation(api):
    client, sim_shop, platform = api
    order = _order(platform, sim_shop)
    plain = platform.open_after_sale(sim_shop, order["order_id"], "REFUND")
    touchy = platform.open_after_sale(sim_shop, order["order_id"], "REFUND", requires_negotiation=True)
    reason = client.reject_reasons()[0]["reject_reason_type"]
    with pytest.raises(BadRequest):
        client.reject_after_sale(plain["after_sale_order_id"], 999)
    client.reject_after_sale(plain["after_sale_order_id"], reason, "已发货")
    assert client.get_after_sale(plain["after_sale_order_id"])["status"] == "MERCHANT_REJECT_REFUND"
    assert _errcode(lambda: client.reject_after_sale(touchy["after_sale_order_id"], reason)) == 10021068


def test_five_replies_after_the_buyers_last_message_and_request_ids(api):
    client, sim_shop, platform = api
    with pytest.raises(BusinessError) as caught:
        client.send_message("o_stranger", "text", {"content": "您好"})
    assert caught.value.errcode == 10500012, "nobody wrote: outside the 48-hour window"
    platform.buyer_message(sim_shop, "o_buyer", "在吗")
    ids = [client.send_message("o_buyer", "text", {"content": f"回复{i}"}, request_id=f"r{i}") for i in range(5)]
    assert client.send_message("o_buyer", "text", {"content": "重发"}, request_id="r0") == ids[0], "deduped"
    assert _errcode(lambda: client.send_message("o_buyer", "text", {"content": "第六条"})) == 10500011
    assert len(sim_shop.sent) == 5
    platform.buyer_message(sim_shop, "o_buyer", "还有问题")
    client.send_message("o_buyer", "order_share", {"order_id": "123"})
    assert sim_shop.sent[-1]["order_share"] == {"order_id": "123"}


def test_list_windows_and_page_sizes_are_enforced(api):
    client, sim_shop, platform = api
    now = int(time.time())
    with pytest.raises(BadRequest):
        client.call(
            "/channels/ec/order/list/get",
            {"update_time_range": {"start_time": now - 60, "end_time": now}, "page_size": 101},
        )
    with pytest.raises(BadRequest):
        client.call("/channels/ec/order/list/get", {"page_size": 10})
    assert _errcode(lambda: client.list_after_sales(now - 90000, now)) == 10020004
    for seed in range(105):
        _order(platform, sim_shop, seed)
    first = client.list_orders(now - 10, now + 10)
    second = client.list_orders(now - 10, now + 10, next_key=first["next_key"])
    assert len(first["order_id_list"]) == 100 and first["has_more"]
    assert len(second["order_id_list"]) == 5 and not second["has_more"]
    assert not set(first["order_id_list"]) & set(second["order_id_list"])


def test_unanswered_pushes_are_retried_until_acknowledged(app, simulator, desk):
    _, sim_shop = connect_shop(app, simulator, desk.url)
    good_url = sim_shop.push_url
    sim_shop.push_url = f"{desk.url}/webhooks/not-this-one"  # answered 404: not acknowledged
    order = _order(simulator.platform, sim_shop)
    assert wait_until(lambda: simulator.sender.failed_attempts >= 2, timeout=10)
    sim_shop.push_url = good_url
    assert simulator.sender.wait_idle(15)

    def stored():
        with app.app_context():
            found = db.session.scalar(sa.select(Order.status).where(Order.order_id == order["order_id"]))
            db.session.remove()
        return found == 20

    assert wait_until(stored, timeout=15)


def test_orders_are_paid_shipped_and_cancelled_as_the_platform_reports_them(api):
    client, sim_shop, platform = api
    buyer = new_buyer(platform, sim_shop, random.Random(7))
    unpaid = platform.place_order(sim_shop, buyer, [dict(CATALOGUE[1])], paid=False)
    detail = client.get_order(unpaid["order_id"])
    assert detail["status"] == 10 and not detail["order_detail"]["pay_info"]
    platform.pay_order(sim_shop, unpaid["order_id"])
    detail = client.get_order(unpaid["order_id"])
    assert detail["status"] == 20 and detail["order_detail"]["pay_info"]["pay_time"]
    platform.ship_order(sim_shop, unpaid["order_id"])
    shipped = client.get_order(unpaid["order_id"])["order_detail"]["delivery_info"]
    assert shipped["delivery_product_info"][0]["waybill_id"] and shipped["ship_done_time"]
    other = platform.place_order(sim_shop, buyer, [dict(CATALOGUE[0])])
    platform.cancel_order(sim_shop, other["order_id"])
    assert client.get_order(other["order_id"])["status"] == 250
