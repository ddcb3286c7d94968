"""Data flows in without loss: pushes and pollers against the simulator over real HTTP, with faults.

Every order and after-sale the simulated platform has ends up stored exactly once with its latest
state, whatever the platform throws: -1 errors, token expiry, timeouts, duplicated and reordered pushes,
no pushes at all, or a desk that was down for three days.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app import events
from app.db import utcnow
from app.extensions import db
from app.ingest import pollers, store
from app.models import AfterSale, InboxEvent, InboxStatus, Message, Order, ReturnAddress, Shop, SyncCursor
from app.platform.simulator.scenario import CATALOGUE, Burst, new_buyer
from tests.platform.conftest import wait_until

FAULTS = {
    "busy_rate": 0.1,
    "token_expiry_rate": 0.02,
    "timeout_rate": 0.01,
    "timeout_seconds": 1.5,
    "duplicate_push_rate": 0.2,
    "reorder_push_rate": 0.2,
}


def platform_state(simulator, sim_shop):
    with simulator.platform.lock:
        orders = {oid: (o["status"], o["update_time"]) for oid, o in sim_shop.orders.items()}
        after_sales = {aid: (a["status"], a["update_time"]) for aid, a in sim_shop.after_sales.items()}
    return orders, after_sales


def desk_state(app, shop_id):
    with app.app_context():
        orders = db.session.execute(
            sa.select(Order.order_id, Order.status, Order.platform_updated_at).where(Order.shop_id == shop_id)
        ).all()
        after_sales = db.session.execute(
            sa.select(AfterSale.after_sale_order_id, AfterSale.status, AfterSale.platform_updated_at).where(
                AfterSale.shop_id == shop_id
            )
        ).all()
        db.session.remove()
    return (
        {oid: (status, int(updated.timestamp())) for oid, status, updated in orders},
        {aid: (status, int(updated.timestamp())) for aid, status, updated in after_sales},
        len(orders),
        len(after_sales),
    )


def inbox_settled(app) -> bool:
    with app.app_context():
        busy = db.session.scalar(
            sa.select(sa.func.count()).where(InboxEvent.status.in_([InboxStatus.PENDING, InboxStatus.PROCESSING]))
        )
        db.session.remove()
    return busy == 0


def settle_everything_later(simulator, sim_shop, rng):
    """Move part of the data on (ship, approve, return), so 'latest state' is not the first state."""
    with simulator.platform.lock:
        order_ids = list(sim_shop.orders)
        refunds = [a for a in sim_shop.after_sales.values() if a["type"] == "REFUND"]
        returns = [a for a in sim_shop.after_sales.values() if a["type"] == "RETURN"]
        address_id = next(iter(sim_shop.addresses))
    for order_id in rng.sample(order_ids, len(order_ids) // 4):
        simulator.platform.ship_order(sim_shop, order_id)
    for record in refunds[: len(refunds) // 2]:
        simulator.platform.accept_after_sale(sim_shop, {"after_sale_order_id": record["after_sale_order_id"]})
    for record in returns[: len(returns) // 2]:
        simulator.platform.accept_after_sale(
            sim_shop, {"after_sale_order_id": record["after_sale_order_id"], "address_id": address_id}
        )
        simulator.platform.buyer_returns_parcel(sim_shop, record["after_sale_order_id"])


def sync_until_clean(app, shop_id, attempts: int = 10):
    with app.app_context():
        for _ in range(attempts):
            shop = db.session.get(Shop, shop_id)
            results = [pollers.sync_orders(shop), pollers.sync_after_sales(shop)]
            if not any(r.errors for r in results):
                db.session.remove()
                return results
        db.session.remove()
    pytest.fail(f"pollers kept failing: {[r.errors for r in results]}")


def test_pushes_bring_every_change_exactly_once_despite_faults(app, simulator, pushing_shop):
    shop_id, sim_shop = pushing_shop
    sim_shop.faults.update(**FAULTS)
    sim_shop.rng.seed(11)
    changed = []
    events.order_changed.connect(lambda sender, **kw: changed.append(kw["order_id"]), weak=False)
    burst = Burst(simulator.platform, sim_shop, orders=150, seconds=3, after_sale_rate=0.3, message_rate=0.3, seed=5)
    burst.start()
    assert burst.done.wait(60)
    settle_everything_later(simulator, sim_shop, random.Random(5))
    simulator.sender.flush_held()
    assert simulator.sender.wait_idle(60), "the simulator could not deliver its pushes"
    assert wait_until(lambda: inbox_settled(app), timeout=60)

    expected_orders, expected_after_sales = platform_state(simulator, sim_shop)
    orders, after_sales, order_rows, after_sale_rows = desk_state(app, shop_id)
    assert orders == expected_orders
    assert after_sales == expected_after_sales
    assert (order_rows, after_sale_rows) == (len(expected_orders), len(expected_after_sales)), "stored once each"
    assert len(expected_orders) == 150 and len(expected_after_sales) > 20
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == burst.messages
        failed = db.session.scalars(sa.select(InboxEvent).where(InboxEvent.status == InboxStatus.FAILED)).all()
        assert failed == [], [(e.event, e.attempts, e.last_error) for e in failed]
        duplicates = db.session.scalar(sa.select(sa.func.count()).select_from(InboxEvent))
        db.session.remove()
    assert simulator.sender.delivered > duplicates, "duplicate pushes arrived and were stored once"
    assert set(changed) == set(expected_orders), "every order was announced to subscribers"
    # Token expiry, -1 and timeouts really happened on the way.
    errcodes = {c[3] for c in simulator.platform.calls(sim_shop)}
    assert {-1, 42001} <= errcodes


def test_pollers_alone_bring_everything_when_pushes_are_off(app, simulator, polled_shop):
    shop_id, sim_shop = polled_shop
    burst = Burst(simulator.platform, sim_shop, orders=120, seconds=1, after_sale_rate=0.3, seed=9)
    burst.start()
    assert burst.done.wait(60)
    settle_everything_later(simulator, sim_shop, random.Random(9))
    sim_shop.faults.update(busy_rate=0.1, token_expiry_rate=0.02)
    sim_shop.rng.seed(4)
    time.sleep(1.1)  # let the last changes fall before the read window's end (update_time has 1 s resolution)
    sync_until_clean(app, shop_id)
    expected_orders, expected_after_sales = platform_state(simulator, sim_shop)
    orders, after_sales, order_rows, after_sale_rows = desk_state(app, shop_id)
    assert orders == expected_orders and after_sales == expected_after_sales
    assert (order_rows, after_sale_rows) == (len(expected_orders), len(expected_after_sales))
    # Polling again changes nothing and stores nothing twice.
    results = sync_until_clean(app, shop_id)
    assert all(r.changed == 0 for r in results)
    assert desk_state(app, shop_id)[2:] == (order_rows, after_sale_rows)


def test_a_desk_down_for_three_days_catches_up_in_slices(app, simulator, polled_shop):
    shop_id, sim_shop = polled_shop
    real_clock = simulator.platform.clock
    now = real_clock()
    rng = random.Random(3)
    try:
        for hours_ago in range(72, 0, -6):  # an order and an after-sale every 6 hours for 3 days
            simulator.platform.clock = lambda h=hours_ago: now - h * 3600
            buyer = new_buyer(simulator.platform, sim_shop, rng)
            order = simulator.platform.place_order(sim_shop, buyer, [dict(CATALOGUE[1])])
            simulator.platform.open_after_sale(sim_shop, order["order_id"], "REFUND")
    finally:
        simulator.platform.clock = real_clock
    with app.app_context():
        # The desk last synced a little over three days ago.
        last_seen = utcnow() - timedelta(hours=73)
        for kind in ("orders", "after_sales"):
            cursor = pollers.cursor_for(shop_id, kind)
            cursor.synced_until = last_seen
        db.session.commit()
        shop = db.session.get(Shop, shop_id)
        after_sales = pollers.sync_after_sales(shop)
        orders = pollers.sync_orders(shop)
        # The overlap before the cursor, then 73 hours in 24-hour slices, as the API demands.
        assert after_sales.slices == 1 + 4 and after_sales.errors == []
        assert orders.slices == 1 + 1 and orders.listed == 12
        cursor = db.session.scalar(
            sa.select(SyncCursor).where(SyncCursor.shop_id == shop_id, SyncCursor.kind == "after_sales")
        )
        assert (utcnow() - cursor.synced_until).total_seconds() < 5
        db.session.remove()
    expected_orders, expected_after_sales = platform_state(simulator, sim_shop)
    orders_stored, after_sales_stored, _, _ = desk_state(app, shop_id)
    assert orders_stored == expected_orders and after_sales_stored == expected_after_sales


def test_the_cursor_stays_put_while_the_platform_fails(app, simulator, polled_shop):
    shop_id, sim_shop = polled_shop
    buyer = new_buyer(simulator.platform, sim_shop, random.Random(1))
    simulator.platform.place_order(sim_shop, buyer, [dict(CATALOGUE[0])])
    sim_shop.faults.update(busy_rate=1.0)
    with app.app_context():
        result = pollers.sync_orders(db.session.get(Shop, shop_id))
        assert result.errors and result.slices == 0
        health = {h["kind"]: h for h in pollers.health(shop_id)}
        assert health["orders"]["synced_until"] is None and "errcode -1" in health["orders"]["last_error"]
        sim_shop.faults.update(busy_rate=0.0)
        assert pollers.sync_orders(db.session.get(Shop, shop_id)).listed == 1
        health = {h["kind"]: h for h in pollers.health(shop_id)}
        assert health["orders"]["last_error"] is None and health["orders"]["lag_seconds"] < 5
        db.session.remove()


def test_a_push_that_can_never_be_handled_is_marked_failed_with_its_reason(app, simulator, pushing_shop):
    _, sim_shop = pushing_shop
    # An order event for an order the platform does not know: a business error, not retried forever.
    simulator.platform._order_event(sim_shop, {"order_id": "3799999999999999999"}, "channels_ec_order_pay")
    assert simulator.sender.wait_idle(10)
    assert wait_until(lambda: inbox_settled(app), timeout=10)
    with app.app_context():
        event = db.session.scalar(sa.select(InboxEvent))
        assert event.status == InboxStatus.FAILED and "10020001" in event.last_error
        db.session.remove()


def test_addresses_sync_and_deleted_ones_are_flagged(app, simulator, polled_shop):
    shop_id, sim_shop = polled_shop
    with app.app_context():
        shop = db.session.get(Shop, shop_id)
        assert pollers.sync_addresses(shop).listed == 2
        doomed = db.session.scalar(sa.select(ReturnAddress).where(ReturnAddress.is_default_return.is_(False)))
        simulator.platform.delete_address(sim_shop, {"address_id": doomed.address_id})
        result = pollers.sync_addresses(db.session.get(Shop, shop_id))
        assert result.changed == 1
        flags = dict(db.session.execute(sa.select(ReturnAddress.address_id, ReturnAddress.deleted_on_platform)).all())
        assert flags[doomed.address_id] is True and list(flags.values()).count(False) == 1
        db.session.remove()


def test_a_stale_detail_never_overwrites_a_newer_one(app, world):
    with app.app_context():
        base = {
            "order_id": "3700000000000000042",
            "openid": "o1",
            "create_time": 1_700_000_000,
            "order_detail": {"product_infos": [], "price_info": {"order_price": 100}},
        }
        store.upsert_order(world.a.shop_id, {**base, "status": 30, "update_time": 1_700_000_500})
        older = store.upsert_order(world.a.shop_id, {**base, "status": 20, "update_time": 1_700_000_100})
        same_second_earlier_state = store.upsert_order(
            world.a.shop_id, {**base, "status": 20, "update_time": 1_700_000_500}
        )
        db.session.commit()
        assert not older.changed and not same_second_earlier_state.changed
        row = db.session.scalar(sa.select(Order).where(Order.order_id == "3700000000000000042"))
        assert row.status == 30
        newer = store.upsert_order(world.a.shop_id, {**base, "status": 100, "update_time": 1_700_000_900})
        assert newer.changed and row.status == 100
        db.session.rollback()


def test_a_new_order_that_changed_again_after_the_window_is_found_by_creation_time(app, simulator, polled_shop):
    shop_id, sim_shop = polled_shop
    real_clock = simulator.platform.clock
    created = real_clock() - 600
    try:
        simulator.platform.clock = lambda: created
        buyer = new_buyer(simulator.platform, sim_shop, random.Random(8))
        order = simulator.platform.place_order(sim_shop, buyer, [dict(CATALOGUE[2])])
        simulator.platform.clock = lambda: created + 120  # a refund request two minutes later
        simulator.platform.open_after_sale(sim_shop, order["order_id"], "REFUND")
    finally:
        simulator.platform.clock = real_clock
    with app.app_context():
        shop = db.session.get(Shop, shop_id)
        # A run whose window ends between the order's creation and its change.
        window_end = datetime.fromtimestamp(created + 60, UTC)
        result = pollers.sync_orders(shop, until=window_end)
        stored = db.session.scalar(sa.select(Order).where(Order.order_id == order["order_id"]))
        assert stored is not None and result.discovered == 1, "found by the creation-time pass"
        db.session.remove()
