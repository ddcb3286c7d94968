"""The console's Socket.IO namespace: authenticated from the signed-in session, rooms per user and shop.

Connections are refused unless the Flask session belongs to an active user; a connected agent joins
``user:<id>`` and ``shop:<id>`` for every shop they serve. Chat events arrive with the agent console.
"""

from __future__ import annotations

from flask_login import current_user
from flask_socketio import ConnectionRefusedError, Namespace, emit, join_room

from app import tenancy
from app.auth.access import shop_ids_for
from app.extensions import db, socketio

NAMESPACE = "/desk"


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def shop_room(shop_id: int) -> str:
    return f"shop:{shop_id}"


def _shop_ids() -> list[int]:
    from app.auth.access import accessible_shops

    tenancy.set_scope(db.session(), shop_ids_for(current_user))
    return [shop.id for shop in accessible_shops()]


class DeskNamespace(Namespace):
    def on_connect(self, auth=None):
        if not current_user.is_authenticated:
            raise ConnectionRefusedError("unauthorized")
        shop_ids = _shop_ids()
        join_room(user_room(current_user.id))
        for shop_id in shop_ids:
            join_room(shop_room(shop_id))
        emit("hello", {"user_id": current_user.id, "shop_ids": shop_ids})
        db.session.remove()

    def on_disconnect(self, reason=None):
        db.session.remove()


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
    socketio.on_namespace(DeskNamespace(NAMESPACE))
    socketio.on_event("connect", _refuse_default_namespace, namespace="/")
