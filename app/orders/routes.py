"""After-sales: every open case across the user's shops, the nearest platform deadline first."""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template, request
from flask_login import login_required

from app.auth.access import accessible_shops
from app.extensions import db
from app.models import AfterSale, AfterSaleType
from app.models.orders import OPEN_AFTER_SALE_STATUSES
from app.orders import bp
from app.web import int_arg

PAGE_SIZE = 100


@bp.route("/")
@login_required
def queue():
    shop_id = int_arg("shop")
    kind = request.args.get("type")
    show = request.args.get("show", "open")
    stmt = sa.select(AfterSale)
    if show == "open":
        stmt = stmt.where(AfterSale.status.in_([s.value for s in OPEN_AFTER_SALE_STATUSES]))
        stmt = stmt.order_by(AfterSale.deadline_at.is_(None), AfterSale.deadline_at, AfterSale.id)
    else:
        show = "all"
        stmt = stmt.order_by(AfterSale.platform_updated_at.desc(), AfterSale.id.desc())
    if shop_id:
        stmt = stmt.where(AfterSale.shop_id == shop_id)
    if kind in {t.value for t in AfterSaleType}:
        stmt = stmt.where(AfterSale.type == kind)
    else:
        kind = None
    page = int_arg("page", default=1, high=10_000)
    rows = db.session.scalars(stmt.limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)).all()
    shops = accessible_shops()
    return render_template(
        "orders/queue.html",
        after_sales=rows[:PAGE_SIZE],
        has_next=len(rows) > PAGE_SIZE,
        page=page,
        shop_id=shop_id,
        kind=kind,
        show=show,
        types=list(AfterSaleType),
        shops=shops,
        shops_by_id={s.id: s for s in shops},
    )
