"""The engine alone: every field and operator, validation with clear problems, the within-N-hours edge
(N-1 and N+1 minutes, compared in UTC) and shop hours in the shop's own time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.rules import engine

PAID = datetime(2026, 12, 1, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai: the local day changes meanwhile


def facts(**over) -> dict:
    base = {
        "after_sale_type": "REFUND",
        "order_status": 20,
        "refund_amount_fen": 19900,
        "hours_since_paid": 1.0,
        "hours_since_created": 1.2,
        "skus": ["20000101"],
        "products": ["10000101"],
        "buyer_after_sales_30d": 0,
        "buyer_tags": ["vip"],
        "event_time": "2026-12-01T02:00:00+00:00",  # 10:00 in Shanghai
        "shop_timezone": "Asia/Shanghai",
        "message_text": "我想退款",
    }
    return {**base, **over}


def rule(*conditions, trigger="aftersale.created", actions=({"kind": "approve_refund"},)) -> dict:
    return {"trigger": trigger, "conditions": [dict(c) for c in conditions], "actions": [dict(a) for a in actions]}


def cond(field, op, value):
    return {"field": field, "op": op, "value": value}


def matches(condition, trigger="aftersale.created", **over) -> bool:
    definition = rule(condition, trigger=trigger, actions=({"kind": "tag_buyer", "tag": "x"},))
    assert engine.validate(definition) == [], engine.validate(definition)
    return engine.evaluate(definition, facts(**over)).matched


@pytest.mark.parametrize(
    ("minutes", "expected"), [(4 * 60 - 1, True), (4 * 60, True), (4 * 60 + 1, False)]
)
def test_within_4_hours_of_payment_is_exact_to_the_minute(minutes, expected):
    # The request time minus the pay time, both UTC: 15:30 UTC + 4 h crosses midnight in Shanghai.
    requested = PAID + timedelta(minutes=minutes)
    definition = engine.default_template()
    snapshot = facts(hours_since_paid=round((requested - PAID).total_seconds() / 3600, 6),
                     event_time=requested.isoformat())
    verdict = engine.evaluate(definition, snapshot)
    assert verdict.matched is expected
    assert [c["ok"] for c in verdict.trace][1] is expected
    assert verdict.actions == ([{"kind": "approve_refund"}] if expected else [])


@pytest.mark.parametrize(
    ("op", "value", "fact", "expected"),
    [
        ("lte", 4, 4.0, True), ("lte", 4, 4.01, False), ("lt", 4, 4.0, False), ("lt", 4, 3.99, True),
        ("gte", 2, 2.0, True), ("gte", 2, 1.99, False), ("gt", 2, 2.0, False), ("gt", 2, 2.01, True),
        ("eq", 3, 3, True), ("eq", 3, 2, False),
    ],
)
def test_number_operators(op, value, fact, expected):
    assert matches(cond("hours_since_paid", op, value), hours_since_paid=fact) is expected
    assert matches(cond("hours_since_created", op, value), hours_since_created=fact) is expected
    assert matches(cond("buyer_after_sales_30d", op, value), buyer_after_sales_30d=fact) is expected


def test_a_missing_fact_never_matches():
    assert matches(cond("hours_since_paid", "lte", 4), hours_since_paid=None) is False
    assert matches(cond("hours_since_paid", "gte", 0), hours_since_paid=None) is False


def test_money_in_fen():
    assert matches(cond("refund_amount_fen", "lte", 19900)) is True
    assert matches(cond("refund_amount_fen", "lte", 19899)) is False
    problems = engine.validate(rule(cond("refund_amount_fen", "lte", 199.5)))
    assert [p.message for p in problems] == ["Amounts are whole fen."]


def test_choice_and_list_fields():
    assert matches(cond("after_sale_type", "in", ["REFUND"])) is True
    assert matches(cond("after_sale_type", "in", ["RETURN", "EXCHANGE"])) is False
    assert matches(cond("after_sale_type", "not_in", ["RETURN"])) is True
    assert matches(cond("order_status", "in", [20])) is True
    assert matches(cond("order_status", "in", [20]), order_status=30) is False
    assert matches(cond("order_status", "not_in", [30, 100])) is True
    assert matches(cond("sku", "in", ["20000101", "x"])) is True
    assert matches(cond("sku", "not_in", ["20000101"])) is False
    assert matches(cond("product", "in", ["999"])) is False
    assert matches(cond("product", "not_in", ["999"])) is True


def test_buyer_tags_and_message_text():
    assert matches(cond("buyer_tag", "has", "vip")) is True
    assert matches(cond("buyer_tag", "has_not", "vip")) is False
    assert matches(cond("buyer_tag", "has", "blacklist"), buyer_tags=[]) is False
    assert matches(cond("message_text", "contains", "退款"), trigger="message.received") is True
    assert matches(cond("message_text", "not_contains", "退款"), trigger="message.received") is False


def test_shop_hours_use_the_shop_time_zone_and_may_span_midnight():
    hours = {"start": "09:00", "end": "18:00"}
    # 02:00 UTC: 10:00 in Shanghai (inside), 03:00 in Berlin (outside), 21:00 the day before in New York.
    assert matches(cond("shop_hours", "inside", hours)) is True
    assert matches(cond("shop_hours", "inside", hours), shop_timezone="Europe/Berlin") is False
    assert matches(cond("shop_hours", "outside", hours), shop_timezone="America/New_York") is True
    night = {"start": "20:00", "end": "02:00"}
    assert matches(cond("shop_hours", "inside", night), shop_timezone="America/New_York") is True
    assert matches(cond("shop_hours", "inside", night)) is False
    # The minute the shop opens counts; the minute it closes does not.
    assert engine.within_hours("2026-12-01T01:00:00+00:00", "Asia/Shanghai", "09:00", "18:00") is True
    assert engine.within_hours("2026-12-01T10:00:00+00:00", "Asia/Shanghai", "09:00", "18:00") is False


def test_every_condition_must_hold_and_the_trace_says_which_failed():
    definition = engine.default_template()
    verdict = engine.evaluate(definition, facts(order_status=30))
    assert verdict.matched is False
    assert [(c["field"], c["ok"]) for c in verdict.trace] == [
        ("after_sale_type", True), ("hours_since_paid", True), ("order_status", False)
    ]
    assert verdict.trace[2]["fact"] == 30


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (rule(trigger="nope"), "Choose a trigger."),
        (rule(cond("colour", "in", ["red"])), "Choose a condition."),
        (rule(cond("hours_since_paid", "in", [4])), "Choose how to compare."),
        (rule(cond("hours_since_paid", "lte", -1)), "Enter a number of 0 or more."),
        (rule(cond("hours_since_paid", "lte", "4")), "Enter a number of 0 or more."),
        (rule(cond("hours_since_paid", "lte", True)), "Enter a number of 0 or more."),
        (rule(cond("after_sale_type", "in", [])), "Pick at least one."),
        (rule(cond("after_sale_type", "in", ["GIFT"])), "Pick from the list."),
        (rule(cond("order_status", "in", [99])), "Pick from the list."),
        (rule(cond("sku", "in", ["a b"])), "Ids are letters, digits, - or _ (separate them with commas or spaces)."),
        (rule(cond("buyer_tag", "has", "")), "Enter a tag (at most 32 characters)."),
        (rule(cond("shop_hours", "inside", {"start": "9", "end": "18:00"})), "Times are HH:MM, e.g. 09:00."),
        (rule(cond("shop_hours", "inside", {"start": "09:00", "end": "09:00"})),
         "Opening and closing times must differ."),
        (rule(cond("message_text", "contains", "x")), "“Message text” is not known for this trigger."),
        (rule(actions=()), "Add at least one action."),
        (rule(actions=({"kind": "launch"},)), "Choose an action."),
        (rule(trigger="order.paid", actions=({"kind": "approve_refund"},)),
         "“Approve the refund” is not possible for this trigger."),
        (rule(actions=({"kind": "send_message", "text": " "},)), "Enter a text (at most 300 characters)."),
        (rule(actions=({"kind": "tag_buyer"},)), "Enter a tag (at most 32 characters)."),
        (rule(actions=({"kind": "approve_refund"}, {"kind": "approve_return"})),
         "A rule may approve or reject once, not twice."),
    ],
)
def test_validation_names_the_problem(definition, message):
    assert message in [p.message for p in engine.validate(definition)]


def test_rejecting_needs_the_shop_to_allow_it():
    definition = rule(actions=({"kind": "reject", "reason_type": 1, "text": "超时"},))
    problems = engine.validate(definition)
    assert [p.part for p in problems] == ["actions"] and "does not allow rules to reject" in problems[0].message
    assert engine.validate(definition, allow_auto_reject=True) == []


def test_every_field_and_action_is_reachable_from_some_trigger():
    for f in engine.FIELDS.values():
        assert f.triggers and set(f.ops) <= set(engine.OPS)
    for a in engine.ACTIONS.values():
        assert a.triggers <= engine.ALL_TRIGGERS
    assert engine.validate(engine.default_template()) == []
    assert engine.approves(engine.default_template()) == "approve_refund"
