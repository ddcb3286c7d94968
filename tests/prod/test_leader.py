"""Scheduler leadership (app/leader.py) on a real Redis server of the test's own, per-job locks
(app/scheduler.py) and what /healthz reports (app/health.py)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import redis as redis_lib

from app import leader
from app import scheduler as jobs
from app.db import utcnow
from app.extensions import db
from app.models import InboxEvent, SyncCursor
from tests.factories import make_shop
from tests.prod.cluster import RedisServer, free_port


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if not RedisServer.available():
        pytest.skip("!!! redis-server is not installed: leadership tests SKIPPED !!!")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(redis_server):
    client = redis_lib.Redis.from_url(redis_server.url)
    client.flushall()
    return client


def test_one_leads_the_other_waits_and_takes_over_when_the_lease_runs_out(client):
    first = leader.Leadership(client, "t:scheduler:leader", lease_seconds=0.6, identity="first")
    second = leader.Leadership(client, "t:scheduler:leader", lease_seconds=0.6, identity="second")
    assert first.tick() and first.holds()
    assert not second.tick() and not second.holds()
    assert first.tick(), "the leader keeps its lease by renewing it"
    status = leader.status(client, "t:scheduler:leader")
    assert status["leader"] == "first" and 0 <= status["lease_age_seconds"] < 1
    time.sleep(0.7)  # the leader stalls: no renewal within the lease
    assert not first.holds(), "a stalled leader stops counting itself leader before Redis expires it"
    assert second.tick() and second.holds()
    assert not first.tick(), "the old leader may not extend a lease that is no longer its own"
    assert leader.status(client, "t:scheduler:leader")["leader"] == "second"


def test_a_clean_stop_hands_over_at_once_and_only_the_owner_releases(client):
    first = leader.Leadership(client, "t:lock", lease_seconds=30, identity="first")
    second = leader.Leadership(client, "t:lock", lease_seconds=30, identity="second")
    assert first.tick()
    second.leader = True  # pretend: a confused process releasing what it does not own
    second.release()
    assert leader.status(client, "t:lock")["leader"] == "first"
    first.release()
    assert leader.status(client, "t:lock") == {"leader": None}
    assert second.tick()


def test_redis_unreachable_means_not_leading():
    unreachable = leader.redis_client(f"redis://127.0.0.1:{free_port()}/0", 1.0)
    lead = leader.Leadership(unreachable, "t:lock", lease_seconds=1.0)
    assert lead.tick() is False and not lead.holds()


def test_jobs_run_only_while_the_lease_is_held(app, client, monkeypatch):
    ran = []
    lead = leader.Leadership(client, "t:jobs", lease_seconds=5, identity="me")
    monkeypatch.setattr(jobs, "leadership", lead)
    monkeypatch.setattr(jobs, "_app", app)
    jobs.guarded("test:job", ran.append, 1)
    assert ran == [], "not leading: the job does not run"
    assert lead.tick()
    jobs.guarded("test:job", ran.append, 2)
    assert ran == [2]
    runs = client.lrange(leader.runs_key(app.config), 0, -1)
    assert any(b'"job": "test:job"' in r and b'"by": "me"' in r for r in runs)


def test_a_job_never_runs_twice_at_once(app):
    """On PostgreSQL an advisory lock per job: a second run while the first holds it is skipped."""
    jobs._app = app
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("advisory locks are PostgreSQL's; SQLite runs one process")
    inside, release, ran = threading.Event(), threading.Event(), []

    def slow():
        ran.append("slow")
        inside.set()
        release.wait(10)

    thread = threading.Thread(target=jobs.guarded, args=("test:once", slow))
    thread.start()
    assert inside.wait(10)
    jobs.guarded("test:once", lambda: ran.append("second"))
    release.set()
    thread.join(10)
    assert ran == ["slow"], "the second run started while the first was running"
    jobs.guarded("test:once", lambda: ran.append("third"))
    assert ran == ["slow", "third"], "the lock was not given back"


def test_healthz_reports_lagging_pollers_backlogs_and_is_not_secret(app, client):
    with app.app_context():
        shop = make_shop("健康店")
        db.session.flush()
        db.session.add(SyncCursor(shop_id=shop.id, kind="orders", synced_until=utcnow() - timedelta(hours=1)))
        db.session.add(InboxEvent(shop_id=shop.id, dedupe_key="k1", event="x", payload={}))
        db.session.commit()
        shop_id, secret = shop.id, shop.app_secret
    answer = app.test_client().get("/healthz")
    body = answer.get_json()
    assert answer.status_code == 200 and body["status"] == "degraded"
    poller = next(p for p in body["pollers"] if p["shop_id"] == shop_id)
    assert poller["lag_seconds"]["orders"] > 3500
    assert f"shop {shop_id} orders poller is behind" in body["warnings"]
    assert body["inbox"]["unfinished"] == 1 and body["inbox"]["oldest_seconds"] >= 0
    assert secret not in answer.get_data(as_text=True) and "健康店" not in answer.get_data(as_text=True)


def test_healthz_is_degraded_not_down_when_redis_is_configured_and_down(app, monkeypatch):
    """Without Redis the process still works (pushes stored, console served): 200, degraded, so a
    balancer does not take every web process out during a Redis restart."""
    monkeypatch.setitem(app.config, "REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    answer = app.test_client().get("/healthz")
    assert answer.status_code == 200
    assert answer.get_json()["redis"] == {"configured": True, "ok": False}
    assert answer.get_json()["status"] == "degraded"
    assert any("redis" in w for w in answer.get_json()["warnings"])


def test_healthz_shows_the_leader(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "REDIS_URL", _url(client))
    lead = leader.Leadership(client, leader.lock_key(app.config), lease_seconds=5, identity="host:1:abc")
    assert lead.tick()
    scheduler = app.test_client().get("/healthz").get_json()["scheduler"]
    assert scheduler["mode"] == "leased" and scheduler["leader"] == "host:1:abc"
    assert scheduler["lease_left_seconds"] > 3


def _url(client) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def test_healthz_warns_when_no_scheduler_leads(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "REDIS_URL", _url(client))
    body = app.test_client().get("/healthz").get_json()
    assert body["scheduler"] == {"mode": "leased", "leader": None}
    assert body["status"] == "degraded" and "no scheduler holds the lead" in body["warnings"]
