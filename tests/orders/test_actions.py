"""After-sale actions end to end against the simulator: each call made once (double clicks, resends,
retries after a lost answer), only what the state allows, the refund-per-minute limit queued, the
platform's refusals in plain words, and an audit entry for every request and outcome."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import AfterSale, AfterSaleAction, AuditLog, OutboxCall, OutboxStatus
from app.orders import actions
from tests.orders.conftest import request_id

ACCEPT = "/channels/ec/aftersale/acceptapply"
REJECT = "/channels/ec/aftersale/rejectapply"


def post_action(client, pk: int, kind: str, rid: str | None = None, **extra):
    return client.post(
        f"/api/after-sales/{pk}/actions", json={"kind": kind, "request_id": rid or request_id(), **extra}
    )


def row(app, model, pk):
    with app.app_context():
        found = db.session.get(model, pk)
        db.session.expunge(found)
        db.session.remove()
    return found


def audit_actions(app, subject_id: str) -> list[tuple[str, int | None, dict]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(AuditLog.action, AuditLog.user_id, AuditLog.details)
            .where(AuditLog.subject_kind == "after_sale", AuditLog.subject_id == subject_id)
            .order_by(AuditLog.id)
        ).all()
        db.session.remove()
    return [tuple(r) for r in rows]


def outbox_calls(app) -> list[OutboxCall]:
    with app.app_context():
        calls = db.session.scalars(sa.select(OutboxCall).where(OutboxCall.operation == actions.OPERATION)).all()
        for c in calls:
            db.session.expunge(c)
        db.session.remove()
    return calls


def test_approving_a_refund_goes_to_the_platform_once_and_is_audited(app, desk_shop, login):
    pk = desk_shop.after_sale(desk_shop.order(), "REFUND")
    after_sale = row(app, AfterSale, pk)
    client = login("li")
    answer = post_action(client, pk, "approve_refund")
    assert answer.status_code == 202
    action = answer.get_json()["action"]
    assert action["state"] == "pending" and action["requested_by"]["name"] == "客服小李"
    assert desk_shop.drain() == 1
    assert desk_shop.sim_status(after_sale.after_sale_order_id) == "MERCHANT_REFUND_SUCCESS"
    assert [c[2] for c in desk_shop.calls()] == [{"after_sale_order_id": after_sale.after_sale_order_id}]
    assert row(app, AfterSale, pk).status == "MERCHANT_REFUND_SUCCESS", "the desk read the new status back"
    assert row(app, AfterSaleAction, action["id"]).state == "succeeded"
    trail = audit_actions(app, after_sale.after_sale_order_id)
    assert [a for a, _, _ in trail] == ["after_sale.approve_refund", "after_sale.approve_refund.succeeded"]
    user_ids = {u for _, u, _ in trail}
    assert len(user_ids) == 1 and None not in user_ids
    assert trail[0][2]["request_id"] == action["request_id"] and trail[0][2]["amount_fen"] == 19900


def test_a_double_click_and_a_resend_make_one_call(app, desk_shop, login):
    pk = desk_shop.after_sale(desk_shop.order(), "REFUND")
    client = login("li")
    rid = request_id()
    first = post_action(client, pk, "approve_refund", rid)
    again = post_action(client, pk, "approve_refund", rid)  # the answer was lost: the browser resends
    other_click = post_action(client, pk, "approve_refund")  # a second click with a fresh id
    assert (first.status_code, again.status_code, other_click.status_code) == (202, 200, 200)
    ids = {r.get_json()["action"]["id"] for r in (first, again, other_click)}
    assert len(ids) == 1
    assert len(outbox_calls(app)) == 1
    desk_shop.drain()
    after_done = post_action(client, pk, "approve_refund", rid)  # a resend after it succeeded
    assert after_done.status_code == 200 and after_done.get_json()["action"]["state"] == "succeeded"
    assert len(desk_shop.calls()) == 1
    assert len([a for a, _, _ in audit_actions(app, row(app, AfterSale, pk).after_sale_order_id)]) == 2


def test_a_different_action_while_one_is_pending_is_a_conflict(app, desk_shop, login):
    pk = desk_shop.after_sale(desk_shop.order(), "REFUND")
    client = login("li")
    assert post_action(client, pk, "approve_refund").status_code == 202
    clash = post_action(client, pk, "reject", reject_reason_type=1)
    assert clash.status_code == 409 and clash.get_json()["error"]["code"] == "conflict"
    assert len(outbox_calls(app)) == 1


def test_a_retry_after_a_lost_answer_counts_the_first_call(app, desk_shop, login):
    """The platform acted on the first attempt but its answer never arrived; the retry is refused
    as a repeat: the desk reads the after-sale back and records success, without a second refund."""
    pk = desk_shop.after_sale(desk_shop.order(), "REFUND")
    after_sale = row(app, AfterSale, pk)
    client = login("li")
    action = post_action(client, pk, "approve_refund").get_json()["action"]
    # The first attempt reached the platform (which refunded) and then timed out on the way back.
    with desk_shop.platform.lock:
        record = desk_shop.sim_shop.after_sales[after_sale.after_sale_order_id]
        record["status"] = "MERCHANT_REFUND_SUCCESS"
        record["update_time"] += 1
    desk_shop.drain()
    done = row(app, AfterSaleAction, action["id"])
    assert done.state == "succeeded"
    assert [c[3] for c in desk_shop.calls()] == [10021001], "the repeat was refused by the platform"
    assert row(app, AfterSale, pk).status == "MERCHANT_REFUND_SUCCESS"
    trail = audit_actions(app, after_sale.after_sale_order_id)
    assert trail[-1][0] == "after_sale.approve_refund.succeeded" and trail[-1][2]["repeat_confirmed"] is True


def test_a_platform_timeout_is_retried_with_the_same_call(app, desk_shop, login):
    pk = desk_shop.after_sale(desk_shop.order(), "REFUND")
    desk_shop.platform.shop(desk_shop.sim_shop.appid).faults.update(api_errors={ACCEPT: -1})
    client = login("li")
    action = post_action(client, pk, "approve_refund").get_json()["action"]
    desk_shop.drain(rounds=1)
    with app.app_context():
        call = db.session.scalar(sa.select(OutboxCall).where(OutboxCall.operation == actions.OPERATION))
        assert call.status == OutboxStatus.PENDING and call.attempts == 1  # busy: backing off
        call.next_attempt_at = utcnow()
        db.session.commit()
        db.session.remove()
    desk_shop.sim_shop.faults.update(api_errors={})
    desk_shop.drain()
    assert row(app, AfterSaleAction, action["id"]).state == "succeeded"
    refunds = [c for c in desk_shop.calls() if c[3] == 0]
    assert len(refunds) == 1


def test_approving_a_return_sends_the_address_bound_to_the_sku(app, desk_shop, login):
    guangzhou_pk, guangzhou_id = desk_shop.address("广州退货仓")
    desk_shop.bind(guangzhou_id)
    pk = desk_shop.after_sale(desk_shop.order(), "RETURN")
    after_sale = row(app, AfterSale, pk)
    action = post_action(login("li"), pk, "approve_return", address_pk=guangzhou_pk).get_json()["action"]
    assert action["address_id"] == guangzhou_id and action["address_source"] == "sku"
    desk_shop.drain()
    body = desk_shop.calls()[0][2]
    assert body == {"after_sale_order_id": after_sale.after_sale_order_id, "address_id": guangzhou_id, "accept_type": 1}
    stored = row(app, AfterSale, pk)
    assert stored.status == "USER_WAIT_RETURN"
    assert (stored.return_address_pk, stored.return_address_source) == (guangzhou_pk, "sku")


def test_an_address_picked_by_hand_is_used_and_recorded(app, desk_shop, login):
    _, guangzhou_id = desk_shop.address("广州退货仓")
    desk_shop.bind(guangzhou_id)
    hangzhou_pk, hangzhou_id = desk_shop.address("杭州总仓")
    pk = desk_shop.after_sale(desk_shop.order(), "RETURN")
    action = post_action(login("li"), pk, "approve_return", address_pk=hangzhou_pk).get_json()["action"]
    assert (action["address_id"], action["address_source"]) == (hangzhou_id, "manual")
    desk_shop.drain()
    assert desk_shop.calls()[0][2]["address_id"] == hangzhou_id


def test_without_a_bound_or_default_address_a_return_needs_a_choice(app, desk_shop, login):
    from app.models import ReturnAddress

    with app.app_context():
        for address in db.session.scalars(sa.select(ReturnAddress)):
            address.is_default_return = False
        db.session.commit()
        db.session.remove()
    pk = desk_shop.after_sale(desk_shop.order(), "RETURN")
    answer = post_action(login("li"), pk, "approve_return")
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "address_required"
    assert outbox_calls(app) == []


def test_an_address_deleted_on_the_platform_fails_in_plain_words(app, desk_shop, login):
    guangzhou_pk, guangzhou_id = desk_shop.address("广州退货仓")
    pk = desk_shop.after_sale(desk_shop.order(), "RETURN")
    action = post_action(login("li"), pk, "approve_return", address_pk=guangzhou_pk).get_json()["action"]
    with desk_shop.platform.lock:
        del desk_shop.sim_shop.addresses[guangzhou_id]  # deleted in the back office meanwhile
    desk_shop.drain()
    failed = row(app, AfterSaleAction, action["id"])
    assert (failed.state, failed.error_code, failed.errcode) == ("failed", "address_invalid", 10021062)
    with app.test_request_context():
        assert "退货地址" in actions.error_text(failed) or "return address" in actions.error_text(failed)
    trail = audit_actions(app, failed.after_sale_order_id)
    assert trail[-1][0] == "after_sale.approve_return.failed" and trail[-1][2]["errcode"] == 10021062


def test_confirming_receipt_refunds_a_returned_parcel(app, desk_shop, login):
    pk = desk_shop.after_sale(desk_shop.order(), "RETURN")
    after_sale_id = row(app, AfterSale, pk).after_sale_order_id
    client = login("li")
    early = post_action(client, pk, "confirm_receipt")
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "forbidden_transition"
    post_action(client, pk, "approve_return")  # the shop's default return address
    desk_shop.drain()
    desk_shop.platform.buyer_returns_parcel(desk_shop.sim_shop, after_sale_id)
    desk_shop.fetch_after_sale(after_sale_id)
    assert post_action(client, pk, "confirm_receipt").status_code == 202
    desk_shop.drain()
    assert desk_shop.calls()[-1][2] == {"after_sale_order_id": after_sale_id, "accept_type": 2}
    assert row(app, AfterSale, pk).status == "MERCHANT_RETURN_SUCCESS"


def test_forbidden_transitions_queue_nothing(app, desk_shop, login):
    refund = desk_shop.after_sale(desk_shop.order(), "REFUND")
    client = login("li")
    for kind in ("approve_return", "confirm_receipt"):
        answer = post_action(client, refund, kind)
        assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "forbidden_transition", kind
    post_action(client, refund, "approve_refund")
    desk_shop.drain()
    for kind in ("approve_refund", "reject"):  # refunded: nothing is left to do
        answer = post_action(client, refund, kind, reject_reason_type=1)
        assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "forbidden_transition", kind
    assert post_action(client, refund, "pay_twice").status_code == 400
    assert len(outbox_calls(app)) == 1
    assert len(audit_actions(app, row(app, AfterSale, refund).after_sale_order_id)) == 2


def test_rejecting_with_a_platform_reason(app, desk_shop, login):
    pk = desk_shop.after_sale(desk_shop.order(), "REFUND")
    client = login("li")
    listed = client.get(f"/api/after-sales/{pk}/reject-reasons").get_json()["reasons"]
    assert {r["reject_reason_type"] for r in listed} == {1, 4}, "refund-only reasons (scene 1)"
    assert post_action(client, pk, "reject").status_code == 400, "a reason is required"
    post_action(client, pk, "reject", reject_reason_type=1, reject_reason="已发出，请拒收")
    desk_shop.drain()
    body = desk_shop.calls(REJECT)[0][2]
    assert body["reject_reason_type"] == 1 and body["reject_reason"] == "已发出，请拒收"
    assert row(app, AfterSale, pk).status == "MERCHANT_REJECT_REFUND"


def test_negotiate_first_is_explained_and_the_case_stays_open(app, desk_shop, login):
    pk = desk_shop.after_sale(desk_shop.order(), "REFUND", requires_negotiation=True)
    client = login("li")
    action = post_action(client, pk, "reject", reject_reason_type=4).get_json()["action"]
    desk_shop.drain()
    failed = row(app, AfterSaleAction, action["id"])
    assert (failed.state, failed.error_code, failed.errcode) == ("failed", "negotiate_first", 10021068)
    html = client.get(f"/conversations/{_conversation_for(app, desk_shop)}/sidebar").get_data(as_text=True)
    assert "协商" in html, "the sidebar says to negotiate first, in Chinese"
    assert 'data-act="approve_refund"' in html, "the case can still be handled"
    assert row(app, AfterSale, pk).status == "MERCHANT_PROCESSING"


def test_refund_calls_for_one_order_are_a_minute_apart(app, desk_shop, login):
    order_id = desk_shop.order(items=[dict(desk_shop_scarf(), sku_cnt=2)])
    first = desk_shop.after_sale(order_id, "REFUND")
    second = desk_shop.after_sale(order_id, "REFUND")
    client = login("li")
    post_action(client, first, "approve_refund")
    second_action = post_action(client, second, "approve_refund").get_json()["action"]
    desk_shop.drain()
    assert [c[3] for c in desk_shop.calls()] == [0], "the second refund was not sent within the minute"
    with app.app_context():
        waiting = db.session.scalar(
            sa.select(OutboxCall).where(OutboxCall.idempotency_key == actions.outbox_key(second_action["request_id"]))
        )
        assert waiting.status == OutboxStatus.PENDING and waiting.attempts == 0
        assert waiting.last_errcode == 10021059
        assert timedelta(seconds=55) < waiting.next_attempt_at - utcnow() <= timedelta(seconds=61)
        action = db.session.get(AfterSaleAction, second_action["id"])
        assert actions.queued_for_refund_limit(action) == waiting.next_attempt_at
        # A minute passes.
        first_done = db.session.scalar(sa.select(AfterSaleAction).where(AfterSaleAction.after_sale_pk == first))
        first_done.completed_at -= timedelta(seconds=61)
        waiting.next_attempt_at = utcnow()
        desk_shop.sim_shop.refund_calls.clear()
        db.session.commit()
        db.session.remove()
    desk_shop.drain()
    assert [c[3] for c in desk_shop.calls()] == [0, 0]
    assert row(app, AfterSaleAction, second_action["id"]).state == "succeeded"


def test_the_platforms_refund_limit_defers_without_using_attempts(app, desk_shop, login, monkeypatch):
    from app.ingest import worker

    alarms = []
    monkeypatch.setattr(worker, "wake_at", lambda app_, queue, when: alarms.append((queue, when)))
    order_id = desk_shop.order()
    pk = desk_shop.after_sale(order_id, "REFUND")
    desk_shop.sim_shop.refund_calls[order_id] = desk_shop.platform.clock()  # another tool refunded just now
    action = post_action(login("li"), pk, "approve_refund").get_json()["action"]
    desk_shop.drain()
    assert [c[3] for c in desk_shop.calls()] == [10021059]
    with app.app_context():
        call = db.session.scalar(sa.select(OutboxCall).where(OutboxCall.operation == actions.OPERATION))
        assert (call.status, call.attempts, call.last_errcode) == (OutboxStatus.PENDING, 0, 10021059)
        assert call.next_attempt_at > utcnow() + timedelta(seconds=50)
        # The outbox workers are woken when it falls due, not at their next poll after it.
        assert alarms == [("outbox", call.next_attempt_at)]
        db.session.remove()
    assert row(app, AfterSaleAction, action["id"]).state == "pending"


def desk_shop_scarf() -> dict:
    from tests.orders.conftest import SCARF

    return SCARF


def _conversation_for(app, desk_shop, openid: str = "o_buyer_1") -> int:
    from app.models import Conversation, Customer

    with app.app_context():
        customer = db.session.scalar(
            sa.select(Customer).where(Customer.shop_id == desk_shop.shop_id, Customer.openid == openid)
        )
        conversation = Conversation(shop_id=desk_shop.shop_id, customer_id=customer.id, last_message_at=utcnow())
        db.session.add(conversation)
        db.session.commit()
        found = conversation.id
        db.session.remove()
    return found


def test_a_request_id_is_one_action_of_one_after_sale(app, desk_shop, login):
    order_id = desk_shop.order()
    first, second = desk_shop.after_sale(order_id, "REFUND"), desk_shop.after_sale(order_id, "REFUND")
    client = login("li")
    rid = request_id()
    assert post_action(client, first, "approve_refund", rid).status_code == 202
    reused = post_action(client, second, "approve_refund", rid)
    assert reused.status_code == 400 and reused.get_json()["error"]["code"] == "invalid"
    assert len(outbox_calls(app)) == 1


def test_two_agents_approving_at_once_make_one_call(app, desk_shop, login):
    import threading

    from app.models import Shop, User

    pk = desk_shop.after_sale(desk_shop.order(), "REFUND")
    with app.app_context():
        from tests.factories import make_user

        make_user("wang", shops=[db.session.get(Shop, desk_shop.shop_id)])
        db.session.commit()
        db.session.remove()
    clients = [login("li"), login("wang")]
    start = threading.Barrier(2)
    answers = []

    def click(client):
        start.wait()
        answers.append(post_action(client, pk, "approve_refund"))

    threads = [threading.Thread(target=click, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(a.status_code for a in answers) == [200, 202]
    assert len({a.get_json()["action"]["id"] for a in answers}) == 1
    assert len(outbox_calls(app)) == 1
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 2
        db.session.remove()


# Every action: (after-sale type, steps to reach the state it acts on, extra fields, where it leads).
EVERY_ACTION = {
    "approve_refund": ("REFUND", False, {}, "MERCHANT_REFUND_SUCCESS"),
    "approve_return": ("RETURN", False, {}, "USER_WAIT_RETURN"),
    "confirm_receipt": ("RETURN", True, {}, "MERCHANT_RETURN_SUCCESS"),
    "reject": ("REFUND", False, {"reject_reason_type": 1}, "MERCHANT_REJECT_REFUND"),
}


def _ready(app, desk_shop, login, kind: str) -> tuple[int, str, object]:
    after_sale_type, returned, _extra, _target = EVERY_ACTION[kind]
    pk = desk_shop.after_sale(desk_shop.order(), after_sale_type)
    after_sale_id = row(app, AfterSale, pk).after_sale_order_id
    client = login("li")
    if returned:
        post_action(client, pk, "approve_return")
        desk_shop.drain()
        desk_shop.platform.buyer_returns_parcel(desk_shop.sim_shop, after_sale_id)
        desk_shop.fetch_after_sale(after_sale_id)
    return pk, after_sale_id, client


def _platform_calls(desk_shop, after_sale_id: str) -> list[tuple]:
    return [
        c for c in desk_shop.calls(ACCEPT) + desk_shop.calls(REJECT) if c[2].get("after_sale_order_id") == after_sale_id
    ]


@pytest.mark.parametrize("kind", sorted(EVERY_ACTION))
def test_every_action_is_one_call_whatever_the_clicks(app, desk_shop, login, kind):
    pk, after_sale_id, client = _ready(app, desk_shop, login, kind)
    before = len(_platform_calls(desk_shop, after_sale_id))
    extra = EVERY_ACTION[kind][2]
    rid = request_id()
    answers = [post_action(client, pk, kind, rid, **extra) for _ in range(2)] + [post_action(client, pk, kind, **extra)]
    assert [a.status_code for a in answers] == [202, 200, 200]
    assert len({a.get_json()["action"]["id"] for a in answers}) == 1
    desk_shop.drain()
    assert len(_platform_calls(desk_shop, after_sale_id)) == before + 1
    assert desk_shop.sim_status(after_sale_id) == EVERY_ACTION[kind][3]
    assert row(app, AfterSale, pk).status == EVERY_ACTION[kind][3]
    trail = [a for a, _, d in audit_actions(app, after_sale_id) if a.startswith(f"after_sale.{kind}")]
    assert trail == [f"after_sale.{kind}", f"after_sale.{kind}.succeeded"]


@pytest.mark.parametrize("kind", sorted(EVERY_ACTION))
def test_every_action_survives_a_lost_answer(app, desk_shop, login, kind):
    pk, after_sale_id, client = _ready(app, desk_shop, login, kind)
    action = post_action(client, pk, kind, **EVERY_ACTION[kind][2]).get_json()["action"]
    with desk_shop.platform.lock:  # the platform did it; its answer never came back
        record = desk_shop.sim_shop.after_sales[after_sale_id]
        record["status"] = EVERY_ACTION[kind][3]
        record["update_time"] += 1
    desk_shop.drain()
    assert row(app, AfterSaleAction, action["id"]).state == "succeeded"
    assert row(app, AfterSale, pk).status == EVERY_ACTION[kind][3]
    last = audit_actions(app, after_sale_id)[-1]
    assert last[0] == f"after_sale.{kind}.succeeded" and last[2]["repeat_confirmed"] is True
