"""Admins test a shop's connection and see its health: pollers, blocked APIs, failed pushes."""

from __future__ import annotations

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.ingest import pollers
from app.models import AuditLog, InboxEvent, InboxStatus, Role, Shop
from tests.factories import make_user


def test_test_connection_reports_success_and_failure_in_plain_words(app, simulator, polled_shop, login):
    shop_id, sim_shop = polled_shop
    with app.app_context():
        make_user("root", Role.ADMIN)
        db.session.commit()
    admin = login("root")
    page = admin.post(f"/settings/shops/{shop_id}/test", follow_redirects=True).get_data(as_text=True)
    assert "已连接" in page and "2" in page
    with app.app_context():
        assert db.session.get(Shop, shop_id).connected_at is not None
    sim_shop.secret = "rotated-on-the-platform"  # our stored secret is now wrong
    with app.app_context():
        db.session.execute(sa.text("DELETE FROM platform_tokens"))
        db.session.commit()
    page = admin.post(f"/settings/shops/{shop_id}/test", follow_redirects=True).get_data(as_text=True)
    assert "连接失败" in page and "40125" in page
    with app.app_context():
        outcomes = [
            e.details["ok"]
            for e in db.session.scalars(
                sa.select(AuditLog).where(AuditLog.action == "shop.connection_test").order_by(AuditLog.id)
            )
        ]
        assert outcomes == [True, False]


def test_shop_page_shows_poller_health_and_failed_pushes_with_retry(app, simulator, polled_shop, login):
    shop_id, sim_shop = polled_shop
    with app.app_context():
        make_user("root", Role.ADMIN)
        pollers.sync_addresses(db.session.get(Shop, shop_id))
        sim_shop.faults.update(busy_rate=1.0)
        pollers.sync_orders(db.session.get(Shop, shop_id))
        db.session.add(
            InboxEvent(
                shop_id=shop_id,
                dedupe_key="k1",
                event="channels_ec_order_pay",
                payload={},
                status=InboxStatus.FAILED,
                attempts=8,
                last_error="BusinessError: errcode 10020001",
            )
        )
        db.session.commit()
    admin = login("root")
    page = admin.get(f"/settings/shops/{shop_id}").get_data(as_text=True)
    assert "退货地址" in page and "errcode -1" in page, "the orders poller's error is shown"
    assert "errcode 10020001" in page and "1 个失败" in page
    admin.post(f"/settings/shops/{shop_id}/inbox/retry")
    with app.app_context():
        event = db.session.scalar(sa.select(InboxEvent))
        assert event.status == InboxStatus.PENDING and event.attempts == 0 and event.next_attempt_at <= utcnow()
