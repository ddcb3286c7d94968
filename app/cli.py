"""Command-line tools: `flask users ...`, `flask shops ...`, `flask demo ...`."""

from __future__ import annotations

import contextlib
import logging
import os

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup
from flask_babel import force_locale
from sqlalchemy.orm import undefer_group
from sqlalchemy.orm.attributes import flag_modified

from app import secretbox
from app.extensions import db
from app.models import AutoReplyConfig, QuickReply, Role, Shop, User
from app.settings import services

users_cli = AppGroup("users", help="Manage desk users (agents, supervisors, admins).")
shops_cli = AppGroup("shops", help="Manage connected shops.")
demo_cli = AppGroup("demo", help="Demo data for a fresh installation.")


def register(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(shops_cli)
    app.cli.add_command(demo_cli)
    app.cli.add_command(serve_command)
    app.cli.add_command(scheduler_command)
    app.cli.add_command(workers_command)
    app.cli.add_command(simulator_cli)
    app.cli.add_command(sync_command)
    from app.returns.cli import returns_cli
    from app.sla.cli import sla_cli

    app.cli.add_command(returns_cli)
    from app.rules.cli import rules_cli

    app.cli.add_command(rules_cli)
    app.cli.add_command(sla_cli)


@click.command("scheduler")
def scheduler_command():
    """Run the background jobs (pollers, inbox, queue) in this process, in the foreground (production).

    With REDIS_URL, run two or more: one leads (holds the Redis lease) and runs the jobs, the
    others wait and take over within seconds when it stops or dies. Without Redis, run only one.
    """
    from app import scheduler
    from app.sla import timer

    app = current_app._get_current_object()
    _start_background_workers(app)
    if not app.config.get("REDIS_URL"):
        from apscheduler.schedulers.blocking import BlockingScheduler

        timer.start(app)  # the reply clocks' deadline queue
        click.echo("scheduler running without Redis: no leader lock, run only one of these")
        scheduler.configure(app, BlockingScheduler(timezone="UTC", job_defaults=scheduler.JOB_DEFAULTS)).start()
        return
    _run_led_scheduler(app)


def _run_led_scheduler(app) -> None:
    """Jobs paused until this process holds the lease; paused again the moment it is lost."""
    import signal
    import threading

    from apscheduler.schedulers.background import BackgroundScheduler

    from app import leader, scheduler
    from app.ingest import worker
    from app.sla import timer

    config = app.config
    lease = config["SCHEDULER_LEASE_SECONDS"]
    renew = min(config["SCHEDULER_RENEW_SECONDS"], lease / 3)
    lead = leader.Leadership(leader.redis_client(config["REDIS_URL"], lease), leader.lock_key(config), lease)
    scheduler.leadership = lead
    # The reply clocks' deadline queue runs in every scheduler, standbys too: each breach, warning and
    # reassignment is claimed once (UPDATE ... WHERE outcome = 'open' RETURNING), so a standby adds no
    # duplicate and a failover needs no hand-over of timers.
    timer.start(app)
    jobs = scheduler.configure(app, BackgroundScheduler(timezone="UTC", job_defaults=scheduler.JOB_DEFAULTS))
    jobs.start(paused=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    click.echo(f"scheduler {lead.identity} waiting for the lead (lease {lease:g} s)")
    running = False
    try:
        while not stopping.is_set():
            if lead.tick() != running:
                running = not running
                if running:
                    click.echo(f"scheduler {lead.identity} leads: jobs running")
                    jobs.resume()
                else:
                    click.echo(f"scheduler {lead.identity} lost the lead: jobs paused")
                    jobs.pause()
            stopping.wait(renew)
    finally:
        jobs.pause()
        # Let a running job finish (its advisory lock keeps the next leader from starting it
        # twice meanwhile), then hand the lead over at once rather than after the lease.
        jobs.shutdown(wait=True)
        worker.stop_workers(app)  # finish claimed batches before handing over
        timer.stop(app)
        lead.release()
        click.echo(f"scheduler {lead.identity} stopped")


def _start_background_workers(app) -> None:
    """Inbox and outbox workers in a process that serves no browsers: woken by the web processes
    through Redis, emitting to browsers through Redis (write-only)."""
    from app.desk import realtime
    from app.ingest import worker

    realtime.use_write_only(app)
    worker.start_workers(app)
    worker.listen_for_wakes(app)


@click.command("workers")
def workers_command():
    """Work the inbox and outbox in this process (any number of these; web processes then run none:
    set INBOX_WORKERS_IN_WEB=0). Takes the load of handling pushes and replies off the web processes."""
    import signal
    import threading

    app = current_app._get_current_object()
    _start_background_workers(app)
    click.echo("workers running: inbox and outbox, woken through Redis")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopping.wait()
    from app.ingest import worker

    worker.stop_workers(app)  # finish claimed batches: nothing waits out a claim lease after a deploy


@click.command("sync")
@click.argument("kind", type=click.Choice(["orders", "after_sales", "addresses", "all"]))
@click.option("--shop", "shop_refs", multiple=True, help="Shop id or appid (default: every active shop).")
def sync_command(kind, shop_refs):
    """Poll the platform now (what the scheduler does on its own) and print what was read."""
    from app.ingest.pollers import SYNCS

    shops = _shops_by_ref(shop_refs) if shop_refs else db.session.scalars(sa.select(Shop).where(Shop.is_active)).all()
    for shop in shops:
        for name in SYNCS if kind == "all" else [kind]:
            result = SYNCS[name](shop)
            state = "; ".join(result.errors) if result.errors else "ok"
            click.echo(f"{shop.name} {name}: listed {result.listed}, changed {result.changed}, {state}")


simulator_cli = AppGroup("simulator", help="The bundled platform simulator on a port of its own.")


@simulator_cli.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@click.option(
    "--shop",
    "shops",
    multiple=True,
    metavar="APPID:SECRET:TOKEN:AESKEY[:PUSH_URL]",
    help="Register a shop (repeatable). PUSH_URL may contain ':'.",
)
@click.option("--burst", type=int, default=0, help="Play a livestream burst of N orders on every shop.")
@click.option("--seconds", type=float, default=300.0, show_default=True, help="Duration of the burst.")
@click.option(
    "--retry-delays",
    default=None,
    help="Seconds between re-sends of an unacknowledged push, comma separated (default: the platform's, "
    "5 s up to 2 h; tests compress them).",
)
def simulator_run_command(host, port, shops, burst, seconds, retry_delays):
    """Serve the simulated platform (platform paths at the root, control API under /_sim)."""
    from werkzeug.serving import run_simple

    from app.platform.simulator import Simulator, create_simulator_app
    from app.platform.simulator.scenario import Burst

    if retry_delays:
        try:
            delays = tuple(float(d) for d in retry_delays.split(","))
        except ValueError:
            raise click.BadParameter("comma-separated seconds, e.g. 0.5,1,2", param_hint="--retry-delays") from None
        simulator = Simulator.create(retry_delays=delays)
    else:
        simulator = Simulator.create()
    for spec in shops:
        appid, secret, token, aes_key, *rest = spec.split(":", 4)
        sim_shop = simulator.platform.add_shop(appid, secret, token, aes_key, rest[0] if rest else None)
        click.echo(f"simulating shop {appid} (pushes to {sim_shop.push_url or 'nowhere: polling only'})")
        if burst:
            Burst(simulator.platform, sim_shop, orders=burst, seconds=seconds).start()
    click.echo(f"platform simulator on http://{host}:{port}/")
    run_simple(host, port, create_simulator_app(simulator), threaded=True)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def serve_command(host, port):
    """Serve the desk with Socket.IO in this one process (demo and development).

    Production runs gunicorn (docs/deploy.md); this uses Werkzeug's threaded server, which speaks
    WebSocket through simple-websocket.
    """
    from app import embedded
    from app.extensions import socketio

    app = current_app._get_current_object()
    # One line per request (the simulator's included, tokens in their URLs) drowns the demo's log.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    embedded.start(app, host, port)
    # Flask refuses app.run() inside its CLI (it expects `flask run`); this command is the server.
    os.environ.pop("FLASK_RUN_FROM_CLI", None)
    click.echo(f"ChannelDesk on http://{host}:{port}/")
    socketio.run(
        current_app._get_current_object(),
        host=host,
        port=port,
        debug=False,
        use_reloader=False,
        allow_unsafe_werkzeug=True,
    )


def _cli_error(exc: services.ValidationError) -> click.ClickException:
    # Operators read the command line in English, whatever the UI's default language.
    with force_locale("en"):
        return click.ClickException(f"{exc.field}: {exc.message}")


def _shops_by_ref(refs: tuple[str, ...]) -> list[Shop]:
    found = []
    for ref in refs:
        stmt = sa.select(Shop).where(Shop.id == int(ref)) if ref.isdigit() else sa.select(Shop).where(Shop.appid == ref)
        shop = db.session.scalar(stmt)
        if shop is None:
            raise click.BadParameter(f"no shop with id or appid {ref!r}", param_hint="--shop")
        found.append(shop)
    return found


@users_cli.command("create")
@click.argument("username")
@click.option("--name", "display_name", default="", help="Display name (default: the username).")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.AGENT.value, show_default=True)
@click.option("--shop", "shop_refs", multiple=True, help="Shop id or appid this user serves (repeatable).")
@click.option("--capacity", type=int, default=10, show_default=True, help="Open conversations at once.")
@click.option("--language", type=click.Choice(["zh_CN", "en"]), default="zh_CN", show_default=True)
@click.password_option(help="Password (prompted when omitted).")
def create_user_command(username, display_name, role, shop_refs, capacity, language, password):
    """Create a desk user."""
    try:
        user = services.create_user(
            username=username,
            display_name=display_name or username,
            password=password,
            role=Role(role),
            shops=_shops_by_ref(shop_refs),
            capacity=capacity,
            language=language,
        )
    except services.ValidationError as exc:
        raise _cli_error(exc) from None
    db.session.commit()
    click.echo(f"created {user.role.value} {user.username} (id {user.id}) serving {[s.name for s in user.shops]}")


@users_cli.command("list")
def list_users_command():
    """List users with their role and shops."""
    for user in db.session.scalars(sa.select(User).order_by(User.id)):
        state = "" if user.is_active else " (inactive)"
        click.echo(f"{user.id}\t{user.username}\t{user.role.value}\t{','.join(s.name for s in user.shops)}{state}")


@shops_cli.command("add")
@click.option("--name", required=True)
@click.option("--appid", required=True)
@click.option("--secret", "app_secret", required=True, help="AppSecret.")
@click.option("--token", "push_token", required=True, help="Push Token.")
@click.option("--aes-key", "encoding_aes_key", required=True, help="EncodingAESKey (43 characters).")
@click.option("--api-base", "api_base_url", default=None, help="API base URL (default: the real platform).")
@click.option("--timezone", default="Asia/Shanghai", show_default=True)
def add_shop_command(name, appid, app_secret, push_token, encoding_aes_key, api_base_url, timezone):
    """Connect a shop (self-built mode credentials from the shop's back office)."""
    try:
        shop = services.create_shop(
            services.ShopInput(
                name=name,
                appid=appid,
                app_secret=app_secret,
                push_token=push_token,
                encoding_aes_key=encoding_aes_key,
                api_base_url=api_base_url or current_app.config["PLATFORM_API_BASE"],
                timezone=timezone,
            )
        )
    except services.ValidationError as exc:
        raise _cli_error(exc) from None
    db.session.commit()
    click.echo(f"added shop {shop.name} (id {shop.id}); push URL path: /webhooks/{shop.webhook_key}")


@shops_cli.command("list")
def list_shops_command():
    """List shops (secrets masked)."""
    for shop in db.session.scalars(sa.select(Shop).order_by(Shop.id)):
        click.echo(
            f"{shop.id}\t{shop.name}\t{shop.appid}\tsecret {secretbox.mask(shop.app_secret)}\t"
            f"{shop.api_base_url}\t/webhooks/{shop.webhook_key}"
        )


@shops_cli.command("rekey")
def rekey_command():
    """Re-encrypt every stored credential with the newest CREDENTIALS_KEYS key."""
    shops = db.session.scalars(sa.select(Shop).options(undefer_group("credentials"))).all()
    for shop in shops:
        # Loading decrypted with any key of the ring; a flush re-encrypts with the first.
        for field in ("app_secret", "push_token", "encoding_aes_key"):
            flag_modified(shop, field)
    db.session.commit()
    click.echo(f"re-encrypted credentials of {len(shops)} shop(s)")


# Demo installation: fixed credentials so the bundled simulator can sign its pushes.
DEMO_SHOP = {
    "name": "演示小店",
    "appid": "wxd3m0c4a7e1d2b9f0",
    "app_secret": "demo-app-secret-0123456789abcdef",
    "push_token": "demopushtoken",
    "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
}
DEMO_USERS = [
    ("agent", "客服小王", Role.AGENT),
    ("supervisor", "主管老李", Role.SUPERVISOR),
    ("admin", "管理员", Role.ADMIN),
]
DEMO_PASSWORD_ENV = "DEMO_PASSWORD"


@demo_cli.command("seed")
@click.option(
    "--password", envvar=DEMO_PASSWORD_ENV, default="channeldesk", show_default=True, help="Password of the demo users."
)
def seed_command(password):
    """Create the demo shop (pointing at the bundled simulator) and demo users, once."""
    if current_app.config["ENV_NAME"] == "production":
        raise click.ClickException("demo data has public credentials: refused in production")
    shop = db.session.scalar(sa.select(Shop).where(Shop.appid == DEMO_SHOP["appid"]))
    if shop is None:
        shop = services.create_shop(services.ShopInput(api_base_url=current_app.config["SIMULATOR_URL"], **DEMO_SHOP))
        shop.is_demo = True
        click.echo(f"created demo shop {shop.name} -> {shop.api_base_url}")
    for username, display_name, role in DEMO_USERS:
        if db.session.scalar(sa.select(User.id).where(User.username == username)) is None:
            services.create_user(
                username=username, display_name=display_name, password=password, role=role, shops=[shop]
            )
            click.echo(f"created demo {role.value}: {username} / {password}")
    _seed_replies(shop)
    # The default rule, switched on in dry run: the decision log fills with what it would have done.
    from app.rules.cli import install_default

    install_default(shop)
    db.session.commit()


DEMO_QUICK_REPLIES = [
    ("hi", "问候", "亲，您好！我是客服，很高兴为您服务，请问有什么可以帮您？"),
    ("ship", "发货时间", "亲，您的订单会在48小时内发货，发货后可在订单详情查看物流。"),
    ("size", "尺码建议", "亲，告诉我您的身高体重，我帮您推荐合适的尺码哦。"),
    ("refund", "退款说明", "亲，退款申请已收到，审核通过后款项会原路退回，一般1-3个工作日到账。"),
]


def _seed_replies(shop: Shop) -> None:
    """Shop-wide quick replies and auto-reply texts (switched off: a supervisor turns them on)."""
    for shortcut, title, content in DEMO_QUICK_REPLIES:
        exists = db.session.scalar(
            sa.select(QuickReply.id).where(
                QuickReply.shop_id == shop.id, QuickReply.owner_id.is_(None), QuickReply.shortcut == shortcut
            )
        )
        if exists is None:
            db.session.add(QuickReply(shop_id=shop.id, shortcut=shortcut, title=title, content=content))
    if db.session.scalar(sa.select(AutoReplyConfig.id).where(AutoReplyConfig.shop_id == shop.id)) is None:
        db.session.add(
            AutoReplyConfig(
                shop_id=shop.id,
                welcome_text="亲，欢迎光临演示小店！客服马上为您服务～",
                busy_text="亲，客服都在忙，您已进入排队，请稍候，我们会尽快回复您。",
                off_hours_text="亲，现在是非工作时间（09:00-22:00），我们上班后会第一时间回复您。",
            )
        )
