"""Settings: my profile; shops (admins edit, supervisors view theirs); users (admins)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user
from wtforms import SelectChoice

from app import audit
from app.auth.access import accessible_shops, admin_required, supervisor_required
from app.db import utcnow
from app.extensions import db
from app.models import Role, Shop, User
from app.settings import bp, services
from app.settings.forms import LanguageForm, PasswordForm, ProfileForm, ShopForm, UserForm


def webhook_url(shop: Shop) -> str:
    return request.url_root.rstrip("/") + "/webhooks/" + shop.webhook_key


@bp.route("/", methods=["GET", "POST"])
@login_required
def profile():
    form = ProfileForm(obj=current_user)
    password_form = PasswordForm(prefix="pw")
    if form.validate_on_submit():
        current_user.display_name = form.display_name.data.strip()
        current_user.language = form.language.data
        db.session.commit()
        flash(_("Saved."), "success")
        return redirect(url_for("settings.profile"))
    return render_template("settings/profile.html", form=form, password_form=password_form)


@bp.route("/password", methods=["POST"])
@login_required
def change_password():
    form = ProfileForm(obj=current_user)
    password_form = PasswordForm(prefix="pw")
    if password_form.validate_on_submit():
        if not current_user.check_password(password_form.current_password.data):
            password_form.current_password.errors.append(_("Wrong password."))
        else:
            services.set_password(current_user, password_form.new_password.data)
            audit.record("user.password_changed", subject_kind="user", subject_id=str(current_user.id))
            db.session.commit()
            # The session version changed: sign this session in again with the new one
            # (the real object: storing the current_user proxy itself would recurse).
            login_user(current_user._get_current_object())
            flash(_("Password changed. Other sessions were signed out."), "success")
            return redirect(url_for("settings.profile"))
    return render_template("settings/profile.html", form=form, password_form=password_form), 400


@bp.route("/language", methods=["POST"])
@login_required
def set_language():
    form = LanguageForm()
    if form.validate_on_submit():
        current_user.language = form.language.data
        db.session.commit()
    target = request.referrer if request.referrer and request.referrer.startswith(request.host_url) else None
    return redirect(target or url_for("desk.console"))


@bp.route("/shops")
@supervisor_required
def shops():
    return render_template("settings/shops.html", shops=accessible_shops(), webhook_url=webhook_url)


def _shop_input(form: ShopForm) -> services.ShopInput:
    return services.ShopInput(
        name=form.name.data,
        appid=form.appid.data,
        app_secret=form.app_secret.data,
        push_token=form.push_token.data,
        encoding_aes_key=form.encoding_aes_key.data,
        api_base_url=form.api_base_url.data,
        timezone=form.timezone.data,
        is_active=form.is_active.data,
    )


def _field_error(form, exc: services.ValidationError) -> None:
    field = getattr(form, exc.field, None)
    if field is not None:
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")


@bp.route("/shops/new", methods=["GET", "POST"])
@admin_required
def new_shop():
    form = ShopForm()
    if form.validate_on_submit():
        try:
            shop = services.create_shop(_shop_input(form))
        except services.ValidationError as exc:
            db.session.rollback()
            _field_error(form, exc)
        else:
            audit.record("shop.created", shop_id=shop.id, subject_kind="shop", subject_id=str(shop.id))
            db.session.commit()
            flash(_("Shop added. Paste its push URL into the platform."), "success")
            return redirect(url_for("settings.shop", shop_id=shop.id))
    return render_template("settings/shop_form.html", form=form, shop=None), 400 if form.errors else 200


@bp.route("/shops/<int:shop_id>", methods=["GET", "POST"])
@supervisor_required
def shop(shop_id: int):
    shop = db.get_or_404(Shop, shop_id)
    form = ShopForm(obj=shop)
    if request.method == "POST":
        if not current_user.is_admin:
            abort(403)
        if form.validate_on_submit():
            try:
                services.update_shop(shop, _shop_input(form))
            except services.ValidationError as exc:
                db.session.rollback()
                _field_error(form, exc)
            else:
                changed = [f for f in ("app_secret", "push_token", "encoding_aes_key") if getattr(form, f).data]
                audit.record(
                    "shop.updated",
                    shop_id=shop.id,
                    subject_kind="shop",
                    subject_id=str(shop.id),
                    details={"credentials_changed": changed},
                )
                db.session.commit()
                flash(_("Saved."), "success")
                return redirect(url_for("settings.shop", shop_id=shop.id))
    # Secrets are never sent back to the browser, not even masked in the input.
    for field in (form.app_secret, form.push_token, form.encoding_aes_key):
        field.data = ""
    status = 400 if form.errors else 200
    return (
        render_template(
            "settings/shop_form.html",
            form=form,
            shop=shop,
            webhook_url=webhook_url,
            connection=_connection_status(shop),
        ),
        status,
    )


def _connection_status(shop: Shop) -> dict:
    """What an admin needs to see of a shop's platform connection, all from the database."""
    from app.ingest.pollers import health
    from app.models import ApiBlock, InboxEvent, InboxStatus

    counts = dict(
        db.session.execute(
            sa.select(InboxEvent.status, sa.func.count())
            .where(InboxEvent.shop_id == shop.id)
            .group_by(InboxEvent.status)
        ).all()
    )
    failed = db.session.scalars(
        sa.select(InboxEvent)
        .where(InboxEvent.shop_id == shop.id, InboxEvent.status == InboxStatus.FAILED)
        .order_by(InboxEvent.id.desc())
        .limit(10)
    ).all()
    blocks = db.session.scalars(
        sa.select(ApiBlock).where(ApiBlock.shop_id == shop.id, ApiBlock.blocked_until > sa.func.now())
    ).all()
    return {
        "pollers": health(shop.id),
        "inbox": {str(k): v for k, v in counts.items()},
        "failed": failed,
        "blocks": blocks,
    }


