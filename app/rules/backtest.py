"""Backtest: replay a rule (as edited, before it is enabled) over the shop's stored after-sales of the
last 30 days and say what it would have done: how many cases, how much money, which ones.

The replay uses the live path's own pieces: the facts of each case are the snapshot the live path
recorded when it first evaluated the case (``rule_decisions.inputs``: what the rules saw then), or,
for a case never evaluated, the snapshot built now from the stored rows by the same function
(``facts.for_after_sale``), with the order's status as it was when the buyer asked where the stored
times tell it (``status_when_asked``: an order shipped, or cancelled by the refund, only later was
still awaiting shipment then); the verdict is ``engine.evaluate``. So on the same data the backtest and
the live engine agree by construction. As live, the shop's enabled rules placed before this one
(same trigger, position order) see each case first: a case one of them matches is theirs, counted
as ``taken_earlier``, not as this rule's. Daily caps are not applied here; the page shows per-day
totals so a supervisor can set them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import AfterSale, OrderStatus, Rule, RuleDecision, Shop
from app.rules import engine, facts

WINDOW = timedelta(days=30)
MAX_CASES = 500


@dataclass
class Case:
    after_sale_pk: int
    after_sale_order_id: str
    order_id: str
    type: str
    amount_fen: int
    requested_at: datetime
    action: str | None
    trace: list[dict]


@dataclass
class Result:
    evaluated: int = 0
    matched: int = 0
    amount_fen: int = 0
    taken_earlier: int = 0  # cases a rule placed before this one would have acted on first
    cases: list[Case] = field(default_factory=list)
    per_day: dict[str, list[int]] = field(default_factory=dict)  # shop-local date -> [count, fen]


def _recorded_inputs(shop_id: int, pks: list[int]) -> dict[int, dict]:
    """The first snapshot the live path recorded for each after-sale (its state when it was decided)."""
    if not pks:
        return {}
    first = (
        sa.select(RuleDecision.subject_id, sa.func.min(RuleDecision.id).label("id"))
        .where(RuleDecision.shop_id == shop_id, RuleDecision.subject_kind == "after_sale",
               RuleDecision.subject_id.in_([str(p) for p in pks]))
        .group_by(RuleDecision.subject_id)
        .subquery()
    )
    rows = db.session.execute(
        sa.select(RuleDecision.subject_id, RuleDecision.inputs).join(first, first.c.id == RuleDecision.id)
    ).all()
    return {int(subject_id): inputs for subject_id, inputs in rows if inputs}


def status_when_asked(status: int | None, paid_at: str | None, shipped_at: str | None,
                      event_time: str) -> int | None:
    """The order's status at ``event_time`` (ISO times, as in a snapshot), from what is stored now.

    Shipped after the request: it was awaiting shipment. Cancelled or closed since (a refund in full
    before shipping closes the order), never shipped, paid before the request: awaiting shipment too.
    Anything else is taken as it is now (a completed order's receipt time is not stored)."""
    asked = datetime.fromisoformat(event_time)
    if status is None or paid_at is None or datetime.fromisoformat(paid_at) > asked:
        return status
    if shipped_at is not None and datetime.fromisoformat(shipped_at) > asked:
        return int(OrderStatus.AWAITING_SHIPMENT)
    closed = (OrderStatus.CANCELLED, OrderStatus.CANCELLED_ALL_AFTER_SOLD)
    if shipped_at is None and status in closed:
        return int(OrderStatus.AWAITING_SHIPMENT)
    return status


def _as_when_asked(snapshot: dict) -> dict:
    status = status_when_asked(snapshot.get("order_status"), snapshot.get("paid_at"), snapshot.get("shipped_at"),
                               snapshot["event_time"])
    return snapshot if status == snapshot.get("order_status") else {**snapshot, "order_status": status}


def _earlier_rules(shop_id: int, trigger: str, rule: Rule | None) -> list[dict]:
    """Definitions of the enabled rules that live evaluates before ``rule`` (a new rule goes last)."""
    stmt = sa.select(Rule).where(Rule.shop_id == shop_id, Rule.trigger == trigger, Rule.enabled)
    if rule is not None:
        stmt = stmt.where(sa.tuple_(Rule.position, Rule.id) < sa.tuple_(rule.position, rule.id))
    rows = db.session.scalars(stmt.order_by(Rule.position, Rule.id)).all()
    return [{"trigger": r.trigger, "conditions": r.conditions or [], "actions": r.actions or []} for r in rows]


def run(shop: Shop, definition: dict, now: datetime | None = None, rule: Rule | None = None) -> Result:
    """``rule``: the saved rule being edited (its place in the order), None for a new one."""
    now = now or utcnow()
    result = Result()
    if definition.get("trigger") not in engine.AFTER_SALE_TRIGGERS:
        return result
    earlier = _earlier_rules(shop.id, definition["trigger"], rule)
    rows = db.session.scalars(
        sa.select(AfterSale)
        .where(AfterSale.shop_id == shop.id, AfterSale.platform_created_at >= now - WINDOW,
               AfterSale.platform_created_at <= now)
        .order_by(AfterSale.platform_created_at, AfterSale.id)
    ).all()
    recorded = _recorded_inputs(shop.id, [r.id for r in rows])
    action = engine.approves(definition) or next((a.get("kind") for a in definition.get("actions") or []), None)
    for row in rows:
        snapshot = recorded.get(row.id) or _as_when_asked(facts.for_after_sale(row, shop))
        result.evaluated += 1
        if any(engine.evaluate(other, snapshot).matched for other in earlier):
            result.taken_earlier += 1
            continue
        verdict = engine.evaluate(definition, snapshot)
        if not verdict.matched:
            continue
        amount = int(snapshot.get("refund_amount_fen") or 0) if engine.approves(definition) else 0
        result.matched += 1
        result.amount_fen += amount
        day = row.platform_created_at.astimezone(shop.tz).date().isoformat()
        totals = result.per_day.setdefault(day, [0, 0])
        totals[0] += 1
        totals[1] += amount
        if len(result.cases) < MAX_CASES:
            result.cases.append(
                Case(row.id, row.after_sale_order_id, row.order_id, row.type, amount, row.platform_created_at,
                     action, verdict.trace)
            )
    return result
