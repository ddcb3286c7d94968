"""Agents' actions on after-sales: approve a refund, approve a return (with its return address),
confirm receipt and refund, reject with a platform reason. Domain code, no Flask request here.

Each action is a row (``after_sale_actions``) plus an outbox call in one transaction, audited:

- **Idempotent**: the browser's ``request_id`` is unique per shop; asking again with it returns the
  same action. Only one action per after-sale may be pending (a partial unique index), so a double
  click with a fresh id, or two agents at once, get the pending one (same kind) or ``conflict``.
- **Allowed by the state**: only what the after-sale's current type and status permit
  (``allowed_kinds``); anything else is ``forbidden_transition`` before anything is queued.
- **Retry after a timeout**: when the platform refuses a repeat because the first call did go
  through, the handler reads the after-sale back; if it is already where the action leads, the
  action succeeded.
- **One refund call per order per minute** (10021059): refund calls about one order leave the
  outbox one after another (outbox subject ``order:<id>``), at least a minute apart; a 10021059 that
  happens anyway defers the call to the next minute without using an attempt.

After a call the handler reads the after-sale from the platform and stores it, so the sidebar shows
the platform's new status at once (``after_sale_changed``); pushes confirm it later.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError

from app import audit, events, outbox
from app.db import commit_keeping, utcnow
from app.extensions import db
from app.ingest import inbox
from app.ingest.store import locked, upsert_after_sale
from app.labels import after_sale_status
from app.models import (
    AfterSale,
    AfterSaleAction,
    AfterSaleActionKind,
    AfterSaleActionState,
    AfterSaleStatus,
    AfterSaleType,
    OutboxCall,
    ReturnAddress,
    Shop,
    User,
)
from app.platform import client_for
from app.platform.client import (
    ApiBlocked,
    BadRequest,
    BusinessError,
    NotAuthorized,
    PlatformError,
    PlatformUnavailable,
    QuotaExhausted,
    RateLimited,
)
from app.returns import resolver
from app.returns.resolver import AddressSource

OPERATION = "aftersale.action"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
REFUND_SPACING = timedelta(seconds=60)

# errcodes of the platform page (platform-api.md, After-sales).
REFUND_TOO_FAST = 10021059
ADDRESS_MISSING = 10021060
ADDRESS_INVALID = 10021062
NEGOTIATE_FIRST = 10021068
DEFINITIVE = frozenset({ADDRESS_MISSING, ADDRESS_INVALID, NEGOTIATE_FIRST})

Kind = AfterSaleActionKind
S = AfterSaleStatus
REFUNDING = frozenset({Kind.APPROVE_REFUND, Kind.CONFIRM_RECEIPT})
REJECTED = frozenset({S.MERCHANT_REJECT_REFUND, S.MERCHANT_REJECT_RETURN})
_REFUNDED = frozenset(
    {S.MERCHANT_REFUND_SUCCESS, S.PLATFORM_REFUNDING, S.PLATFORM_REFUND_FAIL, S.MERCHANT_REFUND_RETRY_FAIL}
)
# Where each action leads: an after-sale found in one of these after a refused repeat was done by us.
DONE = {
    Kind.APPROVE_REFUND: _REFUNDED,
    Kind.APPROVE_RETURN: frozenset({S.USER_WAIT_RETURN, S.MERCHANT_WAIT_RECEIPT, S.MERCHANT_RETURN_SUCCESS})
    | _REFUNDED,
    Kind.CONFIRM_RECEIPT: frozenset({S.MERCHANT_RETURN_SUCCESS}) | _REFUNDED,
    Kind.REJECT: REJECTED,
}
# The platform's reject_scene for each after-sale type.
REJECT_SCENE = {AfterSaleType.REFUND: 1, AfterSaleType.RETURN: 4, AfterSaleType.EXCHANGE: 5}

KIND_LABEL = {
    Kind.APPROVE_REFUND: _l("Approve refund"),
    Kind.APPROVE_RETURN: _l("Approve return"),
    Kind.CONFIRM_RECEIPT: _l("Confirm receipt and refund"),
    Kind.REJECT: _l("Reject"),
}
# Why an action failed, in plain words (error_code -> text); the platform's errmsg is shown beside.
ERROR_TEXT = {
    "negotiate_first": _l(
        "The platform requires you to negotiate with the buyer before rejecting. Talk to the buyer in the "
        "chat (offer a partial refund or an exchange), then reject again if you still disagree."
    ),
    "address_missing": _l("The platform needs a return address to approve a return. Pick one and approve again."),
    "address_invalid": _l(
        "The platform does not accept this return address (deleted or not a return address). Pick another one."
    ),
    "refund_too_fast": _l("The platform allows one refund per order per minute. Try again in a minute."),
    "state_changed": _l("The after-sale changed on the platform meanwhile (now: %(status)s)."),
    "not_authorised": _l("This shop's platform app may not handle after-sales. An admin must fix the shop setup."),
    "blocked": _l("The platform paused this API for the shop (quota). Try again later."),
    "unavailable": _l("The platform could not be reached after several attempts. Try again."),
    "bad_request": _l("The platform refused the request as malformed."),
    "rejected": _l("The platform refused the action."),
    "withdrawn": _l("Not sent: the case changed, or automation was paused, before the call went out."),
}


# Called in the transaction that records an action's outcome: (action, "succeeded" | "failed", details).
# The rule engine writes the platform's answer back to the decision that queued the action.
OUTCOME_HOOKS: list = []


# Called just before an action's platform call, with (action, after-sale as stored now); raising
# ActionWithdrawn fails the action without calling the platform. The rule engine re-checks its kill
# switch here: an approval may wait minutes in the outbox (retries, the per-order refund limit).
PRE_SEND_CHECKS: list = []


class ActionWithdrawn(Exception):
    """The action is not sent after all (the reason is shown with the failed action)."""


def _run_outcome_hooks(action: AfterSaleAction, outcome: str, details: dict) -> None:
    for hook in OUTCOME_HOOKS:
        hook(action, outcome, details)


class ActionError(Exception):
    """A refusal the agent sees: ``code``, ``message`` in their language, an HTTP status."""

    def __init__(self, code: str, message: str, status: int = 409):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def not_found() -> ActionError:
    return ActionError("not_found", _("This after-sale does not exist, or it belongs to a shop you do not serve."), 404)


def allowed_kinds(after_sale: AfterSale) -> list[AfterSaleActionKind]:
    """What the after-sale's current type and status allow, in the order buttons are shown."""
    status, kind = after_sale.status, after_sale.type
    if status == S.MERCHANT_PROCESSING:
        approve = Kind.APPROVE_REFUND if kind == AfterSaleType.REFUND else Kind.APPROVE_RETURN
        return [approve, Kind.REJECT]
    if status == S.MERCHANT_WAIT_RECEIPT:
        # Exchanges ship a new item instead of refunding: the contract has no call for that step.
        return [Kind.CONFIRM_RECEIPT, Kind.REJECT] if kind == AfterSaleType.RETURN else [Kind.REJECT]
    return []


