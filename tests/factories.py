"""Build realistic rows for tests. Functions add to db.session and flush; callers commit."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from app.extensions import db
from app.models import (
    AddressBinding,
    AfterSale,
    AuditLog,
    BindingScope,
    Conversation,
    Customer,
    InboxEvent,
    Message,
    MessageDirection,
    Order,
    OrderItem,
    OutboxCall,
    QuickReply,
    ReturnAddress,
    Role,
    Rule,
    RuleDecision,
    RuleVersion,
    SenderKind,
    Shop,
    User,
)
from app.models.chat import DeliveryState
from app.settings import services

PASSWORD = "correct-horse-battery"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
_seq = itertools.count(1)


def now() -> datetime:
    return datetime.now(UTC)


def make_shop(name: str, appid: str | None = None, **kw) -> Shop:
    n = next(_seq)
    return services.create_shop(
        services.ShopInput(
            name=name,
            appid=appid or f"wx{n:016d}",
            app_secret=kw.pop("app_secret", f"secret-{n}-0123456789abcdef"),
            push_token=kw.pop("push_token", f"token{n}"),
            encoding_aes_key=kw.pop("encoding_aes_key", AES_KEY),
            api_base_url=kw.pop("api_base_url", "http://127.0.0.1:9/sim"),
            **kw,
        )
    )


def make_user(username: str, role: Role = Role.AGENT, shops=(), **kw) -> User:
    return services.create_user(
        username=username,
        display_name=kw.pop("display_name", username),
        password=kw.pop("password", PASSWORD),
        role=role,
        shops=list(shops),
        **kw,
    )


@dataclass
class ShopData:
    shop_id: int
    name: str
    customer_id: int
    nickname: str
    conversation_id: int
    message_text: str
    order_pk: int
    order_id: str
    after_sale_pk: int
    after_sale_order_id: str
    address_pk: int
    address_name: str
    rule_id: int
    rule_name: str
    quick_reply_id: int
    markers: list[str] = field(default_factory=list)


@dataclass
class World:
    a: ShopData
    b: ShopData
    users: dict[str, int]


def fill_shop(shop: Shop, tag: str, agent: User) -> ShopData:
    """One of everything a shop has, with strings unique to this shop (to spot leaks in pages)."""
    t0 = now() - timedelta(hours=2)
    customer = Customer(shop_id=shop.id, openid=f"o_{tag}_buyer", unionid=f"u_{tag}", nickname=f"买家{tag}昵称")
    db.session.add(customer)
    db.session.flush()
    conversation = Conversation(
        shop_id=shop.id,
        customer_id=customer.id,
        assignee_id=agent.id,
        last_message_at=t0 + timedelta(minutes=1),
        last_buyer_message_at=t0,
        unread_count=1,
        last_seq=2,
        last_message_preview=f"回复{tag}：今天发货",
    )
    db.session.add(conversation)
    db.session.flush()
    text = f"消息{tag}：我的订单什么时候发货？"
    db.session.add_all(
        [
            Message(
                shop_id=shop.id,
                conversation_id=conversation.id,
                direction=MessageDirection.INBOUND,
                sender_kind=SenderKind.CUSTOMER,
                seq=1,
                text=text,
                platform_msg_id=f"m_{tag}_1",
                created_at=t0,
            ),
            Message(
                shop_id=shop.id,
                conversation_id=conversation.id,
                direction=MessageDirection.OUTBOUND,
                sender_kind=SenderKind.AGENT,
                sender_user_id=agent.id,
                seq=2,
                text=f"回复{tag}：今天发货",
                request_id=f"req_{tag}_1",
                delivery_state=DeliveryState.SENT,
                created_at=t0 + timedelta(minutes=1),
            ),
        ]
    )
    order_id = f"3705{ord(tag):014d}"
    order = Order(
        shop_id=shop.id,
        order_id=order_id,
        status=20,
        openid=customer.openid,
        unionid=customer.unionid,
        customer_id=customer.id,
        platform_created_at=t0 - timedelta(hours=1),
        platform_updated_at=t0,
        paid_at=t0 - timedelta(minutes=59),
        product_price_fen=12900,
        order_price_fen=12900,
        address={"user_name": "林**", "tel_number": "138****0000"},
        items=[
            OrderItem(
                shop_id=shop.id,
                product_id=f"p_{tag}",
                sku_id=f"sku_{tag}",
                title=f"商品{tag}",
                quantity=1,
                sale_price_fen=12900,
                real_price_fen=12900,
                sku_attrs=[{"attr_key": "颜色", "attr_value": "黑色"}],
            )
        ],
    )
    db.session.add(order)
    after_sale = AfterSale(
        shop_id=shop.id,
        after_sale_order_id=f"as_{tag}_1",
        order_id=order_id,
        openid=customer.openid,
        customer_id=customer.id,
        type="REFUND",
        status="MERCHANT_PROCESSING",
        product_id=f"p_{tag}",
        sku_id=f"sku_{tag}",
        refund_amount_fen=12900,
        reason_text=f"不想要了{tag}",
        deadline_at=now() + timedelta(hours=20),
        platform_created_at=t0,
        platform_updated_at=t0,
    )
    db.session.add(after_sale)
    address = ReturnAddress(
        shop_id=shop.id,
        address_id=f"addr_{tag}",
        name=f"仓库{tag}",
        contact_name="王仓管",
        phone="13800000000",
        province="浙江省",
        city="杭州市",
        county="余杭区",
        detail=f"仓储路{tag}号",
        is_return_address=True,
        is_default_return=True,
    )
    db.session.add(address)
    db.session.flush()
    db.session.add(
        AddressBinding(
            shop_id=shop.id,
            scope=BindingScope.SKU,
            sku_id=f"sku_{tag}",
            product_id=f"p_{tag}",
            target_key=AddressBinding.key_for(BindingScope.SKU, sku_id=f"sku_{tag}"),
            address_pk=address.id,
        )
    )
    rule = Rule(
        shop_id=shop.id,
        name=f"规则{tag}：4小时内未发货仅退款自动同意",
        trigger="aftersale.created",
        conditions=[{"field": "hours_since_paid", "op": "lte", "value": 4}],
        actions=[{"kind": "approve_refund"}],
    )
    db.session.add(rule)
    db.session.flush()
    db.session.add(RuleVersion(shop_id=shop.id, rule_id=rule.id, version=1, definition={"name": rule.name}))
    db.session.add(
        RuleDecision(
            shop_id=shop.id,
            rule_id=rule.id,
            rule_version=1,
            trigger="aftersale.created",
            subject_kind="after_sale",
            subject_id=after_sale.after_sale_order_id,
            idempotency_key=f"{rule.id}:1:{after_sale.after_sale_order_id}:MERCHANT_PROCESSING",
            outcome="would_approve",
            dry_run=True,
        )
    )
    quick = QuickReply(shop_id=shop.id, shortcut="ship", title="发货时间", content=f"快捷回复{tag}：48小时内发货")
    db.session.add(quick)
    db.session.add(
        InboxEvent(
            shop_id=shop.id, dedupe_key=f"push_{tag}_1", event="commkf_send_msg_to_kf", payload={"msg_id": f"m_{tag}_1"}
        )
    )
    db.session.add(
        OutboxCall(
            shop_id=shop.id,
            idempotency_key=f"req_{tag}_1",
            operation="commkf.sendmsg",
            payload={"open_id": customer.openid},
        )
    )
    db.session.add(AuditLog(shop_id=shop.id, user_id=agent.id, action="test.seeded"))
    db.session.flush()
    return ShopData(
        shop_id=shop.id,
        name=shop.name,
        customer_id=customer.id,
        nickname=customer.nickname,
        conversation_id=conversation.id,
        message_text=text,
        order_pk=order.id,
        order_id=order_id,
        after_sale_pk=after_sale.id,
        after_sale_order_id=after_sale.after_sale_order_id,
        address_pk=address.id,
        address_name=address.name,
        rule_id=rule.id,
        rule_name=rule.name,
        quick_reply_id=quick.id,
        markers=[
            shop.name,
            customer.nickname,
            text,
            order_id,
            after_sale.after_sale_order_id,
            address.name,
            rule.name,
            quick.content,
        ],
    )


def build_world() -> World:
    """Shop A and shop B, each full of data; agents and supervisors of one shop each; an admin."""
    shop_a = make_shop("杭州旗舰店A", appid="wxaaaaaaaaaaaaaaaa")
    shop_b = make_shop("深圳分店B", appid="wxbbbbbbbbbbbbbbbb")
    agent_a = make_user("agent_a", Role.AGENT, [shop_a])
    agent_b = make_user("agent_b", Role.AGENT, [shop_b])
    supervisor_a = make_user("supervisor_a", Role.SUPERVISOR, [shop_a])
    supervisor_b = make_user("supervisor_b", Role.SUPERVISOR, [shop_b])
    admin = make_user("admin", Role.ADMIN)
    a = fill_shop(shop_a, "A", agent_a)
    b = fill_shop(shop_b, "B", agent_b)
    db.session.commit()
    users = {u.username: u.id for u in (agent_a, agent_b, supervisor_a, supervisor_b, admin)}
    return World(a=a, b=b, users=users)
