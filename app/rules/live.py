"""Rules at work: domain events -> a durable evaluation -> decisions -> actions through the outbox.

```
after_sale_changed / order_changed / buyer_message_received (after the ingest's commit)
  -> enqueue an outbox call "rules.evaluate" (key: subject + state; a re-delivered push adds nothing)
  -> outbox worker: evaluate the shop's enabled rules of the trigger, in position order; the FIRST
     rule that matches acts and ends the evaluation (the ones before it are logged as no_match)
  -> decision row (unique key: rule + version + subject + state: decided once, whatever the process)
  -> kill switch? dry run? daily caps (count and amount, shop-local day, under a per-shop lock)?
  -> approve: orders.actions.request_action as the rule actor -> outbox aftersale.action
     -> the action's outcome (after the outbox's retries) is written back to the decision in the same
        transaction; a final failure hands the case to people with the reason (after_sales.human_note)
```

Why the outbox: an evaluation is stored in the ingest's wake (the signal runs after the commit) and
survives a crash like any platform call (leases, claims with SKIP LOCKED, retries with backoff). A
crash between the ingest's commit and the enqueue is covered by ``sweep`` (a scheduler job) that
enqueues evaluations for cases waiting for the merchant that have none: the same key, so nothing
twice. After-sale rules consider only after-sales waiting for the merchant (MERCHANT_PROCESSING).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app import audit, events, outbox
from app.db import insert_new, utcnow
from app.extensions import db
from app.ingest.store import ensure_customer, insert_or_get, locked
from app.models import (
    AfterSale,
    AfterSaleAction,
    AfterSaleStatus,
    Conversation,
    Customer,
    CustomerTag,
    Message,
    Order,
    OutboxCall,
    Role,
    Rule,
    RuleDecision,
    RuleSettings,
    Shop,
    User,
)
from app.models.chat import ConversationStatus
from app.models.rules import COUNTED_DECISIONS
from app.platform.client import PlatformUnavailable
from app.rules import engine, facts

log = logging.getLogger(__name__)
OPERATION = outbox.BACKGROUND_OPERATION  # the outbox works evaluations in its background lane
RULE_ACTOR = "rule-engine"
CAP_LOCK_KEY = 0x52554C45  # "RULE": with the shop id, one advisory lock per shop for the caps
_sqlite_cap_lock = threading.RLock()

# Outcomes. Approvals go approving -> approved | escalated (the platform's final answer).
APPROVING, APPROVED, ESCALATED = "approving", "approved", "escalated"
NO_MATCH, WOULD_APPROVE, WOULD_ACT, ACTED = "no_match", "would_approve", "would_act", "acted"
CAPPED, KILLED = "capped", "killed"
COUNTED = (APPROVING, APPROVED)  # what uses up the daily caps
MATCHED = (APPROVING, APPROVED, ESCALATED, WOULD_APPROVE, WOULD_ACT, ACTED, CAPPED, KILLED)

ORDER_TRIGGER_BY_STATUS = {20: "order.paid", 30: "order.shipped", 190: "order.cancelled", 200: "order.cancelled",
                           250: "order.cancelled"}


class EvaluationFailed(PlatformUnavailable):
    """An evaluation crashed (a database hiccup): the outbox retries it with backoff."""


# --- settings and the rule actor -----------------------------------------------------------------


def settings_for(shop_id: int) -> RuleSettings:
    """The shop's automation settings (the defaults until a supervisor saves some)."""
    found = db.session.scalar(sa.select(RuleSettings).where(RuleSettings.shop_id == shop_id))
    return found or RuleSettings(shop_id=shop_id, paused=False, daily_count_cap=200,
                                 daily_amount_cap_fen=2_000_000, allow_auto_reject=False)


def rule_actor() -> User:
    """The system user rules act as (audit entries, after-sale actions): it cannot sign in."""
    user = db.session.scalar(sa.select(User).where(User.username == RULE_ACTOR))
    if user is not None:
        return user
    user, _ = insert_or_get(
        User,
        {"username": RULE_ACTOR, "display_name": "自动规则", "password_hash": "!", "role": Role.AGENT.value,
         "capacity": 0, "language": "zh_CN", "is_active": False, "session_version": 1, "presence": "away",
         "created_at": utcnow(), "updated_at": utcnow()},
        sa.select(User).where(User.username == RULE_ACTOR),
    )
    db.session.commit()
    return user


