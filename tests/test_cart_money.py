"""Cart orders on the money path, on a real gateway (real Redis, SQLite/PostgreSQL, HTTP):

* flash-sale lines in a cart: priced at the sale's price, held to the sale's per-user limit
  (the cart shows what the user has), taking the sale's stock and not the catalogue's, a
  refund puts the unit back on the sale; a cart mixing a sale line and list-price lines is
  all or nothing;
* provider-paid cart orders: intent, the simulated provider's signed (and duplicated)
  callbacks, the order paid once; a callback after the pay window refunded through the
  provider; a refund back to the original method;
* many viewers checking out concurrently over HTTP against small stock: never more than the
  stock, refusals hold nothing, units conserved (Redis, then SQL); one order per
  Idempotency-Key under concurrent retries.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import aiohttp

from tests.fixtures_gateway import Api
from tests.test_payments import SECRET, callbacks, confirm, http, intent, pay_node, sim  # noqa: F401 (fixtures)
from tests.waiting import wait_until
from workers.orders import OrdersWorker

TEE = {"id": "tee", "name": "Cotton tee", "skus": [
    {"id": "red", "attrs": {"colour": "red"}, "price": 1000, "stock": 5, "limit": 2},
    {"id": "blue", "attrs": {"colour": "blue"}, "price": 1200, "stock": 5}]}
MUG = {"id": "mug", "name": "Mug", "price": 500, "stock": 3}


def now_ms() -> int:
    return int(time.time() * 1000)


async def units(api: Api, tok: str, pid: str) -> dict[str, dict[str, int]]:
    return {s["id"]: s["units"] for s in (await api.ok("GET", f"/products/{pid}", tok))["skus"]}


async def checkout(api: Api, tok: str, key: str, lines: list[dict[str, Any]] | None = None) -> tuple[int, Any]:
    return await api.call("POST", "/rooms/r1/cart/checkout", tok, {} if lines is None else {"lines": lines},
                          headers={"Idempotency-Key": key})


# ------------------------------------------------------------------ flash-sale lines


async def test_a_sale_line_in_a_cart_takes_the_sales_price_limit_and_stock_and_a_mixed_cart_is_all_or_nothing(
        api_node: Any) -> None:
    node, api, token = api_node
    h1, ops, v, w = token("h1", "host", ("r1",)), token("o", "ops"), token("v"), token("w")
    await api.ok("POST", "/products", h1, TEE, status=201)
    await api.ok("POST", "/products", h1, MUG, status=201)
    sid = f"s{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/campaigns", ops, {"id": sid, "room": "r1", "product_id": "tee", "price": 800, "stock": 3,
                                             "per_user_limit": 2, "starts_ms": now_ms() - 1000, "duration_s": 600,
                                             "restock_on_refund": True},
                 status=201)
    await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "tee", "sku": "blue", "qty": 2})
    cart = await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "mug"})
    tee = cart["lines"][0]
    assert (tee["unit_price"], tee["list_price"], tee["sale_id"], tee["limit"], tee["bought"], tee["available"], tee["ok"]) == (
        800, 1200, sid, 2, 0, 3, True)
    st, order = await checkout(api, v, "v1")
    assert st == 201, order
    assert [(ln["sku"], ln["unit_price"], ln["sale_id"]) for ln in order["lines"]] == [("blue", 800, sid), ("default", 500, None)]
    assert order["amount"] == 2 * 800 + 500
    sales = node.services.checkout.sales
    stats = await sales.stats(sid)
    assert (stats.remaining, stats.reserved) == (1, 2)  # the sale's stock
    assert (await units(api, h1, "tee"))["blue"] == {"available": 5, "reserved": 0, "sold": 0, "stocked": 5}  # not the catalogue's
    assert (await units(api, h1, "mug"))["default"]["reserved"] == 1
    # the cart shows what the user has of the sale: limit 2, you have 2
    cart = await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "tee", "sku": "blue", "qty": 1})
    assert (cart["lines"][0]["bought"], cart["lines"][0]["limit"], cart["lines"][0]["problem"]) == (2, 2, "limit_reached")
    st, body = await checkout(api, v, "v2")
    assert (st, body["error"]["code"]) == (409, "limit_reached")
    # another buyer: 2 on sale (1 left) with a mug: refused, the mug (held first) goes back, the sale keeps its 1
    st, body = await checkout(api, w, "w1", [{"product_id": "mug", "qty": 1}, {"product_id": "tee", "sku": "red", "qty": 2}])
    assert (st, body["error"]["code"]) == (409, "sold_out"), body
    assert (await units(api, h1, "mug"))["default"] == {"available": 2, "reserved": 1, "sold": 0, "stocked": 3}
    stats = await sales.stats(sid)
    assert (stats.remaining, stats.reserved, stats.paid) == (1, 2, 0)
    # paid, then one unit refunded (the refunds worker's step): back on the sale, not in the catalogue
    paid = await api.ok("POST", f"/orders/{order['order_id']}/pay", v, {})
    assert paid["outcome"] == "paid"
    stats = await sales.stats(sid)
    assert (stats.remaining, stats.reserved, stats.paid) == (1, 0, 2)
    assert await node.services.checkout.cart.refund(order["order_id"], f"{order['order_id']}.r1", qty_before=0, qty=1)
    stats = await sales.stats(sid)
    assert stats.remaining == 2 and stats.conserved
    assert (await units(api, h1, "tee"))["blue"] == {"available": 5, "reserved": 0, "sold": 0, "stocked": 5}
    assert (await units(api, h1, "mug"))["default"] == {"available": 2, "reserved": 0, "sold": 1, "stocked": 3}


# ------------------------------------------------------------------ provider-paid cart orders


async def test_a_cart_order_paid_at_the_provider_once_then_refunded_to_the_original_method(
        gateway_factory: Any, token: Any, sim: Any, store_url: str, redis: Any, keys: Any) -> None:  # noqa: F811
    from livecommerce import refunds_sql
    from livecommerce.log_open import open_log
    from livecommerce.payments_http import HttpPaymentProvider
    from livecommerce.store_sql import SqlStore
    from workers.refunds import RefundsWorker, drain

    sim.cfg.duplicates = 2
    node = await pay_node(gateway_factory, sim, database_url=store_url)
    h1, ops, v = token("h1", "host", ("r1",)), token("o", "ops"), token("v")
    async with aiohttp.ClientSession() as session:
        api = Api(session, node.url)
        await api.ok("POST", "/products", h1, TEE, status=201)
        await api.ok("POST", "/products", h1, MUG, status=201)
        st, order = await checkout(api, v, "k1", [{"product_id": "tee", "sku": "red", "qty": 2}, {"product_id": "mug"}])
        assert st == 201, order
        oid = order["order_id"]
        it = await intent(session, node, oid, v)
        assert (it["amount"], it["order_id"]) == (2500, oid)
        assert (await intent(session, node, oid, v, status=200))["intent_id"] == it["intent_id"]
        assert (await units(api, h1, "tee"))["red"]["reserved"] == 2  # nothing paid before the provider says so
        assert (await confirm(session, it))["status"] == "succeeded"
        await sim.settled()
        rows = [r for r in await callbacks(session, node, ops) if r.get("order_id") == oid]
        assert sorted(r["outcome"] for r in rows) == ["already_paid", "already_paid", "paid"] and all(r["verified"] for r in rows)
        assert (await units(api, h1, "tee"))["red"] == {"available": 3, "reserved": 0, "sold": 2, "stocked": 5}
        assert (await units(api, h1, "mug"))["default"] == {"available": 2, "reserved": 0, "sold": 1, "stocked": 3}
        assert (await api.ok("GET", f"/orders/{oid}", v))["cart"]["state"] == "paid"
        worker = OrdersWorker(node.settings, redis=redis)
        try:
            await worker.drain()
            o = await worker.store.get_order(oid)
            hist = await worker.store.order_history(oid)
        finally:
            await worker.close()
        assert o is not None and (o.state, o.amount, o.sale_id) == ("paid", 2500, "cart")
        assert [h.to_state for h in hist] == ["reserved", "paid"]  # order.paid applied once
        # a refund of one unit, approved: back through the provider, the unit back on sale
        st, ask = await api.call("POST", f"/orders/{oid}/refunds", v, {"qty": 1, "reason": "damaged"})
        assert st == 202, ask
        await api.ok("POST", f"/refunds/{ask['refund_id']}/approve", ops, {})
        durable = open_log(node.settings, redis)
        store = SqlStore(node.settings.database_url)
        provider = HttpPaymentProvider(sim.base_url)
        try:
            await drain(durable, RefundsWorker(store, redis, keys, durable, provider=provider))
            got = await refunds_sql.list_refunds(store, order_ids=[oid], limit=10)
        finally:
            await provider.close()
            await store.close()
            await durable.close()
        held = sim.intents[it["intent_id"]]
        assert [x["amount"] for x in held.refunds] == [ask["amount"]] and 0 < ask["amount"] <= 2500
        assert got[0]["state"] == "refunded" and got[0]["credited"] == 0  # to the card, no wallet credit
        assert (await units(api, h1, "tee"))["red"] == {"available": 4, "reserved": 0, "sold": 1, "stocked": 5}


async def test_a_cart_orders_callback_after_the_pay_window_is_refunded_through_the_provider(
        gateway_factory: Any, token: Any, sim: Any, redis: Any) -> None:  # noqa: F811
    sim.cfg.hold, sim.cfg.duplicates = True, 1
    node = await pay_node(gateway_factory, sim, payment_window_s=2)
    h1, ops, v = token("h1", "host", ("r1",)), token("o", "ops"), token("v")
    async with aiohttp.ClientSession() as session:
        api = Api(session, node.url)
        await api.ok("POST", "/products", h1, TEE, status=201)
        st, order = await checkout(api, v, "late", [{"product_id": "tee", "sku": "blue", "qty": 1}])
        assert st == 201, order
        oid = order["order_id"]
        it = await intent(session, node, oid, v)
        await confirm(session, it)  # the buyer paid in time; the callback comes after the window
        await wait_until(lambda: now_ms() > order["pay_by_ms"] + 50, timeout=5, what="the pay window closed")
        assert sim.release("forward") == 1  # the one success, delivered twice
        await sim.settled()
        rows = [r for r in await callbacks(session, node, ops) if r.get("order_id") == oid]
        assert [r["outcome"] for r in rows] == ["refunded_late", "refunded_late"]
        held = sim.intents[it["intent_id"]]
        assert held.status == "refunded" and held.refunded == it["amount"] == 1200 and len(held.refunds) == 1
        assert (await units(api, h1, "tee"))["blue"] == {"available": 5, "reserved": 0, "sold": 0, "stocked": 5}
        assert (await api.ok("GET", f"/orders/{oid}", v))["cart"]["state"] == "cancelled"


async def test_a_cart_order_its_coupon_covers_entirely_is_paid_without_the_provider(
        gateway_factory: Any, token: Any, sim: Any) -> None:  # noqa: F811
    node = await pay_node(gateway_factory, sim, dev_pay=False)
    h1, v = token("h1", "host", ("r1",)), token("v")
    async with aiohttp.ClientSession() as session:
        api = Api(session, node.url)
        await api.ok("POST", "/products", h1, MUG, status=201)
        drop = await api.ok("POST", "/rooms/r1/coupons", h1, {"kind": "full_reduction", "threshold": 0, "value": 5000,
                                                               "quantity": 3}, status=201)
        await api.ok("POST", f"/coupons/{drop['drop_id']}/claim", v, status=201)
        st, order = await checkout(api, v, "free", [{"product_id": "mug", "qty": 2}])  # the proposal: the coupon
        assert st == 201 and (order["subtotal"], order["discount"], order["amount"]) == (1000, 1000, 0), order
        paid = await api.ok("POST", f"/orders/{order['order_id']}/payments", v, {}, status=201)
        assert (paid["intent_id"], paid["amount"], paid["outcome"]) == (None, 0, "paid")
        assert sim.intents == {}
        assert (await api.ok("GET", f"/orders/{order['order_id']}", v))["cart"]["state"] == "paid"
        assert (await units(api, h1, "mug"))["default"] == {"available": 1, "reserved": 0, "sold": 2, "stocked": 3}
        again, body = await api.call("POST", f"/orders/{order['order_id']}/payments", v, {})
        assert (again, body["error"]["code"]) == (409, "already_paid")


# ------------------------------------------------------------------ concurrency at the edge


async def test_forty_viewers_checking_out_at_once_take_exactly_the_stock_and_one_key_makes_one_order(
        api_node: Any, redis: Any) -> None:
    node, api, token = api_node
    h1 = token("h1", "host", ("r1",))
    await api.ok("POST", "/products", h1, {"id": "cap", "name": "Cap", "skus": [
        {"id": "a", "attrs": {"colour": "a"}, "price": 300, "stock": 5},
        {"id": "b", "attrs": {"colour": "b"}, "price": 400, "stock": 5}]}, status=201)
    rnd = random.Random(19)
    asks = []
    for i in range(40):
        lines = [{"product_id": "cap", "sku": s, "qty": rnd.randint(1, 2)} for s in rnd.sample(["a", "b"], rnd.randint(1, 2))]
        asks.append((token(f"v{i}"), f"k{i}", lines))
    answers = await asyncio.gather(*(checkout(api, tok, key, lines) for tok, key, lines in asks))
    taken = {"a": 0, "b": 0}
    orders = []
    for (st, body), (_, _, lines) in zip(answers, asks, strict=True):
        if st == 201:
            orders.append(body["order_id"])
            assert [(ln["sku"], ln["qty"]) for ln in body["lines"]] == [(ln["sku"], ln["qty"]) for ln in lines]
            for ln in body["lines"]:
                taken[ln["sku"]] += ln["qty"]
        else:
            assert (st, body["error"]["code"]) == (409, "sold_out"), body
    u = await units(api, h1, "cap")
    assert orders and len(orders) < 40
    for sku in ("a", "b"):  # every accepted order all there, every refused one nothing
        assert u[sku]["reserved"] == taken[sku] <= 5 and u[sku]["available"] == 5 - taken[sku], (sku, u, taken)
        assert u[sku]["stocked"] == u[sku]["available"] + u[sku]["reserved"] + u[sku]["sold"] == 5
    # ten concurrent retries under one key: one order
    await api.ok("POST", "/products", h1, {"id": "hat", "name": "Hat", "price": 900, "stock": 3}, status=201)
    tok = token("again")
    same = await asyncio.gather(*(checkout(api, tok, "one-key", [{"product_id": "hat", "qty": 1}]) for _ in range(10)))
    assert all(st in (200, 201) or (st, b["error"]["code"]) == (409, "idempotency_in_flight") for st, b in same), same
    ids = {b["order_id"] for st, b in same if st in (200, 201)}
    assert len(ids) == 1 and sum(st == 201 for st, _ in same) >= 1, same
    assert (await units(api, h1, "hat"))["default"] == {"available": 2, "reserved": 1, "sold": 0, "stocked": 3}
    again = await checkout(api, tok, "one-key", [{"product_id": "hat", "qty": 1}])  # after the storm: the same order
    assert again[0] in (200, 201) and again[1]["order_id"] in ids
    # SQL after the orders worker: the same orders, their lines the units held
    worker = OrdersWorker(node.settings, redis=redis)
    try:
        await worker.drain()
        sql = await worker.store.list_orders(sale_id="cart", limit=100)
        from livecommerce.order_lines_sql import lines_of
        got = await lines_of(worker.store, orders)  # the caps' orders
    finally:
        await worker.close()
    assert sorted(o.id for o in sql) == sorted([*orders, *ids])
    held = {"a": 0, "b": 0}
    for ls in got.values():
        for ln in ls:
            held[ln.sku] += ln.qty
    u = await units(api, h1, "cap")
    assert held == {s: u[s]["reserved"] for s in ("a", "b")}
