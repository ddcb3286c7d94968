"""Rollups of counted turns: ``sla_hourly`` and ``sla_reply_histogram``, kept incrementally and rebuilt.

Bookings happen in the transaction that changes a turn (clock.py), as deltas keyed by the turn's
shop, agent (0 = nobody) and the UTC hour it started:

- when its outcome is decided (met, breached, unanswered): ``turns`` + 1 and the outcome's counter;
- when its clock stops (answered or resolved): ``messages``/``messages_met`` (the per-message
  unit), and if answered ``answered``, ``reply_seconds``, ``conversations`` (first answer of the
  agent in that conversation that shop-local day) and the reply time's histogram bucket.

``recompute`` derives the same rows from ``reply_turns`` with one GROUP BY; ``flask sla rollup``
replaces a range with it, and tests/sla/test_rollup.py checks both give the same.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.db import columns_of
from app.models import ReplyTurn, SlaHourly, SlaReplyHistogram, TurnOutcome

COUNTERS = (
    "turns",
    "met",
    "breached",
    "unanswered",
    "messages",
    "messages_met",
    "answered",
    "reply_seconds",
    "conversations",
)
_hourly = SlaHourly.__table__
_histogram = SlaReplyHistogram.__table__
_turns = ReplyTurn.__table__


def bucket_of(seconds: int) -> int:
    """5-second buckets up to 10 minutes, minutes up to an hour, then one bucket: medians to 5 s where it matters."""
    seconds = max(0, int(seconds))
    if seconds < 600:
        return seconds - seconds % 5
    if seconds < 3600:
        return seconds - seconds % 60
    return 3600


def bucket_width(bucket: int) -> int:
    return 5 if bucket < 600 else 60 if bucket < 3600 else 0


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@functools.cache
def _upsert(table: sa.Table, dialect: str, key: tuple[str, ...], counters: tuple[str, ...]) -> sa.Insert:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` adding each of ``counters`` to the stored row's,
    built once per table and dialect (building and keying a statement per booking cost more than
    running it), its values bound at execution. A counter given as 0 adds nothing."""
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=list(key), set_={name: table.c[name] + stmt.excluded[name] for name in counters}
    )


def book(connection: sa.Connection, shop_id: int, agent_id: int | None, started_at: datetime, **deltas: int) -> None:
    unknown = deltas.keys() - set(COUNTERS)
    if unknown:
        raise ValueError(f"not a rollup counter: {', '.join(sorted(unknown))}")
    if not any(deltas.values()):
        return
    hour = hour_of(started_at)
    values = {"shop_id": shop_id, "agent_id": agent_id or 0, "hour_start": hour, **_local_of(shop_id, hour)}
    values.update({name: deltas.get(name, 0) for name in COUNTERS})
    upsert = _upsert(_hourly, connection.dialect.name, ("shop_id", "hour_start", "agent_id"), COUNTERS)
    connection.execute(upsert, columns_of(_hourly, values))


def _local_of(shop_id: int, hour: datetime) -> dict:
    from app.sla.policy import policy_for

    local = hour.astimezone(policy_for(shop_id).tz)
    return {"day": local.date(), "local_hour": local.hour}


def local_day(shop_id: int, moment: datetime) -> date:
    from app.sla.policy import policy_for

    return moment.astimezone(policy_for(shop_id).tz).date()


def book_reply(
    connection: sa.Connection, shop_id: int, agent_id: int | None, started_at: datetime, seconds: int
) -> None:
    values = {
        "shop_id": shop_id,
        "agent_id": agent_id or 0,
        "day": local_day(shop_id, started_at),
        "bucket": bucket_of(seconds),
        "turns": 1,
    }
    upsert = _upsert(_histogram, connection.dialect.name, ("shop_id", "day", "agent_id", "bucket"), ("turns",))
    connection.execute(upsert, columns_of(_histogram, values))


def _hour_expr(connection: sa.Connection, column):
    if connection.dialect.name == "postgresql":
        return sa.func.date_trunc("hour", column)
    return sa.func.strftime("%Y-%m-%d %H:00:00.000000", column)


