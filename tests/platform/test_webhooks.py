"""Webhook intake: pushes built by an independent implementation (wechatpy) are accepted once;
anything wrong is refused with a reason and leaves nothing behind."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from wechatpy.crypto import PrpCrypto, WeChatCrypto, WeChatSigner, _get_signature

from app.extensions import db
from app.ingest import webhooks
from app.models import InboxEvent, Shop
from tests.factories import make_shop

TOKEN = "pushtoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx00000000000000aa"


@pytest.fixture
def shop(app):
    webhooks.forget()
    with app.app_context():
        shop = make_shop("推送店", appid=APPID, push_token=TOKEN, encoding_aes_key=AES_KEY)
        db.session.commit()
        yield {"id": shop.id, "url": f"/webhooks/{shop.webhook_key}"}
        db.session.remove()


def build_push(
    payload: dict | str, *, appid: str = APPID, token: str = TOKEN, timestamp: str = "1732150000", nonce: str = "n1"
) -> tuple[dict, dict]:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    encrypted = PrpCrypto(WeChatCrypto(token, AES_KEY, appid).key).encrypt(text, appid).decode()
    query = {
        "signature": _signature(token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": _get_signature(token, timestamp, nonce, encrypted),
    }
    return query, {"ToUserName": appid, "Encrypt": encrypted}


def _signature(token, timestamp, nonce):
    signer = WeChatSigner()
    signer.add_data(token, timestamp, nonce)
    return signer.signature


MESSAGE = {
    "ToUserName": APPID,
    "FromUserName": "o_buyer",
    "CreateTime": 1732150000,
    "MsgType": "event",
    "Event": "commkf_send_msg_to_kf",
    "msg_id": 9007199254740993123,
    "msg_type": "text",
    "text": {"content": "在吗"},
}
# Written by hand: an order id as a bare JSON number far beyond 2^53, as the platform pushes it.
ORDER_PUSH = (
    f'{{"ToUserName":"{APPID}","CreateTime":1732150000,"MsgType":"event","Event":"channels_ec_order_pay",'
    '"order_info":{"order_id":3705123456789012345678,"pay_time":1732150000}}'
)


def _events(app):
    with app.app_context():
        return db.session.scalars(sa.select(InboxEvent).order_by(InboxEvent.id)).all()


def test_url_verification_echoes_only_with_a_valid_signature(client, shop):
    query = {"signature": _signature(TOKEN, "1", "n"), "timestamp": "1", "nonce": "n", "echostr": "echo-123"}
    response = client.get(shop["url"], query_string=query)
    assert response.status_code == 200 and response.get_data(as_text=True) == "echo-123"
    bad = client.get(shop["url"], query_string={**query, "signature": "0" * 40})
    assert bad.status_code == 403 and bad.get_data(as_text=True) == "bad_signature"


def test_a_push_is_stored_once_and_acknowledged(app, client, shop):
    query, body = build_push(MESSAGE)
    for _ in range(3):  # the platform re-delivers
        response = client.post(shop["url"], query_string=query, json=body)
        assert response.status_code == 200 and response.get_data(as_text=True) == "success"
    events = _events(app)
    assert len(events) == 1
    assert events[0].dedupe_key == "msg:9007199254740993123"
    assert events[0].payload["msg_id"] == "9007199254740993123", "ids as strings, exact"


def test_big_order_ids_keep_every_digit(app, client, shop):
    query, body = build_push(ORDER_PUSH)
    assert client.post(shop["url"], query_string=query, json=body).status_code == 200
    (event,) = _events(app)
    assert event.payload["order_info"]["order_id"] == "3705123456789012345678"
    # The same event re-delivered with a new nonce and timestamp is still one event.
    query2, body2 = build_push(ORDER_PUSH, timestamp="1732150099", nonce="other")
    assert client.post(shop["url"], query_string=query2, json=body2).status_code == 200
    assert len(_events(app)) == 1


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (lambda q, b: q.update(msg_signature="0" * 40), 403, "bad_signature"),
        (lambda q, b: q.update(timestamp="1"), 403, "bad_signature"),
        (lambda q, b: q.pop("encrypt_type"), 400, "encrypted_mode_required"),
        (lambda q, b: b.pop("Encrypt"), 400, "no_encrypt_field"),
        (lambda q, b: b.update(Encrypt=12345), 400, "no_encrypt_field"),
    ],
)
def test_bad_pushes_are_refused_with_a_reason(app, client, shop, mutate, status, reason):
    query, body = build_push(MESSAGE)
    mutate(query, body)
    response = client.post(shop["url"], query_string=query, json=body)
    assert (response.status_code, response.get_data(as_text=True)) == (status, reason)
    assert _events(app) == []


def test_a_push_for_another_appid_is_refused(app, client, shop):
    query, body = build_push(MESSAGE, appid="wx11111111111111bb")
    response = client.post(shop["url"], query_string=query, json=body)
    assert (response.status_code, response.get_data(as_text=True)) == (403, "wrong_appid")
    assert _events(app) == []


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [("not json", "message_not_json"), ("[1,2]", "not_an_event"), ('{"hello":"world"}', "not_an_event")],
)
def test_undecodable_messages_are_refused(app, client, shop, plaintext, reason):
    query, body = build_push(plaintext)
    response = client.post(shop["url"], query_string=query, json=body)
    assert (response.status_code, response.get_data(as_text=True)) == (400, reason)
    assert _events(app) == []


def test_malformed_bodies_and_unknown_shops(app, client, shop):
    query, _ = build_push(MESSAGE)
    response = client.post(shop["url"], query_string=query, data="{not json", content_type="application/json")
    assert (response.status_code, response.get_data(as_text=True)) == (400, "body_not_json")
    assert client.post("/webhooks/unknown-key", query_string=query, json={}).status_code == 404
    assert client.post("/webhooks/" + "x" * 500, json={}).status_code == 404
    assert _events(app) == []


def test_a_deactivated_shop_accepts_nothing(app, client, shop):
    with app.app_context():
        db.session.get(Shop, shop["id"]).is_active = False
        db.session.commit()
    webhooks.forget()
    query, body = build_push(MESSAGE)
    assert client.post(shop["url"], query_string=query, json=body).status_code == 404
    assert _events(app) == []


def test_webhooks_need_no_session_or_csrf(app, shop):
    query, body = build_push(MESSAGE)
    bare = app.test_client()
    assert bare.post(shop["url"], query_string=query, json=body).status_code == 200


def test_the_push_url_answers_get_and_post_only(client, shop):
    response = client.put(shop["url"], data="x")
    assert (response.status_code, response.get_data(as_text=True)) == (405, "method_not_allowed")
    assert response.headers["Allow"] == "GET, POST"


def test_push_answers_set_no_cookie_and_are_not_cached(client, shop):
    query, body = build_push(MESSAGE)
    response = client.post(shop["url"], query_string=query, json=body)
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_a_failure_while_storing_answers_500_and_the_platform_retry_is_stored(app, client, shop, monkeypatch):
    """The database itself refuses the INSERT (here: a shop id it does not know, a foreign key).
    Nothing is stored, the platform hears 500 and retries, and the retry is stored once."""
    from app.ingest import inbox

    real_values = inbox._event_values

    def refused_by_the_database(shop_id, payload, plaintext):
        return {**real_values(shop_id, payload, plaintext), "shop_id": 987654321}

    monkeypatch.setattr(inbox, "_event_values", refused_by_the_database)
    query, body = build_push(MESSAGE)
    response = client.post(shop["url"], query_string=query, json=body)
    assert (response.status_code, response.get_data(as_text=True)) == (500, "internal_error")
    assert _events(app) == []
    monkeypatch.setattr(inbox, "_event_values", real_values)
    # One push at a time: the pool hands out the connection the refusal came back on.
    assert client.post(shop["url"], query_string=query, json=body).get_data(as_text=True) == "success"
    assert client.post(shop["url"], query_string=query, json=body).get_data(as_text=True) == "success"  # dup
    assert len(_events(app)) == 1
