"""The bindings report: what still needs a binding, and returns that went out on a fallback.

- **Unbound SKUs**: sold in the last ``days`` (30) days with neither a SKU nor a product binding;
  a return of one goes to the shop binding or the platform default, or needs a hand pick.
- **Fallback approvals**: return approvals whose bound address was unusable (deleted on the
  platform, no longer a return address), so the resolver used the next level
  (``after_sale_actions.address_fallback``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import AfterSaleAction, AfterSaleActionKind, AfterSaleActionState, ReturnAddress
from app.returns import bindings

DAYS = 30


@dataclass
class ShopSummary:
    shop_id: int
    skus_sold: int
    unbound: int
    without_address: int
    fallbacks: int


def unbound_skus(shop_id: int, days: int = DAYS, limit: int = 500) -> list[bindings.KnownSku]:
    return bindings.known_skus(shop_id, only_unbound=True, since=utcnow() - timedelta(days=days), limit=limit)


def sold_skus(shop_id: int, days: int = DAYS) -> list[bindings.KnownSku]:
    return bindings.known_skus(shop_id, since=utcnow() - timedelta(days=days), limit=100_000)


def _fallback_approval(shop_ids: list[int], days: int) -> list:
    """Conditions of a return approval (not failed) that used a fallback address, in the period."""
    return [
        AfterSaleAction.shop_id.in_(shop_ids or [0]),
        AfterSaleAction.kind == AfterSaleActionKind.APPROVE_RETURN.value,
        AfterSaleAction.state != AfterSaleActionState.FAILED.value,
        AfterSaleAction.address_fallback.is_(True),
        AfterSaleAction.created_at >= utcnow() - timedelta(days=days),
    ]


def fallback_approvals(
    shop_ids: list[int], days: int = DAYS, limit: int = 500
) -> list[tuple[AfterSaleAction, ReturnAddress | None]]:
    """Return approvals (not failed) that used a fallback address, newest first, with the address used."""
    return list(
        db.session.execute(
            sa.select(AfterSaleAction, ReturnAddress)
            .outerjoin(ReturnAddress, ReturnAddress.id == AfterSaleAction.address_pk)
            .where(
                *_fallback_approval(shop_ids, days),
            )
            .order_by(AfterSaleAction.created_at.desc(), AfterSaleAction.id.desc())
            .limit(limit)
        ).all()
    )


def summary(shop_ids: list[int], days: int = DAYS) -> list[ShopSummary]:
    fallbacks = dict(
        db.session.execute(
            sa.select(AfterSaleAction.shop_id, sa.func.count())
            .where(
                *_fallback_approval(shop_ids, days),
            )
            .group_by(AfterSaleAction.shop_id)
        ).all()
    )
    out = []
    for shop_id in shop_ids:
        sold = sold_skus(shop_id, days)
        out.append(
            ShopSummary(
                shop_id=shop_id,
                skus_sold=len(sold),
                unbound=sum(1 for s in sold if not s.explicitly_bound),
                without_address=sum(1 for s in sold if s.resolution is None or s.resolution.address is None),
                fallbacks=fallbacks.get(shop_id, 0),
            )
        )
    return out
