"""Domain events: ingest announces what changed; later features (realtime, rules, SLA) subscribe.

Signals are sent after the change is committed, with plain ids and data (never ORM objects), from whatever
thread did the work. Receivers must be quick or hand work off; an exception in one is logged and does
not undo the ingest.
"""

from __future__ import annotations

import logging

from blinker import Namespace

log = logging.getLogger(__name__)
signals = Namespace()

# sender: the shop id. kwargs listed per signal. openid and unionid (optional) name the buyer, so
# that the sidebar's announcement needs no database read (app/orders/realtime.py).
order_changed = signals.signal("order-changed")  # order_pk, order_id, status, created(bool), openid, unionid
# after_sale_pk, after_sale_order_id, status, type, created; refund_amount_fen, order_id, openid, unionid
after_sale_changed = signals.signal("after-sale-changed")
# An agent's action on an after-sale was queued, succeeded or failed (app/orders/actions.py).
# action_id, after_sale_pk, kind, state; after_sale_order_id, order_id, openid, unionid
after_sale_action_changed = signals.signal("after-sale-action-changed")
# conversation_id, message_id, new_conversation; optionally the committed state, so that receivers need not
# read it again: message_row (store.Record), conversation (store.conversation_state), tags, and
# assigned (True/False: the opening transaction assigned it / found nobody free; None: it did not try)
buyer_message_received = signals.signal("buyer-message-received")
addresses_synced = signals.signal("addresses-synced")  # count, deleted
# Sent INSIDE the transaction that opens a conversation with a buyer's first message, before commit:
# conversation (store.conversation_state Record), tags. A receiver may change the conversation in that
# transaction (assignment, which on PostgreSQL ends it: it sends the commit with its pick) and return
# its state after trying (a Record), or None when it did not try.
# Exceptions propagate: the push is then retried as a whole.
conversation_opening = signals.signal("conversation-opening")
# The console's changes, as plain dicts ready to send (see app/desk/views.py and docs/api.md).
# conversation (summary), reason, message (dict or None), notify_user_ids (assignees before and after),
# assigned (bool, optional: the change gave it to its assignee, as with reason "assigned")
conversation_changed = signals.signal("conversation-changed")
message_changed = signals.signal("message-changed")  # message (dict), created (bool)
# The reply clock (app/sla/clock.py). sla_turn_started: turn (id, conversation_id, deadline_at, warn_at,
# reassign_at), for the deadline queue. sla_changed: turn (clock.turn_dict), reason (warn, breach,
# reassign, answered, closed), after the change is committed.
sla_turn_started = signals.signal("sla-turn-started")
sla_changed = signals.signal("sla-changed")
# sender: 0 (not a shop). user_id, presence, shop_ids (None: every shop)
presence_changed = signals.signal("presence-changed")
# sender: 0. user_id, sids (the user's live console connections, as recorded), reason: every console
# session of the user ended (signing out signs out everywhere), after the commit.
user_signed_out = signals.signal("user-signed-out")


def emit(signal, shop_id: int, **kwargs) -> None:
    for receiver in signal.receivers_for(shop_id):
        try:
            receiver(shop_id, **kwargs)
        except Exception:
            log.exception("receiver %r of %s failed", receiver, signal.name)
