"""The platform client against the simulator, over real HTTP: tokens, retries, errors, ids."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.db import utcnow
from app.extensions import db
from app.models import ApiBlock, PlatformToken, Shop
from app.platform import client as platform_client
from app.platform import client_for
from app.platform.client import (
    ApiBlocked,
    BadRequest,
    BusinessError,
    Credentials,
    NotAuthorized,
    PlatformClient,
    PlatformUnavailable,
    QuotaExhausted,
    RateLimited,
    TokenStore,
)
from app.platform.simulator.scenario import CATALOGUE, new_buyer


@pytest.fixture
def client(app, polled_shop):
    shop_id, sim_shop = polled_shop
    with app.app_context():
        yield client_for(db.session.get(Shop, shop_id)), sim_shop
        db.session.remove()


def _token_calls(simulator, sim_shop):
    return [c for c in simulator.platform.calls(sim_shop) if c[1] == "/cgi-bin/stable_token"]


def test_one_token_serves_many_calls_and_is_shared(app, simulator, client):
    api, sim_shop = client
    for _ in range(5):
        assert api.list_addresses()
    row = db.session.get(PlatformToken, api.credentials.shop_id)
    assert row is not None and row.access_token == sim_shop.current_token
    # Another client (another process) reads the same token from the database.
    other = client_for(db.session.get(Shop, api.credentials.shop_id))
    assert other.access_token() == row.access_token


def test_an_expired_token_is_refreshed_once_and_the_call_retried(app, simulator, client):
    api, sim_shop = client
    api.list_addresses()
    first = sim_shop.current_token
    simulator.platform.expire_current_token(sim_shop)
    assert api.list_addresses()
    assert sim_shop.current_token != first
    errcodes = [c[3] for c in simulator.platform.calls(sim_shop, "/channels/ec/merchant/address/list")]
    assert errcodes == [0, 42001, 0]


def _proxy_environment(monkeypatch, proxy: str, no_proxy: str | None) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    if no_proxy is not None:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setattr(platform_client, "_environments", {})  # read again under this environment


def _client_at(app, shop_id: int, sim_shop, base_url: str) -> PlatformClient:
    with app.app_context():
        engine = db.engine
    return PlatformClient(Credentials(shop_id, sim_shop.appid, sim_shop.secret, base_url), TokenStore(engine),
                          max_attempts=1)


def test_calls_go_through_the_environment_s_proxy(app, simulator, polled_shop, monkeypatch):
    """A desk behind an egress proxy (HTTP_PROXY): the platform's host is reached through it. The
    simulator plays the proxy here: it serves the absolute URL's path."""
    shop_id, sim_shop = polled_shop
    _proxy_environment(monkeypatch, simulator.url, None)
    listed = len(simulator.platform.calls(sim_shop, "/channels/ec/merchant/address/list"))
    assert _client_at(app, shop_id, sim_shop, "http://platform.invalid").list_addresses() is not None
    assert len(simulator.platform.calls(sim_shop, "/channels/ec/merchant/address/list")) == listed + 1


def test_no_proxy_is_honoured_and_a_dead_proxy_surfaces(app, simulator, polled_shop, monkeypatch):
    shop_id, sim_shop = polled_shop
    _proxy_environment(monkeypatch, "http://127.0.0.1:9", "127.0.0.1")
    assert _client_at(app, shop_id, sim_shop, simulator.url).list_addresses() is not None
    _proxy_environment(monkeypatch, "http://127.0.0.1:9", None)
    with pytest.raises(PlatformUnavailable):
        _client_at(app, shop_id, sim_shop, simulator.url).list_addresses()


def test_busy_is_retried_with_backoff(app, simulator, client):
    api, sim_shop = client
    sim_shop.faults.update(busy_rate=0.3)
    sim_shop.rng.seed(3)  # deterministic: some -1s, never four in a row
    for _ in range(10):
        api.list_addresses()
    errcodes = [c[3] for c in simulator.platform.calls(sim_shop, "/channels/ec/merchant/address/list")]
    assert -1 in errcodes and errcodes.count(0) == 10


