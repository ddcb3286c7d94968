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

Rows loaded before a scope is set are evicted when it is set (``session.get`` would otherwise answer
from the identity map without SQL). Core statements on shop tables and ORM INSERT statements are
refused in a scoped session; raw ``text()`` SQL is outside the mechanism and not used in request code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column, with_loader_criteria
from sqlalchemy.sql.util import find_tables

SCOPE_KEY = "channeldesk.shop_scope"


class TenantViolation(PermissionError):
    """A write touched a shop outside the session's scope."""


class ShopScoped:
    """Rows of this model belong to the shop named by ``shop_id`` (a required, indexed foreign key)."""

    shop_id: Mapped[int] = mapped_column(sa.ForeignKey("shops.id", ondelete="CASCADE"), index=True)


def get_scope(session: Session) -> frozenset[int] | None:
    return session.info.get(SCOPE_KEY)


def set_scope(session: Session, shop_ids: Iterable[int] | None) -> None:
    """Restrict (or, with None, free) the session, and evict already-loaded rows outside the scope.

    Eviction matters because ``session.get`` answers from the identity map without SQL: a shop row
    loaded before the scope was set (e.g. with the user's shop list) must not be found afterwards.
    """
    scope = None if shop_ids is None else frozenset(shop_ids)
    session.info[SCOPE_KEY] = scope
    if scope is not None:
        _evict_outside(session, scope)


@contextmanager
def system_scope(session: Session) -> Iterator[None]:
    """Run a block unrestricted (e.g. the webhook intake resolving a shop by its URL key).

    On the way out, pending changes are flushed while still unrestricted and whatever the block
    loaded outside the previous scope is evicted.
    """
    previous = session.info.get(SCOPE_KEY)
    session.info[SCOPE_KEY] = None
    try:
        yield
        session.flush()
    finally:
        set_scope(session, previous)


def _row_shop_id(obj) -> int | bool | None:
    """The shop a loaded row belongs to, read without touching the database; False if not a tenant row."""
    state = sa.inspect(obj)
    if isinstance(obj, _state["shop_model"]):
        return state.identity[0] if state.identity else None
    if isinstance(obj, ShopScoped):
        return state.dict.get("shop_id")  # None when expired: evicted, reloaded under the scope if needed
    return False


def _evict_outside(session: Session, scope: frozenset[int]) -> None:
    for obj in list(session.identity_map.values()):
        shop_id = _row_shop_id(obj)
        # expunge() cascades (an order takes its items along): skip what already left.
        if shop_id is not False and shop_id not in scope and obj in session:
            session.expunge(obj)


def install(shop_model: type) -> None:
    """Attach the scoping listeners to every Session (idempotent)."""
    if event.contains(Session, "do_orm_execute", _scope_statement):
        return
    _state["shop_model"] = shop_model
    event.listen(Session, "do_orm_execute", _scope_statement)
    event.listen(Session, "before_flush", _guard_writes)


_state: dict[str, type] = {}
_tenant_tables: set[sa.Table] = set()


def _tables_of_tenants() -> set[sa.Table]:
    if not _tenant_tables:
        shop_model = _state["shop_model"]
        for mapper in shop_model.registry.mappers:
            if issubclass(mapper.class_, ShopScoped) or mapper.class_ is shop_model:
                _tenant_tables.update(mapper.tables)
    return _tenant_tables


def _scope_statement(state: ORMExecuteState) -> None:
    scope = get_scope(state.session)
    if scope is None:
        return
    if not state.is_orm_statement:
        # Core statements (select/insert/update/delete on Table objects) get no loader criteria:
        # refuse them on tenant tables rather than let them cross shops. text() is not inspected.
        touched = find_tables(
            state.statement,
            include_aliases=True,
            include_joins=True,
            include_selects=True,
            include_crud=True,
            check_columns=True,
        )
        if set(touched) & _tables_of_tenants():
            raise TenantViolation("Core statement on a shop table in a scoped session: use ORM entities")
        return
    if state.is_insert:
        # ORM bulk INSERT skips the flush guard; rows are added with session.add() in scoped code.
        raise TenantViolation("ORM INSERT statement in a scoped session: add objects with session.add()")
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
