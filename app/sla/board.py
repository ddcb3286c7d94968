"""The supervisors' live board and an agent's own rate today: "now" from raw turns, "today" from rollups.

All queries run through the request's scoped session: a supervisor sees only the shops they serve.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from app.desk import assignment
from app.extensions import db
from app.models import Conversation, ConversationStatus, Customer, ReplyTurn, Shop, SlaHourly, TurnOutcome, User
from app.sla.clock import turn_dict
from app.sla.policy import policy_for

WAITING_LIMIT = 200
BREACHED_WAITING_LIMIT = 50


def rate(met: int, total: int) -> float | None:
    return round(met / total, 4) if total else None


def day_start(shop_id: int, now: datetime) -> datetime:
    """Midnight of the shop-local day containing ``now``, in UTC."""
    local = now.astimezone(policy_for(shop_id).tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def today_rates(shops: list[Shop], now: datetime, agent_id: int | None = None) -> dict[int, dict]:
    """Per shop: counted turns decided today (shop-local), met, and the rate in the shop's unit."""
    if not shops:
        return {}
    h = SlaHourly
    conditions = [sa.and_(h.shop_id == shop.id, h.hour_start >= day_start(shop.id, now)) for shop in shops]
    stmt = sa.select(
        h.shop_id,
        sa.func.sum(h.turns),
        sa.func.sum(h.met),
        sa.func.sum(h.breached),
        sa.func.sum(h.messages),
        sa.func.sum(h.messages_met),
    ).where(sa.or_(*conditions))
    if agent_id is not None:
        stmt = stmt.where(h.agent_id == agent_id)
    rows = {row[0]: row for row in db.session.execute(stmt.group_by(h.shop_id))}
    result = {}
    for shop in shops:
        row = rows.get(shop.id)
        turns, met, breached, messages, messages_met = (int(v or 0) for v in (row[1:] if row else (0,) * 5))
        unit = policy_for(shop.id).unit
        result[shop.id] = {
            "shop_id": shop.id,
            "shop_name": shop.name,
            "unit": unit,
            "turns": turns,
            "met": met,
            "breached": breached,
            "messages": messages,
            "messages_met": messages_met,
            "rate": rate(messages_met, messages) if unit == "message" else rate(met, turns),
        }
    return result


def board(shops: list[Shop], now: datetime) -> dict:
    shop_ids = [shop.id for shop in shops]
    names = {shop.id: shop.name for shop in shops}
    assignee = sa.orm.aliased(User)

    def waiting_query(*where, order, limit):
        return db.session.execute(
            sa.select(ReplyTurn, Customer.nickname, Customer.openid, Conversation.assignee_id, assignee.display_name)
            .join(Conversation, Conversation.id == ReplyTurn.conversation_id)
            .join(Customer, Customer.id == ReplyTurn.customer_id)
            .outerjoin(assignee, assignee.id == Conversation.assignee_id)
            .where(ReplyTurn.closed_at.is_(None), Conversation.status == ConversationStatus.OPEN, *where)
            .order_by(*order)
            .limit(limit)
        ).all()

    # Clocks still running first, nearest deadline first (what can still be saved), then buyers whose
    # turn already breached and who still wait, most recent breach first.
    waiting_rows = waiting_query(
        ReplyTurn.outcome == TurnOutcome.OPEN, order=(ReplyTurn.deadline_at, ReplyTurn.id), limit=WAITING_LIMIT
    ) + waiting_query(
        ReplyTurn.outcome == TurnOutcome.BREACHED,
        order=(ReplyTurn.breached_at.desc(), ReplyTurn.id),
        limit=BREACHED_WAITING_LIMIT,
    )
    waiting = []
    for turn, nickname, openid, assignee_id, assignee_name in waiting_rows:
        data = turn_dict(turn)
        data.update(
            shop_name=names.get(turn.shop_id),
            buyer=nickname or openid[-6:],
            assignee_id=assignee_id,
            assignee_name=assignee_name,
        )
        waiting.append(data)
    hour_ago = now - timedelta(hours=1)
    breach_rows = db.session.execute(
        sa.select(ReplyTurn, Customer.nickname, Customer.openid, User.display_name)
        .join(Customer, Customer.id == ReplyTurn.customer_id)
        .outerjoin(User, User.id == ReplyTurn.agent_id)
        .where(ReplyTurn.breached_at >= hour_ago, ReplyTurn.shop_id.in_(shop_ids))
        .order_by(ReplyTurn.breached_at.desc())
        .limit(100)
    ).all()
    breaches = []
    for turn, nickname, openid, agent_name in breach_rows:
        data = turn_dict(turn)
        data.update(shop_name=names.get(turn.shop_id), buyer=nickname or openid[-6:], agent_name=agent_name)
        breaches.append(data)
    breach_counts = dict(
        db.session.execute(
            sa.select(ReplyTurn.shop_id, sa.func.count())
            .where(ReplyTurn.breached_at >= hour_ago, ReplyTurn.shop_id.in_(shop_ids))
            .group_by(ReplyTurn.shop_id)
        ).all()
    )
    queue = dict(
        db.session.execute(
            sa.select(Conversation.shop_id, sa.func.count())
            .where(Conversation.status == ConversationStatus.OPEN, Conversation.assignee_id.is_(None))
            .group_by(Conversation.shop_id)
        ).all()
    )
    agents: dict[int, dict] = {}
    for shop in shops:
        for agent in assignment.agents_for_shop(shop.id):
            entry = agents.setdefault(agent["id"], {**agent, "shop_ids": []})
            entry["shop_ids"].append(shop.id)
    rates = today_rates(shops, now)
    waiting_counts = dict(
        db.session.execute(
            sa.select(ReplyTurn.shop_id, sa.func.count())
            .join(Conversation, Conversation.id == ReplyTurn.conversation_id)
            .where(ReplyTurn.closed_at.is_(None), Conversation.status == ConversationStatus.OPEN)
            .group_by(ReplyTurn.shop_id)
        ).all()
    )
    return {
        "now": now.isoformat(),
        "shops": [
            {
                **rates[shop.id],
                "threshold_seconds": policy_for(shop.id).threshold_seconds,
                "warning_seconds": policy_for(shop.id).warning_seconds,
                "waiting": waiting_counts.get(shop.id, 0),
                "queue": queue.get(shop.id, 0),
                "breaches_last_hour": breach_counts.get(shop.id, 0),
            }
            for shop in shops
        ],
        "waiting": waiting,
        "breaches": breaches,
        "agents": sorted(agents.values(), key=lambda a: (a["presence"] == "offline", a["name"])),
    }


def my_today(user: User, shops: list[Shop], now: datetime) -> dict:
    """The agent's own counted turns today across the shops they serve (the console header)."""
    rates = today_rates(shops, now, agent_id=user.id)
    turns = sum(r["turns"] for r in rates.values())
    met = sum(r["met"] for r in rates.values())
    messages = sum(r["messages"] for r in rates.values())
    messages_met = sum(r["messages_met"] for r in rates.values())
    units = {policy_for(shop.id).unit for shop in shops}
    by_message = units == {"message"}
    return {
        "turns": turns,
        "met": met,
        "rate": rate(messages_met, messages) if by_message else rate(met, turns),
        "unit": "message" if by_message else "turn",
        "policies": {
            str(shop.id): {
                "threshold_seconds": policy_for(shop.id).threshold_seconds,
                "warning_seconds": policy_for(shop.id).warning_seconds,
            }
            for shop in shops
        },
    }
