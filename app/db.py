"""Declarative base, column types and mixins shared by every model.

- Constraint names follow one convention so Alembic migrations are stable across databases.
- Times are stored as UTC and always come back timezone-aware (SQLite keeps no zone).
- Shop credentials are encrypted at rest (see app/secretbox.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app import secretbox

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored as naive UTC and returned as an aware UTC datetime.

    Naive datetimes are refused on the way in: a naive value is a bug (whose clock?).
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store aware UTC datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class EncryptedText(TypeDecorator):
    """Text encrypted with the credentials key ring before it reaches the database."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect):
        if value is None:
            return None
        return secretbox.encrypt(value)

    def process_result_value(self, value: str | None, dialect):
        if value is None:
            return None
        return secretbox.decrypt(value)


# JSON that works the same on SQLite and PostgreSQL (JSONB there, for indexing later).
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# 64-bit integers for money in fen; SQLite's INTEGER is 64-bit already.
Fen = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Integer primary keys: BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class IdMixin:
    id: Mapped[int] = mapped_column(BigId, primary_key=True)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def sql_literals(*values: str) -> list[sa.ColumnElement]:
    """Constants written into the SQL text, not bound: a condition such as ``status IN ('pending',
    'processing')`` must be literal for PostgreSQL to use a partial index with that predicate in the
    generic plan of a prepared statement (psycopg prepares a statement after its fifth run)."""
    for value in values:
        if not value.replace("_", "").isalnum():
            raise ValueError(f"not a plain constant: {value!r}")
    return [sa.literal_column(f"'{value}'") for value in values]


@functools.cache
def insert_ignoring(table: sa.Table, dialect: str, *returning: str) -> sa.Insert:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING <columns>`` for ``table``, built once per dialect
    and columns, its values bound at execution (``connection.execute(stmt, values)``). On the hot
    paths (every push, every message) building a statement and computing its cache key cost more
    Python time than running it: a prebuilt statement keeps its cache key."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing().returning(*(table.c[name] for name in returning))


@functools.cache
def _column_keys(table: sa.Table) -> frozenset[str]:
    return frozenset(table.c.keys())


def columns_of(table: sa.Table, values: dict, *binds: str) -> dict:
    """``values`` unchanged, once every key is checked to name a column of ``table`` (or one of
    ``binds``, the statement's own parameters). With values bound at execution SQLAlchemy leaves a
    misspelt key out of the INSERT or the SET without a word; here it is an error."""
    unknown = values.keys() - _column_keys(table) - set(binds)
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(sorted(unknown))}")
    return values


def insert_new(executor, table: sa.Table, values: dict, returning: tuple[str, ...] = ("id",)) -> sa.CursorResult:
    """Run ``insert_ignoring`` for ``table`` with ``values`` (checked by ``columns_of``) on a
    connection or a session: the result has the ``returning`` columns of the new row, no row when
    one with the same unique key exists."""
    dialect = executor.dialect if isinstance(executor, sa.Connection) else executor.get_bind().dialect
    return executor.execute(insert_ignoring(table, dialect.name, *returning), columns_of(table, values))


def in_turn(model: type, unfinished, *subject: str) -> sa.ColumnElement[bool]:
    """A queue's per-subject order: a row with a subject (the columns ``subject`` name, the last one
    NULL for none) goes only when no earlier row of its shop and subject is unfinished."""
    earlier = sa.orm.aliased(model)
    blocked = (
        sa.select(earlier.id)
        .where(
            earlier.shop_id == model.shop_id,
            *(getattr(earlier, name) == getattr(model, name) for name in subject),
            earlier.id < model.id,
            earlier.status.in_(unfinished),
        )
        .exists()
    )
    return sa.or_(getattr(model, subject[-1]).is_(None), ~blocked)


# A two-lane queue's claim (the inbox: buyer messages, then everything; the outbox: calls people
# wait on, then everything): the first lane's rows, or the second's when none is due.
FIRST_LANE, SECOND_LANE, BOTH_LANES = "first", "second", "both"


def claimed_ids(id_column, dialect: str, lane: str, candidates: Callable[[bool], sa.Select]) -> sa.ColumnElement[bool]:
    """The claim's condition on ids, for ``lane``; ``candidates(first_lane)`` builds a lane's locking
    selection. ``= ANY(ARRAY(...))`` on PostgreSQL rather than ``IN``: a locking subquery under
    ``IN`` may be run again per row updated, and with SKIP LOCKED pick further rows.

    ``BOTH_LANES`` (PostgreSQL): ``id = ANY(COALESCE(NULLIF(ARRAY(first), '{}'), ARRAY(second)))``,
    both lanes in one statement. Each ``ARRAY(...)`` is an uncorrelated subquery (an InitPlan), run
    only when first needed, so the second lane's locking subquery runs only when the first found
    nothing (``EXPLAIN ANALYZE``: "never executed").

    The claim's UPDATE needs no other condition: each lane tested its own on every row it locked
    (PostgreSQL tests a row changed meanwhile again), and the locks hold until the commit. Testing
    it again in the UPDATE made that scan read every unfinished row instead of the claimed ids."""
    if lane == BOTH_LANES:
        assert dialect == "postgresql", "both lanes in one statement is PostgreSQL's (claim_rows)"
        first, second = (sa.func.array(candidates(only_first).scalar_subquery()) for only_first in (True, False))
        return id_column == sa.any_(sa.func.coalesce(sa.func.nullif(first, sa.literal_column("'{}'")), second))
    chosen = candidates(lane == FIRST_LANE).scalar_subquery()
    return id_column == sa.any_(sa.func.array(chosen)) if dialect == "postgresql" else id_column.in_(chosen)


