"""The money path end to end: campaigns over HTTP, buys over WebSocket and HTTP, the orders
worker settling into SQL (SQLite and PostgreSQL), pay, time-outs, sale-aware gateways."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest

from livecommerce.checkout import Checkout
from livecommerce.keys import Keys
from livecommerce.log_open import open_log
from tests.waiting import wait_until
from tests.wsclient import Client
from workers.orders import OrdersWorker, schedule_tick, timeout_tick


def now_ms() -> int:
    return int(time.time() * 1000)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def create_campaign(http: aiohttp.ClientSession, node, ops: str, **kw) -> str:
    sid = kw.pop("id", f"s{uuid.uuid4().hex[:8]}")
    body = {
        "id": sid,
        "room": kw.pop("room", "shop"),
        "product_id": "p1",
        "product_name": "Tea set",
        "price": 1999,
        "stock": kw.pop("stock", 10),
        "per_user_limit": kw.pop("per_user_limit", 2),
        "starts_ms": kw.pop("starts_ms", now_ms() + 3_600_000),
        "duration_s": kw.pop("duration_s", 600),
        **kw,
    }
    r = await http.post(node.url + "/api/v1/campaigns", json=body, headers=bearer(ops))
    assert r.status == 201, await r.text()
    return sid


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_a_show_reserves_pays_and_settles_into_sql(gateway_factory, token, http, store_url, redis):
    node = await gateway_factory(database_url=store_url)
    ops, host = token("ops1", "ops"), token("host1", "host", ("shop",))
    sid = await create_campaign(http, node, ops, stock=3, per_user_limit=2)
    h = await Client.connect(node.ws, "shop", host)
    buyers = [await Client.connect(node.ws, "shop", token(f"b{i}")) for i in range(4)]
    early = await buyers[0].request("buy", sale_id=sid, qty=1, request_id="early")
    assert early["t"] == "error" and early["d"]["code"] == "not_started"
    ack = await h.request("sale.start", sale_id=sid)
    assert ack["t"] == "ack" and ack["d"]["state"] == "live"
    for b in buyers:
        e = await b.next_event()
        assert e["t"] == "sale.started" and e["d"]["remaining"] == 3
    r0 = await buyers[0].request("buy", sale_id=sid, qty=2, request_id="r0")
    assert r0["t"] == "order.reserved" and r0["d"]["amount"] == 2 * 1999
    again = await buyers[0].request("buy", sale_id=sid, qty=2, request_id="r0")
    assert again["d"]["order_id"] == r0["d"]["order_id"] and again["d"]["duplicate"] is True
    limit = await buyers[0].request("buy", sale_id=sid, qty=1, request_id="r0b")
    assert limit["d"]["code"] == "limit_reached"
    r1 = await buyers[1].request("buy", sale_id=sid, qty=1, request_id="r1")
    assert r1["t"] == "order.reserved"
    late = await buyers[2].request("buy", sale_id=sid, qty=1, request_id="r2")
    assert late["d"]["code"] == "sold_out"
    # every viewer hears of the sell-out
    seen = []
    while "sale.soldout" not in seen:
        seen.append((await buyers[3].next_event())["t"])
    assert "sale.stock" in seen
    # pay over HTTP (idempotent key), cancel the other
    oid = r0["d"]["order_id"]
    pay = await http.post(f"{node.url}/api/v1/orders/{oid}/pay", json={}, headers={**bearer(token("b0")), "Idempotency-Key": "k1"})
    assert pay.status == 200 and (await pay.json())["outcome"] == "paid"
    pay2 = await http.post(f"{node.url}/api/v1/orders/{oid}/pay", json={}, headers={**bearer(token("b0")), "Idempotency-Key": "k1"})
    assert (await pay2.json())["outcome"] == "paid"
    other = await http.post(f"{node.url}/api/v1/orders/{oid}/pay", json={}, headers=bearer(token("b1")))
    assert other.status == 404  # another buyer's order does not exist for them
    c = await http.post(f"{node.url}/api/v1/orders/{r1['d']['order_id']}/cancel", headers=bearer(token("b1")))
    assert (await c.json())["outcome"] == "released"
    # the worker settles everything into SQL, and tells the buyer
    worker = OrdersWorker(node.settings.replace(database_url=store_url), redis=redis)
    try:
        # reserved x2 (+ the retried buy appends its reserve event again: applied once), paid, cancelled
        assert await worker.drain() == 5
        assert await worker.drain() == 0
    finally:
        await worker.close()
    pushed = await buyers[0].next_event()
    while pushed["t"] != "order.paid":
        pushed = await buyers[0].next_event()
    assert pushed["d"]["order_id"] == oid
    stats = await (await http.get(f"{node.url}/api/v1/sales/{sid}/stats", headers=bearer(ops))).json()
    assert stats["conserved"] and (stats["stock"], stats["remaining"], stats["reserved"], stats["paid"]) == (3, 1, 0, 2)
    assert stats["gmv"] == 2 * 1999 and stats["sql"]["units"] == {"paid": 2, "cancelled": 1}
    mine = await (await http.get(f"{node.url}/api/v1/orders", headers=bearer(token("b0")))).json()
    assert [o["id"] for o in mine["orders"]] == [oid] and mine["orders"][0]["state"] == "paid"
    detail = await (await http.get(f"{node.url}/api/v1/orders/{oid}", headers=bearer(token("b0")))).json()
    assert [h["to_state"] for h in detail["history"]] == ["reserved", "paid"]
    assert (await http.get(f"{node.url}/api/v1/orders/{oid}", headers=bearer(token("b1")))).status == 404
    everyone = await (await http.get(f"{node.url}/api/v1/orders?sale={sid}", headers=bearer(ops))).json()
    assert len(everyone["orders"]) == 2


async def test_two_thousand_buyers_on_a_hundred_units_reserve_exactly_a_hundred(gateway_factory, token, http):
    node = await gateway_factory()
    sid = await create_campaign(http, node, token("ops1", "ops"), stock=100, per_user_limit=1, starts_ms=now_ms() - 1000)
    hdrs = [bearer(token(f"u{i}")) for i in range(2000)]
    sem = asyncio.Semaphore(200)

    async def one(i: int) -> int:
        async with sem:
            r = await http.post(f"{node.url}/api/v1/sales/{sid}/buy", json={"qty": 1, "request_id": f"q{i}"}, headers=hdrs[i])
            if r.status not in (201, 409):
                print(r.status, await r.text())
            return r.status

    codes = await asyncio.gather(*(one(i) for i in range(2000)))
    assert codes.count(201) == 100 and codes.count(409) == 1900, {c: codes.count(c) for c in set(codes)}
    st = await node.services.checkout.sales.stats(sid)
    assert (st.remaining, st.reserved, st.buyers) == (0, 100, 100)


async def test_late_buyers_are_answered_by_the_gateway_without_redis(gateway_factory, token, http):
    node = await gateway_factory()
    sid = await create_campaign(http, node, token("ops1", "ops"), stock=1, per_user_limit=1, starts_ms=now_ms() - 1000)
    winner = await Client.connect(node.ws, "shop", token("w"))
    late = [await Client.connect(node.ws, "shop", token(f"l{i}")) for i in range(3)]
    r = await winner.request("buy", sale_id=sid, qty=1, request_id="x")
    assert r["t"] == "order.reserved"
    while (await late[0].next_event())["t"] != "sale.soldout":
        pass
    # the node's observer spawned its one fetch of the buyers before the event reached anyone
    await wait_until(lambda: [t for t in node.gw.bg if t.get_name() == f"buyers-{sid}" and not t.done()],
                     until=lambda pending: not pending, what="the node's one fetch of the sale's buyers")
    checkout = node.services.checkout
    calls = 0
    real = checkout.sales.reserve

    async def counting(*a, **kw):
        nonlocal calls
        calls += 1
        return await real(*a, **kw)

    checkout.sales.reserve = counting
    for i, c in enumerate(late):
        e = await c.request("buy", sale_id=sid, qty=1, request_id=f"late{i}")
        assert e["d"]["code"] == "sold_out"
    assert calls == 0
    again = await winner.request("buy", sale_id=sid, qty=1, request_id="x")  # a buyer's retry still gets its order
    assert again["t"] == "order.reserved" and again["d"]["order_id"] == r["d"]["order_id"]
    assert calls == 1


async def test_stock_is_conserved_after_pays_and_time_outs_in_redis_and_sql(settings, redis, keys, store_url):
    from livecommerce.flash_sale import Sale
    from livecommerce.migrations import upgrade

    s = settings.replace(database_url=store_url)
    await upgrade(store_url)
    durable = open_log(s, redis)
    checkout = Checkout(redis, keys, durable)
    t0 = now_ms()
    sale = Sale("cons", "room", "p", 500, 50, 2, t0 - 1000, t0 + 600_000, payment_window_s=1)
    await checkout.create_sale(sale)
    await checkout.sales.start("cons", t0)
    orders = []
    for i in range(30):
        r = await checkout.buy(user=f"u{i}", sale_id="cons", qty=1 + i % 2, request_id=f"r{i}", now_ms=now_ms())
        orders.append(r)
    paid = [o for i, o in enumerate(orders) if i % 3 == 0]
    for o in paid:
        assert (await checkout.pay(order_id=o.order_id, user=None, now_ms=now_ms())).outcome == "paid"
    await asyncio.sleep(1.2)  # past the 1 s payment window
    from livecommerce.broker_redis import RedisBroker

    broker = RedisBroker(redis, keys)
    timed_out = await timeout_tick(checkout, broker, now_ms())
    assert timed_out == len(orders) - len(paid)
    worker = OrdersWorker(s, redis=redis, durable=durable)
    try:
        await worker.drain()
        st = await checkout.sales.stats("cons")
        sql = await worker.store.sale_stats("cons")
    finally:
        await worker.close()
        await durable.close()
    paid_units = sum(o.qty for o in paid)
    assert st.initial == st.remaining + st.reserved + st.paid
    assert (st.reserved, st.paid) == (0, paid_units)
    assert sql.units.get("paid", 0) == paid_units and sql.units.get("reserved", 0) == 0
    assert sql.units.get("cancelled", 0) == sum(o.qty for o in orders) - paid_units
    assert st.initial == st.remaining + sql.units.get("reserved", 0) + sql.units.get("paid", 0)


async def test_the_schedule_starts_and_ends_sales_once(settings, redis, keys):
    from livecommerce.broker_redis import RedisBroker
    from livecommerce.flash_sale import Sale

    durable = open_log(settings, redis)
    checkout = Checkout(redis, keys, durable)
    broker = RedisBroker(redis, keys)
    got: list[bytes] = []
    broker.set_handler(lambda ch, data: got.append(data))
    await broker.subscribe(keys.room_channel("sched"))
    t0 = now_ms()
    await checkout.create_sale(Sale("sch", "sched", "p", 100, 5, 1, t0 + 200, t0 + 600))
    await schedule_tick(checkout, broker, None, t0)
    assert (await checkout.sales.stats("sch")).state == "scheduled"
    await schedule_tick(checkout, broker, None, t0 + 300)
    await schedule_tick(checkout, broker, None, t0 + 350)  # a second runner: no second broadcast
    assert (await checkout.sales.stats("sch")).state == "live"
    await schedule_tick(checkout, broker, None, t0 + 700)
    assert (await checkout.sales.stats("sch")).state == "ended"
    from livecommerce.broker import split_room_message

    # one channel delivers in order: a second sale.started would come before sale.ended
    await wait_until(lambda: len(got), until=lambda n: n >= 2, what="two broadcasts on the room's channel")
    types = [split_room_message(d)[1]["t"] for d in got]
    assert types == ["sale.started", "sale.ended"]
    await broker.close()
    await durable.close()
    _ = Keys


async def test_a_late_payment_is_refused_every_time_and_the_order_ends_cancelled_in_sql(gateway_factory, token, http, redis):
    node = await gateway_factory()
    sid = await create_campaign(http, node, token("ops1", "ops"), stock=5, per_user_limit=1, starts_ms=now_ms() - 1000, payment_window_s=1)
    buyer = bearer(token("late"))
    r = await http.post(f"{node.url}/api/v1/sales/{sid}/buy", json={"qty": 1, "request_id": "l1"}, headers=buyer)
    oid = (await r.json())["order_id"]
    await asyncio.sleep(1.3)  # past the 1 s payment window
    for _ in range(2):  # the retry with the same key is refused too, never a 200
        p = await http.post(f"{node.url}/api/v1/orders/{oid}/pay", json={}, headers={**buyer, "Idempotency-Key": "late-k"})
        assert p.status == 409 and (await p.json())["error"]["code"] in ("expired", "already_cancelled")
    worker = OrdersWorker(node.settings, redis=redis)
    try:
        await worker.drain()
        order = await worker.store.get_order(oid)
    finally:
        await worker.close()
    assert order is not None and order.state == "cancelled"
    st = await node.services.checkout.sales.stats(sid)
    assert (st.remaining, st.reserved, st.paid) == (5, 0, 0)
