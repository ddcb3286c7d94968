"""Domain events: ingest announces what changed; later features (realtime, rules, SLA) subscribe.

Signals are sent after the change is committed, with plain ids (never ORM objects), from whatever
thread did the work. Receivers must be quick or hand work off; an exception in one is logged and does
not undo the ingest.
"""

from __future__ import annotations

import logging

from blinker import Namespace

log = logging.getLogger(__name__)
signals = Namespace()

# sender: the shop id. kwargs listed per signal.
order_changed = signals.signal("order-changed")  # order_pk, order_id, status, created(bool)
after_sale_changed = signals.signal("after-sale-changed")  # after_sale_pk, after_sale_order_id, status, type, created
# An agent's action on an after-sale was queued, succeeded or failed (app/orders/actions.py).
after_sale_action_changed = signals.signal("after-sale-action-changed")  # action_id, after_sale_pk, kind, state
buyer_message_received = signals.signal("buyer-message-received")  # conversation_id, message_id, new_conversation
addresses_synced = signals.signal("addresses-synced")  # count, deleted
# The console's changes, as plain dicts ready to send (see app/desk/views.py and docs/api.md).
# conversation (summary), reason, message (dict or None), notify_user_ids (assignees before and after)
conversation_changed = signals.signal("conversation-changed")
message_changed = signals.signal("message-changed")  # message (dict), created (bool)
# sender: 0 (not a shop). user_id, presence, shop_ids (None: every shop)
presence_changed = signals.signal("presence-changed")


def emit(signal, shop_id: int, **kwargs) -> None:
    for receiver in signal.receivers_for(shop_id):
        try:
            receiver(shop_id, **kwargs)
        except Exception:
            log.exception("receiver %r of %s failed", receiver, signal.name)
