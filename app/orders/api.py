"""The sidebar's JSON endpoints (docs/api.md): after-sale actions, reject reasons, the full address,
the order card, finding a buyer. Thin adapters: shop access comes from the request's scope (another
shop's after-sale or order is not found), the work from the domain modules beside this one."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask_login import current_user, login_required

from app.auth.access import accessible_shops
from app.desk import views
from app.desk.conversations import DeskError
from app.extensions import db
from app.ingest import worker
from app.models import AfterSale, AfterSaleAction, Shop
from app.orders import actions, addresses, cards, reasons, sidebar
from app.orders.actions import ActionError
from app.platform.client import PlatformError
from app.web import error_response

bp = Blueprint("orders_api", __name__)
_DESK_STATUS = {"not_found": 404, "forbidden": 403, "invalid": 400}


@bp.after_request
def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(ActionError)
def _action_error(exc: ActionError):
    db.session.rollback()
    return error_response(exc.status, exc.code, exc.message)


@bp.errorhandler(DeskError)
def _desk_error(exc: DeskError):
    db.session.rollback()
    return error_response(_DESK_STATUS.get(exc.code, 409), exc.code, exc.message)


def _data() -> dict:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def _int(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _wake() -> None:
    worker.wake_outbox(current_app._get_current_object())


def action_dict(action: AfterSaleAction, current_status: str | None = None) -> dict:
    failed = action.state == "failed"
    return {
        "id": action.id,
        "after_sale_pk": action.after_sale_pk,
        "after_sale_order_id": action.after_sale_order_id,
        "kind": action.kind,
        "state": action.state,
        "request_id": action.request_id,
        "address_id": action.address_id,
        "address_source": action.address_source,
        "reject_reason_type": action.reject_reason_type,
        "error": {
            "code": action.error_code,
            "message": actions.error_text(action, current_status),
            "errmsg": action.errmsg,
        }
        if failed
        else None,
        "requested_by": {"id": action.requested_by.id, "name": action.requested_by.display_name}
        if action.requested_by
        else None,
        "created_at": views.iso(action.created_at),
        "completed_at": views.iso(action.completed_at),
    }


@bp.post("/api/after-sales/<int:after_sale_pk>/actions")
@login_required
def act(after_sale_pk: int):
    data = _data()
    action, created = actions.request_action(
        current_user._get_current_object(),
        after_sale_pk,
        str(data.get("kind") or ""),
        str(data.get("request_id") or ""),
        address_pk=_int(data.get("address_pk")),
        reject_reason_type=_int(data.get("reject_reason_type")),
        reject_reason=str(data.get("reject_reason") or "") or None,
    )
    if created:
        _wake()
    return jsonify(action=action_dict(action)), 202 if created else 200


@bp.get("/api/after-sales/<int:after_sale_pk>/reject-reasons")
@login_required
def reject_reasons(after_sale_pk: int):
    row = db.session.get(AfterSale, after_sale_pk)
    if row is None:
        raise actions.not_found()
    shop = db.session.get(Shop, row.shop_id)
    try:
        found = reasons.for_scene(shop, actions.REJECT_SCENE.get(row.type))
    except PlatformError:
        raise ActionError("unavailable", actions.ERROR_TEXT["unavailable"], 502) from None
    return jsonify(reasons=[r.as_dict() for r in found])


@bp.post("/api/orders/<int:order_pk>/address")
@login_required
def reveal_address(order_pk: int):
    address, decoded, left = addresses.reveal(current_user._get_current_object(), order_pk)
    return jsonify(address=address, decoded_now=decoded, decodes_left=left)


@bp.post("/api/orders/<int:order_pk>/card")
@login_required
def send_card(order_pk: int):
    data = _data()
    conversation_id = _int(data.get("conversation_id"))
    if conversation_id is None:
        raise ActionError("invalid", "conversation_id", 400)
    message = cards.send_order_card(
        current_user._get_current_object(), conversation_id, order_pk, str(data.get("request_id") or "")
    )
    _wake()
    return jsonify(message=message), 201


@bp.get("/api/buyers")
@login_required
def buyers():
    shops = {s.id: s for s in accessible_shops()}
    matches = sidebar.search(request.args.get("q", "")[:64], shops)
    return jsonify(
        buyers=[
            {
                "customer_id": m.customer.id,
                "nickname": m.customer.nickname,
                "openid": m.customer.openid,
                "shop": {"id": m.shop.id, "name": m.shop.name} if m.shop else None,
                "conversation_id": m.conversation_id,
                "matched": m.matched,
                "order_id": m.order_id,
            }
            for m in matches
        ]
    )
