"""The command line: users, shops, demo seed."""

from __future__ import annotations

import sqlalchemy as sa

from app import secretbox
from app.extensions import db
from app.models import Role, Shop, User
from tests.factories import AES_KEY


def _add_beijing_shop(app, secret: str):
    return _run(
        app,
        "shops",
        "add",
        "--name",
        "北京店",
        "--appid",
        "wx00000000000000ab",
        "--secret",
        secret,
        "--token",
        "tok",
        "--aes-key",
        AES_KEY,
    )


def _run(app, *args, input=None):
    result = app.test_cli_runner().invoke(args=list(args), input=input)
    return result


def test_shops_add_and_list_mask_the_secret(app):
    result = _add_beijing_shop(app, secret="super-secret-value-9876")
    assert result.exit_code == 0, result.output
    assert "/webhooks/" in result.output
    listing = _run(app, "shops", "list").output
    assert "北京店" in listing and "super-secret-value-9876" not in listing and "9876" in listing
    with app.app_context():
        assert db.session.scalar(sa.select(Shop.api_base_url)) == "https://api.weixin.qq.com"


def test_shops_add_rejects_bad_input(app):
    result = _run(
        app, "shops", "add", "--name", "x", "--appid", "bad", "--secret", "s", "--token", "t", "--aes-key", AES_KEY
    )
    assert result.exit_code != 0 and "appid" in result.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Shop)) == 0


def test_users_create_with_shops(app):
    _add_beijing_shop(app, secret="s" * 20)
    result = _run(
        app,
        "users",
        "create",
        "lily",
        "--role",
        "supervisor",
        "--shop",
        "wx00000000000000ab",
        "--password",
        "lily-password",
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.username == "lily"))
        assert user.role == Role.SUPERVISOR and [s.name for s in user.shops] == ["北京店"]
        assert user.check_password("lily-password")
    assert _run(app, "users", "create", "x", "--shop", "999", "--password", "long-password").exit_code != 0
    assert "password" in _run(app, "users", "create", "y", "--password", "short").output
    assert "lily" in _run(app, "users", "list").output


def test_demo_seed_is_idempotent_and_points_at_the_simulator(app, client):
    first = _run(app, "demo", "seed", "--password", "demo-password")
    assert first.exit_code == 0, first.output
    second = _run(app, "demo", "seed", "--password", "demo-password")
    assert second.exit_code == 0 and "created" not in second.output
    with app.app_context():
        shops = db.session.scalars(sa.select(Shop)).all()
        assert len(shops) == 1 and shops[0].is_demo
        assert shops[0].api_base_url == app.config["SIMULATOR_URL"]
        roles = dict(db.session.execute(sa.select(User.username, User.role)).all())
        assert roles == {"agent": Role.AGENT, "supervisor": Role.SUPERVISOR, "admin": Role.ADMIN}
    for username in ("agent", "supervisor", "admin"):
        client.login(username, "demo-password")
        client.post("/logout")


def test_demo_seed_is_refused_in_production(database_url):
    from app import create_app
    from config import ProductionConfig

    prod = create_app(
        type("Prod", (ProductionConfig,), {"SECRET_KEY": "p" * 40, "SQLALCHEMY_DATABASE_URI": database_url})
    )
    result = prod.test_cli_runner().invoke(args=["demo", "seed"])
    assert result.exit_code != 0 and "production" in result.output


def test_rekey_moves_credentials_to_the_newest_key(app):
    from cryptography.fernet import Fernet

    _add_beijing_shop(app, secret="rotate-me-please")
    old_key = secretbox.derive_key(app.config["SECRET_KEY"]).decode()
    new_key = Fernet.generate_key().decode()
    try:
        app.config["CREDENTIALS_KEYS"] = f"{new_key},{old_key}"
        secretbox.init_app(app)
        assert _run(app, "shops", "rekey").exit_code == 0
        app.config["CREDENTIALS_KEYS"] = new_key  # the old key is gone now
        secretbox.init_app(app)
        with app.app_context():
            assert db.session.scalar(sa.select(Shop)).app_secret == "rotate-me-please"
    finally:
        app.config["CREDENTIALS_KEYS"] = None
        secretbox.init_app(app)