# --- enqueueing evaluations -----------------------------------------------------------------------


# Which triggers a shop has enabled rules for, read at most every RULES_FRESH_FOR seconds per process
# (every order, after-sale and message change asks). A rule saved in this process is seen at once;
# one saved in another process within RULES_FRESH_FOR seconds (after-sales missed meanwhile are
# queued by ``sweep``). The evaluation itself always reads the rules afresh.
RULES_FRESH_FOR = 2.0
_enabled_triggers: dict[int, tuple[float, frozenset[str]]] = {}


def _has_rules(shop_id: int, triggers: tuple[str, ...]) -> bool:
    known = _enabled_triggers.get(shop_id)
    if known is None or time.monotonic() - known[0] > RULES_FRESH_FOR:
        read_at = time.monotonic()
        enabled = frozenset(
            db.session.scalars(sa.select(Rule.trigger).where(Rule.shop_id == shop_id, Rule.enabled).distinct())
        )
        known = _enabled_triggers[shop_id] = (read_at, enabled)
    return not known[1].isdisjoint(triggers)


def forget_rules() -> None:
    """Drop what this process knows of every shop's rules (tests: shop ids repeat between them)."""
    _enabled_triggers.clear()


@sa.event.listens_for(Rule, "after_insert")
@sa.event.listens_for(Rule, "after_update")
@sa.event.listens_for(Rule, "after_delete")
def _rule_written(_mapper, _connection, rule: Rule) -> None:
    session = sa.orm.object_session(rule)
    if session is not None:
        session.info.setdefault("rules_changed", set()).add(rule.shop_id)
    _enabled_triggers.pop(rule.shop_id, None)


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _rules_committed(session) -> None:
    for shop_id in session.info.pop("rules_changed", ()):  # read again, committed, on the next change
        _enabled_triggers.pop(shop_id, None)


def evaluation_key(subject_kind: str, subject_id: str, state: str) -> str:
    return f"rules:{subject_kind}:{subject_id}:{state}"


def enqueue_evaluation(shop_id: int, trigger: str, subject_kind: str, subject_id: str, state: str,
                       order_id: str | None) -> int | None:
    """Queue one evaluation (committed): its outbox call's id; None if this subject in this state
    was queued before."""
    key = evaluation_key(subject_kind, subject_id, state)
    call_id = outbox.enqueue_once(
        shop_id,
        OPERATION,
        {"trigger": trigger, "subject_kind": subject_kind, "subject_id": subject_id, "state": state},
        key,
        # With the order's refund calls: one after another, in order.
        subject=("order", order_id) if order_id else ("rules", f"{subject_kind}:{subject_id}"),
    )
    db.session.commit()
    return call_id


def after_sale_state(after_sale: AfterSale) -> str:
    # The amount too: a buyer who changes it gets a new evaluation (and "amount <= X" a new look).
    return f"{after_sale.status}:{after_sale.type}:{after_sale.refund_amount_fen}"


def _wake() -> None:
    from app.ingest import worker

    worker.wake_outbox(current_app._get_current_object())


def _evaluate_now_or_wake(call_id: int) -> None:
    """Depth first: in an inbox worker announcing what it stored, claim the evaluation just queued
    and work it in this thread (``RULES_EVALUATE_INLINE``); anywhere else (an agent's request, the
    scheduler's polls), or when it cannot be claimed now (another worker has it, an earlier call of
    its order is unfinished), the outbox workers take it. In a livestream burst this decides the
    first cases first: breadth first, the inbox stored every push of the burst while the
    evaluations of the first ones waited for the outbox's threads."""
    from app.ingest import inbox

    try:
        if inbox.announcing() and current_app.config["RULES_EVALUATE_INLINE"]:
            claimed = outbox.claim_one(call_id)
            if claimed.ids:
                outbox.process_claimed(claimed)
    except Exception:
        # The evaluation is queued: a claimed one comes back to the outbox workers after its lease.
        # This thread's session must be clean for the inbox's next event.
        db.session.rollback()
        log.exception("evaluating outbox call %s at once failed; the outbox workers take it", call_id)
    finally:
        # Either way the outbox workers look now: the approval this evaluation queued waited for the
        # evaluation to finish (calls of one order go in order), and no worker's drain loop saw that.
        _wake()


