"""History: rates per shop, agent, day and hour of day, trends, first-reply medians, work per agent,
after-sale rate, time to close after-sales, share closed by rules. Reads the rollups (never the raw
turns) for everything about replies; after-sale figures come from their own tables.

Days and hours are the shop's local ones; a range is whole shop-local days, ``start`` to ``end``
inclusive. The trend compares with the same number of days just before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import AfterSale, Order, RuleDecision, Shop, SlaHourly, SlaReplyHistogram, User
from app.sla.board import rate
from app.sla.policy import policy_for
from app.sla.rollup import bucket_width

REFUND_ONLY, RETURN_REFUND = "REFUND", "RETURN"
CLOSED_SUCCESS = ("MERCHANT_REFUND_SUCCESS", "MERCHANT_RETURN_SUCCESS")
CLOSED_STATUSES = (
    *CLOSED_SUCCESS,
    "MERCHANT_REJECT_REFUND",
    "MERCHANT_REJECT_RETURN",
    "USER_CANCELD",
    "RETURN_CLOSED",
    "MERCHANT_OVERDUE_REFUND",
    "MERCHANT_FAIL",
)
TREND_EPSILON = 0.005  # half a percentage point: smaller changes are "steady"


@dataclass
class Filters:
    start: date
    end: date
    shops: list[Shop]
    agent_id: int | None = None

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def _bounds(shop: Shop, start: date, end: date) -> tuple[datetime, datetime]:
    tz = policy_for(shop.id).tz
    return datetime.combine(start, time(), tz), datetime.combine(end + timedelta(days=1), time(), tz)


def _range_condition(column, shop_column, shops: list[Shop], start: date, end: date):
    return sa.or_(
        *[
            sa.and_(shop_column == shop.id, column >= lo, column < hi)
            for shop in shops
            for lo, hi in [_bounds(shop, start, end)]
        ]
    )


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _empty() -> dict:
    return {"turns": 0, "met": 0, "breached": 0, "unanswered": 0, "messages": 0, "messages_met": 0, "answered": 0,
            "reply_seconds": 0, "conversations": 0}  # fmt: skip


def _add(into: dict, row) -> None:
    for key in into:
        into[key] += int(getattr(row, key) or 0)


def _rate_of(totals: dict, unit: str) -> float | None:
    return (
        rate(totals["messages_met"], totals["messages"]) if unit == "message" else rate(totals["met"], totals["turns"])
    )


def median_from(histogram: dict[int, int]) -> float | None:
    """The median of bucketed reply times, interpolated inside its bucket (exact to the bucket's width)."""
    total = sum(histogram.values())
    if not total:
        return None
    half, seen = total / 2, 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        if seen + count >= half:
            width = bucket_width(bucket)
            return round(bucket + width * ((half - seen) / count), 1)
        seen += count
    return float(max(histogram))


def _trend(current: float | None, previous: float | None) -> str | None:
    if current is None or previous is None:
        return None
    if current > previous + TREND_EPSILON:
        return "rising"
    if current < previous - TREND_EPSILON:
        return "falling"
    return "steady"


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def report(filters: Filters, include_rows: bool = False) -> dict:
    """The history; ``include_rows`` adds one row per day, shop and agent (the CSV)."""
    shops = filters.shops
    if not shops:
        return {"shops": [], "days": [], "agents": [], "heatmap": [], "rows": []}
    h = SlaHourly
    unit_of = {shop.id: policy_for(shop.id).unit for shop in shops}
    shop_ids = [shop.id for shop in shops]
    where = [h.shop_id.in_(shop_ids), h.day >= filters.start, h.day <= filters.end]
    if filters.agent_id is not None:
        where.append(h.agent_id == filters.agent_id)
    # Aggregated in the database (30 days of 5 shops x 50 agents are ~36,000 hourly rows), on the
    # rows' shop-local day and hour: per day, shop and agent (everything per shop, per agent and the
    # CSV derive from these), and per day and hour for the heatmap.
    sums = [sa.func.sum(getattr(h, name)).label(name) for name in _empty()]
    detail_rows = db.session.execute(
        sa.select(h.day, h.shop_id, h.agent_id, *sums).where(*where).group_by(h.day, h.shop_id, h.agent_id)
    ).all()
    heat_rows = db.session.execute(
        sa.select(h.day, h.local_hour, *sums).where(*where).group_by(h.day, h.local_hour)
    ).all()

    # Fanned out by position (not by name per row): a 30-day range of 5 shops is ~7,500 rows.
    keys = list(_empty())
    width = len(keys)
    per_shop_day_values: dict[tuple[int, date], list[int]] = {}
    per_agent_values: dict[int, list[int]] = {}
    per_agent_day: dict[tuple[int, date], dict] = {}  # conversations only (handled per day)
    conversations = keys.index("conversations")
    detail: dict[tuple[date, int, int], dict] = {}
    for row in detail_rows:
        day = _as_date(row[0])
        values = [int(v or 0) for v in row[3:]]
        if include_rows:
            detail[(day, row.shop_id, row.agent_id)] = dict(zip(keys, values, strict=True))
        for target in (
            per_shop_day_values.setdefault((row.shop_id, day), [0] * width),
            per_agent_values.setdefault(row.agent_id, [0] * width),
        ):
            for i in range(width):
                target[i] += values[i]
        handled = per_agent_day.setdefault((row.agent_id, day), {"conversations": 0})
        handled["conversations"] += values[conversations]
    per_shop = {shop.id: _empty() for shop in shops}
    per_shop_day: dict[tuple[int, date], dict] = {}
    for (shop_id, day), values in per_shop_day_values.items():
        per_shop_day[(shop_id, day)] = dict(zip(keys, values, strict=True))
        totals = per_shop[shop_id]
        for key, value in zip(keys, values, strict=True):
            totals[key] += value
    per_agent = {agent_id: dict(zip(keys, values, strict=True)) for agent_id, values in per_agent_values.items()}
    heat: dict[tuple[int, int], dict] = {}  # (ISO weekday, hour) -> totals
    for row in heat_rows:
        _add(heat.setdefault((_as_date(row.day).isoweekday(), int(row.local_hour)), _empty()), row)

    # The previous period: totals per shop only.
    prev_start = filters.start - timedelta(days=filters.days)
    prev_end = filters.start - timedelta(days=1)
    prev_where = [h.shop_id.in_(shop_ids), h.day >= prev_start, h.day <= prev_end]
    if filters.agent_id is not None:
        prev_where.append(h.agent_id == filters.agent_id)
    previous = {
        row.shop_id: row
        for row in db.session.execute(
            sa.select(
                h.shop_id,
                sa.func.sum(h.turns).label("turns"),
                sa.func.sum(h.met).label("met"),
                sa.func.sum(h.messages).label("messages"),
                sa.func.sum(h.messages_met).label("messages_met"),
            )
            .where(*prev_where)
            .group_by(h.shop_id)
        )
    }

    # First-reply medians from the histogram.
    g = SlaReplyHistogram
    hist_where = [g.day >= filters.start, g.day <= filters.end, g.shop_id.in_([shop.id for shop in shops])]
    if filters.agent_id is not None:
        hist_where.append(g.agent_id == filters.agent_id)
    shop_hist: dict[int, dict[int, int]] = {}
    agent_hist: dict[int, dict[int, int]] = {}
    all_hist: dict[int, int] = {}
    for shop_id, agent_id, bucket, turns in db.session.execute(
        sa.select(g.shop_id, g.agent_id, g.bucket, sa.func.sum(g.turns))
        .where(*hist_where)
        .group_by(g.shop_id, g.agent_id, g.bucket)
    ):
        for target in (shop_hist.setdefault(shop_id, {}), agent_hist.setdefault(agent_id, {}), all_hist):
            target[bucket] = target.get(bucket, 0) + int(turns)

    after_sales = _after_sales(filters)
    names = dict(
        db.session.execute(sa.select(User.id, User.display_name).where(User.id.in_(list(per_agent) or [0]))).all()
    )
    shop_names = {shop.id: shop.name for shop in shops}
    days = [filters.start + timedelta(days=i) for i in range(filters.days)]

    shop_rows = []
    for shop in shops:
        totals, unit = per_shop[shop.id], unit_of[shop.id]
        prev = previous.get(shop.id)
        prev_totals = {
            "turns": int(prev.turns or 0) if prev else 0,
            "met": int(prev.met or 0) if prev else 0,
            "messages": int(prev.messages or 0) if prev else 0,
            "messages_met": int(prev.messages_met or 0) if prev else 0,
        }
        current_rate, previous_rate = _rate_of(totals, unit), _rate_of(prev_totals, unit)
        shop_rows.append(
            {
                "shop_id": shop.id,
                "shop_name": shop.name,
                "unit": unit,
                **totals,
                "rate": current_rate,
                "previous_rate": previous_rate,
                "trend": _trend(current_rate, previous_rate),
                "first_reply_median": median_from(shop_hist.get(shop.id, {})),
                "daily": [_rate_of(per_shop_day.get((shop.id, day), _empty()), unit) for day in days],
                "daily_turns": [per_shop_day.get((shop.id, day), _empty())["turns"] for day in days],
                **after_sales.get(shop.id, {}),
            }
        )
    unit = "message" if set(unit_of.values()) == {"message"} else "turn"
    agent_rows = []
    for agent_id, totals in per_agent.items():
        handled = [per_agent_day.get((agent_id, day), _empty())["conversations"] for day in days]
        agent_rows.append(
            {
                "agent_id": agent_id,
                "agent_name": names.get(agent_id) if agent_id else None,
                **totals,
                "rate": _rate_of(totals, unit),
                "first_reply_median": median_from(agent_hist.get(agent_id, {})),
                "handled_per_day": handled,
                "handled_average": round(sum(handled) / len(days), 1) if days else 0,
            }
        )
    agent_rows.sort(key=lambda a: (a["agent_id"] == 0, -(a["turns"]), a["agent_name"] or ""))
    heatmap = [
        [
            {"turns": heat[(weekday, hour)]["turns"], "rate": _rate_of(heat[(weekday, hour)], unit)}
            if (weekday, hour) in heat
            else {"turns": 0, "rate": None}
            for hour in range(24)
        ]
        for weekday in range(1, 8)
    ]
    csv_rows = (
        [
            {
                "day": day.isoformat(),
                "shop": shop_names[shop_id],
                "agent": (names.get(agent_id) or "") if agent_id else "",
                **totals,
                "rate": _rate_of(totals, unit_of[shop_id]),
            }
            for (day, shop_id, agent_id), totals in sorted(
                detail.items(), key=lambda item: (item[0][0], item[0][1], item[0][2])
            )
        ]
        if include_rows
        else None
    )
    overall = _empty()
    for totals in per_shop.values():
        for key in overall:
            overall[key] += totals[key]
    return {
        "start": filters.start.isoformat(),
        "end": filters.end.isoformat(),
        "previous_start": prev_start.isoformat(),
        "previous_end": prev_end.isoformat(),
        "days": [day.isoformat() for day in days],
        "unit": unit,
        "overall": {**overall, "rate": _rate_of(overall, unit), "first_reply_median": median_from(all_hist)},
        "shops": shop_rows,
        "agents": agent_rows,
        "heatmap": heatmap,
        **({"rows": csv_rows} if include_rows else {}),
    }


def _after_sales(filters: Filters) -> dict[int, dict]:
    """After-sale rate (after-sales / orders created in the range), median hours to close refund-only and
    return-refund cases (created in the range and closed), and the share of closed ones a rule approved."""
    shops = filters.shops
    orders = dict(
        db.session.execute(
            sa.select(Order.shop_id, sa.func.count())
            .where(_range_condition(Order.platform_created_at, Order.shop_id, shops, filters.start, filters.end))
            .group_by(Order.shop_id)
        ).all()
    )
    cases = db.session.execute(
        sa.select(
            AfterSale.shop_id,
            AfterSale.type,
            AfterSale.status,
            AfterSale.platform_created_at,
            AfterSale.platform_updated_at,
        ).where(_range_condition(AfterSale.platform_created_at, AfterSale.shop_id, shops, filters.start, filters.end))
    ).all()
    rules = dict(
        db.session.execute(
            sa.select(RuleDecision.shop_id, sa.func.count(sa.distinct(RuleDecision.subject_id)))
            .where(
                _range_condition(RuleDecision.created_at, RuleDecision.shop_id, shops, filters.start, filters.end),
                RuleDecision.outcome == "approved",
                RuleDecision.dry_run.is_(False),
                RuleDecision.subject_kind == "after_sale",
            )
            .group_by(RuleDecision.shop_id)
        ).all()
    )
    result: dict[int, dict] = {}
    for shop in shops:
        mine = [c for c in cases if c.shop_id == shop.id]
        closed = [c for c in mine if c.status in CLOSED_STATUSES]

        def hours(kind: str, closed=closed) -> float | None:
            spans = [
                (c.platform_updated_at - c.platform_created_at).total_seconds() / 3600
                for c in closed
                if c.type == kind and c.platform_updated_at and c.platform_created_at
            ]
            value = _median(spans)
            return round(value, 1) if value is not None else None

        result[shop.id] = {
            "orders": int(orders.get(shop.id, 0)),
            "after_sales": len(mine),
            "after_sale_rate": rate(len(mine), int(orders.get(shop.id, 0))),
            "refund_only_close_hours": hours(REFUND_ONLY),
            "return_refund_close_hours": hours(RETURN_REFUND),
            "closed_after_sales": len(closed),
            "closed_by_rules": int(rules.get(shop.id, 0)),
            "closed_by_rules_share": rate(min(int(rules.get(shop.id, 0)), len(closed)), len(closed)),
        }
    return result
