"""``flask sla rollup --from --to``: rebuild the SLA rollups of a range from the raw reply turns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
from flask.cli import AppGroup

from app.extensions import db

sla_cli = AppGroup("sla", help="Service level: reply clocks and their rollups.")


def _day(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-12-01") from None


@sla_cli.command("rollup")
@click.option("--from", "start", required=True, help="First UTC day, YYYY-MM-DD.")
@click.option("--to", "end", required=True, help="Last UTC day (inclusive), YYYY-MM-DD.")
@click.option("--shop", "shop_id", type=int, default=None, help="One shop id (default: all).")
def rollup_command(start: str, end: str, shop_id: int | None):
    """Replace the hourly rollups of the range with a recomputation from reply_turns."""
    from app.sla import rollup

    begin, finish = _day(start), _day(end) + timedelta(days=1)
    if finish <= begin:
        raise click.BadParameter("--to must not be before --from")
    with db.engine.begin() as connection:
        hourly, histogram = rollup.rebuild(connection, begin, finish, shop_id)
    click.echo(f"rebuilt {hourly} hourly rows and {histogram} histogram rows for {start}..{end}")
