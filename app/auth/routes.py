"""Sign-in and sign-out. Failed attempts are throttled per account and per address."""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user

from app import audit, events
from app.auth import bp
from app.auth.forms import LoginForm
from app.extensions import db, limiter
from app.i18n import LANG_SESSION_KEY, utc_now
from app.models import AgentConnection, User
from app.models.people import burn_password_check, normalize_username


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _username_key() -> str:
    return "login-user:" + (request.form.get("username") or "").strip().lower()


def _failed(response) -> bool:
    # Only failed attempts count towards the limit: a successful sign-in redirects.
    return response.status_code != 302


def _safe_next(target: str | None) -> str | None:
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], key_func=_username_key, deduct_when=_failed)
@limiter.limit("30 per minute", methods=["POST"], deduct_when=_failed)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("desk.console"))
    form = LoginForm()
    if form.validate_on_submit():
        username = normalize_username(form.username.data)
        user = db.session.scalar(sa.select(User).where(User.username == username))
        # Always verify a hash, so the answer takes as long for unknown or inactive accounts.
        password_ok = user.check_password(form.password.data) if user else burn_password_check(form.password.data)
        if user is None or not password_ok or not user.is_active:
            # The typed name is recorded only when it is an account: people type passwords there too.
            audit.record(
                "auth.login_failed",
                subject_kind="user",
                subject_id=str(user.id) if user else None,
                details=None if user else {"unknown_account": True},
            )
            db.session.commit()
            flash(_("Wrong username or password."), "error")
            return render_template("auth/login.html", form=form)
        # A fresh session at sign-in: nothing planted before it survives (session fixation).
        language = session.get(LANG_SESSION_KEY)
        session.clear()
        if language:
            session[LANG_SESSION_KEY] = language
        login_user(user, remember=form.remember.data)
        user.last_login_at = utc_now()
        audit.record("auth.login", user=user, subject_kind="user", subject_id=str(user.id))
        db.session.commit()
        return redirect(_safe_next(request.args.get("next")) or url_for("desk.console"))
    status = 400 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    audit.record("auth.logout", subject_kind="user", subject_id=str(current_user.id))
    # Sessions are signed cookies, not stored: a copy of this one (a shared computer, a leaked
    # header) would sign in again until it expired. A new session version voids every cookie of
    # this user, so signing out signs out everywhere (the security review, docs/security.md).
    user = current_user._get_current_object()
    user.session_version = (user.session_version or 1) + 1
    user_id = user.id
    sids = list(db.session.scalars(sa.select(AgentConnection.sid).where(AgentConnection.user_id == user_id)))
    db.session.commit()
    # The open consoles (this tab's and any other) end now, not at their next heartbeat.
    events.emit(events.user_signed_out, 0, user_id=user_id, sids=sids, reason="signed_out")
    logout_user()
    session.clear()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))
