"""History paging and re-sync: seq numbers every message in commit order, pages go upward by seq,
and `after_seq` returns exactly what a client missed."""

from __future__ import annotations

from app.desk import conversations
from app.extensions import db
from app.models import DeliveryState, MessageDirection, SenderKind


def _add_notes(app, conversation_id: int, count: int) -> None:
    with app.app_context():
        for n in range(count):
            conversation = conversations.lock_conversation(conversation_id)
            conversations.add_message(
                conversation,
                direction=MessageDirection.INTERNAL,
                sender_kind=SenderKind.SYSTEM,
                msg_type="note",
                text=f"第{n}条",
                delivery_state=DeliveryState.SENT,
            )
            db.session.commit()


def test_history_pages_upward_and_resyncs_after_a_seq(app, world, login):
    _add_notes(app, world.a.conversation_id, 118)  # 2 from the world + 118 = 120
    client = login("agent_a")
    first = client.get(f"/api/conversations/{world.a.conversation_id}").get_json()
    seqs = [m["seq"] for m in first["messages"]]
    assert seqs == list(range(71, 121)) and first["has_more"] and first["conversation"]["last_seq"] == 120
    older = client.get(f"/api/conversations/{world.a.conversation_id}/messages?before_seq=71").get_json()
    assert [m["seq"] for m in older["messages"]] == list(range(21, 71)) and older["has_more"]
    oldest = client.get(f"/api/conversations/{world.a.conversation_id}/messages?before_seq=21").get_json()
    assert [m["seq"] for m in oldest["messages"]] == list(range(1, 21)) and not oldest["has_more"]
    # A client that saw up to 117 gets 118-120, nothing else; after the newest, nothing.
    missed = client.get(f"/api/conversations/{world.a.conversation_id}/messages?after_seq=117").get_json()
    assert [m["seq"] for m in missed["messages"]] == [118, 119, 120]
    assert (
        client.get(f"/api/conversations/{world.a.conversation_id}/messages?after_seq=120").get_json()["messages"] == []
    )
    # Another shop's history is not found, by any door.
    for path in ("", "/messages?after_seq=0", "/messages?before_seq=5"):
        assert client.get(f"/api/conversations/{world.b.conversation_id}{path}").status_code == 404


def test_inbox_pages_and_counts(app, world, login):
    client = login("admin")
    page = client.get("/api/inbox?view=all").get_json()
    assert {c["id"] for c in page["conversations"]} == {world.a.conversation_id, world.b.conversation_id}
    assert page["counts"] == {"mine": 0, "unassigned": 0, "all": 2} and not page["has_more"]
    newest = page["conversations"][0]["last_message_at"]
    older = client.get(f"/api/inbox?view=all&before={newest}").get_json()["conversations"]
    assert [c["id"] for c in older] == [page["conversations"][1]["id"]]
    only_a = client.get(f"/api/inbox?view=all&shop={world.a.shop_id}").get_json()
    assert [c["id"] for c in only_a["conversations"]] == [world.a.conversation_id]
    assert only_a["counts"]["all"] == 1


def test_a_buyers_burst_is_filed_in_arrival_order_by_concurrent_workers(app):
    """Forty messages from one buyer (and noise from others), four worker threads: seq follows arrival."""
    import json
    import uuid

    import sqlalchemy as sa

    from app.ingest import inbox
    from app.ingest.worker import InboxWorkers
    from app.models import Conversation, Customer, Message
    from tests.factories import make_shop

    with app.app_context():
        shop_id = make_shop("连发店").id
        db.session.commit()
        for n in range(40):
            for openid, text in (("o_burst", f"第{n}句"), (f"o_other_{n % 5}", f"别人{n}")):
                payload = {
                    "FromUserName": openid,
                    "Event": "commkf_send_msg_to_kf",
                    "msg_id": uuid.uuid4().hex,
                    "msg_type": "text",
                    "text": {"content": text},
                    "CreateTime": 1_700_000_000 + n,
                }
                inbox.receive(shop_id, payload, json.dumps(payload))
        db.session.commit()
    workers = InboxWorkers(app, threads=4, batch=3).start()
    try:
        with app.app_context():
            from tests.platform.conftest import wait_until

            def filed() -> int:
                count = db.session.scalar(sa.select(sa.func.count()).select_from(Message))
                db.session.commit()
                return count

            assert wait_until(lambda: filed() == 80, timeout=30)
            texts = db.session.scalars(
                sa.select(Message.text)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .join(Customer, Customer.id == Conversation.customer_id)
                .where(Customer.openid == "o_burst")
                .order_by(Message.seq)
            ).all()
            assert texts == [f"第{n}句" for n in range(40)]
    finally:
        workers.stop()


def test_inbox_pages_never_skip_conversations_with_the_same_time(app, world, login):
    """A livestream burst gives many conversations the same last_message_at: paging goes on by id."""
    from app.db import utcnow
    from app.models import Conversation, ConversationStatus, Customer

    at = utcnow().replace(microsecond=0)
    with app.app_context():
        for n in range(60):
            customer = Customer(shop_id=world.a.shop_id, openid=f"o_same_time_{n}")
            db.session.add(customer)
            db.session.flush()
            db.session.add(
                Conversation(
                    shop_id=world.a.shop_id,
                    customer_id=customer.id,
                    status=ConversationStatus.OPEN,
                    last_message_at=at,
                )
            )
        db.session.commit()
    client = login("admin")
    seen, query = [], {"view": "all", "shop": world.a.shop_id}
    page = client.get("/api/inbox", query_string=query).get_json()
    while True:
        seen += [c["id"] for c in page["conversations"]]
        if not page["has_more"]:
            break
        last = page["conversations"][-1]
        after_last = {**query, "before": last["last_message_at"], "before_id": last["id"]}
        page = client.get("/api/inbox", query_string=after_last).get_json()
    assert len(seen) == len(set(seen)) == 61, "every conversation once (60 at the same time + the world's)"
