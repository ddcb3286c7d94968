"""The data model: constraints that keep data single, ids exact, money integer, secrets encrypted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app import secretbox
from app.extensions import db
from app.models import (
    AddressBinding,
    BindingScope,
    Conversation,
    ConversationStatus,
    Customer,
    InboxEvent,
    Message,
    MessageDirection,
    Order,
    OutboxCall,
    SenderKind,
    Shop,
)
from tests.factories import make_shop


@pytest.fixture
def ctx(app, world):
    with app.app_context():
        yield world
        db.session.rollback()


def _expect_duplicate(obj) -> None:
    db.session.add(obj)
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()


def test_a_platform_message_is_stored_once_per_shop(ctx):
    world = ctx
    _expect_duplicate(
        Message(
            shop_id=world.a.shop_id,
            conversation_id=world.a.conversation_id,
            direction=MessageDirection.INBOUND,
            sender_kind=SenderKind.CUSTOMER,
            text="again",
            platform_msg_id="m_A_1",
        )
    )


def test_a_buyer_has_one_open_conversation_at_most(ctx):
    world = ctx
    _expect_duplicate(Conversation(shop_id=world.a.shop_id, customer_id=world.a.customer_id))
    # Resolved ones do not count: the buyer can come back later.
    old = db.session.get(Conversation, world.a.conversation_id)
    old.status = ConversationStatus.RESOLVED
    db.session.add(Conversation(shop_id=world.a.shop_id, customer_id=world.a.customer_id))
    db.session.flush()


def test_push_dedupe_and_outbox_idempotency_keys_are_unique_per_shop(ctx):
    world = ctx
    _expect_duplicate(InboxEvent(shop_id=world.a.shop_id, dedupe_key="push_A_1", event="x", payload={}))
    _expect_duplicate(OutboxCall(shop_id=world.a.shop_id, idempotency_key="req_A_1", operation="x", payload={}))
    # The same key in another shop is another event.
    db.session.add(InboxEvent(shop_id=world.b.shop_id, dedupe_key="push_A_1", event="x", payload={}))
    db.session.flush()


def test_order_ids_are_unique_per_shop_and_exact(ctx):
    world = ctx
    huge = str(2**63 + 12345)  # beyond float precision (2^53) and beyond int64
    now = datetime.now(UTC)
    for shop_id in (world.a.shop_id, world.b.shop_id):
        db.session.add(
            Order(
                shop_id=shop_id,
                order_id=huge,
                status=10,
                openid="o",
                platform_created_at=now,
                platform_updated_at=now,
                order_price_fen=10**12 + 1,
            )
        )
    db.session.commit()
    stored = db.session.scalars(sa.select(Order).where(Order.order_id == huge)).all()
    assert [o.order_id for o in stored] == [huge, huge]
    assert stored[0].order_price_fen == 10**12 + 1
    _expect_duplicate(
        Order(
            shop_id=world.a.shop_id,
            order_id=huge,
            status=10,
            openid="o",
            platform_created_at=now,
            platform_updated_at=now,
        )
    )


def test_one_binding_per_target(ctx):
    world = ctx
    _expect_duplicate(
        AddressBinding(
            shop_id=world.a.shop_id,
            scope=BindingScope.SKU,
            sku_id="sku_A",
            target_key=AddressBinding.key_for(BindingScope.SKU, sku_id="sku_A"),
            address_pk=world.a.address_pk,
        )
    )
    with pytest.raises(ValueError):
        AddressBinding.key_for(BindingScope.SKU)
    assert AddressBinding.key_for(BindingScope.SHOP) == "shop"


def test_times_come_back_aware_utc_and_naive_times_are_refused(ctx):
    world = ctx
    local = datetime(2026, 11, 21, 8, 0, tzinfo=timezone(timedelta(hours=8)))
    customer = db.session.get(Customer, world.a.customer_id)
    customer.last_seen_at = local
    db.session.commit()
    db.session.expire_all()
    stored = db.session.get(Customer, world.a.customer_id).last_seen_at
    assert stored == local and stored.tzinfo == UTC and stored.hour == 0
    customer = db.session.get(Customer, world.a.customer_id)
    customer.last_seen_at = datetime(2026, 11, 21, 8, 0)
    with pytest.raises(sa.exc.StatementError):
        db.session.flush()


def test_credentials_are_encrypted_at_rest(ctx):
    world = ctx
    raw = db.session.execute(
        sa.text("SELECT app_secret, push_token, encoding_aes_key FROM shops WHERE id = :id"), {"id": world.a.shop_id}
    ).one()
    shop = db.session.get(Shop, world.a.shop_id)
    for stored, plain in zip(raw, (shop.app_secret, shop.push_token, shop.encoding_aes_key), strict=True):
        assert plain not in stored
        assert secretbox.decrypt(stored) == plain


def test_secrets_are_masked_for_display():
    assert secretbox.mask("abcdefghijklmnop") == "••••••••mnop"
    assert secretbox.mask("short") == "••••••••"
    assert secretbox.mask("") == ""


def test_shop_fields_are_validated(ctx):
    with pytest.raises(ValueError):
        Shop(appid="not-an-appid")
    with pytest.raises(ValueError):
        Shop(encoding_aes_key="too-short")
    with pytest.raises(ValueError):
        Shop(timezone="Mars/Olympus")
    with pytest.raises(ValueError):
        Shop(api_base_url="ftp://example")
    assert Shop(api_base_url="http://127.0.0.1:5000/sim/").api_base_url == "http://127.0.0.1:5000/sim"


def test_deleting_a_shop_deletes_its_data(ctx):
    world = ctx
    db.session.delete(db.session.get(Shop, world.b.shop_id))
    db.session.commit()
    for model in (Order, Conversation, Message, Customer):
        shops = set(db.session.scalars(sa.select(model.shop_id)))
        assert shops == {world.a.shop_id}, model.__name__


def test_new_shops_get_unique_webhook_keys(ctx):
    keys = {make_shop(f"s{i}").webhook_key for i in range(5)}
    assert len(keys) == 5 and all(len(k) >= 20 for k in keys)
