"""Buyer-controlled text in a real browser: markup in a buyer's id and message is shown as text in
the inbox, the chat and the "assigned to you" notification, and never runs (security review)."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from tests.e2e.test_console import buyer_says
from tests.e2e.test_sign_in import sign_in


def test_markup_from_buyers_is_shown_as_text_and_never_runs(live_server, page):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, live_server.url, "agent")
    expect(page.locator("[data-live-indicator].is-live")).to_be_visible(timeout=10_000)
    tag = uuid.uuid4().hex[:6]
    # OpenIDs are the platform's, but the desk must not trust them either: their first ten characters
    # name a buyer without a nickname (in the notification and the inbox row).
    openid = f'<b>xss</b>{tag}<img src=x onerror="window.__xss=1">'
    text = f'<script>window.__xss=2</script><img src=x onerror="alert({tag})"> {tag}'
    page.locator('[data-inbox-tabs] [data-view="all"]').click()
    buyer_says(live_server, openid, text)
    row = page.locator(".conversation-item", has_text="<b>xss</b>")
    expect(row.first).to_be_visible(timeout=15_000)
    row.first.click()
    bubble = page.locator(".message-inbound .bubble", has_text=tag)
    expect(bubble).to_be_visible()
    expect(bubble).to_contain_text("<script>window.__xss=2</script>")
    # The "assigned to you" notification: the console's own handler, given an assignment whose
    # buyer nickname is markup (demo buyers fill the agent's capacity here, so none is assigned live).
    page.evaluate(
        """(nickname) => {
            const socket = window.channeldesk.socket;
            const me = window.channeldesk.hello.user.id;
            const summary = {id: 987654, shop_id: 1, status: "open", customer: {nickname: nickname, openid: "o_x"},
                             assignee: {id: me, name: "me"}, last_seq: 1, unread_count: 1};
            socket.listeners("conversation.assigned").forEach((handler) => handler({conversation: summary}));
        }""",
        f'<img src=x onerror="window.__xss=3">{tag}',
    )
    toast = page.locator(".flash-assigned", has_text=tag)
    expect(toast).to_be_visible()
    expect(toast).to_contain_text('<img src=x onerror="window.__xss=3">')
    row = page.locator(".conversation-item", has_text="<b>xss</b>")
    expect(row.first).to_be_visible()
    hostile = ".conversation-item b, .bubble b, .bubble img[src='x'], .bubble script, .flashes img"
    assert page.locator(hostile).count() == 0
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