def on_after_sale_changed(shop_id: int, *, after_sale_pk: int, status: str, type: str, created: bool, **data):
    if status != AfterSaleStatus.MERCHANT_PROCESSING:
        return
    trigger = "aftersale.created" if created else "aftersale.updated"
    try:
        if not _has_rules(shop_id, (trigger,)):
            return
        if "refund_amount_fen" in data and data.get("order_id"):
            # The ingest's signal carries the committed state: no need to read it back.
            state, order_id = f"{status}:{type}:{data['refund_amount_fen']}", data["order_id"]
        else:
            row = db.session.get(AfterSale, after_sale_pk)
            if row is None or row.status != AfterSaleStatus.MERCHANT_PROCESSING:
                return
            state, order_id = after_sale_state(row), row.order_id
        queued = enqueue_evaluation(shop_id, trigger, "after_sale", str(after_sale_pk), state, order_id)
    finally:
        db.session.rollback()
    if queued:
        _evaluate_now_or_wake(queued)


def on_order_changed(shop_id: int, *, order_pk: int, order_id: str, status: int, **_):
    trigger = ORDER_TRIGGER_BY_STATUS.get(status)
    if trigger is None:
        return
    try:
        if not _has_rules(shop_id, (trigger,)):
            return
        queued = enqueue_evaluation(shop_id, trigger, "order", str(order_pk), str(status), order_id)
    finally:
        db.session.rollback()
    if queued:
        _evaluate_now_or_wake(queued)


def on_buyer_message(shop_id: int, *, message_id: int, conversation_id: int, **_):
    try:
        if not _has_rules(shop_id, ("message.received",)):
            return
        queued = enqueue_evaluation(shop_id, "message.received", "message", str(message_id), "received", None)
    finally:
        db.session.rollback()
    if queued:
        _wake()


def sweep(since: timedelta = timedelta(hours=24), limit: int = 500, page: int = 500) -> int:
    """The safety net: evaluations for after-sales waiting for the merchant that have none for their
    state (a crash between an ingest's commit and its signal). Same keys as the live path, so
    nothing runs twice. Queues at most ``limit`` per shop and run; reads ``page`` rows at a time
    past the ones it skips (no rule for their trigger), so skipped rows never hide later ones."""
    cutoff = utcnow() - since
    shop_ids = db.session.scalars(
        sa.select(Rule.shop_id).where(Rule.enabled, Rule.trigger.in_(engine.AFTER_SALE_TRIGGERS)).distinct()
    ).all()
    queued = 0
    for shop_id in shop_ids:
        # The live key (evaluation_key with after_sale_state): status, type and amount.
        amount = sa.func.coalesce(sa.cast(AfterSale.refund_amount_fen, sa.String), "None")
        key = (sa.literal("rules:after_sale:") + sa.cast(AfterSale.id, sa.String) + ":" + AfterSale.status + ":"
               + AfterSale.type + ":" + amount)
        missing = ~sa.select(OutboxCall.id).where(
            OutboxCall.shop_id == shop_id, OutboxCall.idempotency_key == key
        ).exists()
        after, shop_queued = 0, 0
        while shop_queued < limit:
            rows = db.session.execute(
                sa.select(AfterSale.id, AfterSale.status, AfterSale.type, AfterSale.refund_amount_fen,
                          AfterSale.order_id)
                .where(AfterSale.shop_id == shop_id, AfterSale.status == AfterSaleStatus.MERCHANT_PROCESSING.value,
                       AfterSale.updated_at >= cutoff, AfterSale.id > after, missing)
                .order_by(AfterSale.id)
                .limit(page)
            ).all()
            if not rows:
                break
            for pk, status, kind, amount_fen, order_id in rows:
                after = pk
                # Never evaluated in any state: it is new to the rules.
                seen = db.session.scalar(
                    sa.select(OutboxCall.id).where(
                        OutboxCall.shop_id == shop_id,
                        OutboxCall.idempotency_key.startswith(f"rules:after_sale:{pk}:"),
                    ).limit(1)
                )
                trigger = "aftersale.updated" if seen else "aftersale.created"
                if not _has_rules(shop_id, (trigger,)):
                    continue
                if enqueue_evaluation(shop_id, trigger, "after_sale", str(pk), f"{status}:{kind}:{amount_fen}",
                                      order_id):
                    shop_queued += 1
                if shop_queued >= limit:
                    break
        queued += shop_queued
        db.session.rollback()
    if queued:
        _wake()
    return queued


