"""The durable outbox: every call the desk owes the platform, made once, retried, or failed visibly.

- ``enqueue`` adds a call in the caller's transaction (with the message or action it belongs to), so
  a call exists exactly when its cause was committed. Its ``idempotency_key`` is unique per shop and is
  the platform's ``request_id`` where the API takes one: a call made twice is delivered once.
- ``claim`` / ``process_claimed``: any process may work the outbox, like the inbox (claim tokens,
  leases, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL). Calls about the same subject (a conversation)
  go out in order: a call is not claimed while an earlier one of its subject is still pending.
- Each operation registers a handler: ``perform`` makes the HTTP call (no database lock is held
  meanwhile); ``succeeded`` / ``failed`` record the outcome in the same transaction that closes the
  call, and return announcements made after the commit.
- Retryable errors (busy, unavailable, per-minute quota) back off and retry; permanent ones, or too
  many attempts, fail the call with its reason. ``retry`` sends a failed call again, same key.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm.attributes import set_committed_value

from app import tenancy
from app.db import claim_rows, claimed_ids, commit_keeping, in_turn, insert_new, sql_literals, utcnow
from app.extensions import db
from app.ingest import worker
from app.ingest.inbox import Claim
from app.models import OutboxCall, OutboxStatus, Shop
from app.platform.client import PlatformError

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=2)
Announcement = Callable[[], None]


@dataclass(frozen=True)
class Handler:
    # (shop, call) -> the platform's answer; raises PlatformError on failure.
    perform: Callable[[Shop, OutboxCall], dict]
    # (call, answer) -> announcements; runs in the transaction that marks the call succeeded.
    succeeded: Callable[[OutboxCall, dict], list[Announcement]]
    # (call, error) -> announcements; runs in the transaction that marks the call failed.
    failed: Callable[[OutboxCall, PlatformError | Exception], list[Announcement]]
    # A block (quota, rate limit) lifting later than this fails the call instead of holding it.
    max_defer: timedelta = timedelta(minutes=2)


HANDLERS: dict[str, Handler] = {}


def register(operation: str, handler: Handler) -> None:
    HANDLERS[operation] = handler


def _new_call(
    shop_id: int, operation: str, payload: dict[str, Any], key: str, subject: tuple[str, str] | None
) -> dict[str, Any]:
    """The columns of a call to queue (either way of queueing one)."""
    if operation not in HANDLERS:
        raise KeyError(f"no outbox handler for {operation!r}")
    return {
        "shop_id": shop_id,
        "idempotency_key": key,
        "operation": operation,
        "payload": payload,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": utcnow(),
        "subject_kind": subject[0] if subject else None,
        "subject_id": subject[1] if subject else None,
    }


def enqueue(
    shop_id: int,
    operation: str,
    payload: dict[str, Any],
    key: str,
    *,
    subject: tuple[str, str] | None = None,
    created_by_id: int | None = None,
) -> OutboxCall:
    """Add a call in the current transaction; the caller commits and then calls ``wake``."""
    call = OutboxCall(**_new_call(shop_id, operation, payload, key, subject), created_by_id=created_by_id)
    db.session.add(call)
    db.session.flush()
    return call


def enqueue_once(
    shop_id: int, operation: str, payload: dict[str, Any], key: str, *, subject: tuple[str, str] | None = None
) -> int | None:
    """Add a call unless the shop has one with this key, in the current transaction (one
    ``INSERT ... ON CONFLICT DO NOTHING``): the new call's id, None when the key was queued before
    (a re-delivered push, a concurrent worker). The caller commits and then calls ``wake``."""
    values = _new_call(shop_id, operation, payload, key, subject)
    session = db.session()
    scope = tenancy.get_scope(session)
    # A scoped session (an agent's request) refuses Core statements on shop tables: checked here.
    if scope is not None and shop_id not in scope:
        raise tenancy.TenantViolation(f"outbox call for shop {shop_id} outside the session's scope")
    with tenancy.system_scope(session) if scope is not None else contextlib.nullcontext():
        return insert_new(session, OutboxCall.__table__, values).scalar()


def retry(call: OutboxCall) -> None:
    """Send a failed call again with the same key (the platform answers a repeat, it does not redo it)."""
    call.status = OutboxStatus.PENDING
    call.attempts = 0
    call.next_attempt_at = utcnow()
    call.last_error = None
    call.last_errcode = None
    call.claim_token = None
    call.completed_at = None


def _mine(call_id: int, token: str):
    return sa.and_(
        OutboxCall.id == call_id, OutboxCall.status == OutboxStatus.IN_FLIGHT, OutboxCall.claim_token == token
    )


# Literal, to match ix_outbox_calls_unfinished's predicate in prepared statements (app/db.py).
UNFINISHED = sql_literals(OutboxStatus.PENDING.value, OutboxStatus.IN_FLIGHT.value)
# Two lanes. Work the rule engine queues for itself (evaluations) waits while anything a person or a
# decision is waiting on is due: an agent's reply, an approval. In a livestream's burst hundreds of
# evaluations queue up; the approvals they produce (and the agents' replies) go first, instead of
# behind every evaluation queued before them. Matches ix_outbox_calls_urgent_unfinished (literal).
BACKGROUND_OPERATION = "rules.evaluate"
URGENT = sa.text(f"outbox_calls.operation <> '{BACKGROUND_OPERATION}'")


def _in_turn():
    """Per-subject order: a call with a subject goes only when no earlier call of it is unfinished."""
    return in_turn(OutboxCall, UNFINISHED, "subject_kind", "subject_id")


@functools.cache
def _claim_statement(dialect: str, limit: int, lane: str) -> sa.Update:
    """The claim, built once per dialect, batch size and lane; ``now``, ``lease_until``, ``token``
    bound per call. The first lane: the urgent calls."""
    columns = OutboxCall.__table__.c
    now = sa.bindparam("now", type_=columns.next_attempt_at.type)
    # Pending, or in flight with its lease run out; matches ix_outbox_calls_unfinished (see the inbox's).
    due = sa.and_(OutboxCall.status.in_(UNFINISHED), OutboxCall.next_attempt_at <= now)

    def candidates(urgent_only: bool) -> sa.Select:
        picked = (
            sa.select(OutboxCall.id)
            .where(sa.and_(due, URGENT) if urgent_only else due, _in_turn())
            .order_by(OutboxCall.id)
            .limit(limit)
        )
        return picked.with_for_update(skip_locked=True, of=OutboxCall) if dialect == "postgresql" else picked

    return (
        sa.update(OutboxCall)
        .where(claimed_ids(OutboxCall.id, dialect, lane, candidates))
        .values(
            status=OutboxStatus.IN_FLIGHT,
            next_attempt_at=sa.bindparam("lease_until", type_=columns.next_attempt_at.type),
            claim_token=sa.bindparam("token", type_=columns.claim_token.type),
            # Taking over an expired lease counts as an attempt: a call that kills its process
            # each time is not retried forever.
            attempts=sa.case(
                (OutboxCall.status == OutboxStatus.IN_FLIGHT, OutboxCall.attempts + 1), else_=OutboxCall.attempts
            ),
        )
        .returning(OutboxCall.id)
        .execution_options(synchronize_session=False)
    )


@functools.cache
def _claim_one_statement() -> sa.Update:
    """Claim one given call (``:call_id``) if it is pending, due and not behind an unfinished call
    of its subject: the conditions of ``_claim_statement``, for a call its own enqueuer works at once."""
    columns = OutboxCall.__table__.c
    return (
        sa.update(OutboxCall)
        .where(
            OutboxCall.id == sa.bindparam("call_id", type_=sa.Integer),
            OutboxCall.status == OutboxStatus.PENDING,
            OutboxCall.next_attempt_at <= sa.bindparam("now", type_=columns.next_attempt_at.type),
            _in_turn(),
        )
        .values(
            status=OutboxStatus.IN_FLIGHT,
            next_attempt_at=sa.bindparam("lease_until", type_=columns.next_attempt_at.type),
            claim_token=sa.bindparam("token", type_=columns.claim_token.type),
        )
        .returning(OutboxCall.id)
        .execution_options(synchronize_session=False)
    )


def claim_one(call_id: int) -> Claim:
    """Take this one call under a fresh token (committed), or nothing: another worker has it, it is
    not due, or an earlier call of its subject is unfinished (then the workers take it in turn).
    A row another claim is taking is waited for and then seen as taken: never claimed twice."""
    now = utcnow()
    token = uuid.uuid4().hex
    params = {"call_id": call_id, "now": now, "lease_until": now + LEASE, "token": token}
    ids = list(db.session.connection().execute(_claim_one_statement(), params).scalars())
    db.session.commit()
    return Claim(token, ids)


def claim(limit: int = 10) -> Claim:
    """Take up to ``limit`` due calls under a fresh token (committed). Same design as the inbox's,
    in two lanes: the urgent calls first; evaluations only when no urgent call is due."""
    now = utcnow()
    token = uuid.uuid4().hex
    params = {"now": now, "lease_until": now + LEASE, "token": token}
    dialect = db.engine.dialect.name
    rows = claim_rows(db.session.connection(), lambda lane: _claim_statement(dialect, limit, lane), params)
    ids = sorted(call_id for (call_id,) in rows)
    db.session.commit()
    return Claim(token, ids)


def process_claimed(claimed: Claim) -> int:
    """Make each claimed call; returns how many succeeded."""
    done = 0
    for call_id in claimed.ids:
        call = db.session.scalar(sa.select(OutboxCall).where(_mine(call_id, claimed.token)))
        if call is None:
            db.session.rollback()
            continue
        handler = HANDLERS.get(call.operation)
        shop = db.session.get(Shop, call.shop_id)
        # No transaction (and no lock) held while the platform answers; the call and its shop are
        # used as just read (nothing wrote them since the claim), not read again.
        commit_keeping(db.session, call, shop)
        as_claimed = {key: getattr(call, key) for key in _columns()}
        try:
            if handler is None:
                raise RuntimeError(f"no outbox handler for {call.operation!r}")
            answer = handler.perform(shop, call)
        except Exception as exc:
            if not isinstance(exc, PlatformError):
                log.exception("outbox call %s (%s) crashed", call_id, call.operation)
            _expire(call, shop)  # the outcome is written from the rows as read then
            _retry_or_fail(call_id, claimed.token, handler, exc)
            continue
        _expire(shop)
        announcements = _succeed(call_id, call, as_claimed, claimed.token, handler, answer)
        if announcements is None:
            continue
        done += 1
        announce_all(announcements)
    return done


def _expire(*rows) -> None:
    """What was kept across the platform call is read again when next used (a SELECT does not
    refresh a row the session holds unexpired)."""
    for row in rows:
        if row is not None and row in db.session:
            db.session.expire(row)


def announce_all(announcements: list[Announcement]) -> None:
    """Run announcements after a commit; one that fails is logged and never stops the others or the queue."""
    for announce in announcements:
        try:
            announce()
        except Exception:
            log.exception("announcement after an outbox call failed")


def _held(call_id: int, token: str) -> OutboxCall | None:
    """The call, locked until commit, if this claim still holds it (a takeover cannot slip in between)."""
    from app.ingest.store import locked

    return db.session.scalar(locked(sa.select(OutboxCall).where(_mine(call_id, token))))


@functools.cache
def _succeeded_statement() -> sa.Update:
    """Succeeded, if this claim still holds the call (``_mine``'s condition; bound: ``call_id``,
    ``token``, ``answer``, ``completed``); returns the attempts. Built once: every call runs one."""
    table = OutboxCall.__table__
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("call_id"), table.c.status == OutboxStatus.IN_FLIGHT,
               table.c.claim_token == sa.bindparam("token"))
        .values(status=OutboxStatus.SUCCEEDED, attempts=table.c.attempts + 1, last_error=None, claim_token=None,
                response=sa.bindparam("answer", type_=table.c.response.type),
                completed_at=sa.bindparam("completed", type_=table.c.completed_at.type))
        .returning(table.c.attempts)
    )


@functools.cache
def _columns() -> tuple[str, ...]:
    return tuple(attr.key for attr in sa.inspect(OutboxCall).column_attrs)


def _succeed(call_id: int, call: OutboxCall, as_claimed: dict[str, Any], token: str, handler: Handler,
             answer: dict) -> list[Announcement] | None:
    """Mark the call succeeded and run its handler in one transaction. The UPDATE is guarded by the
    claim and holds the row until the commit, so a takeover cannot slip in between. The handler
    gets the call as claimed (its key, operation and payload never change while a claim holds it)
    with what the UPDATE wrote, not read again (a handler that commits has expired it)."""
    completed_at = utcnow()
    params = {"call_id": call_id, "token": token, "answer": answer, "completed": completed_at}
    attempts = db.session.connection().execute(_succeeded_statement(), params).scalar()
    if attempts is None:  # the lease was taken over; the other worker's outcome stands
        db.session.rollback()
        return None
    written = {"status": OutboxStatus.SUCCEEDED, "attempts": attempts, "response": answer,
               "completed_at": completed_at, "last_error": None, "claim_token": None}
    for key, value in {**as_claimed, **written}.items():
        set_committed_value(call, key, value)
    announcements = handler.succeeded(call, answer)
    db.session.commit()
    return announcements


def _retry_or_fail(call_id: int, token: str, handler: Handler | None, exc: Exception) -> None:
    call = _held(call_id, token)
    if call is None:
        db.session.rollback()
        return
    call.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    call.last_errcode = getattr(exc, "errcode", None)
    now = utcnow()
    until = getattr(exc, "until", None)
    max_defer = handler.max_defer if handler else timedelta(0)
    if until is not None and until - now <= max_defer:
        # A per-minute quota: not this call's fault; wait without using up an attempt.
        call.status = OutboxStatus.PENDING
        call.next_attempt_at = until
        db.session.commit()
        worker.wake_when_due("outbox", until)
        return
    call.attempts += 1
    retryable = isinstance(exc, PlatformError) and exc.retryable and until is None
    announcements: list[Announcement] = []
    due = None
    if retryable and call.attempts < current_app.config["OUTBOX_MAX_ATTEMPTS"]:
        call.status = OutboxStatus.PENDING
        base = current_app.config["OUTBOX_RETRY_BASE_SECONDS"]
        call.next_attempt_at = due = now + timedelta(seconds=min(60.0, base * 2 ** (call.attempts - 1)))
    else:
        call.status = OutboxStatus.FAILED
        call.completed_at = now
        call.claim_token = None
        log.warning("outbox call %s (%s) failed: %s", call_id, call.operation, call.last_error)
        if handler is not None:
            announcements = handler.failed(call, exc)
    db.session.commit()
    if due is not None:
        worker.wake_when_due("outbox", due)
    announce_all(announcements)
