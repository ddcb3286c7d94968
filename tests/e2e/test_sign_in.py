"""A fresh installation, as `make run` leaves it: Chinese sign-in, demo users, English on request."""

from __future__ import annotations

from tests.e2e.conftest import DEMO_PASSWORD


def sign_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login")
    page.fill("#username", username)
    page.fill("#password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def test_sign_in_page_is_chinese_and_every_demo_user_gets_in(live_server, page):
    page.goto(f"{live_server.url}/login")
    assert page.title() == "登录 · ChannelDesk 客服台"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.locator("label[for=username]").inner_text() == "用户名"
    for username, nav in (("agent", "工作台"), ("supervisor", "服务指标"), ("admin", "设置")):
        sign_in(page, live_server.url, username)
        assert nav in page.locator("nav.mainnav").inner_text()
        page.click("text=退出")
        page.wait_for_url(f"{live_server.url}/login")


def test_wrong_password_is_said_in_chinese(live_server, page):
    page.goto(f"{live_server.url}/login")
    page.fill("#username", "agent")
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")
    assert "用户名或密码错误" in page.locator(".flashes").inner_text()


def test_english_on_request_before_and_after_sign_in(live_server, page):
    page.goto(f"{live_server.url}/login")
    page.click("text=English")
    assert page.locator("button[type=submit]").inner_text() == "Sign in"
    page.click("text=简体中文")
    assert page.locator("button[type=submit]").inner_text() == "登录"

    sign_in(page, live_server.url, "agent")
    page.select_option("#topbar-language", "en")  # the switcher submits itself
    page.wait_for_load_state("load")
    page.wait_for_function("document.querySelector('nav.mainnav').innerText.includes('Console')")
    assert "After-sales" in page.locator("nav.mainnav").inner_text()
    page.reload()
    assert "Console" in page.locator("nav.mainnav").inner_text(), "the choice is saved for the user"
    page.select_option("#topbar-language", "zh_CN")
    page.wait_for_function("document.querySelector('nav.mainnav').innerText.includes('工作台')")


def test_console_opens_an_authenticated_realtime_connection(live_server, page):
    sign_in(page, live_server.url, "agent")
    page.wait_for_selector("[data-live-indicator].is-live", timeout=10_000)


def test_signing_out_in_one_tab_ends_the_console_in_the_other(live_server, page):
    sign_in(page, live_server.url, "agent")
    page.wait_for_selector("[data-live-indicator].is-live", timeout=10_000)
    other = page.context.new_page()  # a second tab of the same browser (same session)
    other.goto(f"{live_server.url}/")
    other.wait_for_selector("[data-live-indicator].is-live", timeout=10_000)
    page.click("text=退出")
    page.wait_for_url(f"{live_server.url}/login")
    other.wait_for_url(f"{live_server.url}/login", timeout=10_000)  # told by the server, not by a reload
    assert other.locator("#username").is_visible()