# --- evaluating ------------------------------------------------------------------------------------


def decision_key(rule, subject_kind: str, subject_id: str, state: str) -> str:
    return f"{rule.id}:v{rule.version}:{subject_kind}:{subject_id}:{state}"


def _subject(shop: Shop, subject_kind: str, subject_id: str):
    """(row, facts, state) of the subject as stored now, or None when there is nothing to decide."""
    if subject_kind == "after_sale":
        row = db.session.get(AfterSale, int(subject_id))
        if row is None or row.status != AfterSaleStatus.MERCHANT_PROCESSING:
            return None
        return row, facts.for_after_sale(row, shop), after_sale_state(row)
    if subject_kind == "order":
        row = db.session.get(Order, int(subject_id))
        return (row, facts.for_order(row, shop), str(row.status)) if row is not None else None
    if subject_kind == "message":
        row = db.session.get(Message, int(subject_id))
        if row is None:
            return None
        conversation = db.session.get(Conversation, row.conversation_id)
        return row, facts.for_message(row, conversation.customer.openid, shop), "received"
    return None


@dataclass(frozen=True)
class RuleSnapshot:
    """A rule as read at the start of an evaluation: plain values, unaffected by the commits that follow."""

    id: int
    version: int
    dry_run: bool
    definition: dict


@dataclass(frozen=True)
class DecisionRef:
    id: int
    idempotency_key: str
    subject_id: str


def rules_for(shop_id: int, trigger: str) -> list[RuleSnapshot]:
    rows = db.session.execute(
        sa.select(Rule.id, Rule.version, Rule.dry_run, Rule.trigger, Rule.conditions, Rule.actions)
        .where(Rule.shop_id == shop_id, Rule.trigger == trigger, Rule.enabled)
        .order_by(Rule.position, Rule.id)
    ).all()
    return [
        RuleSnapshot(r.id, r.version, r.dry_run, {"trigger": r.trigger, "conditions": r.conditions or [],
                                                   "actions": r.actions or []})
        for r in rows
    ]


def definition_of(rule: Rule) -> dict:
    return {"trigger": rule.trigger, "conditions": rule.conditions or [], "actions": rule.actions or []}


def evaluate_subject(shop: Shop, trigger: str, subject_kind: str, subject_id: str) -> list[int]:
    """Decide one subject: the decisions made or resumed (ids)."""
    found = _subject(shop, subject_kind, subject_id)
    if found is None:
        db.session.rollback()
        return []
    row, snapshot, state = found
    row_pk = row.id
    shop_id, shop_tz = shop.id, shop.tz
    decided: list[int] = []
    for rule in rules_for(shop_id, trigger):
        key = decision_key(rule, subject_kind, subject_id, state)
        existing = db.session.execute(
            sa.select(RuleDecision.id, RuleDecision.outcome, RuleDecision.action_id)
            .where(RuleDecision.idempotency_key == key)
        ).first()
        if existing is not None:
            decided.append(existing.id)
            if existing.outcome == APPROVING and existing.action_id is None:
                # A crash between deciding and queueing the approval: finish it.
                _approve(rule, DecisionRef(existing.id, key, subject_id))
            if existing.outcome != NO_MATCH:
                break
            continue
        result = engine.evaluate(rule.definition, snapshot)
        context = _Context(shop_id, shop_tz, trigger, subject_kind, subject_id, row_pk, snapshot)
        outcome = _decide(context, rule, key, result)
        if outcome is None:  # another worker decided this very subject meanwhile: its decision stands
            break
        decided.append(outcome[0])
        if outcome[1] != NO_MATCH:
            break
    db.session.commit()
    return decided


