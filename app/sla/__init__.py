"""Service level: the 3-minute manual reply clock, the deadline queue, the live board and history."""

from flask import Blueprint

bp = Blueprint("sla", __name__)

from app.sla import routes  # noqa: E402,F401

_installed = False


def install() -> None:
    """Subscribe the deadline queue and the board's realtime bridge to domain events (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    from app.sla import realtime, timer

    timer.install()
    realtime.install()
