"""Write audit entries. Callers commit with their own unit of work."""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from flask_login import current_user

from app.extensions import db
from app.models import AuditLog, User


def record(
    action: str,
    *,
    user: User | None = None,
    shop_id: int | None = None,
    subject_kind: str | None = None,
    subject_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    if user is None and has_request_context() and current_user.is_authenticated:
        user = current_user
    entry = AuditLog(
        action=action,
        user_id=user.id if user is not None else None,
        shop_id=shop_id,
        subject_kind=subject_kind,
        subject_id=subject_id,
        details=details,
        ip=request.remote_addr if has_request_context() else None,
    )
    db.session.add(entry)
    return entry
