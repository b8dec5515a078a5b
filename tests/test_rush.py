"""The rush moment over real WebSockets: 2,000 buyers buy 100 units at once through one node,
on the batched buy path (the sale's group commit), with the durable log on Redis Streams and
on Kafka (Tansu). Exactly 100 are reserved, the stock is conserved, each reserved order's
``order.reserved`` is on the log exactly once, and a retried ``request_id`` gets its order."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from livecommerce.clock import now_ms
from livecommerce.config import Settings
from livecommerce.log_open import open_log
from tests.fixtures_gateway import GatewayFactory
from tests.wsclient import Client

BUYERS, STOCK = 2000, 100


async def reserved_events_on_the_log(s: Settings, sale: str, expect: int) -> dict[str, int]:
    """Event id -> copies of this sale's ``order.reserved`` on the log, read by a new group
    until ``expect`` are in and a second passes without more."""
    durable = open_log(s)
    counts: dict[str, int] = {}
    try:
        c = await durable.consumer("orders", f"check-{uuid.uuid4().hex[:6]}", "c1")
        quiet_until = 0.0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = await c.fetch(max_events=500, timeout_ms=300)
            for d in got:
                if d.event.type == "order.reserved" and d.event.data.get("sale_id") == sale:
                    counts[d.event.id] = counts.get(d.event.id, 0) + 1
            if got:
                await c.ack(got)
            elif sum(counts.values()) >= expect:
                if not quiet_until:
                    quiet_until = time.monotonic() + 1.0
                elif time.monotonic() >= quiet_until:
                    break
        await c.close()
    finally:
        await durable.close()
    return counts


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("log", ["redis", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_two_thousand_websocket_buyers_on_a_hundred_units_reserve_exactly_a_hundred_in_group_commits(
        log: str, gateway_factory: GatewayFactory, token: Callable[..., str], request: pytest.FixtureRequest) -> None:
    over: dict[str, Any] = {"max_conns_per_ip": BUYERS + 100}
    if log == "kafka":
        over.update(kafka_bootstrap=request.getfixturevalue("kafka_bootstrap"), kafka_idempotent=False,
                    kafka_partitions=3, kafka_session_timeout_ms=2000)
    node = await gateway_factory(**over)
    sid = f"rush{uuid.uuid4().hex[:6]}"
    ops = {"Authorization": f"Bearer {token('ops1', 'ops')}"}
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{node.url}/api/v1/campaigns", headers=ops, json={
            "id": sid, "room": "rush", "product_id": "p1", "price": 999, "stock": STOCK, "per_user_limit": 1,
            "starts_ms": now_ms() - 1000, "duration_s": 600})
        assert r.status == 201, await r.text()
    sem = asyncio.Semaphore(100)

    async def join(i: int) -> Client:
        async with sem:
            return await Client.connect(node.ws, "rush", token(f"b{i}"), fmt="json" if i % 2 else "msgpack")

    buyers = await asyncio.gather(*(join(i) for i in range(BUYERS)))
    sales = node.services.checkout.sales
    batch_calls: list[int] = []
    real_batch = sales.reserve_batch

    async def counting(sale_id: str, buys: list[Any], **kw: Any) -> Any:
        batch_calls.append(len(buys))
        return await real_batch(sale_id, buys, **kw)

    sales.reserve_batch = counting
    try:
        answers = await asyncio.gather(*(b.request("buy", 60, sale_id=sid, qty=1, request_id=f"q{i}")
                                         for i, b in enumerate(buyers)))
        won = {i: a["d"]["order_id"] for i, a in enumerate(answers) if a["t"] == "order.reserved"}
        refused = [a["d"]["code"] for a in answers if a["t"] != "order.reserved"]
        assert len(won) == STOCK and len(set(won.values())) == STOCK
        assert refused == ["sold_out"] * (BUYERS - STOCK)
        assert batch_calls and max(batch_calls) > 1  # the batched path decided them, several buys per call
        assert sum(batch_calls) < BUYERS  # the sold-out answers came from the node, not from Redis
        st = await sales.stats(sid)
        assert (st.remaining, st.reserved, st.buyers) == (0, STOCK, STOCK) and st.conserved
        on_log = await reserved_events_on_the_log(node.settings, sid, STOCK)
        assert on_log == {f"{oid}:reserved": 1 for oid in won.values()}
        # retries with the same request_id: the same order, or sold_out again
        some_won = list(won)[:10]
        some_refused = [i for i in range(BUYERS) if i not in won][:10]
        again = await asyncio.gather(*(buyers[i].request("buy", 30, sale_id=sid, qty=1, request_id=f"q{i}")
                                       for i in some_won + some_refused))
        assert [a["d"].get("order_id") for a in again[:10]] == [won[i] for i in some_won]
        assert all(a["d"]["duplicate"] for a in again[:10])
        assert [a["d"]["code"] for a in again[10:]] == ["sold_out"] * 10
        assert (await sales.stats(sid)).reserved == STOCK
    finally:
        await asyncio.gather(*(b.close() for b in buyers), return_exceptions=True)


async def test_a_rush_takes_a_stock_figure_at_most_every_rush_window_counted_from_its_first_commit(
        gateway_factory: GatewayFactory) -> None:
    from gateway.commerce import RUSH_STOCK_S

    node = await gateway_factory(stock_broadcast_ms=250)
    sales = node.services.sales
    assert not sales._stock_due("s1", rush=True)  # the rush's first commit opens the window, takes no figure
    assert not sales._stock_due("s1", rush=True)
    sales.last_stock_pub["s1"] -= 0.3  # past the normal window, inside the rush's
    assert not sales._stock_due("s1", rush=True)
    assert sales._stock_due("s1")  # no buys queued: the normal window
    sales.last_stock_pub["s1"] -= RUSH_STOCK_S
    assert sales._stock_due("s1", rush=True)  # a long rush still shows its figure
    assert sales._stock_due("s2")  # a sale with no rush takes its first figure at once


async def test_a_node_that_does_not_hear_the_sales_room_keeps_no_view_of_its_sell_out(
        gateway_factory: GatewayFactory, token: Callable[..., str]) -> None:
    """Its commit sold the sale out, but no viewer of the room is on this node, so no
    restock would ever reach it: the next buy after a release must reach Redis."""
    node = await gateway_factory()
    sid = f"nov{uuid.uuid4().hex[:6]}"
    ops = {"Authorization": f"Bearer {token('ops1', 'ops')}"}
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{node.url}/api/v1/campaigns", headers=ops, json={
            "id": sid, "room": "unwatched", "product_id": "p1", "price": 999, "stock": 2, "per_user_limit": 1,
            "starts_ms": now_ms() - 1000, "duration_s": 600})
        assert r.status == 201, await r.text()

        async def buy(user: str, rid: str) -> tuple[int, dict[str, Any]]:
            resp = await http.post(f"{node.url}/api/v1/sales/{sid}/buy", json={"qty": 1, "request_id": rid},
                                   headers={"Authorization": f"Bearer {token(user)}"})
            return resp.status, await resp.json()

        got = await asyncio.gather(*(buy(f"u{i}", "a") for i in range(6)))
        assert sorted(s for s, _ in got) == [201, 201, 409, 409, 409, 409]
        oid, owner = next((b["order_id"], f"u{i}") for i, (s, b) in enumerate(got) if s == 201)
        c = await http.post(f"{node.url}/api/v1/orders/{oid}/cancel", json={},
                            headers={"Authorization": f"Bearer {token(owner)}"})
        assert c.status == 200 and (await c.json())["outcome"] == "released"
        late = next(f"u{i}" for i, (s, _) in enumerate(got) if s == 409)
        status, body = await buy(late, "b")
        assert status == 201, body
    assert sid not in node.services.sales.views or node.services.sales.views[sid].state != "sold_out"
