"""The live path against the simulator over real HTTP: an after-sale push -> evaluation -> decision ->
acceptapply once; kill switch, dry run, caps (count and amount), duplicate pushes, two workers at once,
retries then escalation to people, the within-N-hours edge end to end."""

from __future__ import annotations

import threading
from datetime import timedelta

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import AfterSale, AuditLog, Order, OutboxCall, OutboxStatus, Shop
from app.rules import engine, live
from tests.rules.conftest import (
    ACCEPT,
    add_rule,
    after_sale_row,
    announce_again,
    decisions,
    request_after_sale,
    set_settings,
)


def ok_calls(desk) -> list:
    return [c for c in desk.calls(ACCEPT) if c[3] == 0]


def test_default_rule_refunds_an_unshipped_order_once(app, rules_shop):
    rule_id = add_rule(app, rules_shop.shop_id)
    pk = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    rules_shop.drain()
    assert len(rules_shop.calls(ACCEPT)) == 1
    [decision] = decisions(app, rule_id=rule_id)
    assert decision.outcome == "approved" and decision.amount_fen == 19900 and decision.rule_version == 1
    assert decision.platform_response["result"] == "succeeded"
    assert decision.inputs["hours_since_paid"] is not None and decision.trace["matched"] is True
    assert after_sale_row(app, pk).status == "MERCHANT_REFUND_SUCCESS"
    with app.app_context():
        trail = db.session.execute(sa.select(AuditLog.action, AuditLog.user_id).order_by(AuditLog.id)).all()
        actor = live.rule_actor()
        assert ("after_sale.approve_refund", actor.id) in [tuple(t) for t in trail], "audited as the rule actor"
        assert actor.is_active is False, "the rule actor cannot sign in"
        db.session.remove()


def test_ineligible_cases_are_not_approved(app, rules_shop):
    add_rule(app, rules_shop.shop_id)
    shipped = rules_shop.order()
    rules_shop.platform.ship_order(rules_shop.sim_shop, shipped)
    rules_shop.fetch_order(shipped)
    returned = request_after_sale(rules_shop, rules_shop.order(), "RETURN")
    shipped_pk = request_after_sale(rules_shop, shipped, "REFUND")
    rules_shop.drain()
    assert rules_shop.calls(ACCEPT) == []
    outcomes = {d.subject_id: d.outcome for d in decisions(app)}
    assert outcomes == {str(returned): "no_match", str(shipped_pk): "no_match"}


def _shift_payment(app, shop_id: int, order_id: str, before_request: timedelta, after_sale_pk: int) -> None:
    """Make the order paid ``before_request`` before the buyer asked (stored times, as the platform gave)."""
    with app.app_context():
        after_sale = db.session.get(AfterSale, after_sale_pk)
        order = db.session.scalar(sa.select(Order).where(Order.shop_id == shop_id, Order.order_id == order_id))
        order.paid_at = after_sale.platform_created_at - before_request
        order.platform_created_at = order.paid_at - timedelta(minutes=2)
        db.session.commit()
        db.session.remove()


