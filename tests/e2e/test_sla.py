"""The 3-minute reply clock in real browsers: a buyer writes, the agent's row counts down and warns
(jumps above the rows not yet warned, highlights, tries its sound), the supervisor's board shows the
buyer waiting; a reply stops the clock on both screens; an unanswered buyer shows up as a breach.

A small threshold (12 s, warning at 5 s) is set through the supervisor's settings form so the test
is quick; it is put back to the defaults at the end (the live server is shared by the e2e session).
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.test_console import buyer_says, new_buyer, open_buyer, reply
from tests.e2e.test_sign_in import sign_in

THRESHOLD, WARNING = 12, 5


def _save_policy(page, threshold: int, warning: int, window: tuple[str, str] = ("08:00", "24:00")) -> None:
    page.fill("#threshold_seconds", str(threshold))
    page.fill("#warning_seconds", str(warning))
    page.fill("#window_start", window[0])
    page.fill("#window_end", window[1])
    page.click("main form button[type=submit]")
    expect(page.locator(".flash-success")).to_be_visible()


def test_countdown_warns_a_reply_stops_it_and_the_board_follows(live_server, browser):
    boss_context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="zh-CN")
    agent_context = browser.new_context(viewport={"width": 1400, "height": 860}, locale="zh-CN")
    errors: list[str] = []
    boss, agent = boss_context.new_page(), agent_context.new_page()
    for p in (boss, agent):
        p.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        sign_in(boss, live_server.url, "supervisor")
        boss.goto(f"{live_server.url}/sla/")
        settings_url = boss.locator("a", has_text="服务水平设置").first.get_attribute("href")
        boss.goto(live_server.url + settings_url)
        # The whole day counts: the suite may run at any hour (the default window starts at 08:00
        # Shanghai, i.e. 00:00 UTC, so between 16:00 and 24:00 UTC no turn would count).
        _save_policy(boss, THRESHOLD, WARNING, ("00:00", "24:00"))
        boss.goto(f"{live_server.url}/sla/")
        expect(boss.locator("#sla-board[data-version]")).to_be_visible()

        sign_in(agent, live_server.url, "agent")
        # The agent's own rate today is in the console header.
        expect(agent.locator("[data-sla-mine]")).to_contain_text("我今日的3分钟回复率")
        openid = new_buyer()
        open_buyer(agent, live_server, openid, "这件有现货吗？")
        row = agent.locator(".conversation-item", has_text="这件有现货吗？")
        countdown = row.locator(".sla-countdown")
        expect(countdown).to_have_text(re.compile(r"剩余 0:\d\d"))

        # The board shows the buyer waiting, with a clock, without a reload.
        tail = openid[-6:]
        waiting_row = boss.locator("[data-waiting] tbody tr", has_text=tail)
        expect(waiting_row).to_be_visible(timeout=5_000)
        expect(waiting_row.locator(".sla-countdown")).to_have_text(re.compile(r"剩余 0:\d\d"))

        # At the warning threshold: highlighted, above every row not yet warned, the sound tried.
        expect(row).to_have_class(re.compile(r"is-sla-warning"), timeout=(WARNING + 3) * 1000)
        expect(countdown).to_have_class(re.compile(r"is-warning"))
        assert agent.locator("body").get_attribute("data-sla-sound") in ("playing", "played", "blocked")
        classes = agent.eval_on_selector_all(
            "[data-inbox-list] .conversation-item", "items => items.map(a => a.className)"
        )
        mine = next(i for i, c in enumerate(classes) if "is-selected" in c)
        assert all("is-sla-warning" in c for c in classes[:mine]), classes[: mine + 1]

        # The agent replies before the deadline: the countdown goes, the board drops the buyer.
        reply(agent, "有的，今天下单明天发货")
        expect(countdown).to_have_count(0, timeout=5_000)
        expect(waiting_row).to_have_count(0, timeout=3_000)

        # Another buyer nobody answers: at the deadline the board lists the breach.
        unanswered = new_buyer()
        buyer_says(live_server, unanswered, "人呢？")
        breach_row = boss.locator("[data-breaches] tbody tr", has_text=unanswered[-6:])
        expect(boss.locator("[data-waiting] tbody tr", has_text=unanswered[-6:])).to_be_visible(timeout=5_000)
        expect(breach_row).to_be_visible(timeout=(THRESHOLD + 5) * 1000)
        expect(
            boss.locator("[data-waiting] tbody tr", has_text=unanswered[-6:]).locator(".sla-countdown")
        ).to_have_class(re.compile(r"is-breached"))
        rate = boss.locator("[data-shop-card] [data-field=rate]").first.inner_text()
        assert re.match(r"\d+\.\d%", rate), rate
        # Back to the defaults: the live server is shared by the e2e session.
        boss.goto(live_server.url + settings_url)
        _save_policy(boss, 180, 100)
    finally:
        boss_context.close()
        agent_context.close()
    assert not errors, errors
