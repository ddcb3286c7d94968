"""Faults in the production shape: two web processes, a workers process, two schedulers (one leads),
the platform simulator, PostgreSQL and a Redis server of the test's own, all real processes on
loopback ports started and stopped here.

Runs in the PostgreSQL half of `make test` (CHANNELDESK_TEST_DB); skipped loudly without it or
without redis-server.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
import uuid

import pytest
import redis as redis_lib
import requests
import sqlalchemy as sa

from tests.prod.cluster import Cluster, RedisServer, wait_for

PG_ADMIN = os.environ.get("CHANNELDESK_TEST_DB", "")
PUSHED = "wx5eed00000000000a01"  # pushes to web A
POLLED = "wx5eed00000000000b02"  # no pushes: pollers only
pytestmark = [pytest.mark.db, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not PG_ADMIN.startswith("postgresql"):
        pytest.skip("runs in the PostgreSQL half of make test (CHANNELDESK_TEST_DB)")
    if not RedisServer.available():
        pytest.skip("!!! redis-server is not installed: production fault tests SKIPPED !!!")
    from app.testing import temporary_database

    workdir = tmp_path_factory.mktemp("cluster")
    redis = RedisServer(workdir)
    redis.start()
    database = temporary_database(PG_ADMIN, "channeldesk_faults")
    url = database.__enter__()
    # Pollers every second: ten missed runs are ten minutes at the production interval.
    settings = {"POLL_ORDERS_SECONDS": "1", "POLL_AFTER_SALES_SECONDS": "1", "POLL_ADDRESSES_SECONDS": "30"}
    settings |= {"SYNC_SETTLE_SECONDS": "0", "SYNC_OVERLAP_SECONDS": "5", "PLATFORM_READ_TIMEOUT": "2"}
    settings |= {"PLATFORM_MAX_ATTEMPTS": "2", "PLATFORM_BACKOFF_BASE": "0.05"}
    # A killed worker's claimed pushes come back after 10 s, not the production 5 minutes.
    settings |= {"INBOX_LEASE_SECONDS": "10"}
    c = Cluster(workdir, url, redis, **settings)
    try:
        c.migrate()
        c.add_shop("推送店", PUSHED, "pushtoken1")
        c.add_shop("轮询店", POLLED, "polltoken2")
        c.agent_id = c.add_agent("faults", [PUSHED, POLLED])
        c.start_web("web_a")
        c.start_web("web_b")
        c.start_simulator({PUSHED: "web_a", POLLED: None})
        c.start_workers()
        c.start_standby("sched_1")
        c.start_standby("sched_2")
        assert wait_for(lambda: c.health("web_a")["scheduler"].get("leader"), timeout=20), "no scheduler leads"
        yield c
    finally:
        c.stop_all()
        redis.stop()
        database.__exit__(None, None, None)


def _stored_messages(c: Cluster, msg_ids: list[str]) -> dict[str, int]:
    with c.engine().connect() as conn:
        rows = conn.execute(
            sa.text("SELECT platform_msg_id, count(*) FROM messages WHERE platform_msg_id = ANY(:ids) GROUP BY 1"),
            {"ids": msg_ids},
        ).all()
    return dict(rows)


def _stored_orders(c: Cluster, order_ids: list[str]) -> dict[str, int]:
    with c.engine().connect() as conn:
        rows = conn.execute(
            sa.text("SELECT order_id, count(*) FROM orders WHERE order_id = ANY(:ids) GROUP BY 1"), {"ids": order_ids}
        ).all()
    return dict(rows)


def _stored_after_sales(c: Cluster, ids: list[str]) -> dict[str, int]:
    with c.engine().connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT after_sale_order_id, count(*) FROM after_sales WHERE after_sale_order_id = ANY(:ids) GROUP BY 1"
            ),
            {"ids": ids},
        ).all()
    return dict(rows)


def _events(received: list, name: str) -> list[dict]:
    return [data for _, event, data in list(received) if event == name]


def _heard(received: list, text: str) -> bool:
    return any((d.get("message") or {}).get("text") == text for d in _events(received, "conversation.updated"))


def test_a_push_to_web_a_reaches_an_agent_on_web_b(cluster):
    received: list = []
    client = cluster.agent_socket("web_b", cluster.sign_in("web_b", "faults"), received)
    try:
        text = f"跨进程 {uuid.uuid4().hex[:6]}"
        cluster.sim("buyer_message", appid=PUSHED, openid="o_cross", text=text)
        assert wait_for(lambda: _heard(received, text), timeout=20), [e for _, e, _ in received]
    finally:
        client.disconnect()


def test_killing_a_web_process_mid_burst_loses_and_doubles_nothing(cluster):
    """kill -9 the web process the platform pushes to, in the middle of a burst, and start it again
    (as systemd would): pushes it did not acknowledge are sent again by the platform; every message
    and order is stored exactly once."""
    sent: list[str] = []
    orders: list[str] = []
    after_sales: list[str] = []
    before = cluster.push_counters()

    def burst():
        for i in range(160):
            payload = cluster.sim("buyer_message", appid=PUSHED, openid=f"o_burst_{i % 20}", text=f"连发 {i}")
            sent.append(payload["msg_id"])
            if i % 8 == 0:
                orders.append(cluster.sim("order", appid=PUSHED, openid=f"o_burst_{i % 20}")["order_id"])
            if i % 16 == 4:
                opened = cluster.sim("after_sale", appid=PUSHED, order_id=orders[-1], kind="REFUND")
                after_sales.append(opened["after_sale_order_id"])
            time.sleep(0.02)

    sender = threading.Thread(target=burst)
    sender.start()
    assert wait_for(lambda: len(sent) >= 40, timeout=30)
    cluster.kill("web_a", signal.SIGKILL)
    killed_at = len(sent)
    time.sleep(1.5)
    cluster.restart("web_a")
    sender.join(timeout=120)
    assert not sender.is_alive()
    assert killed_at < len(sent), "the kill did not happen mid-burst"
    assert wait_for(cluster.pushes_settled, timeout=90), cluster.push_counters()
    assert wait_for(lambda: len(_stored_messages(cluster, sent)) == len(sent), timeout=60)
    stored = _stored_messages(cluster, sent)
    assert set(stored) == set(sent) and set(stored.values()) == {1}, "a message was lost or doubled"
    assert wait_for(lambda: len(_stored_orders(cluster, orders)) == len(orders), timeout=60)
    assert set(_stored_orders(cluster, orders).values()) == {1}
    assert wait_for(lambda: len(_stored_after_sales(cluster, after_sales)) == len(after_sales), timeout=60)
    assert set(_stored_after_sales(cluster, after_sales).values()) == {1}
    counters = cluster.push_counters()
    assert counters["failed_attempts"] > before["failed_attempts"], "no push was refused: nothing was tested"
    assert counters["dropped"] == before["dropped"] == 0
    with cluster.engine().connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM inbox_events WHERE status = 'failed'")) == 0


def _runs(cluster: Cluster) -> list[dict]:
    client = redis_lib.Redis.from_url(cluster.redis.url)
    return [json.loads(r) for r in client.lrange(f"{cluster.env['SOCKETIO_CHANNEL']}:scheduler:runs", 0, -1)]


def _overlaps(runs: list[dict]) -> list[tuple[dict, dict]]:
    by_job: dict[str, list[dict]] = {}
    for run in runs:
        by_job.setdefault(run["job"], []).append(run)
    clashes = []
    for job_runs in by_job.values():
        job_runs.sort(key=lambda r: r["start"])
        clashes += [(a, b) for a, b in itertools.pairwise(job_runs) if b["start"] < a["end"]]
    return clashes


def _new_leader(cluster: Cluster, old: str) -> str | None:
    """The scheduler leading once it is another than ``old`` (within 15 s), else None."""

    def other() -> str | None:
        lead = cluster.health("web_a")["scheduler"].get("leader")
        return lead if lead and lead != old else None

    return wait_for(other, timeout=15, interval=0.1)


def test_killing_the_scheduler_leader_hands_over_within_ten_seconds(cluster):
    """kill -9 the leading scheduler while orders keep coming on a shop that is only polled: the
    standby leads within 10 s, no job ever ran twice at once, and every order arrives once."""
    leader = cluster.health("web_a")["scheduler"]["leader"]
    pid = int(leader.split(":")[1])
    name = next(n for n, p in cluster.processes.items() if p.pid == pid)
    orders = [cluster.sim("order", appid=POLLED, openid=f"o_poll_{i}")["order_id"] for i in range(5)]
    time.sleep(1.0)
    cluster.kill(name, signal.SIGKILL)
    killed = time.monotonic()
    orders += [cluster.sim("order", appid=POLLED, openid=f"o_poll_{i}")["order_id"] for i in range(5, 10)]
    after_sales = [
        cluster.sim("after_sale", appid=POLLED, order_id=order_id, kind="REFUND")["after_sale_order_id"]
        for order_id in orders[3:7]
    ]
    new = _new_leader(cluster, leader)
    failover = time.monotonic() - killed
    assert new, "no standby took over"
    assert failover <= 10, f"failover took {failover:.1f} s"
    assert wait_for(lambda: len(_stored_orders(cluster, orders)) == len(orders), timeout=30)
    assert set(_stored_orders(cluster, orders).values()) == {1}
    assert wait_for(lambda: len(_stored_after_sales(cluster, after_sales)) == len(after_sales), timeout=30)
    assert set(_stored_after_sales(cluster, after_sales).values()) == {1}
    # The new leader runs the jobs now; no job ran twice at once across the change.
    assert wait_for(lambda: any(r["by"] == new and r["job"].startswith("sync:") for r in _runs(cluster)), timeout=15)
    runs = _runs(cluster)
    assert {r["by"] for r in runs} >= {leader, new}
    assert _overlaps(runs) == []
    cluster.start_standby(name)  # back as the standby


def test_a_redis_restart_degrades_realtime_but_loses_nothing(cluster):
    """Redis goes away and comes back (same port, empty: nothing of ours lives only there): pushes
    are stored meanwhile, sign-in still works, /healthz says degraded, the consoles are told to re-sync
    and find the message they missed; live events and the scheduler's lead come back."""
    received: list = []
    http = cluster.sign_in("web_b", "faults")
    client = cluster.agent_socket("web_b", http, received)
    try:
        first = f"Redis 之前 {uuid.uuid4().hex[:6]}"
        cluster.sim("buyer_message", appid=PUSHED, openid="o_redis", text=first)
        assert wait_for(lambda: _heard(received, first), timeout=20)
        conversation = _events(received, "conversation.updated")[-1]["conversation"]
        seen_seq = conversation["last_seq"]

        cluster.redis.stop()
        during = cluster.sim("buyer_message", appid=PUSHED, openid="o_redis", text="Redis 不在的时候")
        assert wait_for(lambda: _stored_messages(cluster, [during["msg_id"]]), timeout=30), "not stored"
        answer = requests.get(f"{cluster.url('web_a')}/healthz", timeout=10)
        assert answer.status_code == 200 and answer.json()["status"] == "degraded"
        assert answer.json()["redis"]["ok"] is False
        cluster.sign_in("web_a", "faults")  # throttling falls back to memory, sign-in still works

        cluster.redis.start()
        assert wait_for(lambda: _events(received, "resync"), timeout=30), "the console was not told to re-sync"
        missed = http.get(
            f"{cluster.url('web_b')}/api/conversations/{conversation['id']}/messages",
            params={"after_seq": seen_seq},
            timeout=10,
        ).json()["messages"]
        assert [m["text"] for m in missed] == ["Redis 不在的时候"]
        after = f"Redis 之后 {uuid.uuid4().hex[:6]}"
        cluster.sim("buyer_message", appid=PUSHED, openid="o_redis", text=after)
        assert wait_for(lambda: _heard(received, after), timeout=30), "live events did not come back"
        assert wait_for(lambda: cluster.health("web_a")["scheduler"].get("leader"), timeout=20)
        assert requests.get(f"{cluster.url('web_a')}/healthz", timeout=10).status_code == 200
    finally:
        client.disconnect()


