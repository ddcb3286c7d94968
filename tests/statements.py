"""Counting what the desk sends to the database (the hot paths' tests pin their statements)."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa


def statements(engine: sa.Engine, run: Callable[[], object]) -> list[str]:
    """The SQL statements ``run`` sent through ``engine``, in order, whitespace collapsed."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return seen


def plan_rows(node: dict) -> float:
    """The rows every node of an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan produced, summed over its
    loops: how much a statement read, whatever the planner believed."""
    own = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
    return own + sum(plan_rows(child) for child in node.get("Plans", []))
