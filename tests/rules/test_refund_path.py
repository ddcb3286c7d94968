"""An automatic refund's cost in statements, from the after-sale's push to the platform's push of
its success (a livestream's regret wave runs this path a thousand times in a minute)."""

from __future__ import annotations

from collections import Counter

from app.db import CLAIM_PLAN
from app.extensions import db
from app.ingest import inbox
from tests.rules.conftest import add_rule
from tests.statements import statements

AFTER_SALE_DETAIL = "/channels/ec/aftersale/getaftersaleorder"


def _statements(app, run) -> list[str]:
    with app.app_context():
        engine = db.engine
    return statements(engine, run)


def _push(desk, record: dict) -> None:
    """The platform's push about an after-sale, received and worked by the inbox as in production."""
    payload = {
        "Event": "channels_ec_aftersale_update",
        "CreateTime": record["update_time"],  # the platform pushes in the second of the change
        "finder_shop_aftersale_status_update": {
            "status": record["status"],
            "after_sale_order_id": record["after_sale_order_id"],
            "order_id": record["order_id"],
        },
    }
    with desk.app.app_context():
        inbox.receive(desk.shop_id, payload, f"{record['after_sale_order_id']}:{record['status']}")
        db.session.commit()
        inbox.process_claimed(inbox.claim())
        db.session.remove()


def _refund(desk, order_id: str) -> tuple[list[str], list[str], list[str]]:
    """One case end to end, the statements of each part: the after-sale's push with its inline
    evaluation; the approval's call with the read-back; the platform's push of the refund's success."""
    record = desk.platform.open_after_sale(desk.sim_shop, order_id, "REFUND")
    first = _statements(desk.app, lambda: _push(desk, record))
    approval = _statements(desk.app, desk.drain)
    with desk.platform.lock:
        done = dict(desk.sim_shop.after_sales[record["after_sale_order_id"]])
    assert done["status"] == "MERCHANT_REFUND_SUCCESS"
    fetched_before = len(desk.platform.calls(desk.sim_shop, AFTER_SALE_DETAIL))
    success = _statements(desk.app, lambda: _push(desk, done))
    # The success push names the status the approval's read-back stored, as of that second: only
    # the order (its after-sale counts) is fetched again, not the after-sale's detail.
    assert len(desk.platform.calls(desk.sim_shop, AFTER_SALE_DETAIL)) == fetched_before
    return first, approval, success


def _kinds(statements: list[str]) -> Counter:
    """(verb, table) of each statement: ``SELECT shops``, ``UPDATE after_sales``..."""
    kinds: Counter = Counter()
    for s in statements:
        words = s.split()
        verb = words[0].upper()
        if verb == "SELECT":
            table = words[words.index("FROM") + 1] if "FROM" in words else words[1]
        elif verb in ("DELETE", "INSERT"):  # DELETE FROM t, INSERT INTO t
            table = words[2]
        else:
            table = words[1]
        kinds[(verb, table)] += 1
    return kinds


def test_an_automatic_refund_reads_and_writes_each_row_few_times(app, rules_shop):
    add_rule(app, rules_shop.shop_id)
    app.config["RULES_EVALUATE_INLINE"] = True
    _refund(rules_shop, rules_shop.order("o_warm"))  # the rule actor, the caches, the first-call paths

    first, approval, success = _refund(rules_shop, rules_shop.order("o_case"))
    rest = approval + success
    pushed, after = _kinds(first), _kinds(rest)

    # A new after-sale is inserted whole, its buyer looked up first and its order stored first (the
    # push's own re-fetch of the order, which the after-sale then links to without a lookup): no
    # UPDATE after it.
    assert pushed[("INSERT", "after_sales")] == 1 and pushed[("UPDATE", "after_sales")] == 0
    # ... and it comes back from the INSERT (RETURNING), and the evaluation inline decides on it as
    # stored (app.db.keeping), not read again: the inbox's "is what the push says stored already?"
    # (before the HTTP calls) and "stored before?" (after them, locked), the buyer's history,
    # request_action's lock (which reads the kept row afresh).
    assert pushed[("SELECT", "after_sales")] == 4
    # The order, its lines and the buyer as the inbox stored them: the evaluation reads none of them
    # again, nor the shop (one read for the inbox event and the evaluation's outbox call). Nothing
    # reads the outbox call again while it is worked (before: once more after each commit).
    assert pushed[("SELECT", "shops")] == 1
    assert pushed[("SELECT", "orders")] == 1 and pushed[("SELECT", "order_items")] == 1
    assert pushed[("SELECT", "customers")] == 1
    # The evaluation is queued by one INSERT ... ON CONFLICT DO NOTHING (no "queued before?" query).
    # The claimed call is read once; one guarded UPDATE marks it done (no locking SELECT before it).
    assert pushed[("SELECT", "outbox_calls")] == 1
    assert after[("SELECT", "outbox_calls")] == 1
    # Queueing the approval: one look at the after-sale's actions, under its lock.
    assert pushed[("SELECT", "after_sale_actions")] == 1
    # Before the approval's call: the action, its after-sale and the order's last refund in one
    # read (before: three); after it, the action once more to record its outcome.
    assert after[("SELECT", "after_sale_actions")] == 2
    assert not [s for s in approval if s.startswith("SELECT max(")]
    # The approval's call and the success push: a shop read each, the order's lines updated in place.
    assert after[("SELECT", "shops")] == 2
    assert after[("DELETE", "order_items")] == 0 and after[("INSERT", "order_items")] == 0
    # The raw detail (deferred, never read back to compare) is written when the detail says something
    # new: the read-back's new status. The success push writes nothing of the after-sale: its
    # detail is not fetched (see _refund).
    approval_raw = [s for s in approval if s.startswith("UPDATE after_sales") and "raw=" in s]
    assert len(approval_raw) == 1 and _kinds(success)[("UPDATE", "after_sales")] == 0
    # The whole case: 61 statements on both databases (SQLite's include those that take its write
    # lock); 69 before the inline evaluation used the rows the inbox had just stored, the
    # after-sale its order as just stored and the approval one read before its call, 86 before
    # earlier cuts. Of the 61 on PostgreSQL, eight
    # are the four claims' plan settings (app.db.CLAIM_PLAN: each claim reads its batch, not the
    # backlog, whatever the statistics), each claim's three statements sent with its commit in one
    # round trip (app.db.claim_rows).
    with app.app_context():
        postgres = db.engine.dialect.name == "postgresql"
    assert len(first) + len(rest) <= 61, (len(first), len(rest))
    if postgres:
        every = first + rest
        claims = [n for n in range(2, len(every)) if tuple(every[n - 2:n]) == CLAIM_PLAN]
        assert len(claims) == 4 and all(every[n].startswith("UPDATE") for n in claims), claims
        assert len([s for s in every if s.startswith("SET LOCAL")]) == 8
