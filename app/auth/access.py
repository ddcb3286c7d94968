"""Who the request is and which shops it may touch.

``init_app`` wires Flask-Login and sets the shop scope of the database session once per request
(app/tenancy.py): admins are unrestricted, everyone else sees only the shops they serve, anonymous
requests see none. Role checks for pages are the decorators below.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TypeVar

import sqlalchemy as sa
from flask import Flask, abort
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from app import tenancy
from app.extensions import db, login_manager
from app.models import Role, User

F = TypeVar("F", bound=Callable)


def init_app(app: Flask) -> None:
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please sign in to continue.")
    login_manager.login_message_category = "info"
    # "basic": a changed IP (agents behind NAT, mobile hotspots) does not end the session;
    # session fixation is prevented by clearing the session at sign-in instead.
    login_manager.session_protection = "basic"
    login_manager.unauthorized_handler(_unauthorized)
    app.before_request(_scope_request)


def _unauthorized():
    """Pages redirect to sign-in; the JSON API answers 401 (the console reloads to sign in)."""
    from flask import flash, redirect, request
    from flask_babel import gettext
    from flask_login import login_url

    from app.web import error_response, wants_json

    if wants_json():
        return error_response(401, "unauthorized", gettext("Please sign in to continue."))
    flash(str(login_manager.login_message), login_manager.login_message_category)
    return redirect(login_url(login_manager.login_view, next_url=request.url))


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    try:
        raw_id, raw_version = user_id.split(":", 1)
        uid, version = int(raw_id), int(raw_version)
    except ValueError:
        return None
    user = db.session.get(User, uid)
    if user is None or not user.is_active or user.session_version != version:
        return None
    return user


def shop_ids_for(user: User) -> frozenset[int] | None:
    """The shops a user may serve: None means every shop (admins)."""
    if user.role == Role.ADMIN:
        return None
    return frozenset(shop.id for shop in user.shops if shop.is_active)


def _scope_request() -> None:
    session = db.session()
    if current_user.is_authenticated:
        tenancy.set_scope(session, shop_ids_for(current_user))
    else:
        tenancy.set_scope(session, frozenset())


def accessible_shops():
    """The shops the current request may see (already scoped), ordered by name."""
    from app.models import Shop

    return db.session.scalars(sa.select(Shop).where(Shop.is_active).order_by(Shop.name, Shop.id)).all()


def role_required(*roles: Role) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


supervisor_required = role_required(Role.SUPERVISOR, Role.ADMIN)
admin_required = role_required(Role.ADMIN)
