"""Languages, money in fen and shop-local time."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from babel.messages.pofile import read_po

from app.extensions import db
from app.i18n import format_shop_time, format_yuan, parse_yuan, to_shop_time
from app.models import User

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "app" / "translations" / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"


def test_chinese_catalog_is_complete_and_current(tmp_path):
    """Every string in the code and templates has a Chinese translation (none fuzzy, none stale)."""
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "-k",
            "lazy_gettext",
            "--no-location",
            "-o",
            str(pot),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with pot.open("rb") as fh:
        source_ids = {m.id for m in read_po(fh) if m.id}
    with CATALOG.open("rb") as fh:
        catalog = read_po(fh)
    translated = {m.id for m in catalog if m.id and m.string and "fuzzy" not in m.flags}
    missing = sorted(source_ids - translated)
    assert not missing, f"untranslated strings (run `make i18n-update` and translate): {missing}"


def test_compiled_catalog_matches_the_source(tmp_path):
    """The app reads the .mo that make compiles: it must carry every translation of the .po."""
    from babel.messages.mofile import read_mo

    mo_path = CATALOG.with_suffix(".mo")
    assert mo_path.exists(), "catalogue not compiled: run `make translations`"
    with CATALOG.open("rb") as fh:
        po = {m.id: m.string for m in read_po(fh) if m.id}
    with mo_path.open("rb") as fh:
        mo = {m.id: m.string for m in read_mo(fh) if m.id}
    assert mo == po, "stale .mo: run `make translations`"


def test_sign_in_page_switches_language(client):
    assert "登录" in client.get("/login").get_data(as_text=True)
    html = client.get("/login?lang=en").get_data(as_text=True)
    assert '<html lang="en">' in html and "Sign in" in html and "登录" not in html
    assert "Sign in" in client.get("/login").get_data(as_text=True), "the choice sticks for the session"
    assert "登录" in client.get("/login?lang=zh_CN").get_data(as_text=True)
    assert "登录" in client.get("/login?lang=xx").get_data(as_text=True), "unknown languages are ignored"


def test_signed_in_user_language_is_theirs(app, world, login):
    client = login("agent_a")
    assert "工作台" in client.get("/").get_data(as_text=True)
    assert client.post("/settings/language", data={"language": "en"}).status_code == 302
    html = client.get("/").get_data(as_text=True)
    assert "Console" in html and "工作台" not in html
    with app.app_context():
        assert db.session.scalar(sa.select(User.language).where(User.username == "agent_a")) == "en"
    # Another user keeps Chinese.
    assert "工作台" in login("agent_b").get("/").get_data(as_text=True)


def test_status_words_follow_the_language(world, login):
    client = login("agent_a")
    html = client.get("/after-sales/").get_data(as_text=True)
    assert "仅退款" in html and "待商家处理" in html and "¥129.00" in html
    client.post("/settings/language", data={"language": "en"})
    html = client.get("/after-sales/").get_data(as_text=True)
    assert "Refund only" in html and "Waiting for the merchant" in html


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (0, "¥0.00"),
        (1, "¥0.01"),
        (12900, "¥129.00"),
        (123456789, "¥1,234,567.89"),
        (-250, "-¥2.50"),
        (10**15 + 1, "¥10,000,000,000,000.01"),
    ],
)
def test_yuan_from_fen_is_exact(fen, text):
    assert format_yuan(fen) == text


def test_money_refuses_floats():
    with pytest.raises(TypeError):
        format_yuan(12.5)


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("12", 1200),
        ("12.5", 1250),
        ("12.50", 1250),
        ("0.01", 1),
        ("¥1,234.56", 123456),
        ("-3", -300),
        (".5", 50),
        ("-¥5", -500),
        ("1,234,567", 123456700),
        (" 7 ", 700),
    ],
)
def test_yuan_typed_by_a_person_to_fen(text, fen):
    assert parse_yuan(text) == fen


@pytest.mark.parametrize(
    "text", ["", "abc", "1.234", "1.2.3", "--1", "1e3", "12,5", "1,2", "12,34.5", "١٢", "¥-5", ".", "¥", "-"]
)
def test_bad_amounts_are_refused(text):
    with pytest.raises(ValueError):
        parse_yuan(text)


def test_times_show_in_the_shop_time_zone(app):
    late_utc = datetime(2026, 11, 21, 16, 30, tzinfo=UTC)
    with app.app_context():
        assert format_shop_time(late_utc) == "2026-11-22 00:30", "default Asia/Shanghai: already tomorrow"
        assert format_shop_time(late_utc, "UTC") == "2026-11-21 16:30"
        assert to_shop_time(late_utc, "Asia/Tokyo").hour == 1
        with pytest.raises(ValueError):
            to_shop_time(datetime(2026, 1, 1, 12, 0))
