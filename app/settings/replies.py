"""Settings for what agents say: quick replies (shop-wide and personal) and each shop's auto-replies.

Agents keep personal quick replies for the shops they serve; supervisors also keep the shop-wide
ones and set a shop's welcome, all-agents-busy and off-hours messages with its working hours.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectChoice, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length, Regexp

from app import audit
from app.auth.access import accessible_shops, supervisor_required
from app.desk import intake
from app.extensions import db
from app.models import AutoReplyConfig, QuickReply, Shop
from app.settings import bp
from app.settings.forms import MultiCheckboxField

SHORTCUT_RE = re.compile(r"^[\w\u4e00-\u9fff-]{1,32}$")
HHMM = Regexp(r"^([01]\d|2[0-3]):[0-5]\d$", message=_l("Use HH:MM, e.g. 09:00."))
WEEKDAYS = [
    SelectChoice("1", _l("Mon")),
    SelectChoice("2", _l("Tue")),
    SelectChoice("3", _l("Wed")),
    SelectChoice("4", _l("Thu")),
    SelectChoice("5", _l("Fri")),
    SelectChoice("6", _l("Sat")),
    SelectChoice("7", _l("Sun")),
]


class QuickReplyForm(FlaskForm):
    shop_id = SelectField(_l("Shop"), coerce=int)
    shared = SelectField(
        _l("Who sees it"),
        choices=[SelectChoice("0", _l("Only me")), SelectChoice("1", _l("Everyone serving the shop"))],
        default="0",
    )
    shortcut = StringField(
        _l("Shortcut"),
        validators=[
            DataRequired(),
            Regexp(SHORTCUT_RE, message=_l("Letters, digits, Chinese characters, - or _; up to 32.")),
        ],
    )
    title = StringField(_l("Title"), validators=[DataRequired(), Length(max=100)])
    content = TextAreaField(_l("Text"), validators=[DataRequired(), Length(max=1000)])
    submit = SubmitField(_l("Save"))


class AutoReplyForm(FlaskForm):
    welcome_enabled = BooleanField(_l("Welcome a buyer who starts a conversation"))
    welcome_text = TextAreaField(_l("Welcome message"), validators=[Length(max=1000)])
    busy_enabled = BooleanField(_l("Tell a queued buyer that every agent is busy"))
    busy_text = TextAreaField(_l("Busy message"), validators=[Length(max=1000)])
    off_hours_enabled = BooleanField(_l("Answer outside working hours"))
    off_hours_text = TextAreaField(_l("Off-hours message"), validators=[Length(max=1000)])
    work_start = StringField(_l("Working hours start"), validators=[DataRequired(), HHMM])
    work_end = StringField(_l("Working hours end"), validators=[DataRequired(), HHMM])
    work_days = MultiCheckboxField(_l("Working days"), choices=WEEKDAYS)
    submit = SubmitField(_l("Save"))

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        for flag, text in (
            (self.welcome_enabled, self.welcome_text),
            (self.busy_enabled, self.busy_text),
            (self.off_hours_enabled, self.off_hours_text),
        ):
            if flag.data and not (text.data or "").strip():
                text.errors = [*text.errors, _("Write the message, or switch it off.")]
                ok = False
        return ok


@bp.route("/quick-replies")
@login_required
def quick_replies():
    rows = db.session.scalars(
        sa.select(QuickReply)
        .where(sa.or_(QuickReply.owner_id.is_(None), QuickReply.owner_id == current_user.id))
        .order_by(QuickReply.shop_id, QuickReply.owner_id.is_(None), QuickReply.shortcut)
    ).all()
    shops = {s.id: s for s in accessible_shops()}
    return render_template("settings/quick_replies.html", rows=rows, shops=shops)


def _can_edit(row: QuickReply) -> bool:
    return row.owner_id == current_user.id or (row.owner_id is None and current_user.is_supervisor)


def _save_quick_reply(form: QuickReplyForm, row: QuickReply | None):
    shops = accessible_shops()
    form.shop_id.choices = [SelectChoice(s.id, s.name) for s in shops]
    if not current_user.is_supervisor:
        form.shared.choices = [form.shared.choices[0]]
    if form.validate_on_submit():
        shared = form.shared.data == "1" and current_user.is_supervisor
        owner_id = None if shared else current_user.id
        clash = db.session.scalar(
            sa.select(QuickReply.id).where(
                QuickReply.shop_id == form.shop_id.data,
                QuickReply.shortcut == form.shortcut.data.strip(),
                QuickReply.owner_id.is_(None) if owner_id is None else QuickReply.owner_id == owner_id,
                QuickReply.id != (row.id if row else 0),
            )
        )
        if clash:
            form.shortcut.errors = [*form.shortcut.errors, _("This shortcut is already used.")]
        else:
            if row is None:
                row = QuickReply(shop_id=form.shop_id.data)
                db.session.add(row)
            row.shop_id = form.shop_id.data
            row.owner_id = owner_id
            row.shortcut = form.shortcut.data.strip()
            row.title = form.title.data.strip()
            row.content = form.content.data.strip()
            db.session.flush()
            audit.record("quick_reply.saved", shop_id=row.shop_id, subject_kind="quick_reply", subject_id=str(row.id))
            db.session.commit()
            flash(_("Saved."), "success")
            return redirect(url_for("settings.quick_replies"))
    return render_template("settings/quick_reply_form.html", form=form, row=row), 400 if form.errors else 200


@bp.route("/quick-replies/new", methods=["GET", "POST"])
@login_required
def new_quick_reply():
    return _save_quick_reply(QuickReplyForm(), None)


@bp.route("/quick-replies/<int:reply_id>", methods=["GET", "POST"])
@login_required
def quick_reply(reply_id: int):
    row = db.get_or_404(QuickReply, reply_id)
    if row.owner_id not in (None, current_user.id):
        abort(404)  # someone else's personal reply
    if not _can_edit(row):
        abort(403)
    form = QuickReplyForm(obj=row, shared="1" if row.owner_id is None else "0")
    return _save_quick_reply(form, row)


@bp.route("/quick-replies/<int:reply_id>/delete", methods=["POST"])
@login_required
def delete_quick_reply(reply_id: int):
    row = db.get_or_404(QuickReply, reply_id)
    if row.owner_id not in (None, current_user.id):
        abort(404)
    if not _can_edit(row):
        abort(403)
    audit.record("quick_reply.deleted", shop_id=row.shop_id, subject_kind="quick_reply", subject_id=str(row.id))
    db.session.delete(row)
    db.session.commit()
    flash(_("Deleted."), "success")
    return redirect(url_for("settings.quick_replies"))


@bp.route("/shops/<int:shop_id>/auto-replies", methods=["GET", "POST"])
@supervisor_required
def auto_replies(shop_id: int):
    shop = db.get_or_404(Shop, shop_id)
    config = db.session.scalar(sa.select(AutoReplyConfig).where(AutoReplyConfig.shop_id == shop.id))
    form = AutoReplyForm(obj=config)
    if config is not None and not form.is_submitted():
        form.work_days.data = list(config.work_days)
    elif config is None and not form.is_submitted():
        form.work_start.data, form.work_end.data, form.work_days.data = "09:00", "22:00", list("1234567")
    if form.validate_on_submit():
        if config is None:
            config = AutoReplyConfig(shop_id=shop.id)
            db.session.add(config)
        for name in ("welcome", "busy", "off_hours"):
            setattr(config, f"{name}_enabled", getattr(form, f"{name}_enabled").data)
            setattr(config, f"{name}_text", (getattr(form, f"{name}_text").data or "").strip())
        config.work_start, config.work_end = form.work_start.data, form.work_end.data
        config.work_days = "".join(sorted(set(form.work_days.data or [])))
        db.session.flush()
        audit.record("auto_replies.saved", shop_id=shop.id, subject_kind="shop", subject_id=str(shop.id))
        db.session.commit()
        intake.forget_settings(shop.id)
        flash(_("Saved."), "success")
        return redirect(url_for("settings.auto_replies", shop_id=shop.id))
    return render_template(
        "settings/auto_replies.html", form=form, shop=shop, auto_budget=current_app.config["AUTO_REPLY_BUDGET"]
    ), 400 if form.errors else 200