def test_the_platform_down_for_ten_poll_intervals_is_caught_up(cluster):
    """The platform refuses everything (HTTP 503, no pushes) for ten poller intervals while orders
    and buyer messages keep happening there; afterwards pollers and re-sent pushes bring all of it,
    once, and /healthz shows the failing poller meanwhile."""
    cluster.sim("outage", down=True)
    try:
        orders = [cluster.sim("order", appid=POLLED, openid=f"o_down_{i}")["order_id"] for i in range(8)]
        messages = [cluster.sim("buyer_message", appid=PUSHED, openid="o_down", text=f"宕机 {i}") for i in range(5)]
        time.sleep(10)  # ten runs of each poller, all refused
        pollers = {p["shop_id"]: p for p in cluster.health("web_a")["pollers"]}
        polled_id = cluster.shops[POLLED]["id"]
        assert "orders" in pollers[polled_id].get("failing", []), pollers
        assert not _stored_orders(cluster, orders)
    finally:
        cluster.sim("outage", down=False)
    assert wait_for(lambda: len(_stored_orders(cluster, orders)) == len(orders), timeout=60)
    assert set(_stored_orders(cluster, orders).values()) == {1}
    ids = [m["msg_id"] for m in messages]
    assert wait_for(lambda: len(_stored_messages(cluster, ids)) == len(ids), timeout=60)
    assert set(_stored_messages(cluster, ids).values()) == {1}
    assert wait_for(
        lambda: (
            "orders" not in {p["shop_id"]: p for p in cluster.health("web_a")["pollers"]}[polled_id].get("failing", [])
        ),
        timeout=20,
    )


