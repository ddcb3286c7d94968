"""Backtest: replay a rule (as edited, before it is enabled) over the shop's stored after-sales of the
last 30 days and say what it would have done: how many cases, how much money, which ones.

The replay uses the live path's own pieces: the facts of each case are the snapshot the live path
recorded when it first evaluated the case (``rule_decisions.inputs``: what the rules saw then), or,
for a case never evaluated, the snapshot built now from the stored rows by the same function
(``facts.for_after_sale``); the verdict is ``engine.evaluate``. So on the same data the backtest and
the live engine agree by construction. Daily caps are not applied here; the page shows per-day
totals so a supervisor can set them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import AfterSale, RuleDecision, Shop
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


def run(shop: Shop, definition: dict, now: datetime | None = None) -> Result:
    now = now or utcnow()
    result = Result()
    if definition.get("trigger") not in engine.AFTER_SALE_TRIGGERS:
        return result
    rows = db.session.scalars(
        sa.select(AfterSale)
        .where(AfterSale.shop_id == shop.id, AfterSale.platform_created_at >= now - WINDOW,
               AfterSale.platform_created_at <= now)
        .order_by(AfterSale.platform_created_at, AfterSale.id)
    ).all()
    recorded = _recorded_inputs(shop.id, [r.id for r in rows])
    action = engine.approves(definition) or next((a.get("kind") for a in definition.get("actions") or []), None)
    for row in rows:
        snapshot = recorded.get(row.id) or facts.for_after_sale(row, shop)
        verdict = engine.evaluate(definition, snapshot)
        result.evaluated += 1
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