def recompute(connection: sa.Connection, start: datetime, end: datetime, shop_id: int | None = None):
    """(hourly rows, histogram rows) for counted turns that started in [start, end), from raw turns."""
    t = _turns
    hour = _hour_expr(connection, t.c.started_at).label("hour_start")
    agent = sa.func.coalesce(t.c.agent_id, 0).label("agent_id")
    decided = t.c.outcome != TurnOutcome.OPEN.value
    closed = t.c.closed_at.is_not(None)
    answered = t.c.answered_at.is_not(None)

    def count_if(condition):
        return sa.func.sum(sa.case((condition, 1), else_=0))

    where = [t.c.counted.is_(True), t.c.started_at >= start, t.c.started_at < end]
    if shop_id is not None:
        where.append(t.c.shop_id == shop_id)
    hourly = connection.execute(
        sa.select(
            t.c.shop_id,
            agent,
            hour,
            count_if(decided).label("turns"),
            count_if(t.c.outcome == TurnOutcome.MET.value).label("met"),
            count_if(t.c.outcome == TurnOutcome.BREACHED.value).label("breached"),
            count_if(t.c.outcome == TurnOutcome.UNANSWERED.value).label("unanswered"),
            sa.func.sum(sa.case((closed, t.c.buyer_messages), else_=0)).label("messages"),
            sa.func.sum(sa.case((closed, t.c.messages_met), else_=0)).label("messages_met"),
            count_if(answered).label("answered"),
            sa.func.sum(sa.case((answered, t.c.first_reply_seconds), else_=0)).label("reply_seconds"),
            count_if(sa.and_(answered, t.c.first_of_day.is_(True))).label("conversations"),
        )
        .where(*where)
        .group_by(t.c.shop_id, agent, hour)
    ).all()
    replies = connection.execute(
        sa.select(t.c.shop_id, agent, t.c.started_at, t.c.first_reply_seconds).where(*where, answered)
    ).all()
    histogram: dict[tuple, int] = {}
    for row in replies:
        key = (row.shop_id, row.agent_id, local_day(row.shop_id, row.started_at), bucket_of(row.first_reply_seconds))
        histogram[key] = histogram.get(key, 0) + 1
    rows = []
    for row in hourly:
        counters = {name: int(getattr(row, name) or 0) for name in COUNTERS}
        if any(counters.values()):
            hour = _as_hour(row.hour_start)
            rows.append(
                {
                    "shop_id": row.shop_id,
                    "agent_id": row.agent_id,
                    "hour_start": hour,
                    **_local_of(row.shop_id, hour),
                    **counters,
                }
            )
    hist_rows = [
        {"shop_id": k[0], "agent_id": k[1], "day": k[2], "bucket": k[3], "turns": v} for k, v in histogram.items()
    ]
    return rows, hist_rows


def _as_hour(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rebuild(connection: sa.Connection, first_day: date, last_day: date, shop_id: int | None = None) -> tuple[int, int]:
    """Replace the rollups of shop-local days ``first_day``..``last_day`` (per shop, in its time zone)
    with a recomputation from the raw turns; returns the row counts written."""
    from app.models import Shop
    from app.sla.policy import policy_for

    shops = [shop_id] if shop_id is not None else list(connection.execute(sa.select(Shop.__table__.c.id)).scalars())
    written = [0, 0]
    for shop in shops:
        tz = policy_for(shop).tz
        lo = datetime.combine(first_day, time(), tz).astimezone(UTC)
        hi = datetime.combine(last_day + timedelta(days=1), time(), tz).astimezone(UTC)
        rows, hist_rows = recompute(connection, lo, hi, shop)
        connection.execute(
            sa.delete(_hourly).where(_hourly.c.shop_id == shop, _hourly.c.hour_start >= lo, _hourly.c.hour_start < hi)
        )
        connection.execute(
            sa.delete(_histogram).where(
                _histogram.c.shop_id == shop, _histogram.c.day >= first_day, _histogram.c.day <= last_day
            )
        )
        if rows:
            connection.execute(sa.insert(_hourly), rows)
        if hist_rows:
            connection.execute(sa.insert(_histogram), hist_rows)
        written[0] += len(rows)
        written[1] += len(hist_rows)
    return written[0], written[1]
