"""Real processes under failure.

* The chaos rush in reduced form (``scripts/chaos_rush.py``): two gateways and the workers
  as processes, killed -9 and restarted during a flash-sale rush (and a gift rain when the
  gift capability is installed), then every invariant is checked. Redis Streams always,
  Kafka (Tansu) when the broker is available.
* A gateway killed (SIGKILL) while its buy batch waits in Redis: every buyer learns its
  outcome by retrying its ``request_id`` on the other gateway; exactly the stock is reserved
  and every reserved order reaches the log and SQL once.
* Graceful shutdown: a gateway process on SIGTERM tells its clients to reconnect elsewhere
  (close 1012), says 503 on ``/readyz`` and refuses new connections while it drains, and
  exits 0; a worker on SIGTERM finishes or releases its batch, so nothing it did not ack is
  lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import websockets

from livecommerce.log_open import open_log
from livecommerce.migrations import upgrade
from livecommerce.store_sql import SqlStore
from scripts.chaos_rush import (
    Options,
    RedisServer,
    free_port,
    gateway_proc,
    lc_env,
    run,
    token,
    wait_ready,
    worker_proc,
)
from tests.waiting import wait_until
from tests.wsclient import Client
from workers.orders import OrdersWorker


@pytest.mark.slow
@pytest.mark.timeout(300)  # about 45 s on an idle machine; gateway restarts slow down under load
@pytest.mark.parametrize("log", ["redis", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_chaos_rush_keeps_every_invariant_across_kills(log: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if log == "kafka":
        request.getfixturevalue("kafka_bootstrap")  # skips (or fails under CI) without a Tansu binary
    opt = Options(duration=16 if log == "redis" else 14, cycles=2 if log == "redis" else 1, down=1.0, buyers=16, gifters=6,
                  sales=2, stock=12, window=2, log=log, drain_timeout=30, quiet=True, workdir=str(tmp_path / "chaos"), seed=7)
    ok, text = await run(opt)
    print(text)
    assert ok, text


# ------------------------------------------------------------------------- graceful shutdown
async def test_gateway_on_sigterm_turns_unready_and_refuses_first_then_closes_clients_with_1012_and_exits_0(
    settings, tmp_path: Path, redis
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/gs.db"
    await upgrade(db)
    port = free_port()
    env = lc_env(redis_url=settings.redis_url, key_prefix=settings.key_prefix, database_url=db, secret=settings.secret, log_json="1",
                 drain_deregister_s="3", ws_transport=settings.ws_transport)
    gw = gateway_proc("gw-term", port, env, tmp_path)
    gw.start()
    base, wsurl = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    try:
        await wait_ready(base, 60, gw)
        clients = []
        for i, fmt in enumerate(["json", "msgpack", "json"]):
            c = await websockets.connect(f"{wsurl}?room=term&format={fmt}&token={token(f'v{i}', secret=settings.secret)}")
            await c.recv()  # welcome
            clients.append(c)
        assert gw.proc is not None
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        closing = asyncio.gather(*(closed_with(c) for c in clients))
        async with aiohttp.ClientSession() as http:
            # first the balancer is to take it out: not ready, no new clients, while its own
            # viewers are still served (drain_deregister_s, 3 s here)
            status = 200
            while status == 200 and time.monotonic() - t0 < 5:
                ready = await http.get(base + "/readyz")
                status = ready.status
            assert status == 503, await ready.text()
            assert (await ready.json())["draining"] is True
            late = await http.get(f"{base}/ws?room=term&token={token('late', secret=settings.secret)}",
                                  headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
            assert late.status == 503
            assert not closing.done() and time.monotonic() - t0 < 3, "viewers closed before the node was unready"
        assert await closing == [1012, 1012, 1012]
        assert time.monotonic() - t0 >= 3  # only once the balancer had the time to take the node out
        rc = await asyncio.to_thread(gw.proc.wait, 15)
        assert rc == 0, gw.log_path.read_text()[-3000:]
        assert time.monotonic() - t0 < 15
        with pytest.raises(OSError):  # and then nothing listens any more
            await websockets.connect(f"{wsurl}?room=term&token={token('later', secret=settings.secret)}", open_timeout=2)
        lines = [json.loads(x) for x in gw.log_path.read_text().splitlines() if x.startswith("{")]
        assert not [x for x in lines if x["level"] in ("error", "critical")]
        assert "gateway.drained" in {x["event"] for x in lines}
    finally:
        gw.kill9()


async def closed_with(c: websockets.ClientConnection) -> int | None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await c.recv()
    return c.close_code


N_EVENTS = 600


@pytest.mark.parametrize("log", ["redis", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_worker_on_sigterm_finishes_or_releases_its_batch(log: str, settings, redis, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/w.db"
    await upgrade(db)
    s = settings.replace(database_url=db, log_claim_idle_ms=30_000, kafka_session_timeout_ms=2000, kafka_idempotent=False,
                         kafka_partitions=2)
    lc = dict(redis_url=s.redis_url, key_prefix=s.key_prefix, database_url=db, secret=s.secret, log_json="1", log_claim_idle_ms="30000",
              kafka_session_timeout_ms="2000", kafka_idempotent="0", kafka_partitions="2",
              worker_batch="2")  # many small batches, so SIGTERM lands mid-stream (1,000 a batch drains the 600 at once)
    if log == "kafka":
        boot = request.getfixturevalue("kafka_bootstrap")
        s = s.replace(kafka_bootstrap=boot)
        lc["kafka_bootstrap"] = boot
    sale = f"term{os.getpid()}{int(time.time() * 1000) % 100000}"
    durable = open_log(s, redis)
    now = int(time.time() * 1000)
    for i in range(N_EVENTS):
        oid = f"{sale}.{i:05d}"
        await durable.append("orders", oid, "order.reserved", {
            "order_id": oid, "sale_id": sale, "room_id": "room", "user_id": f"u{i}", "qty": 1, "unit_price": 100,
            "pay_by_ms": now + 600_000, "payment_window_s": 600, "request_id": f"r{i}"}, event_id=f"{oid}:reserved")
    await durable.close()
    w = worker_proc("orders", "w-term", lc_env(**lc), tmp_path)
    w.start()
    store = SqlStore(db)
    try:
        async def applied() -> int:
            return len(await store.list_orders(sale_id=sale, limit=10 * N_EVENTS))

        seen = await wait_until(applied, until=lambda n: n >= 100, timeout=60, what="the worker mid-stream (100 orders in SQL)")
        assert 0 < seen < N_EVENTS, f"SIGTERM must land mid-stream (saw {seen})"
        assert w.proc is not None
        w.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(w.proc.wait, 20)
        assert rc == 0, w.log_path.read_text()[-3000:]
        at_stop = len(await store.list_orders(sale_id=sale, limit=10 * N_EVENTS))
        lines = [json.loads(x) for x in w.log_path.read_text().splitlines() if x.startswith("{")]
        assert "worker.stopped" in {x["event"] for x in lines}
        # the claim idle time is 30 s: only a finished or released batch is taken over at once
        nxt = OrdersWorker(s.replace(node_id="w-next"), redis=redis)
        try:
            async with asyncio.timeout(20):
                while len(await nxt.store.list_orders(sale_id=sale, limit=10 * N_EVENTS)) < N_EVENTS:
                    await nxt.drain()
        finally:
            await nxt.close()
        orders = await store.list_orders(sale_id=sale, limit=10 * N_EVENTS)
        ids = [o.id for o in orders]
        assert at_stop < N_EVENTS
        assert len(ids) == N_EVENTS == len(set(ids))
    finally:
        await store.close()
        w.kill9()


def test_a_write_to_a_client_that_just_vanished_is_shed_not_raised() -> None:
    """Found by the chaos run: under uvloop a write to a transport whose peer is gone raises,
    which aborted the hub's tick for every room, and the welcome of a client joining then."""
    uvloop = pytest.importorskip("uvloop")
    from aiohttp import web

    from gateway.conn import Conn
    from livecommerce.auth import Identity
    from livecommerce.comments import FloodGuard, TokenBucket

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        lost = asyncio.Event()

        class Peer(asyncio.Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                lost.set()

        transport, _ = await loop.create_connection(Peer, "127.0.0.1", port)
        conn = Conn(web.WebSocketResponse(), transport, Identity("gone", "viewer"), "room", "json", ip="127.0.0.1",  # type: ignore[arg-type]
                    cmd_bucket=TokenBucket(1, 1), flood=FloodGuard(1, 1), now=0.0)
        assert conn.write(b"\x81\x00", critical=False, soft=1 << 20, hard=1 << 22, now=0.0) == 1
        transport.close()
        await wait_until(lost.is_set, what="the closed transport's connection_lost")
        with pytest.raises(RuntimeError):
            transport.write(b"x")  # what the hub used to hit
        assert conn.write(b"\x81\x00", critical=False, soft=1 << 20, hard=1 << 22, now=0.0) == 0
        assert conn.write(b"\x81\x00", critical=True, soft=1 << 20, hard=1 << 22, now=0.0) == 0
        assert conn.closed
        conn.send({"t": "pong"})  # replies to a vanished client are dropped quietly too
        server.close()
        await server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


# ------------------------------------------------------------------------- a buy batch in flight
# Holds Redis (a private server) busy for ARGV[1] microseconds, so that the commit a gateway
# sends meanwhile waits in Redis's queue: the gateway is killed with its batch in flight.
BUSY = """local t0 = redis.call('TIME')
while true do
  local t = redis.call('TIME')
  if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) >= tonumber(ARGV[1]) then return 1 end
end"""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("log", ["redis", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_a_gateway_killed_with_a_buy_batch_in_flight_every_buyer_learns_its_outcome_by_retrying(
        log: str, settings, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import redis.asyncio as aioredis

    buyers, stock = 120, 40  # one more unit for the warm-up buy
    server = RedisServer(tmp_path)
    server.start()
    db = f"sqlite+aiosqlite:///{tmp_path}/kill.db"
    await upgrade(db)
    s = settings.replace(redis_url=server.url, database_url=db, kafka_session_timeout_ms=2000, kafka_idempotent=False,
                         kafka_partitions=2)
    lc = dict(redis_url=server.url, key_prefix=s.key_prefix, database_url=db, secret=s.secret, log_json="1",
              kafka_session_timeout_ms="2000", kafka_idempotent="0", kafka_partitions="2")
    if log == "kafka":
        boot = request.getfixturevalue("kafka_bootstrap")
        s = s.replace(kafka_bootstrap=boot)
        lc["kafka_bootstrap"] = boot
    ports = {"gw-a": free_port(), "gw-b": free_port()}
    gws = {name: gateway_proc(name, port, lc_env(**lc), tmp_path) for name, port in ports.items()}
    r = aioredis.Redis.from_url(server.url)
    clients: list[Client] = []
    try:
        for g in gws.values():
            g.start()
        for name, g in gws.items():
            await wait_ready(f"http://127.0.0.1:{ports[name]}", 60, g)
        sid = f"kill{os.getpid()}"
        async with aiohttp.ClientSession() as http:
            made = await http.post(f"http://127.0.0.1:{ports['gw-b']}/api/v1/campaigns",
                                   headers={"Authorization": f"Bearer {token('ops1', 'ops', secret=s.secret)}"},
                                   json={"id": sid, "room": "kill", "product_id": "p1", "price": 500, "stock": stock + 1,
                                         "per_user_limit": 1, "starts_ms": int(time.time() * 1000) - 1000, "duration_s": 600})
            assert made.status == 201, await made.text()
        a_ws, b_ws = (f"ws://127.0.0.1:{ports[n]}/ws" for n in ("gw-a", "gw-b"))
        clients = list(await asyncio.gather(*(Client.connect(a_ws, "kill", token(f"k{i}", secret=s.secret), fmt="json")
                                              for i in range(buyers))))
        # a warm-up buy: gw-a knows the sale and the room's state (its gate holds it 1 s), so its
        # next commit goes straight to the script
        from livecommerce.flash_sale_redis import RESERVE_BATCH

        await r.script_load(RESERVE_BATCH)  # as on any Redis that served a batch before
        warm_c = await Client.connect(a_ws, "kill", token("warm", secret=s.secret), fmt="json")
        warm = await warm_c.request("buy", 10, sale_id=sid, qty=1, request_id="warm-up")
        await warm_c.close()
        assert warm["t"] == "order.reserved"
        async with aiohttp.ClientSession() as http:  # and its Redis pool has idle connections to send it on
            ops = {"Authorization": f"Bearer {token('ops1', 'ops', secret=s.secret)}"}
            await asyncio.gather(*(http.get(f"http://127.0.0.1:{ports['gw-a']}/api/v1/sales/{sid}/stats", headers=ops)
                                   for _ in range(40)))
        busy = asyncio.ensure_future(r.eval(BUSY, 0, 1_500_000))  # Redis holds still for 1.5 s
        await asyncio.sleep(0.2)  # the busy script runs
        cids = await asyncio.gather(*(c.send("buy", sale_id=sid, qty=1, request_id=f"rq{i}") for i, c in enumerate(clients)))
        await asyncio.sleep(0.6)  # gw-a read the buys and sent its commit, which waits behind the busy script
        assert not busy.done()
        gws["gw-a"].kill9()
        await busy
        heard: dict[int, dict] = {}  # answers some buyers may have had before the kill
        for i, (c, cid) in enumerate(zip(clients, cids, strict=True)):
            with contextlib.suppress(Exception):
                while True:
                    e = await c.next_event(0.2, skip=())
                    if e.get("id") == cid:
                        heard[i] = e
        # every buyer retries its request_id on gw-b and learns its outcome
        again = []
        for i in range(buyers):
            c = await Client.connect(b_ws, "kill", token(f"k{i}", secret=s.secret), fmt="json")
            again.append(await c.request("buy", 30, sale_id=sid, qty=1, request_id=f"rq{i}"))
            await c.close()
        kinds = [a["t"] if a["t"] == "order.reserved" else a["d"]["code"] for a in again]
        assert sorted(set(kinds)) == ["order.reserved", "sold_out"] and kinds.count("order.reserved") == stock
        won = {i: a["d"] for i, a in enumerate(again) if a["t"] == "order.reserved"}
        assert len({d["order_id"] for d in won.values()}) == stock
        # the killed gateway's commit was decided in Redis after it died: the retries of its buys
        # got those orders (duplicate); the buys it still held queued were never sent and their
        # retries reserved anew at gw-b
        in_flight = [d for d in won.values() if d["duplicate"]]
        print(f"reserved by the killed node's batch in flight: {len(in_flight)}, by retries: {stock - len(in_flight)}")
        assert in_flight, "no commit was in flight when gw-a died"
        for i, e in heard.items():  # anyone answered before the kill hears the same again
            assert (e["t"], e["d"].get("order_id")) == (again[i]["t"], again[i]["d"].get("order_id"))
        from livecommerce.checkout import Checkout
        from livecommerce.keys import Keys
        from livecommerce.log import MemoryLog

        st = await Checkout(r, Keys(s.key_prefix), MemoryLog()).sales.stats(sid)
        assert (st.remaining, st.reserved) == (0, stock + 1) and st.conserved
        # the log has every reserved order (the retry appended what the killed node never did),
        # and SQL applies each exactly once
        w = OrdersWorker(s.replace(node_id="w-kill"), redis=r)
        try:
            async with asyncio.timeout(60):
                while len(await w.store.list_orders(sale_id=sid, limit=10 * stock)) < stock + 1:
                    await w.drain()
            orders = await w.store.list_orders(sale_id=sid, limit=10 * stock)
        finally:
            await w.close()
        assert sorted(o.id for o in orders) == sorted([warm["d"]["order_id"], *(d["order_id"] for d in won.values())])
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await r.aclose()
        for g in gws.values():
            g.kill9()
        server.kill9()
