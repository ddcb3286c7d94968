"""Rollups kept incrementally equal a recomputation from the raw turns; the CLI rebuilds them."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from app.desk import conversations
from app.extensions import db
from app.models import SlaHourly, SlaReplyHistogram
from app.sla import clock, rollup
from tests.sla.conftest import local, noon_yesterday, turns


def _stored(connection):
    hourly = [
        dict(row._mapping)
        for row in connection.execute(sa.select(SlaHourly.__table__).order_by("shop_id", "hour_start", "agent_id"))
    ]
    histogram = [
        dict(row._mapping)
        for row in connection.execute(
            sa.select(SlaReplyHistogram.__table__).order_by("shop_id", "day", "agent_id", "bucket")
        )
    ]
    return hourly, histogram


def _sorted(rows, keys):
    return sorted(rows, key=lambda r: tuple(r[k] for k in keys))


def _mixed_day(desk_world):
    """Met, breached (queue and late reply), answered after a breach, unanswered, outside the window."""
    t0 = noon_yesterday(desk_world.shop_id)
    shop = desk_world.shop_id
    for i in range(4):  # met, in two hours
        c = desk_world.buyer(f"o_met_{i}", t0 + timedelta(minutes=50 * i))
        desk_world.reply(desk_world.agent_id, c, t0 + timedelta(minutes=50 * i, seconds=20 + 30 * i))
    late = desk_world.buyer("o_late_reply", t0 + timedelta(minutes=5))
    desk_world.reply(desk_world.agent_id, late, t0 + timedelta(minutes=5, seconds=250))
    missed = desk_world.buyer("o_missed", t0 + timedelta(minutes=7))
    clock.fire(turns(missed)[0].id, "breach")
    db.session.remove()
    desk_world.reply(desk_world.supervisor_id, missed, t0 + timedelta(minutes=20))
    never = desk_world.buyer("o_never", t0 + timedelta(minutes=9))
    clock.fire(turns(never)[0].id, "breach")
    db.session.remove()
    gone = desk_world.buyer("o_gone", t0 + timedelta(minutes=11))
    desk_world.buyer("o_gone", t0 + timedelta(minutes=11, seconds=30))
    desk_world.mp.setattr(conversations, "utcnow", lambda: t0 + timedelta(minutes=12))
    conversations.resolve(desk_world.scoped(desk_world.agent_id), gone)
    db.session.remove()
    day = t0.astimezone(db.session.get(__import__("app.models", fromlist=["Shop"]).Shop, shop).tz)
    night = local(shop, day.year, day.month, day.day, 3, 0)
    outside = desk_world.buyer("o_night", night)
    desk_world.reply(desk_world.agent_id, outside, night + timedelta(seconds=30))
    return t0


def test_incremental_rollups_equal_recomputation(app, desk_world):
    with app.app_context():
        t0 = _mixed_day(desk_world)
        with db.engine.connect() as connection:
            hourly, histogram = _stored(connection)
            start, end = t0 - timedelta(days=1), t0 + timedelta(days=1)
            fresh_hourly, fresh_histogram = rollup.recompute(connection, start, end)
        keys = ("shop_id", "hour_start", "agent_id")
        assert _sorted(hourly, keys) == _sorted(fresh_hourly, keys)
        hist_keys = ("shop_id", "day", "agent_id", "bucket")
        assert _sorted(histogram, hist_keys) == _sorted(fresh_histogram, hist_keys)
        totals = {name: sum(row[name] for row in hourly) for name in rollup.COUNTERS}
        # 4 met + late + missed + never + gone = 8 counted turns; the night one is outside the window.
        assert totals["turns"] == 8 and totals["met"] == 4 and totals["breached"] == 3
        assert totals["unanswered"] == 1 and totals["answered"] == 6
        assert totals["messages"] == 4 + 1 + 1 + 2  # "never" is still waiting: its messages are not booked
        assert totals["reply_seconds"] == (20 + 50 + 80 + 110) + 250 + 780
        assert sum(row["turns"] for row in histogram) == 6


def test_the_rollup_command_rebuilds_the_same_rows(app, desk_world):
    with app.app_context():
        t0 = _mixed_day(desk_world)
        with db.engine.connect() as connection:
            before = _stored(connection)
        with db.engine.begin() as connection:
            connection.execute(sa.delete(SlaHourly.__table__))
            connection.execute(sa.delete(SlaReplyHistogram.__table__))
        day = (t0 - timedelta(days=1)).date().isoformat(), (t0 + timedelta(days=1)).date().isoformat()
        result = app.test_cli_runner().invoke(args=["sla", "rollup", "--from", day[0], "--to", day[1]])
        assert result.exit_code == 0, result.output
        assert "rebuilt" in result.output
        with db.engine.connect() as connection:
            after = _stored(connection)
        assert before == after and before[0]


def test_the_rollup_command_refuses_bad_dates(app):
    result = app.test_cli_runner().invoke(args=["sla", "rollup", "--from", "yesterday", "--to", "2026-12-01"])
    assert result.exit_code != 0 and "not a date" in result.output