def error_text(action: AfterSaleAction, current_status: str | None = None) -> str:
    """The failure of an action in the user's language (``current_status``: the after-sale's now)."""
    code = action.error_code or "rejected"
    if code == "state_changed":
        return _(
            "The after-sale changed on the platform meanwhile (now: %(status)s).",
            status=after_sale_status(current_status or ""),
        )
    return str(ERROR_TEXT.get(code, ERROR_TEXT["rejected"]))


def pending_action(after_sale_pk: int) -> AfterSaleAction | None:
    return db.session.scalar(
        sa.select(AfterSaleAction).where(
            AfterSaleAction.after_sale_pk == after_sale_pk, AfterSaleAction.state == AfterSaleActionState.PENDING
        )
    )


def _by_request(request_id: str, after_sale_pk: int) -> AfterSaleAction | None:
    """The action this request id made for this after-sale (by the after-sale's index, whatever the scope)."""
    return db.session.scalar(
        sa.select(AfterSaleAction).where(
            AfterSaleAction.after_sale_pk == after_sale_pk, AfterSaleAction.request_id == request_id
        )
    )


def outbox_key(request_id: str) -> str:
    return f"aftersale:{request_id}"


def request_action(
    user: User,
    after_sale_pk: int,
    kind: str,
    request_id: str,
    *,
    address_pk: int | None = None,
    reject_reason_type: int | None = None,
    reject_reason: str | None = None,
) -> tuple[AfterSaleAction, bool]:
    """Queue an action; returns it and whether it is new. The caller wakes the outbox."""
    if not REQUEST_ID_RE.match(request_id or ""):
        raise ActionError("invalid", _("The action has no valid request id; reload the page."), 400)
    try:
        kind = AfterSaleActionKind(kind)
    except ValueError:
        raise ActionError("invalid", _("Unknown action."), 400) from None
    after_sale = db.session.scalar(locked(sa.select(AfterSale).where(AfterSale.id == after_sale_pk)))
    if after_sale is None:  # (its actions went with it: ON DELETE CASCADE)
        raise not_found()
    # Under the after-sale's lock, in one query: this request's action (a resend after a lost answer,
    # or the id of an action on another after-sale) and the after-sale's pending one (a double click).
    existing, pending = None, None
    for found in db.session.scalars(
        sa.select(AfterSaleAction).where(
            sa.or_(
                sa.and_(AfterSaleAction.shop_id == after_sale.shop_id, AfterSaleAction.request_id == request_id),
                sa.and_(AfterSaleAction.after_sale_pk == after_sale.id,
                        AfterSaleAction.state == AfterSaleActionState.PENDING),
            )
        )
    ):
        if found.request_id == request_id:
            existing = found
        elif found.after_sale_pk == after_sale.id:
            pending = found
    if existing is not None:
        resend = existing.after_sale_pk == after_sale.id  # read before the rollback expires the rows
        db.session.rollback()
        if resend:
            return existing, False
        raise ActionError("invalid", _("The action has no valid request id; reload the page."), 400)
    if pending is not None:
        same_kind = pending.kind == kind
        db.session.rollback()
        if same_kind:
            return pending, False  # a double click: the first click's action
        raise ActionError("conflict", _("Another action on this after-sale is being sent to the platform."))
    if kind not in allowed_kinds(after_sale):
        raise ActionError(
            "forbidden_transition",
            _(
                "%(action)s is not possible while the after-sale is “%(status)s”.",
                action=KIND_LABEL[kind],
                status=after_sale_status(after_sale.status),
            ),
        )
    action = AfterSaleAction(
        shop_id=after_sale.shop_id,
        after_sale_pk=after_sale.id,
        after_sale_order_id=after_sale.after_sale_order_id,
        order_id=after_sale.order_id,
        kind=kind.value,
        state=AfterSaleActionState.PENDING.value,
        request_id=request_id,
        from_status=after_sale.status,
        requested_by_id=user.id,
    )
    if kind == Kind.APPROVE_RETURN:
        _choose_address(action, after_sale, address_pk)
    if kind == Kind.REJECT:
        if not isinstance(reject_reason_type, int) or isinstance(reject_reason_type, bool) or reject_reason_type <= 0:
            raise ActionError("invalid", _("Choose a reason from the platform's list."), 400)
        action.reject_reason_type = reject_reason_type
        action.reject_reason = (reject_reason or "").strip()[:200] or None
    try:
        return _queue(user, after_sale, action), True
    except IntegrityError:
        # A concurrent request won a race the row lock did not cover.
        db.session.rollback()
        existing = _by_request(request_id, after_sale_pk) or pending_action(after_sale_pk)
        if existing is not None and existing.kind == kind:
            return existing, False
        raise ActionError("conflict", _("Another action on this after-sale is being sent to the platform.")) from None


