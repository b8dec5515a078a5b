"""Ending a room closes its commerce in one step ([M2 1/7] item 5), and ``sale.stock`` is a
latest-value counter that ``since=`` recovery gives per sale (item 6)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from livecommerce.lottery import step as lottery_step
from livecommerce.protocol.events import Priority, priority_of, recovery_plan
from livecommerce.rooms import end_options
from tests.waiting import wait_until
from tests.wsclient import Client, next_of, nothing_of
from workers.lottery import LotteryDrawer


def now_ms() -> int:
    return int(time.time() * 1000)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post(http: aiohttp.ClientSession, url: str, tok: str, body: Any = None, status: int | None = None) -> Any:
    async with http.post(url, json=body if body is not None else {}, headers=auth(tok)) as r:
        data = await r.json()
        if status is not None:
            assert r.status == status, (r.status, data)
        return data


async def live_show(http: aiohttp.ClientSession, base: str, room: str, ops: str) -> dict[str, str]:
    """A live room with an open sale, a scheduled sale, an open lottery and a coupon drop."""
    api = f"{base}/api/v1"
    await post(http, f"{api}/rooms", ops, {"id": room, "title": "Tea night", "host": "h"}, 201)
    await post(http, f"{api}/rooms/{room}/live", ops, status=200)
    sale = f"s{uuid.uuid4().hex[:8]}"
    later = f"s{uuid.uuid4().hex[:8]}"
    camp = {"room": room, "product_id": "p1", "price": 1999, "stock": 10, "per_user_limit": 2, "duration_s": 600}
    await post(http, f"{api}/campaigns", ops, {**camp, "id": sale, "starts_ms": now_ms() - 1000}, 201)
    await post(http, f"{api}/campaigns", ops, {**camp, "id": later, "starts_ms": now_ms() + 3_600_000}, 201)
    lot = await post(
        http, f"{api}/rooms/{room}/lotteries", ops,
        {"prize": {"kind": "product", "id": "p1"}, "winners": 1, "duration_s": 600, "rule": "enter"}, 201,
    )
    drop = await post(
        http, f"{api}/rooms/{room}/coupons", ops,
        {"drop_id": f"d{uuid.uuid4().hex[:6]}", "kind": "full_reduction", "threshold": 1000, "value": 300, "quantity": 50, "expires_in_s": 3600},
        201,
    )
    return {"sale": sale, "later": later, "lottery": lot["id"], "drop": drop["drop_id"]}


# ---------------------------------------------------------------- pure rules
def test_end_options_default_to_drawing_lotteries_and_refuse_anything_else() -> None:
    assert end_options({}) == "draw"
    assert end_options({"lotteries": "cancel"}) == "cancel"
    assert end_options({"lotteries": "draw"}) == "draw"
    from livecommerce.errors import BadFrame

    bodies: list[Any] = [{"lotteries": "later"}, {"lotteries": 1}, []]
    for bad in bodies:
        with pytest.raises(BadFrame):
            end_options(bad)


def test_an_open_lottery_may_be_cancelled_and_only_an_open_one() -> None:
    assert lottery_step("open", "cancel") == ("cancelled", True)
    assert lottery_step("cancelled", "cancel") == ("cancelled", False)
    from livecommerce.errors import Conflict

    with pytest.raises(Conflict):
        lottery_step("drawn", "cancel")


def test_sale_stock_is_a_sheddable_counter_recovered_as_each_sales_latest_value() -> None:
    assert priority_of("sale.stock") is Priority.BATCHED
    for t in ("sale.started", "sale.soldout", "sale.ended", "room.ended"):
        assert priority_of(t) is Priority.CRITICAL

    def stock(seq: int, sale: str, n: int) -> dict[str, Any]:
        return {"t": "sale.stock", "seq": seq, "d": {"sale_id": sale, "remaining": n}}

    events = [stock(1, "A", 5), stock(2, "B", 9), stock(3, "A", 3), stock(4, "B", 8), {"t": "likes", "seq": 5, "d": {"total": 1}}]
    plan = recovery_plan(events)
    assert [(e["d"].get("sale_id"), e["d"].get("remaining")) for e in plan if e["t"] == "sale.stock"] == [("A", 3), ("B", 8)]
    assert [e["seq"] for e in plan] == [3, 4, 5]  # still in seq order


# ---------------------------------------------------------------- end to end, two gateways
async def test_ending_a_room_closes_its_commerce_and_every_gateway_answers_room_ended(gateway_factory, token, http, redis, keys):
    a, b = await gateway_factory(), await gateway_factory()
    room = f"r{uuid.uuid4().hex[:6]}"
    ops, host = token("ops1", "ops"), token("h", "host", (room,))
    ids = await live_show(http, a.url, room, ops)
    viewer_b = await Client.connect(b.ws, room, token("v1"))
    viewer_a = await Client.connect(a.ws, room, token("v2"))
    held = await viewer_b.request("buy", sale_id=ids["sale"], qty=1, request_id="before-end")
    assert held["t"] == "order.reserved", held
    entered = await viewer_b.request("lottery.enter", lottery_id=ids["lottery"])
    assert entered["t"] == "ack", entered

    ended = await post(http, f"{a.url}/api/v1/rooms/{room}/end", host, {}, 200)
    assert ended["state"] == "ended"
    assert ended["closed"] == {"sales": [ids["sale"]], "lotteries": [ids["lottery"]], "drops": [ids["drop"]], "lottery_action": "draw"}

    # viewers on both nodes get one room.ended with what closed
    for v in (viewer_a, viewer_b):
        e = await next_of(v, "room.ended")
        assert e["d"]["closed"] == ended["closed"]
        assert e["d"]["comments"] >= 0 and "duration_s" in e["d"]
    # the other gateway refuses everything that belongs to the show
    async with http.post(f"{b.url}/api/v1/sales/{ids['sale']}/buy", json={"qty": 1, "request_id": "x1"}, headers=auth(token("v3"))) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "room_ended"
    async with http.post(f"{b.url}/api/v1/coupons/{ids['drop']}/claim", headers=auth(token("v3"))) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "room_ended"
    for cmd, d in (
        ("buy", {"sale_id": ids["sale"], "qty": 1, "request_id": "after"}),
        ("buy", {"sale_id": ids["later"], "qty": 1, "request_id": "later"}),  # scheduled: not closed, still refused
        ("comment", {"text": "still here?"}),
        ("coupon.claim", {"drop_id": ids["drop"]}),
        ("lottery.enter", {"lottery_id": ids["lottery"]}),
    ):
        reply = await viewer_a.request(cmd, **d)
        assert reply["t"] == "error" and reply["d"]["code"] == "room_ended", (cmd, reply)
    # the sale reads ended (the scheduled one is left for a later show); the hold keeps its pay window
    async with http.get(f"{b.url}/api/v1/sales/{ids['sale']}/stats", headers=auth(ops)) as r:
        assert (await r.json())["state"] == "ended"
    async with http.get(f"{b.url}/api/v1/sales/{ids['later']}/stats", headers=auth(ops)) as r:
        assert (await r.json())["state"] == "scheduled"
    oid = held["d"]["order_id"]
    paid = await post(http, f"{b.url}/api/v1/orders/{oid}/pay", token("v1"), {}, 200)
    assert paid["outcome"] == "paid"
    # the pending lottery draws at once, from the entrants it had
    drawer = LotteryDrawer.for_redis(redis, keys, worker="w1")
    try:
        done = await drawer.drain()
    finally:
        await drawer.broker.close()
    assert [(o.lottery_id, o.action, o.winners) for o in done] == [(ids["lottery"], "drawn", ["v1"])]
    async with http.get(f"{b.url}/api/v1/lotteries/{ids['lottery']}") as r:
        assert (await r.json())["state"] == "announced"
    async with http.get(f"{b.url}/api/v1/rooms/{room}/coupons") as r:
        assert (await r.json())["drops"] == []

    # ending again changes nothing and answers the same
    again = await post(http, f"{b.url}/api/v1/rooms/{room}/end", host, {"lotteries": "cancel"}, 200)
    assert again == ended
    await nothing_of(viewer_b, "room.ended", 0.3)
    async with http.get(f"{b.url}/api/v1/rooms/{room}") as r:
        assert (await r.json())["closed"] == ended["closed"]
    # a new show in the same room takes comments again; the closed sale stays closed
    await post(http, f"{a.url}/api/v1/rooms/{room}/live", host, {}, 200)
    ok = await viewer_a.request("comment", text="round two")  # node a went live itself: it knows
    assert ok["t"] == "ack", ok
    await viewer_a.close()
    await viewer_b.close()


async def test_a_gateway_that_missed_room_ended_still_refuses(gateway_factory, token, http):
    a, b = await gateway_factory(), await gateway_factory()
    room = f"r{uuid.uuid4().hex[:6]}"
    ops, host = token("ops1", "ops"), token("h", "host", (room,))
    ids = await live_show(http, a.url, room, ops)
    viewer = await Client.connect(b.ws, room, token("v1"))
    gate = b.services.room_gate
    # node b never hears room.ended: neither its gate nor its room snapshot (which would take
    # the served snapshot the gate answers from back, so the gate would read Redis at once)
    b.gw.hub.observers["room.ended"] = []
    gate.ttl_s = 60.0
    assert await gate.state(room) == "live"  # and has cached the room as live

    await post(http, f"{a.url}/api/v1/rooms/{room}/end", host, {"lotteries": "cancel"}, 200)
    assert await gate.state(room) == "live"  # still stale here: the refusals below come from Redis
    async with http.post(f"{b.url}/api/v1/sales/{ids['sale']}/buy", json={"qty": 1, "request_id": "x1"}, headers=auth(token("v3"))) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "room_ended"
    async with http.post(f"{b.url}/api/v1/coupons/{ids['drop']}/claim", headers=auth(token("v3"))) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "room_ended"
    reply = await viewer.request("buy", sale_id=ids["sale"], qty=1, request_id="ws1")
    assert reply["d"]["code"] == "room_ended", reply
    reply = await viewer.request("lottery.enter", lottery_id=ids["lottery"])
    assert reply["d"]["code"] == "room_ended", reply
    # the room b serves is answered from its snapshot, which is read again once it is older
    # than max_age_s (10 s; 0.3 s here): then the room's state in Redis answers
    gate.ttl_s = 0.2
    gate.forget(room)
    b.services.rooms.views.max_age_s = 0.3
    await wait_until(lambda: gate.state(room), until=lambda st: st == "ended", what="node b reloads the room")
    reply = await viewer.request("comment", text="anyone?")
    assert reply["t"] == "error" and reply["d"]["code"] == "room_ended", reply
    await viewer.close()


async def test_ending_a_room_can_cancel_its_pending_lotteries(gateway_factory, token, http, redis, keys):
    node = await gateway_factory()
    room = f"r{uuid.uuid4().hex[:6]}"
    ops = token("ops1", "ops")
    host = await Client.connect(node.ws, room, token("h", "host", (room,)))
    ids = await live_show(http, node.url, room, ops)
    bad = await host.request("room.end", lotteries="maybe")
    assert bad["t"] == "error" and bad["d"]["code"] == "invalid", bad
    end = await host.request("room.end", lotteries="cancel")
    assert end["t"] == "ack", end
    assert end["d"]["closed"]["lotteries"] == [ids["lottery"]] and end["d"]["closed"]["lottery_action"] == "cancel"
    ev = await next_of(host, "room.ended")
    assert ev["d"]["closed"] == end["d"]["closed"]
    drawer = LotteryDrawer.for_redis(redis, keys, worker="w1")
    try:
        assert await drawer.drain(now_ms=now_ms() + 3_600_000) == []  # never drawn, even past its deadline
    finally:
        await drawer.broker.close()
    async with aiohttp.ClientSession() as s, s.get(f"{node.url}/api/v1/lotteries/{ids['lottery']}") as r:
        assert (await r.json())["state"] == "cancelled"
    # a cancelled lottery is never announced, and its keys expire all the same (docs/retention.md)
    lot_keys = [k async for k in redis.scan_iter(match=f"{keys.prefix}:{{lottery:{ids['lottery']}}}:*")]
    ttls = [await redis.ttl(k) for k in lot_keys]
    assert lot_keys and all(0 < t <= 30 * 24 * 3600 for t in ttls), (lot_keys, ttls)
    # a lottery or a coupon drop cannot be started in an ended room
    for cmd, d in (("lottery.start", {"prize": {"kind": "product", "id": "p1"}, "winners": 1, "duration_s": 60, "rule": "enter"}),
                   ("coupon.drop", {"kind": "full_reduction", "threshold": 1000, "value": 300, "quantity": 5})):
        reply = await host.request(cmd, **d)
        assert reply["t"] == "error" and reply["d"]["code"] == "room_ended", (cmd, reply)
    await host.close()


# ---------------------------------------------------------------- item 6: sale.stock recovery
async def test_since_recovery_sends_the_latest_stock_of_every_sale(gateway_factory, token):
    node = await gateway_factory()
    room = f"r{uuid.uuid4().hex[:6]}"
    await node.gw.publish(room, "notice", {"text": "the room has a seq"})
    v = await Client.connect(node.ws, room, token("v1"), fmt="json")
    since = v.welcome["d"]["seq"]
    await v.close()
    for sale, n in (("A", 5), ("B", 9), ("A", 4), ("A", 3), ("B", 8)):
        await node.gw.publish(room, "sale.stock", {"sale_id": sale, "remaining": n})
    back = await Client.connect(node.ws, room, token("v1"), fmt="json", since=since)
    assert back.welcome["d"]["recovered"] is True
    frame = await back.next_frame()
    assert frame["t"] == "batch"
    got = [(e["d"]["sale_id"], e["d"]["remaining"]) for e in frame["items"] if e["t"] == "sale.stock"]
    assert got == [("A", 3), ("B", 8)]
    await back.close()


async def test_a_buyer_retrying_after_the_end_gets_the_order_made_before_it(gateway_factory, token, http):
    node = await gateway_factory()
    room = f"r{uuid.uuid4().hex[:6]}"
    ops, host, buyer = token("ops1", "ops"), token("h", "host", (room,)), token("b1")
    ids = await live_show(http, node.url, room, ops)
    buy = f"{node.url}/api/v1/sales/{ids['sale']}/buy"
    first = await post(http, buy, buyer, {"qty": 1, "request_id": "before-end"}, 201)
    await post(http, f"{node.url}/api/v1/rooms/{room}/end", host, {}, 200)
    # the reply was lost; the retry after the end answers the same order, not room_ended
    again = await post(http, buy, buyer, {"qty": 1, "request_id": "before-end"}, 200)
    assert again["order_id"] == first["order_id"] and again["duplicate"] is True
    fresh = await post(http, buy, buyer, {"qty": 1, "request_id": "after-end"}, 409)
    assert fresh["error"]["code"] == "room_ended"
    # the same through the WebSocket of a node that does not hold the sale's view yet
    viewer = await Client.connect(node.ws, room, buyer)
    reply = await viewer.request("buy", sale_id=ids["sale"], qty=1, request_id="before-end")
    assert reply["t"] == "order.reserved" and reply["d"]["order_id"] == first["order_id"], reply
    await viewer.close()


async def test_comments_counted_by_a_tick_in_flight_at_the_end_are_kept(gateway_factory, token, http):
    """The node's once-a-second tick had taken the room's comment count and was writing it
    when the host ended the show: the end waits for that write instead of losing it."""
    import asyncio

    node = await gateway_factory()
    room = f"r{uuid.uuid4().hex[:6]}"
    ops, host = token("ops1", "ops"), token("h", "host", (room,))
    await post(http, f"{node.url}/api/v1/rooms", ops, {"id": room, "title": "Last word", "host": "h"}, 201)
    await post(http, f"{node.url}/api/v1/rooms/{room}/live", ops, status=200)
    viewer = await Client.connect(node.ws, room, token("v1"))
    for i in range(3):
        assert (await viewer.request("comment", text=f"bye {i}"))["t"] == "ack"
    svc = node.services.rooms
    adapter_tick = svc.rooms.tick
    release = asyncio.Event()
    taken = asyncio.Event()

    async def slow_tick(rows):  # the real write, held back until the end has been asked for
        if any(r[2] for r in rows):
            taken.set()
            await release.wait()
        await adapter_tick(rows)

    svc.rooms.tick = slow_tick
    in_flight = asyncio.get_running_loop().create_task(svc.tick())
    await asyncio.wait_for(taken.wait(), 5)
    ending = asyncio.get_running_loop().create_task(post(http, f"{node.url}/api/v1/rooms/{room}/end", host, {}, 200))
    await asyncio.sleep(0.2)  # the end is waiting now (before the fix it ended the show here)
    release.set()
    await in_flight
    ended = await ending
    assert ended["summary"]["comments"] == 3, ended
    await viewer.close()
