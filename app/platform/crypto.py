"""Push message signatures and encryption, as the platform does them (encrypted mode, JSON).

- URL check: signature = sha1 of the sorted concatenation of (token, timestamp, nonce).
- Messages: msg_signature = sha1 of the sorted concatenation of (token, timestamp, nonce, Encrypt).
- AES key = base64decode(EncodingAESKey + "="), AES-256-CBC, IV = the key's first 16 bytes,
  PKCS#7 padding to 32-byte blocks. Plaintext = 16 random bytes + 4-byte big-endian length + message
  + receiver id (the shop's appid).

Both the desk (decrypting pushes) and the simulator (sending them) use this module; the tests check it
against an independent implementation (wechatpy's WeChatCrypto).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32


class PushError(ValueError):
    """A push that must be refused; ``reason`` is a short machine-readable word for logs and replies."""

    reason = "invalid_push"


class SignatureMismatch(PushError):
    reason = "bad_signature"


class DecryptFailed(PushError):
    reason = "undecryptable"


class ReceiverMismatch(PushError):
    reason = "wrong_appid"


def sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(str(p) for p in parts)).encode()).hexdigest()  # noqa: S324 - the platform's scheme


def _same(expected: str, given: str | None) -> bool:
    """Constant-time comparison that takes any text: compare_digest refuses non-ASCII str (a
    TypeError, which was a 500 for a signature with one such character: found by the fuzz tests)."""
    return hmac.compare_digest(expected.encode(), (given or "").encode("utf-8", "surrogatepass"))


class PushCrypto:
    def __init__(self, token: str, encoding_aes_key: str, appid: str):
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error as exc:
            raise ValueError("EncodingAESKey is not base64") from exc
        if len(key) != 32:
            raise ValueError("EncodingAESKey must decode to 32 bytes")
        self.token = token
        self.key = key
        self.appid = appid

    # --- signatures -------------------------------------------------------------------------

    def check_url(self, signature: str, timestamp: str, nonce: str) -> None:
        if not _same(sha1_signature(self.token, timestamp, nonce), signature):
            raise SignatureMismatch("URL signature does not match")

    def _check_msg_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> None:
        expected = sha1_signature(self.token, timestamp, nonce, encrypted)
        if not _same(expected, msg_signature):
            raise SignatureMismatch("msg_signature does not match")

    # --- AES ----------------------------------------------------------------------------------

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def encrypt(self, plaintext: str, random_prefix: bytes | None = None) -> str:
        body = plaintext.encode()
        raw = (random_prefix or os.urandom(16)) + struct.pack(">I", len(body)) + body + self.appid.encode()
        pad = BLOCK - len(raw) % BLOCK
        raw += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(raw) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> str:
        try:
            data = base64.b64decode(encrypted, validate=True)
            if not data or len(data) % 16:
                raise DecryptFailed("ciphertext length is not a multiple of the block size")
            decryptor = self._cipher().decryptor()
            raw = decryptor.update(data) + decryptor.finalize()
        except (binascii.Error, ValueError) as exc:
            raise DecryptFailed(str(exc)) from exc
        pad = raw[-1]
        if not 1 <= pad <= BLOCK or raw[-pad:] != bytes([pad]) * pad:
            raise DecryptFailed("bad padding")
        content = raw[16:-pad]
        if len(content) < 4:
            raise DecryptFailed("truncated message")
        (length,) = struct.unpack(">I", content[:4])
        message, receiver = content[4 : 4 + length], content[4 + length :]
        if len(message) != length:
            raise DecryptFailed("length prefix exceeds the message")
        if receiver.decode(errors="replace") != self.appid:
            raise ReceiverMismatch("the message is addressed to another appid")
        try:
            return message.decode()
        except UnicodeDecodeError as exc:
            raise DecryptFailed("message is not UTF-8") from exc

    # --- whole messages -----------------------------------------------------------------------

    def decrypt_push(self, encrypted: str, msg_signature: str, timestamp: str, nonce: str) -> str:
        """Verify and decrypt the ``Encrypt`` field of a push; returns the message JSON text."""
        self._check_msg_signature(msg_signature, timestamp, nonce, encrypted)
        return self.decrypt(encrypted)

    def encrypt_push(self, plaintext: str, timestamp: str, nonce: str) -> tuple[str, str]:
        """Encrypt a message JSON text; returns (Encrypt, msg_signature) for the push."""
        encrypted = self.encrypt(plaintext)
        return encrypted, sha1_signature(self.token, timestamp, nonce, encrypted)
