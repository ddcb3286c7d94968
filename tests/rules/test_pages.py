"""The supervisors' pages: the editor (rows, validation with clear errors, versions), switching on and
off, dry run, order, the one-click default rule, the kill switch and caps, the decision log and its
filters, the backtest; and that one shop's supervisor can neither see nor change another shop's rules."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import Rule, RuleDecision, RuleSettings, RuleVersion, User


@pytest.fixture(autouse=True)
def english(app, world):
    """The supervisors read English here, so the messages below are the source strings."""
    with app.app_context():
        db.session.execute(sa.update(User).values(language="en"))
        db.session.commit()
        db.session.remove()


def rule_row(app, rule_id: int) -> Rule:
    with app.app_context():
        row = db.session.get(Rule, rule_id)
        db.session.expunge(row)
        db.session.remove()
    return row


def versions(app, rule_id: int) -> list[int]:
    with app.app_context():
        found = db.session.scalars(
            sa.select(RuleVersion.version).where(RuleVersion.rule_id == rule_id).order_by(RuleVersion.version)
        ).all()
        db.session.remove()
    return list(found)


FORM = {
    "name": "小额退款自动同意",
    "trigger": "aftersale.created",
    "c-0-field": "after_sale_type",
    "c-0-op": "in",
    "c-0-choice-after_sale_type": "REFUND",
    "c-1-field": "hours_since_paid",
    "c-1-op": "lte",
    "c-1-value": "4",
    "c-2-field": "refund_amount_fen",
    "c-2-op": "lte",
    "c-2-value": "299.50",
    "c-3-field": "sku",
    "c-3-op": "not_in",
    "c-3-value": "SKU-1, SKU-2，SKU-3",
    "c-4-field": "shop_hours",
    "c-4-op": "inside",
    "c-4-start": "09:00",
    "c-4-end": "22:00",
    "c-9-field": "",  # a blank row is ignored
    "a-0-kind": "approve_refund",
    "a-1-kind": "tag_buyer",
    "a-1-text": "自动退款",
}


def test_a_rule_is_built_from_rows_and_every_change_is_a_version(app, world, login):
    client = login("supervisor_a")
    answer = client.post(f"/rules/new?shop={world.a.shop_id}", data=FORM)
    assert answer.status_code == 302
    with app.app_context():
        rule = db.session.scalar(sa.select(Rule).where(Rule.name == "小额退款自动同意"))
        rule_id = rule.id
        assert (rule.enabled, rule.dry_run, rule.version) == (False, True, 1), "new rules start off, in dry run"
        assert rule.conditions == [
            {"field": "after_sale_type", "op": "in", "value": ["REFUND"]},
            {"field": "hours_since_paid", "op": "lte", "value": 4},
            {"field": "refund_amount_fen", "op": "lte", "value": 29950},
            {"field": "sku", "op": "not_in", "value": ["SKU-1", "SKU-2", "SKU-3"]},
            {"field": "shop_hours", "op": "inside", "value": {"start": "09:00", "end": "22:00"}},
        ]
        assert rule.actions == [{"kind": "approve_refund"}, {"kind": "tag_buyer", "tag": "自动退款"}]
        db.session.remove()
    page = client.get(f"/rules/{rule_id}/edit").get_data(as_text=True)
    assert 'value="299.50"' in page and "SKU-1, SKU-2, SKU-3" in page, "stored values shown as typed (yuan)"
    assert client.post(f"/rules/{rule_id}/edit", data={**FORM, "c-1-value": "2"}).status_code == 302
    assert client.post(f"/rules/{rule_id}/edit", data={**FORM, "c-1-value": "2"}).status_code == 302
    assert versions(app, rule_id) == [1, 2], "an unchanged save is not a new version"
    detail = client.get(f"/rules/{rule_id}").get_data(as_text=True)
    assert 'data-version="2"' in detail and 'data-version="1"' in detail


def test_a_save_over_someone_elses_newer_version_is_refused_and_keeps_both(app, world, login):
    first, second = login("supervisor_a"), login("supervisor_a")
    assert first.post(f"/rules/new?shop={world.a.shop_id}", data=FORM).status_code == 302
    rule_id = rule_row(app, db_rule_id(app)).id
    assert 'name="base_version" value="1"' in second.get(f"/rules/{rule_id}/edit").get_data(as_text=True)
    assert first.post(f"/rules/{rule_id}/edit", data={**FORM, "base_version": "1", "c-1-value": "2"}).status_code == 302
    refused = second.post(f"/rules/{rule_id}/edit", data={**FORM, "base_version": "1", "c-1-value": "8"})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 409 and "Someone else saved this rule (version 2)" in page
    assert 'value="8"' in page, "the refused edit stays on the form"
    assert versions(app, rule_id) == [1, 2]
    assert rule_row(app, rule_id).conditions[1]["value"] == 2, "the first save stands"


def db_rule_id(app) -> int:
    with app.app_context():
        found = db.session.scalar(sa.select(Rule.id).where(Rule.name == "小额退款自动同意"))
        db.session.remove()
    return found


def test_invalid_rows_are_refused_with_their_reasons_and_nothing_is_saved(app, world, login):
    client = login("supervisor_a")
    bad = {
        **FORM,
        "c-1-value": "四小时",
        "c-2-value": "12,5",
        "c-4-start": "9点",
        "a-2-kind": "reject",
        "a-2-reason": "1",
    }
    answer = client.post(f"/rules/new?shop={world.a.shop_id}", data=bad)
    assert answer.status_code == 400
    html = answer.get_data(as_text=True)
    for message in ("Enter a number of 0 or more.", "Times are HH:MM", "does not allow rules to reject"):
        assert message in html or message.replace("'", "&#39;") in html, message
    assert "Enter an amount in yuan" in html
    assert 'value="四小时"' in html, "what was typed is kept"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Rule).where(Rule.name == FORM["name"])) == 0
        db.session.remove()
    empty = client.post(f"/rules/new?shop={world.a.shop_id}", data={"name": "", "trigger": "aftersale.created"})
    assert empty.status_code == 400
    assert "Give the rule a name." in empty.get_data(as_text=True)
    assert "Add at least one action." in empty.get_data(as_text=True)


def test_rejecting_is_possible_only_once_the_shop_allows_it(app, world, login):
    client = login("supervisor_a")
    reject = {"name": "超时拒绝", "trigger": "aftersale.created", "a-0-kind": "reject", "a-0-reason": "2",
              "a-0-text": "超过售后期"}
    assert client.post(f"/rules/new?shop={world.a.shop_id}", data=reject).status_code == 400
    answer = client.post(f"/rules/settings/{world.a.shop_id}",
                         data={"daily_count_cap": "50", "daily_amount_cap": "5000", "allow_auto_reject": "1"})
    assert answer.status_code == 302
    assert client.post(f"/rules/new?shop={world.a.shop_id}", data=reject).status_code == 302


def test_switching_on_dry_run_and_order(app, world, login):
    client = login("supervisor_a")
    first = client.post("/rules/template", data={"shop_id": world.a.shop_id})
    assert first.status_code == 302
    with app.app_context():
        ids = db.session.scalars(
            sa.select(Rule.id).where(Rule.shop_id == world.a.shop_id).order_by(Rule.position, Rule.id)
        ).all()
        db.session.remove()
    assert len(ids) == 2  # the world's rule and the template
    template_id = ids[-1]
    template = rule_row(app, template_id)
    assert template.name == "4小时内未发货自动退款" and (template.enabled, template.dry_run) == (False, True)
    client.post(f"/rules/{template_id}/toggle", data={"what": "enabled"})
    client.post(f"/rules/{template_id}/toggle", data={"what": "dry_run"})
    assert (rule_row(app, template_id).enabled, rule_row(app, template_id).dry_run) == (True, False)
    client.post(f"/rules/{template_id}/move", data={"direction": "up"})
    assert rule_row(app, template_id).position == 0 and rule_row(app, ids[0]).position == 1
    client.post(f"/rules/{template_id}/move", data={"direction": "up"})  # already first: nothing moves
    assert rule_row(app, template_id).position == 0
    page = client.get("/rules/").get_data(as_text=True)
    assert page.index(f'data-rule-row="{template_id}"') < page.index(f'data-rule-row="{ids[0]}"')


def test_a_rule_that_is_not_valid_cannot_be_switched_on(app, world, login):
    with app.app_context():
        rule = db.session.get(Rule, world.a.rule_id)
        rule.conditions = [{"field": "hours_since_paid", "op": "<=", "value": 4}]  # an old, unknown operator
        db.session.commit()
        db.session.remove()
    client = login("supervisor_a")
    client.post(f"/rules/{world.a.rule_id}/toggle", data={"what": "enabled"})
    assert rule_row(app, world.a.rule_id).enabled is False
    assert "Choose how to compare." in client.get(f"/rules/{world.a.rule_id}").get_data(as_text=True)


def test_settings_read_yuan_and_refuse_junk(app, world, login):
    client = login("supervisor_a")
    answer = client.post(f"/rules/settings/{world.a.shop_id}",
                         data={"daily_count_cap": "30", "daily_amount_cap": "1,500.50", "paused": "1"})
    assert answer.status_code == 302
    with app.app_context():
        row = db.session.scalar(sa.select(RuleSettings).where(RuleSettings.shop_id == world.a.shop_id))
        assert (row.daily_count_cap, row.daily_amount_cap_fen, row.paused, row.allow_auto_reject) == (
            30, 150050, True, False)
        db.session.remove()
    bad = client.post(f"/rules/settings/{world.a.shop_id}", data={"daily_count_cap": "-1", "daily_amount_cap": "x"})
    assert bad.status_code == 400
    html = bad.get_data(as_text=True)
    assert "Enter a whole number of 0 or more." in html and "Enter an amount in yuan" in html
    assert "data-paused" in client.get("/rules/").get_data(as_text=True), "the list shows the kill switch"


def _decision(app, shop_id, rule_id, outcome, subject, amount=None, **extra):
    with app.app_context():
        db.session.add(RuleDecision(
            shop_id=shop_id, rule_id=rule_id, rule_version=1, trigger="aftersale.created", subject_kind="after_sale",
            subject_id=subject, idempotency_key=f"{rule_id}:{subject}:{outcome}", outcome=outcome, amount_fen=amount,
            inputs={"after_sale_order_id": f"AS-{subject}", "hours_since_paid": 1.5},
            trace={"matched": outcome != "no_match", "conditions": [
                {"field": "hours_since_paid", "op": "lte", "value": 4, "fact": 1.5, "ok": True}]},
            **extra,
        ))
        db.session.commit()
        db.session.remove()


def test_decision_log_filters_and_shows_the_inputs(app, world, login):
    _decision(
        app, world.a.shop_id, world.a.rule_id, "approved", "901", 12900, platform_response={"result": "succeeded"}
    )
    _decision(app, world.a.shop_id, world.a.rule_id, "no_match", "902")
    _decision(app, world.a.shop_id, world.a.rule_id, "escalated", "903", 500, error="unavailable: system busy",
              created_at=utcnow().replace(year=2025))
    client = login("supervisor_a")
    everything = client.get("/rules/decisions").get_data(as_text=True)
    assert all(f"AS-{n}" in everything for n in (901, 902, 903))
    approved = client.get("/rules/decisions?outcome=approved").get_data(as_text=True)
    assert "AS-901" in approved and "AS-902" not in approved
    today = utcnow().astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()  # the shop's day
    recent = client.get(f"/rules/decisions?from=2026-01-01&to={today}").get_data(as_text=True)
    assert "AS-901" in recent and "AS-903" not in recent
    by_rule = client.get(f"/rules/decisions?rule={world.a.rule_id}&shop={world.a.shop_id}").get_data(as_text=True)
    assert "AS-901" in by_rule
    assert "AS-901" not in client.get("/rules/decisions?rule=999999").get_data(as_text=True)
    with app.app_context():
        decision_id = db.session.scalar(sa.select(RuleDecision.id).where(RuleDecision.subject_id == "901"))
        db.session.remove()
    detail = client.get(f"/rules/decisions/{decision_id}").get_data(as_text=True)
    assert "data-inputs" in detail and "hours_since_paid" in detail and "succeeded" in detail
    rule_page = client.get(f"/rules/{world.a.rule_id}").get_data(as_text=True)
    # Hit rate: 2 of the 4 decisions matched (the world's own dry-run decision, 901 and 903 matched).
    assert "data-hit-rate>75.0%" in rule_page and "¥129.00" in rule_page


def test_backtest_of_a_rule_as_edited(app, world, login):
    client = login("supervisor_a")
    form = {"name": "默认", "trigger": "aftersale.created", "c-0-field": "hours_since_paid", "c-0-op": "lte",
            "c-0-value": "4", "c-1-field": "order_status", "c-1-op": "in", "c-1-choice-order_status": "20",
            "a-0-kind": "approve_refund", "backtest": "1"}
    html = client.post(f"/rules/new?shop={world.a.shop_id}", data=form).get_data(as_text=True)
    assert "data-matched>1<" in html and "¥129.00" in html and world.a.after_sale_order_id in html
    assert world.b.after_sale_order_id not in html
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Rule).where(Rule.name == "默认")) == 0
        db.session.remove()
    strict = client.post(f"/rules/new?shop={world.a.shop_id}", data={**form, "c-0-value": "0.5"})
    assert "data-matched>0<" in strict.get_data(as_text=True), "paid 59 minutes before: not within 0.5 h"
    saved = client.get(f"/rules/{world.a.rule_id}/backtest").get_data(as_text=True)
    assert "data-evaluated>1<" in saved


def test_another_shops_rules_are_not_found(app, world, login):
    client = login("supervisor_a")
    theirs = world.b.rule_id
    for path in (f"/rules/{theirs}", f"/rules/{theirs}/edit", f"/rules/{theirs}/backtest"):
        assert client.get(path).status_code == 404, path
    for path, data in ((f"/rules/{theirs}/toggle", {"what": "enabled"}), (f"/rules/{theirs}/move", {"direction": "up"}),
                       (f"/rules/{theirs}/edit", FORM), ("/rules/template", {"shop_id": world.b.shop_id}),
                       (f"/rules/new?shop={world.b.shop_id}", FORM)):
        assert client.post(path, data=data).status_code == 404, path
    assert rule_row(app, theirs).enabled is False and rule_row(app, theirs).version == 1
    _decision(app, world.b.shop_id, theirs, "approved", "777", 100)
    with app.app_context():
        decision_id = db.session.scalar(sa.select(RuleDecision.id).where(RuleDecision.subject_id == "777"))
        db.session.remove()
    assert client.get(f"/rules/decisions/{decision_id}").status_code == 404
    assert "AS-777" not in client.get(f"/rules/decisions?shop={world.b.shop_id}").get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(
            sa.select(sa.func.count()).select_from(Rule).where(Rule.shop_id == world.b.shop_id)) == 1
        db.session.remove()


def test_agents_cannot_open_the_rules(world, login):
    client = login("agent_a")
    assert client.get("/rules/").status_code == 403
    assert client.get(f"/rules/{world.a.rule_id}").status_code == 403
    assert client.post(f"/rules/{world.a.rule_id}/toggle", data={"what": "enabled"}).status_code == 403


def test_too_many_rows_are_refused_never_dropped(app, world, login):
    """A dropped condition would save a broader rule than the one typed: refuse the form instead."""
    client = login("supervisor_a")
    rows = {f"c-{n}-field": "hours_since_paid" for n in range(10, 32)}
    rows.update({f"c-{n}-op": "lte" for n in range(10, 32)} | {f"c-{n}-value": "4" for n in range(10, 32)})
    rows["c-5000-field"] = "refund_amount_fen"  # row numbers beyond three digits count too
    answer = client.post(f"/rules/new?shop={world.a.shop_id}", data={**FORM, **rows})
    assert answer.status_code == 400 and "At most 20 rows" in answer.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Rule).where(Rule.name == FORM["name"])) == 0
        db.session.remove()


def test_an_absurd_daily_amount_cap_is_refused_not_a_500(app, world, login):
    client = login("supervisor_a")
    answer = client.post(
        f"/rules/settings/{world.a.shop_id}", data={"daily_count_cap": "30", "daily_amount_cap": "999999999999999"}
    )
    assert answer.status_code == 400 and "Enter an amount in yuan up to" in answer.get_data(as_text=True)
