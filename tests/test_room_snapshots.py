"""The node's room snapshot (``gateway/snapshots.py``): a joiner's ``welcome`` from memory
for a room the node serves, never stale after a change made through another node, and
what a welcome costs in Redis round trips."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from gateway.hub import Hub
from gateway.metrics import Metrics
from livecommerce.broker import MemoryBroker
from livecommerce.presence import MemoryPresence
from livecommerce.room_snapshot import RoomSnapshot, apply, live_coupons, open_lotteries
from tests.waiting import wait_until
from tests.wsclient import Client, next_of

PRIZE = {"kind": "product", "id": "bag1"}


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def post(http: aiohttp.ClientSession, url: str, tok: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with http.post(url, json=body or {}, headers=auth(tok)) as r:
        assert r.status in (200, 201), (url, r.status, await r.text())
        return dict(await r.json())


# ---------------------------------------------------------------- the pure rules
def test_an_event_at_or_below_the_snapshot_seq_is_already_in_it() -> None:
    snap = RoomSnapshot(room="r", seq=10, meta=None, pin={"product_id": "new"}, likes=0, leaderboard=[])
    assert apply(snap, {"t": "product.pinned", "room": "r", "seq": 9, "d": {"product_id": "old"}}) == "ignored"
    assert snap.pin == {"product_id": "new"} and snap.seq == 10
    assert apply(snap, {"t": "product.unpinned", "room": "r", "seq": 11, "d": {}}) == "applied"
    assert snap.pin is None and snap.seq == 11
    assert apply(snap, {"t": "room.live", "room": "r", "seq": 12, "d": {}}) == "reload"


def test_listings_follow_their_events_the_clock_and_the_show_end() -> None:
    snap = RoomSnapshot(room="r", seq=1, meta={"id": "r", "state": "live"}, pin=None, likes=0, leaderboard=[])
    apply(snap, {"t": "lottery.started", "room": "r", "seq": 2, "d": {"id": "l1", "deadline_ms": 5000}})
    apply(snap, {"t": "lottery.started", "room": "r", "seq": 3, "d": {"id": "l2", "deadline_ms": 9000}})
    apply(snap, {"t": "coupon.dropped", "room": "r", "seq": 4,
                 "d": {"drop_id": "d1", "kind": "percent", "threshold": 0, "value": 10, "quantity": 3, "remaining": 3,
                       "expires_ms": 8000, "by": "h"}})
    assert [lot["id"] for lot in open_lotteries(snap, 1000)] == ["l1", "l2"]
    assert [lot["id"] for lot in open_lotteries(snap, 6000)] == ["l2"]  # past its deadline
    assert live_coupons(snap, 1000, 5)[0] == {"drop_id": "d1", "room": "r", "kind": "percent", "threshold": 0, "value": 10,
                                              "quantity": 3, "expires_ms": 8000, "by": "h", "remaining": 3, "claimed": 0,
                                              "used": 0}
    apply(snap, {"t": "lottery.ended", "room": "r", "seq": 5, "d": {"id": "l1"}})
    assert [lot["id"] for lot in open_lotteries(snap, 1000)] == ["l2"]
    snap.meta = {"id": "r", "state": "ended", "closed": '{"lotteries": ["l2"], "drops": ["d1"]}'}
    assert open_lotteries(snap, 1000) == [] and live_coupons(snap, 1000, 5) == []


# ---------------------------------------------------------------- two nodes
async def test_a_joiner_on_one_node_sees_what_was_changed_through_another(gateway_factory: Any,
                                                                          token: Callable[..., str]) -> None:
    a, b = await gateway_factory(), await gateway_factory()
    room = "snap1"
    host = token("h", "host", (room,))
    async with aiohttp.ClientSession() as http:
        await post(http, f"{a.url}/api/v1/rooms", host, {"id": room, "title": "Tea time"})
        await post(http, f"{a.url}/api/v1/products", host, {"id": "tea", "name": "Tea set", "price": 1999})
        watcher = await Client.connect(b.ws, room, token("w"))  # node b serves the room from here on
        assert watcher.welcome["d"]["show"]["state"] == "created" and watcher.welcome["d"]["pin"] is None
        views = b.services.rooms.views
        loads = views.loads

        await post(http, f"{a.url}/api/v1/rooms/{room}/live", host)
        await next_of(watcher, "room.live")
        late = await Client.connect(b.ws, room, token("late1"))
        assert late.welcome["d"]["show"]["state"] == "live" and late.welcome["d"]["show"]["title"] == "Tea time"
        assert late.welcome["d"]["seq"] >= (await b.gw.broker.top_seq(room))

        await post(http, f"{a.url}/api/v1/rooms/{room}/pin", host, {"product_id": "tea"})
        drop = await post(http, f"{a.url}/api/v1/rooms/{room}/coupons", host, {"kind": "percent", "value": 10, "quantity": 2})
        lot = await post(http, f"{a.url}/api/v1/rooms/{room}/lotteries", host,
                         {"prize": PRIZE, "winners": 1, "duration_s": 60, "rule": "enter", "title": "Bag"})
        await next_of(watcher, "product.pinned")
        await next_of(watcher, "coupon.dropped")
        await next_of(watcher, "lottery.started")
        late2 = await Client.connect(b.ws, room, token("late2"))
        d = late2.welcome["d"]
        assert d["pin"]["product_id"] == "tea"
        assert [c["drop_id"] for c in d["coupons"]] == [drop["drop_id"]] and d["coupons"][0]["remaining"] == 2
        assert [x["id"] for x in d["lotteries"]] == [lot["id"]]
        # those three came with their events: node b did not read the room again for them
        assert views.loads == loads + 1  # (room.live made it read the show once)

        async with http.delete(f"{a.url}/api/v1/rooms/{room}/pin", headers=auth(host)) as r:
            assert r.status == 200
        await next_of(watcher, "product.unpinned")
        assert (await Client.connect(b.ws, room, token("late3"))).welcome["d"]["pin"] is None

        await post(http, f"{a.url}/api/v1/rooms/{room}/end", host)
        ended = await next_of(watcher, "room.ended")
        late4 = await Client.connect(b.ws, room, token("late4"))
        d = late4.welcome["d"]
        assert d["show"]["state"] == "ended" and d["show"]["summary"]["comments"] == ended["d"]["comments"]
        assert d["coupons"] == [] and d["lotteries"] == []  # the end closed them
        for c in (watcher, late, late2, late4):
            await c.close()


async def test_a_claim_on_another_node_reaches_the_welcome_within_the_refresh(gateway_factory: Any,
                                                                              token: Callable[..., str]) -> None:
    """Claims are not broadcast: the node reads the counts of listed drops once a second."""
    a, b = await gateway_factory(), await gateway_factory()
    room = "snap2"
    host = token("h", "host", (room,))
    async with aiohttp.ClientSession() as http:
        await post(http, f"{a.url}/api/v1/rooms", host, {"id": room})
        watcher = await Client.connect(b.ws, room, token("w"))
        drop = await post(http, f"{a.url}/api/v1/rooms/{room}/coupons", host, {"kind": "percent", "value": 10, "quantity": 1})
        await next_of(watcher, "coupon.dropped")
        await post(http, f"{a.url}/api/v1/coupons/{drop['drop_id']}/claim", token("v1"))  # the last coupon, on node a

        async def gone_from_b() -> bool:
            c = await Client.connect(b.ws, room, token("late"))
            await c.close()
            return c.welcome["d"]["coupons"] == []

        await wait_until(gone_from_b, timeout=5, interval=0.3, what="the sold-out drop off node b's welcome")
        # a claim through the node itself shows at once
        drop2 = await post(http, f"{b.url}/api/v1/rooms/{room}/coupons", host, {"kind": "percent", "value": 5, "quantity": 1})
        await post(http, f"{b.url}/api/v1/coupons/{drop2['drop_id']}/claim", token("v2"))
        assert (await Client.connect(b.ws, room, token("late2"))).welcome["d"]["coupons"] == []
        await watcher.close()


async def test_a_room_created_after_its_first_viewers_shows_up_in_welcome(gateway_factory: Any,
                                                                          token: Callable[..., str]) -> None:
    a, b = await gateway_factory(), await gateway_factory()
    room = "snap3"
    early = await Client.connect(b.ws, room, token("early"))
    assert "show" not in early.welcome["d"]
    async with aiohttp.ClientSession() as http:
        await post(http, f"{a.url}/api/v1/rooms", token("h", "host", (room,)), {"id": room, "title": "Later"})

    async def shown() -> Any:
        c = await Client.connect(b.ws, room, token("late"))
        await c.close()
        return c.welcome["d"].get("show")

    show = await wait_until(shown, timeout=5, interval=0.3, what="the created room in node b's welcome")
    assert show["title"] == "Later" and show["state"] == "created"
    await early.close()


# ---------------------------------------------------------------- Redis round trips of a welcome
class RoundTrips:
    """Counts the Redis round trips a node's client makes, by the task that makes them
    (the real client, instrumented: every command and every pipeline execution)."""

    def __init__(self, redis: Any) -> None:
        self.calls: list[tuple[str, str]] = []
        cmd, pipeline = redis.execute_command, redis.pipeline

        async def execute_command(*args: Any, **kw: Any) -> Any:
            self.calls.append((self.task(), str(args[0])))
            return await cmd(*args, **kw)

        def make_pipeline(*args: Any, **kw: Any) -> Any:
            pipe = pipeline(*args, **kw)
            run = pipe.execute

            async def execute(*a: Any, **k: Any) -> Any:
                self.calls.append((self.task(), f"PIPELINE[{len(pipe.command_stack)}]"))
                return await run(*a, **k)

            pipe.execute = execute
            return pipe

        redis.execute_command = execute_command
        redis.pipeline = make_pipeline

    @staticmethod
    def task() -> str:
        t = asyncio.current_task()
        if t is None:
            return "?"
        coro = t.get_coro()
        return f"{t.get_name()}|{getattr(coro, '__qualname__', '')}"

    @staticmethod
    def by_connection(task: str) -> bool:
        """A connection's own task: aiohttp's request handler, or the own transport's opening
        and frame dispatch (``gateway/wsserver.py``)."""
        return any(k in task for k in ("RequestHandler", "WsLink._open", "WsLink._dispatch"))

    def welcome_path(self, since: int) -> list[tuple[str, str]]:
        """Round trips made by connection handlers and the snapshot loads they wait for
        (not the node's background batches and periodic work)."""
        return [c for c in self.calls[since:] if self.by_connection(c[0]) or c[0].startswith("snapshot.load")]


async def test_a_welcome_into_a_room_the_node_serves_costs_no_redis_round_trip(gateway_factory: Any,
                                                                                token: Callable[..., str]) -> None:
    node = await gateway_factory()
    room = "snap4"
    async with aiohttp.ClientSession() as http:
        await post(http, f"{node.url}/api/v1/rooms", token("h", "host", (room,)), {"id": room})
    trips = RoundTrips(node.gw.redis)
    mark = len(trips.calls)
    first = await Client.connect(node.ws, room, token("v1"))
    cold = [c for c in trips.welcome_path(mark) if c[0].startswith("snapshot.load")]
    assert len(cold) == 1 and cold[0][1].startswith("PIPELINE"), trips.welcome_path(mark)  # one read of the room
    mark = len(trips.calls)
    others = [await Client.connect(node.ws, room, token(f"v{i}")) for i in range(2, 7)]
    assert trips.welcome_path(mark) == []  # five welcomes, not one round trip
    assert {c.welcome["d"]["show"]["id"] for c in others} == {room}
    # their presence is written after their welcomes, in the node's batches
    await wait_until(lambda: node.gw.presence.user_nodes([f"v{i}" for i in range(1, 7)]),
                     until=lambda got: all(got.values()), what="the six viewers in presence")
    assert [c for c in trips.calls[mark:] if c[0].startswith("hub.presence")]
    for c in (first, *others):
        await c.close()


# ---------------------------------------------------------------- presence in batches
class CountingPresence(MemoryPresence):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[dict[str, int]] = []

    async def users_connected(self, node: str, deltas: Mapping[str, int]) -> None:
        self.batches.append(dict(deltas))
        await super().users_connected(node, deltas)


class FakeConn:
    def __init__(self, room: str, user: str) -> None:
        self.room, self.user, self.fmt, self.skip_seq = room, user, "json", 0


async def test_a_join_storm_is_written_to_presence_as_one_batch(settings: Any, keys: Any) -> None:
    presence = CountingPresence()
    hub = Hub(settings.replace(node_id="n1"), MemoryBroker(keys), presence, Metrics())
    conns: list[Any] = [FakeConn("r", f"u{i}") for i in range(50)]
    room = await hub.join(conns[0])
    for c in conns:  # 50 viewers admitted in one turn of the loop
        hub.attach(c, room)
    for c in conns[40:]:  # 10 of them gone again before anything was written
        hub.leave(c)
    await wait_until(lambda: presence.batches, what="the presence batch")
    await asyncio.sleep(0)
    assert len(presence.batches) == 1 and presence.batches[0] == {f"u{i}": 1 for i in range(40)}
    got = await presence.user_nodes([f"u{i}" for i in range(50)])
    assert all(got[f"u{i}"] == ["n1"] for i in range(40)) and all(got[f"u{i}"] == [] for i in range(40, 50))
    for c in conns[:40]:
        hub.leave(c)
    await wait_until(lambda: len(presence.batches) == 2, what="the second batch")
    assert presence.batches[1] == {f"u{i}": -1 for i in range(40)}
    await hub.stop()


async def test_a_comment_in_a_room_the_node_serves_reads_neither_its_state_nor_its_lotteries(
        gateway_factory: Any, token: Callable[..., str]) -> None:
    a, b = await gateway_factory(), await gateway_factory()
    room = "snap5"
    host_tok = token("h", "host", (room,))
    async with aiohttp.ClientSession() as http:
        await post(http, f"{a.url}/api/v1/rooms", host_tok, {"id": room})
    viewer = await Client.connect(b.ws, room, token("v1"))
    trips = RoundTrips(b.gw.redis)
    mark = len(trips.calls)
    first = await viewer.request("comment", text="hello")
    assert first["t"] == "ack", first
    made = [c[1] for c in trips.calls[mark:] if trips.by_connection(c[0])]
    assert made, trips.calls[mark:]  # the comment's own round trips were seen (badges, points, publish)
    # the room's meta (is the show live?) and its lottery index were read per comment before
    assert not {"HMGET", "HGETALL", "ZRANGEBYSCORE"} & set(made), made
    # nor does it call the keyword-lottery hook: node b knows the room has no lottery
    assert room in b.services.lotteries.quiet
    # a keyword lottery started through the other node reaches b's snapshot with its event,
    # and the next keyword comment on b enters it
    host = await Client.connect(a.ws, room, host_tok)
    started = await host.request("lottery.start", prize={"kind": "product", "id": "bag1"}, winners=1, duration_s=30,
                                 rule="keyword", keyword="lucky")
    assert started["t"] == "ack", started
    await next_of(viewer, "lottery.started")
    assert room not in b.services.lotteries.quiet  # the started lottery took the room off at once
    await viewer.request("comment", text="I feel lucky")
    entered = await next_of(viewer, "lottery.entered")
    assert entered["d"]["id"] == started["d"]["id"]
    for c in (viewer, host):
        await c.close()


async def test_a_late_joiner_sees_the_pinned_products_live_sale_and_its_stock_left(gateway_factory: Any,
                                                                                    token: Callable[..., str]) -> None:
    """After a reload the pin said "20 of 20 left" while 18 remained (M2 7/7): the pin of a
    product whose flash sale runs carries the sale, its state and the stock left, from the
    node's view of the sale or, on a node that never heard the sale's events, from SQL and
    Redis."""
    import time
    import uuid

    a, b = await gateway_factory(), await gateway_factory()
    room, sid = f"pin{uuid.uuid4().hex[:6]}", f"s{uuid.uuid4().hex[:8]}"
    host, ops = token("h", "host", (room,)), token("ops1", "ops")
    async with aiohttp.ClientSession() as http:
        await post(http, f"{a.url}/api/v1/rooms", host, {"id": room})
        await post(http, f"{a.url}/api/v1/products", host, {"id": "tea", "name": "Tea set", "price": 1999})
        watcher = await Client.connect(a.ws, room, token("w"))
        await post(http, f"{a.url}/api/v1/campaigns", ops, {"id": sid, "room": room, "product_id": "tea", "price": 999,
                                                            "stock": 5, "per_user_limit": 2, "duration_s": 600,
                                                            "starts_ms": int(time.time() * 1000) - 1000})
        await next_of(watcher, "sale.started")
        await post(http, f"{a.url}/api/v1/rooms/{room}/pin", host, {"product_id": "tea"})
        buyer = await Client.connect(a.ws, room, token("buyer"))
        got = await buyer.request("buy", sale_id=sid, qty=2, request_id="r1")
        assert got["t"] == "order.reserved", got
        # node b never served the room: it reads the room's live sales
        late_b = await Client.connect(b.ws, room, token("late-b"))
        sale = late_b.welcome["d"]["pin"]["sale"]
        assert (sale["sale_id"], sale["state"], sale["remaining"], sale["stock"]) == (sid, "live", 3, 5), sale

        # node a heard the sale: its view answers, and follows the stock
        async def remaining_on_a() -> Any:
            c = await Client.connect(a.ws, room, token("late-a"))
            await c.close()
            return c.welcome["d"]["pin"]["sale"]["remaining"]

        await wait_until(remaining_on_a, until=lambda n: n == 3, timeout=5, interval=0.2, what="node a's view of the stock")
        for c in (watcher, buyer, late_b):
            await c.close()
