#!/usr/bin/env python3
"""Gift storm end to end: WebSocket `gift` -> batched wallet debit (one script call per wallet
shard per batch) -> log -> wallet ledger and points workers, balances checked against ledgers.

It starts one `livecommerce gateway` process on a free port (LC_REDIS_URL, a throw-away SQLite
database, its own key prefix), tops up C viewers, then C WebSocket clients keep W gifts in
flight each for S seconds. It prints gifts/s acked by the gateway and the send->ack latency
beside the goal (issue #17: >= 10,000 gifts/s, ack p99 < 100 ms) and two same-run ceilings:

* raw batch script: what the gateway's Redis work gives with no gateway at all, from this
  process: `RedisWallet.send_gifts` (the gift batch script) then the log `append_many`, with
  the batch size the gateway reached (gifts per batch, read from its /metrics) and as many
  batches in flight as the gateway allows; once with every wallet shard of a batch in one
  call (one Redis) and once with one call per shard, pipelined (as on Redis Cluster);
* ping floor: the same clients sending `ping` instead of `gift` (the gateway's dispatch,
  decode and reply with no Redis), for --floor seconds.

Then it drains the wallet and points workers in this process (events/s) and checks that every
wallet's Redis balance equals the sum of its SQL ledger rows. `--storm 60` instead runs the
real wallet and points workers (`livecommerce worker wallet|points`) beside the gateway for a
60 s storm and prints their lag (events appended and not yet read by each group) every
second: the lag curve. The load average is printed before and after.

The clients are raw asyncio protocols in --procs processes (default 1): a pre-built frame per
send, and only replies (ack, error) are decoded; room broadcasts are counted, not parsed.

    python scripts/bench_gifts.py -c 50 -w 4 -s 15
    python scripts/bench_gifts.py -c 50 -w 4 --storm 60
    python scripts/bench_gifts.py --request-ids --py-spy /tmp/gw.txt
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from gateway.gifts import MAX_IN_FLIGHT
from livecommerce.auth import issue_token
from livecommerce.config import Settings
from livecommerce.gifts import load_catalogue
from livecommerce.keys import Keys
from livecommerce.log_open import open_log
from livecommerce.migrations import upgrade
from livecommerce.points import Rules
from livecommerce.redis_conn import connect
from livecommerce.store_sql import SqlStore
from livecommerce.wallet_redis import RedisWallet
from workers.points import PointsWorker
from workers.points import drain as points_drain
from workers.wallet import drain as wallet_drain

GOAL_RATE = 10_000  # gifts/s acked by one gateway (issue #17)
GOAL_P99_MS = 100.0
HIST_RES = 10_000  # latency buckets per second (0.1 ms)
HIST_CAP = 100_000  # 10 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "?"


# ---------------------------------------------------------------- load clients (child processes)
def _mask0(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame masked with the zero key (RFC 6455 allows any key)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


class Stats:
    __slots__ = ("acked", "error_codes", "errors", "hist", "other", "sent")

    def __init__(self) -> None:
        self.acked = 0
        self.errors = 0
        self.sent = 0
        self.other = 0
        self.error_codes: dict[str, int] = {}
        self.hist = [0] * (HIST_CAP + 1)


class GiftClient(asyncio.Protocol):
    """One viewer keeping ``window`` commands in flight. Replies are the only frames decoded."""

    def __init__(self, path: str, host: str, window: int, cmd: str, rid_prefix: str | None, st: Stats) -> None:
        self.path, self.host, self.window, self.cmd, self.rid_prefix, self.st = path, host, window, cmd, rid_prefix, st
        self.buf = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.sent: dict[int, float] = {}
        self.n = 0
        self.running = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16))
        transport.write(  # type: ignore[attr-defined]
            b"GET " + self.path.encode() + b" HTTP/1.1\r\nHost: " + self.host.encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.ready.done():
            self.ready.set_result(False)
        if not self.done.done():
            self.done.set_result(None)

    def start(self) -> None:
        self.running = True
        for _ in range(self.window):
            self.send_one()

    def stop(self) -> None:
        self.running = False
        if not self.sent and not self.done.done():
            self.done.set_result(None)

    def send_one(self) -> None:
        if self.transport is None:
            return
        self.n += 1
        n = self.n
        if self.cmd == "ping":
            payload = b'{"t":"ping","id":%d}' % n
        elif self.rid_prefix is not None:
            payload = b'{"t":"gift","id":%d,"d":{"gift_id":"rose","count":1,"request_id":"%s%d"}}' % (
                n, self.rid_prefix.encode(), n)
        else:
            payload = b'{"t":"gift","id":%d,"d":{"gift_id":"rose","count":1}}' % n
        self.sent[n] = time.perf_counter()
        self.st.sent += 1
        self.transport.write(_mask0(payload))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.buf = b""
                if self.transport is not None:
                    self.transport.close()
                return
            self.upgraded = True
            buf = buf[end + 4:]
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            ln = buf[pos + 1] & 0x7F
            if ln < 126:
                hdr = 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
                hdr = 4
            else:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
                hdr = 10
            end = pos + hdr + ln
            if end > n:
                break
            op = buf[pos] & 0x0F
            payload = buf[pos + hdr:end]
            pos = end
            if op == 1 or op == 2:
                self.on_frame(payload)
            elif op == 9 and self.transport is not None:
                self.transport.write(_mask0(payload, 0xA))
            elif op == 8 and self.transport is not None:
                self.transport.close()
        self.buf = buf[pos:] if pos < n else b""

    def on_frame(self, payload: bytes) -> None:
        head = payload[:16]
        if head.startswith((b'{"t":"ack"', b'{"t":"error"', b'{"t":"pong"')):
            f = json.loads(payload)
            t0 = self.sent.pop(f.get("id"), None)
            if t0 is None:
                return
            st = self.st
            if f["t"] == "error":
                st.errors += 1
                code = str(f.get("d", {}).get("code"))
                st.error_codes[code] = st.error_codes.get(code, 0) + 1
            else:
                st.acked += 1
                i = int((time.perf_counter() - t0) * HIST_RES)
                st.hist[i if i < HIST_CAP else HIST_CAP] += 1
            if self.running:
                self.send_one()
            elif not self.sent and not self.done.done():
                self.done.set_result(None)
        elif head.startswith(b'{"t":"welcome"'):
            if not self.ready.done():
                self.ready.set_result(True)
        else:
            self.st.other += 1


def client_process(spec: dict[str, Any], conn: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(_client_main(spec, conn))


async def _client_main(spec: dict[str, Any], conn: Any) -> None:
    loop = asyncio.get_running_loop()
    now = int(time.time())
    clients: list[GiftClient] = []
    st = Stats()
    for i in spec["users"]:
        tok = issue_token(spec["secret"], user=f"u{i}", role="viewer", now_s=now, ttl_s=3600)
        path = f"/ws?room={spec['room']}&format=json&token={tok}"
        rid = f"{spec['run']}-{i}-" if spec["request_ids"] else None
        c = GiftClient(path, f"127.0.0.1:{spec['port']}", spec["window"], "gift", rid, st)
        await loop.create_connection(lambda c=c: c, "127.0.0.1", spec["port"])  # type: ignore[misc]
        clients.append(c)
    ok = await asyncio.gather(*(asyncio.wait_for(asyncio.shield(c.ready), 30) for c in clients))
    conn.send(("ready", sum(ok)))
    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg[0] == "exit":
            break
        _, cmd, seconds = msg
        st = Stats()
        for c in clients:
            c.st, c.cmd, c.sent, c.running = st, cmd, {}, False
            c.done = loop.create_future()
        t0 = time.perf_counter()
        for c in clients:
            c.start()
        await asyncio.sleep(seconds)
        for c in clients:
            c.stop()
        sent_at_stop = st.sent
        await asyncio.wait([c.done for c in clients], timeout=15)
        took = time.perf_counter() - t0
        conn.send(("result", {"acked": st.acked, "errors": st.errors, "error_codes": st.error_codes, "sent": sent_at_stop,
                              "other_frames": st.other, "seconds": took,
                              "hist": {i: n for i, n in enumerate(st.hist) if n},
                              "unanswered": sum(len(c.sent) for c in clients)}))
    for c in clients:
        if c.transport is not None:
            c.transport.close()


class Load:
    """The client processes; ``run(cmd, seconds)`` runs one phase on every client at once."""

    def __init__(self, procs: int, users: list[int], spec: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        for p in range(procs):
            mine = users[p::procs]
            a, b = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=({**spec, "users": mine}, b), daemon=True)
            proc.start()
            self.pipes.append(a)
            self.procs.append(proc)

    async def ready(self) -> int:
        return sum([(await asyncio.to_thread(p.recv))[1] for p in self.pipes])

    async def run(self, cmd: str, seconds: float, progress: bool = False) -> dict[str, Any]:
        for p in self.pipes:
            p.send(("run", cmd, seconds))
        res = [(await asyncio.to_thread(p.recv))[1] for p in self.pipes]
        hist: dict[int, int] = {}
        for r in res:
            for k, v in r["hist"].items():
                hist[int(k)] = hist.get(int(k), 0) + v
        codes: dict[str, int] = {}
        for r in res:
            for k, v in r["error_codes"].items():
                codes[k] = codes.get(k, 0) + v
        acked = sum(r["acked"] for r in res)
        return {"acked": acked, "errors": sum(r["errors"] for r in res), "error_codes": codes,
                "unanswered": sum(r["unanswered"] for r in res), "seconds": max(r["seconds"] for r in res),
                "other_frames": sum(r["other_frames"] for r in res), "hist": hist}

    def close(self) -> None:
        for p in self.pipes:
            try:
                p.send(("exit",))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


def pct(hist: dict[int, int], q: float) -> float:
    total = sum(hist.values())
    if not total:
        return float("nan")
    want = q * total
    run = 0
    for k in sorted(hist):
        run += hist[k]
        if run >= want:
            return k / HIST_RES * 1000
    return max(hist) / HIST_RES * 1000


# ---------------------------------------------------------------- gateway metrics, ceilings
async def gateway_counters(h: aiohttp.ClientSession, base: str) -> dict[str, float]:
    text = await (await h.get(base + "/metrics")).text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("lc_gift_batches_total ", "lc_gift_batch_gifts_total ", "lc_gift_batch_shards_total ")):
            name, _, v = line.partition(" ")
            out[name] = float(v)
    return out


async def raw_script_ceiling(redis_url: str, prefix: str, users: int, per_batch: int, in_flight: int,
                             seconds: float, shards_per_call: int | None = None) -> dict[str, Any]:
    """What the gateway's Redis work gives with no gateway: ``RedisWallet.send_gifts`` (one
    batch script call per wallet shard, pipelined) then ``append_many`` of the events, from
    this process, ``per_batch`` gifts per batch spread over ``users`` senders, ``in_flight``
    batches at once (the gateway's own figures). Its own key prefix: no effect on the run's
    wallets."""
    from livecommerce.log_redis import RedisLog
    from livecommerce.wallet_redis import GiftOrder, SentGift

    redis = connect(redis_url)
    keys = Keys(prefix)
    wallet = RedisWallet(redis, keys, shards_per_call=shards_per_call)
    log = RedisLog(redis, keys)
    spec = load_catalogue().get("rose")
    names = [f"c{i}" for i in range(users)]
    now = int(time.time() * 1000)
    for u in names:
        await wallet.topup(user=u, amount=10**7, idempotency_key="seed", by="bench", now_ms=now)
    done = 0
    stop_at = time.monotonic() + seconds

    async def caller(k: int) -> None:
        nonlocal done
        i = k * per_batch
        while time.monotonic() < stop_at:
            orders = [GiftOrder(user=names[(i + j) % users], room="ceiling", host="h", spec=spec, count=1, combo_id=None)
                      for j in range(per_batch)]
            i += per_batch
            results = await wallet.send_gifts(orders, now_ms=int(time.time() * 1000))
            await log.append_many([r.event for r in results if isinstance(r, SentGift)])
            done += per_batch

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(caller(k) for k in range(in_flight)))
        rate = done / (time.monotonic() - t0)
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()
    return {"gifts_per_s": round(rate, 1), "gifts_per_batch": per_batch, "batches_in_flight": in_flight,
            "shards_per_call": "all" if wallet.shards_per_call == 0 else wallet.shards_per_call}


def cpu_snapshot(gw_pid: int, load_pids: list[int], redis_s: float, workers: dict[str, int] | None = None) -> dict[str, float]:
    """CPU seconds (user + system) so far of the gateway, the load processes, Redis and the
    storm's worker processes."""
    import psutil

    def used(pid: int) -> float:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)

    out = {"gateway": used(gw_pid), "load_clients": sum(used(p) for p in load_pids), "redis": redis_s}
    for name, pid in (workers or {}).items():
        out[f"{name}_worker"] = used(pid)
    return out


