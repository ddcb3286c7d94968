"""All models, one module per domain. Importing this package registers every table."""

from app.models.audit import AuditLog
from app.models.chat import (
    AutoReplyConfig,
    Conversation,
    ConversationStatus,
    DeliveryState,
    Message,
    MessageDirection,
    QuickReply,
    SenderKind,
)
from app.models.integration import (
    ApiBlock,
    InboxEvent,
    InboxStatus,
    OutboxCall,
    OutboxStatus,
    PlatformToken,
    SyncCursor,
)
from app.models.orders import (
    AfterSale,
    AfterSaleAction,
    AfterSaleActionKind,
    AfterSaleActionState,
    AfterSaleStatus,
    AfterSaleType,
    Order,
    OrderItem,
    OrderStatus,
    Sku,
)
from app.models.people import AgentConnection, Customer, CustomerTag, Role, User, user_shops
from app.models.returns import AddressBinding, BindingScope, ReturnAddress
from app.models.rules import Rule, RuleDecision, RuleSettings, RuleVersion
from app.models.shops import Shop
from app.models.sla import ReplyTurn, SlaHourly, SlaReplyHistogram, SlaSettings, SlaUnit, TurnOutcome

__all__ = [
    "AddressBinding",
    "AfterSale",
    "AfterSaleAction",
    "AfterSaleActionKind",
    "AfterSaleActionState",
    "AfterSaleStatus",
    "AfterSaleType",
    "AgentConnection",
    "ApiBlock",
    "AuditLog",
    "AutoReplyConfig",
    "BindingScope",
    "Conversation",
    "ConversationStatus",
    "Customer",
    "CustomerTag",
    "DeliveryState",
    "InboxEvent",
    "InboxStatus",
    "Message",
    "MessageDirection",
    "Order",
    "OrderItem",
    "OrderStatus",
    "OutboxCall",
    "OutboxStatus",
    "PlatformToken",
    "QuickReply",
    "ReplyTurn",
    "ReturnAddress",
    "Role",
    "Rule",
    "RuleDecision",
    "RuleSettings",
    "RuleVersion",
    "SenderKind",
    "Shop",
    "Sku",
    "SlaHourly",
    "SlaReplyHistogram",
    "SlaSettings",
    "SlaUnit",
    "SyncCursor",
    "TurnOutcome",
    "User",
    "user_shops",
]
