"""The console's Socket.IO namespace ``/desk`` (docs/api.md): a thin adapter over the desk's domain.

Connections are refused unless the Flask session belongs to an active user. Every event reloads
the user (a deactivated account or a changed password ends at the next event), scopes the database
session to the user's shops, runs one domain function and answers an acknowledgement:
``{"ok": true, ...}`` or ``{"ok": false, "error": {"code", "message"}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

import sqlalchemy as sa
from flask import request
from flask_babel import gettext as _
from flask_login import current_user
from flask_socketio import ConnectionRefusedError, Namespace, disconnect, emit, join_room, leave_room

from app import tenancy
from app.auth.access import shop_ids_for
from app.desk import assignment, conversations
from app.desk.conversations import DeskError
from app.desk.realtime import (
    NAMESPACE,
    OPEN_CONVERSATION_ROOMS,
    conversation_room,
    conversation_rooms,
    user_room,
    watch_room,
)
from app.extensions import db, socketio
from app.models import Conversation, Role, Shop
from app.sla.realtime import sla_room
from app.web import has_nul

log = logging.getLogger(__name__)
INBOX_VIEWS = ("mine", "unassigned", "all", "resolved")


def _int(data: dict, key: str, required: bool = True) -> int | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DeskError("invalid", _("%(field)s is missing.", field=key))
    try:
        return int(value)
    except ValueError:
        raise DeskError("invalid", _("%(field)s is missing.", field=key)) from None


def _scoped_shop_ids() -> list[int]:
    import sqlalchemy as sa

    return list(db.session.scalars(sa.select(Shop.id).where(Shop.is_active)))


def _leave_rooms_outside(namespace: Namespace, scope) -> None:
    """A user who lost a shop stops hearing it at their next event (heartbeats come every 25 s)."""
    if scope is None:
        return
    rooms = list(namespace.rooms(request.sid))
    for room in rooms:
        if room.startswith(("watch:", "sla:", "buyer:", "person:")) and int(room.split(":", 2)[1]) not in scope:
            leave_room(room)
        elif room.startswith("conversation:"):
            shop_id = db.session.scalar(sa.select(Conversation.shop_id).where(Conversation.id == int(room[13:])))
            if shop_id is None:  # out of scope now (or gone): its buyer's rooms go with it
                for other in rooms:
                    if other.startswith(OPEN_CONVERSATION_ROOMS):
                        leave_room(other)


def desk_event(handler: Callable) -> Callable:
    """Authenticate, scope, run, acknowledge; the session is always closed afterwards."""

    @wraps(handler)
    def wrapped(self, data=None):
        try:
            if not current_user.is_authenticated:
                disconnect()
                return {"ok": False, "error": {"code": "unauthorized", "message": _("Please sign in to continue.")}}
            if has_nul(data):
                raise DeskError("invalid", _("The request contains characters that are not allowed."))
            scope = shop_ids_for(current_user)
            tenancy.set_scope(db.session(), scope)
            _leave_rooms_outside(self, scope)
            result = handler(self, data if isinstance(data, dict) else {})
            return {"ok": True, **(result or {})}
        except DeskError as exc:
            db.session.rollback()
            return {"ok": False, "error": {"code": exc.code, "message": exc.message}}
        except Exception:
            db.session.rollback()
            log.exception("socket event %s failed", handler.__name__)
            return {
                "ok": False,
                "error": {
                    "code": "internal_error",
                    "message": _("Something went wrong on our side. The error was logged."),
                },
            }
        finally:
            db.session.remove()

    return wrapped


class DeskNamespace(Namespace):
    def on_connect(self, auth=None):
        if not current_user.is_authenticated:
            raise ConnectionRefusedError("unauthorized")
        try:
            user = current_user._get_current_object()
            tenancy.set_scope(db.session(), shop_ids_for(user))
            join_room(user_room(user.id))
            presence = assignment.connected(user.id, request.sid)
            emit(
                "hello",
                {
                    "user": {"id": user.id, "name": user.display_name, "role": user.role.value},
                    "shop_ids": _scoped_shop_ids(),
                    "presence": presence,
                },
            )
        finally:
            db.session.remove()

    def on_disconnect(self, reason=None):
        try:
            if current_user.is_authenticated:
                assignment.disconnected(current_user.id, request.sid)
        except Exception:
            log.exception("recording a disconnect failed")
        finally:
            db.session.remove()

    @desk_event
    def on_heartbeat(self, data):
        assignment.heartbeat(request.sid)

    @desk_event
    def on_presence_set(self, data):
        return {"presence": assignment.set_presence(current_user, str(data.get("presence", "")))}

    @desk_event
    def on_inbox_watch(self, data):
        view = data.get("view")
        if view not in INBOX_VIEWS:
            raise DeskError("invalid", _("%(field)s is missing.", field="view"))
        shop_id = _int(data, "shop_id", required=False)
        allowed = _scoped_shop_ids()
        if shop_id is not None and shop_id not in allowed:
            raise DeskError("not_found", _("This shop does not exist, or you do not serve it."))
        wanted = set() if view == "mine" else ({shop_id} if shop_id else set(allowed))
        for room in list(self.rooms(request.sid)):
            if room.startswith("watch:") and int(room.split(":", 1)[1]) not in wanted:
                leave_room(room)
        for shop in wanted:
            join_room(watch_room(shop))
        return {}

    @desk_event
    def on_sla_watch(self, data):
        """A supervisor's board: hear the SLA events of the shops they serve (or one of them)."""
        shop_id = _int(data, "shop_id", required=False)
        allowed = _scoped_shop_ids()
        if shop_id is not None and shop_id not in allowed:
            raise DeskError("not_found", _("This shop does not exist, or you do not serve it."))
        if current_user.role not in (Role.SUPERVISOR, Role.ADMIN):
            raise DeskError("forbidden", _("Only supervisors can watch the service level board."))
        wanted = {shop_id} if shop_id else set(allowed)
        for room in list(self.rooms(request.sid)):
            if room.startswith("sla:") and int(room.split(":", 1)[1]) not in wanted:
                leave_room(room)
        for shop in wanted:
            join_room(sla_room(shop))
        return {"shop_ids": sorted(wanted)}

    @desk_event
    def on_conversation_open(self, data):
        conversation = conversations.get_conversation(_int(data, "conversation_id"))
        customer = conversation.customer
        wanted = conversation_rooms(conversation.id, conversation.shop_id, customer.openid, customer.unionid)
        for room in list(self.rooms(request.sid)):
            if room.startswith(OPEN_CONVERSATION_ROOMS) and room not in wanted:
                leave_room(room)
        for room in sorted(wanted):
            join_room(room)
        summary = conversations.mark_read(current_user, conversation.id)
        return {"conversation": summary}

    @desk_event
    def on_conversation_close(self, data):
        rooms = list(self.rooms(request.sid))
        if conversation_room(_int(data, "conversation_id")) in rooms:  # the one open here: its buyer's too
            for room in rooms:
                if room.startswith(OPEN_CONVERSATION_ROOMS):
                    leave_room(room)
        return {}

    @desk_event
    def on_conversation_read(self, data):
        return {"conversation": conversations.mark_read(current_user, _int(data, "conversation_id"))}

    @desk_event
    def on_message_send(self, data):
        msg_type = str(data.get("msg_type") or "text")
        if msg_type == "image":  # images go through POST /api/conversations/<id>/images (the upload)
            raise DeskError("invalid", _("This kind of message cannot be sent."))
        message = conversations.send_reply(
            current_user, _int(data, "conversation_id"), str(data.get("request_id") or ""), msg_type, data
        )
        _wake_outbox()
        return {"message": message}

    @desk_event
    def on_message_retry(self, data):
        message = conversations.retry_message(current_user, _int(data, "message_id"))
        _wake_outbox()
        return {"message": message}

    @desk_event
    def on_note_add(self, data):
        request_id = str(data.get("request_id") or "") or None
        note = conversations.add_note(current_user, _int(data, "conversation_id"), data.get("text"), request_id)
        return {"message": note}

    @desk_event
    def on_conversation_resolve(self, data):
        conversation_id = _int(data, "conversation_id")
        summary = conversations.resolve(current_user, conversation_id)
        assignment.drain_queue()
        return {"conversation": summary}

    @desk_event
    def on_conversation_reopen(self, data):
        return {"conversation": conversations.reopen(current_user, _int(data, "conversation_id"))}

    @desk_event
    def on_conversation_assign(self, data):
        user_id = _int(data, "user_id", required=False)
        return {"conversation": assignment.assign(current_user, _int(data, "conversation_id"), user_id)}


def _wake_outbox() -> None:
    from flask import current_app

    from app.ingest import worker

    worker.wake_outbox(current_app._get_current_object())


# Clients name events with dots (message.send); handlers are on_message_send.
class DottedDeskNamespace(DeskNamespace):
    def trigger_event(self, event, *args):
        return super().trigger_event((event or "").replace(".", "_"), *args)


def _refuse_default_namespace(auth=None):
    # Nothing is served on "/": refuse it rather than accept anonymous sockets.
    raise ConnectionRefusedError("use the /desk namespace")


_registered = False


def register() -> None:
    """Add the handlers to the module-level SocketIO once; every init_app picks them up."""
    global _registered
    if _registered:
        return
    _registered = True
    socketio.on_namespace(DottedDeskNamespace(NAMESPACE))
    socketio.on_event("connect", _refuse_default_namespace, namespace="/")
