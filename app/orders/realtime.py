"""The open sidebar follows its buyer's orders and after-sales: a changed order, after-sale or action
becomes ``sidebar.changed`` for every console showing a conversation with that buyer, including the
same person's conversations in the merchant's other shops (unionid). Browsers then re-read the
sidebar over HTTP, scoped to their user, so the event itself carries only ids.

Rooms (app/desk/realtime.py), joined by ``conversation.open`` beside the conversation's own:

- ``buyer:<shop id>:<openid>``: the buyer in that shop; events name the shop, order and after-sale.
- ``person:<shop id>:<unionid>``: the same person in another of the merchant's shops; events name
  nothing (``{"reason": "other_shop"}``), since its agents may not serve the shop that changed.
  They go to every other shop's room of the person (a list of shop ids kept for a minute).

Announcing costs no database read when the signal names the buyer (``openid``, ``unionid``, as the
ingest and the after-sale actions do): a burst of after-sales announces several changes per case,
and nobody may be looking. Signals without them (older senders, tests) are looked up once.

Runs in whatever process announced the change (inbox worker, poller, outbox worker), after its
commit; a lookup reads in a session of its own so the announcer's session and scope are left alone.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import events
from app.desk.realtime import buyer_room, emit, person_room
from app.extensions import db
from app.models import AfterSale, Customer, Order, Shop

log = logging.getLogger(__name__)
EVENT = "sidebar.changed"


def _announce(shop_id: int, openid: str | None, unionid: str | None, data: dict) -> None:
    if openid:
        emit(EVENT, {"shop_id": shop_id, **data}, [buyer_room(shop_id, openid)])
    if unionid:
        others = [person_room(other, unionid) for other in _shop_ids() if other != shop_id]
        emit(EVENT, {"reason": "other_shop"}, others)


_shops: tuple[float, tuple[int, ...]] = (0.0, ())
SHOPS_FRESH_FOR = 60.0


def _shop_ids() -> tuple[int, ...]:
    """The merchant's shop ids, read at most once a minute (a new shop hears of the others after that)."""
    global _shops
    read_at, ids = _shops
    if time.monotonic() - read_at > SHOPS_FRESH_FOR:
        with Session(db.engine) as session:
            ids = tuple(session.scalars(sa.select(Shop.id).order_by(Shop.id)))
        _shops = (time.monotonic(), ids)
    return ids


def forget() -> None:
    """Drop the shop ids kept (tests: shops come and go between them)."""
    global _shops
    _shops = (0.0, ())


def _looked_up(stmt: sa.Select) -> tuple | None:
    with Session(db.engine) as session:
        return session.execute(stmt).first()


def _on_order(shop_id: int, order_pk: int, order_id: str, openid: str | None = None, unionid: str | None = None,
              **_kw) -> None:
    if openid is None:
        found = _looked_up(sa.select(Order.openid, Order.unionid).where(Order.id == order_pk))
        if found is None:
            return
        openid, unionid = found
    _announce(shop_id, openid, unionid, {"reason": "order", "order_id": order_id, "after_sale_order_id": None})


def _after_sale_buyer(after_sale_pk: int) -> tuple | None:
    return _looked_up(
        sa.select(AfterSale.openid, Customer.unionid, AfterSale.order_id, AfterSale.after_sale_order_id)
        .outerjoin(Customer, Customer.id == AfterSale.customer_id)
        .where(AfterSale.id == after_sale_pk)
    )


def _on_after_sale(shop_id: int, after_sale_pk: int, after_sale_order_id: str, openid: str | None = None,
                   unionid: str | None = None, order_id: str | None = None, **_kw) -> None:
    if openid is None or order_id is None:
        found = _after_sale_buyer(after_sale_pk)
        if found is None:
            return
        openid, unionid, order_id, _ = found
    _announce(shop_id, openid, unionid,
              {"reason": "after_sale", "order_id": order_id, "after_sale_order_id": after_sale_order_id})


def _on_action(shop_id: int, action_id: int, after_sale_pk: int, kind: str, state: str, openid: str | None = None,
               unionid: str | None = None, order_id: str | None = None, after_sale_order_id: str | None = None,
               **_kw) -> None:
    if openid is None or order_id is None or after_sale_order_id is None:
        found = _after_sale_buyer(after_sale_pk)
        if found is None:
            return
        openid, unionid, order_id, after_sale_order_id = found
    _announce(shop_id, openid, unionid, {"reason": "action", "order_id": order_id,
                                         "after_sale_order_id": after_sale_order_id,
                                         "action": {"kind": kind, "state": state}})


def install() -> None:
    events.order_changed.connect(_on_order)
    events.after_sale_changed.connect(_on_after_sale)
    events.after_sale_action_changed.connect(_on_action)
