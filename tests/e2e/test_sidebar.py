"""The order sidebar in a real browser: the buyer's orders beside the chat, approving a return sends
the SKU's bound return address to the platform, and the sidebar follows the platform live."""

from __future__ import annotations

import time
import uuid

import requests
from playwright.sync_api import expect

from tests.e2e.test_console import APPID, _sim_post, open_buyer
from tests.e2e.test_sign_in import sign_in

ACCEPT = "/channels/ec/aftersale/acceptapply"
SCARF_SKU = "20000101"  # the simulator catalogue's first item: 羊绒围巾 经典格纹, 驼色, ¥199.00
SLOW = 20_000


def accept_calls(server) -> list[dict]:
    response = requests.get(f"{server.url}/sim/_sim/calls", params={"appid": APPID, "api": ACCEPT}, timeout=10)
    response.raise_for_status()
    return response.json()


def wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    return condition()


def bind_sku_to_the_guangzhou_warehouse(server) -> None:
    """The SKU's return address is the non-default 广州退货仓 (so the default cannot pass for it)."""
    server.flask("sync", "addresses", "--shop", APPID)
    server.flask("returns", "bind", "--shop", APPID, "--sku", SCARF_SKU, "--address", "广州退货仓")


def test_approving_a_return_uses_the_bound_address_and_the_sidebar_follows_live(live_server, page):
    bind_sku_to_the_guangzhou_warehouse(live_server)
    openid = "o_e2e_" + uuid.uuid4().hex[:20]
    order_id = _sim_post(live_server, "order", {"openid": openid})["order_id"]
    after_sale_id = _sim_post(
        live_server, "after_sale", {"order_id": order_id, "kind": "RETURN", "reason": "尺码不合适"}
    )["after_sale_order_id"]

    sign_in(page, live_server.url, "agent")
    expect(page.locator("[data-live-indicator].is-live")).to_be_visible(timeout=10_000)
    open_buyer(page, live_server, openid, "我要退货 " + openid[-6:])

    # The buyer's order is there, with the after-sale, its deadline ticking, and the bound address.
    card = page.locator(f'.order-card[data-order-id="{order_id}"]')
    expect(card).to_be_visible(timeout=SLOW)
    expect(card.locator(".order-item .title")).to_have_text("羊绒围巾 经典格纹")
    expect(card.locator(".sku-attrs")).to_have_text("颜色: 驼色")
    expect(card.locator(".item-price")).to_contain_text("¥199.00")
    after_sale = card.locator(f'[data-after-sale-id="{after_sale_id}"]')
    expect(after_sale.locator("[data-after-sale-status]")).to_have_text("待商家处理")
    expect(after_sale.locator(".countdown")).to_contain_text("剩余")
    address = after_sale.locator("[data-return-address] option:checked")
    expect(address).to_contain_text("广州退货仓")
    expect(after_sale.locator("[data-address-source]")).to_have_text("按 SKU 绑定")
    bound_address_id = address.get_attribute("data-address-id")
    assert bound_address_id

    page.once("dialog", lambda dialog: dialog.accept())
    after_sale.locator('[data-act="approve_return"]').click()

    # The simulator receives acceptapply with the bound address_id ...
    calls = wait_for(
        lambda: [c for c in accept_calls(live_server) if c["body"].get("after_sale_order_id") == after_sale_id]
    )
    assert len(calls) == 1, calls
    assert calls[0]["body"]["address_id"] == bound_address_id and calls[0]["errcode"] == 0
    # ... and the sidebar shows the new status live, with no reload and no more approve button.
    status = page.locator(f'[data-after-sale-id="{after_sale_id}"] [data-after-sale-status]')
    expect(status).to_have_text("待买家退货", timeout=SLOW)
    expect(page.locator(f'[data-after-sale-id="{after_sale_id}"] [data-act="approve_return"]')).to_have_count(0)
    expect(page.locator(f'[data-after-sale-id="{after_sale_id}"] [data-action-state="succeeded"]')).to_contain_text(
        "同意退货"
    )

    # The buyer sends the parcel back: a platform push, nobody clicks, the sidebar follows.
    _sim_post(live_server, "return_parcel", {"after_sale_order_id": after_sale_id})
    expect(status).to_have_text("待商家收货", timeout=SLOW)
    expect(page.locator(f'[data-after-sale-id="{after_sale_id}"] [data-act="confirm_receipt"]')).to_be_visible()
    assert len([c for c in accept_calls(live_server) if c["body"].get("after_sale_order_id") == after_sale_id]) == 1


def test_the_full_address_only_on_a_click_and_the_order_card(live_server, page):
    openid = "o_e2e_" + uuid.uuid4().hex[:20]
    order_id = _sim_post(live_server, "order", {"openid": openid})["order_id"]
    sign_in(page, live_server.url, "agent")
    open_buyer(page, live_server, openid, "地址对吗 " + openid[-6:])
    card = page.locator(f'.order-card[data-order-id="{order_id}"]')
    expect(card).to_be_visible(timeout=SLOW)
    address = card.locator("[data-address-text]")
    expect(address).to_contain_text("139****5678")
    card.locator("[data-reveal-address]").click()
    expect(address).to_contain_text("13912345678")
    expect(address).to_contain_text("浙江省杭州市西湖区文三路100号")
    expect(card.locator("[data-decodes-left]")).to_contain_text("今日还可查看完整地址")

    card.locator("[data-send-order]").click()
    expect(page.locator("li.message .share-kind", has_text="订单")).to_be_visible(timeout=SLOW)
    sent = wait_for(
        lambda: [
            m
            for m in requests.get(f"{live_server.url}/sim/_sim/state", params={"appid": APPID}, timeout=10).json()[
                "sent"
            ]
            if m.get("open_id") == openid and m.get("msg_type") == "order_share"
        ]
    )
    assert [m["order_share"]["order_id"] for m in sent] == [order_id]
