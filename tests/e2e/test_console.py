"""The agent console in a real browser: live inbox, replies through the simulator, the platform's
reply budget, failures and retries, quick replies, internal notes, re-sync after a dropped connection.

Each test talks to its own simulated buyer (a fresh OpenID) and finds that buyer's conversation by
searching the "all" view: demo buyers keep arriving every second and fill the agent's "mine" view.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import requests
from playwright.sync_api import expect

from app.cli import DEMO_SHOP
from tests.e2e.test_sign_in import sign_in

APPID = DEMO_SHOP["appid"]
SENDMSG = "/channels/ec/commkf/sendmsg"
SLOW = 20_000  # ms: a reply goes through the outbox worker and the simulator


def _sim_post(server, path: str, payload: dict) -> dict:
    response = requests.post(f"{server.url}/sim/_sim/{path}", json={"appid": APPID, **payload}, timeout=10)
    response.raise_for_status()
    return response.json()


def buyer_says(server, openid: str, text: str) -> None:
    _sim_post(server, "buyer_message", {"openid": openid, "text": text})


def sent_to(server, openid: str) -> list[dict]:
    response = requests.get(f"{server.url}/sim/_sim/state", params={"appid": APPID}, timeout=10)
    response.raise_for_status()
    return [m for m in response.json()["sent"] if m.get("open_id") == openid]


def sent_texts(server, openid: str) -> list[str]:
    return [(m.get("text") or {}).get("content") for m in sent_to(server, openid) if m.get("msg_type") == "text"]


def set_send_errors(server, errors: dict) -> None:
    _sim_post(server, "faults", {"api_errors": errors})


def new_buyer() -> str:
    return "o_e2e_" + uuid.uuid4().hex[:20]


def ui_strings(page) -> dict:
    return json.loads(page.locator("#console-data").get_attribute("data-strings"))


def open_buyer(page, server, openid: str, text: str) -> None:
    """Search the "all" view for the buyer, let their first message arrive live, open the chat."""
    page.locator('[data-inbox-tabs] [data-view="all"]').click()
    page.fill("[data-inbox-q]", openid)
    expect(page.locator("[data-inbox-empty]")).to_be_visible()  # the search applied: nobody yet
    expect(page).to_have_url(re.compile(r"[?&]q=o_e2e_"))
    buyer_says(server, openid, text)
    row = page.locator(".conversation-item", has_text=text)
    expect(row).to_be_visible(timeout=15_000)  # live, no reload
    row.click()
    expect(page.locator(".message-inbound .bubble", has_text=text)).to_be_visible()
    expect(page.locator("#composer-text")).to_be_focused()


def reply(page, text: str) -> None:
    page.fill("#composer-text", text)
    page.press("#composer-text", "Enter")


def bubble(page, text: str):
    return page.locator("li.message", has=page.locator(".bubble", has_text=text))


def test_a_buyer_message_arrives_live_and_the_reply_reaches_the_platform(live_server, page):
    sign_in(page, live_server.url, "agent")
    expect(page.locator("[data-live-indicator].is-live")).to_be_visible(timeout=10_000)
    openid, hello = new_buyer(), "你好，在吗？" + uuid.uuid4().hex[:6]
    open_buyer(page, live_server, openid, hello)
    assert "/conversations/" in page.url, "the chat opened without a reload, with its own address"

    answer = "在的，亲～ " + uuid.uuid4().hex[:6]
    reply(page, answer)
    mine = bubble(page, answer)
    expect(mine).to_have_count(1)
    expect(mine.locator(".state")).to_have_text("已发送", timeout=SLOW)
    request_id = mine.get_attribute("data-request-id")
    assert request_id and len(request_id) == 32
    expect(page.locator("#composer-text")).to_have_value("")

    sent = [m for m in sent_to(live_server, openid) if (m.get("text") or {}).get("content") == answer]
    assert len(sent) == 1 and sent[0]["request_id"] == request_id

    # Back and forward between the inbox and the chat, without reloads.
    page.go_back()
    expect(page.locator("[data-chat-empty]")).to_be_visible()
    page.go_forward()
    expect(bubble(page, answer)).to_be_visible()


def test_the_platform_reply_limit_blocks_the_composer_until_the_buyer_writes(live_server, page):
    sign_in(page, live_server.url, "agent")
    openid = new_buyer()
    open_buyer(page, live_server, openid, "第一个问题 " + openid[-6:])
    budget = page.locator("[data-budget]")
    expect(budget).to_have_attribute("data-replies-left", "5", timeout=SLOW)
    strings = ui_strings(page)
    for n in range(5):
        text = f"回复 {n + 1} · {openid[-6:]}"
        reply(page, text)
        expect(bubble(page, text)).to_have_count(1)
        expect(budget).to_have_attribute("data-replies-left", str(4 - n))
    textarea = page.locator("#composer-text")
    expect(textarea).to_be_disabled()
    expect(page.locator("[data-send]")).to_be_disabled()
    expect(page.locator("[data-composer-warning]")).to_be_visible()
    expect(page.locator("[data-composer-warning]")).to_have_text(strings["limit_warning"])
    # The server refuses a sixth as well (a stale tab, another client): the same rule, in the ack.
    # (The console sends one conversation's messages one after the other: wait for all five.)
    expect(page.locator("li.message-outbound[data-id]")).to_have_count(5)
    conversation_id = int(page.url.rsplit("/", 1)[1].split("?")[0])
    ack = page.evaluate(
        """(id) => new Promise((resolve) => window.channeldesk.socket.emit("message.send",
             {conversation_id: id, request_id: "sixth_" + Date.now() + "_0123456789", msg_type: "text", text: "6"},
             resolve))""",
        conversation_id,
    )
    assert ack["ok"] is False and ack["error"]["code"] == "reply_limit"
    # Notes are not replies: still possible.
    page.click('[data-mode="note"]')
    expect(textarea).to_be_enabled()
    page.click('[data-mode="reply"]')
    expect(textarea).to_be_disabled()
    # All five reached the buyer.
    deadline = time.monotonic() + 20
    while len(sent_to(live_server, openid)) < 5 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(sent_to(live_server, openid)) == 5

    buyer_says(live_server, openid, "第二个问题 " + openid[-6:])
    expect(budget).to_have_attribute("data-replies-left", "5", timeout=SLOW)
    expect(textarea).to_be_enabled()
    expect(page.locator("[data-composer-warning]")).to_be_hidden()
    reply(page, "又可以回复了 " + openid[-6:])
    expect(budget).to_have_attribute("data-replies-left", "4")


def test_a_failed_send_shows_its_reason_and_retries_once(live_server, page):
    sign_in(page, live_server.url, "agent")
    openid = new_buyer()
    open_buyer(page, live_server, openid, "发货了吗 " + openid[-6:])
    text = "今天发 " + openid[-6:]
    set_send_errors(live_server, {SENDMSG: 47001})
    try:
        reply(page, text)
        message = bubble(page, text)
        expect(message).to_have_attribute("data-state", "failed", timeout=SLOW)
        reason = message.locator(".state-reason")
        expect(reason).to_be_visible()
        assert len(reason.inner_text()) > len(ui_strings(page)["failed"].replace("%(reason)s", "")), "a reason shows"
        retry = message.locator("button.btn-retry")
        expect(retry).to_be_visible()
        assert sent_to(live_server, openid) == []
    finally:
        set_send_errors(live_server, {})
    retry.click()
    expect(message).to_have_attribute("data-state", "sent", timeout=SLOW)
    expect(message.locator(".state")).to_have_text(ui_strings(page)["sent"])
    expect(message.locator("button.btn-retry")).to_have_count(0)
    time.sleep(1)  # anything sent twice would be in by now
    delivered = sent_to(live_server, openid)
    assert [m["text"]["content"] for m in delivered] == [text]
    assert delivered[0]["request_id"] == message.get_attribute("data-request-id")


def test_quick_replies_insert_with_a_slash_and_notes_stay_internal(live_server, page):
    sign_in(page, live_server.url, "agent")
    openid = new_buyer()
    open_buyer(page, live_server, openid, "有优惠吗 " + openid[-6:])
    shop_id = json.loads(page.locator("#console-data").get_attribute("data-shops"))[0]["id"]
    quick = page.request.get(f"{live_server.url}/api/quick-replies?shop={shop_id}").json()["quick_replies"]
    hi = next((r for r in quick if r["shortcut"] == "hi"), None)
    assert hi is not None, "`flask demo seed` adds a shop-wide quick reply with the shortcut hi"

    textarea = page.locator("#composer-text")
    textarea.press_sequentially("/h")
    popup = page.locator("[data-quick-replies]")
    expect(popup).to_be_visible()
    option = popup.locator('[role="option"]', has_text="/hi")
    expect(option).to_be_visible()
    # Walk to it with the keyboard and take it with Enter (which must not send).
    for _ in range(popup.locator('[role="option"]').count()):
        if option.get_attribute("aria-selected") == "true":
            break
        textarea.press("ArrowDown")
    textarea.press("Enter")
    expect(popup).to_be_hidden()
    expect(textarea).to_have_value(hi["content"])
    textarea.press("Escape")
    # Escape closes a popup that is open, and nothing else.
    textarea.press("End")
    textarea.press_sequentially(" /zzzz-no-such")
    expect(popup).to_be_visible()
    textarea.press("Escape")
    expect(popup).to_be_hidden()
    textarea.fill("")

    note = "内部备注：买家是老客户 " + openid[-6:]
    page.click('[data-mode="note"]')
    textarea.fill(note)
    textarea.press("Enter")
    noted = bubble(page, note)
    expect(noted).to_have_count(1)
    expect(noted).to_have_class("message message-internal message-agent message-note")
    expect(noted.locator(".message-label")).to_have_text(ui_strings(page)["internal_note"])
    expect(page.locator("[data-budget]")).to_have_attribute("data-replies-left", "5")

    # A reply after the note reaches the buyer; the note never does.
    page.click('[data-mode="reply"]')
    answer = "有的，满减进行中 " + openid[-6:]
    reply(page, answer)
    expect(bubble(page, answer).locator(".state")).to_have_text(ui_strings(page)["sent"], timeout=SLOW)
    texts = sent_texts(live_server, openid)
    assert answer in texts and note not in texts


def test_messages_missed_while_disconnected_appear_after_reconnecting(live_server, page):
    sign_in(page, live_server.url, "agent")
    openid = new_buyer()
    open_buyer(page, live_server, openid, "在吗 " + openid[-6:])
    expect(page.locator("[data-live-indicator].is-live")).to_be_visible()
    banner = page.locator("[data-reconnect-banner]")
    expect(banner).to_be_hidden()

    page.evaluate("() => { const s = window.channeldesk.socket; s.io.reconnection(false); s.io.engine.close(); }")
    expect(banner).to_be_visible()
    expect(banner).to_have_text(ui_strings(page)["reconnecting"])
    expect(page.locator("[data-live-indicator].is-live")).to_have_count(0)

    missed = "断线时发的消息 " + openid[-6:]
    buyer_says(live_server, openid, missed)
    time.sleep(2)  # stored by the desk while this tab hears nothing
    assert bubble(page, missed).count() == 0

    page.evaluate("() => { const s = window.channeldesk.socket; s.io.reconnection(true); s.connect(); }")
    expect(page.locator("[data-live-indicator].is-live")).to_be_visible(timeout=10_000)
    expect(banner).to_be_hidden()
    expect(bubble(page, missed)).to_have_count(1, timeout=10_000)
    expect(page.locator(".conversation-item", has_text=missed)).to_be_visible()  # the inbox re-synced too

    # And live events flow again after the re-sync.
    after = "重连后的消息 " + openid[-6:]
    buyer_says(live_server, openid, after)
    expect(bubble(page, after)).to_have_count(1, timeout=10_000)


def test_older_messages_load_when_scrolling_up_keeping_the_place(live_server, page):
    sign_in(page, live_server.url, "agent")
    openid = new_buyer()
    tag = openid[-6:]
    open_buyer(page, live_server, openid, f"消息 0 · {tag}")
    for n in range(1, 54):
        buyer_says(live_server, openid, f"消息 {n} · {tag}")
    inbound = page.locator("li.message-inbound")
    expect(inbound).to_have_count(54, timeout=SLOW)  # a burst arrives live, every message of it
    page.reload()  # a fresh page holds the newest 50
    expect(inbound).to_have_count(50)
    oldest_loaded = inbound.first.locator(".bubble").inner_text()
    page.locator("[data-messages]").evaluate("el => { el.scrollTop = 0; }")
    expect(inbound).to_have_count(54)
    expect(page.locator("[data-messages-top]")).to_have_text(ui_strings(page)["conversation_start"])
    expect(bubble(page, oldest_loaded)).to_be_in_viewport()  # the place was kept
    expect(inbound.first).not_to_be_in_viewport()
    seqs = [int(s) for s in page.locator("li.message[data-seq]").evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "in order, each once"


def test_an_order_card_goes_from_the_sidebar_to_the_buyer(live_server, page):
    """A demo buyer with an order: their sidebar comes without a reload and sends the order card."""
    sign_in(page, live_server.url, "admin")
    page.locator('[data-inbox-tabs] [data-view="all"]').click()
    cards = page.locator("[data-sidebar] .order-card[data-order-id]")
    rows = page.locator(".conversation-item")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        expect(rows.first).to_be_visible(timeout=15_000)
        for i in range(min(rows.count(), 12)):
            rows.nth(i).click()
            expect(page.locator("[data-sidebar][aria-busy]")).to_have_count(0)
            if cards.count() and cards.first.locator("[data-send-order]").is_enabled():
                break
        else:
            time.sleep(1)
            continue
        break
    assert cards.count(), "no demo buyer with an order turned up"
    order_id = cards.first.get_attribute("data-order-id")
    send = cards.first.locator("[data-send-order]")
    expect(send).to_have_text(ui_strings(page)["send_order"])
    send.click()
    shared = page.locator("li.message-outbound", has=page.locator(".share-card", has_text=order_id))
    expect(shared).to_have_count(1)
    expect(shared.locator(".state")).to_have_text(ui_strings(page)["sent"], timeout=SLOW)
    request_id = shared.get_attribute("data-request-id")
    state = requests.get(f"{live_server.url}/sim/_sim/state", params={"appid": APPID}, timeout=10).json()
    cards_sent = [m for m in state["sent"] if m.get("request_id") == request_id]
    assert len(cards_sent) == 1
    assert cards_sent[0]["msg_type"] == "order_share" and cards_sent[0]["order_share"]["order_id"] == order_id
