"""The push URL of each shop: ``/webhooks/<webhook_key>``.

GET answers the platform's URL check. POST verifies ``msg_signature``, decrypts, checks that the
message is addressed to this shop's appid, stores the event in the inbox (once, by dedupe key) and
answers ``success`` right away; inbox workers process it afterwards. Anything wrong is refused with a
4xx and a one-word reason (also logged), and nothing is stored.

It is served by a WSGI middleware (``PushEndpoint``) in front of Flask: the busiest URL of a
livestream needs none of what every other request pays for (session cookie, sign-in, CSRF, login
throttling, language, shop scope, page headers), and skipping it halves its CPU time per push. The
signature is its gate.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask
from werkzeug.wrappers import Request, Response

from app import tenancy
from app.extensions import db
from app.ingest import inbox, worker
from app.models import Shop
from app.platform.client import ids_to_str
from app.platform.crypto import PushCrypto, PushError, SignatureMismatch

log = logging.getLogger(__name__)
MAX_PUSH_BYTES = 256 * 1024
CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class _Receiver:
    shop_id: int
    crypto: PushCrypto
    expires: float


_cache: dict[str, _Receiver] = {}
_cache_lock = threading.Lock()


def forget(webhook_key: str | None = None) -> None:
    """Drop cached credentials (after a shop's settings change in this process)."""
    with _cache_lock:
        if webhook_key is None:
            _cache.clear()
        else:
            _cache.pop(webhook_key, None)


def _receiver(key: str) -> _Receiver | None:
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and cached.expires > now:
        return cached
    session = db.session()
    with tenancy.system_scope(session):
        shop = session.scalar(sa.select(Shop).where(Shop.webhook_key == key, Shop.is_active))
        if shop is None:
            return None
        receiver = _Receiver(
            shop.id, PushCrypto(shop.push_token, shop.encoding_aes_key, shop.appid), now + CACHE_SECONDS
        )
    with _cache_lock:
        _cache[key] = receiver
    return receiver


class PushEndpoint:
    """WSGI middleware: ``/webhooks/<key>`` is answered here, everything else goes on to Flask.

    Runs inside the app context (database, config) but outside Flask's request handling; installed
    inside ProxyFix, so the logged client address is the real one behind a proxy.
    """

    PREFIX = "/webhooks/"

    def __init__(self, app: Flask, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(self.PREFIX):
            return self.wsgi_app(environ, start_response)
        request = Request(environ)
        key = path[len(self.PREFIX) :]
        try:
            with self.app.app_context():
                response = _serve(self.app, request, key)
        except Exception:  # answered 500: the platform pushes it again later
            log.exception("webhook %s…: failed", key[:6])
            response = Response("internal_error", status=500, mimetype="text/plain")
        # A machine's plain-text answer: nothing to render, frame or cache (what web.py gives pages).
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response(environ, start_response)


def _refuse(request: Request, status: int, reason: str, key: str) -> Response:
    log.warning("webhook %s…: refused %s (%s) from %s", key[:6], status, reason, request.remote_addr)
    return Response(reason, status=status, mimetype="text/plain")


def _serve(app: Flask, request: Request, key: str) -> Response:
    if request.method not in ("GET", "POST"):
        return Response("method_not_allowed", status=405, mimetype="text/plain", headers={"Allow": "GET, POST"})
    if not key or "/" in key or len(key) > 64:
        return _refuse(request, 404, "unknown_shop", key)
    receiver = _receiver(key)
    if receiver is None:
        return _refuse(request, 404, "unknown_shop", key)
    args = request.args
    if request.method == "GET":
        try:
            receiver.crypto.check_url(args.get("signature", ""), args.get("timestamp", ""), args.get("nonce", ""))
        except SignatureMismatch:
            return _refuse(request, 403, "bad_signature", key)
        return Response(args.get("echostr", ""), mimetype="text/plain")

    if args.get("encrypt_type") != "aes":
        return _refuse(request, 400, "encrypted_mode_required", key)
    if (request.content_length or 0) > MAX_PUSH_BYTES:
        return _refuse(request, 413, "too_large", key)
    # Read at most the limit from the stream: a chunked body has no Content-Length to check.
    raw = request.stream.read(MAX_PUSH_BYTES + 1)
    if len(raw) > MAX_PUSH_BYTES:
        return _refuse(request, 413, "too_large", key)
    try:
        envelope = json.loads(raw)
    except ValueError:
        return _refuse(request, 400, "body_not_json", key)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("Encrypt"), str):
        return _refuse(request, 400, "no_encrypt_field", key)
    try:
        plaintext = receiver.crypto.decrypt_push(
            envelope["Encrypt"], args.get("msg_signature", ""), args.get("timestamp", ""), args.get("nonce", "")
        )
    except PushError as exc:
        return _refuse(
            request, 403 if isinstance(exc, SignatureMismatch) or exc.reason == "wrong_appid" else 400, exc.reason, key
        )
    try:
        payload = json.loads(plaintext)
    except ValueError:
        return _refuse(request, 400, "message_not_json", key)
    if not isinstance(payload, dict) or not isinstance(payload.get("Event") or payload.get("MsgType"), str):
        return _refuse(request, 400, "not_an_event", key)

    # Ids as strings from here on (order ids arrive as bare JSON numbers above 2^53).
    payload = ids_to_str(payload)
    # One INSERT on a connection of its own, committed before the answer: the hot path skips the ORM
    # session (the statement names its shop explicitly; nothing else is read or written here).
    with db.engine.begin() as connection:
        new = inbox.receive(receiver.shop_id, payload, plaintext, connection)
    if new:
        worker.wake(app)
    return Response("success", mimetype="text/plain")