def _queue(user: User, after_sale: AfterSale, action: AfterSaleAction) -> AfterSaleAction:
    """Add the action, its outbox call and its audit entry; commit; announce."""
    kind, request_id = AfterSaleActionKind(action.kind), action.request_id
    db.session.add(action)
    db.session.flush()
    payload = {
        "action_id": action.id,
        "kind": kind.value,
        "after_sale_order_id": action.after_sale_order_id,
        "order_id": action.order_id,
        "address_id": action.address_id,
        "reject_reason_type": action.reject_reason_type,
        "reject_reason": action.reject_reason,
        # What the approval was for: a buyer who changes the amount meanwhile gets a new decision.
        "amount_fen": after_sale.refund_amount_fen,
    }
    outbox.enqueue(
        action.shop_id,
        OPERATION,
        payload,
        outbox_key(request_id),
        # Calls about one order go out one at a time: the refund-per-minute limit is per order.
        subject=("order", action.order_id),
        created_by_id=user.id,
    )
    audit.record(
        f"after_sale.{kind.value}",
        user=user,
        shop_id=action.shop_id,
        subject_kind="after_sale",
        subject_id=action.after_sale_order_id,
        details={
            "request_id": request_id,
            "order_id": action.order_id,
            "from_status": action.from_status,
            "type": after_sale.type,
            "amount_fen": after_sale.refund_amount_fen,
            "address_id": action.address_id,
            "address_source": action.address_source,
            "address_fallback": action.address_fallback or None,
            "address_warnings": getattr(action, "address_warnings", None),
            "reject_reason_type": action.reject_reason_type,
            "reject_reason": action.reject_reason,
        },
    )
    announce = _announce_action(action)  # built before the commit expires the rows it reads
    db.session.commit()
    announce()
    return action


