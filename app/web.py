"""Cross-cutting web concerns: security headers, error pages and JSON errors, template helpers."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app import i18n, labels, secretbox

# No inline scripts or styles anywhere: every script and stylesheet is a file under static/.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: https:",
        "connect-src 'self'",  # includes same-origin ws:/wss: in current browsers
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def int_arg(name: str, default: int | None = None, low: int = 1, high: int = 2**31 - 1) -> int | None:
    """An integer query argument within [low, high], else the default (never a 500 on junk)."""
    value = request.args.get(name, type=int)
    if value is None or not low <= value <= high:
        return default
    return value


def wants_json() -> bool:
    return request.path.startswith("/api/") or (
        request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json"
    )


def error_response(status: int, code: str, message: str):
    """One JSON envelope for every API error: {"error": {"code", "message"}}."""
    return jsonify(error={"code": code, "message": message}), status


def has_nul(value, depth: int = 0) -> bool:
    """A NUL character anywhere in a JSON payload or socket event (PostgreSQL text cannot hold one)."""
    if isinstance(value, str):
        return "\x00" in value
    if depth > 8:
        return False
    if isinstance(value, dict):
        return any(has_nul(k, depth + 1) or has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v, depth + 1) for v in value)
    return False


def init_app(app: Flask) -> None:
    # JSON answers carry Chinese text as UTF-8, not \\u escapes (a third of the size).
    app.json.ensure_ascii = False
    app.jinja_env.filters["yuan"] = i18n.format_yuan
    app.jinja_env.filters["shoptime"] = i18n.format_shop_time
    app.jinja_env.filters["masked"] = secretbox.mask
    app.jinja_env.filters["order_status"] = labels.order_status
    app.jinja_env.filters["after_sale_type"] = labels.after_sale_type
    app.jinja_env.filters["after_sale_status"] = labels.after_sale_status
    app.jinja_env.filters["role_label"] = labels.role

    @app.before_request
    def _refuse_nul_characters():
        """A NUL character in a parameter is never meant (PostgreSQL text cannot hold one, so it
        would fail deep in a query): refuse it up front, with a reason (found by tests/security)."""
        values = [*request.args.keys(), *(v for vs in request.args.listvalues() for v in vs)]
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            values += [*request.form.keys(), *(v for vs in request.form.listvalues() for v in vs)]
        body = request.get_json(silent=True) if request.is_json else None
        if any("\x00" in value for value in values) or has_nul(body):
            message = _("The request contains characters that are not allowed.")
            if wants_json():
                return error_response(400, "invalid_characters", message)
            return render_template("errors/error.html", status=400, message=message), 400
        return None

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if app.config.get("SESSION_COOKIE_SECURE"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if response.mimetype == "text/html":
            # Pages carry personal data (buyer names, addresses): never cache them.
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/healthz")
    def healthz():
        """For load balancers and operators: database, Redis, scheduler leader, poller lag, queue
        backlogs (app/health.py); 503 when this process cannot work."""
        from app import health

        body, status = health.report(app)
        response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        return response, status

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError):
        message = _("Your form expired or came from another site. Reload the page and try again.")
        if wants_json():
            return error_response(400, "csrf_failed", message)
        return render_template("errors/error.html", status=400, message=message), 400

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        messages = {
            403: _("You do not have access to this page."),
            404: _("This page does not exist, or it belongs to a shop you do not serve."),
            405: _("This action is not allowed here."),
            429: _("Too many attempts. Wait a minute and try again."),
        }
        status = exc.code or 500
        message = messages.get(status, exc.description or exc.name)
        if wants_json():
            return error_response(status, exc.name.lower().replace(" ", "_"), message)
        return render_template("errors/error.html", status=status, message=message), status

    @app.errorhandler(500)
    def _server_error(exc):
        from app.extensions import db

        db.session.rollback()
        message = _("Something went wrong on our side. The error was logged.")
        if wants_json():
            return error_response(500, "internal_error", message)
        return render_template("errors/error.html", status=500, message=message), 500