def test_within_4_hours_end_to_end_at_n_minus_and_n_plus_one_minute(app, rules_shop):
    add_rule(app, rules_shop.shop_id)
    # A shop far from Shanghai: "within 4 hours" is still 4 hours of real time.
    with app.app_context():
        db.session.get(Shop, rules_shop.shop_id).timezone = "America/Los_Angeles"
        db.session.commit()
        db.session.remove()
    early, late = rules_shop.order(), rules_shop.order()
    early_record = rules_shop.platform.open_after_sale(rules_shop.sim_shop, early, "REFUND")
    late_record = rules_shop.platform.open_after_sale(rules_shop.sim_shop, late, "REFUND")
    early_pk = rules_shop.fetch_after_sale(early_record["after_sale_order_id"])
    late_pk = rules_shop.fetch_after_sale(late_record["after_sale_order_id"])
    _shift_payment(app, rules_shop.shop_id, early, timedelta(hours=4) - timedelta(minutes=1), early_pk)
    _shift_payment(app, rules_shop.shop_id, late, timedelta(hours=4) + timedelta(minutes=1), late_pk)
    announce_again(app, rules_shop.shop_id, early_pk)
    announce_again(app, rules_shop.shop_id, late_pk)
    rules_shop.drain()
    assert [c[2]["after_sale_order_id"] for c in ok_calls(rules_shop)] == [early_record["after_sale_order_id"]]
    outcomes = {d.subject_id: (d.outcome, d.inputs["hours_since_paid"]) for d in decisions(app)}
    assert outcomes[str(early_pk)] == ("approved", round(4 - 1 / 60, 6))
    assert outcomes[str(late_pk)] == ("no_match", round(4 + 1 / 60, 6))


def test_duplicate_pushes_decide_and_call_once(app, rules_shop):
    add_rule(app, rules_shop.shop_id)
    pk = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    for _ in range(3):
        announce_again(app, rules_shop.shop_id, pk)
    rules_shop.drain()
    announce_again(app, rules_shop.shop_id, pk, created=False)  # late re-delivery of the old status
    rules_shop.drain()
    assert len(rules_shop.calls(ACCEPT)) == 1
    assert [d.outcome for d in decisions(app)] == ["approved"]
    with app.app_context():
        evaluations = db.session.scalar(
            sa.select(sa.func.count()).select_from(OutboxCall).where(OutboxCall.operation == live.OPERATION)
        )
        db.session.remove()
    assert evaluations == 1


def test_two_workers_evaluating_the_same_case_at_once_approve_once(app, rules_shop):
    rule_id = add_rule(app, rules_shop.shop_id)
    add_rule(app, rules_shop.shop_id, {**engine.default_template(), "trigger": "aftersale.updated"}, position=1)
    record = rules_shop.platform.open_after_sale(rules_shop.sim_shop, rules_shop.order(), "REFUND")
    pk = rules_shop.fetch_after_sale(record["after_sale_order_id"])
    barrier = threading.Barrier(4)
    errors = []

    def worker():
        with app.app_context():
            try:
                shop = db.session.get(Shop, rules_shop.shop_id)
                db.session.commit()
                barrier.wait()
                live.evaluate_subject(shop, "aftersale.created", "after_sale", str(pk))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    rules_shop.drain()
    assert len(rules_shop.calls(ACCEPT)) == 1
    assert [(d.rule_id, d.outcome) for d in decisions(app)] == [(rule_id, "approved")]


def test_dry_run_logs_would_approve_and_calls_nothing(app, rules_shop):
    add_rule(app, rules_shop.shop_id, dry_run=True)
    pk = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    rules_shop.drain()
    assert rules_shop.calls(ACCEPT) == []
    [decision] = decisions(app)
    assert (decision.outcome, decision.dry_run, decision.amount_fen) == ("would_approve", True, 19900)
    assert after_sale_row(app, pk).status == "MERCHANT_PROCESSING"


def test_kill_switch_stops_every_rule_and_hands_cases_to_people(app, rules_shop):
    add_rule(app, rules_shop.shop_id)
    set_settings(app, rules_shop.shop_id, paused=True)
    pk = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    rules_shop.drain()
    assert rules_shop.calls(ACCEPT) == []
    assert [d.outcome for d in decisions(app)] == ["killed"]
    assert "暂停" in after_sale_row(app, pk).human_note


def test_daily_count_cap(app, rules_shop):
    add_rule(app, rules_shop.shop_id)
    set_settings(app, rules_shop.shop_id, daily_count_cap=2)
    pks = [request_after_sale(rules_shop, rules_shop.order(), "REFUND") for _ in range(3)]
    rules_shop.drain()
    assert len(ok_calls(rules_shop)) == 2
    outcomes = [d.outcome for d in decisions(app)]
    assert sorted(outcomes) == ["approved", "approved", "capped"]
    capped = next(d for d in decisions(app) if d.outcome == "capped")
    assert "上限" in after_sale_row(app, int(capped.subject_id)).human_note
    assert len(pks) == 3 and str(pks[-1]) == capped.subject_id, "the third of the day is held back"


