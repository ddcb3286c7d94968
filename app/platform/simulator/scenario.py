"""Scenario driver: buyers who order, pay, ask for refunds and returns, and write to the shop.

``Burst`` plays a livestream: N orders spread over T seconds (a steady rate with jitter), a share of
them turning into after-sales a little later (refunds, and returns at ``return_share``), optionally a
share shipped at once (``ship_rate``: their refunds are not "unshipped"), some buyers writing first.
``DemoTraffic`` keeps the demo shop alive with a gentle trickle of the same.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from app.platform.simulator.state import SimPlatform, SimShop

log = logging.getLogger(__name__)

CATALOGUE = [
    {
        "product_id": "10000101",
        "sku_id": "20000101",
        "title": "羊绒围巾 经典格纹",
        "sale_price": 19900,
        "sku_attrs": [{"attr_key": "颜色", "attr_value": "驼色"}],
        "sku_code": "SCARF-CAMEL",
    },
    {
        "product_id": "10000101",
        "sku_id": "20000102",
        "title": "羊绒围巾 经典格纹",
        "sale_price": 19900,
        "sku_attrs": [{"attr_key": "颜色", "attr_value": "黑色"}],
        "sku_code": "SCARF-BLACK",
    },
    {
        "product_id": "10000202",
        "sku_id": "20000201",
        "title": "保温杯 316不锈钢 500ml",
        "sale_price": 8900,
        "sku_attrs": [{"attr_key": "容量", "attr_value": "500ml"}],
        "sku_code": "CUP-500",
    },
    {
        "product_id": "10000303",
        "sku_id": "20000301",
        "title": "直播专享 坚果礼盒",
        "sale_price": 12900,
        "sku_attrs": [{"attr_key": "规格", "attr_value": "1.2kg"}],
        "sku_code": "NUTS-12",
    },
]
NICKNAMES = ["小鱼儿", "晴天", "阿杰", "糖糖", "木子李", "Lily", "北方的狼", "栗子", "橙子", "大白"]
QUESTIONS = ["在吗？", "什么时候发货呀", "可以改地址吗", "拍错颜色了，能换吗", "我想退款", "有优惠券吗", "这个是正品吗"]
REASONS = ["不想要了", "拍错了", "地址填错了", "商品与描述不符", "发货太慢"]


def new_buyer(platform: SimPlatform, shop: SimShop, rng: random.Random) -> str:
    openid = "o" + "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for _ in range(27)
    )
    with platform.lock:
        shop.buyers[openid] = {"nickname": rng.choice(NICKNAMES), "unionid": "u" + openid[1:]}
    return openid


class Burst(threading.Thread):
    def __init__(
        self,
        platform: SimPlatform,
        shop: SimShop,
        *,
        orders: int,
        seconds: float,
        after_sale_rate: float = 0.25,
        message_rate: float = 0.2,
        return_share: float = 0.3,
        ship_rate: float = 0.0,
        seed: int | None = None,
    ):
        super().__init__(name=f"sim-burst-{shop.appid}", daemon=True)
        self.platform, self.shop = platform, shop
        self.orders, self.seconds = orders, seconds
        self.after_sale_rate, self.message_rate, self.return_share = after_sale_rate, message_rate, return_share
        # A share of orders shipped at once (before any after-sale): refunds of those need a person.
        self.ship_rate = ship_rate
        self.shipped: set[str] = set()
        self.rng = random.Random(seed)
        self.created: list[tuple[str, float]] = []  # (order_id, created at unix time)
        self.after_sales: list[tuple[str, float]] = []
        self.messages = 0
        self.done = threading.Event()

    def run(self) -> None:
        try:
            start = time.monotonic()
            pending_after_sales: list[tuple[float, str]] = []
            for index in range(self.orders):
                due = start + self.seconds * index / max(1, self.orders)
                self._after_sales_due(pending_after_sales, due)
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._one_order(pending_after_sales)
            self._after_sales_due(pending_after_sales, float("inf"))
        except Exception:
            log.exception("burst failed")
        finally:
            self.done.set()

    def _one_order(self, pending: list[tuple[float, str]]) -> None:
        openid = new_buyer(self.platform, self.shop, self.rng)
        if self.rng.random() < self.message_rate:
            self.platform.buyer_message(self.shop, openid, self.rng.choice(QUESTIONS))
            self.messages += 1
        item = dict(self.rng.choice(CATALOGUE), sku_cnt=self.rng.choice((1, 1, 1, 2)))
        order = self.platform.place_order(self.shop, openid, [item])
        self.created.append((order["order_id"], time.time()))
        if self.ship_rate and self.rng.random() < self.ship_rate:
            self.platform.ship_order(self.shop, order["order_id"])
            self.shipped.add(order["order_id"])
        if self.rng.random() < self.after_sale_rate:
            # Regret comes quickly in a livestream: within a few seconds to a minute here.
            pending.append(
                (time.monotonic() + self.rng.uniform(0.5, min(30.0, self.seconds / 4 + 1)), order["order_id"])
            )

    def _after_sales_due(self, pending: list[tuple[float, str]], until: float) -> None:
        pending.sort()
        while pending and pending[0][0] <= until:
            due, order_id = pending.pop(0)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            kind = "RETURN" if self.rng.random() < self.return_share else "REFUND"
            record = self.platform.open_after_sale(self.shop, order_id, kind, reason=self.rng.choice(REASONS))
            self.after_sales.append((record["after_sale_order_id"], time.time()))


class DemoTraffic(threading.Thread):
    """A slow, endless trickle for the demo shop: a buyer every `interval` seconds on average."""

    def __init__(self, platform: SimPlatform, shop: SimShop, interval: float = 45.0):
        super().__init__(name=f"sim-demo-{shop.appid}", daemon=True)
        self.platform, self.shop, self.interval = platform, shop, interval
        self.rng = random.Random()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.rng.expovariate(1 / self.interval)):
            try:
                openid = new_buyer(self.platform, self.shop, self.rng)
                self.platform.buyer_message(self.shop, openid, self.rng.choice(QUESTIONS))
                order = self.platform.place_order(self.shop, openid, [dict(self.rng.choice(CATALOGUE), sku_cnt=1)])
                if self.rng.random() < 0.3:
                    kind = "RETURN" if self.rng.random() < 0.4 else "REFUND"
                    self.platform.open_after_sale(self.shop, order["order_id"], kind, reason=self.rng.choice(REASONS))
            except Exception:
                log.exception("demo traffic step failed")
