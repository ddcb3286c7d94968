"""The console's JSON reads and the image upload (docs/api.md). Shop access comes from the request's
tenancy scope: another shop's conversation is simply not found."""

from __future__ import annotations

import hashlib
import mimetypes
import uuid
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify, request, send_file
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy.orm import selectinload

from app.desk import assignment, conversations, views
from app.desk.conversations import DeskError
from app.extensions import db
from app.ingest import worker
from app.models import Conversation, ConversationStatus, Customer, Message, QuickReply, Shop
from app.platform import client_for
from app.platform.client import PlatformError
from app.web import error_response, int_arg

bp = Blueprint("desk_api", __name__)
INBOX_VIEWS = ("mine", "unassigned", "all", "resolved")
PAGE = 50
IMAGE_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp"}
MAX_IMAGE = 10 * 1024 * 1024
_STATUS = {"not_found": 404, "forbidden": 403, "invalid": 400, "upload_failed": 502}


@bp.after_request
def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(DeskError)
def _desk_error(exc: DeskError):
    db.session.rollback()
    return error_response(_STATUS.get(exc.code, 409), exc.code, exc.message)


def _view_filter(stmt: sa.Select, view: str) -> sa.Select:
    if view == "resolved":
        return stmt.where(Conversation.status == ConversationStatus.RESOLVED)
    stmt = stmt.where(Conversation.status == ConversationStatus.OPEN)
    if view == "mine":
        return stmt.where(Conversation.assignee_id == current_user.id)
    if view == "unassigned":
        return stmt.where(Conversation.assignee_id.is_(None))
    return stmt


def inbox_query(view: str, shop_id: int | None, search: str | None) -> sa.Select:
    stmt = _view_filter(sa.select(Conversation), view)
    if shop_id:
        stmt = stmt.where(Conversation.shop_id == shop_id)
    if search:
        pattern = "%" + search.replace("\\", "").replace("%", "").replace("_", "") + "%"
        matching = sa.select(Customer.id).where(sa.or_(Customer.nickname.ilike(pattern), Customer.openid == search))
        stmt = stmt.where(Conversation.customer_id.in_(matching))
    return stmt


def _counts(shop_id: int | None) -> dict[str, int]:
    counts = {}
    for view in ("mine", "unassigned", "all"):
        stmt = _view_filter(sa.select(sa.func.count()).select_from(Conversation), view)
        if shop_id:
            stmt = stmt.where(Conversation.shop_id == shop_id)
        counts[view] = db.session.scalar(stmt) or 0
    return counts


@bp.get("/api/inbox")
@login_required
def inbox():
    view = request.args.get("view", "mine")
    if view not in INBOX_VIEWS:
        view = "mine"
    shop_id = int_arg("shop")
    search = (request.args.get("q") or "").strip()[:64] or None
    stmt = inbox_query(view, shop_id, search)
    before = request.args.get("before")
    if before:
        try:
            # A "+00:00" left unencoded in a query string arrives as " 00:00".
            at = datetime.fromisoformat(before.replace(" ", "+"))
        except ValueError:
            return error_response(400, "invalid", _("%(field)s is missing.", field="before"))
        before_id = int_arg("before_id")
        if before_id:  # keyset: rows with the same time as the last one shown continue by id
            stmt = stmt.where(
                sa.or_(
                    Conversation.last_message_at < at,
                    sa.and_(Conversation.last_message_at == at, Conversation.id < before_id),
                )
            )
        else:
            stmt = stmt.where(Conversation.last_message_at < at)
    order = (Conversation.last_message_at.desc(), Conversation.id.desc())  # the order `before` pages by
    stmt = stmt.options(
        selectinload(Conversation.customer).selectinload(Customer.tags),
        selectinload(Conversation.assignee),
        selectinload(Conversation.shop),
    )
    rows = db.session.scalars(stmt.order_by(*order).limit(PAGE + 1)).unique().all()
    return jsonify(
        conversations=[views.conversation_summary(c) for c in rows[:PAGE]],
        counts=_counts(shop_id),
        has_more=len(rows) > PAGE,
    )


def _messages_page(conversation_id: int, before_seq: int | None = None, after_seq: int | None = None):
    stmt = sa.select(Message).where(Message.conversation_id == conversation_id)
    if after_seq is not None:
        rows = db.session.scalars(stmt.where(Message.seq > after_seq).order_by(Message.seq).limit(1000)).all()
        return rows, False
    if before_seq is not None:
        stmt = stmt.where(Message.seq < before_seq)
    rows = db.session.scalars(stmt.order_by(Message.seq.desc()).limit(PAGE + 1)).all()
    return list(reversed(rows[:PAGE])), len(rows) > PAGE


