"""The buyer-message hot path: how many statements a message costs (every push runs them)."""

from __future__ import annotations

import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.ingest import store
from app.models import Customer
from tests.factories import make_shop
from tests.statements import statements


def _statements(run) -> list[str]:
    """The verb of each statement ``run`` sends."""
    return [s.split(None, 1)[0].upper() for s in statements(db.engine, run)]


def _message(openid: str, msg_id: str) -> dict:
    return {"FromUserName": openid, "msg_id": msg_id, "msg_type": "text", "text": {"content": "在吗"},
            "CreateTime": int(utcnow().timestamp())}


def test_a_message_costs_few_statements_and_a_new_buyer_is_seen_at_once(app):
    with app.app_context():
        shop_id = make_shop("热路径").id
        db.session.commit()
        store.store_buyer_message(shop_id, _message("o_warm", "m0"))  # the shop's reply-clock policy, cached
        db.session.commit()
        sqlite_lock = 1 if db.engine.dialect.name == "sqlite" else 0

        first = _statements(lambda: store.store_buyer_message(shop_id, _message("o_hot", "m1")))
        db.session.commit()
        # Their open conversation? none. The buyer? unknown (so nothing was filed before: not asked).
        # Add the buyer (seen now: no UPDATE of them later), open the conversation, read it locked,
        # file the message, start the reply clock, update the conversation.
        opening = ["SELECT", "SELECT", "INSERT", "INSERT", "SELECT", "INSERT", "INSERT", "UPDATE"]
        assert first == ["UPDATE"] * sqlite_lock + opening
        customer = db.session.scalar(sa.select(Customer).where(Customer.openid == "o_hot"))
        assert customer.last_seen_at is not None

        again = _statements(lambda: store.store_buyer_message(shop_id, _message("o_hot", "m2")))
        db.session.commit()
        # The conversation with everything (locked), the message, the conversation's counters.
        assert again == ["UPDATE"] * sqlite_lock + ["SELECT", "INSERT", "UPDATE"]


def test_values_bound_at_execution_must_name_columns():
    """A misspelt key would be left out of the INSERT or the SET without a word: it is an error."""
    import pytest

    from app.db import columns_of
    from app.models import Conversation

    table = Conversation.__table__
    assert columns_of(table, {"last_seq": 1, "pk": 5}, "pk") == {"last_seq": 1, "pk": 5}
    with pytest.raises(ValueError, match="conversations has no column last_sequence"):
        columns_of(table, {"last_sequence": 1})
