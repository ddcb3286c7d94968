"""The buyer's full delivery address, only on an agent's explicit request, audited.

The platform masks addresses (林**, 139****5678) and decodes them with ``sensitiveinfo/decode``,
which has a small daily quota (reported ~30 per shop and day). So: decode only when an agent asks,
count the decodes of the shop's day (audit entries), refuse before the platform would, and keep the
decoded address (encrypted at rest) with the masked address it belongs to, so looking again costs
no quota until the platform's address changes. Every reveal is audited; the address never is.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext as _
from sqlalchemy.orm import undefer

from app import audit
from app.db import utcnow
from app.extensions import db
from app.models import AuditLog, Order, Shop, User
from app.orders.actions import ActionError
from app.platform import client_for
from app.platform.client import ApiBlocked, NotAuthorized, PlatformError, PlatformUnavailable, QuotaExhausted

DECODED = "order.address_decoded"  # the platform was asked (one unit of quota)
VIEWED = "order.address_viewed"  # shown again from the desk's copy
FIELDS = ("user_name", "tel_number", "province_name", "city_name", "county_name", "detail_info", "postal_code")


def _day_start(shop: Shop) -> datetime:
    local = utcnow().astimezone(ZoneInfo(shop.timezone or "Asia/Shanghai"))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def decodes_left(shop: Shop) -> int:
    """Decodes the shop has left today (its time zone), by the desk's own count."""
    return decodes_left_of([shop])[shop.id]


def decodes_left_of(shops: list[Shop]) -> dict[int, int]:
    """``decodes_left`` of several shops in one query."""
    if not shops:
        return {}
    today = sa.or_(*(sa.and_(AuditLog.shop_id == s.id, AuditLog.created_at >= _day_start(s)) for s in shops))
    used = dict(
        db.session.execute(
            sa.select(AuditLog.shop_id, sa.func.count())
            .where(AuditLog.action == DECODED, today)
            .group_by(AuditLog.shop_id)
        ).all()
    )
    quota = current_app.config["ADDRESS_DECODE_DAILY_QUOTA"]
    return {s.id: max(0, quota - used.get(s.id, 0)) for s in shops}


def next_day(shop: Shop) -> datetime:
    return _day_start(shop) + timedelta(days=1)


def _clean(info: dict) -> dict:
    return {key: str(info.get(key) or "") for key in FIELDS}


def reveal(user: User, order_pk: int) -> tuple[dict, bool, int]:
    """The full address of an order: (address, decoded_now, decodes left today)."""
    order = db.session.scalar(
        sa.select(Order).where(Order.id == order_pk).options(undefer(Order.decoded_address), undefer(Order.decoded_for))
    )
    if order is None:
        raise ActionError("not_found", _("This order does not exist, or it belongs to a shop you do not serve."), 404)
    shop = db.session.get(Shop, order.shop_id)
    subject = {"shop_id": order.shop_id, "subject_kind": "order", "subject_id": order.order_id}
    if order.decoded_address and order.decoded_for == order.address:
        audit.record(VIEWED, user=user, details={"order_pk": order.id}, **subject)
        left = decodes_left(shop)
        db.session.commit()
        return json.loads(order.decoded_address), False, left
    left = decodes_left(shop)
    if left <= 0:
        raise ActionError("decode_quota", quota_text(shop), 429)
    try:
        answer = client_for(shop).decode_address(order.order_id)
    except (QuotaExhausted, ApiBlocked):
        db.session.rollback()
        raise ActionError("decode_quota", quota_text(shop), 429) from None
    except NotAuthorized:
        db.session.rollback()
        raise ActionError(
            "not_authorised",
            _("This shop's platform app may not decode addresses. An admin must fix the shop setup."),
            502,
        ) from None
    except PlatformUnavailable:
        db.session.rollback()
        raise ActionError("unavailable", _("The platform could not be reached. Try again."), 502) from None
    except PlatformError as exc:
        db.session.rollback()
        raise ActionError(
            "rejected", _("The platform refused: %(reason)s", reason=exc.errmsg or exc.errcode), 502
        ) from None
    address = _clean(answer.get("address_info") or answer)
    order.decoded_address = json.dumps(address, ensure_ascii=False)
    order.decoded_for = order.address
    order.decoded_at = utcnow()
    audit.record(DECODED, user=user, details={"order_pk": order.id}, **subject)
    db.session.commit()
    return address, True, max(0, left - 1)


def quota_text(shop: Shop) -> str:
    return _(
        "Today's full-address quota of this shop is used up (the platform allows about %(n)d a day). "
        "It renews at midnight.",
        n=current_app.config["ADDRESS_DECODE_DAILY_QUOTA"],
    )