def _choose_address(action: AfterSaleAction, after_sale: AfterSale, address_pk: int | None) -> None:
    resolution = resolver.resolve(after_sale.shop_id, after_sale.product_id, after_sale.sku_id)
    if address_pk is not None and (resolution.address is None or resolution.address.id != address_pk):
        address = db.session.get(ReturnAddress, address_pk)
        if address is None or address.shop_id != after_sale.shop_id or not resolver.usable(address):
            raise ActionError("invalid", _("Pick one of the shop's return addresses."), 400)
        source = AddressSource.MANUAL
    else:
        address, source = resolution.address, resolution.source
    # Bindings skipped on the way (deleted on the platform, no longer a return address): recorded on
    # the action and in the audit entry, whatever was finally used.
    action.address_warnings = [
        {"kind": w.kind.value, "scope": w.scope.value, "address_name": w.address_name} for w in resolution.warnings
    ] or None
    action.address_fallback = bool(resolution.warnings) and source is not AddressSource.MANUAL
    if address is None:
        raise ActionError(
            "address_required",
            _("No return address is bound to this product and the shop has no default one. Pick an address."),
            400,
        )
    action.address_pk = address.id
    action.address_id = address.address_id
    action.address_source = source.value


def _announce_action(action: AfterSaleAction, buyer: dict | None = None):
    """``buyer``: ``inbox.buyer_of`` the action's after-sale, when the caller has it."""
    ids = {"action_id": action.id, "after_sale_pk": action.after_sale_pk, "kind": action.kind, "state": action.state}
    if buyer is None:
        after_sale = db.session.get(AfterSale, action.after_sale_pk)  # in the session: no query
        buyer = inbox.buyer_of(after_sale) if after_sale is not None else None
    if buyer is not None:
        ids.update(buyer, after_sale_order_id=action.after_sale_order_id)
    shop_id = action.shop_id
    return lambda: events.emit(events.after_sale_action_changed, shop_id, **ids)


def queued_for_refund_limit(action: AfterSaleAction) -> datetime | None:
    """When a pending action waits for the refund-per-minute limit: the time it goes, else None."""
    return queued_for_refund_limits([action]).get(action.id)


def queued_for_refund_limits(pending: list[AfterSaleAction]) -> dict[int, datetime]:
    """``queued_for_refund_limit`` for many actions in one query (action id -> when it goes)."""
    waiting = {
        outbox_key(a.request_id): a for a in pending if a.state == AfterSaleActionState.PENDING and a.kind in REFUNDING
    }
    if not waiting:
        return {}
    now = utcnow()
    found = {}
    for call in db.session.scalars(
        sa.select(OutboxCall).where(
            # Both columns of the unique (shop_id, idempotency_key) index.
            OutboxCall.shop_id.in_(sorted({a.shop_id for a in waiting.values()})),
            OutboxCall.idempotency_key.in_(sorted(waiting)),
            OutboxCall.last_errcode == REFUND_TOO_FAST,
        )
    ):
        action = waiting.get(call.idempotency_key)
        if action is not None and call.shop_id == action.shop_id and call.next_attempt_at > now:
            found[action.id] = call.next_attempt_at
    return found


