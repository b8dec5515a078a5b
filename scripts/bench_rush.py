#!/usr/bin/env python3
"""Flash-sale rush: B WebSocket buyers (default 5,000) rush a sale of S units (default 1,000).

It starts one `livecommerce gateway` and one `livecommerce worker orders` on a throw-away key
prefix and SQLite file (the durable log on Redis Streams, or on a Tansu Kafka broker it starts
with ``--kafka``), connects the buyers from several client processes, creates a campaign that
opens two seconds later, and every buyer sends `buy` the moment `sale.started` arrives.

Reported, beside the issue's goals (M2 3/7):

* reservations/s: S divided by the slowest reserved buyer's own buy->reply time (the issue's
  figure), and the wall-clock rate (S over the time from the first `sale.started` received to
  the last reservation answered); answers by kind; reply p50 / p99 over every buyer;
* the same-run ceilings: the per-buy reserve script called directly (EVALSHA, 64 concurrent
  callers, no gateway), the batch script with N buyers per call (``--ceiling-batch``), and the
  batch script plus the batch's log append (the whole group commit's Redis work, no gateway);
* the gateway's CPU over the rush (psutil; the client processes share the 2 cores with it);
* the invariants: every buyer answered, exactly S reserved (answers and Redis), stock
  conserved, each reserved order's `order.reserved` on the log exactly once (read back
  through a fresh consumer group), and `request_id` retries (``--retries`` reserved and
  sold-out buyers, over HTTP after the rush) answered with the same order or sold_out again.

Buyers stay connected until every answer is in (viewers stay in the show); ``--leave`` makes
each buyer leave as soon as it is answered (the harness of the issue's "today" figure: the
disconnects then run inside the rush).

    python scripts/bench_rush.py                    # 5,000 buyers, 1,000 units
    python scripts/bench_rush.py -b 2000 -s 100 -p 2
    python scripts/bench_rush.py --kafka            # the log on Kafka (Tansu, in memory)

``--cart`` runs the cart checkout storm instead (M2 5/7): B buyers connected over WebSockets
send ``cart.checkout`` of a 3-line cart at once (9 SKUs of 3 products, stock/9 units each, a
per-user limit of 4, two buyers per user); checkouts/s, reply p50/p99, the invariants read
back over HTTP, and the same carts through the library in this process as the same-run
ceiling (see :func:`cart_storm`):

    python scripts/bench_rush.py --cart -b 2000 -s 900
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from livecommerce.auth import issue_token  # noqa: E402

GOAL_RESERVATIONS_S = 20_000
GOAL_P99_MS = 250


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_node(a: argparse.Namespace, *, port: int, prefix: str, db: str, secret: str,
               kafka: str | None = None) -> tuple[list[subprocess.Popen[bytes]], dict[str, str]]:
    """One `livecommerce gateway` on ``port`` and one `livecommerce worker orders`, on a
    throw-away key prefix and database, after `db upgrade` (``--env`` settings applied)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LC_")},
           "LC_REDIS_URL": a.redis, "LC_KEY_PREFIX": prefix, "LC_DATABASE_URL": db, "LC_SECRET": secret,
           "LC_LOG_LEVEL": "WARNING", "LC_MAX_CONNS_PER_IP": "100000", "LC_NODE_ID": "rush-gw"}
    env.update(dict(kv.split("=", 1) for kv in a.env))
    if kafka:
        env.update(LC_KAFKA_BOOTSTRAP=kafka, LC_KAFKA_IDEMPOTENT="0", LC_KAFKA_SESSION_TIMEOUT_MS="2000",
                   LC_KAFKA_PARTITIONS="3")
    exe = str(Path(sys.executable).with_name("livecommerce"))
    # the schema of the code the gateway runs (--env PYTHONPATH=<another checkout> measures that one)
    subprocess.run([exe, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)
    procs = [subprocess.Popen([exe, "gateway", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([exe, "worker", "orders"], env={**env, "LC_NODE_ID": "rush-w"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    return procs, env


def stop_node(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


async def wait_ready(h: aiohttp.ClientSession, base: str) -> None:
    for _ in range(300):
        try:
            if (await h.get(base + "/readyz")).status == 200:
                return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"the gateway at {base} did not get ready in 30 s")


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ------------------------------------------------------------------ client processes
def client_proc(idx: int, n: int, port: int, secret: str, sale: str, q: Any, close_evt: Any, leave: bool,
                kind: str) -> None:
    raise_nofile()
    if kind == "raw":
        import uvloop

        uvloop.run(_raw_clients(idx, n, port, secret, sale, q, close_evt, leave))
    else:
        asyncio.run(_clients(idx, n, port, secret, sale, q, close_evt, leave))


def _masked(payload: bytes) -> bytes:
    """A client text frame, masked with a zero key (RFC 6455 allows any key)."""
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + b"\x00\x00\x00\x00" + payload


class RawBuyer(asyncio.Protocol):
    """One buyer as a raw asyncio protocol (the load generator must not be the bound): one
    ``data_received`` per read, frames found by a byte scan, the buy frame built beforehand.
    Waits for ``welcome``, sends ``buy`` the moment a frame carries ``sale.started`` and
    records the reply that carries its command id."""

    def __init__(self, handshake: bytes, buy: bytes, rid: str, user: str, tally: Any, leave: bool) -> None:
        self.handshake, self.buy, self.rid, self.user, self.tally, self.leave = handshake, buy, rid, user, tally, leave
        self.buf = b""
        self.upgraded = False
        self.state = 0  # 0 welcome, 1 waiting for sale.started, 2 waiting for the reply, 3 done
        self.t0 = 0.0
        self.started = 0.0
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.handshake)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before welcome"))
        if self.state < 3:
            self.tally.lost(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(buf[:200].decode(errors="replace")))
                return
            self.upgraded = True
            buf = buf[end + 4:]
        i, n = 0, len(buf)
        while n - i >= 2:
            b1 = buf[i + 1] & 0x7F
            if b1 < 126:
                h, size = 2, b1
            elif b1 == 126:
                if n - i < 4:
                    break
                h, size = 4, int.from_bytes(buf[i + 2:i + 4], "big")
            else:
                if n - i < 10:
                    break
                h, size = 10, int.from_bytes(buf[i + 2:i + 10], "big")
            if n - i < h + size:
                break
            op = buf[i] & 0x0F
            payload = buf[i + h:i + h + size]
            i += h + size
            if op == 9 and self.transport is not None:  # ping
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload)
            elif op in (1, 2):
                self.frame(payload)
        self.buf = buf[i:] if i < n else b""

    def frame(self, p: bytes) -> None:
        if self.state == 1:
            if b'"sale.started"' in p:
                self.started = time.time()
                self.t0 = time.perf_counter()
                assert self.transport is not None
                self.transport.write(self.buy)
                self.state = 2
        elif self.state == 2:
            if b'"id":1,' in p or b'"id":1}' in p:
                took = time.perf_counter() - self.t0
                m = json.loads(p)
                items = m["items"] if m.get("t") == "batch" else [m]
                r = next((e for e in items if e.get("id") == 1), None)
                if r is None:
                    return
                kind = "reserved" if r["t"] == "order.reserved" else (r.get("d") or {}).get("code", r["t"])
                self.state = 3
                self.tally.answered((kind, took, (r.get("d") or {}).get("order_id", ""), self.rid, self.user,
                                     self.started, time.time()))
                if self.leave and self.transport is not None:
                    self.transport.close()
        elif self.state == 0 and b'"welcome"' in p:
            self.state = 1
            self.ready.set_result(None)


class Tally:
    def __init__(self, n: int) -> None:
        self.results: list[Any] = []
        self.errors: list[str] = []
        self.left = n
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answered(self, row: Any) -> None:
        self.results.append(row)
        self._one()

    def lost(self, buyer: RawBuyer) -> None:
        self.errors.append(f"{buyer.user}: connection lost in state {buyer.state}")
        self._one()

    def _one(self) -> None:
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)


async def _raw_clients(idx: int, n: int, port: int, secret: str, sale: str, q: Any, close_evt: Any, leave: bool) -> None:
    loop = asyncio.get_running_loop()
    tally = Tally(n)
    buyers: list[RawBuyer] = []
    sem = asyncio.Semaphore(100)
    connected = 0

    async def one(i: int) -> None:
        nonlocal connected
        user = f"p{idx}b{i}"
        tok = issue_token(secret, user=user, role="viewer", now_s=int(time.time()), ttl_s=3600)
        key = base64.b64encode(os.urandom(16)).decode()
        hs = (f"GET /ws?room=rush&format=json&token={tok} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        rid = uuid.uuid4().hex[:12]
        buy = _masked(json.dumps({"t": "buy", "id": 1, "d": {"sale_id": sale, "qty": 1, "request_id": rid}},
                                 separators=(",", ":")).encode())
        async with sem:
            _, b = await loop.create_connection(lambda: RawBuyer(hs, buy, rid, user, tally, leave), "127.0.0.1", port)
            await asyncio.wait_for(b.ready, 60)
        buyers.append(b)
        connected += 1

    async def report() -> None:
        while True:
            q.put(("connected", idx, connected))
            await asyncio.sleep(0.5)

    rep = asyncio.create_task(report())
    out = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    failed = [repr(e) for e in out if isinstance(e, BaseException)]
    for _ in failed:
        tally._one()
    q.put(("connected", idx, connected))
    await tally.done
    rep.cancel()
    errors = failed + tally.errors
    q.put(("done", idx, {"results": tally.results, "errors": errors[:5], "n_errors": len(errors)}))
    await loop.run_in_executor(None, close_evt.wait)  # the viewers stay until the end
    for b in buyers:
        if b.transport is not None:
            b.transport.close()


async def _clients(idx: int, n: int, port: int, secret: str, sale: str, q: Any, close_evt: Any, leave: bool) -> None:
    # (kind, latency s, order id, request id, user, started at, answered at); times are time.time()
    results: list[tuple[str, float, str, str, str, float, float]] = []
    connected = 0
    socks: list[aiohttp.ClientWebSocketResponse] = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        sems = asyncio.Semaphore(100)

        async def buyer(i: int) -> None:
            nonlocal connected
            user = f"p{idx}b{i}"
            tok = issue_token(secret, user=user, role="viewer", now_s=int(time.time()), ttl_s=3600)
            async with sems:
                ws = await http.ws_connect(f"ws://127.0.0.1:{port}/ws?room=rush&format=json&token={tok}", max_msg_size=0,
                                           heartbeat=None)
                await ws.receive_json(timeout=60)
            socks.append(ws)
            connected += 1
            while True:  # wait for sale.started
                m = await ws.receive_json(timeout=600)
                items = m["items"] if m["t"] == "batch" else [m]
                if any(e["t"] == "sale.started" for e in items):
                    break
            started = time.time()
            t0 = time.perf_counter()
            rid = uuid.uuid4().hex[:12]
            await ws.send_json({"t": "buy", "id": 1, "d": {"sale_id": sale, "qty": 1, "request_id": rid}})
            while True:
                m = await ws.receive_json(timeout=120)
                items = m["items"] if m["t"] == "batch" else [m]
                r = next((e for e in items if e.get("id") == 1), None)
                if r is not None:
                    took = time.perf_counter() - t0
                    kind = "reserved" if r["t"] == "order.reserved" else r.get("d", {}).get("code", r["t"])
                    results.append((kind, took, (r.get("d") or {}).get("order_id", ""), rid, user, started, time.time()))
                    break
            if leave:
                await ws.close()

        async def report() -> None:
            while True:
                q.put(("connected", idx, connected))
                await asyncio.sleep(0.5)

        rep = asyncio.create_task(report())
        out = await asyncio.gather(*(buyer(i) for i in range(n)), return_exceptions=True)
        rep.cancel()
        errors = [repr(e) for e in out if isinstance(e, BaseException)]
        q.put(("done", idx, {"results": results, "errors": errors[:5], "n_errors": len(errors)}))
        await asyncio.get_running_loop().run_in_executor(None, close_evt.wait)  # the viewers stay until the end
        await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)


# ------------------------------------------------------------------ ceilings (no gateway)
async def raw_ceiling(redis_url: str, prefix: str, seconds: float = 5.0, callers: int = 64) -> float:
    """Reservations/s of the bare per-buy reserve script: EVALSHA from `callers` concurrent tasks."""
    from livecommerce.flash_sale import Sale
    from livecommerce.flash_sale_redis import RedisFlashSale
    from livecommerce.keys import Keys
    from livecommerce.redis_conn import connect

    redis = connect(redis_url)
    sales = RedisFlashSale(redis, Keys(prefix))
    now = int(time.time() * 1000)
    await sales.create(Sale("ceiling", "r", "p", 100, 10_000_000, 10_000_000, now - 1000, now + 3_600_000))
    await sales.start("ceiling", now)
    done = 0
    stop = time.monotonic() + seconds

    async def caller(c: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            i += 1
            await sales.reserve("ceiling", f"u{c}", 1, f"r{i}", int(time.time() * 1000), f"ceiling.{c}x{i}")
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    rate = done / (time.monotonic() - t0)
    await redis.aclose()
    return rate


async def batch_ceiling(redis_url: str, prefix: str, kafka: str | None, *, per_call: int, with_log: bool,
                        seconds: float = 5.0, callers: int = 4) -> float:
    """Reservations/s of the batch script with `per_call` buyers per EVALSHA (each buyer a new
    user), from `callers` concurrent tasks; `with_log`: each call's events are then appended
    with one `append_many`, as the gateway's group commit does."""
    from livecommerce.config import Settings
    from livecommerce.flash_sale import BatchBuy, Reserved, Sale, request_key
    from livecommerce.flash_sale_redis import RedisFlashSale
    from livecommerce.keys import Keys
    from livecommerce.log import new_event
    from livecommerce.log_open import open_log
    from livecommerce.redis_conn import connect

    redis = connect(redis_url)
    sid = f"bceil{per_call}{'L' if with_log else ''}"
    sales = RedisFlashSale(redis, Keys(prefix))
    durable = open_log(Settings.from_env({}, redis_url=redis_url, key_prefix=prefix, kafka_bootstrap=kafka or "",
                                         kafka_idempotent=False, kafka_partitions=3), redis) if with_log else None
    now = int(time.time() * 1000)
    await sales.create(Sale(sid, "r", "p", 100, 10_000_000, 1, now - 1000, now + 3_600_000))
    await sales.start(sid, now)
    done = 0
    stop = time.monotonic() + seconds

    async def caller(c: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            t = int(time.time() * 1000)
            buys = []
            for _ in range(per_call):
                i += 1
                user = f"c{c}u{i}"
                buys.append(BatchBuy(user, 1, request_key(user, "r"), t, f"{sid}.{c}x{i}"))
            got = await sales.reserve_batch(sid, buys, request_ids=["r"] * per_call)
            if durable is not None:
                await durable.append_many([new_event("orders", r.order_id, "order.reserved", {"order_id": r.order_id},
                                                     f"{r.order_id}:reserved", t)
                                           for r in got.results if isinstance(r, Reserved)])
            done += sum(1 for r in got.results if isinstance(r, Reserved))

    t0 = time.monotonic()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    rate = done / (time.monotonic() - t0)
    if durable is not None:
        await durable.close()
    await redis.aclose()
    return rate


# ------------------------------------------------------------------ invariants
async def read_reserved_events(env: dict[str, str], sale: str, expect: int, timeout_s: float = 30.0) -> dict[str, int]:
    """event id -> how many times `order.reserved` of this sale is on the log (a fresh group)."""
    from livecommerce.config import Settings
    from livecommerce.log_open import open_log

    s = Settings.from_env({k: v for k, v in env.items() if k.startswith("LC_")}, node_id="rush-check")
    durable = open_log(s)
    counts: dict[str, int] = {}
    try:
        c = await durable.consumer("orders", f"check-{uuid.uuid4().hex[:8]}", "c1")
        deadline = time.monotonic() + timeout_s
        quiet_until = 0.0
        while time.monotonic() < deadline:
            got = await c.fetch(max_events=1000, timeout_ms=300)
            for d in got:
                if d.event.type == "order.reserved" and d.event.data.get("sale_id") == sale:
                    counts[d.event.id] = counts.get(d.event.id, 0) + 1
            if got:
                await c.ack(got)
            n = sum(counts.values())
            if n >= expect and not got:
                if not quiet_until:
                    quiet_until = time.monotonic() + 1.0  # then a second of nothing more
                elif time.monotonic() >= quiet_until:
                    break
        await c.close()
    finally:
        await durable.close()
    return counts


async def retry_buys(base: str, secret: str, sale: str, picks: list[tuple[str, str, str, str]]) -> dict[str, int]:
    """Send each picked buy again (same user and request_id) over HTTP; count the outcomes."""
    out = {"same_order": 0, "other_order": 0, "sold_out_again": 0, "other": 0}
    sem = asyncio.Semaphore(64)
    async with aiohttp.ClientSession() as h:

        async def one(kind: str, oid: str, rid: str, user: str) -> None:
            tok = issue_token(secret, user=user, role="viewer", now_s=int(time.time()), ttl_s=3600)
            async with sem:
                r = await h.post(f"{base}/api/v1/sales/{sale}/buy", json={"qty": 1, "request_id": rid},
                                 headers={"Authorization": f"Bearer {tok}"})
                body = await r.json()
            if kind == "reserved":
                same = r.status == 200 and body.get("order_id") == oid and body.get("duplicate") is True
                out["same_order" if same else "other_order"] += 1
            elif r.status == 409 and body.get("error", {}).get("code") == "sold_out":
                out["sold_out_again"] += 1
            else:
                out["other"] += 1

        await asyncio.gather(*(one(*p) for p in picks))
    return out


class CpuSampler:
    """The gateway's CPU seconds (user + system), sampled every 20 ms with wall-clock times."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                t = self.proc.cpu_times()
            except psutil.Error:
                return
            self.samples.append((time.time(), t.user + t.system))
            self._stop.wait(0.02)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def between(self, t0: float, t1: float) -> float:
        """CPU seconds spent between two wall-clock times (nearest samples)."""
        def at(t: float) -> float:
            best = min(self.samples, key=lambda s: abs(s[0] - t))
            return best[1]

        return at(t1) - at(t0) if self.samples else 0.0


def start_kafka(workdir: Path) -> tuple[Any, str]:
    from scripts.chaos_rush import start_tansu

    return start_tansu(workdir)


# ------------------------------------------------------------------ the run
CART_PRODUCTS = ("p1", "p2", "p3")
CART_SKUS = ("s1", "s2", "s3")
CART_LIMIT = 4  # per user per SKU


def cart_plan(a: argparse.Namespace) -> tuple[int, list[list[tuple[str, str, int]]], list[str]]:
    """The storm's stock per SKU, each buyer's 3-line cart (1-2 units of 3 of the 9 SKUs) and
    user (two buyers share a user, so per-user limits are contended): the same for the
    gateway run and its in-process ceiling."""
    import random

    per_sku = max(1, a.stock // 9)
    rng = random.Random(7)
    pairs = [(p, s) for p in CART_PRODUCTS for s in CART_SKUS]
    carts = [[(p, s, rng.randint(1, 2)) for p, s in rng.sample(pairs, 3)] for _ in range(a.buyers)]
    users = [f"u{i % (a.buyers // 2 or 1)}" for i in range(a.buyers)]
    return per_sku, carts, users


def cart_invariants(units: dict[tuple[str, str], Any], won: list[tuple[str, list[tuple[str, str, int]]]]) -> dict[str, bool]:
    """Per SKU stocked == available + reserved + sold, reserved == the accepted orders' lines,
    no user past the per-SKU limit. ``units``: (product, sku) -> {available, reserved, sold,
    stocked}; ``won``: (user, lines) of each accepted order."""
    held: dict[tuple[str, str], int] = {}
    per_user: dict[tuple[str, str, str], int] = {}
    for user, lines in won:
        for pid, sku, qty in lines:
            held[(pid, sku)] = held.get((pid, sku), 0) + qty
            per_user[(user, pid, sku)] = per_user.get((user, pid, sku), 0) + qty
    return {
        "stock_conserved": all(u["stocked"] == u["available"] + u["reserved"] + u["sold"] and u["available"] >= 0
                               for u in units.values()),
        "reserved_equals_accepted_lines": all(u["reserved"] + u["sold"] == held.get(k, 0) for k, u in units.items()),
        "per_user_limits_held": all(v <= CART_LIMIT for v in per_user.values()),
    }


def pct_ms(xs: list[float], p: float) -> float | None:
    return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1) if xs else None


async def cart_library_storm(a: argparse.Namespace) -> dict[str, Any]:
    """The same-run ceiling of ``--cart``: the same carts checked out by the library's
    CartCheckout in this process on this Redis (the log on Redis), 48 in flight, no gateway,
    no socket: what the checkout's Redis work alone allows."""
    import redis.asyncio as aioredis

    from livecommerce.cart import Line, cart_order_id
    from livecommerce.cart_checkout import CartCheckout, CheckoutRefused
    from livecommerce.catalog import Product, Sku
    from livecommerce.catalog_redis import RedisCatalog
    from livecommerce.keys import Keys
    from livecommerce.log_redis import RedisLog

    per_sku, carts, users = cart_plan(a)
    r = aioredis.Redis.from_url(a.redis, max_connections=64)
    keys = Keys(f"cb{uuid.uuid4().hex[:8]}")
    cat = RedisCatalog(r, keys)
    now = int(time.time() * 1000)
    for p in CART_PRODUCTS:
        prod = Product(p, "h", p, tuple(Sku(s, (("v", s),), 100 * (i + 1), limit=CART_LIMIT) for i, s in enumerate(CART_SKUS)))
        await cat.put(prod, expected_v=0, initial_stock={s: per_sku for s in CART_SKUS}, now_ms=now)
    cart = CartCheckout(r, keys, RedisLog(r, keys))
    lat: list[float] = []
    won: list[tuple[str, list[tuple[str, str, int]]]] = []
    refused: dict[str, int] = {}
    gate = asyncio.Semaphore(48)  # checkouts in flight (one connection each at a time)

    async def one(i: int) -> None:
        async with gate:
            t = time.perf_counter()
            try:
                o, _ = await cart.checkout(user=users[i], room="r", order_id=cart_order_id(users[i], f"k{i}"),
                                           lines=[Line(*ln) for ln in carts[i]], coupon_ids=[], sales={}, now_ms=now)
                won.append((o.user, [(ln.product_id, ln.sku, ln.qty) for ln in o.lines]))
            except CheckoutRefused as exc:
                refused[exc.code] = refused.get(exc.code, 0) + 1
            lat.append(time.perf_counter() - t)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(a.buyers)))
        wall = time.perf_counter() - t0
        units: dict[tuple[str, str], Any] = {}
        for p in CART_PRODUCTS:
            got = await cat.read(p)
            assert got is not None
            units |= {(p, s): u.to_dict() for s, u in got[1].items()}
    finally:
        async for k in r.scan_iter(match=f"{keys.prefix}:*", count=1000):
            await r.delete(k)
        await r.aclose()
    lat.sort()
    return {"orders": len(won), "refused": refused, "checkouts_per_s": round(a.buyers / wall, 1), "wall_s": round(wall, 3),
            "reply_ms": {"p50": pct_ms(lat, 0.5), "p99": pct_ms(lat, 0.99)}, "invariants": cart_invariants(units, won)}


async def _cart_buyer(h: aiohttp.ClientSession, url: str, lines: list[tuple[str, str, int]], rid: str,
                      opening: asyncio.Semaphore, go: asyncio.Event, ready: list[int]) -> tuple[str, float, dict[str, Any] | None]:
    """One buyer: connect (``opening`` bounds the handshakes in flight), read the welcome,
    wait for ``go``, send ``cart.checkout``, and return (``ack`` or the error code, seconds
    from the send to the answer, the order)."""
    async with opening:
        ws = await h.ws_connect(url, max_msg_size=0)
        first = json.loads((await ws.receive(timeout=60)).data)
    try:
        if first.get("t") != "welcome":
            return f"no_welcome:{first.get('t')}", 0.0, None
        ready[0] += 1
        await go.wait()
        t = time.perf_counter()
        await ws.send_str(json.dumps({"t": "cart.checkout", "id": 1, "d": {
            "lines": [{"product_id": p, "sku": s, "qty": q} for p, s, q in lines], "coupon_ids": [], "request_id": rid}}))
        while True:
            msg = await ws.receive(timeout=60)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return f"closed:{msg.type.name}", time.perf_counter() - t, None
            f = json.loads(msg.data)
            for e in f["items"] if f.get("t") == "batch" else [f]:
                if e.get("id") == 1 and e.get("t") in ("ack", "error"):
                    dt = time.perf_counter() - t
                    if e["t"] == "ack":
                        return "ack", dt, e["d"]
                    return str(e["d"].get("code")), dt, None
    finally:
        await ws.close()


async def cart_storm(a: argparse.Namespace) -> int:
    """``--cart``: B buyers connected to a real gateway over WebSockets (JSON frames) send
    ``cart.checkout`` of a 3-line cart at once (9 SKUs of 3 products, each with stock/9
    units and a per-user limit of 4; two buyers per user): checkouts/s (B over the time from
    the first send to the last answer), reply p50/p99, answers by kind, the gateway's CPU;
    the invariants read back over HTTP (per SKU stocked == available + reserved + sold,
    reserved == the accepted orders' lines, limits held, every buyer answered); and the
    same-run ceiling: the same carts through the library's CartCheckout in this process
    (no gateway, no socket)."""
    raise_nofile()
    per_sku, carts, users = cart_plan(a)
    prefix = "bc" + uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench_cart_"))
    secret = uuid.uuid4().hex * 2
    port = free_port()
    load_before = os.getloadavg()
    procs, _ = start_node(a, port=port, prefix=prefix, db=f"sqlite+aiosqlite:///{tmp}/cart.db", secret=secret)
    base = f"http://127.0.0.1:{port}"
    now_s = int(time.time())
    host = {"Authorization": "Bearer " + issue_token(secret, user="h", role="host", rooms=("r",), now_s=now_s, ttl_s=3600)}
    out: dict[str, Any] = {"buyers": a.buyers, "units_per_sku": per_sku, "skus": 9, "lines_per_cart": 3}
    results: list[tuple[str, float, dict[str, Any] | None]] = []
    try:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as h:
            await wait_ready(h, base)
            for p in CART_PRODUCTS:
                body = {"id": p, "name": p, "skus": [{"id": s, "attrs": {"v": s}, "price": 100 * (i + 1), "stock": per_sku,
                                                      "limit": CART_LIMIT} for i, s in enumerate(CART_SKUS)]}
                r = await h.post(base + "/api/v1/products", json=body, headers=host)
                assert r.status == 201, await r.text()
            go = asyncio.Event()
            ready = [0]
            opening = asyncio.Semaphore(200)

            async def buyer(i: int) -> tuple[str, float, dict[str, Any] | None]:
                tok = issue_token(secret, user=users[i], role="viewer", now_s=now_s, ttl_s=3600)
                return await _cart_buyer(h, f"ws://127.0.0.1:{port}/ws?room=r&token={tok}&format=json", carts[i],
                                         f"k{i}", opening, go, ready)

            tasks = [asyncio.create_task(buyer(i)) for i in range(a.buyers)]
            t_conn = time.monotonic()
            while ready[0] < a.buyers and time.monotonic() - t_conn < 120 and not all(x.done() for x in tasks):
                print(f"\r  connecting buyers {ready[0]:,}/{a.buyers:,}", end="", flush=True)
                await asyncio.sleep(0.2)
            print(f"\r  {ready[0]:,} buyers connected in {time.monotonic() - t_conn:.1f} s; checking out", flush=True)
            cpu = CpuSampler(procs[0].pid)
            cpu.start()
            spy = None
            if a.profile:
                spy = subprocess.Popen(["py-spy", "record", "-p", str(procs[0].pid), "-r", "250", "-d", str(a.profile_s),  # noqa: ASYNC220
                                        "-f", "raw", "-o", a.profile, "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                await asyncio.sleep(0.5)  # py-spy attached before the storm
            t0, w0 = time.perf_counter(), time.time()
            go.set()
            results = list(await asyncio.gather(*tasks))
            wall, w1 = time.perf_counter() - t0, time.time()
            cpu.stop()
            if spy is not None:
                spy.wait(a.profile_s + 30)
            units: dict[tuple[str, str], Any] = {}
            for p in CART_PRODUCTS:
                r = await h.get(f"{base}/api/v1/products/{p}", headers=host)
                units |= {(p, s["id"]): s["units"] for s in (await r.json())["skus"]}
        kinds: dict[str, int] = {}
        for k, _, _ in results:
            kinds[k] = kinds.get(k, 0) + 1
        won = [(str(o["order_id"]), [(ln["product_id"], ln["sku"], ln["qty"]) for ln in o["lines"]])
               for k, _, o in results if k == "ack" and o is not None]
        by_order = {oid: lines for oid, lines in won}
        inv = cart_invariants(units, [(users[i], by_order[o["order_id"]]) for i, (k, _, o) in enumerate(results)
                                      if k == "ack" and o is not None])
        inv["every_buyer_answered"] = all(k == "ack" or k in ("sold_out", "limit_reached") for k, _, _ in results)
        lat = sorted(dt for _, dt, _ in results)
        out.update(answers=kinds, orders=len(won), checkouts_per_s=round(a.buyers / wall, 1), wall_s=round(wall, 3),
                   reply_ms={"p50": pct_ms(lat, 0.5), "p99": pct_ms(lat, 0.99), "max": pct_ms(lat, 1.0)},
                   server_cpu_pct=round(100 * cpu.between(w0, w1) / wall, 1) if wall else None,
                   invariants=inv, users=len(set(users)))
    finally:
        stop_node(procs)
        from livecommerce.redis_conn import connect

        rc = connect(a.redis)
        async for k in rc.scan_iter(match=f"{prefix}:*", count=1000):
            await rc.delete(k)
        await rc.aclose()
    print("  the same-run ceiling: the same carts through the library in this process ...", flush=True)
    out["ceiling_library_in_process"] = await cart_library_storm(a)
    out["load_average"] = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(out, indent=2))
    c = out["ceiling_library_in_process"]
    print(f"\n  cart storm: {a.buyers:,} buyers over WebSockets, 3-line carts over 9 SKUs ({per_sku} units each)")
    print("  goal: none set in the issue (M2 5/7 asks for the storm and its invariants)")
    print(f"  measured: {out['checkouts_per_s']:,} checkouts/s, reply p50/p99 {out['reply_ms']['p50']}/{out['reply_ms']['p99']} ms, "
          f"{out['orders']} orders, answers {kinds}, gateway CPU {out['server_cpu_pct']} % of one core")
    print(f"  same-run ceiling (library in process, no gateway): {c['checkouts_per_s']:,} checkouts/s, "
          f"p50/p99 {c['reply_ms']['p50']}/{c['reply_ms']['p99']} ms, {c['orders']} orders")
    print("  invariants: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in {**inv, **{
        f"ceiling_{k}": v for k, v in c["invariants"].items()}}.items()))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))  # noqa: ASYNC240
    return 0 if all(inv.values()) and all(c["invariants"].values()) else 1


