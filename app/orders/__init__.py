"""Orders and after-sales: the console's order sidebar, after-sale actions, the after-sale queue."""

from flask import Blueprint

bp = Blueprint("orders", __name__)

from app.orders import routes  # noqa: E402,F401

_installed = False


def install() -> None:
    """Register the after-sale outbox handler and the sidebar's realtime subscriber (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    from app.orders import actions, realtime  # noqa: F401 (actions registers its outbox handler)

    realtime.install()
    from app.rules import live

    live.init_app()
