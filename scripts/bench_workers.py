#!/usr/bin/env python
"""The log workers that write SQL, measured: the orders settler, the wallet ledger, points and host earnings.

For each database (SQLite file, PostgreSQL schema) and each worker it

1. fills the durable log (Redis Streams; ``--kafka`` for Kafka) with ``--events`` realistic
   events: for ``orders`` a rush's ``order.reserved`` followed by ``order.paid`` (70 %) and
   ``order.cancelled`` by time-out (30 %); for ``wallet``, ``points`` and ``earnings`` the ``gift.sent``
   events of a gift storm (``--users`` senders, ``--hosts`` hosts), after each sender's
   ``wallet.topup``;
2. measures the **ceiling** in the same run: the same rows (the exactly-once claims and the
   effects the worker writes) bulk inserted with the same driver (SQLAlchemy Core
   ``executemany``), one transaction per ``--batch`` events, no log, no rules;
3. runs the **real worker** (``livecommerce worker NAME``, a process of its own) until the
   log is drained (every event acked), and reports events/s from its first read to the last
   ack, with the worker's CPU per event, beside the 10,000/s goal and the ceiling;
4. checks the outcome: every order in SQL in its final state; every ledger sum equal to
   what the events say (exactly once).

``--storm S`` then feeds ``--rate`` gift events/s for ``S`` seconds into the log while the
real wallet and points workers run (``--storm-workers``), samples each group's lag every
second, prints the lag curve (a table and an ASCII plot) and how long they take to catch up.

Example (about 2 minutes)::

    flock /tmp/bench.lock python scripts/bench_workers.py --events 20000 --storm 30

Everything is loopback on one machine; the worker, Redis, PostgreSQL and the feeder share its
cores, so the figures are what this machine gives, with the load average printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from livecommerce import earnings_sql
from livecommerce.config import Settings
from livecommerce.earnings import accrual, host_amount, share_bp
from livecommerce.keys import Keys
from livecommerce.log import Log, LogEvent, new_event
from livecommerce.log_kafka import KafkaLog
from livecommerce.log_open import open_log
from livecommerce.migrations import upgrade
from livecommerce.orders import Order, OrderState
from livecommerce.redis_conn import connect
from livecommerce.schema import (
    applied_events,
    host_earnings,
    order_events,
    orders,
    points_ledger,
    wallet_ledger,
)
from livecommerce.store import PointsRole
from livecommerce.store_sql import SqlStore

GOAL = 10_000  # events/s per worker (issue 17)
REPO = Path(__file__).resolve().parent.parent
TOPIC = {"orders": "orders", "wallet": "gifts", "points": "gifts", "earnings": "gifts"}
GROUP = {"orders": "orders", "wallet": "wallet", "points": "points", "earnings": "earnings"}


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "?"


def say(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- databases
@dataclass
class Db:
    kind: str  # sqlite | postgresql
    url: str
    cleanup: Any = None


async def fresh_db(kind: str, pg_url: str, tmp: Path) -> Db:
    """An empty, upgraded database: a new SQLite file or a new PostgreSQL schema."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/{uuid.uuid4().hex[:8]}.db"
        await upgrade(url)
        return Db(kind, url)
    dsn = make_url(pg_url).set(drivername="postgresql").difference_update_query(["schema"]).render_as_string(hide_password=False)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn, timeout=5)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    await admin.close()

    async def drop() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}schema={schema}"
    await upgrade(url)
    return Db(kind, url, drop)


