"""`flask rules default` and the demo seed install the default rule once, switched on (dry run unless --live)."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import Rule, RuleVersion
from app.rules import engine
from tests.factories import make_shop
from tests.test_cli import _run


def _rules(app) -> list[tuple]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(Rule.shop_id, Rule.name, Rule.enabled, Rule.dry_run, Rule.version, Rule.conditions)
        ).all()
        versions = db.session.scalar(sa.select(sa.func.count()).select_from(RuleVersion))
        db.session.remove()
    return [tuple(r) for r in rows], versions


def test_demo_seed_installs_the_default_rule_in_dry_run_once(app):
    for _ in range(2):
        assert _run(app, "demo", "seed", "--password", "demo-password").exit_code == 0
    rows, versions = _rules(app)
    template = engine.default_template()
    assert [(name, enabled, dry, version) for _, name, enabled, dry, version, _ in rows] == [
        (template["name"], True, True, 1)
    ]
    assert rows[0][5] == template["conditions"] and versions == 1


def test_rules_default_live(app):
    with app.app_context():
        shop = make_shop("直播店")
        db.session.commit()
        appid = shop.appid
        db.session.remove()
    result = _run(app, "rules", "default", "--shop", appid, "--live")
    assert result.exit_code == 0 and "live" in result.output
    rows, _ = _rules(app)
    assert [(enabled, dry) for _, _, enabled, dry, _, _ in rows] == [(True, False)]
    assert _run(app, "rules", "default", "--shop", "nope").exit_code != 0
