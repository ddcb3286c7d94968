"""Replies over real HTTP: buyer pushes from the simulator, replies through the outbox to its sendmsg,
the 5-in-48h budget, failures with retry, notes, images and auto-replies."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import AutoReplyConfig, Conversation, Message, OutboxCall, Shop
from tests.desk.conftest import request_id
from tests.factories import make_shop, make_user
from tests.platform.conftest import wait_until


@pytest.fixture
def live(app, pushing_shop, sock):
    """A shop fed by simulator pushes, its agent signed in with a console socket."""
    shop_id, sim_shop = pushing_shop
    with app.app_context():
        make_user("li", shops=[db.session.get(Shop, shop_id)], display_name="客服小李")
        make_user("stranger", shops=[make_shop("别人的店")])
        db.session.commit()
    agent = sock("li")
    agent.ok("inbox.watch", {"view": "mine"})
    return shop_id, sim_shop, agent


def buyer_says(simulator, sim_shop, openid: str, text: str) -> None:
    simulator.platform.buyer_message(sim_shop, openid, text)


def conversation_of(app, openid: str) -> dict | None:
    with app.app_context():
        row = db.session.execute(
            sa.select(Conversation.id, Conversation.assignee_id)
            .join(Conversation.customer)
            .where(Conversation.customer.property.mapper.class_.openid == openid)
        ).first()
        db.session.remove()
    return {"id": row[0], "assignee_id": row[1]} if row else None


def assigned_conversation(app, simulator, sim_shop, openid: str, text: str) -> int:
    """The buyer writes; returns their conversation once it has been assigned."""
    buyer_says(simulator, sim_shop, openid, text)
    assert wait_until(lambda: (conversation_of(app, openid) or {}).get("assignee_id"))
    return conversation_of(app, openid)["id"]


def message_state(app, message_id: int) -> str:
    with app.app_context():
        state = db.session.get(Message, message_id).delivery_state.value
        db.session.remove()
    return state


def test_buyer_message_reaches_the_agent_and_the_reply_reaches_the_platform(app, simulator, live):
    _shop_id, sim_shop, agent = live
    buyer_says(simulator, sim_shop, "o_buyer_1", "这件衣服有L码吗？")
    assert wait_until(
        lambda: (
            any(e["reason"] == "assigned" for e in agent.received("conversation.updated"))
            or (conversation_of(app, "o_buyer_1") or {}).get("assignee_id")
        )
    )
    conversation = conversation_of(app, "o_buyer_1")
    agent.ok("conversation.open", {"conversation_id": conversation["id"]})
    rid = request_id()
    sent = agent.ok(
        "message.send", {"conversation_id": conversation["id"], "request_id": rid, "text": "有的，L码有货"}
    )["message"]
    assert sent["delivery_state"] == "pending" and sent["request_id"] == rid and sent["sender_kind"] == "agent"
    assert wait_until(lambda: message_state(app, sent["id"]) == "sent")
    delivered = [m for m in sim_shop.sent if m["request_id"] == rid]
    assert len(delivered) == 1 and delivered[0]["text"] == {"content": "有的，L码有货"}
    assert delivered[0]["open_id"] == "o_buyer_1"
    assert wait_until(
        lambda: any(
            u["message"]["id"] == sent["id"] and u["message"]["delivery_state"] == "sent"
            for u in agent.received("message.updated")
        )
    )
    # The same request_id again (a lost acknowledgement): the same message, nothing sent twice.
    again = agent.ok(
        "message.send", {"conversation_id": conversation["id"], "request_id": rid, "text": "有的，L码有货"}
    )
    assert again["message"]["id"] == sent["id"]
    with app.app_context():
        row = db.session.get(Conversation, conversation["id"])
        assert row.waiting_since is None and row.last_human_reply_at is not None and row.replies_since_buyer == 1
        db.session.remove()


def test_the_sixth_reply_is_refused_until_the_buyer_writes_again(app, simulator, live):
    _shop_id, sim_shop, agent = live
    cid = assigned_conversation(app, simulator, sim_shop, "o_buyer_2", "发货了吗")
    for n in range(5):
        agent.ok("message.send", {"conversation_id": cid, "request_id": request_id(), "text": f"第{n + 1}条"})
    refused = agent.call("message.send", {"conversation_id": cid, "request_id": request_id(), "text": "第6条"})
    assert refused["ok"] is False and refused["error"]["code"] == "reply_limit"
    assert "5" in refused["error"]["message"]
    # Notes do not spend the budget.
    agent.ok("note.add", {"conversation_id": cid, "text": "等买家回复"})
    assert wait_until(lambda: len([m for m in sim_shop.sent if m["open_id"] == "o_buyer_2"]) == 5)
    buyer_says(simulator, sim_shop, "o_buyer_2", "好的谢谢")
    assert wait_until(
        lambda: agent.call("message.send", {"conversation_id": cid, "request_id": request_id(), "text": "不客气"})["ok"]
    )
    assert not any("等买家回复" in str(m) for m in sim_shop.sent), "a note never reaches the buyer"


def test_a_closed_48_hour_window_refuses_with_a_reason(app, simulator, live):
    _shop_id, sim_shop, agent = live
    cid = assigned_conversation(app, simulator, sim_shop, "o_buyer_3", "在吗")
    with app.app_context():
        from datetime import timedelta

        db.session.get(Conversation, cid).last_buyer_message_at = utcnow() - timedelta(hours=49)
        db.session.commit()
    answer = agent.call("message.send", {"conversation_id": cid, "request_id": request_id(), "text": "抱歉久等"})
    assert answer["ok"] is False and answer["error"]["code"] == "reply_window"


def test_a_refused_send_fails_visibly_and_a_retry_delivers_it_once(app, simulator, live):
    _shop_id, sim_shop, agent = live
    cid = assigned_conversation(app, simulator, sim_shop, "o_buyer_4", "能改地址吗")
    agent.ok("conversation.open", {"conversation_id": cid})
    sim_shop.faults.update(api_errors={"/channels/ec/commkf/sendmsg": 47001})
    rid = request_id()
    sent = agent.ok("message.send", {"conversation_id": cid, "request_id": rid, "text": "可以的"})["message"]
    # The state is committed before the console is told, so wait for the event itself, not the row.
    updates: list[dict] = []

    def told_failed() -> bool:
        updates.extend(u["message"] for u in agent.received("message.updated") if u["message"]["id"] == sent["id"])
        return any(u["delivery_state"] == "failed" for u in updates)

    assert wait_until(told_failed)
    assert message_state(app, sent["id"]) == "failed"
    failed = [u for u in updates if u["delivery_state"] == "failed"]
    assert failed[-1]["delivery_error"] and "47001" in failed[-1]["delivery_error"]
    with app.app_context():
        assert db.session.get(Conversation, cid).replies_since_buyer == 0, "an unsent message gives its slot back"
        db.session.remove()
    # Retrying a message that has not failed is refused; the failed one goes out with the same request_id.
    sim_shop.faults.update(api_errors={})
    retried = agent.ok("message.retry", {"message_id": sent["id"]})["message"]
    assert retried["delivery_state"] == "pending" and retried["request_id"] == rid
    assert wait_until(lambda: message_state(app, sent["id"]) == "sent")
    assert len([m for m in sim_shop.sent if m["request_id"] == rid]) == 1
    again = agent.call("message.retry", {"message_id": sent["id"]})
    assert again["ok"] is False and again["error"]["code"] == "conflict"


def test_platform_outages_are_retried_then_fail_with_a_reason(app, simulator, live):
    _shop_id, sim_shop, agent = live
    cid = assigned_conversation(app, simulator, sim_shop, "o_buyer_5", "你好")
    sim_shop.faults.update(busy_rate=1.0)
    sent = agent.ok("message.send", {"conversation_id": cid, "request_id": request_id(), "text": "您好"})["message"]
    assert wait_until(lambda: message_state(app, sent["id"]) == "failed", timeout=30)
    with app.app_context():
        call = db.session.scalar(sa.select(OutboxCall).where(OutboxCall.idempotency_key == sent["request_id"]))
        assert call.attempts == app.config["OUTBOX_MAX_ATTEMPTS"] and call.last_errcode == -1
        message = db.session.get(Message, sent["id"])
        from app.desk import views

        assert "did not answer" in views.delivery_error_text(message) or "无响应" in views.delivery_error_text(message)
        db.session.remove()
    sim_shop.faults.update(busy_rate=0.0)


def test_auto_replies_welcome_and_busy_never_count_as_human(app, simulator, live):
    shop_id, sim_shop, agent = live
    with app.app_context():
        db.session.add(
            AutoReplyConfig(
                shop_id=shop_id,
                welcome_enabled=True,
                welcome_text="欢迎光临，客服马上来",
                busy_enabled=True,
                busy_text="客服都在忙，请稍候",
                work_start="00:00",
                work_end="00:00",
            )
        )
        db.session.commit()
    agent.ok("presence.set", {"presence": "away"})  # nobody available: the conversation queues
    buyer_says(simulator, sim_shop, "o_buyer_6", "有人吗")
    assert wait_until(lambda: len([m for m in sim_shop.sent if m["open_id"] == "o_buyer_6"]) == 2)
    texts = [m["text"]["content"] for m in sim_shop.sent if m["open_id"] == "o_buyer_6"]
    assert texts == ["欢迎光临，客服马上来", "客服都在忙，请稍候"]
    buyer_says(simulator, sim_shop, "o_buyer_6", "还在吗")  # still queued: no second "busy"
    cid = conversation_of(app, "o_buyer_6")["id"]
    assert wait_until(lambda: _last_seq(app, cid) >= 4)
    with app.app_context():
        row = db.session.get(Conversation, cid)
        assert row.last_human_reply_at is None and row.waiting_since is not None, "auto is not a human reply"
        kinds = db.session.scalars(sa.select(Message.auto_kind).where(Message.conversation_id == cid)).all()
        assert sorted(k for k in kinds if k) == ["busy", "welcome"]
        db.session.remove()
    # Coming back online takes the queued conversation.
    agent.ok("presence.set", {"presence": "online"})
    assert conversation_of(app, "o_buyer_6")["assignee_id"] is not None


def _seq_of(app, openid: str) -> int:
    found = conversation_of(app, openid)
    return _last_seq(app, found["id"]) if found else 0


def _last_seq(app, cid: int) -> int:
    with app.app_context():
        value = db.session.get(Conversation, cid).last_seq
        db.session.remove()
    return value


def test_off_hours_reply_once_and_within_budget(app, simulator, live):
    shop_id, sim_shop, _agent = live
    with app.app_context():
        # Working hours that never include now: a one-minute window eight hours away.
        from datetime import timedelta

        local = (utcnow() + timedelta(hours=8)).astimezone(db.session.get(Shop, shop_id).tz)
        start = local.strftime("%H:%M")
        end = (local + timedelta(minutes=1)).strftime("%H:%M")
        db.session.add(
            AutoReplyConfig(
                shop_id=shop_id,
                welcome_enabled=True,
                welcome_text="欢迎",
                off_hours_enabled=True,
                off_hours_text="现在是非工作时间，我们上班后第一时间回复您",
                work_start=start,
                work_end=end,
            )
        )
        db.session.commit()
    for text in ("在吗", "人呢", "有人吗", "？"):  # a burst: handled by several workers at once
        buyer_says(simulator, sim_shop, "o_buyer_7", text)
    assert wait_until(lambda: _seq_of(app, "o_buyer_7") >= 5)
    assert wait_until(lambda: any(m["open_id"] == "o_buyer_7" for m in sim_shop.sent))
    import time

    time.sleep(0.5)  # room for a wrong second auto-reply to show up
    texts = [m["text"]["content"] for m in sim_shop.sent if m["open_id"] == "o_buyer_7"]
    assert texts == ["现在是非工作时间，我们上班后第一时间回复您"], "off-hours replaces the welcome, once"


def test_an_image_is_uploaded_to_the_platform_and_sent_by_its_cos_url(
    app, simulator, live, login, tmp_path, monkeypatch
):
    monkeypatch.setitem(app.config, "MEDIA_DIR", str(tmp_path))
    _shop_id, sim_shop, _agent = live
    cid = assigned_conversation(app, simulator, sim_shop, "o_buyer_8", "发个图看看")
    client = login("li")
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 200
    rid = request_id()
    response = client.post(
        f"/api/conversations/{cid}/images",
        data={"file": (io.BytesIO(png), "photo.png", "image/png"), "request_id": rid},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    message = response.get_json()["message"]
    assert message["msg_type"] == "image" and message["image_url"] == f"/api/messages/{message['id']}/image"
    with client.get(message["image_url"]) as image:
        assert image.status_code == 200 and image.data == png and image.mimetype == "image/png"
    other = login("stranger")
    with other.get(message["image_url"]) as hidden:
        assert hidden.status_code == 404, "another shop's agent cannot fetch it"
    assert (
        other.post(
            f"/api/conversations/{cid}/images",
            data={"file": (io.BytesIO(png), "photo.png", "image/png")},
            content_type="multipart/form-data",
        ).status_code
        == 404
    )
    assert wait_until(lambda: message_state(app, message["id"]) == "sent")
    delivered = [m for m in sim_shop.sent if m["request_id"] == rid]
    assert delivered and delivered[0]["image"]["cos_url"] in sim_shop.uploads
    bad = client.post(
        f"/api/conversations/{cid}/images",
        data={"file": (io.BytesIO(b"MZ..."), "x.exe", "application/octet-stream")},
        content_type="multipart/form-data",
    )
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid"