@dataclass(frozen=True)
class _Context:
    shop_id: int
    shop_tz: object
    trigger: str
    subject_kind: str
    subject_id: str
    row_pk: int
    snapshot: dict


def _local_day_start(tz, now: datetime) -> datetime:
    local = now.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(now.tzinfo)


def _cap_lock(shop_id: int) -> None:
    """Serialise cap checks of one shop until the transaction ends."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text("SELECT pg_advisory_xact_lock(:key, :shop)"),
                           {"key": CAP_LOCK_KEY, "shop": shop_id})
    else:
        locked(sa.select(RuleDecision))  # SQLite: its one write lock, held until commit


def used_today(shop: Shop, now: datetime | None = None) -> tuple[int, int]:
    """(count, amount in fen) of today's automatic approvals (shop-local day), not dry runs."""
    return _used_today(shop.id, shop.tz, now)


@functools.cache
def _used_statement() -> sa.Select:
    """Today's counted decisions of a shop (``shop_id``, ``since`` bound), built once. The counted
    outcomes are written as literals, matching ``ix_rule_decisions_counted``'s predicate, so that
    even a prepared statement's generic plan reads that index: the day's approvals only, their
    amounts from the index, not every decision of the day from the table. With 40,000 decisions
    in a day, a quarter of them approvals (``bench/caps.py``): 12 ms a check before, 4 ms through
    the index (1.5 ms once vacuumed: index only), run under the shop's cap lock for every approval."""
    since = sa.bindparam("since", type_=RuleDecision.__table__.c.created_at.type)
    zero = sa.literal_column("0")
    return sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(RuleDecision.amount_fen), zero)).where(
        RuleDecision.shop_id == sa.bindparam("shop_id"),
        RuleDecision.created_at >= since,
        sa.text(COUNTED_DECISIONS),
    )


def _used_today(shop_id: int, tz, now: datetime | None = None) -> tuple[int, int]:
    now = now or utcnow()
    params = {"shop_id": shop_id, "since": _local_day_start(tz, now)}
    count, amount = db.session.execute(_used_statement(), params).one()
    return int(count), int(amount)


def _insert_decision(values: dict) -> int | None:
    """Insert-or-nothing on the idempotency key: the new id, None when it exists (decided elsewhere)."""
    return insert_new(db.session, RuleDecision.__table__, values).scalar()


def _note_for_people(context: _Context, note: str, decision_id: int) -> None:
    if context.subject_kind == "after_sale":
        after_sale = db.session.get(AfterSale, context.row_pk)
        if after_sale is not None:
            hand_to_people(after_sale, note, decision_id)


