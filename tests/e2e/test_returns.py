"""Return addresses in a real browser: a supervisor creates a warehouse on the platform and binds a
SKU to it from the SKU search (no CLI); an agent approves the buyer's return from the sidebar, and the
simulator receives exactly that address_id."""

from __future__ import annotations

import uuid

import requests
from playwright.sync_api import expect

from tests.e2e.test_console import APPID, _sim_post, open_buyer
from tests.e2e.test_sidebar import SCARF_SKU, SLOW, accept_calls, wait_for
from tests.e2e.test_sign_in import sign_in


def sim_addresses(server) -> list[str]:
    response = requests.get(f"{server.url}/sim/_sim/state", params={"appid": APPID}, timeout=10)
    response.raise_for_status()
    return response.json()["addresses"]


def test_a_sku_bound_in_the_address_book_is_used_by_the_sidebar(live_server, page):
    openid = "o_e2e_" + uuid.uuid4().hex[:20]
    order_id = _sim_post(live_server, "order", {"openid": openid})["order_id"]
    name = "深圳退货仓" + openid[-4:]

    sign_in(page, live_server.url, "supervisor")
    page.locator("nav.mainnav a", has_text="退货地址").click()
    page.locator("[data-sync-addresses]").click()
    expect(page.locator("[data-address-book]")).to_contain_text("广州退货仓")

    # A new warehouse, saved on the platform first.
    before = set(sim_addresses(live_server))
    page.locator("[data-new-address]").click()
    page.fill("#name", name)
    page.fill("#contact_name", "陈仓管")
    page.fill("#phone", "13700000000")
    page.fill("#province", "广东省")
    page.fill("#city", "深圳市")
    page.fill("#county", "南山区")
    page.fill("#detail", "科技园退货中心1号")
    page.locator("form[data-address-form] button[type=submit]").click()
    expect(page.locator(".flashes .flash").first).to_contain_text(name)
    new_ids = set(sim_addresses(live_server)) - before
    assert len(new_ids) == 1
    new_address_id = new_ids.pop()
    expect(page.locator(f'[data-address-row="{new_address_id}"]')).to_contain_text(name)

    # The scarf's SKU is known from the order just ingested: search it, tick it, bind it.
    def sku_listed():
        page.fill("[data-sku-search]", SCARF_SKU)
        page.locator("[data-known-skus] form.filter-form button[type=submit]").click()
        return page.locator(f'[data-sku-row="{SCARF_SKU}"]').count() > 0

    assert wait_for(sku_listed, timeout=20)
    row = page.locator(f'[data-sku-row="{SCARF_SKU}"]')
    row.locator("input[data-bulk-item]").check()
    page.locator("[data-bind-address]").select_option(label=name)
    page.locator("[data-bind-scope]").select_option("sku")
    page.locator("[data-bind-submit]").click()
    expect(page.locator(f'[data-binding="sku:{SCARF_SKU}"]')).to_contain_text(name)
    expect(page.locator(f'[data-sku-row="{SCARF_SKU}"] [data-resolved]')).to_contain_text(name)

    # The buyer asks to return it; the agent approves from the sidebar.
    after_sale_id = _sim_post(live_server, "after_sale", {"order_id": order_id, "kind": "RETURN"})[
        "after_sale_order_id"
    ]
    page.context.clear_cookies()  # the supervisor signs out; the agent signs in
    sign_in(page, live_server.url, "agent")
    expect(page.locator("[data-live-indicator].is-live")).to_be_visible(timeout=10_000)
    open_buyer(page, live_server, openid, "退货寄到哪 " + openid[-6:])
    after_sale = page.locator(f'[data-after-sale-id="{after_sale_id}"]')
    expect(after_sale).to_be_visible(timeout=SLOW)
    expect(after_sale.locator("[data-return-address] option:checked")).to_contain_text(name)
    expect(after_sale.locator("[data-address-source]")).to_have_text("按 SKU 绑定")
    page.once("dialog", lambda dialog: dialog.accept())
    after_sale.locator('[data-act="approve_return"]').click()

    calls = wait_for(
        lambda: [c for c in accept_calls(live_server) if c["body"].get("after_sale_order_id") == after_sale_id]
    )
    assert len(calls) == 1, calls
    assert calls[0]["body"]["address_id"] == new_address_id and calls[0]["errcode"] == 0
    expect(page.locator(f'[data-after-sale-id="{after_sale_id}"] [data-after-sale-status]')).to_have_text(
        "待买家退货", timeout=SLOW
    )
