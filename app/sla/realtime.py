"""SLA changes -> Socket.IO: ``sla.turn`` to the shop's supervisors room and the agent concerned,
``sla.changed`` (a nudge to re-read the board) when waiting buyers, the queue or presence change.

Rooms: ``sla:<shop>`` is joined by supervisors' boards (``sla.watch`` on /desk, role-checked).
"""

from __future__ import annotations

from app import events
from app.desk.realtime import emit, user_room


def sla_room(shop_id: int) -> str:
    return f"sla:{shop_id}"


def _on_sla(shop_id: int, turn: dict, reason: str) -> None:
    rooms = [sla_room(shop_id)]
    for user_id in {turn.get("assignee_id"), turn.get("agent_id")}:
        if user_id:
            rooms.append(user_room(user_id))
    emit("sla.turn", {"turn": turn, "reason": reason}, rooms)


def _on_turn_started(shop_id: int, turn: dict) -> None:
    emit("sla.changed", {"shop_id": shop_id, "reason": "started"}, [sla_room(shop_id)])


def _on_conversation(shop_id: int, conversation: dict, reason: str, **_kwargs) -> None:
    if reason in ("assigned", "resolved", "reopened", "transferred", "unassigned", "queued"):
        emit("sla.changed", {"shop_id": shop_id, "reason": reason}, [sla_room(shop_id)])


def _on_presence(_sender, user_id: int, presence: str, shop_ids) -> None:
    if shop_ids:
        emit("sla.changed", {"reason": "presence"}, [sla_room(shop_id) for shop_id in shop_ids])


def install() -> None:
    events.sla_changed.connect(_on_sla)
    events.sla_turn_started.connect(_on_turn_started)
    events.conversation_changed.connect(_on_conversation)
    events.presence_changed.connect(_on_presence)
