"""The board, the history, the CSV and the settings: role gating, shop scoping, the numbers they show."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import Role, SlaSettings
from app.sla import clock
from tests.desk.conftest import Sock
from tests.factories import make_shop, make_user
from tests.sla.conftest import at_midday, noon_yesterday, turns

SUPERVISOR_ONLY = ("/sla/", "/sla/history", "/sla/history.csv", "/api/sla/board", "/api/sla/history")


def test_agents_get_403_on_every_supervisor_page_and_on_the_board_socket(app, desk_world, login):
    agent = login("clock_agent")
    for path in SUPERVISOR_ONLY:
        assert agent.get(path).status_code == 403, path
    assert agent.get(f"/sla/settings/{desk_world.shop_id}").status_code == 403
    assert agent.post(f"/sla/settings/{desk_world.shop_id}", data={"threshold_seconds": 1}).status_code == 403
    assert agent.get("/api/sla/me").status_code == 200  # their own rate
    sock = Sock(app, agent)
    answer = sock.call("sla.watch", {})
    assert answer["ok"] is False and answer["error"]["code"] == "forbidden"
    sock.close()
    boss = login("clock_boss")
    for path in SUPERVISOR_ONLY:
        assert boss.get(path).status_code == 200, path
    assert app.test_client().get("/api/sla/board").status_code == 401


def test_the_board_shows_waiting_buyers_breaches_agents_and_todays_rate(app, desk_world, login):
    with app.app_context():
        at_midday(desk_world.shop_id)  # "today" and the window hold at any hour of the run
        now = utcnow()
        waiting = desk_world.buyer("o_board_wait", now - timedelta(seconds=30))
        missed = desk_world.buyer("o_board_miss", now - timedelta(seconds=300))
        clock.fire(turns(missed)[0].id, "breach")
        db.session.remove()
        answered = desk_world.buyer("o_board_ok", now - timedelta(seconds=100))
        desk_world.reply(desk_world.agent_id, answered, now - timedelta(seconds=60))
    data = login("clock_boss").get("/api/sla/board").get_json()
    [shop] = data["shops"]
    assert shop["shop_name"] == "时钟小店" and shop["threshold_seconds"] == 180
    assert (shop["turns"], shop["met"], shop["breached"]) == (2, 1, 1) and shop["rate"] == 0.5
    assert shop["waiting"] == 2 and shop["breaches_last_hour"] == 1
    waiting_ids = [w["conversation_id"] for w in data["waiting"]]
    assert waiting_ids == [waiting, missed]  # running clocks first, then breached buyers still waiting
    assert data["waiting"][0]["outcome"] == "open" and data["waiting"][1]["outcome"] == "breached"
    assert data["waiting"][0]["assignee_name"] == "客服小王"
    assert [b["conversation_id"] for b in data["breaches"]] == [missed]
    names = {a["name"]: a for a in data["agents"]}
    assert names["客服小王"]["presence"] == "online" and names["客服小王"]["open_count"] == 3
    assert names["客服小张"]["presence"] == "offline"
    me = login("clock_agent").get("/api/sla/me").get_json()
    assert (me["turns"], me["met"], me["rate"]) == (2, 1, 0.5)
    assert me["policies"][str(desk_world.shop_id)]["warning_seconds"] == 100


def test_the_board_and_history_are_scoped_to_the_supervisors_shops(app, desk_world, login):
    with app.app_context():
        other = make_shop("别家小店")
        make_user("other_boss", role=Role.SUPERVISOR, shops=[other])
        db.session.commit()
        t0 = noon_yesterday(desk_world.shop_id)
        c = desk_world.buyer("o_scoped", t0)
        desk_world.reply(desk_world.agent_id, c, t0 + timedelta(seconds=10))
        desk_world.buyer("o_scoped_wait", utcnow())
    client = login("other_boss")
    board = client.get("/api/sla/board").get_json()
    assert [s["shop_name"] for s in board["shops"]] == ["别家小店"] and board["waiting"] == []
    history = client.get("/api/sla/history").get_json()
    assert [s["shop_name"] for s in history["shops"]] == ["别家小店"] and history["agents"] == []
    csv_text = client.get("/sla/history.csv").get_data(as_text=True)
    assert "时钟小店" not in csv_text
    assert client.get(f"/sla/history?shop={desk_world.shop_id}").status_code == 404
    assert client.get(f"/sla/settings/{desk_world.shop_id}").status_code == 404
    mine = login("clock_boss").get("/sla/history.csv").get_data(as_text=True)
    assert "时钟小店" in mine and "别家小店" not in mine


def test_history_rates_trend_median_and_csv(app, desk_world, login):
    with app.app_context():
        t0 = noon_yesterday(desk_world.shop_id)
        week_ago = t0 - timedelta(days=7)
        # The previous period (8-14 days ago): 1 of 2 met. This period: 3 of 4 met.
        for i, seconds in enumerate((60, 200)):
            c = desk_world.buyer(f"o_prev_{i}", week_ago - timedelta(days=1, minutes=10 * i))
            desk_world.reply(
                desk_world.agent_id, c, week_ago - timedelta(days=1, minutes=10 * i) + timedelta(seconds=seconds)
            )
        for i, seconds in enumerate((30, 40, 50, 250)):
            c = desk_world.buyer(f"o_now_{i}", t0 + timedelta(minutes=10 * i))
            desk_world.reply(desk_world.agent_id, c, t0 + timedelta(minutes=10 * i, seconds=seconds))
        day = t0.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).date()
    client = login("clock_boss")
    start = (day - timedelta(days=6)).isoformat()
    report = client.get(f"/api/sla/history?start={start}&end={day.isoformat()}").get_json()
    [shop] = report["shops"]
    assert (shop["turns"], shop["met"], shop["breached"]) == (4, 3, 1) and shop["rate"] == 0.75
    assert shop["previous_rate"] == 0.5 and shop["trend"] == "rising"
    assert 40 <= shop["first_reply_median"] <= 50  # 30, 40, 50, 250 s: between 40 and 50 (5-second buckets)
    assert shop["daily"][-1] == 0.75 and shop["daily_turns"][-1] == 4
    [agent] = report["agents"]
    assert agent["agent_name"] == "客服小王" and agent["handled_per_day"][-1] == 4
    hour_cells = [cell for row in report["heatmap"] for cell in row if cell["turns"]]
    assert sum(cell["turns"] for cell in hour_cells) == 4
    page = client.get(f"/sla/history?start={start}&end={day.isoformat()}").get_data(as_text=True)
    assert "75.0%" in page and "▲" in page and "chart.umd.min.js" in page
    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(f"/sla/history.csv?start={start}&end={day.isoformat()}")
                .get_data(as_text=True)
                .lstrip("\ufeff")
            )
        )
    )
    assert [(r["day"], r["shop"], r["agent"], r["turns"], r["met"]) for r in rows] == [
        (day.isoformat(), "时钟小店", "客服小王", "4", "3")
    ]


def test_history_refuses_bad_filters_with_a_reason(app, desk_world, login):
    client = login("clock_boss")
    assert client.get("/sla/history?start=2026-13-01").status_code == 400
    assert client.get("/sla/history?start=2026-12-05&end=2026-12-01").status_code == 400
    assert client.get("/api/sla/history?start=2024-01-01&end=2026-01-01").get_json()["error"]["code"]


def test_supervisors_set_the_policy_and_bad_values_are_refused(app, desk_world, login):
    client = login("clock_boss")
    path = f"/sla/settings/{desk_world.shop_id}"
    page = client.get(path).get_data(as_text=True)
    assert 'value="180"' in page and 'value="08:00"' in page
    bad = client.post(path, data={"threshold_seconds": 60, "warning_seconds": 90, "unit": "turn",
                                  "window_start": "8", "window_end": "24:00"})  # fmt: skip
    assert bad.status_code == 400
    with app.app_context():
        assert db.session.scalar(sa.select(SlaSettings)) is None
    form = {"threshold_seconds": 120, "warning_seconds": 60, "unit": "message", "window_start": "09:00"}
    good = client.post(path, data={**form, "window_end": "23:30", "reassign_after_seconds": 90})
    assert good.status_code == 302
    with app.app_context():
        row = db.session.scalar(sa.select(SlaSettings))
        assert (row.threshold_seconds, row.warning_seconds, row.unit.value) == (120, 60, "message")
        assert (row.window_start, row.window_end, row.reassign_after_seconds) == ("09:00", "23:30", 90)
    me = login("clock_agent").get("/api/sla/me").get_json()
    assert me["policies"][str(desk_world.shop_id)] == {"threshold_seconds": 120, "warning_seconds": 60}


def test_supervisors_boards_and_the_agent_hear_breaches_over_socketio(app, desk_world, login):
    boss, agent = Sock(app, login("clock_boss")), Sock(app, login("clock_agent"))
    try:
        assert boss.ok("sla.watch", {})["shop_ids"] == [desk_world.shop_id]
        with app.app_context():
            conversation = desk_world.buyer("o_heard", utcnow() - timedelta(seconds=200))
            clock.fire(turns(conversation)[0].id, "breach")
            db.session.remove()
        heard = [(m["name"], m["args"][0]) for m in boss.sio.get_received("/desk")]
        started = [e for name, e in heard if name == "sla.changed" and e["reason"] == "started"]
        assert started and started[0]["shop_id"] == desk_world.shop_id
        [breach] = [e for name, e in heard if name == "sla.turn" and e["reason"] == "breach"]
        assert breach["turn"]["conversation_id"] == conversation and breach["turn"]["outcome"] == "breached"
        assert [e["reason"] for e in agent.received("sla.turn")] == ["breach"]
    finally:
        boss.close()
        agent.close()


def test_auto_reassign_hands_an_unanswered_conversation_to_another_available_agent(app, desk_world):
    from tests.desk.conftest import make_present
    from tests.sla.conftest import set_policy

    with app.app_context():
        set_policy(desk_world.shop_id, reassign_after_seconds=60)
        make_present(desk_world.other_agent_id)
        conversation = desk_world.buyer("o_slow_agent", utcnow() - timedelta(seconds=70))
        from app.models import Conversation

        first = db.session.get(Conversation, conversation).assignee_id
        db.session.remove()
        turn_id = turns(conversation)[0].id
        assert clock.fire(turn_id, "reassign") is not None
        assert clock.fire(turn_id, "reassign") is None  # once per turn
        moved = db.session.get(Conversation, conversation).assignee_id
        assert first in (desk_world.agent_id, desk_world.other_agent_id) and moved not in (None, first)
        [turn] = turns(conversation)
        assert turn.reassigned_at is not None and turn.outcome.value == "open"


def test_auto_reassign_also_moves_a_breached_conversation_still_waiting(app, desk_world):
    from app.models import Conversation
    from tests.desk.conftest import make_present
    from tests.sla.conftest import set_policy

    with app.app_context():
        set_policy(desk_world.shop_id, reassign_after_seconds=240)
        conversation = desk_world.buyer("o_breached_then_moved", utcnow() - timedelta(seconds=250))
        first = db.session.get(Conversation, conversation).assignee_id
        db.session.remove()
        make_present(desk_world.other_agent_id)
        turn_id = turns(conversation)[0].id
        assert clock.fire(turn_id, "breach") is not None
        assert clock.fire(turn_id, "reassign") is not None
        moved = db.session.get(Conversation, conversation).assignee_id
        assert moved not in (None, first)
        [turn] = turns(conversation)
        assert turn.outcome.value == "breached" and turn.reassigned_at is not None
