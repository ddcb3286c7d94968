"""Rule fixtures: the orders area's simulator-backed shop (real HTTP), rules installed as data, and helpers
to store what the platform says and work the outbox (evaluations and platform calls) step by step."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import events
from app.extensions import db
from app.ingest import inbox, store
from app.models import AfterSale, Rule, RuleDecision, RuleSettings, RuleVersion, Shop
from app.platform import client_for
from app.rules import engine
from tests.orders.conftest import SCARF, Desk, desk_shop  # noqa: F401 (fixtures)
from tests.platform.conftest import simulator  # noqa: F401 (fixture)

ACCEPT = "/channels/ec/aftersale/acceptapply"


def add_rule(app, shop_id: int, definition: dict | None = None, *, enabled=True, dry_run=False, position=0,
             name=None) -> int:
    definition = definition or engine.default_template()
    with app.app_context():
        rule = Rule(
            shop_id=shop_id,
            name=name or definition.get("name", "rule"),
            position=position,
            trigger=definition["trigger"],
            conditions=definition["conditions"],
            actions=definition["actions"],
            enabled=enabled,
            dry_run=dry_run,
            version=1,
        )
        db.session.add(rule)
        db.session.flush()
        db.session.add(RuleVersion(shop_id=shop_id, rule_id=rule.id, version=1, definition=definition))
        db.session.commit()
        pk = rule.id
        db.session.remove()
    return pk


def set_settings(app, shop_id: int, **values) -> None:
    with app.app_context():
        row = db.session.scalar(sa.select(RuleSettings).where(RuleSettings.shop_id == shop_id))
        if row is None:
            row = RuleSettings(shop_id=shop_id)
            db.session.add(row)
        for key, value in values.items():
            setattr(row, key, value)
        db.session.commit()
        db.session.remove()


def deliver_after_sale(desk: Desk, after_sale_order_id: str) -> int:
    """What the inbox does with an after-sale push: fetch, store, announce after the commit."""
    with desk.app.app_context():
        shop = db.session.get(Shop, desk.shop_id)
        result = store.upsert_after_sale(desk.shop_id, client_for(shop).get_after_sale(after_sale_order_id))
        announce = inbox.announce_after_sale(desk.shop_id, result)
        db.session.commit()
        pk = result.row.id
        announce()
        db.session.remove()
    return pk


def announce_again(app, shop_id: int, pk: int, created: bool = True) -> None:
    """A re-delivered push: the same after-sale announced again, as stored."""
    with app.app_context():
        row = db.session.get(AfterSale, pk)
        data = {"after_sale_pk": row.id, "after_sale_order_id": row.after_sale_order_id, "status": row.status,
                "type": row.type, "created": created}
        db.session.remove()
    with app.app_context():
        events.emit(events.after_sale_changed, shop_id, **data)
        db.session.remove()


def request_after_sale(desk: Desk, order_id: str, kind: str = "REFUND", **kw) -> int:
    record = desk.platform.open_after_sale(desk.sim_shop, order_id, kind, **kw)
    return deliver_after_sale(desk, record["after_sale_order_id"])


def decisions(app, **where) -> list[RuleDecision]:
    with app.app_context():
        stmt = sa.select(RuleDecision).order_by(RuleDecision.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(RuleDecision, key) == value)
        rows = db.session.scalars(stmt).all()
        for r in rows:
            db.session.expunge(r)
        db.session.remove()
    return rows


def after_sale_row(app, pk: int) -> AfterSale:
    with app.app_context():
        row = db.session.get(AfterSale, pk)
        db.session.expunge(row)
        db.session.remove()
    return row


@pytest.fixture
def rules_shop(desk_shop):  # noqa: F811
    return desk_shop
