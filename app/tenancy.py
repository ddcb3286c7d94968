"""Shop scoping: one mechanism limits every ORM statement to the shops the current user serves.

How it works
------------
Every model that belongs to a shop derives from :class:`ShopScoped`, which adds a ``shop_id`` column
(required, unless a model redeclares it nullable, like the audit log). A session carries a *scope* in
``session.info``:

- ``None`` (the default): unrestricted. CLI commands, scheduler jobs and admins run like this.
- a frozenset of shop ids: every ORM SELECT, UPDATE and DELETE of a tenant model gets
  ``shop_id IN (scope)`` added (``with_loader_criteria``, which also follows relationship loads),
  ``Shop`` rows get ``id IN (scope)``, and a flush that would write a row of another shop raises
  :class:`TenantViolation`.

The web layer sets the scope once per request from the signed-in user (see app/auth/access.py), so a
route cannot forget it: a query for another shop's row simply finds nothing (404). Code that must see
across shops on behalf of the system (the webhook intake) says so with :func:`system_scope`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, with_loader_criteria

SCOPE_KEY = "channeldesk.shop_scope"


class TenantViolation(PermissionError):
    """A write touched a shop outside the session's scope."""


class ShopScoped:
    """Rows of this model belong to the shop named by ``shop_id`` (a required, indexed foreign key)."""

    shop_id: Mapped[int] = mapped_column(sa.ForeignKey("shops.id", ondelete="CASCADE"), index=True)


def get_scope(session: Session) -> frozenset[int] | None:
    return session.info.get(SCOPE_KEY)


def set_scope(session: Session, shop_ids: Iterable[int] | None) -> None:
    session.info[SCOPE_KEY] = None if shop_ids is None else frozenset(shop_ids)


@contextmanager
def system_scope(session: Session) -> Iterator[None]:
    """Run a block unrestricted (e.g. the webhook intake resolving a shop by its URL key)."""
    previous = session.info.get(SCOPE_KEY)
    session.info[SCOPE_KEY] = None
    try:
        yield
    finally:
        session.info[SCOPE_KEY] = previous


def install(shop_model: type) -> None:
    """Attach the scoping listeners to every Session (idempotent)."""
    if event.contains(Session, "do_orm_execute", _scope_statement):
        return
    _state["shop_model"] = shop_model
    event.listen(Session, "do_orm_execute", _scope_statement)
    event.listen(Session, "before_flush", _guard_writes)


_state: dict[str, type] = {}


def _scope_statement(state: ORMExecuteState) -> None:
    scope = get_scope(state.session)
    if scope is None:
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    # Column refreshes and relationship loads inherit the criteria from the statement that
    # loaded their parent; adding them again is redundant.
    if state.is_column_load or state.is_relationship_load:
        return
    ids = sorted(scope)
    shop_model = _state["shop_model"]
    state.statement = state.statement.options(
        with_loader_criteria(ShopScoped, lambda cls: cls.shop_id.in_(ids), include_aliases=True),
        with_loader_criteria(shop_model, lambda cls: cls.id.in_(ids), include_aliases=True),
    )


def _guard_writes(session: Session, flush_context, instances) -> None:
    scope = get_scope(session)
    if scope is None:
        return
    shop_model = _state["shop_model"]
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, shop_model):
            if obj.id is None or obj.id not in scope:
                raise TenantViolation(f"shop {obj.id!r} is outside this session's scope")
        elif isinstance(obj, ShopScoped):
            shop_id = obj.shop_id
            if shop_id is None and not obj.__table__.c.shop_id.nullable:
                raise TenantViolation(f"{type(obj).__name__} without a shop in a scoped session")
            if shop_id is not None and shop_id not in scope:
                raise TenantViolation(f"{type(obj).__name__} of shop {shop_id} is outside this session's scope")
