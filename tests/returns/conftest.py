"""Return-address fixtures: the simulator-backed shop of the sidebar tests, with a supervisor."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AddressBinding, AuditLog, ReturnAddress, Role, Shop
from tests.factories import make_user
from tests.orders.conftest import desk_shop, simulator  # noqa: F401 (fixtures)


@pytest.fixture
def supervised(app, desk_shop):  # noqa: F811
    """``desk_shop`` plus supervisor ``zhang`` of it; a scarf order so SKU 20000101 / product 10000101 is known."""
    with app.app_context():
        make_user("zhang", Role.SUPERVISOR, shops=[db.session.get(Shop, desk_shop.shop_id)])
        db.session.commit()
        db.session.remove()
    desk_shop.order()
    return desk_shop


def bindings_of(app, shop_id: int) -> dict[str, str]:
    """target_key -> address name."""
    with app.app_context():
        rows = db.session.scalars(sa.select(AddressBinding).where(AddressBinding.shop_id == shop_id)).all()
        found = {b.target_key: b.address.name for b in rows}
        db.session.remove()
    return found


def audit_of(app, prefix: str = "return_address.") -> list[tuple[str, str | None, dict | None]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(AuditLog.action, AuditLog.subject_id, AuditLog.details)
            .where(AuditLog.action.startswith(prefix))
            .order_by(AuditLog.id)
        ).all()
        db.session.remove()
    return [tuple(r) for r in rows]


def address_pk(app, shop_id: int, name: str) -> int:
    with app.app_context():
        pk = db.session.scalar(
            sa.select(ReturnAddress.id).where(ReturnAddress.shop_id == shop_id, ReturnAddress.name == name)
        )
        db.session.remove()
    return pk
