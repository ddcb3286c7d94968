"""A shop's SLA policy (threshold, warning, unit, assessment window, auto-reassign), cached per process.

The buyer-message path asks for it on every new turn, so it is read once and kept for
``CACHE_SECONDS`` (a saved form forgets it in this process at once; other processes within that).
Defaults, and why (docs/sla.md): 180 s and 100 s are the platform's 3 minutes and a warning that
leaves time to type; one unit per turn; the window 08:00-24:00, the one source quoted for WeChat.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from app.extensions import db

CACHE_SECONDS = 10.0
DEFAULT_THRESHOLD = 180
DEFAULT_WARNING = 100
DEFAULT_WINDOW = ("08:00", "24:00")


@dataclass(frozen=True)
class Policy:
    shop_id: int
    threshold_seconds: int = DEFAULT_THRESHOLD
    warning_seconds: int = DEFAULT_WARNING
    unit: str = "turn"
    window_start: str = DEFAULT_WINDOW[0]
    window_end: str = DEFAULT_WINDOW[1]
    reassign_after_seconds: int | None = None
    timezone: str = "Asia/Shanghai"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def deadline(self, started_at: datetime) -> datetime:
        return started_at + timedelta(seconds=self.threshold_seconds)

    def warn_at(self, started_at: datetime) -> datetime:
        return started_at + timedelta(seconds=min(self.warning_seconds, self.threshold_seconds))

    def counts(self, started_at: datetime) -> bool:
        """Whether a turn that started then is inside the daily assessment window (shop-local)."""
        return in_window(started_at.astimezone(self.tz), self.window_start, self.window_end)


def minutes(hhmm: str) -> int:
    hours, _, mins = hhmm.partition(":")
    return int(hours) * 60 + int(mins)


def in_window(local: datetime, start: str, end: str) -> bool:
    """``start <= local time < end``; an end before the start spans midnight; equal means all day."""
    now, lo, hi = local.hour * 60 + local.minute, minutes(start), minutes(end)
    if lo == hi:
        return True
    if lo < hi:
        return lo <= now < hi
    return now >= lo or now < hi


_cache: dict[int, tuple[float, Policy]] = {}
_lock = threading.Lock()


def policy_for(shop_id: int) -> Policy:
    hit = _cache.get(shop_id)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    policy = load(shop_id)
    with _lock:
        _cache[shop_id] = (time.monotonic() + CACHE_SECONDS, policy)
    return policy


def load(shop_id: int) -> Policy:
    """Read on a connection of its own: callers may hold a scoped session or a write lock."""
    from app.models import Shop, SlaSettings

    shops, settings = Shop.__table__, SlaSettings.__table__
    with db.engine.connect() as connection:
        row = connection.execute(
            sa.select(shops.c.timezone, settings)
            .select_from(shops.outerjoin(settings, settings.c.shop_id == shops.c.id))
            .where(shops.c.id == shop_id)
        ).first()
    if row is None:
        return Policy(shop_id)
    if row.threshold_seconds is None:
        return Policy(shop_id, timezone=row.timezone or "Asia/Shanghai")
    return Policy(
        shop_id,
        threshold_seconds=row.threshold_seconds,
        warning_seconds=row.warning_seconds,
        unit=str(row.unit),
        window_start=row.window_start,
        window_end=row.window_end,
        reassign_after_seconds=row.reassign_after_seconds,
        timezone=row.timezone or "Asia/Shanghai",
    )


def forget(shop_id: int | None = None) -> None:
    with _lock:
        if shop_id is None:
            _cache.clear()
        else:
            _cache.pop(shop_id, None)
