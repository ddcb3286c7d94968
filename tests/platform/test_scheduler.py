"""The scheduler keeps one poller job per active shop and kind; the simulator runs on its own port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests
from apscheduler.schedulers.background import BackgroundScheduler

from app import scheduler as jobs
from app.extensions import db
from app.models import Shop
from tests.e2e.conftest import _free_port
from tests.factories import make_shop
from tests.platform.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_reconcile_adds_and_removes_per_shop_jobs(app):
    with app.app_context():
        first, second = make_shop("一号店"), make_shop("二号店")
        db.session.commit()
        ids = (first.id, second.id)
    sched = jobs.configure(app, BackgroundScheduler(timezone="UTC", job_defaults=jobs.JOB_DEFAULTS))
    sched.start(paused=True)  # jobs get their defaults when the scheduler starts; paused: none runs
    jobs.reconcile_job(sched)
    names = {job.id for job in sched.get_jobs()}
    assert {f"sync:{kind}:{shop}" for kind in ("orders", "after_sales", "addresses") for shop in ids} <= names
    assert {"shops:reconcile", "inbox:drain"} <= names
    orders_job = sched.get_job(f"sync:orders:{ids[0]}")
    assert orders_job.trigger.interval.total_seconds() == app.config["POLL_ORDERS_SECONDS"]
    assert orders_job.max_instances == 1 and orders_job.misfire_grace_time is None, "late runs still run"
    with app.app_context():
        db.session.get(Shop, ids[1]).is_active = False
        db.session.commit()
    jobs.reconcile_job(sched)
    assert not any(job.id.endswith(f":{ids[1]}") for job in sched.get_jobs())
    sched.shutdown(wait=False)


def test_the_simulator_serves_on_its_own_port(tmp_path):
    port = _free_port()
    spec = "wx00000000000000cc:sim-secret:tok:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    env = {
        **os.environ,
        "FLASK_APP": "wsgi",
        "CHANNELDESK_CONFIG": "development",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "simulator", "run", "--port", str(port), "--shop", spec],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/cgi-bin/stable_token"
        body = {"grant_type": "client_credential", "appid": "wx00000000000000cc", "secret": "sim-secret"}

        def answered():
            try:
                return requests.post(url, json=body, timeout=1).ok
            except requests.ConnectionError:
                return False

        assert wait_until(answered, timeout=20)
        token = requests.post(url, json=body, timeout=5).json()
        assert token["errcode"] == 0 and len(token["access_token"]) > 32 and token["expires_in"] > 7000
        wrong = requests.post(url, json={**body, "secret": "nope"}, timeout=5).json()
        assert wrong["errcode"] != 0
    finally:
        process.terminate()
        process.wait(timeout=10)
