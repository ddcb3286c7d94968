"""Shop and user administration, shared by the Settings pages and the CLI.

Functions validate, change the session and leave the commit to the caller's unit of work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from app.extensions import db
from app.models import Role, Shop, User
from app.models.people import MIN_PASSWORD_LENGTH, normalize_username


class ValidationError(ValueError):
    """Input a person typed is not acceptable; ``message`` says why, in the user's language."""

    def __init__(self, field: str, message):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class ShopInput:
    name: str
    appid: str
    app_secret: str | None
    push_token: str | None
    encoding_aes_key: str | None
    api_base_url: str
    timezone: str = "Asia/Shanghai"
    is_active: bool = True


FIELD_ERRORS = {
    "appid": _l("AppID is wx followed by 14-30 letters or digits."),
    "api_base_url": _l("The API base URL starts with http:// or https://."),
    "timezone": _l("Unknown time zone."),
    "encoding_aes_key": _l("EncodingAESKey is 43 characters of A-Z, a-z, 0-9, + and /."),
}


def _set(shop: Shop, field: str, value) -> None:
    """Assign through the model's validators, turning their ValueError into a field error."""
    try:
        setattr(shop, field, value)
    except ValueError:
        raise ValidationError(field, FIELD_ERRORS.get(field, _l("Invalid value."))) from None


def _apply_shop(shop: Shop, data: ShopInput) -> None:
    if not data.name.strip():
        raise ValidationError("name", _l("A shop needs a name."))
    _set(shop, "name", data.name.strip())
    _set(shop, "appid", data.appid)
    _set(shop, "api_base_url", data.api_base_url)
    _set(shop, "timezone", data.timezone)
    _set(shop, "is_active", data.is_active)
    # Blank secret fields on edit mean "keep the stored value".
    for field in ("app_secret", "push_token", "encoding_aes_key"):
        value = getattr(data, field)
        if value:
            _set(shop, field, value.strip())


def create_shop(data: ShopInput) -> Shop:
    missing = [f for f in ("app_secret", "push_token", "encoding_aes_key") if not getattr(data, f)]
    if missing:
        raise ValidationError(missing[0], _l("Required for a new shop."))
    if db.session.scalar(sa.select(Shop.id).where(Shop.appid == data.appid.strip())) is not None:
        raise ValidationError("appid", _l("A shop with this AppID exists already."))
    shop = Shop()
    _apply_shop(shop, data)
    db.session.add(shop)
    db.session.flush()
    return shop


def update_shop(shop: Shop, data: ShopInput) -> Shop:
    from app.ingest import webhooks

    webhooks.forget(shop.webhook_key)  # new credentials take effect for pushes at once
    clash = db.session.scalar(sa.select(Shop.id).where(Shop.appid == data.appid.strip(), Shop.id != shop.id))
    if clash is not None:
        raise ValidationError("appid", _l("A shop with this AppID exists already."))
    _apply_shop(shop, data)
    db.session.flush()
    return shop


def check_username(username: str, user_id: int | None = None) -> str:
    """A valid, free username in its stored (lower-case) form."""
    username = normalize_username(username)
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise ValidationError("username", _l("1-64 characters without spaces."))
    clash = sa.select(User.id).where(User.username == username)
    if user_id is not None:
        clash = clash.where(User.id != user_id)
    if db.session.scalar(clash) is not None:
        raise ValidationError("username", _l("This username is taken."))
    return username


def create_user(
    *,
    username: str,
    display_name: str,
    password: str,
    role: Role = Role.AGENT,
    shops: Iterable[Shop] = (),
    capacity: int = 10,
    language: str = "zh_CN",
) -> User:
    username = check_username(username)
    user = User(username=username, display_name=display_name.strip() or username, role=role, language=language)
    set_capacity(user, capacity)
    set_password(user, password)
    user.shops = list(shops)
    db.session.add(user)
    db.session.flush()
    return user


def set_capacity(user: User, capacity: int) -> None:
    if not 0 <= capacity <= 200:
        raise ValidationError("capacity", _l("Between 0 and 200 open conversations."))
    user.capacity = capacity


def set_password(user: User, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError("password", _l("At least %(n)d characters.", n=MIN_PASSWORD_LENGTH))
    if user.password_hash:
        # Every other session of this user ends with the old password.
        user.session_version = (user.session_version or 1) + 1
    user.set_password(password)