def test_daily_amount_cap(app, rules_shop):
    add_rule(app, rules_shop.shop_id)
    set_settings(app, rules_shop.shop_id, daily_amount_cap_fen=19900 * 2 - 1)
    for _ in range(2):
        request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    rules_shop.drain()
    assert len(ok_calls(rules_shop)) == 1
    assert sorted(d.outcome for d in decisions(app)) == ["approved", "capped"]


def test_caps_hold_under_concurrent_workers(app, rules_shop):
    add_rule(app, rules_shop.shop_id)
    set_settings(app, rules_shop.shop_id, daily_count_cap=3)
    pks = []
    for _ in range(8):
        record = rules_shop.platform.open_after_sale(rules_shop.sim_shop, rules_shop.order(), "REFUND")
        pks.append(rules_shop.fetch_after_sale(record["after_sale_order_id"]))
    barrier = threading.Barrier(len(pks))
    errors = []

    def worker(pk):
        with app.app_context():
            try:
                shop = db.session.get(Shop, rules_shop.shop_id)
                db.session.commit()
                barrier.wait()
                live.evaluate_subject(shop, "aftersale.created", "after_sale", str(pk))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(pk,)) for pk in pks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    rules_shop.drain()
    outcomes = sorted(d.outcome for d in decisions(app))
    assert outcomes == ["approved"] * 3 + ["capped"] * 5
    assert len(ok_calls(rules_shop)) == 3


def test_a_failing_platform_is_retried_then_the_case_goes_to_people(app, rules_shop, login):
    add_rule(app, rules_shop.shop_id)
    rules_shop.sim_shop.faults.update(api_errors={ACCEPT: -1})
    pk = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    for _ in range(app.config["OUTBOX_MAX_ATTEMPTS"] + 1):
        rules_shop.drain(rounds=2)
        with app.app_context():  # skip the backoff's wait, not the attempt
            db.session.execute(
                sa.update(OutboxCall).where(OutboxCall.status == OutboxStatus.PENDING).values(next_attempt_at=utcnow())
            )
            db.session.commit()
            db.session.remove()
    with app.app_context():
        call = db.session.scalar(sa.select(OutboxCall).where(OutboxCall.operation == "aftersale.action"))
        assert call.status == OutboxStatus.FAILED and call.attempts == app.config["OUTBOX_MAX_ATTEMPTS"]
        db.session.remove()
    assert ok_calls(rules_shop) == [] and len(rules_shop.calls(ACCEPT)) >= app.config["OUTBOX_MAX_ATTEMPTS"]
    [decision] = decisions(app)
    assert decision.outcome == "escalated" and decision.platform_response["result"] == "failed"
    assert "unavailable" in decision.error
    note = after_sale_row(app, pk).human_note
    assert note and "自动审批失败" in note
    queue = login("li").get("/after-sales/").get_data(as_text=True)
    assert "data-human-note" in queue and "自动审批失败" in queue, "the queue shows why people must act"


def test_a_lost_signal_is_found_by_the_sweep(app, rules_shop):
    add_rule(app, rules_shop.shop_id)
    record = rules_shop.platform.open_after_sale(rules_shop.sim_shop, rules_shop.order(), "REFUND")
    rules_shop.fetch_after_sale(record["after_sale_order_id"])  # stored, but the process died before the signal
    with app.app_context():
        assert live.sweep() == 1
        assert live.sweep() == 0, "queued once"
        db.session.remove()
    rules_shop.drain()
    assert len(ok_calls(rules_shop)) == 1


