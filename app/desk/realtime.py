"""The bridge from domain events to browsers: each announced change becomes Socket.IO events in rooms.

Web processes emit through their own server (which, with ``REDIS_URL``, publishes to Redis so every
web process delivers to its own clients). Processes that serve no browsers (``flask scheduler``) emit
through a write-only Socket.IO bound to the same Redis (``use_write_only``).

Rooms (docs/api.md): ``user:<id>`` every tab of a user, ``conversation:<id>`` tabs with it open,
``watch:<shop>`` tabs looking at a shop's shared views (unassigned, all, resolved).
"""

from __future__ import annotations

import logging
import time

import socketio as socketio_lib
from flask import Flask
from flask_socketio import SocketIO

from app import events
from app.extensions import socketio

log = logging.getLogger(__name__)
NAMESPACE = "/desk"
_emitter: SocketIO | None = None


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def conversation_room(conversation_id: int) -> str:
    return f"conversation:{conversation_id}"


def buyer_room(shop_id: int, openid: str) -> str:
    """Consoles showing a conversation with this buyer of this shop (the order sidebar's events)."""
    return f"buyer:{shop_id}:{openid}"


def person_room(shop_id: int, unionid: str) -> str:
    """Consoles showing a conversation with this person (one unionid across the merchant's shops) in
    that shop: they hear of the person's orders in the other shops."""
    return f"person:{shop_id}:{unionid}"


def conversation_rooms(conversation_id: int, shop_id: int, openid: str | None, unionid: str | None) -> set[str]:
    """What a console joins when it opens a conversation: its own room and its buyer's."""
    rooms = {conversation_room(conversation_id)}
    if openid:
        rooms.add(buyer_room(shop_id, openid))
    if unionid:
        rooms.add(person_room(shop_id, unionid))
    return rooms


OPEN_CONVERSATION_ROOMS = ("conversation:", "buyer:", "person:")


def watch_room(shop_id: int) -> str:
    return f"watch:{shop_id}"


class ResyncingRedisManager(socketio_lib.RedisManager):
    """python-socketio's Redis manager, telling this process's browsers to re-sync when its
    subscription comes back after Redis was away: events published meanwhile are lost to every
    process, while the browsers' websockets to this process never dropped (so they would not know)."""

    def _redis_listen_with_retries(self):  # mirrors the parent's loop, plus the re-sync
        retry_sleep = 1
        subscribed = False
        failed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    self.pubsub.subscribe(self.channel)
                    subscribed = True
                    retry_sleep = 1
                    if failed:
                        failed = False
                        log.warning("Redis is back: telling this process's consoles to re-sync")
                        # Manager.emit delivers to this process's clients only (no publish).
                        socketio_lib.Manager.emit(self, "resync", {"reason": "realtime_restored"}, namespace=NAMESPACE)
                yield from self.pubsub.listen()
            except Exception as exc:
                log.warning("Socket.IO lost Redis (%s); retrying in %s s", type(exc).__name__, retry_sleep)
                subscribed = False
                failed = True
                time.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, 8)


def client_manager(app: Flask):
    """The web processes' Socket.IO manager: through Redis when configured, else in-process."""
    url = app.config.get("REDIS_URL")
    if not url:
        return None
    return ResyncingRedisManager(url, channel=app.config["SOCKETIO_CHANNEL"])


def use_write_only(app: Flask) -> None:
    """In a process without a Socket.IO server: emit through Redis (no-op without REDIS_URL)."""
    global _emitter
    url = app.config.get("REDIS_URL")
    if url:
        _emitter = SocketIO(message_queue=url, channel=app.config["SOCKETIO_CHANNEL"])


def emit(event: str, data: dict, to: list[str]) -> None:
    if not to:
        return
    try:
        (_emitter or socketio).emit(event, data, to=to, namespace=NAMESPACE)
    except Exception:
        # Realtime is best effort: a client that missed an event re-syncs (docs/api.md); the data
        # is already committed.
        log.exception("emitting %s failed", event)


def _on_conversation(
    shop_id: int, conversation: dict, reason: str, message: dict | None, notify_user_ids, assigned: bool = False
) -> None:
    rooms = [watch_room(shop_id), conversation_room(conversation["id"])]
    rooms += [user_room(user_id) for user_id in sorted(notify_user_ids)]
    emit("conversation.updated", {"conversation": conversation, "reason": reason, "message": message}, rooms)
    assignee = conversation.get("assignee")
    if (reason == "assigned" or assigned) and assignee:
        emit("conversation.assigned", {"conversation": conversation, "message": message}, [user_room(assignee["id"])])


def _on_message(shop_id: int, message: dict, created: bool) -> None:
    rooms = [conversation_room(message["conversation_id"])]
    if message.get("sender"):
        rooms.append(user_room(message["sender"]["id"]))  # the sender's other tabs
    emit("message.created" if created else "message.updated", {"message": message}, rooms)


def _on_presence(_sender, user_id: int, presence: str, shop_ids) -> None:
    rooms = [user_room(user_id)]
    if shop_ids is not None:
        rooms += [watch_room(shop_id) for shop_id in shop_ids]
    emit("presence.changed", {"user_id": user_id, "presence": presence}, rooms)


def _on_signed_out(_sender, user_id: int, sids: list[str], reason: str = "signed_out") -> None:
    """Every console of the user hears why, then the server closes its socket: in this process at
    once, in the others through the message queue (python-socketio's disconnect crosses it)."""
    emit("session.ended", {"reason": reason}, [user_room(user_id)])
    server = (_emitter or socketio).server
    for sid in sids:
        try:
            server.disconnect(sid, namespace=NAMESPACE)
        except Exception:  # gone meanwhile; its next event would find the session void anyway
            log.info("could not disconnect %s", sid, exc_info=True)


def install() -> None:
    events.user_signed_out.connect(_on_signed_out)
    events.conversation_changed.connect(_on_conversation)
    events.message_changed.connect(_on_message)
    events.presence_changed.connect(_on_presence)