def _decide(context: _Context, rule: RuleSnapshot, key: str, result) -> tuple[int, str] | None:
    """Record the decision (once) and act on it; (decision id, outcome), None if decided elsewhere."""
    settings = settings_for(context.shop_id)
    approving = engine.approves(rule.definition)
    # The money at stake when the rule approves (a case it does not match risks none).
    amount = context.snapshot.get("refund_amount_fen") if approving and result.matched else None
    values = {
        "shop_id": context.shop_id, "rule_id": rule.id, "rule_version": rule.version, "trigger": context.trigger,
        "subject_kind": context.subject_kind, "subject_id": context.subject_id, "idempotency_key": key,
        "dry_run": rule.dry_run, "amount_fen": amount, "inputs": context.snapshot, "trace": result.as_dict(),
        "created_at": utcnow(),
    }
    if not result.matched:
        outcome, error, note = NO_MATCH, None, None
    elif settings.paused:
        outcome, error, note = KILLED, "automation paused (kill switch)", "自动规则已暂停（总开关），请人工处理。"
    elif approving and context.subject_kind != "after_sale":
        # Only an after-sale can be approved (the editor offers approvals on after-sale triggers only;
        # a rule written some other way must not approve whatever after-sale shares the id).
        outcome, error, note = ESCALATED, "approval on a trigger that is not an after-sale", None
    elif approving and not rule.dry_run and (amount is None or amount <= 0):
        # An after-sale without a known refund amount: the caps and "amount <= X" saw nothing.
        outcome, error, note = ESCALATED, "refund amount unknown", "退款金额未知，自动规则未审批，请人工处理。"
    elif rule.dry_run:
        outcome, error, note = (WOULD_APPROVE if approving else WOULD_ACT), None, None
    elif not approving:
        outcome, error, note = ACTED, None, None
    else:
        outcome = None
    if outcome is not None:
        decision_id = _insert_decision({**values, "outcome": outcome, "error": error})
        if decision_id is not None and note:
            _note_for_people(context, note, decision_id)
        db.session.commit()
        if decision_id is not None and outcome == ACTED:
            _other_actions(context, rule, DecisionRef(decision_id, key, context.subject_id))
        return (decision_id, outcome) if decision_id is not None else None
    if db.engine.dialect.name != "postgresql":
        db.session.commit()  # SQLite: a read transaction cannot safely turn into the write lock
    with _cap_guard(context.shop_id):
        count, used = _used_today(context.shop_id, context.shop_tz)
        over = None
        if count + 1 > settings.daily_count_cap:
            over = f"daily cap of {settings.daily_count_cap} automatic approvals reached"
        elif used + (amount or 0) > settings.daily_amount_cap_fen:
            over = f"daily cap of {settings.daily_amount_cap_fen} fen approved automatically reached"
        decision_id = _insert_decision({**values, "outcome": CAPPED if over else APPROVING, "error": over})
        if decision_id is not None and over:
            _note_for_people(context, "已达到今日自动审批上限，请人工处理。", decision_id)
        db.session.commit()  # ends the lock: the approval is counted from here on
    if decision_id is None:
        return None
    if over:
        return decision_id, CAPPED
    ref = DecisionRef(decision_id, key, context.subject_id)
    _approve(rule, ref)
    _other_actions(context, rule, ref)
    return decision_id, APPROVING


class _cap_guard:  # noqa: N801 (a context manager used like a lock)
    """The per-shop cap lock on PostgreSQL; on SQLite a process lock plus the write lock."""

    def __init__(self, shop_id: int):
        self.shop_id = shop_id
        self.sqlite = db.engine.dialect.name != "postgresql"

    def __enter__(self):
        if self.sqlite:
            _sqlite_cap_lock.acquire()
        _cap_lock(self.shop_id)
        return self

    def __exit__(self, *exc):
        if db.session().in_transaction() and exc[0] is not None:
            db.session.rollback()
        if self.sqlite:
            _sqlite_cap_lock.release()
        return False


def _request_id(decision: DecisionRef) -> str:
    return "rule_" + hashlib.sha256(decision.idempotency_key.encode()).hexdigest()[:40]


def _approve(rule: RuleSnapshot, decision: DecisionRef) -> None:
    """Queue the approval as the rule actor; a refusal (state, address) hands the case to people."""
    from app.orders import actions

    kind = engine.approves(rule.definition)
    try:
        action, new = actions.request_action(rule_actor(), int(decision.subject_id), kind, _request_id(decision))
    except actions.ActionError as exc:
        db.session.rollback()
        db.session.execute(
            sa.update(RuleDecision).where(RuleDecision.id == decision.id)
            .values(outcome=ESCALATED, error=f"{exc.code}: {exc.message}")
        )
        after_sale = db.session.get(AfterSale, int(decision.subject_id))
        if after_sale is not None:
            hand_to_people(after_sale, f"自动规则无法审批：{exc.message}", decision.id)
        db.session.commit()
        return
    # A new action is pending and its id is known without reading it back after request_action's commit.
    values: dict = {"action_id": sa.inspect(action).identity[0] if new else action.id}
    if not new and action.state != "pending":  # already settled (a resumed decision whose action went through)
        values["outcome"] = APPROVED if action.state == "succeeded" else ESCALATED
    db.session.execute(sa.update(RuleDecision).where(RuleDecision.id == decision.id).values(**values))
    db.session.commit()
    _wake()