def test_first_matching_rule_wins_in_position_order(app, rules_shop):
    vip = {"trigger": "aftersale.created", "conditions": [{"field": "buyer_tag", "op": "has", "value": "vip"}],
           "actions": [{"kind": "route_to_human", "text": "VIP：请主管亲自处理"}]}
    first = add_rule(app, rules_shop.shop_id, vip, position=0, name="vip")
    second = add_rule(app, rules_shop.shop_id, position=1)
    pk = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    rules_shop.drain()
    assert [(d.rule_id, d.outcome) for d in decisions(app)] == [(first, "no_match"), (second, "approved")]
    assert after_sale_row(app, pk).human_note is None


def test_the_scheduler_runs_the_sweep(app, rules_shop):
    from apscheduler.schedulers.background import BackgroundScheduler

    from app import scheduler as jobs

    add_rule(app, rules_shop.shop_id)
    record = rules_shop.platform.open_after_sale(rules_shop.sim_shop, rules_shop.order(), "REFUND")
    rules_shop.fetch_after_sale(record["after_sale_order_id"])
    sched = jobs.configure(app, BackgroundScheduler(timezone="UTC", job_defaults=jobs.JOB_DEFAULTS))
    assert sched.get_job("rules:sweep").trigger.interval.total_seconds() == 30
    jobs.rules_sweep_job()
    with app.app_context():
        queued = db.session.scalar(
            sa.select(sa.func.count()).select_from(OutboxCall).where(OutboxCall.operation == live.OPERATION)
        )
        db.session.remove()
    assert queued == 1


def test_decisions_name_the_rule_version_they_were_made_with(app, rules_shop):
    from app.models import Rule, User
    from app.rules import editor

    rule_id = add_rule(app, rules_shop.shop_id, dry_run=True)
    first = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    rules_shop.drain()
    with app.app_context():
        rule = db.session.get(Rule, rule_id)
        draft = editor.from_rule(rule)
        draft.conditions[1] = {"field": "hours_since_paid", "op": "lte", "value": 2}
        editor.save(rule, rules_shop.shop_id, draft, db.session.scalar(sa.select(User).limit(1)))
        db.session.commit()
        db.session.remove()
    second = request_after_sale(rules_shop, rules_shop.order(), "REFUND")
    rules_shop.drain()
    versions = {int(d.subject_id): (d.rule_version, d.outcome) for d in decisions(app, rule_id=rule_id)}
    assert versions == {first: (1, "would_approve"), second: (2, "would_approve")}
    [latest] = [d for d in decisions(app, rule_id=rule_id) if int(d.subject_id) == second]
    assert latest.trace["conditions"][1]["value"] == 2


def test_the_sweep_uses_the_live_key_and_reaches_rows_behind_skipped_ones(app, rules_shop):
    add_rule(app, rules_shop.shop_id)  # the default rule: aftersale.created only
    pks = []
    for _ in range(3):
        record = rules_shop.platform.open_after_sale(rules_shop.sim_shop, rules_shop.order(), "REFUND")
        pks.append(rules_shop.fetch_after_sale(record["after_sale_order_id"]))
    with app.app_context():
        # The first two were evaluated before in another state: for them the trigger is "updated",
        # which no rule has; they are skipped, and must not hide the third (page of one row).
        for pk in pks[:2]:
            live.enqueue_evaluation(rules_shop.shop_id, "aftersale.created", "after_sale", str(pk), "old:state", None)
        assert live.sweep(page=1) == 1
        keys = set(db.session.scalars(sa.select(OutboxCall.idempotency_key)
                                      .where(OutboxCall.operation == live.OPERATION)))
        row = db.session.get(AfterSale, pks[2])
        assert live.evaluation_key("after_sale", str(pks[2]), live.after_sale_state(row)) in keys
        assert live.sweep(page=1) == 0, "the live key: found, not queued again"
        db.session.remove()
