"""Rules in a real browser: a supervisor builds a rule from rows (fields show their own inputs, rows
are added with a click), a wrong amount is refused on its row and fixed, the rule is saved as version
1; the seeded default rule (on, in dry run) logs "would have approved" for a new refund and calls
nothing on the platform."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from tests.e2e.test_console import _sim_post
from tests.e2e.test_sidebar import SLOW, accept_calls, wait_for
from tests.e2e.test_sign_in import sign_in


def test_a_supervisor_builds_a_rule_and_the_default_rule_logs_a_dry_run(live_server, page):
    sign_in(page, live_server.url, "supervisor")
    page.locator("nav.mainnav a", has_text="规则").click()
    default_row = page.locator("[data-rule-row]", has_text="4小时内未发货自动退款")
    expect(default_row).to_contain_text("试运行")

    page.locator("[data-new-rule]").first.click()
    name = "小额仅退款" + uuid.uuid4().hex[:4]
    page.fill("#rule-name", name)
    first = page.locator("[data-condition-row]").first
    first.locator("[data-field-select]").select_option("after_sale_type")
    choices = first.locator('[data-for-field="after_sale_type"]')
    expect(choices).to_be_visible()
    expect(first.locator('input[name$="-value"]')).to_be_hidden()
    choices.locator('input[value="REFUND"]').check()

    assert page.locator("[data-condition-row]").count() == 1, "a new rule starts with one blank row"
    page.locator('[data-add-row="condition"]').click()
    second = page.locator("[data-condition-row]").nth(1)  # added by the click
    second.locator("[data-field-select]").select_option("refund_amount_fen")
    expect(second.locator('[data-op-select] option[value="in"]')).to_be_disabled()
    second.locator("[data-op-select]").select_option("lte")
    second.locator('input[name$="-value"]').fill("12,5")
    page.locator('[data-add-row="condition"]').click()
    assert page.locator("[data-condition-row]").count() == 3, "another row was added"
    page.locator("[data-condition-row]").nth(2).locator("[data-remove-row]").click()
    assert page.locator("[data-condition-row]").count() == 2, "and removed"
    page.locator("[data-action-row]").first.locator("[data-kind-select]").select_option("approve_refund")
    page.locator("[data-save-rule]").click()
    expect(page.locator(".rule-row.has-error")).to_contain_text("请输入以元为单位的金额")

    page.locator('[data-condition-row] input[name="c-1-value"]').fill("300")
    page.locator("[data-save-rule]").click()
    expect(page.locator("h1")).to_contain_text(name)
    expect(page.locator("h1")).to_contain_text("v1")
    expect(page.locator("main")).to_contain_text("¥300.00")
    expect(page.locator("[data-rule-state]")).to_contain_text("关闭")

    # The seeded default rule is on in dry run: a fresh refund is logged, nothing is called.
    openid = "o_e2e_" + uuid.uuid4().hex[:20]
    order_id = _sim_post(live_server, "order", {"openid": openid})["order_id"]
    after_sale_id = _sim_post(live_server, "after_sale", {"order_id": order_id, "kind": "REFUND"})[
        "after_sale_order_id"
    ]

    def logged():
        page.goto(f"{live_server.url}/rules/decisions?outcome=would_approve")
        return page.locator("[data-decision-row]", has_text=after_sale_id).count() > 0

    assert wait_for(logged, timeout=SLOW / 1000)
    page.locator("[data-decision-row]", has_text=after_sale_id).locator("a").first.click()
    expect(page.locator("[data-inputs]")).to_contain_text(after_sale_id)
    expect(page.locator("h1")).to_contain_text("将会同意")
    assert not [c for c in accept_calls(live_server) if c["body"].get("after_sale_order_id") == after_sale_id]
