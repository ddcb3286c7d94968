"""The rule editor's form: rows of selects and inputs <-> a rule definition, and saving with versions.

Supervisors never type JSON. Each condition row posts ``c-<n>-field``, ``c-<n>-op`` and, by the field's
kind, ``c-<n>-value`` (a number, yuan, a list of ids, a tag or a text), ``c-<n>-choice`` (checked
choices) or ``c-<n>-start`` / ``c-<n>-end`` (shop hours). Action rows post ``a-<n>-kind`` with
``a-<n>-text``, ``a-<n>-tag`` or ``a-<n>-reason``. Rows with no field (or kind) chosen are blank
and ignored. What people type is read here (yuan to fen, lists split on commas and spaces); whether it
makes a valid rule is ``engine.validate``'s call, with the row of each problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import format_yuan, parse_yuan
from app.models import Rule, RuleVersion, User
from app.rules import engine
from app.rules.engine import Problem

ROW_KEY = re.compile(r"^([ca])-(\d{1,6})-(field|kind)$")
MAX_ROWS = 20


@dataclass
class Draft:
    name: str = ""
    trigger: str = "aftersale.created"
    conditions: list[dict] = field(default_factory=list)
    actions: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # What was typed, by row, for redisplay when it could not be read.
    raw: dict[str, str] = field(default_factory=dict)

    def definition(self) -> dict:
        return {"name": self.name, "trigger": self.trigger, "conditions": self.conditions, "actions": self.actions}

    def problems_for(self, part: str, index: int | None) -> list[str]:
        return [p.message for p in self.problems if p.part == part and p.index == index]


def _rows(form, prefix: str, key: str) -> list[int]:
    indexes = set()
    for name in form:
        match = ROW_KEY.match(name)
        if match and match.group(1) == prefix and match.group(3) == key and form.get(name):
            indexes.add(int(match.group(2)))
    return sorted(indexes)


def _codes(text: str) -> list[str]:
    return [part for part in re.split(r"[\s,，;；]+", text.strip()) if part]


def _number(text: str):
    text = text.strip()
    if not re.match(r"^\d{1,9}(\.\d{1,4})?$", text):
        raise ValueError(text)
    number = float(text)
    return int(number) if number.is_integer() else number


def read_form(form, *, allow_auto_reject: bool = False) -> Draft:
    draft = Draft(name=(form.get("name") or "").strip()[:100], trigger=form.get("trigger") or "")
    parse_problems: list[Problem] = []
    # Too many rows is a problem to show, never rows dropped: a dropped condition makes a broader rule.
    for part, prefix, key in (("conditions", "c", "field"), ("actions", "a", "kind")):
        if len(_rows(form, prefix, key)) > MAX_ROWS:
            parse_problems.append(Problem(part, None, _("At most %(n)d rows: remove some.", n=MAX_ROWS)))
    for out_index, n in enumerate(_rows(form, "c", "field")):
        name = form.get(f"c-{n}-field")
        op = form.get(f"c-{n}-op") or ""
        f = engine.FIELDS.get(name)
        condition = {"field": name, "op": op, "value": None}
        raw = (form.get(f"c-{n}-value") or "").strip()
        draft.raw[f"c-{out_index}"] = raw
        if f is not None:
            try:
                if f.kind == "number":
                    condition["value"] = _number(raw)
                elif f.kind == "money":
                    condition["value"] = parse_yuan(raw)
                elif f.kind == "codes":
                    condition["value"] = _codes(raw)
                elif f.kind == "choice":
                    picked = form.getlist(f"c-{n}-choice-{name}")
                    condition["value"] = [int(p) if isinstance(f.choices[0], int) else p for p in picked
                                          if p in {str(c) for c in f.choices}]
                elif f.kind == "hours":
                    condition["value"] = {"start": (form.get(f"c-{n}-start") or "").strip(),
                                          "end": (form.get(f"c-{n}-end") or "").strip()}
                else:
                    condition["value"] = raw
            except ValueError:
                message = _("Enter an amount in yuan, e.g. 199 or 199.50.") if f.kind == "money" else _(
                    "Enter a number of 0 or more.")
                parse_problems.append(Problem("conditions", out_index, message))
                condition["value"] = 0
        draft.conditions.append(condition)
    for n in _rows(form, "a", "kind"):
        kind = form.get(f"a-{n}-kind")
        action: dict = {"kind": kind}
        text = (form.get(f"a-{n}-text") or "").strip()
        if kind in ("send_message", "route_to_human", "reject"):
            action["text"] = text
        if kind == "tag_buyer":
            action["tag"] = text
        if kind == "reject":
            reason = (form.get(f"a-{n}-reason") or "").strip()
            action["reason_type"] = int(reason) if reason.isdigit() else None
        draft.actions.append(action)
    problems = engine.validate(draft.definition(), allow_auto_reject=allow_auto_reject)
    # A value that could not be read at all is reported once, not again as "0 is wrong".
    unreadable = {(p.part, p.index) for p in parse_problems}
    draft.problems = parse_problems + [p for p in problems if (p.part, p.index) not in unreadable]
    if not draft.name:
        draft.problems.insert(0, Problem("rule", None, _("Give the rule a name.")))
    return draft


def from_rule(rule: Rule) -> Draft:
    return Draft(name=rule.name, trigger=rule.trigger, conditions=list(rule.conditions or []),
                 actions=list(rule.actions or []))


def value_text(condition: dict) -> str:
    """A stored condition value as the input shows it (fen as yuan, lists comma-separated)."""
    f = engine.FIELDS.get(condition.get("field"))
    value = condition.get("value")
    if f is None or value is None:
        return ""
    if f.kind == "money" and isinstance(value, int):
        return format_yuan(value).lstrip("¥").replace(",", "")
    if f.kind == "codes" and isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if f.kind in ("choice", "hours"):
        return ""
    return str(value)


def describe(condition: dict) -> str:
    """One condition in words, for lists and the decision log."""
    f = engine.FIELDS.get(condition.get("field"))
    if f is None:
        return str(condition)
    op = engine.OPS.get(condition.get("op"), condition.get("op"))
    value = condition.get("value")
    if f.kind == "money" and isinstance(value, int):
        shown = format_yuan(value)
    elif f.kind == "hours" and isinstance(value, dict):
        shown = f"{value.get('start')}–{value.get('end')}"
    elif f.name == "after_sale_type" and isinstance(value, list):
        from app.labels import after_sale_type

        shown = "、".join(after_sale_type(v) for v in value)
    elif f.name == "order_status" and isinstance(value, list):
        from app.labels import order_status

        shown = "、".join(order_status(v) for v in value)
    elif isinstance(value, list):
        shown = ", ".join(str(v) for v in value)
    else:
        shown = str(value)
    return f"{f.label} {op} {shown}"


def describe_action(action: dict) -> str:
    a = engine.ACTIONS.get(action.get("kind"))
    if a is None:
        return str(action)
    extra = action.get("text") or action.get("tag")
    return f"{a.label}: {extra}" if extra else str(a.label)


def save(rule: Rule | None, shop_id: int, draft: Draft, user: User) -> Rule:
    """Create or change a rule; any change to what it does is a new version (decisions keep theirs)."""
    definition = draft.definition()
    if rule is None:
        last = db.session.scalar(sa.select(sa.func.max(Rule.position)).where(Rule.shop_id == shop_id))
        rule = Rule(shop_id=shop_id, position=(last if last is not None else -1) + 1, enabled=False, dry_run=True,
                    version=0, created_by_id=user.id)
        db.session.add(rule)
    else:
        current = {"name": rule.name, "trigger": rule.trigger, "conditions": rule.conditions or [],
                   "actions": rule.actions or []}
        if current == definition:
            return rule
    rule.name, rule.trigger = draft.name, draft.trigger
    rule.conditions, rule.actions = draft.conditions, draft.actions
    rule.version = (rule.version or 0) + 1
    rule.updated_by_id = user.id
    db.session.flush()
    db.session.add(RuleVersion(shop_id=shop_id, rule_id=rule.id, version=rule.version, definition=definition,
                               created_by_id=user.id))
    return rule
