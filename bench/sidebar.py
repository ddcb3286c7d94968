"""The order sidebar and the after-sale queue on a large shop: response times over real HTTP.

Production shape on loopback: PostgreSQL and one gunicorn web process. The data is generated in SQL
(``generate_series``, no ORM): two shops of one merchant, BUYERS buyers and ORDERS orders (one item
each), one buyer with 50 orders in the flagship shop plus 5 in the second shop under the same
unionid (the sidebar shows both), OPEN open after-sales across both shops as many closed ones,
return addresses with SKU bindings, and handled-by actions on a fifth of the open after-sales.

Then, signed in as an agent of both shops, it requests the buyer's sidebar
(``GET /conversations/<id>/sidebar``), the queue page (``GET /after-sales/``: every open after-sale
of both shops by deadline, 100 a page, with its total) and the return-address bindings page of the
flagship shop (``GET /return-addresses/?shop=<id>``: its 200 most recently sold SKUs from the SKU
catalogue, with bindings and resolution) again and again, one at a time.

    python bench/sidebar.py [--orders 1000000] [--buyers 200000] [--open 50000] [--requests 300]

Prints one JSON line. Goal (issue 5): sidebar p95 <= 20 ms, queue p95 <= 100 ms.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_shop, desk_env, emit, flask, free_port, postgres_database, start_web, stop, summary_ms

PASSWORD = "bench-password-0123"
TARGET_ORDERS = 50
TARGET_OTHER_SHOP = 5


def load(engine: sa.Engine, shop1: int, shop2: int, orders: int, buyers: int, open_count: int, user_id: int) -> dict:
    """Generate the data set in SQL; returns what was made and how long it took."""
    started = time.monotonic()
    now = datetime.now(UTC).replace(tzinfo=None)  # stored as naive UTC (app/db.py UTCDateTime)
    target = TARGET_ORDERS + TARGET_OTHER_SHOP
    # Every step-th order has an after-sale, alternating runs of open and closed ones.
    step = max(1, (orders - target) // (2 * open_count))
    params = {"s1": shop1, "s2": shop2, "n": orders, "buyers": buyers, "target": target, "own": TARGET_ORDERS}
    statements = [
        # Buyers of the flagship shop; the first 10% are also buyers of the second shop (same unionid).
        """INSERT INTO customers (shop_id, openid, unionid, nickname, created_at)
            SELECT %(s1)s, 'o_' || b, 'u_' || b, '买家' || b, %(now)s FROM generate_series(1, %(buyers)s) b""",
        """INSERT INTO customers (shop_id, openid, unionid, nickname, created_at)
            SELECT %(s2)s, 'o2_' || b, 'u_' || b, '买家' || b, %(now)s FROM generate_series(1, %(buyers)s / 10) b""",
        # Orders: the target buyer (b = 1) has the newest 50 in shop 1 and 5 in shop 2; the rest are
        # spread over every other buyer, one in ten in the second shop.
        """INSERT INTO orders (shop_id, order_id, status, openid, unionid, customer_id, platform_created_at,
                platform_updated_at, paid_at, shipped_at, product_price_fen, order_price_fen, freight_fen,
                discounted_price_fen, address, phone_tail, deliveries, raw, fetched_at, created_at, updated_at)
            SELECT CASE WHEN i <= %(own)s THEN %(s1)s WHEN i <= %(target)s THEN %(s2)s
                        WHEN i %% 10 = 0 THEN %(s2)s ELSE %(s1)s END,
                   (3700000000000000000 + i)::text,
                   (ARRAY[20, 30, 100, 100, 100, 250])[1 + i %% 6],
                   CASE WHEN i <= %(own)s THEN 'o_1' WHEN i <= %(target)s THEN 'o2_1'
                        WHEN i %% 10 = 0 THEN 'o2_' || b ELSE 'o_' || b END,
                   'u_' || b,
                   NULL,
                   t, t + interval '1 hour', t + interval '1 minute',
                   CASE WHEN i %% 6 IN (1, 2, 3, 4) THEN t + interval '20 hours' END,
                   9900 + (i %% 50) * 1000, 9900 + (i %% 50) * 1000, CASE WHEN i %% 7 = 0 THEN 800 ELSE 0 END, 0,
                   jsonb_build_object('user_name', '林**', 'tel_number', '139****' || lpad((i %% 10000)::text, 4, '0'),
                       'province_name', '浙江省', 'city_name', '杭州市', 'county_name', '西湖区',
                       'detail_info', '文三****'),
                   lpad((i %% 10000)::text, 4, '0'),
                   CASE WHEN i %% 6 IN (1, 2, 3, 4) THEN jsonb_build_array(jsonb_build_object(
                       'waybill_id', 'SF' || lpad(i::text, 12, '0'), 'delivery_id', 'SF',
                       'delivery_name', '顺丰速运')) ELSE '[]'::jsonb END,
                   jsonb_build_object('order_id', (3700000000000000000 + i)::text, 'note', repeat('x', 300)),
                   %(now)s, %(now)s, %(now)s
            FROM (SELECT i, CASE WHEN i <= %(target)s THEN 1 ELSE 2 + i %% (%(buyers)s - 1) END AS b,
                         %(now)s - i * interval '13 seconds' AS t
                  FROM generate_series(1, %(n)s) i) s""",
        "UPDATE orders SET customer_id = c.id FROM customers c WHERE orders.id <= %(target)s "
        "AND c.shop_id = orders.shop_id AND c.openid = orders.openid",
        """INSERT INTO order_items (shop_id, order_pk, product_id, sku_id, sku_code, title, thumb_img, sku_attrs,
                quantity, sale_price_fen, real_price_fen, on_aftersale_count, finished_aftersale_count)
            SELECT shop_id, id, (10000000 + id %% 200)::text, (20000000 + (id %% 200) * 10 + id %% 3)::text,
                   'SKU-' || id %% 600, '羊绒围巾 经典格纹 ' || id %% 200,
                   'https://img.example/p/' || id %% 200 || '.jpg',
                   '[{"attr_key": "颜色", "attr_value": "驼色"}, {"attr_key": "尺码", "attr_value": "均码"}]'::jsonb,
                   1 + id %% 2, order_price_fen, order_price_fen, 0, 0
            FROM orders""",
        # Open after-sales spread over both shops (every step-th order), as many closed ones, and ten
        # on the target buyer's orders (half of them open, returns among them).
        """INSERT INTO after_sales (shop_id, after_sale_order_id, order_id, order_pk, openid, customer_id, type,
                status, product_id, sku_id, count, refund_amount_fen, refund_reason, reason, reason_text,
                description, prove_imgs, deadline_at, platform_created_at, platform_updated_at, raw, fetched_at,
                created_at, updated_at)
            SELECT o.shop_id, (5700000000000000000 + o.id)::text, o.order_id, o.id, o.openid, o.customer_id,
                   (ARRAY['REFUND', 'REFUND', 'RETURN', 'REFUND', 'EXCHANGE', 'RETURN'])[1 + o.id %% 6],
                   CASE WHEN o.id <= %(target)s
                        THEN (ARRAY['MERCHANT_PROCESSING', 'MERCHANT_REFUND_SUCCESS'])[1 + o.id %% 2]
                        WHEN (o.id / %(step)s) %% 2 = 0
                        THEN (ARRAY['MERCHANT_PROCESSING', 'MERCHANT_PROCESSING', 'MERCHANT_PROCESSING',
                               'USER_WAIT_RETURN', 'MERCHANT_WAIT_RECEIPT', 'PLATFORM_REFUNDING'])[1 + o.id %% 6]
                        ELSE (ARRAY['MERCHANT_REFUND_SUCCESS', 'MERCHANT_RETURN_SUCCESS', 'USER_CANCELD',
                               'MERCHANT_REJECT_REFUND'])[1 + o.id %% 4] END,
                   i.product_id, i.sku_id, 1, o.order_price_fen, '不想要了', 'no_reason', '不想要了',
                   '尺码偏小，想退', '[]'::jsonb,
                   %(now)s + (o.id %% 172800) * interval '1 second',
                   o.platform_created_at + interval '2 hours', o.platform_updated_at,
                   jsonb_build_object('after_sale_order_id', (5700000000000000000 + o.id)::text),
                   %(now)s, %(now)s, %(now)s
            FROM orders o JOIN order_items i ON i.order_pk = o.id
            WHERE o.id <= 10
               OR (o.id > %(target)s AND o.id %% %(step)s = 0 AND o.id <= %(target)s + 2 * %(open)s * %(step)s)""",
        """UPDATE after_sales SET deadline_at = NULL
            WHERE status NOT IN ('MERCHANT_PROCESSING', 'USER_WAIT_RETURN', 'MERCHANT_WAIT_RECEIPT',
                                 'PLATFORM_REFUNDING', 'PLATFORM_REFUND_FAIL', 'USER_WAIT_CONFIRM',
                                 'MERCHANT_REFUND_RETRY_FAIL')""",
        """INSERT INTO return_addresses (shop_id, address_id, name, contact_name, phone, province, city, county,
                detail, is_return_address, is_send_address, is_default_return, is_default_send, deleted_on_platform,
                created_at, updated_at)
            SELECT s, 'addr_' || s || '_' || k, (ARRAY['杭州总仓', '广州退货仓', '已撤仓'])[k], '王仓管', '13800138000',
                   '浙江省', '杭州市', '余杭区', '仓储路' || k || '号', true, k = 1, k = 1, k = 1, k = 3,
                   %(now)s, %(now)s
            FROM unnest(ARRAY[%(s1)s, %(s2)s]) s, generate_series(1, 3) k""",
        # A third of the SKUs are bound to the Guangzhou warehouse, some to the deleted one (fall back).
        """INSERT INTO address_bindings (shop_id, scope, product_id, sku_id, target_key, address_pk, created_at,
                updated_at)
            SELECT a.shop_id, 'sku', (10000000 + p)::text, (20000000 + p * 10)::text, 'sku:' || (20000000 + p * 10),
                   a.id, %(now)s, %(now)s
            FROM generate_series(0, 199) p
            JOIN return_addresses a ON a.shop_id = %(s1)s AND a.name = CASE WHEN p %% 10 = 0 THEN '已撤仓'
                                                                              ELSE '广州退货仓' END
            WHERE p %% 3 = 0""",
        """INSERT INTO after_sale_actions (shop_id, after_sale_pk, after_sale_order_id, order_id, kind, state,
                request_id, from_status, reject_reason_type, requested_by_id, created_at, completed_at)
            SELECT shop_id, id, after_sale_order_id, order_id, 'approve_return', 'succeeded', md5(id::text),
                   'MERCHANT_PROCESSING', NULL, %(user)s, %(now)s - interval '1 hour', %(now)s - interval '59 minutes'
            FROM after_sales WHERE status = 'USER_WAIT_RETURN' OR (status = 'MERCHANT_PROCESSING' AND id %% 7 = 0)""",
        # The SKU catalogue the store keeps as orders arrive (the same sums as its migration's backfill).
        """INSERT INTO skus (shop_id, product_id, sku_id, sku_code, title, thumb_img, units_sold, first_sold_at,
                last_sold_at, updated_at)
            SELECT i.shop_id, i.product_id, i.sku_id, max(i.sku_code), max(i.title), max(i.thumb_img),
                   sum(i.quantity), min(o.platform_created_at), max(o.platform_created_at), %(now)s
            FROM order_items i JOIN orders o ON o.id = i.order_pk
            GROUP BY i.shop_id, i.product_id, i.sku_id""",
        """INSERT INTO conversations (shop_id, customer_id, status, assignee_id, last_message_at,
                last_buyer_message_at, unread_count, last_seq, replies_since_buyer, auto_replies_since_buyer,
                created_at, updated_at)
            SELECT %(s1)s, id, 'open', %(user)s, %(now)s, %(now)s, 0, 0, 0, 0, %(now)s, %(now)s
            FROM customers WHERE shop_id = %(s1)s AND openid = 'o_1'""",
    ]
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement, {**params, "step": step, "user": user_id, "now": now, "open": open_count})
    # Statistics and the visibility map, as autovacuum keeps them on a live database.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    with engine.connect() as conn:
        counts = {
            "orders": conn.scalar(sa.text("SELECT count(*) FROM orders")),
            "buyers": conn.scalar(sa.text("SELECT count(*) FROM customers WHERE shop_id = :s"), {"s": shop1}),
            "open_after_sales": conn.scalar(sa.text("SELECT count(*) FROM after_sales WHERE deadline_at IS NOT NULL")),
            "after_sales": conn.scalar(sa.text("SELECT count(*) FROM after_sales")),
            "target_orders": conn.scalar(sa.text("SELECT count(*) FROM orders WHERE unionid = 'u_1'")),
            "conversation_id": conn.scalar(sa.text("SELECT max(id) FROM conversations")),
        }
    counts["load_seconds"] = round(time.monotonic() - started, 1)
    return counts


def sign_in(base: str, username: str) -> requests.Session:
    session = requests.Session()
    html = session.get(f"{base}/login", timeout=10).text
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)
    response = session.post(
        f"{base}/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, f"sign-in failed: {response.status_code}"
    return session


def timed(session: requests.Session, url: str, n: int, warmup: int = 20) -> tuple[list[float], str]:
    body = ""
    for _ in range(warmup):
        body = session.get(url, timeout=30).text
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        response = session.get(url, timeout=30)
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
        body = response.text
    return samples, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--buyers", type=int, default=200_000)
    parser.add_argument("--open", type=int, default=50_000, help="open after-sales")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per page")
    args = parser.parse_args()

    with postgres_database() as database_url, tempfile.TemporaryDirectory() as tmp:
        env = desk_env(database_url, INBOX_WORKERS_IN_WEB="0")
        flask(env, "db", "upgrade")
        shop1, _ = add_shop(env, "wxbe5d1000000000a1", "http://127.0.0.1:9", name="旗舰店")
        shop2, _ = add_shop(env, "wxbe5d1000000000a2", "http://127.0.0.1:9", name="二店")
        flask(
            env,
            "users",
            "create",
            "agent",
            "--role",
            "agent",
            "--shop",
            str(shop1),
            "--shop",
            str(shop2),
            "--password",
            PASSWORD,
        )
        engine = sa.create_engine(database_url)
        with engine.connect() as conn:
            user_id = conn.scalar(sa.text("SELECT id FROM users WHERE username = 'agent'"))
        made = load(engine, shop1, shop2, args.orders, args.buyers, args.open, user_id)
        engine.dispose()

        port = free_port()
        web = start_web(env, port, threads=4, log_path=Path(tmp) / "web.log")
        try:
            base = f"http://127.0.0.1:{port}"
            session = sign_in(base, "agent")
            sidebar, html = timed(session, f"{base}/conversations/{made['conversation_id']}/sidebar", args.requests)
            shown = html.count('class="order-card')
            other = html.count("is-other-shop")
            queue, page = timed(session, f"{base}/after-sales/", max(50, args.requests // 2))
            rows = page.count("data-after-sale-row=")
            total = re.search(r'data-total="(\d+)"', page)
            skus, page = timed(session, f"{base}/return-addresses/?shop={shop1}", max(50, args.requests // 2))
            sku_rows = page.count("data-sku-row")
        finally:
            stop(web)
    emit(
        {
            "bench": "sidebar",
            "data": {k: v for k, v in made.items() if k != "conversation_id"},
            "sidebar": {
                **summary_ms(sidebar),
                "orders_shown": shown,
                "other_shop_orders": other,
                "buyer_orders": made["target_orders"],
            },
            "queue": {**summary_ms(queue), "rows": rows, "total": int(total.group(1)) if total else None},
            "bindings_page": {**summary_ms(skus), "skus_shown": sku_rows},
            "goal": {"sidebar_p95_ms": 20, "queue_p95_ms": 100},
            "met": {
                "sidebar": summary_ms(sidebar)["p95_ms"] <= 20,
                "queue": summary_ms(queue)["p95_ms"] <= 100,
            },
        }
    )


if __name__ == "__main__":
    main()