def test_a_stalled_scheduler_leader_is_replaced_and_stands_down_when_it_wakes(cluster):
    """SIGSTOP the leading scheduler (a stalled VM, a long GC pause): the standby leads within 10 s;
    when the stalled one is let go again (SIGCONT) it finds its lease gone and runs no job while the
    other leads; no job ran twice at once and the orders placed meanwhile arrive once."""
    leader = cluster.health("web_a")["scheduler"]["leader"]
    pid = int(leader.split(":")[1])
    name = next(n for n, p in cluster.processes.items() if p.pid == pid)
    group = cluster.processes[name].pid
    os.killpg(group, signal.SIGSTOP)
    stalled = time.monotonic()
    try:
        orders = [cluster.sim("order", appid=POLLED, openid=f"o_stall_{i}")["order_id"] for i in range(5)]
        new = _new_leader(cluster, leader)
        failover = time.monotonic() - stalled
    finally:
        os.killpg(group, signal.SIGCONT)
    resumed = time.time()
    assert new, "no standby took over from the stalled leader"
    assert failover <= 10, f"failover took {failover:.1f} s"
    assert wait_for(lambda: len(_stored_orders(cluster, orders)) == len(orders), timeout=30)
    assert set(_stored_orders(cluster, orders).values()) == {1}
    time.sleep(3)  # the woken process has had time to try
    assert cluster.health("web_a")["scheduler"]["leader"] == new, "the woken process did not take the lead back"
    late = [r for r in _runs(cluster) if r["by"] == leader and r["start"] > resumed + 1.5]
    assert late == [], "the woken process ran jobs while another led"
    assert _overlaps(_runs(cluster)) == []