# A claim's plan must not depend on the planner's statistics. Taken while the queue was empty (a
# new desk, its first livestream), they cost a plan for a handful of pending rows: every unfinished
# row fetched through a bitmap and sorted, per lane, so each claim read the whole backlog (3-5 ms
# per claim with 1,250 pending; a burst's PostgreSQL time growing with its square). Without sorts
# and bitmaps the lanes walk their partial index in id order and stop at their batch
# (tests/platform/test_inbox.py). For the claim's transaction only; one statement each, as the
# pipeline sends them (its extended protocol takes one statement per query).
CLAIM_PLAN = ("SET LOCAL enable_sort = off", "SET LOCAL enable_bitmapscan = off")


class DriverStatement:
    """A statement compiled once for the database driver, to be sent as the driver's own (in
    psycopg's pipeline mode, say): its SQL and its parameters processed as SQLAlchemy would when it
    executes the statement (the statement's own values filled in; UTC times, enum values)."""

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect):
        self.compiled = statement.compile(dialect=dialect)
        self.sql = self.compiled.string
        self._processors = {
            name: processor
            for name, bind in self.compiled.binds.items()
            # the type as the dialect runs it (a variant's, a decorator's with its impl's)
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def params(self, values: dict) -> dict:
        processors = self._processors
        return {
            name: processors[name](value) if name in processors else value
            for name, value in self.compiled.construct_params(values).items()
        }


@functools.cache
def driver_statement(statement: sa.Executable, dialect: sa.Dialect) -> DriverStatement:
    """``DriverStatement`` of a statement built once (a cached builder's), per dialect."""
    return DriverStatement(statement, dialect)


def claim_rows(connection: sa.Connection, statement: Callable[[str], sa.Executable], params: dict) -> list:
    """Run a two-lane claim (``statement(lane)``) as its transaction's only statement (the caller
    commits next).

    On PostgreSQL one statement, planned as ``CLAIM_PLAN`` says, sent with the plan's settings and
    the commit in psycopg's pipeline mode: one round trip instead of four (BEGIN with the first
    setting, the second, the claim, COMMIT), and none of SQLAlchemy's work per execution. A claim
    runs once or twice per event (each woken worker thread's, and a drain's last, empty one), so
    this was a quarter of the workers' CPU under load. The caller's commit then has nothing left to
    do. On SQLite (one process) the first lane, then the second if the first took nothing."""
    if connection.dialect.name == "postgresql":
        claim = driver_statement(statement(BOTH_LANES), connection.dialect)
        driver = connection.connection.driver_connection
        with driver.pipeline():
            for setting in CLAIM_PLAN:
                driver.execute(setting)
            claimed = driver.execute(claim.sql, claim.params(params))
            driver.commit()
        return claimed.fetchall()
    return connection.execute(statement(FIRST_LANE), params).all() or connection.execute(
        statement(SECOND_LANE), params).all()


@functools.cache
def _insert_ignoring_entity(model: type, dialect: str) -> sa.Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(model).on_conflict_do_nothing().returning(model)


def insert_new_row(session, model: type, values: dict):
    """Like ``insert_new`` with ``model``'s table, the new row returned as the model's object: in the
    session, loaded from RETURNING (not read again after the INSERT). None when a row with the same
    unique key exists. An ORM INSERT: a scoped session refuses it on every table (app/tenancy.py),
    so scoped callers wrap it in ``tenancy.system_scope``."""
    statement = _insert_ignoring_entity(model, session.get_bind().dialect.name)
    return session.scalars(statement, columns_of(model.__table__, values)).first()


_KEEP, _EXPIRE_ON_COMMIT = "channeldesk.keep", "channeldesk.expire_on_commit"


@contextlib.contextmanager
def keeping(session, *keep):
    """Commits inside the block expire every loaded row except ``keep`` (a plain commit expires
    them all); blocks nest, and each keeps its own rows as well as its outer blocks'.

    For rows this thread just wrote or read and goes on using through commits of its own: they
    stay as the thread knows them instead of being read again on their next attribute access.
    Everything else is expired as a commit would, so a later read-compare-write still sees the
    database's values; a locked read (``ingest.store.locked``) refreshes a kept row too. A
    rollback expires everything, kept rows included.
    """
    if isinstance(session, sa.orm.scoped_session):
        session = session()
    stack = session.info.setdefault(_KEEP, [])
    if not stack:
        session.info[_EXPIRE_ON_COMMIT] = session.expire_on_commit
        session.expire_on_commit = False  # the commits' expiry is ``_expire_unkept``'s
    stack.append({id(obj) for obj in keep if obj is not None})
    try:
        yield
    finally:
        stack.pop()
        if not stack:
            del session.info[_KEEP]
            session.expire_on_commit = session.info.pop(_EXPIRE_ON_COMMIT)


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _expire_unkept(session) -> None:
    stack = session.info.get(_KEEP)
    if not stack or not session.info.get(_EXPIRE_ON_COMMIT):
        return
    kept = set().union(*stack)
    for state in list(session.identity_map.all_states()):
        obj = state.obj()
        if obj is not None and not state.expired and id(obj) not in kept:
            session.expire(obj)


def commit_keeping(session, *keep) -> None:
    """Commit, expiring every loaded row except ``keep`` (and an enclosing ``keeping`` block's).

    For a transaction that only read what its caller goes on using (the outbox call and its shop
    before the platform call): the kept rows stay as that transaction read them.
    """
    with keeping(session, *keep):
        session.commit()
