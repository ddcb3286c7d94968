"""The simulator's HTTP face: the platform's paths (platform-api.md) plus a small control API.

Platform paths answer like the platform: HTTP 200 with ``errcode``/``errmsg``; faults (latency, -1,
45011, token expiry, timeouts) are injected per shop before the call is handled. The control API under
``/_sim`` (register shops, faults, scenario steps, inspection) exists for the demo, tests and benches.
"""

from __future__ import annotations

import json
import time

from flask import Blueprint, current_app, jsonify, request

from app.platform.simulator.state import (
    BAD_BODY,
    BUSY,
    MINUTE_QUOTA,
    TOKEN_EXPIRED,
    ApiError,
    SimPlatform,
    SimShop,
)

bp = Blueprint("simulator", __name__)

ROUTES = {
    "/channels/ec/order/list/get": lambda p, s, b: p.list_orders(s, b),
    "/channels/ec/order/get": lambda p, s, b: p.get_order(s, b.get("order_id", "")),
    "/channels/ec/order/sensitiveinfo/decode": lambda p, s, b: p.decode_address(s, b.get("order_id", "")),
    "/channels/ec/aftersale/getaftersalelist": lambda p, s, b: p.list_after_sales(s, b),
    "/channels/ec/aftersale/getaftersaleorder": lambda p, s, b: p.get_after_sale(s, b.get("after_sale_order_id", "")),
    "/channels/ec/aftersale/acceptapply": lambda p, s, b: p.accept_after_sale(s, b),
    "/channels/ec/aftersale/rejectapply": lambda p, s, b: p.reject_after_sale(s, b),
    "/channels/ec/aftersale/rejectreason/get": lambda p, s, b: {s.reason_list_key: _reasons()},
    "/channels/ec/merchant/address/list": lambda p, s, b: p.list_addresses(s, b),
    "/channels/ec/merchant/address/get": lambda p, s, b: p.get_address(s, b),
    "/channels/ec/merchant/address/add": lambda p, s, b: p.add_address(s, b),
    "/channels/ec/merchant/address/update": lambda p, s, b: p.update_address(s, b),
    "/channels/ec/merchant/address/delete": lambda p, s, b: p.delete_address(s, b),
    "/channels/ec/commkf/sendmsg": lambda p, s, b: p.send_message(s, b),
}


def _reasons() -> list[dict]:
    from app.platform.simulator.state import REJECT_REASONS

    return [dict(r) for r in REJECT_REASONS]


@bp.before_request
def _outage():
    if platform().down and "/_sim/" not in request.path:
        return "platform unavailable", 503
    return None


def platform() -> SimPlatform:
    return current_app.extensions["channeldesk.simulator"].platform


def _answer(data: dict | None = None, errcode: int = 0, errmsg: str = "ok"):
    return jsonify({"errcode": errcode, "errmsg": errmsg, **(data or {})})


