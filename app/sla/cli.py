"""``flask sla rollup --from --to``: rebuild the SLA rollups of a range from the raw reply turns."""

from __future__ import annotations

from datetime import date

import click
from flask.cli import AppGroup

from app.extensions import db

sla_cli = AppGroup("sla", help="Service level: reply clocks and their rollups.")


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-12-01") from None


@sla_cli.command("rollup")
@click.option("--from", "start", required=True, help="First day (each shop's own calendar), YYYY-MM-DD.")
@click.option("--to", "end", required=True, help="Last day (inclusive), YYYY-MM-DD.")
@click.option("--shop", "shop_id", type=int, default=None, help="One shop id (default: all).")
def rollup_command(start: str, end: str, shop_id: int | None):
    """Replace the hourly rollups of the range with a recomputation from reply_turns."""
    from app.sla import rollup

    first, last = _day(start), _day(end)
    if last < first:
        raise click.BadParameter("--to must not be before --from")
    with db.engine.begin() as connection:
        hourly, histogram = rollup.rebuild(connection, first, last, shop_id)
    click.echo(f"rebuilt {hourly} hourly rows and {histogram} histogram rows for {start}..{end}")