def pg_cpu() -> float:
    """CPU seconds used so far by every PostgreSQL server process on this machine."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if (p.info.get("name") or "").startswith("postgres"):
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


# ---------------------------------------------------------------- events
def order_events_for(n_events: int, *, sale: str, now: int, seed: int = 1) -> list[LogEvent]:
    """A rush: ``n_events / 2`` reservations, then each order paid (70 %) or timed out."""
    rnd = random.Random(seed)
    n_orders = n_events // 2
    window = 900
    reserved, settled = [], []
    for i in range(n_orders):
        oid = f"{sale}.{now:x}{i:06d}"
        user, qty, price = f"u{i}", 1 + i % 2, 9990
        base = {"order_id": oid, "sale_id": sale, "room_id": "bench-room", "user_id": user, "qty": qty, "unit_price": price,
                "pay_by_ms": now + window * 1000, "payment_window_s": window, "request_id": f"rq{i}"}
        reserved.append(new_event("orders", oid, "order.reserved", {**base, "reserved_ms": now}, f"{oid}:reserved", now))
        if rnd.random() < 0.7:
            settled.append(new_event("orders", oid, "order.paid", {**base, "amount": qty * price, "discount": 0, "coupon_id": None,
                                                                   "paid_ms": now + 1000}, f"{oid}:paid", now + 1000))
        else:
            settled.append(new_event("orders", oid, "order.cancelled", {**base, "reason": "timeout", "cancelled_ms": now + window * 1000},
                                     f"{oid}:cancelled", now + window * 1000))
    rnd.shuffle(settled)
    return reserved + settled


@dataclass
class GiftFeed:
    """Gift events as the gateway appends them, and the sums they must leave in SQL."""

    users: int
    hosts: int
    rnd: random.Random = field(default_factory=lambda: random.Random(7))
    wallet: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    viewer_points: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    host_points: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    host_earnings: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    events: int = 0

    def topups(self, now: int) -> list[LogEvent]:
        out = []
        for i in range(self.users):
            u = f"u{i}"
            self.wallet[u] += 10**8
            out.append(new_event("gifts", u, "wallet.topup", {"user": u, "amount": 10**8, "balance": 10**8, "idempotency_key": "seed",
                                                             "by": "bench"}, f"topup:{u}:seed", now))
        self.events += len(out)
        return out

    def gifts(self, n: int, now: int) -> list[LogEvent]:
        out = []
        for _ in range(n):
            u, h = f"u{self.rnd.randrange(self.users)}", f"h{self.rnd.randrange(self.hosts)}"
            count, price = 1 + self.rnd.randrange(3), (1, 10, 100)[self.rnd.randrange(3)]
            value = count * price
            self.wallet[u] -= value
            self.viewer_points[u] += value
            self.host_points[h] += value
            self.host_earnings[h] += host_amount(value, share_bp(0.5))  # the default split
            out.append(new_event("gifts", u, "gift.sent", {"user": u, "room": f"room-{h}", "host": h, "gift_id": "rose", "count": count,
                                                           "price": price, "value": value, "combo_id": uuid.uuid4().hex[:12]}, None, now))
        self.events += len(out)
        return out


async def fill(log: Log, events: Sequence[LogEvent], chunk: int = 2000) -> None:
    for i in range(0, len(events), chunk):
        await log.append_many(events[i : i + chunk])


# ---------------------------------------------------------------- lag
async def group_lag(log: Log, redis: Any, keys: Keys, topic: str, group: str) -> int:
    """Events of ``topic`` the group has not acked yet: unread plus pending (Redis Streams),
    or the end offsets minus the committed ones (Kafka)."""
    if isinstance(log, KafkaLog):
        return await kafka_lag(log, topic, group)
    total = 0
    p = 0
    while True:
        stream = keys.stream(f"{topic}:{p}")
        if not await redis.exists(stream):
            break
        for g in await redis.xinfo_groups(stream):
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == group:
                lag = g.get("lag")
                if lag is None:  # entries trimmed or deleted: count from the stream's length
                    info = await redis.xinfo_stream(stream)
                    lag = int(info.get("entries-added") or 0) - int(g.get("entries-read") or 0)
                total += int(lag) + int(g.get("pending") or 0)
                break
        else:
            total += int(await redis.xlen(stream))  # the group is not created yet: all unread
        p += 1
    return total


async def applied_count(db: Db, consumer: str) -> int:
    store = SqlStore(db.url)
    try:
        async with store.read() as tx:
            q = select(func.count()).select_from(applied_events).where(applied_events.c.consumer == consumer)
            return int((await tx.conn.execute(q)).scalar_one())
    finally:
        await store.close()


async def kafka_lag(log: KafkaLog, topic: str, group: str) -> int:
    """End offsets minus the group's committed offsets, over the topic's partitions."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    name = log.topic_name(topic)
    c = AIOKafkaConsumer(bootstrap_servers=log.bootstrap, group_id=log.group_name(group), enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(name, p) for p in range(log.partitions)]
        ends = await c.end_offsets(tps)
        total = 0
        for tp in tps:
            done = await c.committed(tp)
            total += ends[tp] - (done or 0)
        return total
    finally:
        await c.stop()