@bp.post("/shops/<int:shop_id>/test")
@admin_required
def test_connection(shop_id: int):
    """Fetch a token with the stored secret (never one from memory or the database) and list the
    return addresses: proves the credentials and the API base work."""
    from app.platform import client_for
    from app.platform.client import PlatformError

    shop = db.get_or_404(Shop, shop_id)
    try:
        client = client_for(shop)
        client.check_credentials()
        addresses = client.list_addresses()
    except PlatformError as exc:
        audit.record(
            "shop.connection_test",
            shop_id=shop.id,
            subject_kind="shop",
            subject_id=str(shop.id),
            details={"ok": False, "errcode": exc.errcode},
        )
        db.session.commit()
        flash(_("Connection failed: %(error)s", error=str(exc)), "error")
    else:
        if shop.connected_at is None:
            shop.connected_at = utcnow()
        audit.record(
            "shop.connection_test", shop_id=shop.id, subject_kind="shop", subject_id=str(shop.id), details={"ok": True}
        )
        db.session.commit()
        flash(_("Connected. The platform lists %(n)d address(es) for this shop.", n=len(addresses)), "success")
    return redirect(url_for("settings.shop", shop_id=shop.id))


@bp.post("/shops/<int:shop_id>/inbox/retry")
@admin_required
def retry_inbox(shop_id: int):
    """Put the shop's failed pushes back in the queue (after the cause was fixed)."""
    from app.models import InboxEvent, InboxStatus

    shop = db.get_or_404(Shop, shop_id)
    result = db.session.execute(
        sa.update(InboxEvent)
        .where(InboxEvent.shop_id == shop.id, InboxEvent.status == InboxStatus.FAILED)
        .values(status=InboxStatus.PENDING, attempts=0, next_attempt_at=utcnow())
    )
    audit.record(
        "shop.inbox_retry",
        shop_id=shop.id,
        subject_kind="shop",
        subject_id=str(shop.id),
        details={"events": result.rowcount},
    )
    db.session.commit()
    flash(_("%(n)d failed event(s) queued again.", n=result.rowcount), "success")
    return redirect(url_for("settings.shop", shop_id=shop.id))


@bp.route("/users")
@admin_required
def users():
    rows = db.session.scalars(sa.select(User).order_by(User.role, User.username)).all()
    return render_template("settings/users.html", users=rows)


def _all_shops() -> list[Shop]:
    # Admin pages: every shop, deactivated ones too, so saving a user never drops an assignment.
    return db.session.scalars(sa.select(Shop).order_by(Shop.name, Shop.id)).all()


def _shop_choices(form: UserForm) -> None:
    form.shops.choices = [
        SelectChoice(s.id, s.name if s.is_active else _("%(name)s (inactive)", name=s.name)) for s in _all_shops()
    ]


def _selected_shops(form: UserForm) -> list[Shop]:
    ids = set(form.shops.data or [])
    return [s for s in _all_shops() if s.id in ids]


@bp.route("/users/new", methods=["GET", "POST"])
@admin_required
def new_user():
    form = UserForm()
    _shop_choices(form)
    if form.validate_on_submit():
        if not form.password.data:
            form.password.errors = [_("A new user needs a password.")]
        else:
            try:
                user = services.create_user(
                    username=form.username.data,
                    display_name=form.display_name.data,
                    password=form.password.data,
                    role=Role(form.role.data),
                    shops=_selected_shops(form),
                    capacity=form.capacity.data,
                    language=form.language.data,
                )
            except services.ValidationError as exc:
                db.session.rollback()
                _field_error(form, exc)
            else:
                audit.record("user.created", subject_kind="user", subject_id=str(user.id))
                db.session.commit()
                flash(_("User created."), "success")
                return redirect(url_for("settings.users"))
    return render_template("settings/user_form.html", form=form, user=None), 400 if form.errors else 200


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@admin_required
def user(user_id: int):
    user = db.get_or_404(User, user_id)
    form = UserForm(obj=user)
    _shop_choices(form)
    if request.method == "GET":
        form.shops.data = [s.id for s in user.shops]
        form.role.data = user.role.value
    if form.validate_on_submit():
        try:
            if user.id == current_user.id and (form.role.data != Role.ADMIN.value or not form.is_active.data):
                raise services.ValidationError("role", _("You cannot demote or deactivate yourself."))
            user.username = services.check_username(form.username.data, user_id=user.id)
            user.display_name = form.display_name.data.strip()
            user.role = Role(form.role.data)
            user.language = form.language.data
            services.set_capacity(user, form.capacity.data)
            user.shops = _selected_shops(form)
            if user.is_active and not form.is_active.data:
                user.session_version += 1  # deactivation signs the user out everywhere
            user.is_active = form.is_active.data
            if form.password.data:
                services.set_password(user, form.password.data)
        except services.ValidationError as exc:
            db.session.rollback()
            _field_error(form, exc)
        else:
            audit.record(
                "user.updated",
                subject_kind="user",
                subject_id=str(user.id),
                details={"role": user.role.value, "shops": [s.id for s in user.shops]},
            )
            db.session.commit()
            flash(_("Saved."), "success")
            return redirect(url_for("settings.users"))
    return render_template("settings/user_form.html", form=form, user=user), 400 if form.errors else 200