def test_killing_the_workers_process_mid_burst_loses_and_doubles_nothing(cluster):
    """kill -9 the `flask workers` process while a burst of buyer messages queues: the schedulers'
    inbox threads go on with new pushes, what the killed process had claimed comes back when its
    lease runs out (INBOX_LEASE_SECONDS, 10 s here), and every message is stored exactly once."""
    sent: list[str] = []
    for i in range(100):  # as fast as the simulator takes them: a backlog for the workers to claim
        sent.append(cluster.sim("buyer_message", appid=PUSHED, openid=f"o_wkill_{i % 25}", text=f"工人 {i}")["msg_id"])
    wait_for(lambda: _stored_messages(cluster, sent), timeout=10, interval=0.02)  # work has begun
    cluster.kill("workers", signal.SIGKILL)
    with cluster.engine().connect() as conn:
        held = conn.scalars(sa.text("SELECT id FROM inbox_events WHERE status = 'processing'")).all()
    for i in range(10):  # pushes after the kill: the schedulers' threads take them
        sent.append(cluster.sim("buyer_message", appid=PUSHED, openid=f"o_wkill_{i}", text="之后")["msg_id"])
    try:
        assert wait_for(lambda: len(_stored_messages(cluster, sent)) == len(sent), timeout=60)
        stored = _stored_messages(cluster, sent)
        assert set(stored) == set(sent) and set(stored.values()) == {1}, "a message was lost or doubled"
        with cluster.engine().connect() as conn:
            states = dict(conn.execute(sa.text(
                "SELECT status, count(*) FROM inbox_events WHERE id = ANY(:ids) GROUP BY 1"), {"ids": list(held)}
            ).all())
            assert conn.scalar(sa.text("SELECT count(*) FROM inbox_events WHERE status = 'failed'")) == 0
        assert set(states) <= {"done"}, f"the killed process's claims were not taken over: {states}"
    finally:
        cluster.start_workers()  # back, as systemd would start it
