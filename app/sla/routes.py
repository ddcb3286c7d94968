"""Service level pages: the live board, history (with CSV), per-shop SLA settings; the JSON the pages
and the console read (``/api/sla/...``, docs/api.md)."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app import audit
from app.auth.access import accessible_shops, supervisor_required
from app.db import utcnow
from app.extensions import db
from app.models import Conversation, ConversationStatus, Shop, SlaSettings, User, user_shops
from app.sla import board, bp, history, policy
from app.sla.forms import SlaSettingsForm

api_bp = Blueprint("sla_api", __name__, url_prefix="/api/sla")
MAX_DAYS = 366


def waiting_condition():
    """A buyer is waiting when their last message is newer than the last human reply."""
    return sa.and_(
        Conversation.status == ConversationStatus.OPEN,
        Conversation.last_buyer_message_at.is_not(None),
        sa.or_(
            Conversation.last_human_reply_at.is_(None),
            Conversation.last_human_reply_at < Conversation.last_buyer_message_at,
        ),
    )


@bp.route("/")
@supervisor_required
def index():
    open_ = Conversation.status == ConversationStatus.OPEN
    rows = db.session.execute(
        sa.select(
            Conversation.shop_id,
            sa.func.count().filter(open_).label("open"),
            sa.func.count().filter(open_, Conversation.assignee_id.is_(None)).label("unassigned"),
            sa.func.count().filter(waiting_condition()).label("waiting"),
            sa.func.min(Conversation.last_buyer_message_at).filter(waiting_condition()).label("oldest_wait"),
        ).group_by(Conversation.shop_id)
    ).all()
    stats = {row.shop_id: row for row in rows}
    return render_template("sla/index.html", shops=accessible_shops(), stats=stats, now=utcnow())


@api_bp.route("/board")
@supervisor_required
def board_json():
    return jsonify(board.board(list(accessible_shops()), utcnow()))


@api_bp.route("/me")
@login_required
def me_json():
    return jsonify(board.my_today(current_user, list(accessible_shops()), utcnow()))


def _filters() -> history.Filters:
    """The history's filters from the query string; bad input is a 400 with the reason, not a guess."""
    shops = list(accessible_shops())
    today = utcnow().astimezone(policy.policy_for(shops[0].id).tz).date() if shops else utcnow().date()
    try:
        end = date.fromisoformat(request.args["end"]) if request.args.get("end") else today
        start = date.fromisoformat(request.args["start"]) if request.args.get("start") else end - timedelta(days=29)
    except ValueError:
        abort(400, description=_("Dates must look like 2026-12-01."))
    if start > end:
        abort(400, description=_("The start date must not be after the end date."))
    if (end - start).days >= MAX_DAYS:
        abort(400, description=_("Choose at most %(n)d days.", n=MAX_DAYS))
    shop_id = request.args.get("shop", type=int)
    if shop_id:
        shops = [shop for shop in shops if shop.id == shop_id]
        if not shops:
            abort(404)
    agent_id = request.args.get("agent", type=int)
    return history.Filters(start, end, shops, agent_id)


def _agents(shops: list[Shop]) -> list[User]:
    if not shops:
        return []
    return db.session.scalars(
        sa.select(User)
        .join(user_shops, user_shops.c.user_id == User.id)
        .where(user_shops.c.shop_id.in_([shop.id for shop in shops]))
        .distinct()
        .order_by(User.display_name)
    ).all()


@bp.route("/history")
@supervisor_required
def history_page():
    filters = _filters()
    all_shops = list(accessible_shops())
    return render_template(
        "sla/history.html",
        filters=filters,
        shops=all_shops,
        agents=_agents(all_shops),
        report=history.report(filters),
    )


@api_bp.route("/history")
@supervisor_required
def history_json():
    return jsonify(history.report(_filters()))


CSV_COLUMNS = ("day", "shop", "agent", "turns", "met", "breached", "unanswered", "rate", "messages", "messages_met",
               "answered", "reply_seconds", "conversations")  # fmt: skip


@bp.route("/history.csv")
@supervisor_required
def history_csv():
    filters = _filters()
    report = history.report(filters, include_rows=True)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow(row)
    name = f"sla-{filters.start.isoformat()}-{filters.end.isoformat()}.csv"
    return Response(
        "\ufeff" + out.getvalue(),  # a BOM: spreadsheet programs then read the Chinese names as UTF-8
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.route("/settings/<int:shop_id>", methods=["GET", "POST"])
@supervisor_required
def settings(shop_id: int):
    shop = db.get_or_404(Shop, shop_id)
    row = db.session.scalar(sa.select(SlaSettings).where(SlaSettings.shop_id == shop.id))
    form = SlaSettingsForm(obj=row)
    if row is None and not form.is_submitted():
        defaults = policy.Policy(shop.id)
        form.threshold_seconds.data, form.warning_seconds.data = defaults.threshold_seconds, defaults.warning_seconds
        form.unit.data, form.window_start.data, form.window_end.data = "turn", *policy.DEFAULT_WINDOW
    if form.validate_on_submit():
        if row is None:
            row = SlaSettings(shop_id=shop.id)
            db.session.add(row)
        form.populate_obj(row)
        db.session.flush()
        audit.record("sla.settings_saved", shop_id=shop.id, subject_kind="shop", subject_id=str(shop.id))
        db.session.commit()
        policy.forget(shop.id)
        flash(_("Saved."), "success")
        return redirect(url_for("sla.settings", shop_id=shop.id))
    return render_template("sla/settings.html", form=form, shop=shop), 400 if form.errors else 200