def test_busy_for_too_long_surfaces(app, simulator, client):
    api, sim_shop = client
    sim_shop.faults.update(busy_rate=1.0)
    with pytest.raises(PlatformUnavailable) as caught:
        api.list_addresses()
    assert caught.value.errcode == -1 and caught.value.retryable
    assert len(simulator.platform.calls(sim_shop, "/channels/ec/merchant/address/list")) == api.max_attempts


def test_minute_quota_waits_for_the_next_minute_once_when_it_is_near(app, simulator, client):
    api, sim_shop = client
    waits = []
    api.sleep = waits.append
    api._until_next_minute = lambda: 3.0
    api.rate_limit_wait_cap = 10.0
    sim_shop.faults.update(rate_limit_rate=1.0)
    with pytest.raises(RateLimited) as caught:
        api.list_addresses()
    assert waits == [3.0], "one wait for the next minute, not a retry within the same minute"
    assert caught.value.until is not None and caught.value.retryable


def test_minute_quota_far_from_the_next_minute_defers_the_caller(app, simulator, client):
    api, sim_shop = client
    waits = []
    api.sleep = waits.append
    api._until_next_minute = lambda: 40.0
    sim_shop.faults.update(rate_limit_rate=1.0)
    before = utcnow()
    with pytest.raises(RateLimited) as caught:
        api.list_addresses()
    assert waits == [] and 39 <= (caught.value.until - before).total_seconds() <= 41
    assert len(simulator.platform.calls(sim_shop, "/channels/ec/merchant/address/list")) == 1


def test_connection_errors_never_carry_the_access_token(app, simulator, client):
    api, _ = client
    api.access_token()
    api.credentials = Credentials(
        api.credentials.shop_id, api.credentials.appid, api.credentials.secret, "http://127.0.0.1:9", "Asia/Shanghai"
    )
    api.max_attempts = 1
    with pytest.raises(PlatformUnavailable) as caught:
        api.list_addresses()
    token = db.session.get(PlatformToken, api.credentials.shop_id).access_token
    assert token not in str(caught.value) and "access_token" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None, "nothing attached to be logged"


def test_timeouts_are_retried_then_surface(app, simulator, client):
    api, sim_shop = client
    sim_shop.faults.update(timeout_rate=1.0, timeout_seconds=1.5)
    api.max_attempts = 2
    with pytest.raises(PlatformUnavailable, match="Timeout"):
        api.list_addresses()


def test_daily_quota_blocks_the_api_until_tomorrow(app, simulator, client):
    api, sim_shop = client
    buyer = new_buyer(simulator.platform, sim_shop, __import__("random").Random(1))
    order = simulator.platform.place_order(sim_shop, buyer, [dict(CATALOGUE[0])])
    for _ in range(30):
        api.decode_address(order["order_id"])
    with pytest.raises(QuotaExhausted):
        api.decode_address(order["order_id"])
    block = db.session.scalar(sa.select(ApiBlock))
    assert block.api == "/channels/ec/order/sensitiveinfo/decode" and block.errcode == 45009
    calls_before = len(simulator.platform.calls(sim_shop))
    with pytest.raises(ApiBlocked):
        api.decode_address(order["order_id"])
    assert len(simulator.platform.calls(sim_shop)) == calls_before, "a blocked API is not called at all"
    assert api.list_addresses(), "other APIs still work"


def test_unauthorised_api_is_surfaced_and_blocked(app, simulator, client):
    api, _ = client
    with pytest.raises(NotAuthorized):
        api.call("/channels/ec/not/a/real/api", {})
    assert db.session.scalar(sa.select(ApiBlock.errcode)) == 48001


def test_bad_requests_are_not_retried(app, simulator, client):
    api, sim_shop = client
    with pytest.raises(BadRequest):
        api.list_orders(0, 10 * 86400)  # beyond the 7-day window
    assert len(simulator.platform.calls(sim_shop, "/channels/ec/order/list/get")) == 1


def test_business_errors_carry_the_errcode(app, simulator, client):
    api, _ = client
    with pytest.raises(BusinessError) as caught:
        api.get_after_sale("nope")
    assert caught.value.errcode == 10020001


