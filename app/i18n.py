"""Language and time: Simplified Chinese by default, English on request; shop-local times.

The language comes from the signed-in user's setting, else from the choice made on the sign-in page
(kept in the session), else Simplified Chinese. Times are stored in UTC and shown in the shop's time
zone (default Asia/Shanghai), never the server's.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Flask, current_app, has_request_context, request, session
from flask_babel import get_locale
from flask_login import current_user

from app.extensions import babel

LANG_SESSION_KEY = "lang"


def select_locale() -> str:
    languages = current_app.config["LANGUAGES"]
    if not has_request_context():
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    if current_user and current_user.is_authenticated and current_user.language in languages:
        return current_user.language
    chosen = session.get(LANG_SESSION_KEY)
    if chosen in languages:
        return chosen
    return current_app.config["BABEL_DEFAULT_LOCALE"]


def init_app(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_locale)

    @app.before_request
    def _remember_language_choice() -> None:
        lang = request.args.get("lang")
        if lang in app.config["LANGUAGES"]:
            session[LANG_SESSION_KEY] = lang

    @app.context_processor
    def _language_context() -> dict:
        locale = get_locale()
        return {
            "current_language": str(locale) if locale else app.config["BABEL_DEFAULT_LOCALE"],
            "html_lang": "zh-CN" if locale and locale.language == "zh" else "en",
            "languages": app.config["LANGUAGES"],
        }


def to_shop_time(value: datetime | None, tz_name: str | None = None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime: times must be aware UTC")
    tz = ZoneInfo(tz_name or current_app.config["DEFAULT_SHOP_TIMEZONE"])
    return value.astimezone(tz)


def format_shop_time(value: datetime | None, tz_name: str | None = None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    local = to_shop_time(value, tz_name)
    return local.strftime(fmt) if local else ""


def format_yuan(fen: int | None) -> str:
    """Integer fen to a yuan string with exactly two decimals, no float on the way: 12345 -> ¥123.45."""
    if fen is None:
        return ""
    if not isinstance(fen, int) or isinstance(fen, bool):
        raise TypeError(f"money must be integer fen, got {type(fen).__name__}")
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


_AMOUNT = re.compile(r"^(-)?[¥￥]?(\d{1,3}(?:,\d{3})+|\d+)?(?:\.(\d{1,2}))?$", re.ASCII)


def parse_yuan(text: str) -> int:
    """A yuan amount typed by a person ("12", "12.5", "1,234.50", "-3") to integer fen, exactly.

    Thousands separators must group by three (so a decimal comma like "12,5" is refused, not read
    as 125 yuan); digits are ASCII only.
    """
    match = _AMOUNT.match(text.strip())
    if not match or not (match.group(2) or match.group(3)):
        raise ValueError(f"not an amount: {text!r}")
    sign, whole, frac = match.groups()
    fen = int((whole or "0").replace(",", "")) * 100 + int((frac or "").ljust(2, "0"))
    return -fen if sign else fen


def utc_now() -> datetime:
    return datetime.now(UTC)
