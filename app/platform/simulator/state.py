"""The simulated platform's state and rules, independent of HTTP.

Implements ../shared/docs/platform-api.md: the same paths, field names, errcodes and limits (page_size
<= 100, 7-day order window, 24-hour after-sale window, masked addresses, one refund call per order per
minute, 5 replies within 48 h, address_id required to approve a return, a small daily decode quota).
Thread-safe: one lock guards everything; the HTTP layer (api.py) and the scenario driver call in.
"""

from __future__ import annotations

import itertools
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# errcodes of the platform page, plus the simulator's choices where the page names none.
OK = 0
BUSY = -1
TOKEN_INVALID = 40001
TOKEN_EXPIRED = 42001
TOKEN_MISSING = 41001
BAD_BODY = 47001
MINUTE_QUOTA = 45011
DAILY_QUOTA = 45009
AFTER_SALE_WINDOW = 10020004
REFUND_TOO_FAST = 10021059
ADDRESS_MISSING = 10021060
ADDRESS_INVALID = 10021062
NEGOTIATE_FIRST = 10021068
NOT_FOUND = 10020001  # simulator's choice: unknown order / after-sale / address
WRONG_STATE = 10021001  # simulator's choice: the after-sale's status forbids the action
REPLY_LIMIT = 10500011  # simulator's choice: 5 replies since the buyer's last message used up
REPLY_WINDOW = 10500012  # simulator's choice: more than 48 h since the buyer's last message

TOKEN_TTL = 7200
TOKEN_OVERLAP = 300
ORDER_WINDOW = 7 * 86400
AFTER_SALE_WINDOW_SECONDS = 86400
REPLIES_PER_TURN = 5
REPLY_HOURS = 48
DECODE_QUOTA = 30
AFTER_SALE_DEADLINE = 48 * 3600


class ApiError(Exception):
    def __init__(self, errcode: int, errmsg: str, shop: SimShop | None = None):
        super().__init__(errmsg)
        self.errcode = errcode
        self.errmsg = errmsg
        self.shop = shop  # set when the call could be attributed to a shop (an expired token)


@dataclass
class Faults:
    """Fault injection, per simulated shop. Rates are probabilities per call or push."""

    latency_ms: float = 0.0
    busy_rate: float = 0.0  # errcode -1
    rate_limit_rate: float = 0.0  # errcode 45011
    token_expiry_rate: float = 0.0  # the current token dies: 42001, a fresh stable_token fixes it
    timeout_rate: float = 0.0  # answer after timeout_seconds (clients time out first)
    timeout_seconds: float = 12.0
    duplicate_push_rate: float = 0.0  # a push is delivered twice
    reorder_push_rate: float = 0.0  # a push is held back and delivered after a later one
    # Permanent errors per API path, e.g. {"/channels/ec/commkf/sendmsg": 47001}; {} clears them.
    api_errors: dict = field(default_factory=dict)
    seed: int | None = None

    def update(self, **values: Any) -> None:
        for key, value in values.items():
            if not hasattr(self, key):
                raise KeyError(f"unknown fault {key!r}")
            setattr(self, key, type(getattr(self, key))(value) if getattr(self, key) is not None else value)


@dataclass
class SimShop:
    appid: str
    secret: str
    push_token: str
    aes_key: str
    push_url: str | None = None
    faults: Faults = field(default_factory=Faults)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires at (unix)
    current_token: str | None = None
    forced_refreshes: deque = field(default_factory=lambda: deque(maxlen=20))
    orders: dict[str, dict] = field(default_factory=dict)
    after_sales: dict[str, dict] = field(default_factory=dict)
    addresses: dict[str, dict] = field(default_factory=dict)
    buyers: dict[str, dict] = field(default_factory=dict)
    sent: list[dict] = field(default_factory=list)  # messages the shop sent through commkf/sendmsg
    request_ids: dict[str, str] = field(default_factory=dict)  # request_id -> msg_id
    replies: dict[str, dict] = field(default_factory=dict)  # openid -> {"last_buyer_at", "count"}
    refund_calls: dict[str, float] = field(default_factory=dict)  # order_id -> last refund call
    decodes: dict[str, int] = field(default_factory=dict)  # day -> count
    calls: deque = field(default_factory=lambda: deque(maxlen=20000))  # (time, api, body, errcode)
    uploads: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    # The reject reasons' list key: documented as reason_list, reported live as reject_reason_list.
    reason_list_key: str = "reject_reason_list"


