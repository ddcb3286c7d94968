"""The agent console: page, JSON API, socket namespace, assignment, replies and auto-replies."""

from flask import Blueprint

bp = Blueprint("desk", __name__)

from app.desk import routes  # noqa: E402,F401

_installed = False


def install() -> None:
    """Subscribe the console to domain events and register its outbox handler (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    from app.desk import conversations, intake, realtime  # noqa: F401 (conversations registers sendmsg)

    intake.install()
    realtime.install()
