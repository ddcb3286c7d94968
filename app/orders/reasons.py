"""The platform's reject reasons (``rejectreason/get``), read once per shop and reused for a while.

The list key is documented as ``reason_list`` but reported live as ``reject_reason_list`` (the
client accepts both). Each entry names the scene it applies to: 1 refund only, 4 return, 5 exchange.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from flask import current_app

from app.models import Shop
from app.platform import client_for

_cache: dict[int, tuple[float, list[RejectReason]]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class RejectReason:
    type: int
    text: str
    reason: str
    scenes: tuple[int, ...]

    def as_dict(self) -> dict:
        return {"reject_reason_type": self.type, "text": self.text, "reason": self.reason, "scenes": list(self.scenes)}


def _parse(entry: dict) -> RejectReason | None:
    try:
        reason_type = int(entry["reject_reason_type"])
    except (KeyError, TypeError, ValueError):
        return None
    scene = entry.get("reject_scene")
    scenes = tuple(int(s) for s in scene) if isinstance(scene, list) else ((int(scene),) if scene is not None else ())
    text = str(entry.get("reject_reason_type_text") or entry.get("reject_reason") or reason_type)
    return RejectReason(reason_type, text, str(entry.get("reject_reason") or ""), scenes)


def for_shop(shop: Shop) -> list[RejectReason]:
    """Every reason of the shop (PlatformError when the platform cannot be asked)."""
    ttl = current_app.config["REJECT_REASONS_CACHE_SECONDS"]
    with _lock:
        cached = _cache.get(shop.id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
    reasons = [r for r in (_parse(e) for e in client_for(shop).reject_reasons()) if r is not None]
    with _lock:
        _cache[shop.id] = (time.monotonic() + ttl, reasons)
    return reasons


def for_scene(shop: Shop, scene: int | None) -> list[RejectReason]:
    """The reasons that apply to an after-sale of this scene (reasons naming no scene apply to all)."""
    return [r for r in for_shop(shop) if scene is None or not r.scenes or scene in r.scenes]


def forget(shop_id: int | None = None) -> None:
    with _lock:
        if shop_id is None:
            _cache.clear()
        else:
            _cache.pop(shop_id, None)
