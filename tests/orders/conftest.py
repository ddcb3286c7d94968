"""Order sidebar fixtures: a shop connected to the simulator over real HTTP (no pushes: the tests store
what the platform says and drive the outbox themselves, one step at a time), its agent, helpers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from app import outbox
from app.extensions import db
from app.ingest import pollers, store
from app.models import AddressBinding, BindingScope, Customer, ReturnAddress, Shop
from app.platform import client_for
from app.platform.simulator.scenario import CATALOGUE
from app.platform.simulator.state import SimShop
from tests.factories import make_user
from tests.platform.conftest import connect_shop, simulator  # noqa: F401 (fixture)

SCARF = dict(CATALOGUE[0], sku_cnt=1)  # sku 20000101 of product 10000101, ¥199.00


def request_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Desk:
    app: object
    simulator: object
    shop_id: int
    sim_shop: SimShop

    @property
    def platform(self):
        return self.simulator.platform

    def order(self, openid: str = "o_buyer_1", items: list[dict] | None = None, **kw) -> str:
        placed = self.platform.place_order(self.sim_shop, openid, items or [SCARF], **kw)
        self.fetch_order(placed["order_id"])
        return placed["order_id"]

    def after_sale(self, order_id: str, kind: str = "REFUND", **kw) -> int:
        """The buyer asks; the desk stores the after-sale (as a push would make it). Returns its pk."""
        record = self.platform.open_after_sale(self.sim_shop, order_id, kind, **kw)
        return self.fetch_after_sale(record["after_sale_order_id"])

    def fetch_order(self, order_id: str) -> int:
        with self.app.app_context():
            shop = db.session.get(Shop, self.shop_id)
            row = store.upsert_order(self.shop_id, client_for(shop).get_order(order_id)).row
            db.session.commit()
            pk = row.id
            db.session.remove()
        return pk

    def fetch_after_sale(self, after_sale_order_id: str) -> int:
        with self.app.app_context():
            shop = db.session.get(Shop, self.shop_id)
            row = store.upsert_after_sale(self.shop_id, client_for(shop).get_after_sale(after_sale_order_id)).row
            db.session.commit()
            pk = row.id
            db.session.remove()
        return pk

    def sim_status(self, after_sale_order_id: str) -> str:
        with self.platform.lock:
            return self.sim_shop.after_sales[after_sale_order_id]["status"]

    def calls(self, api: str = "/channels/ec/aftersale/acceptapply") -> list[tuple]:
        return self.platform.calls(self.sim_shop, api)

    def drain(self, rounds: int = 5) -> int:
        """Work the outbox until nothing is due (what the outbox workers do)."""
        done = 0
        with self.app.app_context():
            for _ in range(rounds):
                claimed = outbox.claim(limit=20)
                if not claimed.ids:
                    break
                done += outbox.process_claimed(claimed)
            db.session.remove()
        return done

    def bind(self, address_id: str, scope: BindingScope = BindingScope.SKU, sku_id: str = "20000101") -> int:
        with self.app.app_context():
            address = db.session.scalar(
                sa.select(ReturnAddress).where(
                    ReturnAddress.shop_id == self.shop_id, ReturnAddress.address_id == address_id
                )
            )
            product_id = "10000101" if scope is not BindingScope.SHOP else None
            db.session.add(
                AddressBinding(
                    shop_id=self.shop_id,
                    scope=scope,
                    sku_id=sku_id if scope is BindingScope.SKU else None,
                    product_id=product_id,
                    target_key=AddressBinding.key_for(scope, product_id=product_id, sku_id=sku_id),
                    address_pk=address.id,
                )
            )
            db.session.commit()
            pk = address.id
            db.session.remove()
        return pk

    def address(self, name: str) -> tuple[int, str]:
        """(pk, platform address_id) of the simulator's seeded address called ``name``."""
        with self.app.app_context():
            row = db.session.scalar(
                sa.select(ReturnAddress).where(ReturnAddress.shop_id == self.shop_id, ReturnAddress.name == name)
            )
            found = (row.id, row.address_id)
            db.session.remove()
        return found


@pytest.fixture
def desk_shop(app, simulator):  # noqa: F811 (the simulator fixture)
    """A polled shop with its return addresses synced (杭州总仓 default, 广州退货仓) and agent ``li``."""
    shop_id, sim_shop = connect_shop(app, simulator, None, name="直播旗舰店")
    with app.app_context():
        shop = db.session.get(Shop, shop_id)
        pollers.sync_addresses(shop)
        make_user("li", shops=[shop], display_name="客服小李")
        db.session.commit()
        db.session.remove()
    return Desk(app, simulator, shop_id, sim_shop)


def customer_id(app, shop_id: int, openid: str) -> int:
    with app.app_context():
        found = db.session.scalar(sa.select(Customer.id).where(Customer.shop_id == shop_id, Customer.openid == openid))
        db.session.remove()
    return found