# --- the outbox handler ------------------------------------------------------------------------------


def _as_stored(payload: dict, shop_id: int) -> tuple[AfterSaleAction | None, AfterSale | None, datetime | None]:
    """The action and its after-sale as stored now and, for a refund, when the order's last other
    refund went out (the platform allows one a minute): one query."""
    last = None
    if AfterSaleActionKind(payload["kind"]) in REFUNDING:
        last = (
            sa.select(sa.func.max(AfterSaleAction.completed_at))
            .where(
                AfterSaleAction.shop_id == shop_id,
                AfterSaleAction.order_id == payload["order_id"],
                AfterSaleAction.kind.in_([k.value for k in REFUNDING]),
                AfterSaleAction.state == AfterSaleActionState.SUCCEEDED,
                AfterSaleAction.id != payload["action_id"],
            )
            .scalar_subquery()
        )
    found = db.session.execute(
        sa.select(AfterSaleAction, AfterSale, last if last is not None else sa.null())
        .join(AfterSale, AfterSale.id == AfterSaleAction.after_sale_pk)
        .where(AfterSaleAction.id == payload["action_id"])
    ).first()
    return tuple(found) if found is not None else (None, None, None)


def _too_fast(api: str, until: datetime, errmsg: str = "one refund per order per minute") -> RateLimited:
    return RateLimited(
        f"{api}: errcode {REFUND_TOO_FAST} {errmsg}", api=api, errcode=REFUND_TOO_FAST, errmsg=errmsg, until=until
    )


def _read_back(client, after_sale_order_id: str) -> dict | None:
    try:
        return client.get_after_sale(after_sale_order_id)
    except PlatformError:
        return None  # the push or the poller will bring the new status


def _check_before_sending(payload: dict, action: AfterSaleAction | None, after_sale: AfterSale | None) -> None:
    """The case as stored now must still be the one the action was asked for: same amount (a buyer
    may raise it while the call waits), and every registered check agrees."""
    if action is None or after_sale is None:
        return
    expected = payload.get("amount_fen")
    kind = AfterSaleActionKind(payload["kind"])
    if kind in REFUNDING and expected is not None and after_sale.refund_amount_fen != expected:
        raise ActionWithdrawn(
            f"the refund amount changed from {expected} to {after_sale.refund_amount_fen} fen since it was asked"
        )
    for check in PRE_SEND_CHECKS:
        check(action, after_sale)


def _perform(shop: Shop, call: OutboxCall) -> dict:
    payload = dict(call.payload)
    kind = AfterSaleActionKind(payload["kind"])
    after_sale_order_id = payload["after_sale_order_id"]
    action, after_sale, last = _as_stored(payload, shop.id)
    try:
        _check_before_sending(payload, action, after_sale)
    finally:
        commit_keeping(db.session, shop)  # no transaction open while the platform answers
    client = client_for(shop)
    api = "/channels/ec/aftersale/acceptapply"
    if last is not None and utcnow() - last < REFUND_SPACING:
        raise _too_fast(api, last + REFUND_SPACING + timedelta(milliseconds=500))
    started = utcnow()
    try:
        if kind == Kind.APPROVE_REFUND:
            client.accept_after_sale(after_sale_order_id)
        elif kind == Kind.APPROVE_RETURN:
            client.accept_after_sale(after_sale_order_id, address_id=payload["address_id"], accept_type=1)
        elif kind == Kind.CONFIRM_RECEIPT:
            client.accept_after_sale(after_sale_order_id, accept_type=2)
        else:
            client.reject_after_sale(
                after_sale_order_id, int(payload["reject_reason_type"]), payload.get("reject_reason")
            )
    except BusinessError as exc:
        if exc.errcode == REFUND_TOO_FAST:
            raise _too_fast(exc.api, utcnow() + REFUND_SPACING, exc.errmsg or "") from None
        if exc.errcode in DEFINITIVE:
            raise
        detail = _read_back(client, after_sale_order_id)
        if detail is not None and detail.get("status") in DONE[kind]:
            # Our earlier attempt went through (its answer was lost): the platform refuses the repeat.
            return {"after_sale": detail, "fetched_at": started.isoformat(), "already": True}
        exc.after_sale = detail
        exc.fetched_at = started
        raise
    return {"after_sale": _read_back(client, after_sale_order_id), "fetched_at": started.isoformat()}