def _json_body() -> dict:
    try:
        body = json.loads(request.get_data(as_text=True) or "{}")
    except ValueError:
        raise ApiError(BAD_BODY, "data format error: body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(BAD_BODY, "data format error: body must be a JSON object")
    return body


def _inject_faults(sim: SimPlatform, shop: SimShop, api: str) -> None:
    faults, rng = shop.faults, shop.rng
    if api in faults.api_errors:
        raise ApiError(int(faults.api_errors[api]), "injected error")
    if faults.latency_ms:
        time.sleep(faults.latency_ms / 1000 * (0.5 + rng.random()))
    if faults.timeout_rate and rng.random() < faults.timeout_rate:
        time.sleep(faults.timeout_seconds)
    if faults.token_expiry_rate and rng.random() < faults.token_expiry_rate:
        sim.expire_current_token(shop)
        raise ApiError(TOKEN_EXPIRED, "access_token expired")
    if faults.busy_rate and rng.random() < faults.busy_rate:
        raise ApiError(BUSY, "system error")
    if faults.rate_limit_rate and rng.random() < faults.rate_limit_rate:
        raise ApiError(MINUTE_QUOTA, "reach max api minute quota limit")


@bp.post("/cgi-bin/stable_token")
def stable_token():
    try:
        return _answer(platform().stable_token(_json_body()))
    except ApiError as exc:
        return _answer(errcode=exc.errcode, errmsg=exc.errmsg)


@bp.post("/channels/ec/commkf/cosupload")
def cos_upload():
    sim = platform()
    try:
        shop = sim.check_token(request.args.get("access_token"))
        _inject_faults(sim, shop, "/channels/ec/commkf/cosupload")
        upload = request.files.get("file")
        if upload is None or not request.form.get("open_id"):
            raise ApiError(BAD_BODY, "multipart file and open_id required")
        size = len(upload.read())
        return _answer(sim.upload(shop, request.form["open_id"], request.form.get("msg_type", "image"), size))
    except ApiError as exc:
        return _answer(errcode=exc.errcode, errmsg=exc.errmsg)


@bp.post("/<path:api>")
def call(api: str):
    sim = platform()
    api = "/" + api
    handler = ROUTES.get(api)
    if handler is None:
        return _answer(errcode=48001, errmsg=f"api unauthorized or unknown: {api}")
    shop = None
    body: dict = {}
    try:
        shop = sim.check_token(request.args.get("access_token"))
        body = _json_body()
        _inject_faults(sim, shop, api)
        result = handler(sim, shop, body)
        sim.record_call(shop, api, body, 0)
        return _answer(result)
    except ApiError as exc:
        shop = shop or exc.shop
        if shop is not None:
            sim.record_call(shop, api, body, exc.errcode)
        return _answer(errcode=exc.errcode, errmsg=exc.errmsg)


# --- control API (not part of the platform) --------------------------------------------------------


def _sim_shop() -> SimShop:
    appid = (request.get_json(silent=True) or {}).get("appid") or request.args.get("appid", "")
    return platform().shop(appid)


@bp.post("/_sim/shops")
def register_shop():
    data = request.get_json(force=True)
    shop = platform().add_shop(data["appid"], data["secret"], data["push_token"], data["aes_key"], data.get("push_url"))
    return jsonify(appid=shop.appid, addresses=sorted(shop.addresses))


@bp.post("/_sim/faults")
def set_faults():
    data = dict(request.get_json(force=True))
    shop = platform().shop(data.pop("appid"))
    if "seed" in data:
        shop.rng.seed(data["seed"])
    shop.faults.update(**data)
    return jsonify(vars(shop.faults))


@bp.post("/_sim/outage")
def outage():
    """The whole platform down ({"down": true}) or back ({"down": false})."""
    data = request.get_json(force=True)
    sim = current_app.extensions["channeldesk.simulator"]
    sim.platform.down = bool(data.get("down"))
    if not sim.platform.down:
        sim.sender.resume()
    return jsonify(down=sim.platform.down)


@bp.post("/_sim/buyer_message")
def buyer_message():
    data = request.get_json(force=True)
    payload = platform().buyer_message(_sim_shop(), data["openid"], data.get("text", ""))
    return jsonify(payload)


@bp.post("/_sim/order")
def order():
    """A buyer orders: ``openid``, optional ``items`` (platform product_infos fields; default: one
    catalogue item), ``unionid``, ``ship`` (true: shipped at once)."""
    from app.platform.simulator.scenario import CATALOGUE

    data = request.get_json(force=True)
    sim, shop = platform(), _sim_shop()
    items = data.get("items") or [dict(CATALOGUE[0], sku_cnt=1)]
    placed = sim.place_order(shop, data["openid"], items, unionid=data.get("unionid"))
    if data.get("ship"):
        sim.ship_order(shop, placed["order_id"])
    return jsonify(order_id=placed["order_id"])


@bp.post("/_sim/after_sale")
def after_sale():
    """The buyer asks for an after-sale on ``order_id``: ``kind`` REFUND/RETURN/EXCHANGE, ``reason``,
    ``requires_negotiation`` (a rejection then answers 10021068)."""
    data = request.get_json(force=True)
    record = platform().open_after_sale(
        _sim_shop(),
        str(data["order_id"]),
        data.get("kind", "REFUND"),
        reason=data.get("reason", "不想要了"),
        requires_negotiation=bool(data.get("requires_negotiation")),
    )
    return jsonify(after_sale_order_id=record["after_sale_order_id"])


@bp.post("/_sim/return_parcel")
def return_parcel():
    """The buyer sends the approved return back (USER_WAIT_RETURN -> MERCHANT_WAIT_RECEIPT)."""
    data = request.get_json(force=True)
    platform().buyer_returns_parcel(_sim_shop(), str(data["after_sale_order_id"]))
    return jsonify(ok=True)


@bp.post("/_sim/burst")
def burst():
    from app.platform.simulator.scenario import Burst

    data = request.get_json(force=True)
    runner = Burst(
        platform(),
        _sim_shop(),
        orders=int(data.get("orders", 100)),
        seconds=float(data.get("seconds", 10)),
        after_sale_rate=float(data.get("after_sale_rate", 0.25)),
        message_rate=float(data.get("message_rate", 0.2)),
        return_share=float(data.get("return_share", 0.3)),
        ship_rate=float(data.get("ship_rate", 0.0)),
        seed=int(data["seed"]) if data.get("seed") is not None else None,
    )
    runner.start()
    current_app.extensions["channeldesk.simulator"].bursts.append(runner)
    return jsonify(started=True, orders=runner.orders, seconds=runner.seconds)


@bp.get("/_sim/state")
def state():
    shop = _sim_shop()
    sim = platform()
    with sim.lock:
        return jsonify(
            orders={
                oid: {"status": o["status"], "create_time": o["create_time"], "update_time": o["update_time"]}
                for oid, o in shop.orders.items()
            },
            after_sales={
                aid: {
                    "status": a["status"],
                    "type": a["type"],
                    "update_time": a["update_time"],
                    "return_address_id": a.get("return_address_id"),
                }
                for aid, a in shop.after_sales.items()
            },
            addresses=sorted(shop.addresses),
            sent=shop.sent,
        )


@bp.get("/_sim/pushes")
def pushes():
    """The push sender's counters: waiting (incl. retries), delivered, failed attempts, dropped."""
    sender = current_app.extensions["channeldesk.simulator"].sender
    return jsonify(
        pending=sender.pending(),
        in_flight=sender._busy(),
        delivered=sender.delivered,
        failed_attempts=sender.failed_attempts,
        dropped=sender.dropped,
    )


@bp.get("/_sim/calls")
def calls():
    api = request.args.get("api")
    return jsonify(
        [{"time": t, "api": a, "body": b, "errcode": e} for t, a, b, e in platform().calls(_sim_shop(), api)]
    )
