"""Automation rules per shop (read view; the editor arrives with the rule engine)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template

from app.auth.access import accessible_shops, supervisor_required
from app.extensions import db
from app.models import Rule, RuleDecision
from app.rules import bp


@bp.route("/")
@supervisor_required
def index():
    rules = db.session.scalars(sa.select(Rule).order_by(Rule.shop_id, Rule.trigger, Rule.position, Rule.id)).all()
    counts = dict(
        db.session.execute(sa.select(RuleDecision.rule_id, sa.func.count()).group_by(RuleDecision.rule_id)).all()
    )
    shops = accessible_shops()
    return render_template("rules/index.html", rules=rules, counts=counts, shops_by_id={s.id: s for s in shops})
