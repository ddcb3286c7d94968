"""Quick replies and auto-reply settings: who may keep which, validation, and what the console gets."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import AutoReplyConfig, QuickReply


def test_agents_keep_personal_quick_replies_and_supervisors_shared_ones(app, world, login):
    agent = login("agent_a")
    data = {"shop_id": world.a.shop_id, "shared": "1", "shortcut": "wait", "title": "稍等", "content": "亲，请稍等"}
    assert agent.post("/settings/quick-replies/new", data=data).status_code == 400, "agents keep no shared ones"
    assert agent.post("/settings/quick-replies/new", data={**data, "shared": "0"}).status_code == 302
    with app.app_context():
        row = db.session.scalar(sa.select(QuickReply).where(QuickReply.shortcut == "wait"))
        assert row.owner_id == world.users["agent_a"]
    replies = agent.get(f"/api/quick-replies?shop={world.a.shop_id}").get_json()["quick_replies"]
    assert {(r["shortcut"], r["personal"]) for r in replies} == {("wait", True), ("ship", False)}
    # Nobody else sees or edits a personal reply; the agent cannot edit the shared one.
    assert "wait" not in str(login("supervisor_a").get(f"/api/quick-replies?shop={world.a.shop_id}").get_json())
    assert login("supervisor_a").get(f"/settings/quick-replies/{row.id}").status_code == 404
    assert agent.get(f"/settings/quick-replies/{world.a.quick_reply_id}").status_code == 403
    supervisor = login("supervisor_a")
    response = supervisor.post(
        f"/settings/quick-replies/{world.a.quick_reply_id}",
        data={"shop_id": world.a.shop_id, "shared": "1", "shortcut": "ship", "title": "发货", "content": "今天发"},
    )
    assert response.status_code == 302
    # Another shop's reply is not found; a shop the user does not serve cannot be chosen.
    assert supervisor.get(f"/settings/quick-replies/{world.b.quick_reply_id}").status_code == 404
    response = agent.post(
        "/settings/quick-replies/new",
        data={"shop_id": world.b.shop_id, "shared": "0", "shortcut": "x", "title": "x", "content": "x"},
    )
    assert response.status_code == 400
    assert agent.post(f"/settings/quick-replies/{row.id}/delete").status_code == 302
    with app.app_context():
        assert db.session.get(QuickReply, row.id) is None


def test_quick_reply_validation(app, world, login):
    agent = login("agent_a")
    for data in (
        {"shortcut": "has space", "title": "t", "content": "c"},
        {"shortcut": "ok", "title": "", "content": "c"},
        {"shortcut": "ok", "title": "t", "content": "c" * 1001},
    ):
        response = agent.post("/settings/quick-replies/new", data={"shop_id": world.a.shop_id, "shared": "0", **data})
        assert response.status_code == 400, data
    agent.post(
        "/settings/quick-replies/new",
        data={"shop_id": world.a.shop_id, "shared": "0", "shortcut": "dup", "title": "t", "content": "c"},
    )
    response = agent.post(
        "/settings/quick-replies/new",
        data={"shop_id": world.a.shop_id, "shared": "0", "shortcut": "dup", "title": "t2", "content": "c2"},
    )
    assert response.status_code == 400 and "已被使用" in response.get_data(as_text=True)


def test_supervisors_set_auto_replies_with_working_hours(app, world, login):
    supervisor = login("supervisor_a")
    path = f"/settings/shops/{world.a.shop_id}/auto-replies"
    assert "09:00" in supervisor.get(path).get_data(as_text=True)
    refused = supervisor.post(
        path, data={"welcome_enabled": "y", "welcome_text": " ", "work_start": "9am", "work_end": "22:00"}
    )
    assert refused.status_code == 400
    saved = supervisor.post(
        path,
        data={
            "welcome_enabled": "y",
            "welcome_text": "欢迎光临",
            "off_hours_enabled": "y",
            "off_hours_text": "下班了",
            "work_start": "20:00",
            "work_end": "02:00",
            "work_days": ["1", "2", "3", "4", "5"],
        },
    )
    assert saved.status_code == 302
    with app.app_context():
        config = db.session.scalar(sa.select(AutoReplyConfig).where(AutoReplyConfig.shop_id == world.a.shop_id))
        assert config.welcome_enabled and not config.busy_enabled and config.work_days == "12345"
        assert (config.work_start, config.work_end) == ("20:00", "02:00")
    assert login("agent_a").get(path).status_code == 403
    assert login("supervisor_b").get(path).status_code == 404


def test_working_hours_span_midnight_and_days(app):
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from app.desk.intake import within_working_hours

    config = AutoReplyConfig(work_start="20:00", work_end="02:00", work_days="5")  # Friday nights
    tz = ZoneInfo("Asia/Shanghai")
    friday_late = datetime(2026, 11, 20, 23, 0, tzinfo=tz).astimezone(UTC)
    saturday_early = datetime(2026, 11, 21, 1, 30, tzinfo=tz).astimezone(UTC)  # still Friday's shift
    saturday_late = datetime(2026, 11, 21, 23, 0, tzinfo=tz).astimezone(UTC)
    friday_noon = datetime(2026, 11, 20, 12, 0, tzinfo=tz).astimezone(UTC)
    assert within_working_hours(config, friday_late, tz)
    assert within_working_hours(config, saturday_early, tz)
    assert not within_working_hours(config, saturday_late, tz)
    assert not within_working_hours(config, friday_noon, tz)