@bp.get("/api/conversations/<int:conversation_id>")
@login_required
def conversation(conversation_id: int):
    found = conversations.get_conversation(conversation_id)
    messages, has_more = _messages_page(found.id)
    return jsonify(
        conversation=views.conversation_summary(found),
        messages=[views.message_dict(m) for m in messages],
        has_more=has_more,
    )


@bp.get("/api/conversations/<int:conversation_id>/messages")
@login_required
def messages(conversation_id: int):
    found = conversations.get_conversation(conversation_id)
    after = int_arg("after_seq", low=0)
    messages, has_more = _messages_page(found.id, before_seq=int_arg("before_seq"), after_seq=after)
    return jsonify(messages=[views.message_dict(m) for m in messages], has_more=has_more)


@bp.post("/api/conversations/<int:conversation_id>/images")
@login_required
def send_image(conversation_id: int):
    found = conversations.get_conversation(conversation_id)
    upload = request.files.get("file")
    request_id = request.form.get("request_id") or uuid.uuid4().hex
    if upload is None:
        raise DeskError("invalid", _("Choose an image to send."))
    data = upload.read(MAX_IMAGE + 1)
    content_type = (upload.mimetype or "").lower()
    if content_type not in IMAGE_TYPES or len(data) > MAX_IMAGE or not data:
        raise DeskError("invalid", _("Images must be JPEG, PNG, GIF or WebP, at most 10 MB."))
    # Every check that does not need the platform first: no upload spent on a message never sent.
    conversations.check_can_reply(current_user, found, request_id)
    existing = db.session.scalar(sa.select(Message).where(Message.request_id == request_id))
    if existing is not None and existing.conversation_id == found.id:
        return jsonify(message=views.message_dict(existing)), 200  # a repeated upload request
    shop = db.session.get(Shop, found.shop_id)
    openid = found.customer.openid
    db.session.commit()  # nothing held while the platform answers
    try:
        cos_url = client_for(shop).upload_media(openid, "image", upload.filename or "image", data, content_type)
    except PlatformError as exc:
        raise DeskError(
            "upload_failed", _("The platform did not take the image: %(reason)s", reason=exc.errmsg or exc)
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    name = digest + IMAGE_TYPES[content_type]
    folder = Path(current_app.config["MEDIA_DIR"]) / str(shop.id)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / name).exists():
        (folder / name).write_bytes(data)
    message = conversations.send_reply(
        current_user, conversation_id, request_id, "image", {"cos_url": cos_url}, media={"media": name}
    )
    worker.wake_outbox(current_app._get_current_object())
    return jsonify(message=message), 201


@bp.get("/api/messages/<int:message_id>/image")
@login_required
def message_image(message_id: int):
    message = db.session.get(Message, message_id)
    name = ((message.body or {}).get("media") if message is not None else None) or ""
    path = Path(current_app.config["MEDIA_DIR"]) / str(message.shop_id if message else 0) / name
    if message is None or not name or "/" in name or not path.is_file():
        return error_response(404, "not_found", _("No such message."))
    return send_file(path, mimetype=mimetypes.guess_type(name)[0], max_age=0)


@bp.get("/api/quick-replies")
@login_required
def quick_replies():
    shop_id = int_arg("shop")
    stmt = sa.select(QuickReply).where(sa.or_(QuickReply.owner_id.is_(None), QuickReply.owner_id == current_user.id))
    if shop_id:
        stmt = stmt.where(QuickReply.shop_id == shop_id)
    rows = db.session.scalars(stmt.order_by(QuickReply.owner_id.is_(None), QuickReply.shortcut)).all()
    return jsonify(
        quick_replies=[
            {
                "id": r.id,
                "shop_id": r.shop_id,
                "shortcut": r.shortcut,
                "title": r.title,
                "content": r.content,
                "personal": r.owner_id is not None,
            }
            for r in rows
        ]
    )


@bp.get("/api/agents")
@login_required
def agents():
    shop_id = int_arg("shop")
    shop = db.session.get(Shop, shop_id) if shop_id else None
    if shop is None:
        return error_response(404, "not_found", _("This shop does not exist, or you do not serve it."))
    return jsonify(agents=assignment.agents_for_shop(shop.id))
