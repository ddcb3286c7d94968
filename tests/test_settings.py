"""Settings: admins connect shops and manage users; supervisors see their shops; everyone their profile."""

from __future__ import annotations

import re

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, Role, Shop, User
from tests.factories import AES_KEY, PASSWORD

NEW_SHOP = {
    "name": "成都店",
    "appid": "wx1234567890abcdef",
    "app_secret": "brand-new-secret-value-123456",
    "push_token": "pushtoken123",
    "encoding_aes_key": AES_KEY,
    "api_base_url": "https://api.weixin.qq.com",
    "timezone": "Asia/Shanghai",
    "is_active": "y",
}


def test_admin_connects_a_shop_and_secrets_never_come_back(app, world, login):
    client = login("admin")
    response = client.post("/settings/shops/new", data=NEW_SHOP)
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "成都店" in page
    assert NEW_SHOP["app_secret"] not in page and NEW_SHOP["push_token"] not in page and AES_KEY not in page
    assert "••••••••3456" in page, "the last characters help recognise which secret is stored"
    with app.app_context():
        shop = db.session.scalar(sa.select(Shop).where(Shop.appid == NEW_SHOP["appid"]))
        assert shop.app_secret == NEW_SHOP["app_secret"]
        assert f"/webhooks/{shop.webhook_key}" in page
        assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "shop.created")).shop_id == shop.id


def test_bad_shop_input_is_explained_and_nothing_is_stored(app, world, login):
    client = login("admin")
    cases = [
        ({"encoding_aes_key": "short"}, "字段长度必须为 43 个字符"),
        ({"appid": "nope"}, "AppID 以 wx 开头"),
        ({"appid": "wxaaaaaaaaaaaaaaaa"}, "该 AppID 的店铺已存在"),
        ({"app_secret": ""}, "新店铺必填"),
        ({"api_base_url": "not a url"}, "无效的 URL"),
        ({"encoding_aes_key": "!" * 43}, "EncodingAESKey 为 43 位字符"),
    ]
    for change, expected in cases:
        response = client.post("/settings/shops/new", data={**NEW_SHOP, **change})
        assert response.status_code == 400, change
        errors = re.findall(r'<p class="error">(.*?)</p>', response.get_data(as_text=True))
        assert any(expected in error for error in errors), (change, errors)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Shop)) == 2


def test_editing_a_shop_keeps_blank_secrets(app, world, login):
    client = login("admin")
    with app.app_context():
        before = db.session.get(Shop, world.a.shop_id).app_secret
    data = {
        **NEW_SHOP,
        "appid": "wxaaaaaaaaaaaaaaaa",
        "name": "杭州旗舰店（新名）",
        "app_secret": "",
        "push_token": "",
        "encoding_aes_key": "",
        "timezone": "Asia/Urumqi",
    }
    assert client.post(f"/settings/shops/{world.a.shop_id}", data=data).status_code == 302
    with app.app_context():
        shop = db.session.get(Shop, world.a.shop_id)
        assert (shop.name, shop.timezone, shop.app_secret) == ("杭州旗舰店（新名）", "Asia/Urumqi", before)


def test_supervisors_see_their_shop_settings_but_cannot_change_them(world, login):
    client = login("supervisor_a")
    page = client.get(f"/settings/shops/{world.a.shop_id}").get_data(as_text=True)
    assert world.a.name in page and "disabled" in page
    assert client.post(f"/settings/shops/{world.a.shop_id}", data={**NEW_SHOP, "name": "x"}).status_code == 403


def test_admin_creates_a_user_who_serves_chosen_shops(app, world, login):
    admin = login("admin")
    response = admin.post(
        "/settings/users/new",
        data={
            "username": "agent_new",
            "display_name": "新客服",
            "password": "long-enough-pw",
            "role": "agent",
            "capacity": "15",
            "language": "en",
            "shops": [str(world.b.shop_id)],
            "is_active": "y",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.username == "agent_new"))
        assert [s.id for s in user.shops] == [world.b.shop_id] and user.capacity == 15
    client = app.test_client()
    client.post("/login", data={"username": "agent_new", "password": "long-enough-pw"})
    rows = client.get("/api/inbox?view=all").get_json()["conversations"]
    assert [r["customer"]["nickname"] for r in rows] == [world.b.nickname]