def _store_detail(shop_id: int, detail: dict | None, fetched_at: datetime):
    """Store the after-sale as read back after the call: (its announcements, the upsert, who its
    buyer is for the action's own announcement); ([], None, None) when nothing was read back."""
    if not detail:
        return [], None, None
    stored = upsert_after_sale(shop_id, detail, fetched_at)
    buyer = inbox.buyer_of(stored.row, stored.customer)
    return [inbox.announce_after_sale(shop_id, stored, buyer)], stored, buyer


def _succeeded(call: OutboxCall, answer: dict) -> list:
    action = db.session.get(AfterSaleAction, call.payload["action_id"])
    if action is None:
        return []
    action.state = AfterSaleActionState.SUCCEEDED.value
    action.completed_at = utcnow()
    announcements, stored, buyer = _store_detail(
        action.shop_id,
        answer.get("after_sale"),
        datetime.fromisoformat(answer.get("fetched_at") or utcnow().isoformat()),
    )
    after_sale = stored.row if stored is not None else db.session.get(AfterSale, action.after_sale_pk)
    if after_sale is not None and action.kind == Kind.APPROVE_RETURN:
        after_sale.return_address_pk = action.address_pk
        after_sale.return_address_source = action.address_source
    details = {
        "status": after_sale.status if after_sale is not None else None,
        "repeat_confirmed": bool(answer.get("already")),
    }
    _audit_outcome(action, "succeeded", details)
    _run_outcome_hooks(action, "succeeded", details)
    db.session.flush()
    return [*announcements, _announce_action(action, buyer)]


def failure_code(exc: Exception, detail: dict | None, from_status: str) -> str:
    errcode = getattr(exc, "errcode", None)
    if errcode == NEGOTIATE_FIRST:
        return "negotiate_first"
    if errcode == ADDRESS_MISSING:
        return "address_missing"
    if errcode == ADDRESS_INVALID:
        return "address_invalid"
    if errcode == REFUND_TOO_FAST:
        return "refund_too_fast"
    if detail is not None and detail.get("status") and detail["status"] != from_status:
        return "state_changed"
    if isinstance(exc, NotAuthorized):
        return "not_authorised"
    if isinstance(exc, QuotaExhausted | ApiBlocked):
        return "blocked"
    if isinstance(exc, PlatformUnavailable):
        return "unavailable"
    if isinstance(exc, BadRequest):
        return "bad_request"
    if isinstance(exc, ActionWithdrawn):
        return "withdrawn"
    return "rejected"


def _failed(call: OutboxCall, exc: Exception) -> list:
    action = db.session.get(AfterSaleAction, call.payload["action_id"])
    if action is None:
        return []
    detail = getattr(exc, "after_sale", None)
    code = failure_code(exc, detail, action.from_status)
    action.state = AfterSaleActionState.FAILED.value
    action.completed_at = utcnow()
    action.error_code = code
    action.errcode = getattr(exc, "errcode", None)
    action.errmsg = (getattr(exc, "errmsg", None) or str(exc))[:500]
    announcements, _stored, buyer = _store_detail(
        action.shop_id, detail, getattr(exc, "fetched_at", None) or utcnow()
    )
    details = {"error": code, "errcode": action.errcode, "errmsg": action.errmsg}
    _audit_outcome(action, "failed", details)
    _run_outcome_hooks(action, "failed", details)
    db.session.flush()
    return [*announcements, _announce_action(action, buyer)]


# Refund calls may wait up to two minutes for the per-order limit without failing.
outbox.register(OPERATION, outbox.Handler(perform=_perform, succeeded=_succeeded, failed=_failed))


def _audit_outcome(action: AfterSaleAction, outcome: str, details: dict) -> None:
    """How an action ended, as an audit entry of its after-sale, in the name of who asked for it."""
    audit.record(
        f"after_sale.{action.kind}.{outcome}",
        user=db.session.get(User, action.requested_by_id) if action.requested_by_id else None,
        shop_id=action.shop_id,
        subject_kind="after_sale",
        subject_id=action.after_sale_order_id,
        details={"request_id": action.request_id, **details},
    )
