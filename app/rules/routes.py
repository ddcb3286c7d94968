"""Rules pages for supervisors: the list (order, on/off, dry run, hit rate, approved amount), the editor,
a rule's page with its versions and decisions, the shop's automation settings (kill switch, caps,
automatic rejection), the decision log with filters, and the backtest. Every query runs in the
request's shop scope (app/tenancy.py): another shop's rule is not found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from app import audit
from app.auth.access import accessible_shops, supervisor_required
from app.extensions import db
from app.i18n import format_yuan, parse_yuan
from app.labels import after_sale_type, order_status
from app.models import Rule, RuleDecision, RuleSettings, RuleVersion, Shop
from app.rules import backtest, bp, editor, engine, live
from app.web import int_arg

PAGE_SIZE = 100
OUTCOME_LABELS = {
    live.APPROVED: _l("Approved automatically"),
    live.APPROVING: _l("Sent to the platform"),
    live.ESCALATED: _l("Handed to people"),
    live.WOULD_APPROVE: _l("Would have approved"),
    live.WOULD_ACT: _l("Would have acted"),
    live.ACTED: _l("Acted"),
    live.CAPPED: _l("Daily cap reached"),
    live.KILLED: _l("Automation paused"),
    live.NO_MATCH: _l("No match"),
}
OUTCOMES = (
    live.APPROVED, live.APPROVING, live.ESCALATED, live.WOULD_APPROVE, live.WOULD_ACT, live.ACTED, live.CAPPED,
    live.KILLED, live.NO_MATCH,
)


def _stats(rule_ids: list[int]) -> dict[int, dict]:
    """Per rule: decisions, matches (hit rate), approvals and the amount approved."""
    if not rule_ids:
        return {}
    rows = db.session.execute(
        sa.select(
            RuleDecision.rule_id,
            sa.func.count(),
            sa.func.count().filter(RuleDecision.outcome != live.NO_MATCH),
            sa.func.count().filter(RuleDecision.outcome == live.APPROVED),
            sa.func.coalesce(sa.func.sum(RuleDecision.amount_fen).filter(RuleDecision.outcome == live.APPROVED), 0),
            sa.func.count().filter(RuleDecision.outcome == live.WOULD_APPROVE),
            sa.func.coalesce(
                sa.func.sum(RuleDecision.amount_fen).filter(RuleDecision.outcome == live.WOULD_APPROVE), 0
            ),
        )
        .where(RuleDecision.rule_id.in_(rule_ids))
        .group_by(RuleDecision.rule_id)
    ).all()
    stats = {}
    for rule_id, total, matched, approved, amount, would, would_amount in rows:
        stats[rule_id] = {
            "total": total,
            "matched": matched,
            "hit_rate": round(100 * matched / total, 1) if total else None,
            "approved": approved,
            "approved_fen": int(amount),
            "would": would,
            "would_fen": int(would_amount),
        }
    return stats


def _shop_or_404(shop_id: int | None) -> Shop:
    shop = db.session.get(Shop, shop_id) if shop_id else None  # scoped: another shop's is None
    if shop is None or not shop.is_active:
        abort(404)
    return shop


def _form_int(name: str) -> int | None:
    text = (request.form.get(name) or "").strip()
    return int(text) if text.isdigit() and len(text) < 12 else None


def _rule_or_404(rule_id: int) -> Rule:
    rule = db.session.get(Rule, rule_id)
    if rule is None:
        abort(404)
    return rule


# A daily amount cap above this is a typing slip (and would overflow the column): ¥100,000,000.
MAX_DAILY_AMOUNT_FEN = 10_000_000_000

@bp.route("/")
@supervisor_required
def index():
    rules = db.session.scalars(sa.select(Rule).order_by(Rule.shop_id, Rule.position, Rule.id)).all()
    shops = accessible_shops()
    settings = {s.shop_id: s for s in db.session.scalars(sa.select(RuleSettings))}
    by_shop = {shop.id: [r for r in rules if r.shop_id == shop.id] for shop in shops}
    return render_template(
        "rules/index.html",
        shops=shops,
        by_shop=by_shop,
        settings=settings,
        stats=_stats([r.id for r in rules]),
        describe=editor.describe,
        describe_action=editor.describe_action,
        triggers=engine.TRIGGERS,
        format_yuan=format_yuan,
    )


def _editor_context(shop: Shop, draft: editor.Draft, rule: Rule | None) -> dict:
    return {
        "shop": shop,
        "draft": draft,
        "rule": rule,
        "fields": engine.FIELDS,
        "actions": engine.ACTIONS,
        "ops": engine.OPS,
        "triggers": engine.TRIGGERS,
        "value_text": editor.value_text,
        "choice_label": _choice_label,
        "allow_reject": live.settings_for(shop.id).allow_auto_reject,
    }


def _choice_label(field_name: str, value) -> str:
    return after_sale_type(value) if field_name == "after_sale_type" else order_status(value)


def _edit(shop: Shop, rule: Rule | None):
    if request.method == "POST":
        draft = editor.read_form(request.form, allow_auto_reject=live.settings_for(shop.id).allow_auto_reject)
        if request.form.get("backtest"):
            return _render_backtest(shop, draft, rule)
        if draft.problems:
            flash(_("The rule was not saved: fix the rows marked below."), "error")
            return render_template("rules/edit.html", **_editor_context(shop, draft, rule)), 400
        before = rule.version if rule is not None else 0
        if rule is not None:
            # Two supervisors editing one rule: the second save must not undo the first unseen.
            db.session.refresh(rule, with_for_update=True)
            base = request.form.get("base_version", "")
            if base.isdigit() and int(base) != rule.version:
                flash(_("Someone else saved this rule (version %(v)d) after you opened it. Your changes below "
                        "are not saved: open the rule again to see theirs.", v=rule.version), "error")
                db.session.rollback()
                return render_template("rules/edit.html", **_editor_context(shop, draft, rule)), 409
            before = rule.version
        rule = editor.save(rule, shop.id, draft, current_user)
        if rule.version != before:
            audit.record("rules.saved", shop_id=shop.id, subject_kind="rule", subject_id=str(rule.id),
                         details={"version": rule.version, "definition": draft.definition()})
        db.session.commit()
        flash(_("Rule saved (version %(v)d).", v=rule.version), "success")
        return redirect(url_for("rules.detail", rule_id=rule.id))
    draft = editor.from_rule(rule) if rule is not None else editor.Draft()
    return render_template("rules/edit.html", **_editor_context(shop, draft, rule))


@bp.route("/new", methods=["GET", "POST"])
@supervisor_required
def new():
    shop = _shop_or_404(int_arg("shop"))
    return _edit(shop, None)


@bp.route("/<int:rule_id>/edit", methods=["GET", "POST"])
@supervisor_required
def edit(rule_id: int):
    rule = _rule_or_404(rule_id)
    return _edit(_shop_or_404(rule.shop_id), rule)


@bp.route("/<int:rule_id>")
@supervisor_required
def detail(rule_id: int):
    rule = _rule_or_404(rule_id)
    shop = _shop_or_404(rule.shop_id)
    versions = db.session.scalars(
        sa.select(RuleVersion).where(RuleVersion.rule_id == rule.id).order_by(RuleVersion.version.desc())
    ).all()
    recent = db.session.scalars(
        sa.select(RuleDecision).where(RuleDecision.rule_id == rule.id).order_by(RuleDecision.id.desc()).limit(20)
    ).all()
    return render_template(
        "rules/detail.html",
        rule=rule,
        shop=shop,
        versions=versions,
        recent=recent,
        stats=_stats([rule.id]).get(rule.id),
        describe=editor.describe,
        describe_action=editor.describe_action,
        triggers=engine.TRIGGERS,
        format_yuan=format_yuan,
        problems=engine.validate(live.definition_of(rule), allow_auto_reject=True),
    )


@bp.post("/<int:rule_id>/toggle")
@supervisor_required
def toggle(rule_id: int):
    rule = _rule_or_404(rule_id)
    what = request.form.get("what")
    if what == "enabled":
        if not rule.enabled:
            settings = live.settings_for(rule.shop_id)
            problems = engine.validate(live.definition_of(rule), allow_auto_reject=settings.allow_auto_reject)
            if problems:
                flash(_("The rule cannot be switched on: %(why)s", why=problems[0].message), "error")
                return redirect(url_for("rules.detail", rule_id=rule.id))
        rule.enabled = not rule.enabled
    elif what == "dry_run":
        rule.dry_run = not rule.dry_run
    else:
        abort(400)
    audit.record("rules.toggled", shop_id=rule.shop_id, subject_kind="rule", subject_id=str(rule.id),
                 details={"enabled": rule.enabled, "dry_run": rule.dry_run})
    db.session.commit()
    return redirect(request.form.get("next") if request.form.get("next") == url_for("rules.index")
                    else url_for("rules.detail", rule_id=rule.id))


@bp.post("/<int:rule_id>/move")
@supervisor_required
def move(rule_id: int):
    rule = _rule_or_404(rule_id)
    ordered = db.session.scalars(
        sa.select(Rule).where(Rule.shop_id == rule.shop_id).order_by(Rule.position, Rule.id)
    ).all()
    index = ordered.index(rule)
    target = index - 1 if request.form.get("direction") == "up" else index + 1
    if 0 <= target < len(ordered):
        ordered[index], ordered[target] = ordered[target], ordered[index]
    for position, each in enumerate(ordered):
        each.position = position
    audit.record("rules.reordered", shop_id=rule.shop_id, subject_kind="rule", subject_id=str(rule.id),
                 details={"order": [r.id for r in ordered]})
    db.session.commit()
    return redirect(url_for("rules.index"))


@bp.post("/template")
@supervisor_required
def add_template():
    """The default rule, in one click: "refund within 4 hours if not shipped", off and in dry run."""
    shop = _shop_or_404(_form_int("shop_id"))
    template = engine.default_template()
    draft = editor.Draft(name=template["name"], trigger=template["trigger"], conditions=template["conditions"],
                         actions=template["actions"])
    rule = editor.save(None, shop.id, draft, current_user)
    audit.record("rules.saved", shop_id=shop.id, subject_kind="rule", subject_id=str(rule.id),
                 details={"version": rule.version, "template": "refund_within_4h_unshipped"})
    db.session.commit()
    flash(_("Added “%(name)s” in dry run: backtest it, then switch it on.", name=rule.name), "success")
    return redirect(url_for("rules.detail", rule_id=rule.id))


@bp.route("/settings/<int:shop_id>", methods=["GET", "POST"])
@supervisor_required
def settings(shop_id: int):
    shop = _shop_or_404(shop_id)
    row = db.session.scalar(sa.select(RuleSettings).where(RuleSettings.shop_id == shop.id))
    current = row or live.settings_for(shop.id)
    errors: dict[str, str] = {}
    if request.method == "POST":
        count_text = (request.form.get("daily_count_cap") or "").strip()
        amount_text = (request.form.get("daily_amount_cap") or "").strip()
        count = int(count_text) if count_text.isdigit() and len(count_text) <= 6 else None
        if count is None:
            errors["daily_count_cap"] = _("Enter a whole number of 0 or more.")
        try:
            amount = parse_yuan(amount_text)
            if amount < 0 or amount > MAX_DAILY_AMOUNT_FEN:
                raise ValueError(amount_text)
        except ValueError:
            amount = None
            errors["daily_amount_cap"] = _(
                "Enter an amount in yuan up to %(max)s, e.g. 199 or 199.50.", max=format_yuan(MAX_DAILY_AMOUNT_FEN)
            )
        if not errors:
            if row is None:
                row = RuleSettings(shop_id=shop.id)
                db.session.add(row)
            row.paused = bool(request.form.get("paused"))
            row.allow_auto_reject = bool(request.form.get("allow_auto_reject"))
            row.daily_count_cap, row.daily_amount_cap_fen = count, amount
            row.updated_by_id = current_user.id
            audit.record("rules.settings", shop_id=shop.id, subject_kind="shop", subject_id=str(shop.id),
                         details={"paused": row.paused, "allow_auto_reject": row.allow_auto_reject,
                                  "daily_count_cap": count, "daily_amount_cap_fen": amount})
            db.session.commit()
            flash(_("Automation settings saved."), "success")
            return redirect(url_for("rules.settings", shop_id=shop.id))
        flash(_("The settings were not saved: fix the fields marked below."), "error")
    used_count, used_fen = live.used_today(shop)
    status = 400 if errors else 200
    return render_template(
        "rules/settings.html",
        shop=shop,
        current=current,
        errors=errors,
        form=request.form if request.method == "POST" else None,
        used_count=used_count,
        used_fen=used_fen,
        format_yuan=format_yuan,
    ), status


def _date_arg(name: str) -> str:
    text = (request.args.get(name) or "").strip()[:10]
    try:
        datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)  # only checks the format
    except ValueError:
        return ""
    return text


@bp.route("/decisions")
@supervisor_required
def decisions():
    shops = accessible_shops()
    shop_id = int_arg("shop")
    rule_id = int_arg("rule")
    outcome = request.args.get("outcome") if request.args.get("outcome") in OUTCOMES else None
    start, end = _date_arg("from"), _date_arg("to")
    stmt = sa.select(RuleDecision).order_by(RuleDecision.id.desc())
    if shop_id:
        stmt = stmt.where(RuleDecision.shop_id == shop_id)
    if rule_id:
        stmt = stmt.where(RuleDecision.rule_id == rule_id)
    if outcome:
        stmt = stmt.where(RuleDecision.outcome == outcome)
    # Dates are days in each shop's time zone: the range is applied per shop.
    if start or end:
        by_shop = []
        for shop in shops:
            clause = [RuleDecision.shop_id == shop.id]
            if start:
                clause.append(RuleDecision.created_at >= _local_midnight(shop, start))
            if end:
                clause.append(RuleDecision.created_at < _local_midnight(shop, end) + timedelta(days=1))
            by_shop.append(sa.and_(*clause))
        stmt = stmt.where(sa.or_(*by_shop) if by_shop else sa.false())
    rows = db.session.scalars(stmt.limit(PAGE_SIZE)).all()
    rules = db.session.scalars(sa.select(Rule).order_by(Rule.shop_id, Rule.position)).all()
    return render_template(
        "rules/decisions.html",
        rows=rows,
        shops=shops,
        shops_by_id={s.id: s for s in shops},
        rules=rules,
        rules_by_id={r.id: r for r in rules},
        outcomes=OUTCOMES,
        outcome_labels=OUTCOME_LABELS,
        filters={"shop": shop_id, "rule": rule_id, "outcome": outcome, "from": start, "to": end},
        format_yuan=format_yuan,
        page_size=PAGE_SIZE,
    )


def _local_midnight(shop: Shop, day: str) -> datetime:
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=shop.tz).astimezone(UTC)


@bp.route("/decisions/<int:decision_id>")
@supervisor_required
def decision(decision_id: int):
    row = db.session.get(RuleDecision, decision_id)
    if row is None:
        abort(404)
    rule = db.session.get(Rule, row.rule_id) if row.rule_id else None
    version = db.session.scalar(
        sa.select(RuleVersion).where(RuleVersion.rule_id == row.rule_id, RuleVersion.version == row.rule_version)
    ) if row.rule_id else None
    return render_template(
        "rules/decision.html",
        row=row,
        rule=rule,
        version=version,
        shop=_shop_or_404(row.shop_id),
        triggers=engine.TRIGGERS,
        describe=editor.describe,
        format_yuan=format_yuan,
    )


def _render_backtest(shop: Shop, draft: editor.Draft, rule: Rule | None):
    if draft.problems:
        flash(_("Fix the rule before the backtest: see the rows marked below."), "error")
        return render_template("rules/edit.html", **_editor_context(shop, draft, rule)), 400
    form_items = [(k, v) for k in request.form for v in request.form.getlist(k) if k not in ("csrf_token", "backtest")]
    return _backtest_page(shop, draft, rule, form_items)


def _backtest_page(shop: Shop, draft: editor.Draft, rule: Rule | None, form_items: list | None):
    """The backtest of a draft (``form_items``: the edited form, to save it from the page) or of a saved rule."""
    return render_template(
        "rules/backtest.html",
        shop=shop,
        draft=draft,
        rule=rule,
        result=backtest.run(shop, draft.definition(), rule=rule),
        describe=editor.describe,
        describe_action=editor.describe_action,
        format_yuan=format_yuan,
        after_sale_type=after_sale_type,
        form_items=form_items,
    )


@bp.route("/<int:rule_id>/backtest")
@supervisor_required
def backtest_rule(rule_id: int):
    rule = _rule_or_404(rule_id)
    shop = _shop_or_404(rule.shop_id)
    return _backtest_page(shop, editor.from_rule(rule), rule, None)
