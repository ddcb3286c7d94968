"""Push crypto against an independent implementation (wechatpy's WeChatCrypto)."""

from __future__ import annotations

import json

import pytest
from wechatpy.crypto import PrpCrypto, WeChatCrypto, WeChatSigner, _get_signature

from app.platform.crypto import DecryptFailed, PushCrypto, ReceiverMismatch, SignatureMismatch, sha1_signature

TOKEN = "pushtoken123"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx1234567890abcdef"
MESSAGE = json.dumps(
    {
        "Event": "commkf_send_msg_to_kf",
        "msg_id": "m1",
        "text": {"content": "你好，在吗？"},
        "order_info": {"order_id": 3705123456789012345678},
    },
    ensure_ascii=False,
)


@pytest.fixture
def ours():
    return PushCrypto(TOKEN, AES_KEY, APPID)


@pytest.fixture
def theirs():
    return WeChatCrypto(TOKEN, AES_KEY, APPID)


def test_we_read_what_wechatpy_encrypts(ours, theirs):
    encrypted = PrpCrypto(theirs.key).encrypt(MESSAGE, APPID).decode()
    signature = _get_signature(TOKEN, "1732150000", "nonce123", encrypted)
    assert ours.decrypt_push(encrypted, signature, "1732150000", "nonce123") == MESSAGE


def test_wechatpy_reads_what_we_encrypt(ours, theirs):
    encrypted, signature = ours.encrypt_push(MESSAGE, "1732150000", "abc")
    assert theirs.decrypt_message({"Encrypt": encrypted}, signature, "1732150000", "abc") == MESSAGE


def test_url_check_signature_matches_wechatpy(ours):
    signer = WeChatSigner()
    signer.add_data(TOKEN, "1732150000", "n0nce")
    signature = signer.signature
    ours.check_url(signature, "1732150000", "n0nce")
    assert sha1_signature(TOKEN, "1732150000", "n0nce") == signature
    with pytest.raises(SignatureMismatch):
        ours.check_url(signature, "1732150001", "n0nce")


def test_tampering_is_detected_by_the_signature(ours):
    """CBC has no integrity of its own: the token-keyed signature over the ciphertext is the check."""
    encrypted, signature = ours.encrypt_push(MESSAGE, "1", "n")
    with pytest.raises(SignatureMismatch):
        ours.decrypt_push(encrypted, signature, "2", "n")  # replayed with another timestamp
    flipped = encrypted[:10] + ("A" if encrypted[10] != "A" else "B") + encrypted[11:]
    with pytest.raises(SignatureMismatch):
        ours.decrypt_push(flipped, signature, "1", "n")


def test_a_message_for_another_appid_is_refused(ours):
    other = PushCrypto(TOKEN, AES_KEY, "wxffffffffffffffff")
    encrypted, signature = other.encrypt_push(MESSAGE, "1", "n")
    with pytest.raises(ReceiverMismatch):
        ours.decrypt_push(encrypted, signature, "1", "n")


@pytest.mark.parametrize("junk", ["", "not base64!!", "QUJD", "A" * 44])
def test_garbage_never_crashes(ours, junk):
    with pytest.raises(DecryptFailed):
        ours.decrypt_push(junk, sha1_signature(TOKEN, "1", "n", junk), "1", "n")


def test_keys_are_validated():
    with pytest.raises(ValueError):
        PushCrypto(TOKEN, "short", APPID)
    with pytest.raises(ValueError):
        PushCrypto(TOKEN, "!" * 43, APPID)
