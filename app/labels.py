"""Platform codes in words, in the user's language."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

ORDER_STATUS = {
    10: _l("Awaiting payment"),
    20: _l("Paid, awaiting shipment"),
    21: _l("Partly shipped"),
    30: _l("Shipped"),
    100: _l("Completed"),
    190: _l("Cancelled (oversold)"),
    200: _l("Cancelled (all items after-sold)"),
    250: _l("Cancelled"),
}

AFTER_SALE_TYPE = {
    "REFUND": _l("Refund only"),
    "RETURN": _l("Return and refund"),
    "EXCHANGE": _l("Exchange"),
}

AFTER_SALE_STATUS = {
    "MERCHANT_PROCESSING": _l("Waiting for the merchant"),
    "USER_WAIT_RETURN": _l("Waiting for the buyer to return"),
    "MERCHANT_WAIT_RECEIPT": _l("Waiting for the merchant to receive"),
    "MERCHANT_REFUND_SUCCESS": _l("Refunded"),
    "MERCHANT_RETURN_SUCCESS": _l("Returned and refunded"),
    "MERCHANT_REJECT_REFUND": _l("Refund rejected"),
    "MERCHANT_REJECT_RETURN": _l("Return rejected"),
    "USER_CANCELD": _l("Cancelled by the buyer"),
    "RETURN_CLOSED": _l("Return closed"),
    "MERCHANT_OVERDUE_REFUND": _l("Refunded after the merchant's deadline"),
    "PLATFORM_REFUNDING": _l("Platform refunding"),
    "PLATFORM_REFUND_FAIL": _l("Platform refund failed"),
    "USER_WAIT_CONFIRM": _l("Waiting for the buyer to confirm"),
    "MERCHANT_REFUND_RETRY_FAIL": _l("Refund retry failed"),
    "MERCHANT_FAIL": _l("Failed"),
}

ROLE = {"agent": _l("Agent"), "supervisor": _l("Supervisor"), "admin": _l("Admin")}


def order_status(code: int | None) -> str:
    if code is None:
        return ""
    label = ORDER_STATUS.get(code)
    return str(label) if label is not None else str(_l("Status %(code)s", code=code))


def after_sale_type(value: str | None) -> str:
    return str(AFTER_SALE_TYPE.get(value or "", value or ""))


def after_sale_status(value: str | None) -> str:
    return str(AFTER_SALE_STATUS.get(value or "", value or ""))


def role(value) -> str:
    key = getattr(value, "value", value)
    return str(ROLE.get(key, key))