async def main(a: argparse.Namespace) -> int:
    if a.cart:
        return await cart_storm(a)
    raise_nofile()
    prefix = "br" + uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench_rush_"))
    db = f"sqlite+aiosqlite:///{tmp}/rush.db"
    secret = uuid.uuid4().hex * 2
    kafka_proc, kafka = (await asyncio.to_thread(start_kafka, tmp)) if a.kafka else (None, None)  # it runs its own loop
    port = free_port()
    procs, env = start_node(a, port=port, prefix=prefix, db=db, secret=secret, kafka=kafka)
    base = f"http://127.0.0.1:{port}"
    ops = {"Authorization": "Bearer " + issue_token(secret, user="ops", role="ops", now_s=int(time.time()), ttl_s=3600)}
    out: dict[str, Any] = {"buyers": a.buyers, "stock": a.stock, "log": "kafka" if kafka else "redis", "env": a.env,
                           "leave_when_answered": a.leave, "client_procs": a.procs, "client": a.client}
    workers: list[mp.Process] = []
    close_evt = mp.Event()
    load_before = os.getloadavg()
    try:
        async with aiohttp.ClientSession() as h:
            await wait_ready(h, base)
            sale = f"rush{uuid.uuid4().hex[:6]}"
            q: mp.Queue[Any] = mp.Queue()
            per = [a.buyers // a.procs + (1 if i < a.buyers % a.procs else 0) for i in range(a.procs)]
            workers = [mp.Process(target=client_proc, args=(i, n, port, secret, sale, q, close_evt, a.leave, a.client))
                       for i, n in enumerate(per)]
            for w in workers:
                w.start()
            connected = [0] * a.procs
            t_conn = time.monotonic()
            while sum(connected) < a.buyers:
                while not q.empty():
                    kind, idx, val = q.get()
                    if kind == "connected":
                        connected[idx] = val
                print(f"\r  connecting buyers {sum(connected):,}/{a.buyers:,}", end="", flush=True)
                if time.monotonic() - t_conn > 240:
                    print("\n  giving up waiting for connections", flush=True)
                    break
                await asyncio.sleep(0.3)
            out["connect_s"] = round(time.monotonic() - t_conn, 1)
            print(f"\r  {sum(connected):,} buyers connected in {out['connect_s']} s; the sale opens in 2 s", flush=True)
            cpu = CpuSampler(procs[0].pid)
            cpu.start()
            clients_cpu0 = sum(psutil.Process(w.pid).cpu_times().user + psutil.Process(w.pid).cpu_times().system
                               for w in workers if w.pid)
            camp = {"id": sale, "room": "rush", "product_id": "p", "price": 999, "stock": a.stock, "per_user_limit": 1,
                    "starts_ms": int(time.time() * 1000) + 2000, "duration_s": 600, "payment_window_s": 600}
            r = await h.post(base + "/api/v1/campaigns", json=camp, headers=ops)
            assert r.status == 201, await r.text()
            spy = None
            if a.profile:
                spy = subprocess.Popen(["py-spy", "record", "-p", str(procs[0].pid), "-r", "250", "-d", str(a.profile_s),  # noqa: ASYNC220
                                        "-f", "raw", "-o", a.profile, "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            results: list[Any] = []
            errors: list[str] = []
            finished = 0
            while finished < a.procs:
                kind, idx, val = await asyncio.get_running_loop().run_in_executor(None, q.get)
                if kind == "done":
                    finished += 1
                    results += val["results"]
                    errors += val["errors"]
                    out["client_errors"] = out.get("client_errors", 0) + val["n_errors"]
                print(f"\r  answers {len(results):,}/{a.buyers:,}", end="", flush=True)
            print()
            clients_cpu1 = sum(psutil.Process(w.pid).cpu_times().user + psutil.Process(w.pid).cpu_times().system
                               for w in workers if w.pid and w.is_alive())
            cpu.stop()
            if spy is not None:
                spy.wait(a.profile_s + 30)
            stats = await (await h.get(f"{base}/api/v1/sales/{sale}/stats", headers=ops)).json()
            # the log before any retry: each reserved order's event exactly once
            reserved_ids = {oid for k, _, oid, *_ in results if k == "reserved"}
            print("  reading the log back ...", flush=True)
            log_counts = await read_reserved_events(env, sale, len(reserved_ids))
            picks = [(k, oid, rid, user) for k, _, oid, rid, user, *_ in results if k == "reserved"][: a.retries]
            picks += [(k, oid, rid, user) for k, _, oid, rid, user, *_ in results if k == "sold_out"][: a.retries]
            retried = await retry_buys(base, secret, sale, picks) if picks else {}
        close_evt.set()
        for w in workers:
            w.join(30)
        lat = sorted(t for _, t, *_ in results)
        reserved_lat = sorted(t for k, t, *_ in results if k == "reserved")
        kinds: dict[str, int] = {}
        for k, *_ in results:
            kinds[k] = kinds.get(k, 0) + 1
        pct = lambda xs, p: round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1) if xs else None  # noqa: E731
        last_reserved = max(reserved_lat) if reserved_lat else 0.0
        t_first = min(s for *_, s, _ in results) if results else 0.0
        t_last = max(e for *_, e in results) if results else 0.0
        t_last_res = max((e for k, *_, e in results if k == "reserved"), default=0.0)
        rush_s = max(t_last - t_first, 1e-6)
        timeline: dict[str, float] = {}  # ms after the first buyer heard sale.started
        for what, rows in (("sale_started_heard", [(st, st) for _k, _t, _o, _r, _u, st, _e in results]),
                           ("reserved_answered", [(e, e) for k, *_, e in results if k == "reserved"]),
                           ("sold_out_answered", [(e, e) for k, *_, e in results if k == "sold_out"])):
            if rows:
                timeline[f"{what}_first"] = round((min(r[0] for r in rows) - t_first) * 1000, 1)
                timeline[f"{what}_last"] = round((max(r[0] for r in rows) - t_first) * 1000, 1)
        server_cpu_s = cpu.between(t_first, t_last)
        out.update(
            answers=kinds,
            errors_sample=errors,
            reservations_per_s=round(kinds.get("reserved", 0) / last_reserved, 1) if last_reserved else 0,
            reservations_per_s_wall=round(kinds.get("reserved", 0) / max(t_last_res - t_first, 1e-6), 1),
            answers_per_s=round(len(results) / rush_s, 1),
            rush_s=round(rush_s, 3),
            reply_ms={"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "max": pct(lat, 1.0)},
            reserved_reply_ms={"p50": pct(reserved_lat, 0.5), "p99": pct(reserved_lat, 0.99), "max": pct(reserved_lat, 1.0)},
            timeline_ms=timeline,
            server_cpu_s=round(server_cpu_s, 3),
            server_cpu_pct=round(100 * server_cpu_s / rush_s, 1),
            clients_cpu_s_rush_and_wait=round(clients_cpu1 - clients_cpu0, 2),
            stats={k: stats[k] for k in ("remaining", "reserved", "paid", "conserved")},
            log_reserved_events=sum(log_counts.values()),
            retries=retried,
        )
        print("  measuring the ceilings (no gateway, 5 s each) ...", flush=True)
        ceiling = await raw_ceiling(a.redis, prefix)
        bceil = await batch_ceiling(a.redis, prefix, kafka, per_call=a.ceiling_batch, with_log=False)
        bceil_log = await batch_ceiling(a.redis, prefix, kafka, per_call=a.ceiling_batch, with_log=True)
        out["ceilings"] = {
            "per_buy_evalsha_64_callers": round(ceiling, 1),
            f"batch_evalsha_{a.ceiling_batch}_per_call_4_callers": round(bceil, 1),
            f"batch_evalsha_plus_log_append_{a.ceiling_batch}_per_call_4_callers": round(bceil_log, 1),
        }
        res = out["reservations_per_s"]
        out["ratios"] = {"to_per_buy_evalsha": round(res / ceiling, 3) if ceiling else None,
                         "to_batch_evalsha": round(res / bceil, 3) if bceil else None,
                         "to_batch_plus_log": round(res / bceil_log, 3) if bceil_log else None}
    finally:
        close_evt.set()
        for w in workers:
            if w.is_alive():
                w.join(10)
            if w.is_alive():
                w.kill()
        stop_node(procs)
        if kafka_proc is not None:
            kafka_proc.kill9()
        from livecommerce.redis_conn import connect

        rc = connect(a.redis)
        async for k in rc.scan_iter(match=f"{prefix}:*", count=1000):
            await rc.delete(k)
        await rc.aclose()
    st = out["stats"]
    answered_all = sum(out["answers"].values()) == a.buyers and not out.get("client_errors")
    exactly = out["answers"].get("reserved", 0) == a.stock == st["reserved"] + st["paid"]
    log_once = set(log_counts) == {f"{o}:reserved" for o in reserved_ids} and all(n == 1 for n in log_counts.values())
    retries_ok = not retried or (retried["other_order"] == 0 and retried["other"] == 0)
    out["invariants"] = {"every_buyer_answered": answered_all, "exactly_stock_reserved": exactly,
                         "stock_conserved": bool(st["conserved"]), "log_has_each_order_reserved_once": log_once,
                         "retries_answered_with_the_same_order": retries_ok}
    out["load_average"] = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    ok = all(out["invariants"].values())
    print(json.dumps(out, indent=2))
    c = out["ceilings"]
    print(f"\n  goal: >= {GOAL_RESERVATIONS_S:,} reservations/s, every buyer answered, reply p99 < {GOAL_P99_MS} ms")
    print(f"  measured: {out['reservations_per_s']:,} reservations/s (wall clock {out['reservations_per_s_wall']:,}/s), "
          f"reply p50/p99 {out['reply_ms']['p50']}/{out['reply_ms']['p99']} ms, gateway CPU {out['server_cpu_pct']} % "
          f"of one core over the {out['rush_s']} s rush")
    print("  same-run ceilings (no gateway): " + ", ".join(f"{k} {v:,}/s" for k, v in c.items()))
    print("  invariants: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in out["invariants"].items()))
    met = out["reservations_per_s"] >= GOAL_RESERVATIONS_S and (out["reply_ms"]["p99"] or 1e9) < GOAL_P99_MS and answered_all
    print(f"  goal {'MET' if met else 'NOT MET'}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))  # noqa: ASYNC240
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-b", "--buyers", type=int, default=5000, help="buyers (default %(default)s)")
    ap.add_argument("-s", "--stock", type=int, default=1000, help="units on sale (default %(default)s)")
    ap.add_argument("-p", "--procs", type=int, default=2, help="client processes (default %(default)s)")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (default %(default)s)")
    ap.add_argument("--kafka", action="store_true", help="the durable log on a Tansu Kafka broker started here")
    ap.add_argument("--client", choices=("raw", "aiohttp"), default="raw",
                    help="buyers as raw asyncio protocols on uvloop (light) or aiohttp clients (default %(default)s)")
    ap.add_argument("--leave", action="store_true", help="each buyer disconnects as soon as it is answered")
    ap.add_argument("--retries", type=int, default=200,
                    help="reserved and as many sold-out buyers retried with their request_id after the rush (default %(default)s)")
    ap.add_argument("--ceiling-batch", type=int, default=100, help="buyers per call of the batch ceilings (default %(default)s)")
    ap.add_argument("--env", action="append", default=[], metavar="LC_X=V",
                    help="an LC_* setting for the gateway and worker (repeatable), e.g. LC_GC_FREEZE=0")
    ap.add_argument("--json", help="also write the result to this file")
    ap.add_argument("--cart", action="store_true", help="a cart checkout storm: multi-SKU orders (see cart_storm)")
    ap.add_argument("--profile", help="py-spy the gateway from the campaign on, collapsed stacks to this file")
    ap.add_argument("--profile-s", type=int, default=8, help="seconds of --profile (default %(default)s)")
    sys.exit(asyncio.run(main(ap.parse_args())))
