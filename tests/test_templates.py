"""Static checks over templates and assets: no inline script or style (CSP), no external CDNs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_inline_scripts_styles_or_handlers(path):
    html = path.read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>: the CSP blocks it"
    assert not re.search(r"\sstyle=", html), "inline style attribute: the CSP blocks it"
    assert not re.search(r"<style", html), "inline <style>: the CSP blocks it"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler: the CSP blocks it"
    assert "|safe" not in html, "no |safe: buyer text and nicknames must stay escaped"


@pytest.mark.parametrize("path", TEMPLATES + sorted((ROOT / "static").rglob("*.css")), ids=lambda p: p.name)
def test_assets_load_from_this_server_only(path):
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "external asset: intranets may have no internet"
    assert "@import url(http" not in text


def test_vendored_assets_are_recorded():
    versions = (ROOT / "static" / "vendor" / "VERSIONS").read_text()
    for asset in (ROOT / "static" / "vendor").iterdir():
        if asset.name != "VERSIONS":
            assert asset.name in versions, f"{asset.name} has no recorded version"
