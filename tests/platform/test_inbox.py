"""The inbox under trouble: leases taken over, blocked APIs, failures inside the unit of work."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa

from app.db import BOTH_LANES, FIRST_LANE, utcnow
from app.extensions import db
from app.ingest import inbox, pollers, store
from app.models import AfterSale, ApiBlock, Conversation, InboxEvent, InboxStatus, Message, Order, Shop
from app.platform.simulator.scenario import CATALOGUE, new_buyer
from app.platform.simulator.state import NOT_FOUND, ApiError
from tests.factories import make_shop
from tests.platform.conftest import connect_shop
from tests.statements import plan_rows, statements


def _message(msg_id: str, create_time: int | None = None) -> dict:
    return {
        "ToUserName": "wx",
        "FromUserName": "o_buyer_1",
        "CreateTime": create_time or int(utcnow().timestamp()),
        "MsgType": "event",
        "Event": "commkf_send_msg_to_kf",
        "msg_id": msg_id,
        "msg_type": "text",
        "text": {"content": "在吗"},
    }


def _receive(shop_id: int, payload: dict) -> None:
    inbox.receive(shop_id, payload, json.dumps(payload))
    db.session.commit()


@pytest.fixture
def shops(app):
    """Two bare shops (no seeded inbox rows)."""
    with app.app_context():
        ids = (make_shop("甲店").id, make_shop("乙店").id)
        db.session.commit()
        db.session.remove()
    return ids


def _expire_leases() -> None:
    db.session.execute(sa.update(InboxEvent).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()


def test_a_claim_whose_lease_was_taken_over_does_nothing(app, shops):
    with app.app_context():
        _receive(shops[0], _message("lease-1"))
        first = inbox.claim()
        _expire_leases()  # the first worker stalled past its lease
        second = inbox.claim()
        assert first.ids == second.ids and first.token != second.token
        assert inbox.process_claimed(second) == 1
        assert inbox.process_claimed(first) == 0, "the stale claim may not handle it again"
        assert db.session.scalar(sa.select(sa.func.count()).where(Message.platform_msg_id == "lease-1")) == 1
        assert db.session.scalar(sa.select(InboxEvent.status)) == InboxStatus.DONE
        db.session.remove()


def test_work_of_a_claim_taken_over_mid_way_is_rolled_back(app, simulator, monkeypatch):
    """An event marked done after its work (order and after-sale pushes: the platform calls first)."""
    shop_id, sim_shop = connect_shop(app, simulator, None)
    order_id = simulator.platform.place_order(
        sim_shop, new_buyer(simulator.platform, sim_shop, random.Random(2)), [dict(CATALOGUE[0])]
    )["order_id"]
    with app.app_context():
        _receive(shop_id, {"Event": "channels_ec_order_pay", "order_info": {"order_id": order_id}})
        claimed = inbox.claim()
        real_handle = inbox.handle

        def handle_while_losing_the_lease(shop_id, payload, keep):
            with db.engine.begin() as conn:  # another worker takes the event over meanwhile
                conn.execute(sa.update(InboxEvent.__table__).values(claim_token="someone-else"))
            return real_handle(shop_id, payload, keep)

        monkeypatch.setattr(inbox, "handle", handle_while_losing_the_lease)
        assert inbox.process_claimed(claimed) == 0
        assert simulator.platform.calls(sim_shop, "/channels/ec/order/get"), "the work was done"
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Order)) == 0, "and rolled back"
        event = db.session.scalar(sa.select(InboxEvent))
        assert (event.status, event.claim_token) == (InboxStatus.PROCESSING, "someone-else")
        db.session.remove()


def test_a_buyer_message_is_marked_done_before_its_work(app, shops, monkeypatch):
    """A buyer message's event is marked in its transaction's first statement: a takeover that came
    first stops it before anything is filed; once marked, no other claim can take the row (locked
    until the commit; on SQLite the write lock)."""
    with app.app_context():
        _receive(shops[0], _message("lease-3"))
        claimed = inbox.claim()
        with db.engine.begin() as conn:  # taken over before this worker began
            conn.execute(sa.update(InboxEvent.__table__).values(claim_token="someone-else"))
        filed = []
        monkeypatch.setattr(inbox, "handle", lambda shop_id, payload, keep: filed.append(payload) or [])
        assert inbox.process_claimed(claimed) == 0
        assert filed == [], "nothing is handled under a lease that is no longer ours"
        assert db.session.scalar(sa.select(sa.func.count()).where(Message.platform_msg_id == "lease-3")) == 0

        # Another buyer's message: the first buyer's wait behind their event that was taken over
        # (one buyer's messages are handled in arrival order).
        _receive(shops[0], {**_message("lease-4"), "FromUserName": "o_buyer_2"})
        claimed = inbox.claim()
        statuses = []

        def handle_seeing_its_mark(shop_id, payload, keep):
            statuses.append(db.session.scalar(sa.select(InboxEvent.status).where(InboxEvent.id.in_(claimed.ids))))
            return []

        monkeypatch.setattr(inbox, "handle", handle_seeing_its_mark)
        assert inbox.process_claimed(claimed) == 1
        assert statuses == [InboxStatus.DONE], "marked done (uncommitted) before the message is filed"
        db.session.remove()


def test_a_buyer_message_marked_first_cannot_be_claimed_again_while_it_is_filed(app, shops, monkeypatch):
    """The real path: while the message is being filed (its lease run out meanwhile), another claim
    finds nothing (the row is locked, or on SQLite the write lock is held) and the event ends done."""
    with app.app_context():
        _receive(shops[0], _message("lease-5"))
        claimed = inbox.claim()
        real_store = store.store_buyer_message
        seen_by_others = []

        def store_while_another_worker_claims(shop_id, payload):
            stored = real_store(shop_id, payload)
            with db.engine.connect() as other:  # the lease runs out; a second worker tries to claim
                if db.engine.dialect.name == "postgresql":
                    picked = other.execute(
                        sa.select(InboxEvent.__table__.c.id)
                        .where(InboxEvent.__table__.c.id.in_(claimed.ids))
                        .with_for_update(skip_locked=True)
                    ).all()
                    seen_by_others.append(picked)
                other.rollback()
            return stored

        monkeypatch.setattr(store, "store_buyer_message", store_while_another_worker_claims)
        assert inbox.process_claimed(claimed) == 1
        if db.engine.dialect.name == "postgresql":
            assert seen_by_others == [[]], "the row is locked by the worker filing it"
        event = db.session.scalar(sa.select(InboxEvent).where(InboxEvent.id.in_(claimed.ids)))
        assert event.status == InboxStatus.DONE
        assert db.session.scalar(sa.select(sa.func.count()).where(Message.platform_msg_id == "lease-5")) == 1
        db.session.remove()


def test_any_failure_inside_the_unit_is_counted_and_retried(app, shops, monkeypatch):
    with app.app_context():
        _receive(shops[0], _message("boom-1"))

        def explode(shop_id, payload):
            raise RuntimeError("database said no")

        monkeypatch.setattr(store, "store_buyer_message", explode)
        assert inbox.process_claimed(inbox.claim()) == 0
        event = db.session.scalar(sa.select(InboxEvent))
        assert (event.status, event.attempts) == (InboxStatus.PENDING, 1)
        assert "database said no" in event.last_error
        db.session.remove()


def test_a_blocked_api_defers_events_without_failing_them(app, simulator, desk, monkeypatch):
    from app.ingest import worker

    alarms = []
    monkeypatch.setattr(worker, "wake_at", lambda app_, queue, when: alarms.append((queue, when)))
    shop_id, sim_shop = connect_shop(app, simulator, None)
    until = utcnow() + timedelta(hours=3)
    with app.app_context():
        db.session.add(
            ApiBlock(shop_id=shop_id, api="/channels/ec/order/get", errcode=45009, errmsg="quota", blocked_until=until)
        )
        order_id = simulator.platform.place_order(
            sim_shop, new_buyer(simulator.platform, sim_shop, random.Random(1)), [dict(CATALOGUE[0])]
        )["order_id"]
        _receive(shop_id, {"Event": "channels_ec_order_pay", "order_info": {"order_id": order_id}})
        inbox.process_claimed(inbox.claim())
        event = db.session.scalar(sa.select(InboxEvent))
        assert event.status == InboxStatus.PENDING and event.attempts == 0
        assert abs((event.next_attempt_at - until).total_seconds()) < 1
        assert alarms == [("inbox", event.next_attempt_at)], "the workers look again when the block lifts"
        assert not simulator.platform.calls(sim_shop, "/channels/ec/order/get"), "not called while blocked"
        db.session.remove()


def test_a_buyer_message_keeps_the_time_the_buyer_sent_it(app, shops):
    with app.app_context():
        sent = int((utcnow() - timedelta(hours=2)).timestamp())
        _receive(shops[1], _message("late-1", create_time=sent))  # re-delivered two hours late
        inbox.process_claimed(inbox.claim())
        message = db.session.scalar(sa.select(Message).where(Message.platform_msg_id == "late-1"))
        conversation = db.session.get(Conversation, message.conversation_id)
        assert int(conversation.last_buyer_message_at.timestamp()) == sent
        db.session.remove()


def test_an_item_the_platform_refuses_for_good_does_not_pin_the_cursor(app, simulator, polled_shop, monkeypatch):
    shop_id, sim_shop = polled_shop
    rng = random.Random(2)
    orders = [
        simulator.platform.place_order(sim_shop, new_buyer(simulator.platform, sim_shop, rng), [dict(CATALOGUE[0])])
        for _ in range(4)
    ]
    ghost = orders[1]["order_id"]
    real_get = simulator.platform.get_order

    def get_order(shop, order_id):
        if str(order_id) == ghost:
            raise ApiError(NOT_FOUND, "order not exist")
        return real_get(shop, order_id)

    monkeypatch.setattr(simulator.platform, "get_order", get_order)
    with app.app_context():
        result = pollers.sync_orders(db.session.get(Shop, shop_id))
        stored = set(db.session.scalars(sa.select(Order.order_id)))
        assert stored == {o["order_id"] for o in orders} - {ghost}
        health = {h["kind"]: h for h in pollers.health(shop_id)}
        assert health["orders"]["lag_seconds"] < 5, "the cursor moved past the refused item"
        assert "refused" in health["orders"]["last_error"] and ghost in result.errors[0]
        db.session.remove()


def test_an_oversized_chunked_push_is_refused_unread(app, desk, world):
    with app.app_context():
        key = db.session.get(Shop, world.a.shop_id).webhook_key
        db.session.remove()

    def body():
        for _ in range(64):
            yield b"x" * 8192  # 512 KiB, no Content-Length: sent chunked

    response = requests.post(f"{desk.url}/webhooks/{key}?encrypt_type=aes", data=body(), timeout=10)
    assert (response.status_code, response.text) == (413, "too_large")


def test_a_deadlock_victim_is_stored_again_and_other_errors_are_not_retried(app, shops):
    from sqlalchemy.exc import OperationalError

    class Deadlock(Exception):
        sqlstate = "40P01"

    calls = []

    def write_once_deadlocked():
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE orders ...", {}, Deadlock("deadlock detected"))
        return store.Upserted(row=None, created=False, changed=True)

    with app.app_context():
        assert pollers._store_one(write_once_deadlocked).changed and len(calls) == 2

        def broken():
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

        with pytest.raises(OperationalError):
            pollers._store_one(broken)
        db.session.remove()


def test_claims_read_only_unfinished_events_through_the_partial_index(app, shops):
    """A burst's backlog must not make every claim slower: the claim's status test is literal SQL
    (so even a prepared statement's generic plan can use the partial index), and on PostgreSQL the
    plan walks ix_inbox_events_unfinished rather than every pending or handled row."""
    from app.ingest.inbox import _claim_statement

    with app.app_context():
        stmt = _claim_statement(db.engine.dialect.name, 2)
        sql = str(stmt.compile(dialect=db.engine.dialect))
        assert "IN ('pending', 'processing')" in sql
        if db.engine.dialect.name != "postgresql":
            db.session.remove()
            return
        conn = db.session.connection()
        conn.execute(
            sa.text(
                "INSERT INTO inbox_events (shop_id, dedupe_key, event, subject, payload, status, attempts,"
                " next_attempt_at, received_at) SELECT :shop, 'done-' || g, 'commkf_send_msg_to_kf',"
                " 'buyer:o_' || (g % 500), '{}'::jsonb, 'done', 1, now(), now() FROM generate_series(1, 5000) g"
            ),
            {"shop": shops[0]},
        )
        for n in range(3):
            _receive(shops[0], _message(f"backlog-{n}"))
        db.session.commit()
        db.session.connection().execute(sa.text("ANALYZE inbox_events"))
        now = utcnow()
        compiled = stmt.compile(dialect=db.engine.dialect)
        params = {**compiled.params, "now": now, "lease_until": now, "token": "explain"}
        plan = "\n".join(db.session.connection().exec_driver_sql("EXPLAIN " + str(compiled), params).scalars())
        plans = {}
        for lane in (FIRST_LANE, BOTH_LANES):
            compiled = _claim_statement(db.engine.dialect.name, 2, lane).compile(dialect=db.engine.dialect)
            lane_params = {**compiled.params, "now": now, "lease_until": now, "token": "explain"}
            plans[lane] = "\n".join(
                db.session.connection().exec_driver_sql("EXPLAIN " + str(compiled), lane_params).scalars())
        db.session.rollback()
        assert "ix_inbox_events_unfinished" in plan, plan
        assert "_unfinished" in plans[FIRST_LANE], plans[FIRST_LANE]  # a partial index, not every row
        # Both lanes in one statement: each lane's subquery walks its partial index.
        assert "ix_inbox_events_messages_unfinished" in plans[BOTH_LANES], plans[BOTH_LANES]
        assert "ix_inbox_events_unfinished" in plans[BOTH_LANES], plans[BOTH_LANES]
        db.session.remove()


def test_a_claim_in_a_burst_reads_its_batch_not_the_backlog_whatever_the_statistics(app, shops):
    """Statistics of an empty queue (a new desk's first livestream), then 1,500 pushes pending: a
    claim, planned as ``claim_rows`` plans it, walks the partial index in id order and stops at its
    batch. Planned from those statistics alone, it fetched every pending event through a bitmap
    and sorted them, once per lane and again for the UPDATE."""
    from app.db import CLAIM_PLAN
    from app.ingest.inbox import _claim_statement

    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            db.session.remove()
            pytest.skip("the planner in question is PostgreSQL's")
        conn = db.session.connection()
        insert_events = (
            "INSERT INTO inbox_events (shop_id, dedupe_key, event, subject, payload, status, attempts,"
            " next_attempt_at, received_at) SELECT :shop, :tag || g, 'channels_ec_aftersale_apply', NULL,"
            " '{}'::jsonb, :status, 0, now() - interval '1 minute', now() FROM generate_series(1, :n) g"
        )
        conn.execute(sa.text("ANALYZE inbox_events"))  # a new desk: statistics of an empty queue
        db.session.commit()
        conn = db.session.connection()
        conn.execute(sa.text(insert_events), {"shop": shops[0], "tag": "done-", "status": "done", "n": 3000})
        conn.execute(sa.text(insert_events), {"shop": shops[0], "tag": "burst-", "status": "pending", "n": 1500})
        db.session.commit()
        now = utcnow()
        compiled = _claim_statement("postgresql", 5, BOTH_LANES).compile(dialect=db.engine.dialect)
        params = {**compiled.params, "now": now, "lease_until": now + timedelta(minutes=1), "token": "explain"}
        conn = db.session.connection()
        for setting in CLAIM_PLAN:
            conn.exec_driver_sql(setting)
        [plan] = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled), params).scalar()
        db.session.rollback()
        text = json.dumps(plan)
        assert "ix_inbox_events_unfinished" in text and '"Sort"' not in text and "Bitmap" not in text, text[:3000]
        # The five claimed and the index entries walked to reach them, not the 1,500 pending.
        assert plan_rows(plan["Plan"]) <= 100, text[:3000]
        # And the claims plan that way: the inbox's and the outbox's.
        from app import outbox

        for claim in (inbox.claim, outbox.claim):
            sent = statements(db.engine, lambda claim=claim: claim(5))
            assert tuple(sent[:2]) == CLAIM_PLAN and sent[2].startswith("UPDATE"), sent[:3]
        db.session.remove()


def test_one_claim_statement_takes_the_messages_lane_without_touching_the_other(app, shops):
    """PostgreSQL claims both lanes in one statement; while a message is due, the other lane's
    locking subquery never runs: the pushes ahead of the message are neither claimed nor locked."""
    from app.ingest.inbox import _claim_statement

    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            db.session.remove()
            pytest.skip("PostgreSQL claims both lanes in one statement; SQLite runs them one after the other")
        _receive(shops[0], {"Event": "channels_ec_some_new_event", "CreateTime": 1, "n": 0})
        _receive(shops[0], _message("lane-one"))
        other = db.session.scalar(sa.select(InboxEvent.id).where(InboxEvent.subject.is_(None)))
        db.session.commit()
        now = utcnow()
        # The claim's transaction still open: is the other lane's row locked?
        rows = db.session.connection().execute(
            _claim_statement("postgresql", 2, BOTH_LANES), {"now": now, "lease_until": now, "token": "t"}).all()
        assert [payload["Event"] for _id, _shop, payload in rows] == ["commkf_send_msg_to_kf"]
        with db.engine.connect() as conn:
            free = conn.execute(sa.text("SELECT id FROM inbox_events WHERE id = :id FOR UPDATE NOWAIT"),
                                {"id": other}).all()
            conn.rollback()
        db.session.rollback()
        assert free == [(other,)], "the other lane's subquery did not run"
        # Through claim(): one statement either way; the messages first, then the others.
        taken: list = []
        sent = statements(db.engine, lambda: taken.append(inbox.claim(limit=2)))
        assert [payload["Event"] for _shop, payload in taken[0].items.values()] == ["commkf_send_msg_to_kf"]
        assert len([s for s in sent if s.startswith("UPDATE inbox_events")]) == 1
        assert [payload["n"] for _shop, payload in inbox.claim(limit=2).items.values()] == [0]
        sent = statements(db.engine, lambda: taken.append(inbox.claim(limit=2)))
        assert taken[-1].ids == [] and len([s for s in sent if s.startswith("UPDATE")]) == 1, "an empty claim: one"
        db.session.remove()


def test_buyer_messages_are_claimed_before_the_pushes_ahead_of_them(app, shops):
    """The messages lane: a buyer's message does not wait behind a burst of order and after-sale
    pushes (each of those fetches details from the platform); the others follow in arrival order."""
    with app.app_context():
        for n in range(3):
            _receive(shops[0], {"Event": "channels_ec_some_new_event", "CreateTime": 1, "n": n})
        _receive(shops[0], _message("lane-1"))
        first = inbox.claim(limit=2)
        assert [claimed[1]["Event"] for claimed in first.items.values()] == ["commkf_send_msg_to_kf"]
        second = inbox.claim(limit=2)
        assert [claimed[1]["n"] for claimed in second.items.values()] == [0, 1]
        assert inbox.process_claimed(first) == 1 and inbox.process_claimed(second) == 2
        db.session.remove()


def test_a_claim_is_committed_with_its_statement_and_a_failed_one_takes_nothing(app, shops, monkeypatch):
    """PostgreSQL: ``claim_rows`` sends the plan's settings, the claim and the commit together
    (psycopg's pipeline mode). When the claim returns, another connection already sees the events
    taken under its token, and nothing is left open on the desk's connection. A claim that fails in
    the pipeline takes nothing: the events stay pending for the next one."""
    from app import db as app_db

    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            db.session.remove()
            pytest.skip("the pipeline is PostgreSQL's")
        _receive(shops[0], _message("pipelined-1"))
        _receive(shops[0], {"Event": "channels_ec_some_new_event", "CreateTime": 1, "n": 1})
        monkeypatch.setattr(app_db, "CLAIM_PLAN", ("SET LOCAL enable_sort = off", "SELECT 1 / 0"))
        with pytest.raises(Exception, match="division by zero"):
            inbox.claim(limit=5)
        db.session.rollback()
        monkeypatch.undo()
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM inbox_events WHERE status = 'pending'"
                                        " AND claim_token IS NULL")).scalar() == 2
        from app.ingest.inbox import _claim_statement

        now = utcnow()
        params = {"now": now, "lease_until": now + timedelta(minutes=1), "token": "pipelined"}
        rows = app_db.claim_rows(db.session.connection(), lambda lane: _claim_statement("postgresql", 5, lane), params)
        assert [payload["Event"] for _id, _shop, payload in rows] == ["commkf_send_msg_to_kf"]
        # No commit of the caller's yet: the claim is committed, the connection idle.
        assert db.session.connection().connection.driver_connection.info.transaction_status.name == "IDLE"
        with db.engine.connect() as conn:
            seen = conn.execute(sa.text("SELECT status, claim_token FROM inbox_events ORDER BY id")).all()
        assert [tuple(row) for row in seen] == [("processing", "pipelined"), ("pending", None)]
        db.session.commit()  # finds nothing left to do
        assert [payload["n"] for _shop, payload in inbox.claim(limit=5).items.values()] == [1]
        db.session.remove()


AFTER_SALE_DETAIL = "/channels/ec/aftersale/getaftersaleorder"
ORDER_DETAIL = "/channels/ec/order/get"


def _status_push(record: dict, created_at: int | None) -> dict:
    return {
        "ToUserName": "wx",
        "FromUserName": "system",
        "CreateTime": created_at,
        "MsgType": "event",
        "Event": inbox.AFTER_SALE_EVENT,
        "finder_shop_aftersale_status_update": {
            "status": record["status"],
            "after_sale_order_id": record["after_sale_order_id"],
            "order_id": int(record["order_id"]),
        },
    }


def test_a_status_push_of_what_is_stored_already_fetches_only_the_order(app, simulator, polled_shop):
    """The push of a change the desk read back itself (after its own approval) names a status, as of a
    second, that the stored detail already has: its detail is not fetched again. Every other push is
    followed up: an unknown after-sale, another status, a later second, no time at all."""
    shop_id, sim_shop = polled_shop
    platform = simulator.platform
    order = platform.place_order(sim_shop, new_buyer(platform, sim_shop, random.Random(5)), [dict(CATALOGUE[0])])
    record = platform.open_after_sale(sim_shop, order["order_id"], "REFUND")

    def calls(api: str) -> int:
        return len(platform.calls(sim_shop, api))

    def handle(push: dict) -> None:
        inbox.handle(shop_id, push)
        db.session.commit()

    def now_on_platform() -> tuple[dict, int]:
        with platform.lock:
            return dict(record), record["update_time"]

    with app.app_context():
        current, changed_at = now_on_platform()
        handle(_status_push(current, changed_at))  # not stored yet
        assert (calls(AFTER_SALE_DETAIL), calls(ORDER_DETAIL)) == (1, 1)
        handle(_status_push(current, changed_at))  # what is stored, as of that second
        assert (calls(AFTER_SALE_DETAIL), calls(ORDER_DETAIL)) == (1, 2), "the order is fetched all the same"

        platform.accept_after_sale(sim_shop, {"after_sale_order_id": record["after_sale_order_id"]})
        current, changed_at = now_on_platform()
        handle(_status_push(current, changed_at))  # another status than the stored one
        assert calls(AFTER_SALE_DETAIL) == 2
        stored = db.session.scalar(sa.select(AfterSale.status).where(AfterSale.shop_id == shop_id))
        assert stored == "MERCHANT_REFUND_SUCCESS"

        handle(_status_push(current, changed_at))
        assert calls(AFTER_SALE_DETAIL) == 2
        handle(_status_push(current, changed_at + 1))  # the same status, but pushed a second after the change
        handle(_status_push(current, None))  # no time to compare
        assert calls(AFTER_SALE_DETAIL) == 4
        db.session.remove()


def test_an_after_sale_of_an_order_not_stored_yet_is_linked_to_it_by_its_first_push(app, simulator, polled_shop):
    """The push's re-fetched order is stored first, and the new after-sale links to that row (before:
    no order row yet, so no link until the after-sale's next fetch)."""
    shop_id, sim_shop = polled_shop
    platform = simulator.platform
    order = platform.place_order(sim_shop, new_buyer(platform, sim_shop, random.Random(6)), [dict(CATALOGUE[0])])
    record = platform.open_after_sale(sim_shop, order["order_id"], "REFUND")
    with app.app_context():
        assert db.session.scalar(sa.select(Order).where(Order.order_id == order["order_id"])) is None
        inbox.handle(shop_id, _status_push(dict(record), record["update_time"]))
        db.session.commit()
        stored = db.session.scalar(sa.select(AfterSale).where(AfterSale.shop_id == shop_id))
        assert stored.order is not None and stored.order.order_id == order["order_id"]
        db.session.remove()
