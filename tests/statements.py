"""Counting what the desk sends to the database (the hot paths' tests pin their statements)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from unittest import mock

import sqlalchemy as sa


def statements(engine: sa.Engine, run: Callable[[], object]) -> list[str]:
    """The SQL statements ``run`` sent through ``engine``, in order, whitespace collapsed; on
    PostgreSQL with those the desk sends through the driver itself, in psycopg's pipeline mode
    (``app.db.claim_rows``, the assignment's ``_assign_and_commit``): psycopg's
    ``Connection.execute``, which SQLAlchemy never calls (it executes on cursors)."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(" ".join(statement.split()))

    with contextlib.ExitStack() as undo:
        sa.event.listen(engine, "before_cursor_execute", record)
        undo.callback(sa.event.remove, engine, "before_cursor_execute", record)
        if engine.dialect.name == "postgresql":
            import psycopg

            execute = psycopg.Connection.execute

            def driver_execute(connection, query, *args, **kwargs):
                seen.append(" ".join(str(query).split()))
                return execute(connection, query, *args, **kwargs)

            undo.enter_context(mock.patch.object(psycopg.Connection, "execute", driver_execute))
        run()
    return seen


def plan_rows(node: dict) -> float:
    """The rows every node of an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan produced, summed over its
    loops: how much a statement read, whatever the planner believed."""
    own = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
    return own + sum(plan_rows(child) for child in node.get("Plans", []))
