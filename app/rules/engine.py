"""The rule engine: rules are data, evaluated here against a plain snapshot of facts. Pure: no database,
no Flask request, no clock of its own (the event time comes with the facts).

A rule definition is ``{"trigger": str, "conditions": [...], "actions": [...]}``:

- a condition is ``{"field": name, "op": op, "value": ...}``; every condition must hold (AND);
- an action is ``{"kind": name, ...params}``, e.g. ``{"kind": "approve_refund"}`` or
  ``{"kind": "send_message", "text": "..."}``.

``FIELDS`` and ``ACTIONS`` are the registries: each field has a type, the operators it allows, how a
value is checked, and which triggers provide it. ``validate`` returns every problem with its row, so
the editor can say exactly what is wrong; ``evaluate`` returns whether the rule matched, a trace of
each condition (the fact, the operator, the value, the result) and the actions it plans.

Facts (``app/rules/facts.py``) are JSON: times are ISO strings in UTC, money integer fen, hours
floats. A fact that is missing (an order never paid has no ``hours_since_paid``) makes its condition
false, never an error: a rule acts only on what it can see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l

TRIGGERS = {
    "aftersale.created": _l("After-sale requested"),
    "aftersale.updated": _l("After-sale changed"),
    "order.paid": _l("Order paid"),
    "order.cancelled": _l("Order cancelled"),
    "order.shipped": _l("Order shipped"),
    "message.received": _l("Buyer message received"),
}
AFTER_SALE_TRIGGERS = frozenset({"aftersale.created", "aftersale.updated"})
ORDER_TRIGGERS = frozenset({"order.paid", "order.cancelled", "order.shipped"})
ALL_TRIGGERS = frozenset(TRIGGERS)

OPS = {
    "lte": _l("at most"),
    "lt": _l("less than"),
    "gte": _l("at least"),
    "gt": _l("more than"),
    "eq": _l("exactly"),
    "in": _l("is one of"),
    "not_in": _l("is none of"),
    "has": _l("has"),
    "has_not": _l("does not have"),
    "inside": _l("inside"),
    "outside": _l("outside"),
    "contains": _l("contains"),
    "not_contains": _l("does not contain"),
}
NUMBER_OPS = ("lte", "lt", "gte", "gt", "eq")
LIST_OPS = ("in", "not_in")
AFTER_SALE_TYPES = ("REFUND", "RETURN", "EXCHANGE")
ORDER_STATUSES = (10, 20, 21, 30, 100, 190, 200, 250)
HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
MAX_LIST = 200
MAX_TEXT = 300


@dataclass(frozen=True)
class Field:
    name: str
    label: Any
    kind: str  # number, money, choice, codes, tag, hours, text
    ops: tuple[str, ...]
    triggers: frozenset[str] = ALL_TRIGGERS
    choices: tuple = ()


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("after_sale_type", _l("After-sale type"), "choice", LIST_OPS, AFTER_SALE_TRIGGERS, AFTER_SALE_TYPES),
        Field("hours_since_paid", _l("Hours since the order was paid"), "number", NUMBER_OPS),
        Field("hours_since_created", _l("Hours since the order was placed"), "number", NUMBER_OPS),
        Field("order_status", _l("Order status"), "choice", LIST_OPS, ALL_TRIGGERS - {"message.received"},
              ORDER_STATUSES),
        Field("refund_amount_fen", _l("Refund amount"), "money", NUMBER_OPS, AFTER_SALE_TRIGGERS),
        Field("sku", _l("SKU"), "codes", LIST_OPS, ALL_TRIGGERS - {"message.received"}),
        Field("product", _l("Product"), "codes", LIST_OPS, ALL_TRIGGERS - {"message.received"}),
        Field("buyer_after_sales_30d", _l("Buyer's after-sales in the last 30 days"), "number", NUMBER_OPS),
        Field("buyer_tag", _l("Buyer tag"), "tag", ("has", "has_not")),
        Field("shop_hours", _l("Shop hours (shop time)"), "hours", ("inside", "outside")),
        Field("message_text", _l("Message text"), "text", ("contains", "not_contains"),
              frozenset({"message.received"})),
    )
}


@dataclass(frozen=True)
class Action:
    kind: str
    label: Any
    triggers: frozenset[str]
    params: tuple[str, ...] = ()
    # Approvals move money: they count against the daily caps and wait for the platform's answer.
    approves: bool = False
    # Decides the case on the platform (at most one such action per rule).
    decides: bool = False


ACTIONS: dict[str, Action] = {
    a.kind: a
    for a in (
        Action("approve_refund", _l("Approve the refund"), AFTER_SALE_TRIGGERS, approves=True, decides=True),
        Action("approve_return", _l("Approve the return (resolved return address)"), AFTER_SALE_TRIGGERS,
               approves=True, decides=True),
        Action("reject", _l("Reject (only if the shop allows automatic rejection)"), AFTER_SALE_TRIGGERS,
               ("reason_type", "text"), decides=True),
        Action("send_message", _l("Send the buyer a message"), ALL_TRIGGERS, ("text",)),
        Action("tag_buyer", _l("Tag the buyer"), ALL_TRIGGERS, ("tag",)),
        Action("route_to_human", _l("Route to the human queue with a note"), AFTER_SALE_TRIGGERS, ("text",)),
    )
}


@dataclass(frozen=True)
class Problem:
    """One validation problem: where (``conditions``/``actions``/``rule``, row index) and why."""

    part: str
    index: int | None
    message: str

    def as_dict(self) -> dict:
        return {"part": self.part, "index": self.index, "message": self.message}


@dataclass
class Decision:
    matched: bool
    trace: list[dict] = field(default_factory=list)
    actions: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"matched": self.matched, "conditions": self.trace, "actions": self.actions}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(f: Field, op: str, value: Any) -> str | None:
    """Why ``value`` is not valid for ``f`` and ``op``; None when it is."""
    if f.kind in ("number", "money"):
        if not _is_number(value) or value < 0:
            return str(_l("Enter a number of 0 or more."))
        if f.kind == "money" and not isinstance(value, int):
            return str(_l("Amounts are whole fen."))
        if value > 10**12:
            return str(_l("The number is too large."))
        return None
    if f.kind == "choice":
        if not isinstance(value, list) or not value:
            return str(_l("Pick at least one."))
        if any(v not in f.choices for v in value):
            return str(_l("Pick from the list."))
        return None
    if f.kind == "codes":
        if not isinstance(value, list) or not value:
            return str(_l("Enter at least one id."))
        if len(value) > MAX_LIST:
            return str(_l("At most %(n)d ids.", n=MAX_LIST))
        if any(not isinstance(v, str) or not re.match(r"^[0-9A-Za-z_-]{1,64}$", v) for v in value):
            return str(_l("Ids are letters, digits, - or _ (separate them with commas or spaces)."))
        return None
    if f.kind == "tag":
        if not isinstance(value, str) or not value.strip() or len(value) > 32:
            return str(_l("Enter a tag (at most 32 characters)."))
        return None
    if f.kind == "text":
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
            return str(_l("Enter a text (at most %(n)d characters).", n=MAX_TEXT))
        return None
    if f.kind == "hours":
        if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("start", "end")):
            return str(_l("Enter opening and closing times."))
        if not (HHMM.match(value["start"]) and HHMM.match(value["end"])):
            return str(_l("Times are HH:MM, e.g. 09:00."))
        if value["start"] == value["end"]:
            return str(_l("Opening and closing times must differ."))
        return None
    return str(_l("Unknown field."))


def validate(definition: dict, *, allow_auto_reject: bool = False) -> list[Problem]:
    """Every problem of a rule definition (empty: valid)."""
    problems: list[Problem] = []
    trigger = definition.get("trigger")
    if trigger not in TRIGGERS:
        problems.append(Problem("rule", None, str(_l("Choose a trigger."))))
        return problems
    conditions = definition.get("conditions")
    actions = definition.get("actions")
    if not isinstance(conditions, list) or not isinstance(actions, list):
        problems.append(Problem("rule", None, str(_l("The rule is malformed."))))
        return problems
    for index, condition in enumerate(conditions):
        f = FIELDS.get(condition.get("field")) if isinstance(condition, dict) else None
        if f is None:
            problems.append(Problem("conditions", index, str(_l("Choose a condition."))))
            continue
        if trigger not in f.triggers:
            problems.append(
                Problem("conditions", index, str(_l("“%(field)s” is not known for this trigger.", field=f.label)))
            )
            continue
        if condition.get("op") not in f.ops:
            problems.append(Problem("conditions", index, str(_l("Choose how to compare."))))
            continue
        why = _check_value(f, condition["op"], condition.get("value"))
        if why:
            problems.append(Problem("conditions", index, why))
    if not actions:
        problems.append(Problem("actions", None, str(_l("Add at least one action."))))
    deciding = 0
    for index, action in enumerate(actions):
        a = ACTIONS.get(action.get("kind")) if isinstance(action, dict) else None
        if a is None:
            problems.append(Problem("actions", index, str(_l("Choose an action."))))
            continue
        if trigger not in a.triggers:
            problems.append(
                Problem("actions", index, str(_l("“%(action)s” is not possible for this trigger.", action=a.label)))
            )
            continue
        deciding += a.decides
        if a.kind == "reject":
            if not allow_auto_reject:
                problems.append(
                    Problem("actions", index, str(_l("This shop does not allow rules to reject. A supervisor can "
                                                     "turn that on in the automation settings.")))
                )
            reason = action.get("reason_type")
            if not isinstance(reason, int) or isinstance(reason, bool) or reason <= 0:
                problems.append(Problem("actions", index, str(_l("Choose a reason from the platform's list."))))
        if a.kind in ("send_message", "route_to_human"):
            text = action.get("text")
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
                problems.append(
                    Problem("actions", index, str(_l("Enter a text (at most %(n)d characters).", n=MAX_TEXT)))
                )
        if a.kind == "tag_buyer":
            tag = action.get("tag")
            if not isinstance(tag, str) or not tag.strip() or len(tag) > 32:
                problems.append(Problem("actions", index, str(_l("Enter a tag (at most 32 characters)."))))
    if deciding > 1:
        problems.append(Problem("actions", None, str(_l("A rule may approve or reject once, not twice."))))
    return problems


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def within_hours(event_time_iso: str, tz_name: str, start: str, end: str) -> bool:
    """Whether the event falls inside shop hours ``start``-``end`` in the shop's time zone (an end
    before the start spans midnight, e.g. 20:00-02:00)."""
    local = datetime.fromisoformat(event_time_iso).astimezone(ZoneInfo(tz_name))
    now = local.hour * 60 + local.minute
    begin, finish = _minutes(start), _minutes(end)
    if begin < finish:
        return begin <= now < finish
    return now >= begin or now < finish


def _compare(f: Field, op: str, fact: Any, value: Any, facts: dict) -> bool:
    if f.kind == "hours":
        inside = within_hours(facts["event_time"], facts.get("shop_timezone") or "Asia/Shanghai",
                              value["start"], value["end"])
        return inside if op == "inside" else not inside
    if fact is None:
        return False
    if op in NUMBER_OPS:
        return {
            "lte": fact <= value,
            "lt": fact < value,
            "gte": fact >= value,
            "gt": fact > value,
            "eq": fact == value,
        }[op]
    if op in LIST_OPS:
        present = set(fact) if isinstance(fact, list) else {fact}
        hit = bool(present & set(value))
        return hit if op == "in" else not hit
    if op in ("has", "has_not"):
        hit = value.strip() in (fact or [])
        return hit if op == "has" else not hit
    if op in ("contains", "not_contains"):
        hit = value.strip().lower() in str(fact).lower()
        return hit if op == "contains" else not hit
    return False


FACT_OF = {"buyer_tag": "buyer_tags", "sku": "skus", "product": "products", "shop_hours": "event_time"}


def evaluate(definition: dict, facts: dict) -> Decision:
    """Whether the rule matches the facts: every condition, traced; the actions it would take."""
    trace = []
    matched = True
    for condition in definition.get("conditions") or []:
        f = FIELDS[condition["field"]]
        fact = facts.get(FACT_OF.get(f.name, f.name))
        result = _compare(f, condition["op"], fact, condition["value"], facts)
        trace.append({"field": f.name, "op": condition["op"], "value": condition["value"], "fact": fact, "ok": result})
        matched = matched and result
    return Decision(matched, trace, [dict(a) for a in definition.get("actions") or []] if matched else [])


def approves(definition: dict) -> str | None:
    """The approving action a rule takes (approve_refund / approve_return), if any."""
    for action in definition.get("actions") or []:
        if ACTIONS.get(action.get("kind")) and ACTIONS[action["kind"]].approves:
            return action["kind"]
    return None


def default_template() -> dict:
    """The seed customer's best lever: refund at once when the buyer regrets within 4 hours, unshipped."""
    return {
        "name": "4小时内未发货自动退款",
        "trigger": "aftersale.created",
        "conditions": [
            {"field": "after_sale_type", "op": "in", "value": ["REFUND"]},
            {"field": "hours_since_paid", "op": "lte", "value": 4},
            {"field": "order_status", "op": "in", "value": [20]},
        ],
        "actions": [{"kind": "approve_refund"}],
    }