REJECT_REASONS = [
    {"reject_reason_type": 1, "reject_reason_type_text": "商品已发出", "reject_reason": "", "reject_scene": 1},
    {"reject_reason_type": 2, "reject_reason_type_text": "买家未退货", "reject_reason": "", "reject_scene": 4},
    {"reject_reason_type": 3, "reject_reason_type_text": "商品影响二次销售", "reject_reason": "", "reject_scene": 4},
    {"reject_reason_type": 4, "reject_reason_type_text": "与买家协商一致", "reject_reason": "", "reject_scene": 1},
    {"reject_reason_type": 5, "reject_reason_type_text": "换货商品无货", "reject_reason": "", "reject_scene": 5},
]

OPEN_AFTER_SALE = {"MERCHANT_PROCESSING", "USER_WAIT_RETURN", "MERCHANT_WAIT_RECEIPT"}


def mask_name(name: str) -> str:
    return name[:1] + "*" * max(1, len(name) - 1)


def mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 7 else "****"


class SimPlatform:
    """All simulated shops. ``push`` is called with (shop, event_payload) whenever the platform would push."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.lock = threading.RLock()
        self.clock = clock
        self.shops: dict[str, SimShop] = {}
        self._ids = itertools.count(1)
        self.push: Callable[[SimShop, dict], None] = lambda shop, payload: None
        # The whole platform down (fault): every platform path answers HTTP 503 and no push goes out
        # (they wait, as the platform's do, and are delivered when it is back). The control API works.
        self.down = False

    # --- setup ----------------------------------------------------------------------------------

    def add_shop(self, appid: str, secret: str, push_token: str, aes_key: str, push_url: str | None = None) -> SimShop:
        with self.lock:
            shop = self.shops.get(appid)
            if shop is None:
                shop = SimShop(appid=appid, secret=secret, push_token=push_token, aes_key=aes_key, push_url=push_url)
                self.shops[appid] = shop
                self._seed_addresses(shop)
            else:
                shop.secret, shop.push_token, shop.aes_key, shop.push_url = secret, push_token, aes_key, push_url
            return shop

    def _seed_addresses(self, shop: SimShop) -> None:
        for name, city, default in (("杭州总仓", "杭州市", True), ("广州退货仓", "广州市", False)):
            self._store_address(
                shop,
                {
                    "name": name,
                    "address_info": {
                        "user_name": "王仓管",
                        "tel_number": "13800138000",
                        "province_name": "浙江省" if city == "杭州市" else "广东省",
                        "city_name": city,
                        "county_name": "余杭区" if city == "杭州市" else "白云区",
                        "detail_info": f"{name}仓储路88号",
                        "postal_code": "310000",
                    },
                    "send_addr": default,
                    "recv_addr": True,
                    "default_send": default,
                    "default_recv": default,
                },
            )

    def shop(self, appid: str) -> SimShop:
        try:
            return self.shops[appid]
        except KeyError:
            raise ApiError(TOKEN_INVALID, "invalid appid") from None

    def new_id(self, prefix: str = "") -> str:
        # Order ids beyond 2^53, like the platform's: pushes carry them as bare JSON numbers.
        return f"{prefix}{3700000000000000000 + next(self._ids) * 7919 + secrets.randbelow(1000)}"

    def now(self) -> int:
        return int(self.clock())

    # --- tokens ---------------------------------------------------------------------------------

    def stable_token(self, body: dict) -> dict:
        with self.lock:
            shop = self.shops.get(body.get("appid", ""))
            if shop is None or body.get("secret") != shop.secret:
                raise ApiError(40013 if shop is None else 40125, "invalid appid or secret")
            if body.get("grant_type") != "client_credential":
                raise ApiError(40002, "invalid grant_type")
            now = self.clock()
            force = bool(body.get("force_refresh"))
            if force:
                recent = [t for t in shop.forced_refreshes if now - t < 86400]
                if len(recent) >= 20 or (recent and now - recent[-1] < 30):
                    raise ApiError(45009 if len(recent) >= 20 else 45011, "force_refresh too frequent")
                shop.forced_refreshes.append(now)
            current = shop.current_token
            expires = shop.tokens.get(current, 0) if current else 0
            if force or current is None or expires - now <= TOKEN_OVERLAP:
                if current and expires > now:
                    shop.tokens[current] = min(expires, now + TOKEN_OVERLAP)  # old one lives a little longer
                current = secrets.token_urlsafe(96)  # ~128 characters; the platform allows up to 512
                shop.tokens[current] = now + TOKEN_TTL
                shop.current_token = current
            return {"access_token": current, "expires_in": int(shop.tokens[current] - now)}

    def check_token(self, token: str | None) -> SimShop:
        if not token:
            raise ApiError(TOKEN_MISSING, "access_token missing")
        with self.lock:
            now = self.clock()
            for shop in self.shops.values():
                expires = shop.tokens.get(token)
                if expires is not None:
                    if expires <= now:
                        raise ApiError(TOKEN_EXPIRED, "access_token expired", shop)
                    return shop
        raise ApiError(TOKEN_INVALID, "invalid credential, access_token is invalid or not latest")

    def expire_current_token(self, shop: SimShop) -> None:
        with self.lock:
            if shop.current_token:
                shop.tokens[shop.current_token] = self.clock() - 1

    # --- orders ---------------------------------------------------------------------------------

    def list_orders(self, shop: SimShop, body: dict) -> dict:
        window = body.get("update_time_range") or body.get("create_time_range")
        key = "update_time" if "update_time_range" in body else "create_time"
        if not isinstance(window, dict):
            raise ApiError(BAD_BODY, "create_time_range or update_time_range required")
        start, end = int(window.get("start_time", 0)), int(window.get("end_time", 0))
        if end < start or end - start > ORDER_WINDOW:
            raise ApiError(BAD_BODY, "time range must be within 7 days")
        page_size = int(body.get("page_size", 10))
        if not 1 <= page_size <= 100:
            raise ApiError(BAD_BODY, "page_size must be 1-100")
        with self.lock:
            rows = sorted(
                (o[key], o["order_id"])
                for o in shop.orders.values()
                if start <= o[key] <= end
                and (body.get("status") is None or o["status"] == body["status"])
                and (body.get("openid") is None or o["openid"] == body["openid"])
            )
        return self._page(rows, body.get("next_key"), page_size, "order_id_list")

    @staticmethod
    def _page(rows: list[tuple[int, str]], next_key: str | None, size: int, list_key: str) -> dict:
        # Keyset paging on (time, id): rows changing during paging are neither skipped nor repeated.
        if next_key:
            t, _, last_id = next_key.partition(":")
            rows = [r for r in rows if r > (int(t), last_id)]
        page = rows[:size]
        has_more = len(rows) > size
        key = f"{page[-1][0]}:{page[-1][1]}" if page else (next_key or "")
        return {list_key: [r[1] for r in page], "next_key": key, "has_more": has_more}

    def get_order(self, shop: SimShop, order_id: Any) -> dict:
        with self.lock:
            order = shop.orders.get(str(order_id))
            if order is None:
                raise ApiError(NOT_FOUND, "order not exist")
            view = _copy(order)
        # Addresses are masked unless decoded.
        info = view["order_detail"]["delivery_info"]["address_info"]
        info["user_name"] = mask_name(info["user_name"])
        info["tel_number"] = mask_phone(info["tel_number"])
        info["detail_info"] = info["detail_info"][:2] + "****"
        return {"order": view}

    def decode_address(self, shop: SimShop, order_id: Any) -> dict:
        day = time.strftime("%Y%m%d", time.gmtime(self.clock() + 8 * 3600))
        with self.lock:
            order = shop.orders.get(str(order_id))
            if order is None:
                raise ApiError(NOT_FOUND, "order not exist")
            if shop.decodes.get(day, 0) >= DECODE_QUOTA:
                raise ApiError(DAILY_QUOTA, "reach max api daily quota limit")
            shop.decodes[day] = shop.decodes.get(day, 0) + 1
            return {"address_info": _copy(order["order_detail"]["delivery_info"]["address_info"])}

    # --- after-sales ----------------------------------------------------------------------------

    def list_after_sales(self, shop: SimShop, body: dict) -> dict:
        if "begin_update_time" in body:
            start, end, key = int(body["begin_update_time"]), int(body.get("end_update_time", 0)), "update_time"
        elif "begin_create_time" in body:
            start, end, key = int(body["begin_create_time"]), int(body.get("end_create_time", 0)), "create_time"
        else:
            raise ApiError(BAD_BODY, "begin/end time required")
        if end < start or end - start > AFTER_SALE_WINDOW_SECONDS:
            raise ApiError(AFTER_SALE_WINDOW, "time range exceeds 24 hours")
        with self.lock:
            rows = sorted(
                (a[key], a["after_sale_order_id"]) for a in shop.after_sales.values() if start <= a[key] <= end
            )
        return self._page(rows, body.get("next_key"), 100, "after_sale_order_id_list")

    def get_after_sale(self, shop: SimShop, after_sale_id: Any) -> dict:
        with self.lock:
            record = shop.after_sales.get(str(after_sale_id))
            if record is None:
                raise ApiError(NOT_FOUND, "aftersale order not exist")
            view = _copy(record)
        view.pop("requires_negotiation", None)
        view.pop("return_address_id", None)  # the simulator's own bookkeeping, not a platform field
        view["deadline"] = max(0, view.pop("deadline_at") - self.now()) if view["status"] in OPEN_AFTER_SALE else 0
        return {"after_sale_order": view}

    def accept_after_sale(self, shop: SimShop, body: dict) -> dict:
        with self.lock:
            record = shop.after_sales.get(str(body.get("after_sale_order_id", "")))
            if record is None:
                raise ApiError(NOT_FOUND, "aftersale order not exist")
            status, kind = record["status"], record["type"]
            accept_type = body.get("accept_type")
            approving = status == "MERCHANT_PROCESSING" and accept_type in (None, 1)
            if approving and kind == "RETURN":
                address_id = body.get("address_id")
                if not address_id:
                    raise ApiError(ADDRESS_MISSING, "address_id is required to approve a return")
                address = shop.addresses.get(str(address_id))
                if address is None or not address["recv_addr"]:
                    raise ApiError(ADDRESS_INVALID, "invalid return address")
                record["status"] = "USER_WAIT_RETURN"
                record["return_address_id"] = str(address_id)
            elif approving and kind == "EXCHANGE":
                record["status"] = "USER_WAIT_RETURN"
            elif approving and kind == "REFUND":
                self._refund(shop, record, "MERCHANT_REFUND_SUCCESS")
            elif status == "MERCHANT_WAIT_RECEIPT" and accept_type == 2:
                self._refund(shop, record, "MERCHANT_RETURN_SUCCESS")
            elif status == "MERCHANT_WAIT_RECEIPT":
                raise ApiError(BAD_BODY, "accept_type 2 confirms receipt of a returned parcel")
            else:
                raise ApiError(WRONG_STATE, f"cannot accept an after-sale in status {status}")
            self._after_sale_changed(shop, record)
            return {}

    def _refund(self, shop: SimShop, record: dict, new_status: str) -> None:
        order_id = record["order_id"]
        last = shop.refund_calls.get(order_id)
        now = self.clock()
        if last is not None and now - last < 60:
            raise ApiError(REFUND_TOO_FAST, "one refund request per order per minute")
        shop.refund_calls[order_id] = now
        record["status"] = new_status

    def reject_after_sale(self, shop: SimShop, body: dict) -> dict:
        with self.lock:
            record = shop.after_sales.get(str(body.get("after_sale_order_id", "")))
            if record is None:
                raise ApiError(NOT_FOUND, "aftersale order not exist")
            if body.get("reject_reason_type") not in {r["reject_reason_type"] for r in REJECT_REASONS}:
                raise ApiError(BAD_BODY, "unknown reject_reason_type")
            if record["status"] not in ("MERCHANT_PROCESSING", "MERCHANT_WAIT_RECEIPT"):
                raise ApiError(WRONG_STATE, f"cannot reject an after-sale in status {record['status']}")
            if record.get("requires_negotiation"):
                raise ApiError(NEGOTIATE_FIRST, "negotiate with the buyer before rejecting")
            record["status"] = "MERCHANT_REJECT_REFUND" if record["type"] == "REFUND" else "MERCHANT_REJECT_RETURN"
            self._after_sale_changed(shop, record)
            return {}

    # --- addresses ------------------------------------------------------------------------------

    def _store_address(self, shop: SimShop, detail: dict, address_id: str | None = None) -> str:
        address_id = address_id or self.new_id("")[-12:]
        now = self.now()
        stored = {
            "address_id": address_id,
            "name": detail.get("name", ""),
            "address_info": dict(detail.get("address_info") or {}),
            "landline": detail.get("landline", ""),
            "send_addr": bool(detail.get("send_addr")),
            "recv_addr": bool(detail.get("recv_addr")),
            "default_send": bool(detail.get("default_send")),
            "default_recv": bool(detail.get("default_recv")),
            "create_time": shop.addresses.get(address_id, {}).get("create_time", now),
            "update_time": now,
        }
        if stored["default_recv"]:
            for other in shop.addresses.values():
                other["default_recv"] = False
        shop.addresses[address_id] = stored
        return address_id

    def list_addresses(self, shop: SimShop, body: dict) -> dict:
        offset, limit = int(body.get("offset", 0)), int(body.get("limit", 10))
        with self.lock:
            ids = sorted(shop.addresses)
        return {"address_id_list": ids[offset : offset + limit]}

    def get_address(self, shop: SimShop, body: dict) -> dict:
        with self.lock:
            address = shop.addresses.get(str(body.get("address_id", "")))
            if address is None:
                raise ApiError(NOT_FOUND, "address not exist")
            return {"address_detail": _copy(address)}

    def add_address(self, shop: SimShop, body: dict) -> dict:
        detail = body.get("address_detail")
        if not isinstance(detail, dict) or not (detail.get("address_info") or {}).get("detail_info"):
            raise ApiError(BAD_BODY, "address_detail.address_info.detail_info required")
        with self.lock:
            return {"address_id": self._store_address(shop, detail)}

    def update_address(self, shop: SimShop, body: dict) -> dict:
        detail = body.get("address_detail") or {}
        with self.lock:
            address_id = str(detail.get("address_id", ""))
            if address_id not in shop.addresses:
                raise ApiError(NOT_FOUND, "address not exist")
            self._store_address(shop, {**shop.addresses[address_id], **detail}, address_id)
            return {}

    def delete_address(self, shop: SimShop, body: dict) -> dict:
        with self.lock:
            if shop.addresses.pop(str(body.get("address_id", "")), None) is None:
                raise ApiError(NOT_FOUND, "address not exist")
            return {}

    # --- customer service messages ------------------------------------------------------------

    def send_message(self, shop: SimShop, body: dict) -> dict:
        open_id, msg_type = body.get("open_id"), body.get("msg_type")
        if not open_id or msg_type not in ("text", "image", "order_share", "product_share"):
            raise ApiError(BAD_BODY, "open_id and a supported msg_type are required")
        content = body.get(msg_type)
        if not isinstance(content, dict):
            raise ApiError(BAD_BODY, f"{msg_type} body required")
        if msg_type == "text" and not str(content.get("content", "")).strip():
            raise ApiError(BAD_BODY, "empty text")
        if msg_type == "image" and content.get("cos_url") not in shop.uploads:
            raise ApiError(BAD_BODY, "image cos_url unknown or expired: upload it with commkf/cosupload")
        with self.lock:
            request_id = body.get("request_id")
            if request_id and request_id in shop.request_ids:
                return {"msg_id": shop.request_ids[request_id]}  # a retry: same answer, not sent twice
            budget = shop.replies.get(open_id)
            now = self.clock()
            if budget is None or now - budget["last_buyer_at"] > REPLY_HOURS * 3600:
                raise ApiError(REPLY_WINDOW, "more than 48 hours since the buyer's last message")
            if budget["count"] >= REPLIES_PER_TURN:
                raise ApiError(REPLY_LIMIT, "5 replies since the buyer's last message already sent")
            budget["count"] += 1
            msg_id = self.new_id("m")
            shop.sent.append(
                {
                    "msg_id": msg_id,
                    "request_id": request_id,
                    "open_id": open_id,
                    "msg_type": msg_type,
                    msg_type: content,
                    "time": now,
                }
            )
            if request_id:
                shop.request_ids[request_id] = msg_id
            return {"msg_id": msg_id}

    def upload(self, shop: SimShop, open_id: str, msg_type: str, size: int) -> dict:
        if size > 30 * 1024 * 1024:
            raise ApiError(BAD_BODY, "file larger than 30 MB")
        with self.lock:
            url = f"https://cos.sim.invalid/{shop.appid}/{secrets.token_hex(8)}"
            shop.uploads[url] = size
            return {"cos_url": url}

    # --- the buyer's side (scenario driver) -----------------------------------------------------

    def buyer_message(
        self, shop: SimShop, openid: str, text: str | None = None, *, msg_type: str = "text", body: dict | None = None
    ) -> dict:
        with self.lock:
            now = self.now()
            shop.replies[openid] = {"last_buyer_at": self.clock(), "count": 0}
            msg_id = self.new_id("bm")
            payload = {
                "ToUserName": shop.appid,
                "FromUserName": openid,
                "CreateTime": now,
                "MsgType": "event",
                "Event": "commkf_send_msg_to_kf",
                "msg_id": msg_id,
                "msg_type": msg_type,
                "msg_event": "send_msg",
            }
            payload[msg_type] = body if body is not None else {"content": text or ""}
        self.push(shop, payload)
        return payload

    def place_order(
        self,
        shop: SimShop,
        openid: str,
        items: list[dict],
        *,
        paid: bool = True,
        address: dict | None = None,
        unionid: str | None = None,
    ) -> dict:
        with self.lock:
            now = self.now()
            order_id = self.new_id("")
            product_price = sum(i["sale_price"] * i.get("sku_cnt", 1) for i in items)
            order = {
                "order_id": order_id,
                "status": 20 if paid else 10,
                "create_time": now,
                "update_time": now,
                "openid": openid,
                "unionid": unionid or shop.buyers.get(openid, {}).get("unionid"),
                "order_detail": {
                    "product_infos": [
                        {
                            "product_id": i["product_id"],
                            "sku_id": i["sku_id"],
                            "sku_cnt": i.get("sku_cnt", 1),
                            "sale_price": i["sale_price"],
                            "real_price": i.get("real_price", i["sale_price"]),
                            "title": i["title"],
                            "thumb_img": i.get("thumb_img", ""),
                            "sku_code": i.get("sku_code", ""),
                            "sku_attrs": i.get("sku_attrs", []),
                            "on_aftersale_sku_cnt": 0,
                            "finish_aftersale_sku_cnt": 0,
                        }
                        for i in items
                    ],
                    "price_info": {
                        "product_price": product_price,
                        "order_price": product_price,
                        "freight": 0,
                        "discounted_price": 0,
                    },
                    "pay_info": {"pay_time": now} if paid else {},
                    "delivery_info": {
                        "address_info": address
                        or {
                            "user_name": "林晓",
                            "tel_number": "13912345678",
                            "province_name": "浙江省",
                            "city_name": "杭州市",
                            "county_name": "西湖区",
                            "detail_info": "文三路100号",
                        },
                        "deliver_method": 0,
                        "delivery_product_info": [],
                        "ship_done_time": 0,
                    },
                },
                "aftersale_detail": {"on_aftersale_order_cnt": 0, "aftersale_order_list": []},
            }
            shop.orders[order_id] = order
        self._order_event(shop, order, "channels_ec_order_new")
        if paid:
            self._order_event(shop, order, "channels_ec_order_pay", pay_time=now)
        return order

    def pay_order(self, shop: SimShop, order_id: str) -> None:
        with self.lock:
            order = shop.orders[order_id]
            now = self.now()
            order["status"], order["update_time"] = 20, now
            order["order_detail"]["pay_info"] = {"pay_time": now}
        self._order_event(shop, order, "channels_ec_order_pay", pay_time=now)

    def ship_order(self, shop: SimShop, order_id: str) -> None:
        with self.lock:
            order = shop.orders[order_id]
            now = self.now()
            order["status"], order["update_time"] = 30, now
            info = order["order_detail"]["delivery_info"]
            info["delivery_product_info"] = [
                {"waybill_id": f"SF{secrets.randbelow(10**12):012d}", "delivery_id": "SF", "delivery_name": "顺丰速运"}
            ]
            info["ship_done_time"] = now
        self._order_event(shop, order, "channels_ec_order_deliver", finish_delivery=1)

    def cancel_order(self, shop: SimShop, order_id: str, cancel_type: int = 1) -> None:
        with self.lock:
            order = shop.orders[order_id]
            order["status"], order["update_time"] = 250, self.now()
        self._order_event(shop, order, "channels_ec_order_cancel", cancel_type=cancel_type)

    def open_after_sale(
        self,
        shop: SimShop,
        order_id: str,
        kind: str = "REFUND",
        *,
        reason: str = "不想要了",
        requires_negotiation: bool = False,
    ) -> dict:
        with self.lock:
            order = shop.orders[order_id]
            item = order["order_detail"]["product_infos"][0]
            now = self.now()
            after_sale_id = self.new_id("")
            record = {
                "after_sale_order_id": after_sale_id,
                "status": "MERCHANT_PROCESSING",
                "order_id": order_id,
                "openid": order["openid"],
                "unionid": order.get("unionid"),
                "type": kind,
                "product_info": {"product_id": item["product_id"], "sku_id": item["sku_id"], "count": item["sku_cnt"]},
                "refund_info": {"amount": item["real_price"] * item["sku_cnt"], "refund_reason": reason},
                "return_info": {},
                "details": {"desc": reason, "prove_imgs": []},
                "reason": "no_reason",
                "reason_text": reason,
                "create_time": now,
                "update_time": now,
                "deadline_at": now + AFTER_SALE_DEADLINE,
                "requires_negotiation": requires_negotiation,
            }
            shop.after_sales[after_sale_id] = record
            item["on_aftersale_sku_cnt"] = item["sku_cnt"]
            order["aftersale_detail"]["on_aftersale_order_cnt"] += 1
            order["aftersale_detail"]["aftersale_order_list"].append({"aftersale_order_id": after_sale_id})
            order["update_time"] = now
            self._after_sale_changed(shop, record, touch=False)
        return record

    def buyer_returns_parcel(self, shop: SimShop, after_sale_id: str) -> None:
        with self.lock:
            record = shop.after_sales[after_sale_id]
            if record["status"] != "USER_WAIT_RETURN":
                raise ApiError(WRONG_STATE, "not waiting for a return")
            record["return_info"] = {
                "waybill_id": f"YT{secrets.randbelow(10**12):012d}",
                "delivery_id": "YTO",
                "delivery_name": "圆通速递",
            }
            record["status"] = "MERCHANT_WAIT_RECEIPT"
            self._after_sale_changed(shop, record)

    def _after_sale_changed(self, shop: SimShop, record: dict, touch: bool = True) -> None:
        if touch:
            record["update_time"] = max(self.now(), record["update_time"])
        payload = {
            "ToUserName": shop.appid,
            "FromUserName": "system",
            "CreateTime": self.now(),
            "MsgType": "event",
            "Event": "channels_ec_aftersale_update",
            "finder_shop_aftersale_status_update": {
                "status": record["status"],
                "after_sale_order_id": record["after_sale_order_id"],
                "order_id": int(record["order_id"]),
            },
        }
        self.push(shop, payload)

    def _order_event(self, shop: SimShop, order: dict, event: str, **info: Any) -> None:
        payload = {
            "ToUserName": shop.appid,
            "FromUserName": "system",
            "CreateTime": self.now(),
            "MsgType": "event",
            "Event": event,
            # A bare JSON number above 2^53, as the platform sends it.
            "order_info": {"order_id": int(order["order_id"]), **info},
        }
        self.push(shop, payload)

    # --- inspection (tests, bench, demo) --------------------------------------------------------

    def record_call(self, shop: SimShop, api: str, body: dict, errcode: int) -> None:
        with self.lock:
            shop.calls.append((self.clock(), api, body, errcode))

    def calls(self, shop: SimShop, api: str | None = None) -> list[tuple[float, str, dict, int]]:
        with self.lock:
            return [c for c in shop.calls if api is None or c[1] == api]


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