# ---------------------------------------------------------------- the real worker
@dataclass
class Run:
    worker: str
    db: str
    events: int
    seconds: float
    cpu_s: float
    pg_cpu_s: float
    startup_s: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def worker_env(a: argparse.Namespace, prefix: str, db: Db, node: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_REDIS_URL=a.redis, LC_KEY_PREFIX=prefix, LC_DATABASE_URL=db.url, LC_LOG_JSON="0", LC_LOG_LEVEL="WARNING",
               LC_SECRET="b" * 64, LC_NODE_ID=node, LC_LOG_PARTITIONS=str(a.partitions), LC_KAFKA_PARTITIONS=str(a.partitions))
    if a.batch:
        env["LC_WORKER_BATCH"] = str(a.batch)
    if a.kafka:
        env.update(LC_KAFKA_BOOTSTRAP=a.kafka, LC_KAFKA_IDEMPOTENT="0", LC_KAFKA_SESSION_TIMEOUT_MS="2000")
    return env


def start_worker(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # this checkout's code (python -m from its root), whatever tree the installed script points at
    return subprocess.Popen([sys.executable, "-m", "livecommerce.cli", "worker", name], env=env, cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start_spy(out: Path, pid: int) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` into ``out`` (collapsed stacks) until it gets SIGINT."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_worker(p: subprocess.Popen[bytes]) -> str:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    return err[-1500:]


async def run_worker(a: argparse.Namespace, name: str, db: Db, log: Log, redis: Any, keys: Keys, n: int, claims: int) -> Run:
    """Start the worker process, wait until it has acked all ``n`` events of its topic
    (Kafka: until SQL holds its ``claims`` exactly-once claims)."""
    topic, group = TOPIC[name], GROUP[name]
    t_start = time.monotonic()
    procs = [start_worker(name, worker_env(a, keys.prefix, db, f"bench-{name}-{i}")) for i in range(a.procs)]
    ps = [psutil.Process(p.pid) for p in procs]
    spy = start_spy(Path(a.py_spy) / f"{name}-{db.kind}.txt", procs[0].pid) if a.py_spy else None
    t_first: float | None = None
    cpu0 = pg0 = 0.0

    def cpu() -> float:
        return sum(t.user + t.system for t in (q.cpu_times() for q in ps))

    deadline = t_start + a.timeout
    try:
        while True:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"worker {name} exited {p.returncode}: {stop_worker(p)}")
            if isinstance(log, KafkaLog):  # Tansu's offsets are not a reliable lag: count what SQL has applied
                lag = claims - await applied_count(db, name)
            else:
                lag = await group_lag(log, redis, keys, topic, group)
            now = time.monotonic()
            if t_first is None and lag < claims:
                t_first = now
                cpu0, pg0 = cpu(), pg_cpu()
            if lag == 0 and t_first is not None:
                return Run(name, db.kind, n, now - t_first, cpu() - cpu0, pg_cpu() - pg0, t_first - t_start)
            if now > deadline:
                raise RuntimeError(f"worker {name} still {lag:,} events behind after {a.timeout} s")
            await asyncio.sleep(0.005 if t_first is None else 0.02)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        for p in procs:
            err = stop_worker(p)
            if "Traceback" in err:
                say(err)


# ---------------------------------------------------------------- the ceiling
async def ceiling(name: str, db: Db, events: Sequence[LogEvent], batch: int) -> float:
    """events/s of writing the same rows with the store's own bulk statements (the claims,
    then the worker's rows: ``INSERT .. SELECT unnest(..)`` on PostgreSQL, ``executemany``
    on SQLite), one transaction per batch, no log, no rules and no reads: what the database
    and the driver allow the worker at best on this machine, now."""
    store = SqlStore(db.url)
    try:
        t0 = time.perf_counter()
        for i in range(0, len(events), batch):
            chunk = events[i : i + batch]
            async with store.apply_batch(name, [e.id for e in chunk], now_ms=0) as (tx, _fresh):
                if name == "orders":
                    new = [e for e in chunk if e.type == "order.reserved"]
                    moves = {e.data["order_id"]: e for e in chunk if e.type != "order.reserved"}
                    await tx._insert_many(orders, [_order_row(e) for e in new])
                    if moves:
                        await tx._update_orders({oid: ("reserved", _as_order(e)) for oid, e in moves.items()})
                    await tx._insert_many(order_events, [
                        {"event_id": e.id, "order_id": e.data["order_id"], "from_state": None if e.type == "order.reserved" else "reserved",
                         "to_state": e.type.split(".")[1], "refund_qty": 0, "refund_amount": 0, "reason": e.data.get("reason"),
                         "ts_ms": e.ts} for e in chunk])
                elif name == "wallet":
                    await tx.add_wallet_entries([(e.data["user"], -int(e.data["value"]) if e.type == "gift.sent" else int(e.data["amount"]),
                                                  e.type, e.id, e.ts) for e in chunk])
                elif name == "earnings":
                    await earnings_sql.add_rows(tx.conn, [accrual(e.id, e.data, host=None, bp=5000, ts_ms=e.ts) for e in chunk
                                                          if e.type == "gift.sent"])
                else:
                    rows: list[tuple[str, PointsRole, int, str, str, int]] = []
                    for e in chunk:
                        if e.type == "gift.sent":
                            v = int(e.data["value"])
                            rows += [(e.data["user"], "viewer", v, "gift.sent", e.id, e.ts), (e.data["host"], "host", v, "gift.received", e.id, e.ts)]
                    await tx.add_points_entries(rows)
        return len(events) / (time.perf_counter() - t0)
    finally:
        await store.close()


def _as_order(e: LogEvent) -> Order:
    d = e.data
    state: OrderState = "paid" if e.type == "order.paid" else "cancelled"
    return Order(d["order_id"], d["sale_id"], d["room_id"], d["user_id"], int(d["qty"]), int(d["unit_price"]),
                 int(d["qty"]) * int(d["unit_price"]), state, d["pay_by_ms"], d["pay_by_ms"] - d["payment_window_s"] * 1000, e.ts,
                 request_id=d["request_id"])


def _order_row(e: LogEvent) -> dict[str, Any]:
    d = e.data
    amount = int(d["qty"]) * int(d["unit_price"])
    return {"id": d["order_id"], "sale_id": d["sale_id"], "room_id": d["room_id"], "user_id": d["user_id"], "qty": d["qty"],
            "unit_price": d["unit_price"], "amount": amount, "discount": 0, "coupon_id": None, "state": "reserved",
            "pay_by_ms": d["pay_by_ms"], "refunded_qty": 0, "refunded_amount": 0, "request_id": d["request_id"],
            "created_ms": d["reserved_ms"], "updated_ms": d["reserved_ms"]}


# ---------------------------------------------------------------- checks
async def check(name: str, db: Db, events: Sequence[LogEvent], feed: GiftFeed | None) -> list[str]:
    """What SQL must hold after the drain; returns the problems found (empty: exactly once)."""
    store = SqlStore(db.url)
    bad: list[str] = []
    try:
        async with store.read() as tx:
            c = tx.conn
            if name == "orders":
                want: dict[str, str] = {}
                for e in events:
                    want[e.data["order_id"]] = {"order.reserved": "reserved", "order.paid": "paid"}.get(e.type, "cancelled")
                got = {r.id: r.state for r in await c.execute(select(orders.c.id, orders.c.state))}
                if got != want:
                    bad.append(f"orders: {sum(1 for k in want if got.get(k) != want[k])} of {len(want)} not in their final state")
                hist = int((await c.execute(select(func.count()).select_from(order_events))).scalar_one())
                if hist != len(events):
                    bad.append(f"order_events: {hist} rows for {len(events)} events")
            elif name == "wallet" and feed is not None:
                got = {r[0]: int(r[1]) for r in await c.execute(select(wallet_ledger.c.user_id, func.sum(wallet_ledger.c.delta))
                                                                  .group_by(wallet_ledger.c.user_id))}
                if got != dict(feed.wallet):
                    bad.append(f"wallet: {sum(1 for k in feed.wallet if got.get(k) != feed.wallet[k])} ledgers differ from the events")
            elif name == "points" and feed is not None:
                rows = await c.execute(select(points_ledger.c.user_id, points_ledger.c.role, func.sum(points_ledger.c.delta))
                                       .group_by(points_ledger.c.user_id, points_ledger.c.role))
                got_v: dict[str, int] = {}
                got_h: dict[str, int] = {}
                for u, role, s in rows:
                    (got_v if role == "viewer" else got_h)[u] = int(s)
                if got_v != dict(feed.viewer_points) or got_h != dict(feed.host_points):
                    bad.append("points: balances differ from the events")
            elif name == "earnings" and feed is not None:
                got = {r[0]: int(r[1]) for r in await c.execute(select(host_earnings.c.host_id, func.sum(host_earnings.c.amount))
                                                                  .group_by(host_earnings.c.host_id))}
                if got != dict(feed.host_earnings):
                    bad.append("earnings: the hosts' ledgers differ from the gifts' value times the split")
        if name == "points" and feed is not None:  # what the store answers (the balance reads)
            some = sorted(feed.host_points)[:5]
            got_b = await store.points_balances(some)
            if any(got_b[h]["host"] != feed.host_points[h] for h in some):
                bad.append("points: points_balances differ from the ledger")
    finally:
        await store.close()
    return bad


# ---------------------------------------------------------------- storm
def ascii_curve(samples: list[tuple[float, dict[str, int]]], every: float, width: int = 50) -> list[str]:
    """The lag of each worker over time, one row per ``every`` seconds."""
    names = sorted({k for _, lags in samples for k in lags})
    top = max([1] + [v for _, lags in samples for v in lags.values()])
    lines = [f"  lag (events not yet applied), full width = {top:,}; " + ", ".join(f"{k[0]} = {k}" for k in names)]
    shown = -every
    for t, lags in samples:
        if t - shown < every - 1e-6:
            continue
        shown = t
        for k in names:
            lines.append(f"  {t:5.0f}s {k[0]} |{'#' * round(width * lags.get(k, 0) / top):<{width}}| {lags.get(k, 0):,}")
    return lines


async def storm(a: argparse.Namespace, kind: str, tmp: Path, redis: Any) -> dict[str, Any]:
    db = await fresh_db(kind, a.pg_url, tmp)
    keys = Keys(f"bw{uuid.uuid4().hex[:8]}")
    s = Settings.from_env({}, redis_url=a.redis, key_prefix=keys.prefix, database_url=db.url, kafka_bootstrap=a.kafka or "",
                          kafka_idempotent=False, log_partitions=a.partitions, kafka_partitions=a.partitions)
    log = open_log(s, redis)
    feed = GiftFeed(a.users, a.hosts)
    names = [w for w in a.storm_workers.split(",") if w]
    procs: list[subprocess.Popen[bytes]] = []
    samples: list[tuple[float, dict[str, int]]] = []
    out: dict[str, Any] = {"db": kind, "rate": a.rate, "seconds": a.storm, "workers": names}
    try:
        await fill(log, feed.topups(int(time.time() * 1000)))
        for w in names:
            procs.append(start_worker(w, worker_env(a, keys.prefix, db, f"storm-{w}")))
        while any([await group_lag(log, redis, keys, "gifts", GROUP[w]) for w in names]):  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.1)  # the top-ups applied: the workers are up
        cpu0 = {w: sum(psutil.Process(p.pid).cpu_times()[:2]) for w, p in zip(names, procs, strict=True)}
        pg0 = pg_cpu()
        t0 = time.monotonic()
        tick = 0.1
        per_tick = max(1, round(a.rate * tick))
        sent = 0
        next_sample = next_print = 1.0
        behind_ticks = 0
        while (el := time.monotonic() - t0) < a.storm:
            due = int(el / tick) + 1
            while sent < due * per_tick and sent < a.rate * a.storm:
                await log.append_many(feed.gifts(per_tick, int(time.time() * 1000)))
                sent += per_tick
            if sent < int((time.monotonic() - t0) / tick) * per_tick:
                behind_ticks += 1
            if el >= next_sample:
                lags = {w: await group_lag(log, redis, keys, "gifts", GROUP[w]) for w in names}
                samples.append((el, lags))
                if el >= next_print:
                    say(f"  {el:5.1f}s fed {sent:>8,}  " + "  ".join(f"{w} lag {v:>8,}" for w, v in lags.items()))
                    next_print += a.every
                next_sample += 1.0
            await asyncio.sleep(max(0.0, t0 + due * tick - time.monotonic()))
        fed_s = time.monotonic() - t0
        out["fed"] = sent
        out["fed_per_s"] = round(sent / fed_s)
        t1 = time.monotonic()
        while time.monotonic() - t1 < a.catch_up:
            lags = {w: await group_lag(log, redis, keys, "gifts", GROUP[w]) for w in names}
            if not any(lags.values()):
                break
            if (el := time.monotonic() - t0) >= next_sample:  # the curve goes on while they catch up
                samples.append((el, lags))
                next_sample += 1.0
            await asyncio.sleep(0.1)
        out["catch_up_s"] = round(time.monotonic() - t1, 2)
        out["lag_left"] = {w: await group_lag(log, redis, keys, "gifts", GROUP[w]) for w in names}
        out["cpu_s"] = {w: round(sum(psutil.Process(p.pid).cpu_times()[:2]) - cpu0[w], 1) for w, p in zip(names, procs, strict=True)}
        out["pg_cpu_s"] = round(pg_cpu() - pg0, 1) if kind == "postgresql" else None
        out["lag_curve"] = [{"t": round(t, 1), **lags} for t, lags in samples]
        out["max_lag"] = {w: max([lags.get(w, 0) for _, lags in samples] or [0]) for w in names}
        for line in ascii_curve(samples, a.every):
            say(line)
    finally:
        for p in procs:
            err = stop_worker(p)
            if "Traceback" in err:
                say(err)
    problems: list[str] = []
    out["checked"] = not any(out.get("lag_left", {1: 1}).values())
    if out["checked"]:  # everything applied: every ledger must equal what the events say
        for w in names:
            problems += await check(w, db, [], feed)
    out["problems"] = problems
    await log.close()
    async for k in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
        await redis.delete(k)
    if db.cleanup:
        await db.cleanup()
    return out


async def rush(a: argparse.Namespace, kind: str, tmp: Path, redis: Any) -> dict[str, Any]:
    """The orders worker idle and running; then a rush: ``--rush`` reservations appended as
    fast as this process can (as the gateways' group commits do), then their payments and
    time-outs. Reported: how long after the last reservation SQL holds every order, and
    after the last payment every payment."""
    db = await fresh_db(kind, a.pg_url, tmp)
    keys = Keys(f"bw{uuid.uuid4().hex[:8]}")
    s = Settings.from_env({}, redis_url=a.redis, key_prefix=keys.prefix, database_url=db.url, kafka_bootstrap=a.kafka or "",
                          kafka_idempotent=False, log_partitions=a.partitions, kafka_partitions=a.partitions)
    log = open_log(s, redis)
    events = order_events_for(2 * a.rush, sale="rush" + uuid.uuid4().hex[:6], now=int(time.time() * 1000))
    reserves, moves = events[: a.rush], events[a.rush :]
    p = start_worker("orders", worker_env(a, keys.prefix, db, "rush-orders"))
    out: dict[str, Any] = {"db": kind, "reservations": a.rush}
    try:
        await log.append_many(reserves[:1])  # the worker is up once it applied this one
        while await group_lag(log, redis, keys, "orders", "orders"):  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await fill(log, reserves[1:], chunk=500)
        t_res = time.monotonic()
        while await group_lag(log, redis, keys, "orders", "orders"):  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.01)
        t_sql = time.monotonic()
        await fill(log, moves, chunk=500)
        t_moves = time.monotonic()
        while await group_lag(log, redis, keys, "orders", "orders"):  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.01)
        t_done = time.monotonic()
        out |= {"appended_per_s": round((a.rush - 1) / (t_res - t0)), "sql_after_last_reservation_s": round(t_sql - t_res, 2),
                "reservations_in_sql_per_s": round((a.rush - 1) / (t_sql - t0)), "sql_after_last_payment_s": round(t_done - t_moves, 2),
                "settled_per_s": round(len(moves) / (t_done - t_sql))}
    finally:
        err = stop_worker(p)
        if "Traceback" in err:
            say(err)
    out["problems"] = await check("orders", db, events, None)
    await log.close()
    async for k in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
        await redis.delete(k)
    if db.cleanup:
        await db.cleanup()
    say(f"rush {kind}: {a.rush:,} reservations appended at {out.get('appended_per_s', 0):,}/s; all in SQL "
        f"{out.get('sql_after_last_reservation_s')} s after the last one ({out.get('reservations_in_sql_per_s', 0):,}/s); "
        f"{len(moves):,} payments and time-outs settled {out.get('sql_after_last_payment_s')} s after the last one "
        f"({out.get('settled_per_s', 0):,}/s)" + ("; exactly once" if not out["problems"] else f"; PROBLEMS {out['problems']}"))
    return out


# ---------------------------------------------------------------- main
async def one(a: argparse.Namespace, name: str, kind: str, tmp: Path, redis: Any) -> dict[str, Any]:
    keys = Keys(f"bw{uuid.uuid4().hex[:8]}")
    db = await fresh_db(kind, a.pg_url, tmp)
    ceil_db = await fresh_db(kind, a.pg_url, tmp)
    s = Settings.from_env({}, redis_url=a.redis, key_prefix=keys.prefix, database_url=db.url, kafka_bootstrap=a.kafka or "",
                          kafka_idempotent=False, log_partitions=a.partitions, kafka_partitions=a.partitions)
    log = open_log(s, redis)
    now = int(time.time() * 1000)
    feed: GiftFeed | None = None
    if name == "orders":
        events = order_events_for(a.events, sale="bs" + uuid.uuid4().hex[:6], now=now)
    else:
        feed = GiftFeed(a.users, a.hosts)
        events = feed.topups(now) + feed.gifts(a.events - a.users, now)
    try:
        await fill(log, events)
        c = await ceiling(name, ceil_db, events, a.batch or Settings().worker_batch)
        claims = sum(1 for e in events if name not in ("points", "earnings") or e.type == "gift.sent")  # only what awards or accrues
        r = await run_worker(a, name, db, log, redis, keys, len(events), claims)
        problems = await check(name, db, events, feed)
    finally:
        await log.close()
        async for k in redis.scan_iter(match=f"{keys.prefix}:*", count=1000):
            await redis.delete(k)
        for d in (db, ceil_db):
            if d.cleanup:
                await d.cleanup()
    row = {"worker": name, "db": kind, "procs": a.procs, "partitions": a.partitions, "events": len(events), "seconds": round(r.seconds, 2), "events_per_s": round(r.rate),
           "goal": GOAL, "ceiling_per_s": round(c), "ratio_to_ceiling": round(r.rate / c, 2) if c else None,
           "worker_cpu_us_per_event": round(r.cpu_s / len(events) * 1e6, 1),
           "pg_cpu_us_per_event": round(r.pg_cpu_s / len(events) * 1e6, 1) if kind == "postgresql" else None,
           "worker_startup_s": round(r.startup_s, 2), "problems": problems}
    say(f"{name:>7} {kind:>10} x{a.procs}: {row['events_per_s']:>7,} events/s (goal {GOAL:,}; ceiling {row['ceiling_per_s']:,}/s, "
        f"ratio {row['ratio_to_ceiling']}); worker CPU {row['worker_cpu_us_per_event']} us/event"
        + (f", PostgreSQL CPU {row['pg_cpu_us_per_event']} us/event" if kind == "postgresql" else "")
        + ("  EXACTLY ONCE" if not problems else f"  PROBLEMS: {problems}"))
    return row


async def main(a: argparse.Namespace) -> int:
    la0 = loadavg()
    say(f"loadavg before: {la0}")
    out: dict[str, Any] = {"args": vars(a), "loadavg_before": la0, "drain": [], "storm": [], "rush": []}
    redis = connect(a.redis)
    tmp = Path(tempfile.mkdtemp(prefix="bench_workers_"))
    try:
        for kind in [d for d in a.db.split(",") if d]:
            for name in [w for w in a.workers.split(",") if w]:
                out["drain"].append(await one(a, name, kind, tmp, redis))
            if a.rush:
                out["rush"].append(await rush(a, kind, tmp, redis))
            if a.storm:
                say(f"storm on {kind}: {a.rate:,} gift events/s for {a.storm} s, workers {a.storm_workers}")
                out["storm"].append(await storm(a, kind, tmp, redis))
    finally:
        await redis.aclose()
        shutil.rmtree(tmp, ignore_errors=True)  # the SQLite files
    out["loadavg_after"] = loadavg()
    say("")
    say("| worker | database | events | events/s | goal | ceiling (same rows, bulk) | ratio | worker CPU/event | PostgreSQL CPU/event |")
    say("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in out["drain"]:
        pgc = f"{r['pg_cpu_us_per_event']} us" if r["pg_cpu_us_per_event"] is not None else "-"
        say(f"| {r['worker']} | {r['db']} | {r['events']:,} | {r['events_per_s']:,} | {GOAL:,} | {r['ceiling_per_s']:,} | "
            f"{r['ratio_to_ceiling']} | {r['worker_cpu_us_per_event']} us | {pgc} |")
    for st in out["storm"]:
        verdict = (f"problems {st['problems']}" if st.get("problems") else "every ledger and kept balance exact") if st.get("checked") \
            else "ledgers not checked (the workers had not caught up)"
        say(f"storm {st['db']}: fed {st.get('fed', 0):,} at {st.get('fed_per_s', 0):,}/s; max lag {st.get('max_lag')}; "
            f"caught up {st.get('catch_up_s')} s after the feed stopped; left {st.get('lag_left')}; CPU s {st.get('cpu_s')}; {verdict}")
    for r in out["rush"]:
        say(f"rush {r['db']}: SQL holds every order {r.get('sql_after_last_reservation_s')} s after the last of {r['reservations']:,} "
            f"reservations ({r.get('reservations_in_sql_per_s', 0):,}/s), every payment {r.get('sql_after_last_payment_s')} s after the last")
    say(f"loadavg after: {out['loadavg_after']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))  # noqa: ASYNC240 (the run is over)
    bad = [r for r in out["drain"] if r["problems"]] + [s for s in out["storm"] if s.get("problems")] + [r for r in out["rush"] if r["problems"]]
    return 1 if bad else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", default=os.environ.get("LC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--pg-url", default=os.environ.get("LC_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"))
    p.add_argument("--kafka", default="", help="a Kafka bootstrap (host:port): the log is Kafka instead of Redis Streams")
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--workers", default="orders,wallet,points")
    p.add_argument("--events", type=int, default=20_000, help="events per worker and database")
    p.add_argument("--procs", type=int, default=1, help="worker processes of each kind in the drain (one group; use --partitions >= procs)")
    p.add_argument("--partitions", type=int, default=1, help="log partitions per topic (LC_LOG_PARTITIONS / LC_KAFKA_PARTITIONS)")
    p.add_argument("--batch", type=int, default=0, help="LC_WORKER_BATCH for the workers (0: their default) and the ceiling's batch")
    p.add_argument("--users", type=int, default=2000, help="gift senders")
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--timeout", type=float, default=120.0, help="give a drain up to this many seconds")
    p.add_argument("--storm", type=int, default=0, help="seconds of sustained gift feed (0: none)")
    p.add_argument("--rate", type=int, default=10_000, help="gift events/s fed during the storm")
    p.add_argument("--storm-workers", default="wallet,points")
    p.add_argument("--catch-up", type=float, default=60.0, help="wait up to this long for the workers after the feed")
    p.add_argument("--every", type=float, default=5.0, help="seconds between the rows of the printed lag curve")
    p.add_argument("--rush", type=int, default=0, help="reservations of a rush appended at once while the orders worker runs (0: none)")
    p.add_argument("--json", default="", help="write the figures here")
    p.add_argument("--py-spy", default="", help="record each drained worker with py-spy into this directory (collapsed stacks)")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
