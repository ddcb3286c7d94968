"""The agent console page: one page for `/` and `/conversations/<id>`; the browser does the rest
through the console API (docs/api.md). The order sidebar is rendered here, also as a fragment."""

from __future__ import annotations

from flask import render_template
from flask_login import current_user, login_required

from app.auth.access import accessible_shops
from app.desk import bp
from app.extensions import db
from app.models import Conversation
from app.orders import sidebar as order_sidebar
from app.web import int_arg


@bp.route("/")
@login_required
def console():
    return _render_console(None)


@bp.route("/conversations/<int:conversation_id>")
@login_required
def conversation(conversation_id: int):
    return _render_console(db.get_or_404(Conversation, conversation_id))


@bp.route("/conversations/<int:conversation_id>/sidebar")
@login_required
def sidebar(conversation_id: int):
    selected = db.get_or_404(Conversation, conversation_id)
    # The user's shops are loaded already (they are the request's scope); admins see every shop.
    user_shops = accessible_shops() if current_user.is_admin else [s for s in current_user.shops if s.is_active]
    shops = {s.id: s for s in user_shops}
    sb = order_sidebar.load(selected, shops, page=int_arg("page", default=1, high=500))
    return render_template("desk/_sidebar.html", selected=selected, sb=sb, shop=shops.get(selected.shop_id))


def _render_console(selected: Conversation | None):
    shops = accessible_shops()
    shops_by_id = {s.id: s for s in shops}
    return render_template(
        "desk/console.html",
        selected=selected,
        selected_id=selected.id if selected else None,
        sb=order_sidebar.load(selected, shops_by_id) if selected else None,
        shop=shops_by_id.get(selected.shop_id) if selected else None,
        shops=shops,
        shops_by_id=shops_by_id,
        shops_json=[{"id": s.id, "name": s.name, "timezone": s.timezone} for s in shops],
    )
