"""`flask rules default --shop X [--live]`: install the default rule "refund within 4 hours if not
shipped" (switched on; in dry run unless --live). Used by the demo seed and the benchmark."""

from __future__ import annotations

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from app.extensions import db
from app.models import Rule, Shop, User
from app.rules import editor, engine

rules_cli = AppGroup("rules", help="Automation rules.")


def install_default(shop: Shop, *, live: bool = False, user: User | None = None) -> Rule:
    """The default rule for a shop, once (an existing rule of that name is kept as it is)."""
    template = engine.default_template()
    existing = db.session.scalar(sa.select(Rule).where(Rule.shop_id == shop.id, Rule.name == template["name"]))
    if existing is not None:
        return existing
    draft = editor.Draft(name=template["name"], trigger=template["trigger"], conditions=template["conditions"],
                         actions=template["actions"])
    rule = editor.save(None, shop.id, draft, user or _nobody())
    rule.enabled = True
    rule.dry_run = not live
    return rule


class _nobody:  # noqa: N801 (stands in for a user: the command line acts for nobody in particular)
    id = None


@rules_cli.command("default")
@click.option("--shop", "shop_ref", required=True, help="Shop id or appid.")
@click.option("--live", is_flag=True, help="Act for real (default: dry run, decisions logged only).")
def default_command(shop_ref: str, live: bool) -> None:
    shop = db.session.scalar(
        sa.select(Shop).where(sa.or_(Shop.appid == shop_ref, Shop.id == (int(shop_ref) if shop_ref.isdigit() else -1)))
    )
    if shop is None:
        raise click.ClickException(f"no shop {shop_ref!r}")
    rule = install_default(shop, live=live)
    db.session.commit()
    click.echo(f"rule {rule.id} {rule.name}: on, {'live' if not rule.dry_run else 'dry run'}")
