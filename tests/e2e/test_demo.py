"""`make run` leaves a living desk: simulated buyers reach the demo shop through real pushes."""

from __future__ import annotations

import time

from tests.e2e.test_sign_in import sign_in


def test_simulated_buyers_show_up_in_the_console_with_their_orders(live_server, page):
    sign_in(page, live_server.url, "admin")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page.goto(f"{live_server.url}/?view=all")
        # The inbox is fetched by the page's script: wait for it to settle before counting.
        page.wait_for_selector("[data-inbox-empty], .conversation-item", state="attached", timeout=5000)
        if page.locator(".conversation-item").count():
            break
        time.sleep(1)
    items = page.locator(".conversation-item")
    assert items.count() >= 1, "no buyer reached the demo shop"
    assert "演示小店" in items.first.inner_text()
    items.first.click()
    page.wait_for_selector(".message-inbound .bubble")
    # The buyer's order follows its push: the sidebar shows it with its price in yuan.
    deadline = time.monotonic() + 20
    while not page.locator(".order-card").count() and time.monotonic() < deadline:
        time.sleep(1)
        page.reload()
    assert page.locator(".order-card").count() >= 1
    assert "¥" in page.locator(".order-card").first.inner_text()


def test_the_demo_shop_reports_a_healthy_connection(live_server, page):
    sign_in(page, live_server.url, "admin")
    page.goto(f"{live_server.url}/settings/shops")
    page.click("text=演示小店")
    page.click("text=测试连接")
    assert "已连接" in page.locator(".flashes").inner_text()
    # Order and after-sale changes, new orders and after-sales, return addresses.
    assert page.locator("table.table-compact tbody tr").count() == 5
