"""The shop's address book: created and edited through the platform, which keeps the truth.

A save is user-initiated and synchronous: ``merchant/address/add`` (or ``update``), then
``merchant/address/get`` of that address, stored with the pollers' upsert. The platform keeps one
default return address per shop, so a new default clears the flag on the others here too (the next
address sync confirms it). Platform errors come back as ``AddressError`` in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import gettext as _

from app import audit, events, tenancy
from app.extensions import db
from app.ingest import pollers
from app.ingest.store import upsert_address
from app.models import ReturnAddress, Shop, User
from app.platform import client_for
from app.platform.client import (
    ApiBlocked,
    BadRequest,
    BusinessError,
    NotAuthorized,
    PlatformError,
    PlatformUnavailable,
    QuotaExhausted,
    RateLimited,
)


class AddressError(Exception):
    """Why the platform did not take the address, in the user's language."""


@dataclass
class AddressInput:
    name: str
    contact_name: str
    phone: str
    province: str
    city: str
    county: str
    detail: str
    postal_code: str = ""
    landline: str = ""
    is_return_address: bool = True
    is_send_address: bool = False
    is_default_return: bool = False
    is_default_send: bool = False

    @classmethod
    def of(cls, address: ReturnAddress) -> AddressInput:
        return cls(
            name=address.name,
            contact_name=address.contact_name,
            phone=address.phone,
            province=address.province,
            city=address.city,
            county=address.county,
            detail=address.detail,
            postal_code=address.postal_code or "",
            landline=address.landline or "",
            is_return_address=address.is_return_address,
            is_send_address=address.is_send_address,
            is_default_return=address.is_default_return,
            is_default_send=address.is_default_send,
        )

    def detail_for_platform(self, address_id: str | None = None) -> dict:
        """``address_detail`` as the contract names its fields."""
        detail = {
            "name": self.name,
            "address_info": {
                "user_name": self.contact_name,
                "tel_number": self.phone,
                "province_name": self.province,
                "city_name": self.city,
                "county_name": self.county,
                "detail_info": self.detail,
                "postal_code": self.postal_code,
            },
            "landline": self.landline,
            "send_addr": self.is_send_address,
            "recv_addr": self.is_return_address,
            "default_send": self.is_default_send and self.is_send_address,
            "default_recv": self.is_default_return and self.is_return_address,
        }
        if address_id:
            detail["address_id"] = address_id
        return detail


def _plain(exc: PlatformError) -> str:
    if isinstance(exc, RateLimited):
        return _("The platform is busy with this shop's calls. Try again in a minute.")
    if isinstance(exc, QuotaExhausted | ApiBlocked):
        return _("The platform paused this API for the shop (quota). Try again later.")
    if isinstance(exc, NotAuthorized):
        return _("This shop's platform app may not manage addresses. An admin must fix the shop setup.")
    if isinstance(exc, PlatformUnavailable):
        return _("The platform could not be reached. Nothing was saved; try again.")
    if isinstance(exc, BadRequest):
        return _("The platform refused the address as incomplete or malformed: %(msg)s", msg=exc.errmsg or "")
    if isinstance(exc, BusinessError):
        return _("The platform refused the address: %(msg)s (code %(code)s)", msg=exc.errmsg or "", code=exc.errcode)
    return _("The platform refused the address.")


def save(user: User, shop: Shop, data: AddressInput, address: ReturnAddress | None = None) -> ReturnAddress:
    """Create (``address`` None) or update an address on the platform, then store its answer; commit."""
    client = client_for(shop)
    shop_id = shop.id
    before = AddressInput.of(address).__dict__ if address is not None else None
    db.session.commit()  # no transaction open while the platform answers
    try:
        if address is None:
            address_id = str(client.add_address(data.detail_for_platform()))
        else:
            address_id = address.address_id
            client.update_address(data.detail_for_platform(address_id))
        detail = client.get_address(address_id)
    except PlatformError as exc:
        audit.record(
            "return_address.save_failed",
            user=user,
            shop_id=shop_id,
            subject_kind="return_address",
            subject_id=address.address_id if address is not None else None,
            details={"errcode": getattr(exc, "errcode", None), "errmsg": getattr(exc, "errmsg", None)},
        )
        db.session.commit()
        raise AddressError(_plain(exc)) from None
    # The upsert inserts with INSERT ... ON CONFLICT (race-free), which a scoped session refuses;
    # the shop was loaded through the scope.
    with tenancy.system_scope(db.session()):
        row = upsert_address(shop_id, detail)
        if row.is_default_return:
            for other in db.session.scalars(
                sa.select(ReturnAddress).where(
                    ReturnAddress.shop_id == shop_id,
                    ReturnAddress.id != row.id,
                    ReturnAddress.is_default_return.is_(True),
                )
            ):
                other.is_default_return = False
    audit.record(
        "return_address.created" if address is None else "return_address.updated",
        user=user,
        shop_id=shop_id,
        subject_kind="return_address",
        subject_id=address_id,
        details={"before": before, "after": AddressInput.of(row).__dict__},
    )
    db.session.commit()
    row = db.session.get(ReturnAddress, row.id)
    events.emit(events.addresses_synced, shop_id, count=1, deleted=0)
    return row


def sync_now(user: User, shop: Shop) -> pollers.SyncResult:
    """Read the shop's whole address book from the platform now (the poller's run, by hand); audited."""
    with tenancy.system_scope(db.session()):
        result = pollers.sync_addresses(shop)
    audit.record(
        "return_address.synced",
        user=user,
        shop_id=shop.id,
        details={"listed": result.listed, "deleted": result.changed, "errors": result.errors[:1] or None},
    )
    db.session.commit()
    return result
