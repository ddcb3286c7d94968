"""The SKU catalogue (``skus``) the store keeps as orders arrive: it always equals what the stored order
items add up to, so the bindings pages can read it instead of aggregating every order item."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import sqlalchemy as sa
from flask_migrate import upgrade

from app import create_app
from app.extensions import db
from app.ingest import store
from app.models import Order, OrderItem, Sku
from app.returns import bindings
from tests.conftest import make_config
from tests.factories import make_shop
from tests.test_migrations import empty_database_url  # noqa: F401 (fixture)

T0 = 1_764_000_000  # unix seconds


def order_detail(
    order_id: str,
    items: list[tuple[str, str, int]],
    created: int = T0,
    updated: int | None = None,
    title: str = "羊绒围巾",
) -> dict:
    return {
        "order_id": order_id,
        "status": 20,
        "openid": "o_buyer",
        "create_time": created,
        "update_time": updated or created,
        "order_detail": {
            "product_infos": [
                {"product_id": p, "sku_id": s, "sku_cnt": n, "title": f"{title} {s}", "sku_code": f"C-{s}"}
                for p, s, n in items
            ],
            "price_info": {"order_price": 9900},
        },
    }


def catalogue(shop_id: int) -> dict[tuple[str, str], int]:
    rows = db.session.execute(sa.select(Sku.product_id, Sku.sku_id, Sku.units_sold).where(Sku.shop_id == shop_id))
    return {(p, s): n for p, s, n in rows if n}


def from_items(shop_id: int) -> dict[tuple[str, str], int]:
    rows = db.session.execute(
        sa.select(OrderItem.product_id, OrderItem.sku_id, sa.func.sum(OrderItem.quantity))
        .where(OrderItem.shop_id == shop_id)
        .group_by(OrderItem.product_id, OrderItem.sku_id)
    )
    return {(p, s): int(n) for p, s, n in rows}


def test_units_count_each_order_once_and_follow_changes(app):
    with app.app_context():
        shop = make_shop("围巾店")
        db.session.commit()
        store.upsert_order(shop.id, order_detail("o1", [("p1", "s1", 2), ("p1", "s2", 1)]))
        db.session.commit()
        assert catalogue(shop.id) == {("p1", "s1"): 2, ("p1", "s2"): 1}

        # The same order fetched again (a status change): nothing is counted twice.
        store.upsert_order(
            shop.id, {**order_detail("o1", [("p1", "s1", 2), ("p1", "s2", 1)]), "status": 30, "update_time": T0 + 60}
        )
        db.session.commit()
        assert catalogue(shop.id) == {("p1", "s1"): 2, ("p1", "s2"): 1}

        # A newer version of the order with other quantities and without one SKU: the difference only.
        store.upsert_order(shop.id, order_detail("o1", [("p1", "s1", 3)], updated=T0 + 120))
        store.upsert_order(shop.id, order_detail("o2", [("p1", "s1", 1), ("p2", "s9", 4)], created=T0 + 30))
        db.session.commit()
        assert catalogue(shop.id) == {("p1", "s1"): 4, ("p2", "s9"): 4}
        assert catalogue(shop.id) == from_items(shop.id)


def test_the_newest_sale_names_the_sku_and_an_older_order_stored_late_does_not(app):
    with app.app_context():
        shop = make_shop("围巾店")
        db.session.commit()
        store.upsert_order(shop.id, order_detail("new", [("p1", "s1", 1)], created=T0 + 3600, title="新款"))
        store.upsert_order(shop.id, order_detail("old", [("p1", "s1", 1)], created=T0, title="旧款"))
        db.session.commit()
        sku = db.session.scalar(sa.select(Sku).where(Sku.shop_id == shop.id))
        assert (sku.title, sku.units_sold) == ("新款 s1", 2)
        assert sku.first_sold_at == datetime.fromtimestamp(T0, UTC)
        assert sku.last_sold_at == datetime.fromtimestamp(T0 + 3600, UTC)
        [known] = bindings.known_skus(shop.id)
        assert (known.sku_id, known.title, known.units, known.sku_code) == ("s1", "新款 s1", 2, "C-s1")


def test_a_random_stream_of_order_versions_keeps_the_catalogue_equal_to_the_items(app):
    """Orders created, re-fetched, changed and re-sent out of order, several shops: after each commit
    the catalogue equals a recomputation from the order items."""
    rng = random.Random(7)
    with app.app_context():
        shops = [make_shop("一店"), make_shop("二店")]
        db.session.commit()
        skus = [(f"p{i // 3}", f"s{i}") for i in range(8)]
        for step in range(120):
            shop = rng.choice(shops)
            picked = rng.sample(skus, rng.randint(1, 3))
            detail = order_detail(
                f"o{rng.randint(1, 25)}",
                [(p, s, rng.randint(1, 3)) for p, s in picked],
                updated=T0 + rng.randint(0, 500),
            )
            store.upsert_order(shop.id, detail)  # stale versions are ignored by the store, and so by the catalogue
            db.session.commit()
            if step % 10 == 0:
                for s in shops:
                    assert catalogue(s.id) == from_items(s.id)
        for s in shops:
            assert catalogue(s.id) == from_items(s.id)


def test_search_and_the_unbound_filter_read_the_catalogue(app):
    with app.app_context():
        shop = make_shop("围巾店")
        db.session.commit()
        for i in range(5):
            store.upsert_order(shop.id, order_detail(f"o{i}", [("p1", f"s{i}", 1)], created=T0 + i))
        db.session.commit()
        assert [k.sku_id for k in bindings.known_skus(shop.id)] == ["s4", "s3", "s2", "s1", "s0"]
        assert [k.sku_id for k in bindings.known_skus(shop.id, "C-s3")] == ["s3"]
        assert [k.sku_id for k in bindings.known_skus(shop.id, limit=2)] == ["s4", "s3"]
        since = datetime.fromtimestamp(T0 + 3, UTC)
        assert [k.sku_id for k in bindings.known_skus(shop.id, since=since)] == ["s4", "s3"]
        assert bindings.known_sku_ids(shop.id, ["s1", "nope"]) == {"s1": "p1"}
        assert bindings.known_product_ids(shop.id, ["p1", "p2"]) == {"p1"}


def test_the_migration_learns_the_catalogue_from_stored_orders(empty_database_url):  # noqa: F811
    app = create_app(make_config(empty_database_url))
    with app.app_context():
        upgrade(revision="b6c1d2e3f4a5")  # the schema before the catalogue
        shop = make_shop("店")
        for n, (sku, qty, day) in enumerate([("s1", 2, 1), ("s1", 1, 3), ("s2", 5, 2)]):
            when = datetime(2026, 11, day, tzinfo=UTC)
            item = OrderItem(shop_id=shop.id, product_id="p1", sku_id=sku, title=f"T{day}", quantity=qty)
            db.session.add(
                Order(
                    shop_id=shop.id,
                    order_id=f"o{n}",
                    status=20,
                    openid="o",
                    platform_created_at=when,
                    platform_updated_at=when,
                    items=[item],
                )
            )
        db.session.commit()
        db.session.remove()
        upgrade()
        with db.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT sku_id, units_sold, first_sold_at, last_sold_at FROM skus ORDER BY sku_id")
            ).all()
        db.engine.dispose()
    assert [(r[0], r[1]) for r in rows] == [("s1", 3), ("s2", 5)]
    assert str(rows[0][2]).startswith("2026-11-01") and str(rows[0][3]).startswith("2026-11-03")
