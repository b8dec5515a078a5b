"""Coupons: drop validation and claim rules, atomic claims under concurrency, the coupon
service orders use (lock / consume / restore), and drops and claims over WebSockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from livecommerce.coupons import (
    COUPON_TRANSITIONS,
    CouponDrop,
    CouponNotUsable,
    coupon_id,
    decide_claim,
    discount_for,
    new_drop,
    split_coupon_id,
)
from livecommerce.coupons_redis import Claimed, CouponsRedis
from livecommerce.errors import BadFrame
from livecommerce.keys import Keys
from tests.wsclient import Client

NOW = 1_700_000_000_000


def _drop(did: str = "d1", *, quantity: int = 10, kind: str = "full_reduction", threshold: int = 10_000,
          value: int = 1_500, expires_ms: int | None = None) -> CouponDrop:
    return CouponDrop(did, "r1", kind, threshold, value, quantity,  # type: ignore[arg-type]
                      expires_ms or int(time.time() * 1000) + 60_000, "h1", NOW)


async def _together(aws: list[Any], limit: int = 64) -> list[Any]:
    """Run concurrently, at most ``limit`` at once (the test client's pool has 100 connections)."""
    sem = asyncio.Semaphore(limit)

    async def one(aw: Any) -> Any:
        async with sem:
            return await aw

    return list(await asyncio.gather(*(one(aw) for aw in aws)))


def test_a_drop_body_is_validated_field_by_field() -> None:
    d = new_drop({"kind": "full_reduction", "threshold": 10_000, "value": 1_500, "quantity": 100},
                 room="r", by="h", now_ms=NOW, default_id="x1")
    assert (d.id, d.per_user, d.expires_ms) == ("x1", 1, NOW + 24 * 3600 * 1000)
    assert new_drop({"kind": "percent", "value": 20, "quantity": 1, "expires_in_s": 60, "id": "p"},
                    room="r", by="h", now_ms=NOW, default_id="x").expires_ms == NOW + 60_000
    for bad, field in [({"kind": "bogo", "value": 1, "quantity": 1}, "kind"),
                       ({"kind": "percent", "value": 100, "quantity": 1}, "value"),
                       ({"kind": "full_reduction", "threshold": 500, "value": 500, "quantity": 1}, "less than"),
                       ({"kind": "full_reduction", "value": 5, "quantity": 0}, "quantity"),
                       ({"kind": "full_reduction", "value": 5, "quantity": 1, "id": "a:b"}, "id"),
                       ({"kind": "full_reduction", "value": 5, "quantity": 1, "expires_ms": NOW}, "expires_ms")]:
        with pytest.raises(BadFrame, match=field):
            new_drop(bad, room="r", by="h", now_ms=NOW, default_id="x")


def test_claims_are_judged_unknown_then_expired_then_already_claimed_then_sold_out() -> None:
    d = _drop(expires_ms=NOW + 10)
    assert decide_claim(None, now_ms=NOW, left=5, already=False) == "not_found"
    assert decide_claim(d, now_ms=NOW + 10, left=5, already=True) == "expired"
    assert decide_claim(d, now_ms=NOW, left=0, already=True) == "already_claimed"
    assert decide_claim(d, now_ms=NOW, left=0, already=False) == "sold_out"
    assert decide_claim(d, now_ms=NOW, left=1, already=False) is None


@given(st.integers(0, 10**7), st.integers(0, 10**6), st.integers(1, 10**6), st.integers(1, 99))
def test_a_discount_never_exceeds_the_order_and_needs_the_threshold(amount: int, threshold: int, value: int, pct: int) -> None:
    for kind, v in (("full_reduction", value), ("percent", pct)):
        d = discount_for(kind, threshold, v, amount)
        if amount < threshold:
            assert d is None
        else:
            assert d is not None and 0 <= d <= amount


def test_coupon_ids_name_the_drop_and_the_owner() -> None:
    assert split_coupon_id(coupon_id("d1", "user:with:colons")) == ("d1", "user:with:colons")
    with pytest.raises(CouponNotUsable):
        split_coupon_id("nodrop")
    assert COUPON_TRANSITIONS[("locked", "restore")] == "claimed"


async def test_concurrent_claims_never_exceed_the_quantity(redis: aioredis.Redis, keys: Keys) -> None:
    c = CouponsRedis(redis, keys)
    assert await c.create_drop(_drop(quantity=50))
    assert not await c.create_drop(_drop(quantity=99))  # the id is taken: nothing changes
    now = int(time.time() * 1000)
    results = await _together([c.claim("d1", f"u{i}", now_ms=now) for i in range(300)])
    won = [r for r in results if isinstance(r, Claimed)]
    assert len(won) == 50 and results.count("sold_out") == 250
    assert sorted(r.remaining for r in won) == list(range(50))
    again = await asyncio.gather(*(c.claim("d1", won[0].coupon["coupon_id"].split(":")[1], now_ms=now) for _ in range(10)))
    assert again == ["already_claimed"] * 10
    got = await c.get_drop("d1")
    assert got is not None and got[1] == {"remaining": 0, "claimed": 50, "used": 0}


async def test_one_user_racing_themself_gets_one_coupon(redis: aioredis.Redis, keys: Keys) -> None:
    c = CouponsRedis(redis, keys)
    await c.create_drop(_drop(quantity=5))
    results = await asyncio.gather(*(c.claim("d1", "greedy", now_ms=int(time.time() * 1000)) for _ in range(20)))
    assert sum(isinstance(r, Claimed) for r in results) == 1 and results.count("already_claimed") == 19
    assert [x["coupon_id"] for x in await c.user_coupons("greedy", now_ms=int(time.time() * 1000))] == ["d1:greedy"]


async def test_an_expired_drop_cannot_be_claimed(redis: aioredis.Redis, keys: Keys) -> None:
    c = CouponsRedis(redis, keys)
    d = _drop()
    await c.create_drop(d)
    assert await c.claim("d1", "late", now_ms=d.expires_ms) == "expired"
    assert await c.claim("nope", "u", now_ms=NOW) == "not_found"


async def test_a_coupon_locked_for_an_order_that_is_cancelled_returns_to_its_owner_unused(
    redis: aioredis.Redis, keys: Keys
) -> None:
    c = CouponsRedis(redis, keys)
    await c.create_drop(_drop())
    now = int(time.time() * 1000)
    assert isinstance(await c.claim("d1", "alice", now_ms=now), Claimed)
    cid = "d1:alice"
    assert await c.lock_for_order("alice", cid, "o1", 12_000) == 1_500
    assert await c.lock_for_order("alice", cid, "o1", 12_000) == 1_500  # idempotent per order
    with pytest.raises(CouponNotUsable, match="another order"):
        await c.lock_for_order("alice", cid, "o2", 12_000)
    assert (await c.coupon("alice", cid, now_ms=now))["state"] == "locked"  # type: ignore[index]
    await asyncio.gather(c.restore("o1"), c.restore("o1"))  # cancelled (and the cancel redelivered)
    await c.restore("o1")
    view = await c.coupon("alice", cid, now_ms=now)
    assert view is not None and view["state"] == "claimed" and "order_id" not in view
    # unused: another order can have it now, and a late restore of o1 cannot take it back
    assert await c.lock_for_order("alice", cid, "o2", 20_000) == 1_500
    await c.restore("o1")
    await c.consume("o2")
    await c.consume("o2")
    await c.restore("o2")  # a payment that succeeded keeps its coupon used
    view = await c.coupon("alice", cid, now_ms=now)
    assert view is not None and view["state"] == "used" and view["order_id"] == "o2"
    assert await c.lock_for_order("alice", cid, "o2", 20_000) == 1_500  # a retried pay of o2 sees its discount
    with pytest.raises(CouponNotUsable, match="another order"):
        await c.lock_for_order("alice", cid, "o3", 20_000)
    got = await c.get_drop("d1")
    assert got is not None and got[1]["used"] == 1
    await c.consume("no-coupon-order")  # orders without a coupon: no-ops
    await c.restore("no-coupon-order")


async def test_a_coupon_is_not_usable_when_not_owned_expired_or_below_threshold(redis: aioredis.Redis, keys: Keys) -> None:
    c = CouponsRedis(redis, keys)
    soon = int(time.time() * 1000) + 60_000
    await c.create_drop(_drop("full", expires_ms=soon))
    await c.create_drop(_drop("pct", kind="percent", threshold=0, value=15, expires_ms=soon))
    for did in ("full", "pct"):
        assert isinstance(await c.claim(did, "bob", now_ms=soon - 60_000), Claimed)
    with pytest.raises(CouponNotUsable, match="not yours"):
        await c.lock_for_order("eve", "full:bob", "o1", 50_000)
    with pytest.raises(CouponNotUsable, match="threshold"):
        await c.lock_for_order("bob", "full:bob", "o1", 9_999)
    with pytest.raises(CouponNotUsable, match="expired"):
        await c.lock_for_order("bob", "full:bob", "o1", 50_000, now_ms=soon)
    assert await c.lock_for_order("bob", "full:bob", "o1", 50_000) == 1_500  # the failed tries left nothing behind
    assert await c.lock_for_order("bob", "pct:bob", "o2", 999) == 149
    with pytest.raises(CouponNotUsable):
        await c.lock_for_order("bob", "garbage", "o3", 100)


async def test_hosts_drop_and_viewers_claim_over_websockets(gateway_factory: Any, token: Callable[..., str]) -> None:
    node = await gateway_factory()
    host = await Client.connect(node.ws, "r9", token("h9", role="host", rooms=("r9",)), fmt="json")
    viewers = [await Client.connect(node.ws, "r9", token(f"v{i}"), fmt="json") for i in range(3)]
    r = await viewers[0].request("coupon.drop", kind="full_reduction", value=500, quantity=2)
    assert r["t"] == "error" and r["d"]["code"] == "forbidden"
    r = await host.request("coupon.drop", drop_id="spring", kind="full_reduction", threshold=5_000, value=500, quantity=2)
    assert r["t"] == "ack" and r["d"]["drop_id"] == "spring"
    e = await viewers[2].next_event()
    assert e["t"] == "coupon.dropped" and e["d"]["remaining"] == 2 and e["d"]["value"] == 500
    claims = [await v.request("coupon.claim", drop_id="spring") for v in viewers]
    assert [c["t"] for c in claims[:2]] == ["coupon.claimed", "coupon.claimed"]
    assert claims[0]["d"]["coupon_id"] == "spring:v0" and claims[1]["d"]["remaining"] == 0
    assert claims[2]["d"]["code"] == "sold_out"
    assert (await viewers[0].request("coupon.claim", drop_id="spring"))["d"]["code"] == "already_claimed"
    assert (await viewers[0].request("coupon.claim", drop_id="nope"))["d"]["code"] == "not_found"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{node.url}/api/v1/coupons/spring") as resp:
            body = await resp.json()
            assert (body["remaining"], body["claimed"], body["used"], body["kind"]) == (0, 2, 0, "full_reduction")
        async with s.get(f"{node.url}/api/v1/users/v1/coupons", headers={"Authorization": f"Bearer {token('v1')}"}) as resp:
            assert [c["state"] for c in (await resp.json())["coupons"]] == ["claimed"]
        async with s.get(f"{node.url}/api/v1/users/v1/coupons", headers={"Authorization": f"Bearer {token('v2')}"}) as resp:
            assert resp.status == 403
        async with s.post(f"{node.url}/api/v1/rooms/r9/coupons", json={"kind": "percent", "value": 10, "quantity": 5},
                          headers={"Authorization": f"Bearer {token('ops', role='ops')}"}) as resp:
            assert resp.status == 201
            pct = (await resp.json())["drop_id"]
        async with s.post(f"{node.url}/api/v1/coupons/{pct}/claim", headers={"Authorization": f"Bearer {token('v2')}"}) as resp:
            assert resp.status == 201 and (await resp.json())["coupon_id"] == f"{pct}:v2"
    late = await Client.connect(node.ws, "r9", token("late"), fmt="json")
    assert [d["drop_id"] for d in late.welcome["d"]["coupons"]] == [pct]  # only drops with coupons left
    for c in (host, late, *viewers):
        await c.close()


async def test_a_coupon_pays_part_of_an_order_and_comes_back_when_the_payment_fails(
    gateway_factory: Any, token: Callable[..., str]
) -> None:
    """Through the gateway's own pay path (gateway.commerce + livecommerce.checkout)."""
    node = await gateway_factory()
    ops = {"Authorization": f"Bearer {token('ops', role='ops')}"}
    now = int(time.time() * 1000)
    async with aiohttp.ClientSession() as s:

        async def call(method: str, path: str, user: str | None = None, **kw: Any) -> tuple[int, Any]:
            headers = ops if user is None else {"Authorization": f"Bearer {token(user)}"}
            async with s.request(method, node.url + path, headers=headers, **kw) as resp:
                return resp.status, await resp.json()

        st, _ = await call("POST", "/api/v1/campaigns", json={
            "id": "tea", "room": "shop", "product_id": "p1", "product_name": "Tea", "price": 1999, "stock": 5,
            "per_user_limit": 1, "starts_ms": now - 1000, "duration_s": 600})
        assert st == 201
        assert (await call("POST", "/api/v1/sales/tea/start"))[0] == 200
        await call("POST", "/api/v1/rooms/shop/coupons", json={"drop_id": "save3", "kind": "full_reduction",
                                                               "threshold": 1000, "value": 300, "quantity": 5})
        for u in ("b1", "b2"):
            assert (await call("POST", "/api/v1/coupons/save3/claim", u))[0] == 201
        orders = {}
        for u in ("b1", "b2"):
            st, body = await call("POST", "/api/v1/sales/tea/buy", u, json={"qty": 1, "request_id": f"r-{u}"})
            assert st == 201, body
            orders[u] = body["order_id"]
        st, body = await call("POST", f"/api/v1/orders/{orders['b1']}/pay", "b1", json={"coupon_id": "save3:b2"})
        assert (st, body["error"]["code"]) == (409, "coupon_not_usable")  # not b1's coupon
        st, body = await call("POST", f"/api/v1/orders/{orders['b1']}/pay", "b1", json={"coupon_id": "save3:b1"})
        assert (st, body["amount"], body["discount"]) == (200, 1699, 300)
        # b2 cancels, then a late payment with the coupon fails: the coupon goes back unused
        assert (await call("POST", f"/api/v1/orders/{orders['b2']}/cancel", "b2"))[1]["outcome"] == "released"
        st, body = await call("POST", f"/api/v1/orders/{orders['b2']}/pay", "b2", json={"coupon_id": "save3:b2"})
        assert st == 409
        st, body = await call("GET", "/api/v1/users/b2/coupons", "b2")
        assert [(c["coupon_id"], c["state"]) for c in body["coupons"]] == [("save3:b2", "claimed")]
        st, body = await call("GET", "/api/v1/users/b1/coupons", "b1")
        assert [(c["state"], c["order_id"]) for c in body["coupons"]] == [("used", orders["b1"])]
        assert (await call("GET", "/api/v1/coupons/save3"))[1]["used"] == 1
