"""After-sales: every open case across the user's shops, the nearest platform deadline first, with
filters (shop, type, status, amount, age), who handled each, and bulk approval of a selection."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from sqlalchemy.orm import defer

from app.auth.access import accessible_shops
from app.db import utcnow
from app.extensions import db
from app.i18n import parse_yuan
from app.ingest import worker
from app.models import AfterSale, AfterSaleActionKind, AfterSaleStatus, AfterSaleType
from app.models.orders import OPEN_AFTER_SALE_STATUSES
from app.orders import actions, bp
from app.orders.actions import ActionError
from app.orders.sidebar import after_sale_views
from app.web import int_arg

PAGE_SIZE = 100
MAX_BULK = 200
# Age filter: how long ago the buyer asked (hours, lower and upper bound).
AGES = {
    "4h": (None, 4, _l("Under 4 hours")),
    "24h": (4, 24, _l("4 to 24 hours")),
    "72h": (24, 72, _l("1 to 3 days")),
    "old": (72, None, _l("Over 3 days")),
}
BATCH_RE = re.compile(r"^[0-9a-f]{32}$")
FILTER_KEYS = ("show", "shop", "type", "status", "min", "max", "age")


@dataclass
class Filters:
    show: str
    shop_id: int | None
    kind: str | None
    status: str | None
    min_fen: int | None
    max_fen: int | None
    age: str | None
    min_text: str
    max_text: str

    def args(self, **changes) -> dict:
        args = {
            "show": self.show,
            "shop": self.shop_id,
            "type": self.kind,
            "status": self.status,
            "min": self.min_text or None,
            "max": self.max_text or None,
            "age": self.age,
        }
        args.update(changes)
        return {k: v for k, v in args.items() if v not in (None, "")}


def _amount(name: str) -> tuple[int | None, str]:
    text = (request.args.get(name) or "").strip()[:20]
    if not text:
        return None, ""
    try:
        return parse_yuan(text), text
    except ValueError:
        return None, ""


def read_filters() -> Filters:
    show = request.args.get("show", "open")
    show = show if show in ("open", "all") else "open"
    kind = request.args.get("type")
    kind = kind if kind in {t.value for t in AfterSaleType} else None
    status = request.args.get("status")
    allowed = OPEN_AFTER_SALE_STATUSES if show == "open" else set(AfterSaleStatus)
    status = status if status in {s.value for s in allowed} else None
    age = request.args.get("age")
    min_fen, min_text = _amount("min")
    max_fen, max_text = _amount("max")
    return Filters(
        show, int_arg("shop"), kind, status, min_fen, max_fen, age if age in AGES else None, min_text, max_text
    )


def queue_query(f: Filters) -> sa.Select:
    stmt = sa.select(AfterSale).options(defer(AfterSale.raw))
    if f.show == "open":
        # The partial index ix_after_sales_open_deadline serves this order directly.
        stmt = stmt.where(AfterSale.status.in_(sorted(s.value for s in OPEN_AFTER_SALE_STATUSES)))
    if f.shop_id:
        stmt = stmt.where(AfterSale.shop_id == f.shop_id)
    if f.kind:
        stmt = stmt.where(AfterSale.type == f.kind)
    if f.status:
        stmt = stmt.where(AfterSale.status == f.status)
    if f.min_fen is not None:
        stmt = stmt.where(AfterSale.refund_amount_fen >= f.min_fen)
    if f.max_fen is not None:
        stmt = stmt.where(AfterSale.refund_amount_fen <= f.max_fen)
    if f.age:
        low, high, _label = AGES[f.age]
        now = utcnow()
        if low is not None:
            stmt = stmt.where(AfterSale.platform_created_at <= now - timedelta(hours=low))
        if high is not None:
            stmt = stmt.where(AfterSale.platform_created_at > now - timedelta(hours=high))
    return stmt


@bp.route("/")
@login_required
def queue():
    f = read_filters()
    stmt = queue_query(f)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery()))
    if f.show == "open":
        stmt = stmt.order_by(AfterSale.deadline_at.asc().nulls_last(), AfterSale.id)
    else:
        stmt = stmt.order_by(AfterSale.platform_updated_at.desc(), AfterSale.id.desc())
    page = int_arg("page", default=1, high=10_000)
    rows = db.session.scalars(stmt.limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)).all()
    shops = accessible_shops()
    return render_template(
        "orders/queue.html",
        after_sales=after_sale_views(rows[:PAGE_SIZE]),
        total=total,
        has_next=len(rows) > PAGE_SIZE,
        page=page,
        f=f,
        ages=AGES,
        types=list(AfterSaleType),
        statuses=sorted(OPEN_AFTER_SALE_STATUSES) if f.show == "open" else list(AfterSaleStatus),
        shops=shops,
        shops_by_id={s.id: s for s in shops},
        batch=uuid.uuid4().hex,
        approvable={AfterSaleActionKind.APPROVE_REFUND, AfterSaleActionKind.APPROVE_RETURN},
    )


def _back() -> str:
    args = {k: request.form.get(k) for k in FILTER_KEYS if request.form.get(k)}
    return url_for("orders.queue") + ("?" + urlencode(args) if args else "")


@bp.post("/bulk-approve")
@login_required
def bulk_approve():
    """Approve each selected after-sale as its type asks (refund, or return to its bound address).

    The form carries a batch id made when the page was rendered: submitting it again (a double
    click, a reload) finds the same actions instead of queueing new ones.
    """
    batch = request.form.get("batch", "")
    ids = [int(i) for i in request.form.getlist("ids") if i.isdigit()][:MAX_BULK]
    if not ids or not BATCH_RE.match(batch):
        flash(_("Select the after-sales to approve first."), "error")
        return redirect(_back())
    user = current_user._get_current_object()
    queued = repeated = 0
    refused: list[str] = []
    for pk in ids:
        row = db.session.get(AfterSale, pk)
        if row is None:
            refused.append(_("%(id)s: not found", id=pk))
            continue
        kind = (
            AfterSaleActionKind.APPROVE_REFUND
            if row.type == AfterSaleType.REFUND
            else AfterSaleActionKind.APPROVE_RETURN
        )
        label = row.after_sale_order_id
        try:
            _action, created = actions.request_action(user, pk, kind.value, f"{batch}-{pk}")
        except ActionError as exc:
            db.session.rollback()
            refused.append(f"{label}: {exc.message}")
            continue
        if created:
            queued += 1
        else:
            repeated += 1
    if queued:
        worker.wake_outbox(current_app._get_current_object())
        flash(_("%(n)d after-sales sent to the platform for approval.", n=queued), "success")
    if repeated:
        flash(_("%(n)d were already on their way.", n=repeated), "info")
    for line in refused[:10]:
        flash(line, "error")
    if len(refused) > 10:
        flash(_("…and %(n)d more could not be approved.", n=len(refused) - 10), "error")
    return redirect(_back())


@bp.app_context_processor
def _order_helpers() -> dict:
    """Words for after-sale actions in every template (the sidebar is rendered by the desk)."""
    return {
        "kind_label": lambda kind: str(actions.KIND_LABEL.get(kind, kind)),
        "error_text": actions.error_text,
        "open_statuses": OPEN_AFTER_SALE_STATUSES,
    }
