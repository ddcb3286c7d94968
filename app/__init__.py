"""ChannelDesk: a customer-service desk for WeChat Channels shops.

``create_app(config)`` builds the Flask app: extensions, blueprints, the shop-scoping mechanism,
template helpers and CLI commands. Areas live in their own packages (auth, desk, orders, rules,
returns, sla, settings), each with a blueprint ``bp``.
"""

from __future__ import annotations

import gc
import logging
import re

from flask import Flask

from config import BASE_DIR, Config, config_from_env


def create_app(config: type[Config] | Config | None = None) -> Flask:
    config = config or config_from_env()
    config.validate()

    app = Flask(
        __name__,
        template_folder=str(BASE_DIR / "templates"),
        static_folder=str(BASE_DIR / "static"),
        instance_path=str(BASE_DIR / "instance"),
    )
    app.config.from_object(config)
    from app.ingest.webhooks import PushEndpoint

    # The platform's pushes are served ahead of Flask's request handling (app/ingest/webhooks.py).
    app.wsgi_app = PushEndpoint(app, app.wsgi_app)
    if app.config["PROXY_FIX_HOPS"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["PROXY_FIX_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    logging.basicConfig(level=app.config["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
    # urllib3 logs every request line at DEBUG, the platform's access_token in its query included.
    _redact_urllib3(logging.getLogger("urllib3.connectionpool"))

    from app import secretbox

    secretbox.init_app(app)

    _init_database(app)
    _init_web(app)
    _register_blueprints(app)

    from app import cli

    cli.register(app)
    return app


def freeze_startup_heap() -> int:
    """In a long-running process, once the app is built: collect, then move every object start-up
    made (modules, mappers, compiled templates, translations, the app) out of the cyclic garbage
    collector's sight (``gc.freeze``). Returns how many objects that was.

    They live as long as the process, but every full collection walked all of them again while
    every thread of the process waited: 45-150 ms each, about 150,000 objects in a web or worker
    process, several times during a start and now and then under load (at 100 messages a second
    one in the web process stalled every agent's events and every push for 89 ms). Frozen, a full
    collection walks what was made since: 14-24 ms in the web process under the same load.
    Only entry points call it (wsgi.py): tests build many apps in one process."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class _RedactTokens(logging.Filter):
    """Rewrites ``access_token=...`` (and the push signature's fields) in a record to ``***``."""

    PATTERN = re.compile(r"((?:access_token|msg_signature|signature)=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.PATTERN.sub(r"\1***", record.msg)
        return True


def _redact_urllib3(logger: logging.Logger) -> None:
    if not any(isinstance(f, _RedactTokens) for f in logger.filters):
        logger.addFilter(_RedactTokens())


def _init_database(app: Flask) -> None:
    from app import tenancy
    from app.extensions import db, migrate
    from app.models import Shop

    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///"):
        # The default database file lives in instance/; make sure the folder exists.
        (BASE_DIR / "instance").mkdir(exist_ok=True)
    if not uri.startswith("sqlite"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "pool_size": app.config["DB_POOL_SIZE"],
            "max_overflow": app.config["DB_MAX_OVERFLOW"],
            **app.config["SQLALCHEMY_ENGINE_OPTIONS"],
        }
    db.init_app(app)
    # render_as_batch lets Alembic alter tables on SQLite (copy-and-move), a no-op elsewhere.
    migrate.init_app(app, db, directory=str(BASE_DIR / "migrations"), render_as_batch=True, compare_type=True)
    tenancy.install(Shop)

    from app import dbsetup

    dbsetup.install_sqlite_pragmas()
    with app.app_context():
        dbsetup.ping_when_idle(db.engine)


def _init_web(app: Flask) -> None:
    from app import i18n, web
    from app.auth import access
    from app.extensions import csrf, limiter, login_manager, socketio

    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    access.init_app(app)
    i18n.init_app(app)
    web.init_app(app)
    from app.desk import install as install_desk
    from app.desk import sockets

    install_desk()
    from app.orders import install as install_orders

    install_orders()
    from app.sla import install as install_sla

    install_sla()
    from app.desk import realtime

    sockets.register()  # before init_app: handlers are bound to each new server from the list
    manager = realtime.client_manager(app)
    # The extension keeps options across init_app calls (tests build many apps): start clean.
    for option in ("client_manager", "message_queue", "channel"):
        socketio.server_options.pop(option, None)
    queue = {"client_manager": manager} if manager is not None else {}
    socketio.init_app(app, logger=False, engineio_logger=False, **queue)


def _register_blueprints(app: Flask) -> None:
    from app.auth import bp as auth_bp
    from app.desk import bp as desk_bp
    from app.orders import bp as orders_bp
    from app.returns import bp as returns_bp
    from app.rules import bp as rules_bp
    from app.settings import bp as settings_bp
    from app.sla import bp as sla_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(desk_bp)
    app.register_blueprint(orders_bp, url_prefix="/after-sales")
    app.register_blueprint(rules_bp, url_prefix="/rules")
    app.register_blueprint(returns_bp, url_prefix="/return-addresses")
    app.register_blueprint(sla_bp, url_prefix="/sla")
    app.register_blueprint(settings_bp, url_prefix="/settings")
    from app.desk.api import bp as desk_api_bp

    app.register_blueprint(desk_api_bp)
    from app.orders.api import bp as orders_api_bp

    app.register_blueprint(orders_api_bp)
    from app.sla.routes import api_bp as sla_api_bp

    app.register_blueprint(sla_api_bp)
    if app.config.get("SIMULATOR_ENABLED"):
        _mount_simulator(app)


def _mount_simulator(app: Flask) -> None:
    """The bundled platform simulator under /sim (development and demo only; never in production)."""
    from app.extensions import csrf
    from app.platform.simulator import Simulator
    from app.platform.simulator.api import bp as simulator_bp

    if app.config["ENV_NAME"] == "production":
        raise RuntimeError("the platform simulator must not run in production")
    Simulator.create().mount(app, url_prefix="/sim")
    csrf.exempt(simulator_bp)