def test_user_form_errors(app, world, login):
    admin = login("admin")
    base = {"display_name": "x", "role": "agent", "capacity": "5", "language": "zh_CN"}
    assert "该用户名已被使用" in admin.post(
        "/settings/users/new", data={**base, "username": "AGENT_A", "password": "long-enough-pw"}
    ).get_data(as_text=True)
    assert "新用户需要设置密码" in admin.post("/settings/users/new", data={**base, "username": "nopw"}).get_data(
        as_text=True
    )
    response = admin.post(
        "/settings/users/new", data={**base, "username": "cap", "password": "long-enough-pw", "capacity": "999"}
    )
    assert response.status_code == 400


def test_usernames_are_case_insensitive_and_without_spaces(app, world, login):
    admin = login("admin")
    base = {"display_name": "x", "role": "agent", "capacity": "0", "language": "zh_CN", "is_active": "y"}
    assert (
        admin.post(
            "/settings/users/new", data={**base, "username": "Mixed.Case", "password": "long-enough-pw"}
        ).status_code
        == 302
    )
    response = admin.post(f"/settings/users/{world.users['agent_a']}", data={**base, "username": "agent a"})
    assert response.status_code == 400 and "不含空格" in response.get_data(as_text=True)
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.username == "mixed.case"))
        assert user is not None and user.capacity == 0, "capacity 0 (no new chats) is a valid setting"
    app.test_client().login("MIXED.case", "long-enough-pw")


def test_saving_a_user_keeps_their_deactivated_shops(app, world, login):
    with app.app_context():
        db.session.get(Shop, world.a.shop_id).is_active = False
        db.session.commit()
    admin = login("admin")
    page = admin.get(f"/settings/users/{world.users['agent_a']}").get_data(as_text=True)
    assert "（已停用）" in page
    response = admin.post(
        f"/settings/users/{world.users['agent_a']}",
        data={
            "username": "agent_a",
            "display_name": "改名",
            "role": "agent",
            "capacity": "5",
            "language": "zh_CN",
            "shops": [str(world.a.shop_id)],
            "is_active": "y",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        assert [s.id for s in db.session.get(User, world.users["agent_a"]).shops] == [world.a.shop_id]


def test_admin_cannot_demote_or_deactivate_themselves(app, world, login):
    admin = login("admin")
    response = admin.post(
        f"/settings/users/{world.users['admin']}",
        data={
            "username": "admin",
            "display_name": "a",
            "role": "agent",
            "capacity": "5",
            "language": "zh_CN",
            "is_active": "y",
        },
    )
    assert response.status_code == 400
    with app.app_context():
        assert db.session.get(User, world.users["admin"]).role == Role.ADMIN


def test_admin_changes_role_shops_and_password(app, world, login):
    admin = login("admin")
    response = admin.post(
        f"/settings/users/{world.users['agent_a']}",
        data={
            "username": "agent_a",
            "display_name": "小王",
            "role": "supervisor",
            "capacity": "3",
            "language": "zh_CN",
            "shops": [str(world.a.shop_id), str(world.b.shop_id)],
            "password": "a-new-password",
            "is_active": "y",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        user = db.session.get(User, world.users["agent_a"])
        assert user.role == Role.SUPERVISOR and len(user.shops) == 2 and user.check_password("a-new-password")


def test_profile_and_password(app, world, login):
    client = login("agent_a")
    assert client.post("/settings/", data={"display_name": "王小二", "language": "zh_CN"}).status_code == 302
    wrong = client.post(
        "/settings/password",
        data={"pw-current_password": "nope", "pw-new_password": "abcdefgh1", "pw-confirm": "abcdefgh1"},
    )
    assert wrong.status_code == 400 and "密码错误" in wrong.get_data(as_text=True)
    mismatch = client.post(
        "/settings/password",
        data={"pw-current_password": PASSWORD, "pw-new_password": "abcdefgh1", "pw-confirm": "abcdefgh2"},
    )
    assert mismatch.status_code == 400 and "两次输入的密码不一致" in mismatch.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, world.users["agent_a"]).display_name == "王小二"