async def redis_cpu(redis: Any) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# ---------------------------------------------------------------- storm: workers' lag
async def group_lag(redis: Any, prefix: str, groups: tuple[str, ...]) -> dict[str, int]:
    """Events appended to topic ``gifts`` and not yet read by each group (all partitions)."""
    out = dict.fromkeys(groups, 0)
    keys = Keys(prefix)
    for p in range(64):
        stream = keys.stream(f"gifts:{p}")
        try:
            info = await redis.xinfo_stream(stream)
        except Exception:
            break
        added = int(info.get("entries-added") or info.get(b"entries-added") or 0)
        for g in await redis.xinfo_groups(stream):
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name in out:
                read = g.get("entries-read")
                out[name] += added - int(read or 0)
    return out


# ---------------------------------------------------------------- main
async def main(a: argparse.Namespace) -> int:
    print(f"loadavg before: {loadavg()}")
    la_before = loadavg()
    prefix = "bg" + uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench_gifts_"))
    db = f"sqlite+aiosqlite:///{tmp}/bench.db"
    secret = uuid.uuid4().hex * 2
    await upgrade(db)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LC_")},
           "LC_REDIS_URL": a.redis, "LC_KEY_PREFIX": prefix, "LC_DATABASE_URL": db, "LC_SECRET": secret,
           "LC_LOG_LEVEL": "WARNING", "LC_COMMAND_RATE": "100000", "LC_COMMAND_BURST": "100000", "LC_NODE_ID": "bench-gw"}
    exe = str(Path(sys.executable).with_name("livecommerce"))
    gw = subprocess.Popen([exe, "gateway", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    workers: list[subprocess.Popen[bytes]] = []
    spy: subprocess.Popen[bytes] | None = None
    base = f"http://127.0.0.1:{port}"
    tok = lambda u, r="viewer": issue_token(secret, user=u, role=r, now_s=int(time.time()), ttl_s=3600)  # noqa: E731
    users = list(range(a.clients))
    out: dict[str, Any] = {"clients": a.clients, "in_flight": a.inflight, "procs": a.procs, "request_ids": a.request_ids,
                           "goal": {"gifts_per_s": GOAL_RATE, "ack_p99_ms": GOAL_P99_MS}}
    load: Load | None = None
    redis = connect(a.redis)
    try:
        async with aiohttp.ClientSession() as h:
            for _ in range(100):
                try:
                    if (await h.get(base + "/readyz")).status == 200:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            ops = {"Authorization": f"Bearer {tok('ops', 'ops')}"}
            for i in users:
                r = await h.post(f"{base}/api/v1/wallets/u{i}/topup", json={"amount": 10**7, "idempotency_key": f"seed-{i}"},
                                 headers=ops)
                assert r.status in (200, 201), await r.text()
            load = Load(a.procs, users, {"secret": secret, "port": port, "room": "bench", "window": a.inflight,
                                         "request_ids": a.request_ids, "run": uuid.uuid4().hex[:8]})
            ready = await load.ready()
            print(f"{ready} of {a.clients} clients connected")
            if a.storm:
                wenv = {**env, "LC_NODE_ID": "bench-w"}
                for name in ("wallet", "points"):
                    workers.append(subprocess.Popen([exe, "worker", name], env=wenv,  # noqa: ASYNC220
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                await asyncio.sleep(1.0)
            if a.py_spy:
                exe_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                fmt = "flamegraph" if a.py_spy.endswith(".svg") else "raw"
                spy = subprocess.Popen([exe_spy, "record", "--pid", str(gw.pid), "--rate", "200", *([] if os.environ.get("BENCH_SPY_BLOCKING") else ["--nonblocking"]),  # noqa: ASYNC220
                                        "--format", fmt, "-o", a.py_spy], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            c0 = await gateway_counters(h, base)
            wpids = {name: w.pid for name, w in zip(("wallet", "points"), workers, strict=False)}
            cpu0 = cpu_snapshot(gw.pid, [p.pid for p in load.procs], await redis_cpu(redis), wpids)
            seconds = a.storm or a.seconds
            lag_curve: list[dict[str, Any]] = []

            async def sample_lag() -> None:
                t0 = time.monotonic()
                last = (await gateway_counters(h, base)).get("lc_gift_batch_gifts_total", 0)
                while True:
                    await asyncio.sleep(1.0)
                    lag = await group_lag(redis, prefix, ("wallet", "points"))
                    now = (await gateway_counters(h, base)).get("lc_gift_batch_gifts_total", 0)
                    row = {"t": round(time.monotonic() - t0), "gifts": int(now - last), **lag}
                    last = now
                    lag_curve.append(row)
                    print(f"  {row['t']:3d}s  gifts decided {row['gifts']:>6,}  wallet lag {lag['wallet']:>7,}  "
                          f"points lag {lag['points']:>7,}", flush=True)

            sampler = asyncio.get_running_loop().create_task(sample_lag()) if a.storm else None
            r = await load.run("gift", seconds)
            c1 = await gateway_counters(h, base)
            cpu1 = cpu_snapshot(gw.pid, [p.pid for p in load.procs], await redis_cpu(redis), wpids)
            out["cpu_percent_of_a_core"] = {k: round(100 * (cpu1[k] - cpu0[k]) / r["seconds"], 1) for k in cpu0}
            out["gateway_cpu_us_per_gift"] = round((cpu1["gateway"] - cpu0["gateway"]) / max(r["acked"], 1) * 1e6, 1)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                _, err = await asyncio.to_thread(spy.communicate, timeout=60)
                if spy.returncode:
                    print(f"py-spy: {err.decode(errors='replace')[-400:]}", file=sys.stderr)
                spy = None
            gifts = r["acked"]
            out["gifts"] = {
                "acked": gifts, "errors": r["errors"], "error_codes": r["error_codes"], "unanswered": r["unanswered"],
                "seconds": round(r["seconds"], 1), "gifts_per_s": round(gifts / seconds, 1),
                "ack_ms": {"p50": round(pct(r["hist"], 0.5), 2), "p99": round(pct(r["hist"], 0.99), 2),
                           "max": round(pct(r["hist"], 1.0), 2)},
            }
            batches = c1.get("lc_gift_batches_total", 0) - c0.get("lc_gift_batches_total", 0)
            shards = c1.get("lc_gift_batch_shards_total", 0) - c0.get("lc_gift_batch_shards_total", 0)
            in_batches = c1.get("lc_gift_batch_gifts_total", 0) - c0.get("lc_gift_batch_gifts_total", 0)
            if batches:
                out["gateway_batches"] = {"batches": int(batches), "gifts_per_batch": round(in_batches / batches, 1),
                                          "wallet_shards_per_batch": round(shards / batches, 1)}
            if sampler is not None:
                await asyncio.sleep(1.5)
                sampler.cancel()
                out["storm_lag_curve"] = lag_curve
                # how long the workers take to catch up once the storm stops
                t0 = time.monotonic()
                while time.monotonic() - t0 < 30:
                    lag = await group_lag(redis, prefix, ("wallet", "points"))
                    if not lag["wallet"] and not lag["points"]:
                        break
                    await asyncio.sleep(0.5)
                out["storm_catch_up_s"] = round(time.monotonic() - t0, 1)
                out["storm_lag_after_catch_up"] = await group_lag(redis, prefix, ("wallet", "points"))
            if not a.storm and a.floor:
                cpu0 = cpu_snapshot(gw.pid, [p.pid for p in load.procs], await redis_cpu(redis))
                f = await load.run("ping", a.floor)
                cpu1 = cpu_snapshot(gw.pid, [p.pid for p in load.procs], await redis_cpu(redis))
                out["ping_floor"] = {"pings_per_s": round(f["acked"] / a.floor, 1),
                                     "p99_ms": round(pct(f["hist"], 0.99), 2),
                                     "gateway_cpu_us_per_ping": round((cpu1["gateway"] - cpu0["gateway"]) / max(f["acked"], 1) * 1e6, 1),
                                     "cpu_percent_of_a_core": {k: round(100 * (cpu1[k] - cpu0[k]) / f["seconds"], 1) for k in cpu0}}
        per_batch = max(1, round(out.get("gateway_batches", {}).get("gifts_per_batch", 1)))
        if not a.storm and a.ceiling:
            out["raw_script_ceiling"] = await raw_script_ceiling(a.redis, prefix + "c", a.clients, per_batch, MAX_IN_FLIGHT, a.ceiling)
            out["raw_script_ceiling_one_call_per_shard"] = await raw_script_ceiling(
                a.redis, prefix + "d", a.clients, per_batch, MAX_IN_FLIGHT, a.ceiling, shards_per_call=1)
    finally:
        if load is not None:
            load.close()
        if spy is not None:
            spy.kill()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()
        gw.terminate()
        gw.wait(15)
    s = Settings.from_env({}, redis_url=a.redis, key_prefix=prefix, database_url=db)
    durable = open_log(s, redis)
    store = SqlStore(db)
    try:
        t1 = time.monotonic()
        n = await wallet_drain(durable, store, fetch_timeout_ms=300)
        out["wallet_worker_events_per_s"] = round(n / (time.monotonic() - t1), 1)
        out["wallet_worker_events_drained"] = n
        t1 = time.monotonic()
        n2 = await points_drain(durable, PointsWorker(store, redis, Keys(prefix), Rules()), fetch_timeout_ms=300)
        out["points_worker_events_per_s"] = round(n2 / (time.monotonic() - t1), 1)
        out["points_worker_events_drained"] = n2
        wallet = RedisWallet(redis, Keys(prefix))
        bad = [i for i in users if await wallet.balance(f"u{i}") != await store.wallet_balance(f"u{i}")]
        out["balances_equal_ledgers"] = not bad
        out["outbox_left"] = len(await wallet.pending())
    finally:
        await store.close()
        await durable.close()
        async for k in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(k)
        await redis.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
    out["loadavg"] = {"before": la_before, "after": loadavg()}
    print(json.dumps(out, indent=2))
    g = out["gifts"]
    print(f"\ngoal: >= {GOAL_RATE:,} gifts/s acked by one gateway, ack p99 < {GOAL_P99_MS:.0f} ms")
    print(f"measured: {g['gifts_per_s']:,.0f} gifts/s, ack p50 {g['ack_ms']['p50']} ms, p99 {g['ack_ms']['p99']} ms "
          f"({'met' if g['gifts_per_s'] >= GOAL_RATE and g['ack_ms']['p99'] < GOAL_P99_MS else 'NOT met'})")
    if "raw_script_ceiling" in out:
        c = out["raw_script_ceiling"]
        print(f"same-run ceiling, the batch script + log append from Python ({c['gifts_per_batch']} gifts per batch over "
              f"{a.clients} senders, {c['batches_in_flight']} batches in flight): {c['gifts_per_s']:,.0f} gifts/s "
              f"(gateway at {g['gifts_per_s'] / c['gifts_per_s']:.2f} of it); with one script call per wallet shard "
              f"(pipelined, as on a cluster): {out['raw_script_ceiling_one_call_per_shard']['gifts_per_s']:,.0f} gifts/s")
    if "ping_floor" in out:
        print(f"same-run ping floor (same clients, `ping`, no Redis): {out['ping_floor']['pings_per_s']:,.0f}/s")
    print(f"balances equal ledgers: {out['balances_equal_ledgers']}; loadavg after: {out['loadavg']['after']}")
    return 0 if out["balances_equal_ledgers"] and not g["errors"] else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--clients", type=int, default=50, help="WebSocket clients (default %(default)s)")
    ap.add_argument("-w", "--inflight", type=int, default=4, help="gifts in flight per client (default %(default)s)")
    ap.add_argument("-s", "--seconds", type=float, default=15, help="duration (default %(default)s)")
    ap.add_argument("--procs", type=int, default=1, help="client processes (default %(default)s)")
    ap.add_argument("--request-ids", action="store_true", help="every gift carries a request_id (the idempotent path)")
    ap.add_argument("--storm", type=float, default=0, metavar="S",
                    help="run the wallet and points workers beside the gateway for S seconds and print their lag curve")
    ap.add_argument("--ceiling", type=float, default=5, metavar="S", help="seconds of the raw batch script ceiling (0: skip)")
    ap.add_argument("--floor", type=float, default=4, metavar="S", help="seconds of the ping floor (0: skip)")
    ap.add_argument("--py-spy", default="", metavar="FILE", help="record the gateway with py-spy during the gift phase")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (default %(default)s)")
    sys.exit(asyncio.run(main(ap.parse_args())))
