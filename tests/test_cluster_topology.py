"""The local multi-node topology (``livecommerce cluster up``): 3 gateways behind HAProxy, a
3+3 Redis Cluster, Tansu for the log, PostgreSQL, 2 processes of the orders and points
workers. Every client goes through the load balancer.

* viewers spread over the 3 gateways see one room's stream exactly once and in order;
* a flash-sale rush spread over the gateways keeps the invariants of ARCHITECTURE.md;
* kill -9 one gateway and one Redis master during a rush: clients recover with ``since=``,
  no paid order is lost, nothing is oversold, no points are awarded twice.

The last test breaks the topology, so it runs last in this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import websockets

from livecommerce.auth import issue_token
from livecommerce.devcluster.topology import RedisClusterNodes, State, kill9
from livecommerce.keys import Keys
from livecommerce.protocol.events import COUNTER_TYPES, SKIPPABLE_TYPES
from livecommerce.redis_conn import connect
from livecommerce.store_sql import SqlStore
from tests.waiting import wait_until, wait_until_sync

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

PRICE = 1000  # points for a paid unit: PRICE // 100


def tok(state: State, user: str, role: str = "viewer", rooms: tuple[str, ...] = ()) -> str:
    return issue_token(state.secret, user=user, role=role, rooms=rooms, now_s=int(time.time()), ttl_s=3600)


def auth(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def ws_url(state: State) -> str:
    return state.lb_url.replace("http://", "ws://") + "/ws"


class Viewer:
    """A viewer through the load balancer that reconnects with ``since=<last seq>`` whenever
    its connection drops, and records every room event it receives."""

    def __init__(self, state: State, room: str, user: str) -> None:
        self.url = ws_url(state)
        self.room = room
        self.token = tok(state, user)
        self.events: list[dict[str, Any]] = []
        self.nodes: list[str] = []
        self.recovered: list[bool] = []
        self.refused: list[str] = []  # handshakes that failed (a 503, a refused connection)
        self.closes: list[int | None] = []  # close codes of the connections that ended
        self.last_seq: int | None = None
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        while not self.stop.is_set():
            url = f"{self.url}?room={self.room}&token={self.token}"
            if self.last_seq is not None:
                url += f"&since={self.last_seq}"
            opened = False
            try:
                async with websockets.connect(url, max_size=None, open_timeout=5) as ws:
                    opened = True
                    try:
                        while not self.stop.is_set():
                            try:
                                raw = await asyncio.wait_for(ws.recv(), 0.5)
                            except TimeoutError:
                                continue
                            self._frame(msgpack.unpackb(raw, raw=False))
                    finally:
                        self.closes.append(ws.close_code)
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                if not opened:
                    self.refused.append(repr(exc)[:200])
                await asyncio.sleep(0.1)  # pacing: reconnect attempts

    def _frame(self, f: dict[str, Any]) -> None:
        if f["t"] == "welcome":
            self.nodes.append(f["d"]["node"])
            if self.last_seq is None:
                self.last_seq = f["d"]["seq"]
            else:
                self.recovered.append(f["d"]["recovered"])
            self.ready.set()
            return
        for e in f["items"] if f["t"] == "batch" else [f]:
            seq = e.get("seq")
            if seq:
                self.events.append(e)
                self.last_seq = max(self.last_seq or 0, seq)

    async def close(self) -> None:
        self.stop.set()
        await self.task


async def announce(http: aiohttp.ClientSession, state: State, ops: str, room: str, text: str, *, retry_s: float = 0) -> int | None:
    """Publish a notice through the load balancer; its seq, or None if it was refused."""
    deadline = time.monotonic() + retry_s
    while True:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.post(f"{state.lb_url}/api/v1/rooms/{room}/announce", json={"text": text},
                                 headers=auth(ops), timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status == 200:
                    return int((await r.json())["seq"])
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.1)  # pacing: retries while a gateway or a master is down


async def create_sale(http: aiohttp.ClientSession, state: State, room: str, stock: int, limit: int) -> str:
    sid = f"s{uuid.uuid4().hex[:8]}"
    body = {"id": sid, "room": room, "product_id": "p1", "price": PRICE, "stock": stock, "per_user_limit": limit,
            "starts_ms": int(time.time() * 1000) - 1000, "duration_s": 600}
    async with http.post(state.lb_url + "/api/v1/campaigns", json=body, headers=auth(tok(state, "ops1", "ops"))) as r:
        assert r.status == 201, await r.text()
    return sid


class Buyer:
    """A buyer over WebSocket through the load balancer: ``buy`` with one request id until a
    definitive answer (reconnecting and resending the same request id after any failure),
    then pays over HTTP with an idempotency key until the payment is definitive."""

    def __init__(self, state: State, room: str, user: str) -> None:
        self.state, self.room, self.user = state, room, user
        self.token = tok(state, user)
        self.answers: list[dict[str, Any]] = []  # every definitive reply, by request id order
        self.attempts = 0

    async def buy(self, sale: str, qty: int, request_id: str, *, within: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.attempts += 1
            try:
                url = f"{ws_url(self.state)}?room={self.room}&token={self.token}"
                async with websockets.connect(url, max_size=None, open_timeout=5) as ws:
                    await ws.send(msgpack.packb({"t": "buy", "id": 1, "d": {"sale_id": sale, "qty": qty, "request_id": request_id}}))
                    while True:
                        f = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 10), raw=False)
                        if f.get("id") != 1:
                            continue
                        if f["t"] == "order.reserved" or (f["t"] == "error" and f["d"]["code"] in
                                                          ("sold_out", "limit_reached", "ended", "not_started")):
                            self.answers.append({"request_id": request_id, **f})
                            return f
                        break  # unavailable / internal: try again
            except (OSError, websockets.WebSocketException, TimeoutError):
                pass
            await asyncio.sleep(0.2 + random.random() * 0.2)  # pacing: retries with jitter
        raise AssertionError(f"{self.user}: no definitive answer to buy {request_id} within {within}s")

    async def pay(self, http: aiohttp.ClientSession, order_id: str, *, within: float = 60) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.post(f"{self.state.lb_url}/api/v1/orders/{order_id}/pay", json={},
                                     headers={**auth(self.token), "Idempotency-Key": f"pay-{order_id}"},
                                     timeout=aiohttp.ClientTimeout(total=10)) as r:
                    # anything else (HAProxy's 502/503 page while a gateway dies, 503
                    # unavailable during a failover) is retried with the same key
                    if r.status == 200:
                        return str((await r.json())["outcome"])
                    if r.status in (404, 409):
                        return str((await r.json())["error"]["code"])
            await asyncio.sleep(0.2)  # pacing: retries with the same key
        raise AssertionError(f"{self.user}: payment of {order_id} not definitive within {within}s")


async def sale_stats(http: aiohttp.ClientSession, state: State, sid: str) -> dict[str, Any]:
    async def answered() -> dict[str, Any] | None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{state.lb_url}/api/v1/sales/{sid}/stats", headers=auth(tok(state, "ops1", "ops")),
                                timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status == 200:
                    return dict(await r.json())
        return None

    stats: dict[str, Any] = await wait_until(answered, timeout=60, interval=0.2, what=f"the stats of {sid} through the LB")
    return stats


async def check_invariants(http: aiohttp.ClientSession, state: State, sid: str, stock: int, limit: int,
                           buyers: list[Buyer], paid: dict[str, str]) -> dict[str, Any]:
    """Stock conservation in Redis and SQL, per-user limit, one order per request id, every
    payment settled, points awarded once per paid order. Returns the final stats."""

    async def settled() -> bool:
        st = await sale_stats(http, state, sid)
        units = st["sql"]["units"]
        return bool(units.get("paid", 0) == st["paid"] and units.get("reserved", 0) == st["reserved"])

    await wait_until(settled, timeout=60, interval=0.2, what="SQL to catch up with Redis (orders workers)")
    st = await sale_stats(http, state, sid)
    assert st["conserved"], st
    assert st["stock"] == stock == st["remaining"] + st["reserved"] + st["paid"], st
    assert st["paid"] + st["reserved"] <= stock and st["remaining"] >= 0, f"oversold: {st}"
    store = SqlStore(state.database_url)
    try:
        orders = await store.list_orders(sale_id=sid, limit=5000)
        per_request = Counter((o.user_id, o.request_id) for o in orders)
        assert max(per_request.values(), default=1) == 1, "a request id made two orders"
        held: dict[str, int] = defaultdict(int)
        for o in orders:
            if o.state in ("reserved", "paid"):
                held[o.user_id] += o.qty
        assert max(held.values(), default=0) <= limit, "per-user limit exceeded"
        by_id = {o.id: o for o in orders}
        sql_units = sum(o.qty for o in orders if o.state in ("reserved", "paid"))
        assert sql_units <= stock, f"SQL holds {sql_units} units of a {stock}-unit sale"
        # every reply a buyer got is one SQL order (no phantom reservation)
        for b in buyers:
            for a in b.answers:
                if a["t"] == "order.reserved":
                    assert a["d"]["order_id"] in by_id, (b.user, a)
        # every payment the buyer was told succeeded is a paid order in SQL
        for oid, outcome in paid.items():
            if outcome in ("paid", "already_paid"):
                assert by_id[oid].state == "paid", (oid, by_id[oid].state)

        # points: one order.paid award per paid order, never two (points workers on Kafka)
        paid_orders = [o for o in orders if o.state == "paid"]

        async def awarded() -> bool:
            for o in paid_orders:
                if await store.points_entry(f"{o.id}:paid", o.user_id, "order.paid") is None:
                    return False
            return True

        await wait_until(awarded, timeout=60, interval=0.2, what="points awarded for every paid order")
        for user in {o.user_id for o in paid_orders}:
            ledger = await store.points_ledger(user, role="viewer", limit=1000)
            refs = [e.ref_event_id for e in ledger if e.reason == "order.paid"]
            mine = [o for o in paid_orders if o.user_id == user]
            assert sorted(refs) == sorted(f"{o.id}:paid" for o in mine), (user, refs)
            assert sum(e.delta for e in ledger if e.reason == "order.paid") == sum(o.qty * PRICE // 100 for o in mine)
            assert await store.points_balance(user, "viewer") == sum(e.delta for e in ledger)
    finally:
        await store.close()
    return st


# ---------------------------------------------------------------- tests
def test_the_cli_reports_every_process_of_the_topology(topology: State) -> None:
    out = subprocess.run([sys.executable, "-m", "livecommerce.cli", "cluster", "status", "--state-dir", topology.state_dir],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "/readyz via LB 200" in out.stdout and out.stdout.count("master, cluster ok") == 3
    assert f"{len(topology.procs)}/{len(topology.procs)} processes running" in out.stdout
    # each worker answers on its metrics port: /healthz 200 and, per consumer loop, the
    # partitions it reads with their lag (Kafka: 6 partitions split between the 2 members)
    workers = [line for line in out.stdout.splitlines() if " worker " in line]
    assert workers and all("/healthz 200" in line for line in workers), out.stdout

    def orders_partitions() -> set[str]:
        text = subprocess.run([sys.executable, "-m", "livecommerce.cli", "cluster", "status", "--state-dir", topology.state_dir],
                              capture_output=True, text=True, timeout=60).stdout
        found: set[str] = set()
        for line in text.splitlines():
            if line.startswith("orders-") and "orders/orders" in line:
                found.update(re.findall(r"p\d+=\d+", line.split("orders/orders", 1)[1]))
        return found

    parts = wait_until_sync(orders_partitions, until=lambda ps: len({p.split("=")[0] for p in ps}) == 6, timeout=30,
                            what="the orders group's 6 partitions in `cluster status`")
    assert all(p.split("=")[1].isdigit() for p in parts)
    cfg = (Path(topology.state_dir) / "haproxy.cfg").read_text()
    assert "timeout tunnel" in cfg and "option httpchk GET /readyz" in cfg and cfg.count("server gw") == 3


async def test_viewers_on_three_gateways_see_the_room_exactly_once_in_order(topology: State) -> None:
    room = f"fan{uuid.uuid4().hex[:6]}"
    viewers = [Viewer(topology, room, f"v{i}") for i in range(30)]
    await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in viewers)), 30)
    assert {v.nodes[0] for v in viewers} == {"gw1", "gw2", "gw3"}, Counter(v.nodes[0] for v in viewers)
    ops = tok(topology, "ops1", "ops")
    async with aiohttp.ClientSession() as http:
        sem = asyncio.Semaphore(4)  # a few publishes in flight, through every gateway

        async def one(i: int) -> int | None:
            async with sem:
                return await announce(http, topology, ops, room, f"m{i}", retry_s=5)

        seqs = await asyncio.gather(*(one(i) for i in range(150)))
    assert all(s is not None for s in seqs)
    by_seq = dict(zip(seqs, (f"m{i}" for i in range(150)), strict=True))
    want = [by_seq[s] for s in sorted(by_seq)]  # the room's order is the seq order
    await wait_until(lambda: min(len(v.events) for v in viewers), until=lambda n: n >= 150, timeout=20, interval=0.2,
                     what="150 events at every viewer")
    # a barrier, not a pause: one more notice after the 150 reaches each viewer after anything
    # still on its way (a room's events reach a viewer in seq order)
    async with aiohttp.ClientSession() as http:
        end = await announce(http, topology, ops, room, "end", retry_s=5)
    assert end is not None
    await wait_until(lambda: [v.last_seq or 0 for v in viewers], until=lambda last: min(last) >= end, timeout=20, interval=0.2,
                     what="the closing notice at every viewer")
    for v in viewers:
        await v.close()
        got = [e for e in v.events if e["t"] == "notice" and e["seq"] != end]
        assert [e["d"]["text"] for e in got] == want, f"{v.nodes}: out of order or not exactly once"
        assert [e["seq"] for e in got] == sorted(by_seq)


async def test_a_flash_sale_rush_over_three_gateways_keeps_every_invariant(topology: State) -> None:
    room, stock, limit = f"rush{uuid.uuid4().hex[:6]}", 60, 2
    async with aiohttp.ClientSession() as http:
        sid = await create_sale(http, topology, room, stock, limit)
        buyers = [Buyer(topology, room, f"rb{i}") for i in range(90)]

        async def rush(b: Buyer, i: int) -> None:
            qty = 1 + i % 2
            first = await b.buy(sid, qty, f"{b.user}-a")
            if i % 4 == 0:  # a retried command: the same order back, never a second one
                again = await b.buy(sid, qty, f"{b.user}-a")
                if first["t"] == "order.reserved":
                    assert again["d"]["order_id"] == first["d"]["order_id"] and again["d"]["duplicate"]
            if i % 5 == 0:
                await b.buy(sid, 1, f"{b.user}-b")  # a second order, within or past the limit

        await asyncio.gather(*(rush(b, i) for i, b in enumerate(buyers)))
        reserved = [(b, a["d"]["order_id"]) for b in buyers for a in b.answers if a["t"] == "order.reserved"]
        unique = {oid: b for b, oid in reserved}
        assert len(unique) >= stock // 2
        paid: dict[str, str] = {}
        cancels = []
        for k, (oid, b) in enumerate(sorted(unique.items())):
            if k % 6 == 5:
                cancels.append((oid, b))
            elif k % 6 != 4:
                paid[oid] = await b.pay(http, oid)
        for oid, b in cancels:
            async with http.post(f"{topology.lb_url}/api/v1/orders/{oid}/cancel", headers=auth(b.token)) as r:
                assert (await r.json())["outcome"] == "released"
        assert set(paid.values()) == {"paid"}
        st = await check_invariants(http, topology, sid, stock, limit, buyers, paid)
    qty_of = {a["d"]["order_id"]: a["d"]["qty"] for b in buyers for a in b.answers if a["t"] == "order.reserved"}
    assert st["paid"] == sum(qty_of[oid] for oid in paid)


async def test_a_sigtermed_gateway_hands_its_viewers_over_without_a_refused_handshake(topology: State) -> None:
    """SIGTERM one gateway behind the balancer (a rolling restart): it turns unready first,
    the balancer takes it out, then it closes its viewers with 1012; they reconnect through
    the balancer to the other gateways, recover with since=, and not one handshake fails
    (before: 931 refused attempts from 50 viewers in 2 s)."""
    room = f"term{uuid.uuid4().hex[:6]}"
    ops = tok(topology, "ops1", "ops")
    viewers = [Viewer(topology, room, f"tv{i}") for i in range(45)]
    await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in viewers)), 30)
    on_gw3 = [v for v in viewers if v.nodes[0] == "gw3"]
    assert on_gw3, "no viewer landed on gw3"
    async with aiohttp.ClientSession() as http:
        stop = asyncio.Event()
        published: list[int] = []

        async def joiners() -> None:  # new viewers keep arriving through the restart
            i = 0
            while not stop.is_set():
                viewers.append(Viewer(topology, room, f"tj{i}"))
                i += 1
                await asyncio.sleep(0.1)  # pacing: about 10 joins a second

        async def announcer() -> None:
            i = 0
            while not stop.is_set():
                seq = await announce(http, topology, ops, room, f"t{i}")
                if seq is not None:
                    published.append(seq)
                i += 1
                await asyncio.sleep(0.1)  # pacing: a steady stream of announcements

        tasks = [asyncio.create_task(joiners()), asyncio.create_task(announcer())]
        await asyncio.sleep(0.5)
        gw3 = topology.proc("gw3")
        assert gw3.signal(signal.SIGTERM)
        await wait_until(lambda: gw3.alive(), until=lambda alive: not alive, timeout=20, interval=0.2, what="gw3 to exit")
        # it took itself out of the room's online count before it went: its viewers, now on
        # the other gateways, are not counted twice until its last report goes stale
        client = connect(topology.redis_url)
        try:
            reports = await client.hgetall(Keys("lc").room_online(room))
        finally:
            await client.aclose()
        assert b"gw3" not in reports and "gw3" not in reports, reports
        await wait_until(lambda: [v.nodes[-1] for v in on_gw3], until=lambda nodes: "gw3" not in nodes, timeout=20,
                         interval=0.2, what="gw3's viewers on the other gateways")
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
        await wait_until(lambda: [v.last_seq or 0 for v in viewers], until=lambda last: min(last) >= max(published),
                         timeout=30, interval=0.2, what="the last announcement at every viewer")
    for v in viewers:
        await v.close()
    refused = [r for v in viewers for r in v.refused]
    print(json.dumps({"viewers": len(viewers), "moved": len(on_gw3), "refused": len(refused), "published": len(published)}))
    assert refused == [], refused[:5]
    for v in on_gw3:
        assert v.closes[0] == 1012 and v.nodes[1] != "gw3" and all(v.recovered), (v.closes, v.nodes, v.recovered)


async def test_kill9_a_gateway_and_a_redis_master_during_a_rush(topology: State) -> None:
    room, stock, limit = f"chaos{uuid.uuid4().hex[:6]}", 80, 2
    ops = tok(topology, "ops1", "ops")
    keys = Keys("lc")
    redis_nodes = RedisClusterNodes(topology.ports["redis"], Path(topology.state_dir) / "redis")
    redis_nodes.procs = {p.port or 0: p for p in topology.by_kind("redis")}
    async with aiohttp.ClientSession() as http:
        sid = await create_sale(http, topology, room, stock, limit)
        viewers = [Viewer(topology, room, f"cv{i}") for i in range(24)]
        await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in viewers)), 30)
        on_gw2 = [v for v in viewers if v.nodes[0] == "gw2"]
        assert on_gw2, "no viewer landed on gw2"
        published: list[int] = []
        answered: list[float] = []  # when each announcement was acknowledged (the write stall)
        stop = asyncio.Event()

        async def announcer() -> None:
            i = 0
            while not stop.is_set():
                seq = await announce(http, topology, ops, room, f"a{i}")
                if seq is not None:
                    published.append(seq)
                    answered.append(time.monotonic())
                i += 1
                await asyncio.sleep(0.05)  # pacing: a steady stream of announcements

        buyers = [Buyer(topology, room, f"cb{i}") for i in range(110)]
        paid: dict[str, str] = {}

        async def shopper(b: Buyer, i: int) -> None:
            await asyncio.sleep(i * 0.04)  # the rush spreads over about 4 s
            r = await b.buy(sid, 1 + i % 2, f"{b.user}-x")
            if r["t"] == "order.reserved" and i % 4 != 3:
                paid[r["d"]["order_id"]] = await b.pay(http, r["d"]["order_id"])

        failover: dict[str, float] = {}

        async def chaos() -> tuple[int, int]:
            await asyncio.sleep(1.5)  # into the rush
            kill9(topology.proc("gw2"))
            await asyncio.sleep(1.0)  # one failure at a time
            victim = await asyncio.to_thread(redis_nodes.master_of, keys.sale(sid, "stock"))
            failover["killed"] = time.monotonic()
            redis_nodes.kill9(victim)
            promoted = await asyncio.to_thread(redis_nodes.wait_owner_change, keys.sale(sid, "stock"), victim)
            failover["promoted"] = time.monotonic()
            return victim, promoted

        ann = asyncio.create_task(announcer())
        (victim, promoted), *_ = await asyncio.gather(chaos(), *(shopper(b, i) for i, b in enumerate(buyers)))
        await wait_until(lambda: len(published), until=lambda n: n >= 20, timeout=30, interval=0.2, what="20 announcements")
        await asyncio.sleep(1.0)  # a second more of announcements after the failover
        stop.set()
        await ann
        await wait_until(lambda: [v.last_seq or 0 for v in viewers], until=lambda last: min(last) >= max(published), timeout=30,
                         interval=0.2, what="the last announcement at every viewer")
        for v in viewers:
            await v.close()

        st = await check_invariants(http, topology, sid, stock, limit, buyers, paid)
        assert victim != promoted and st["paid"] > 0
        assert set(paid.values()) <= {"paid", "already_paid"}, Counter(paid.values())

        # the viewers of the killed gateway came back through the LB with since= and recovered
        for v in on_gw2:
            assert len(v.nodes) >= 2 and v.nodes[-1] != "gw2" and all(v.recovered), (v.nodes, v.recovered)
        # every viewer holds every event the history holds after its first one, once each
        client = connect(topology.redis_url)
        try:
            hist = await client.xrange(keys.room_hist(room), "-", "+")
        finally:
            await client.aclose()
        history = [(int(rid.decode().split("-")[0]), msgpack.unpackb(fields[b"d"], raw=False)) for rid, fields in hist]
        assert set(published) <= {s for s, _ in history}, "an acknowledged announcement is not in the history"
        for v in viewers:
            seqs = [e["seq"] for e in v.events]
            assert len(seqs) == len(set(seqs)), f"{v.nodes}: an event came twice"
            first = min(seqs)
            seen = set(seqs)
            missing = [(s, e["t"]) for s, e in history if s >= first and s not in seen
                       and e["t"] not in COUNTER_TYPES and e["t"] not in SKIPPABLE_TYPES]
            assert not missing, f"viewer {v.nodes} missed {missing[:5]} ({len(missing)})"
            assert [s for s in seqs if s in dict(history)] == sorted(s for s in seqs if s in dict(history))
        # measured, not asserted (docs/deploy.md quotes it): the master's failover, and the longest
        # time without an acknowledged write (announcements every 50 ms) around it
        gaps = [b - a for a, b in itertools.pairwise(answered) if b >= failover["killed"] - 1]
        print(json.dumps({"victim": victim, "promoted": promoted, "stats": st, "published": len(published),
                          "buy_attempts": sum(b.attempts for b in buyers),
                          "failover_s": round(failover["promoted"] - failover["killed"], 2),
                          "longest_write_gap_s": round(max(gaps, default=0.0), 2)}))
