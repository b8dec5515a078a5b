"""Idempotency keys answer only for the request they were first used for.

* The :class:`IdempotencyStore` contract, over the memory twin and Redis.
* Per endpoint (pay, top-up, refund, claim, redeem, lottery, campaign create, buy): the
  same key with the same request replays the first answer; the same key with another
  target or body is 422 ``idempotency_conflict`` and changes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from livecommerce.idempotency import MemoryIdempotency, Stored, decide, fingerprint, storable
from livecommerce.idempotency_redis import RedisIdempotency
from livecommerce.keys import Keys
from tests.test_refunds import World, bearer
from tests.waiting import wait_until


# ---------------------------------------------------------------------------- the port
@pytest.fixture(params=["memory", "redis"])
async def store(request: Any, redis: Any, keys: Keys) -> AsyncIterator[Any]:
    yield MemoryIdempotency() if request.param == "memory" else RedisIdempotency(redis, keys)


async def test_a_key_is_claimed_once_then_replays_its_answer(store: Any) -> None:
    fp = fingerprint("POST", "/api/v1/orders/{order}/pay", "A", {})
    assert (await store.begin("u1:k1", fp)).outcome == "new"
    assert (await store.begin("u1:k1", fp)).outcome == "in_flight"
    await store.finish("u1:k1", fp, Stored(200, '{"order_id": "A"}'))
    again = await store.begin("u1:k1", fp)
    assert again.outcome == "replay" and again.answer == Stored(200, '{"order_id": "A"}')


async def test_a_key_reused_for_another_request_is_a_conflict_and_keeps_the_first_answer(store: Any) -> None:
    a = fingerprint("POST", "/api/v1/orders/{order}/pay", "A", {})
    b = fingerprint("POST", "/api/v1/orders/{order}/pay", "B", {})
    assert a != b
    assert (await store.begin("u1:k", a)).outcome == "new"
    assert (await store.begin("u1:k", b)).outcome == "conflict"  # while running
    await store.finish("u1:k", b, Stored(200, "{}"))  # the other request cannot write it
    await store.finish("u1:k", a, Stored(200, '"a"'))
    assert (await store.begin("u1:k", b)).outcome == "conflict"
    assert (await store.begin("u1:k", a)).answer == Stored(200, '"a"')


async def test_a_released_claim_lets_a_retry_run_again_and_scopes_are_separate(store: Any) -> None:
    fp = fingerprint("POST", "/x", "t", {"amount": 1})
    assert (await store.begin("u1:k", fp)).outcome == "new"
    assert (await store.begin("u2:k", fp)).outcome == "new"  # another caller, same key: its own
    await store.release("u1:k", fp)
    assert (await store.begin("u1:k", fp)).outcome == "new"


def test_fingerprints_bind_method_route_target_and_body() -> None:
    base = fingerprint("POST", "/r/{x}", "A", {"a": 1, "b": [1, 2]})
    assert base == fingerprint("post", "/r/{x}", "A", {"b": [1, 2], "a": 1})  # key order does not matter
    for other in (fingerprint("PUT", "/r/{x}", "A", {"a": 1, "b": [1, 2]}), fingerprint("POST", "/s/{x}", "A", {"a": 1, "b": [1, 2]}),
                  fingerprint("POST", "/r/{x}", "B", {"a": 1, "b": [1, 2]}), fingerprint("POST", "/r/{x}", "A", {"a": 2, "b": [1, 2]})):
        assert other != base
    assert decide(None, base).outcome == "new"
    assert [storable(s) for s in (200, 201, 409, 422, 404, 429, 500, 503)] == [True, True, True, True, False, False, False, False]


# ---------------------------------------------------------------------------- endpoints
@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def call(http: aiohttp.ClientSession, method: str, url: str, tok: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    headers = bearer(tok)
    if key is not None:
        headers["Idempotency-Key"] = key
    r = await http.request(method, url, json=body, headers=headers)
    return r.status, await r.json()


def conflict(res: tuple[int, Any]) -> bool:
    return res[0] == 422 and res[1]["error"]["code"] == "idempotency_conflict"


@pytest.fixture
async def world(gateway_factory: Any, token: Any, redis: Any, http: aiohttp.ClientSession) -> AsyncIterator[World]:
    w = await World.make(gateway_factory, token, redis, http)
    yield w
    await w.close()  # the orders worker's own store too: a leaked aiosqlite thread fails a later test


async def test_pay_with_a_key_used_for_another_order_is_refused_and_that_order_stays_unpaid(world: World, token: Callable[..., str]) -> None:
    w, u = world, token("payer")
    await w.room("shop", "h1")
    sid = await w.campaign("shop", stock=5)
    a, b = await w.buy("payer", sid, 1, pay=False), await w.buy("payer", sid, 1, pay=False)
    url = w.node.url + "/api/v1/orders/{}/pay"
    first = await call(w.http, "POST", url.format(a), u, {}, key="k-pay")
    assert first[0] == 200 and first[1]["order_id"] == a and first[1]["outcome"] == "paid"
    assert await call(w.http, "POST", url.format(a), u, {}, key="k-pay") == first  # a retry: the same answer
    assert conflict(await call(w.http, "POST", url.format(b), u, {}, key="k-pay"))  # the reported bug: was 200 for A
    hold = await w.node.services.checkout.sales.hold(sid, b)
    assert hold is not None and hold.state == "reserved"  # B untouched
    assert conflict(await call(w.http, "POST", url.format(a), u, {"coupon_id": "c1"}, key="k-pay"))  # another body
    paid_b = await call(w.http, "POST", url.format(b), u, {}, key="k-pay-b")
    assert paid_b[1]["order_id"] == b and paid_b[1]["outcome"] == "paid"


async def test_topup_keys_bind_the_wallet_and_the_amount(world: World, token: Callable[..., str]) -> None:
    w, ops = world, token("ops1", "ops")
    url = w.node.url + "/api/v1/wallets/{}/topup"
    first = await call(w.http, "POST", url.format("alice"), ops, {"amount": 100}, key="k-top")
    assert first[0] == 201
    again = await call(w.http, "POST", url.format("alice"), ops, {"amount": 100}, key="k-top")
    assert again[0] == 200 and again[1]["duplicate"] is True and again[1]["event_id"] == first[1]["event_id"]
    assert conflict(await call(w.http, "POST", url.format("bob"), ops, {"amount": 100}, key="k-top"))  # another wallet
    assert conflict(await call(w.http, "POST", url.format("alice"), ops, {"amount": 500}, key="k-top"))  # another amount
    wallet = w.node.services.wallet
    assert await wallet.balance("alice") == 100 and await wallet.balance("bob") == 0


async def test_a_refund_key_reused_for_another_order_is_refused(world: World, token: Callable[..., str]) -> None:
    w, b1 = world, token("b1")
    await w.room("shop", "h1")
    sid = await w.campaign("shop", stock=5)
    o1, o2 = await w.buy("b1", sid, 1), await w.buy("b1", sid, 1)
    await w.settle()
    url = w.node.url + "/api/v1/orders/{}/refunds"
    first = await call(w.http, "POST", url.format(o1), b1, {"reason": "damaged"}, key="k-ref")
    assert first[0] == 202
    assert (await call(w.http, "POST", url.format(o1), b1, {"reason": "damaged"}, key="k-ref"))[1] == first[1]
    assert conflict(await call(w.http, "POST", url.format(o2), b1, {"reason": "damaged"}, key="k-ref"))
    assert conflict(await call(w.http, "POST", url.format(o1), b1, {"reason": "other"}, key="k-ref"))
    records = await w.node.services.aftersales.records.records(o2)
    assert records == {}  # nothing asked for o2


async def test_a_claim_key_reused_for_another_drop_is_refused(world: World, token: Callable[..., str]) -> None:
    w, host, v = world, token("h1", "host", ("shop",)), token("v1")
    await w.room("shop", "h1")
    drops = []
    for _ in range(2):
        st, d = await call(w.http, "POST", w.node.url + "/api/v1/rooms/shop/coupons", host, {"kind": "full_reduction", "threshold": 1000, "value": 100, "quantity": 5})
        assert st == 201, d
        drops.append(d["drop_id"])
    url = w.node.url + "/api/v1/coupons/{}/claim"
    first = await call(w.http, "POST", url.format(drops[0]), v, None, key="k-claim")
    assert first[0] == 201
    assert (await call(w.http, "POST", url.format(drops[0]), v, None, key="k-claim"))[1] == first[1]
    assert conflict(await call(w.http, "POST", url.format(drops[1]), v, None, key="k-claim"))
    st, state = await call(w.http, "GET", url.format(drops[1]).removesuffix("/claim"), v)
    assert st == 200 and state["claimed"] == 0
    # without a key a claim is naturally once per (drop, user): each drop answers its own coupon
    other = await call(w.http, "POST", url.format(drops[1]), v, None)
    assert other[0] == 201 and other[1] != first[1]


async def test_a_redeem_request_id_reused_for_another_value_is_refused(world: World, token: Callable[..., str]) -> None:
    w, v = world, token("fan")
    await w.room("shop", "h1")
    sid = await w.campaign("shop", stock=5, price=50_000)
    await w.buy("fan", sid, 1)  # 500.00 spent: points to redeem
    await w.settle()
    assert await w.store.points_balance("fan", "viewer") >= 100
    url = w.node.url + "/api/v1/points/fan/redeem"
    first = await call(w.http, "POST", url, v, {"value": 5, "request_id": "r1"})
    assert first[0] == 202 and first[1]["value"] == 5
    assert (await call(w.http, "POST", url, v, {"value": 5, "request_id": "r1"}))[1] == first[1]
    assert conflict(await call(w.http, "POST", url, v, {"value": 9, "request_id": "r1"}))  # was 202 with value 9


async def test_a_lottery_start_retried_with_its_key_starts_one_lottery(world: World, token: Callable[..., str]) -> None:
    w, host = world, token("h1", "host", ("shop",))
    await w.room("shop", "h1")
    url = w.node.url + "/api/v1/rooms/shop/lotteries"
    body = {"prize": {"kind": "product", "id": "p1"}, "winners": 1, "duration_s": 60}
    first = await call(w.http, "POST", url, host, body, key="k-lot")
    assert first[0] == 201, first
    again = await call(w.http, "POST", url, host, body, key="k-lot")
    assert again == first
    assert conflict(await call(w.http, "POST", url, host, {**body, "winners": 2}, key="k-lot"))
    _st, open_ = await call(w.http, "GET", url, host)
    assert [lot["id"] for lot in open_["lotteries"]] == [first[1]["id"]]


async def test_a_campaign_id_posted_again_with_another_definition_is_refused_and_changes_nothing(world: World, token: Callable[..., str]) -> None:
    w, ops = world, token("ops1", "ops")
    url = w.node.url + "/api/v1/campaigns"
    sid = f"s{uuid.uuid4().hex[:8]}"
    body = {"id": sid, "room": "shop", "product_id": "p1", "price": 1999, "stock": 10, "per_user_limit": 2,
            "starts_ms": 4_000_000_000_000, "duration_s": 600}
    first = await call(w.http, "POST", url, ops, body)
    assert first[0] == 201 and first[1]["campaigns"][0]["created"] is True
    same = await call(w.http, "POST", url, ops, body)
    assert same[0] == 201 and same[1]["campaigns"][0]["created"] is False and same[1]["campaigns"][0]["stock"] == 10
    assert conflict(await call(w.http, "POST", url, ops, {**body, "stock": 1000}))  # was 201 showing stock 1000
    assert conflict(await call(w.http, "POST", url, ops, {**body, "starts_ms": 4_000_000_100_000}))
    # a list is all or nothing: a new campaign beside a conflicting one is not created
    new_id = f"s{uuid.uuid4().hex[:8]}"
    assert conflict(await call(w.http, "POST", url, ops, [{**body, "id": new_id}, {**body, "price": 1}]))
    stats = await call(w.http, "GET", f"{w.node.url}/api/v1/sales/{sid}/stats", ops)
    assert stats[1]["stock"] == 10
    assert (await call(w.http, "GET", f"{w.node.url}/api/v1/sales/{new_id}/stats", ops))[0] == 404
    # with an Idempotency-Key the whole request is bound too
    assert (await call(w.http, "POST", url, ops, body, key="k-camp"))[0] == 201
    assert conflict(await call(w.http, "POST", url, ops, {**body, "id": new_id}, key="k-camp"))


async def test_a_buy_request_id_reused_for_another_quantity_is_refused(world: World, token: Callable[..., str]) -> None:
    w, v = world, token("b9")
    await w.room("shop", "h1")
    sid = await w.campaign("shop", stock=5)
    url = f"{w.node.url}/api/v1/sales/{sid}/buy"
    first = await call(w.http, "POST", url, v, {"qty": 1, "request_id": "rq"})
    assert first[0] == 201
    again = await call(w.http, "POST", url, v, {"qty": 1, "request_id": "rq"})
    assert again[0] == 200 and again[1]["order_id"] == first[1]["order_id"] and again[1]["duplicate"] is True
    assert conflict(await call(w.http, "POST", url, v, {"qty": 2, "request_id": "rq"}))
    stats = await call(w.http, "GET", f"{w.node.url}/api/v1/sales/{sid}/stats", token("ops1", "ops"))
    assert stats[1]["remaining"] == 4


async def test_concurrent_requests_with_one_key_run_once(world: World, token: Callable[..., str]) -> None:
    w, ops = world, token("ops1", "ops")
    url = w.node.url + "/api/v1/wallets/carol/topup"
    results = await asyncio.gather(*(call(w.http, "POST", url, ops, {"amount": 7}, key="k-race") for _ in range(20)))
    statuses = sorted(st for st, _ in results)
    assert set(statuses) <= {200, 201, 409}, statuses
    wallet = w.node.services.wallet
    await wait_until(lambda: wallet.balance("carol"), until=lambda b: b == 7, what="carol's balance of 7", timeout=5)