def _other_actions(context: _Context, rule: RuleSnapshot, decision: DecisionRef) -> None:
    """Messages, tags and notes: each once (keys derived from the decision), results on the decision."""
    results = []
    for index, action in enumerate(rule.definition["actions"]):
        kind = action.get("kind")
        if kind == "send_message":
            request_id = f"{_request_id(decision)[:40]}m{index}"
            results.append({"kind": kind, **_send_message(context, action["text"], request_id)})
        elif kind == "tag_buyer":
            results.append({"kind": kind, **_tag_buyer(context.shop_id, context.snapshot["openid"], action["tag"])})
        elif kind == "route_to_human" and context.subject_kind == "after_sale":
            _note_for_people(context, action["text"], decision.id)
            db.session.commit()
            results.append({"kind": kind, "ok": True})
        elif kind == "reject":
            results.append({"kind": kind, **_reject(context.shop_id, decision, action)})
    if results:
        row = db.session.get(RuleDecision, decision.id)
        row.platform_response = {**(row.platform_response or {}), "actions": results}
        refused = [r for r in results if r["kind"] == "reject" and not r.get("ok")]
        if refused and row.outcome == ACTED:
            # The rule meant to reject and could not: the case is not settled, people decide it.
            row.outcome = ESCALATED
            row.error = f"reject refused: {refused[0].get('reason')}"
            if context.subject_kind == "after_sale":
                _note_for_people(context, f"自动规则未能拒绝（{refused[0].get('reason')}），请人工处理。", decision.id)
        db.session.commit()


def _send_message(context: _Context, text: str, request_id: str) -> dict:
    from app.desk import conversations

    conversation_id = db.session.scalar(
        sa.select(Conversation.id).join(Customer, Customer.id == Conversation.customer_id).where(
            Conversation.shop_id == context.shop_id, Customer.openid == context.snapshot["openid"],
            Conversation.status == ConversationStatus.OPEN,
        )
    )
    if conversation_id is None:
        return {"ok": False, "reason": "no_open_conversation"}
    # An automatic message: within the platform's 5-in-48h budget and the auto-reply share of it.
    sent = conversations.send_auto(conversation_id, "rule", text, request_id)
    return {"ok": sent is not None, "reason": None if sent is not None else "budget_or_sent"}


def _tag_buyer(shop_id: int, openid: str, tag: str) -> dict:
    customer = ensure_customer(shop_id, openid)
    tag = tag.strip()[:32]
    exists = db.session.scalar(
        sa.select(CustomerTag.tag).where(CustomerTag.customer_id == customer.id, CustomerTag.tag == tag)
    )
    if exists is None:
        db.session.add(CustomerTag(shop_id=shop_id, customer_id=customer.id, tag=tag))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
    return {"ok": True, "tag": tag}


def _reject(shop_id: int, decision: DecisionRef, action: dict) -> dict:
    from app.orders import actions

    if not settings_for(shop_id).allow_auto_reject:
        return {"ok": False, "reason": "auto_reject_not_allowed"}
    try:
        found, _ = actions.request_action(rule_actor(), int(decision.subject_id), "reject",
                                          _request_id(decision)[:40] + "rj",
                                          reject_reason_type=action.get("reason_type"),
                                          reject_reason=action.get("text"))
    except actions.ActionError as exc:
        db.session.rollback()
        return {"ok": False, "reason": exc.code}
    _wake()
    return {"ok": True, "action_id": found.id}


def hand_to_people(after_sale: AfterSale, note: str, decision_id: int | None = None) -> None:
    """Put a note on the case for the after-sale queue and the sidebar (in the current transaction)."""
    after_sale.human_note = note[:500]
    after_sale.human_note_at = utcnow()
    audit.record(
        "rules.routed_to_human",
        user=None,
        shop_id=after_sale.shop_id,
        subject_kind="after_sale",
        subject_id=after_sale.after_sale_order_id,
        details={"note": note[:500], "decision_id": decision_id},
    )


# --- the platform's answer, written back ----------------------------------------------------------


