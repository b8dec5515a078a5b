"""Real processes under failure.

* The chaos rush in reduced form (``scripts/chaos_rush.py``): two gateways and the workers
  as processes, killed -9 and restarted during a flash-sale rush (and a gift rain when the
  gift capability is installed), then every invariant is checked. Redis Streams always,
  Kafka (Tansu) when the broker is available.
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
    free_port,
    gateway_proc,
    lc_env,
    run,
    token,
    wait_ready,
    worker_proc,
)
from tests.waiting import wait_until
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
async def test_gateway_on_sigterm_closes_clients_with_1012_turns_unready_refuses_and_exits_0(
    settings, tmp_path: Path, redis
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/gs.db"
    await upgrade(db)
    port = free_port()
    env = lc_env(redis_url=settings.redis_url, key_prefix=settings.key_prefix, database_url=db, secret=settings.secret, log_json="1")
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
            # while it drains (DRAIN_GRACE_S) the node still answers: not ready, no new clients
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
        assert await closing == [1012, 1012, 1012]
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
              kafka_session_timeout_ms="2000", kafka_idempotent="0", kafka_partitions="2")
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