def test_ids_are_strings_and_reasons_are_read_from_either_key(app, simulator, client):
    api, sim_shop = client
    buyer = new_buyer(simulator.platform, sim_shop, __import__("random").Random(2))
    order = simulator.platform.place_order(sim_shop, buyer, [dict(CATALOGUE[2])])
    listed = api.list_orders(order["create_time"] - 1, order["create_time"] + 1)
    assert listed["order_id_list"] == [order["order_id"]] and isinstance(listed["order_id_list"][0], str)
    detail = api.get_order(order["order_id"])
    assert detail["order_id"] == order["order_id"]
    assert detail["order_detail"]["delivery_info"]["address_info"]["user_name"] == "林*", "masked by default"
    assert {r["reject_reason_type"] for r in api.reject_reasons()} >= {1, 2}
    sim_shop.reason_list_key = "reason_list"  # the documented key
    assert {r["reject_reason_type"] for r in api.reject_reasons()} >= {1, 2}


# --- the token and block memory (one process reads each from the database once) ------------------


def _statements_on(engine, tables: tuple[str, ...]):
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if any(table in statement for table in tables):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", before)
    return seen, lambda: sa.event.remove(engine, "before_cursor_execute", before)


def test_calls_read_the_token_and_the_blocks_once_per_process(app, simulator, client):
    api, _ = client
    api.list_addresses()
    seen, stop = _statements_on(db.engine, ("platform_tokens", "api_blocks"))
    try:
        for _ in range(5):
            assert client_for(db.session.get(Shop, api.credentials.shop_id)).list_addresses()
    finally:
        stop()
    assert seen == [], "the token and the (absent) blocks came from memory"


def test_a_token_another_process_stored_is_used_after_the_platform_rejects_ours(app, simulator, client):
    api, sim_shop = client
    api.list_addresses()
    ours = sim_shop.current_token
    # Another process forces a refresh and stores the new token; the platform then ends ours.
    newer = simulator.platform.stable_token(
        {"appid": sim_shop.appid, "secret": sim_shop.secret, "grant_type": "client_credential", "force_refresh": True}
    )["access_token"]
    db.session.execute(
        sa.update(PlatformToken).where(PlatformToken.shop_id == api.credentials.shop_id).values(access_token=newer)
    )
    db.session.commit()
    sim_shop.tokens[ours] = simulator.platform.clock() - 1
    token_calls = len(_token_calls(simulator, sim_shop))
    assert api.list_addresses()
    errcodes = [c[3] for c in simulator.platform.calls(sim_shop, "/channels/ec/merchant/address/list")]
    assert errcodes == [0, 42001, 0]
    assert len(_token_calls(simulator, sim_shop)) == token_calls, "the stored token, not a new fetch"
    assert db.session.get(PlatformToken, api.credentials.shop_id).access_token == newer


def test_a_block_another_process_recorded_is_obeyed_once_the_memory_is_stale(app, simulator, client, monkeypatch):
    from app.platform.client import TokenStore

    api, sim_shop = client
    api.list_addresses()  # the shop's blocks (none) are now in memory
    until = utcnow() + timedelta(hours=1)
    db.session.add(ApiBlock(shop_id=api.credentials.shop_id, api="/channels/ec/merchant/address/list",
                            errcode=45009, errmsg="quota", blocked_until=until))
    db.session.commit()
    monkeypatch.setattr(TokenStore, "BLOCKS_FRESH_FOR", 0.0)  # as if BLOCKS_FRESH_FOR seconds had passed
    calls = len(simulator.platform.calls(sim_shop))
    with pytest.raises(ApiBlocked):
        api.list_addresses()
    assert len(simulator.platform.calls(sim_shop)) == calls


def test_the_app_secret_is_read_only_to_fetch_a_token(app, simulator, client):
    api, sim_shop = client
    api.list_addresses()  # a token is stored
    shop = db.session.get(Shop, api.credentials.shop_id)
    db.session.expire(shop)
    other = client_for(shop)
    assert other.list_addresses()
    assert "app_secret" in sa.inspect(shop).unloaded, "no credentials loaded (or decrypted) for a call"
    simulator.platform.expire_current_token(sim_shop)
    assert other.list_addresses(), "the secret is read when a token must be fetched"