def _decision_of(action: AfterSaleAction) -> RuleDecision | None:
    """The decision an action carries out: by ``action_id``, or (when the action finished before the
    decision recorded its id) by the request id derived from the decision's key."""
    decision = db.session.scalar(sa.select(RuleDecision).where(RuleDecision.action_id == action.id))
    if decision is not None or not (action.request_id or "").startswith("rule_"):
        return decision
    waiting = db.session.scalars(
        sa.select(RuleDecision).where(
            RuleDecision.shop_id == action.shop_id, RuleDecision.subject_kind == "after_sale",
            RuleDecision.subject_id == str(action.after_sale_pk), RuleDecision.action_id.is_(None),
        ).order_by(RuleDecision.id.desc())
    ).all()
    for candidate in waiting:
        if _request_id(DecisionRef(candidate.id, candidate.idempotency_key, candidate.subject_id)) == action.request_id:
            candidate.action_id = action.id
            return candidate
    return None


def _on_action_outcome(action: AfterSaleAction, outcome: str, details: dict) -> None:
    decision = _decision_of(action)
    if decision is None:
        return
    if outcome == "succeeded":
        decision.outcome = APPROVED if decision.outcome == APPROVING else decision.outcome
        decision.platform_response = {**(decision.platform_response or {}), "result": "succeeded", **details}
        return
    decision.outcome = ESCALATED
    decision.error = f"{details.get('error')}: {details.get('errmsg')}"[:2000]
    decision.platform_response = {**(decision.platform_response or {}), "result": "failed", **details}
    after_sale = db.session.get(AfterSale, action.after_sale_pk)
    if after_sale is not None:
        note = f"自动审批失败（{details.get('error')}）：{details.get('errmsg') or ''}"
        hand_to_people(after_sale, note, decision.id)


# --- the outbox handler ----------------------------------------------------------------------------


def _perform(shop: Shop, call: OutboxCall) -> dict:
    payload = dict(call.payload)
    try:
        decided = evaluate_subject(shop, payload["trigger"], payload["subject_kind"], payload["subject_id"])
    except Exception as exc:
        db.session.rollback()
        log.exception("rule evaluation %s crashed", call.idempotency_key)
        raise EvaluationFailed(f"rule evaluation failed: {type(exc).__name__}: {exc}") from exc
    return {"decisions": decided}


def _succeeded(call: OutboxCall, answer: dict) -> list:
    return []


def _failed(call: OutboxCall, exc: Exception) -> list:
    """An evaluation that kept failing: the case goes to people with the reason."""
    log.error("rule evaluation %s gave up: %s", call.idempotency_key, exc)
    if call.payload.get("subject_kind") == "after_sale":
        after_sale = db.session.get(AfterSale, int(call.payload["subject_id"]))
        if after_sale is not None:
            hand_to_people(after_sale, f"自动规则评估失败，请人工处理：{exc}"[:500])
    return []


def _still_allowed(action, after_sale: AfterSale) -> None:
    """Just before an approval the rules asked for goes out: the kill switch may have been turned on
    while it waited (retries, the per-order refund limit)."""
    from app.orders.actions import ActionWithdrawn

    requester = db.session.get(User, action.requested_by_id) if action.requested_by_id else None
    if requester is None or requester.username != RULE_ACTOR:
        return
    if settings_for(after_sale.shop_id).paused:
        raise ActionWithdrawn("the shop's automation kill switch was turned on before the call went out")


outbox.register(OPERATION, outbox.Handler(perform=_perform, succeeded=_succeeded, failed=_failed))


def init_app() -> None:
    """Subscribe to the domain events (once per process)."""
    from app.orders import actions

    if _on_action_outcome not in actions.OUTCOME_HOOKS:
        actions.OUTCOME_HOOKS.append(_on_action_outcome)
    if _still_allowed not in actions.PRE_SEND_CHECKS:
        actions.PRE_SEND_CHECKS.append(_still_allowed)
    events.after_sale_changed.connect(on_after_sale_changed)
    events.order_changed.connect(on_order_changed)
    events.buyer_message_received.connect(on_buyer_message)
