"""Return addresses per shop and the SKU/product bindings that point at them."""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template

from app.auth.access import accessible_shops, supervisor_required
from app.extensions import db
from app.models import AddressBinding, ReturnAddress
from app.returns import bp


@bp.route("/")
@supervisor_required
def index():
    addresses = db.session.scalars(
        sa.select(ReturnAddress).order_by(
            ReturnAddress.shop_id, ReturnAddress.is_default_return.desc(), ReturnAddress.name
        )
    ).all()
    bindings = dict(
        db.session.execute(
            sa.select(AddressBinding.address_pk, sa.func.count()).group_by(AddressBinding.address_pk)
        ).all()
    )
    shops = accessible_shops()
    return render_template(
        "returns/index.html", addresses=addresses, bindings=bindings, shops=shops, shops_by_id={s.id: s for s in shops}
    )
