"""The real ``livecommerce worker orders|wallet|points|earnings`` processes, killed with SIGKILL while
a batch's transaction is open, then replaced by another member of the group: nothing is
lost and nothing is applied twice, on SQLite and PostgreSQL.

"While a batch's transaction is open" is observed, not hoped for: the test freezes the worker
(SIGSTOP) and kills it when the database says it holds its write transaction (SQLite: a ``BEGIN IMMEDIATE``
of the test is refused as locked; PostgreSQL: ``pg_stat_activity`` shows the worker's
connection inside a transaction), after at least one batch committed. The worker runs with
batches of ``LC_WORKER_BATCH=300`` so the stream is many batches long.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from livecommerce.config import Settings
from livecommerce.keys import Keys
from livecommerce.log import LogEvent, new_event
from livecommerce.log_redis import RedisLog
from livecommerce.migrations import upgrade
from livecommerce.schema import (
    applied_events,
    host_earnings,
    order_events,
    orders,
    points_balances,
    points_ledger,
    wallet_ledger,
)
from livecommerce.store_sql import SqlStore
from tests.waiting import wait_until

NOW = 1_700_000_000_000
ORDERS = 3000  # 6,000 order events
GIFTS = 6000
USERS = 50


def order_stream(wave: int = 0) -> list[LogEvent]:
    out, moves = [], []
    for i in range(ORDERS):
        oid = f"k1.{wave}.{i:05d}"
        d = {"order_id": oid, "sale_id": "k1", "room_id": "r", "user_id": f"u{i % USERS}", "qty": 1, "unit_price": 300,
             "pay_by_ms": NOW + 900_000, "payment_window_s": 900, "request_id": f"rq{i}", "reserved_ms": NOW}
        out.append(new_event("orders", oid, "order.reserved", d, f"{oid}:reserved", NOW))
        to = "paid" if i % 3 else "cancelled"
        extra = {"amount": 300, "discount": 0, "coupon_id": None} if to == "paid" else {"reason": "timeout"}
        moves.append(new_event("orders", oid, f"order.{to}", d | extra, f"{oid}:{to}", NOW + 1))
    return out + moves


def gift_stream(wave: int = 0) -> list[LogEvent]:
    out = [new_event("gifts", f"u{u}", "wallet.topup", {"user": f"u{u}", "amount": 10**6, "balance": 10**6, "idempotency_key": f"k{wave}",
                                                       "by": "ops"}, f"topup:u{u}:k{wave}", NOW) for u in range(USERS)]
    for i in range(GIFTS):
        u, h = f"u{i % USERS}", f"h{i % 3}"
        out.append(new_event("gifts", u, "gift.sent", {"user": u, "room": f"room-{h}", "host": h, "gift_id": "rose", "count": 1,
                                                       "price": 1 + i % 4, "value": 1 + i % 4}, f"gift{wave}.{i}", NOW))
    return out


class Db:
    """Whether the worker holds its write transaction right now, and plain counts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self.path = make_url(url).database or ""
        self.pg: asyncpg.Connection | None = None

    async def open(self) -> None:
        if not self.sqlite:
            dsn = make_url(self.url).set(drivername="postgresql").difference_update_query(["schema"]).render_as_string(hide_password=False)
            self.pg = await asyncpg.connect(dsn)

    async def close(self) -> None:
        if self.pg is not None:
            await self.pg.close()

    async def in_transaction(self, pid: int) -> bool:
        if self.sqlite:
            db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                return "locked" in str(exc)
            else:
                db.execute("ROLLBACK")
                return False
            finally:
                db.close()
        assert self.pg is not None
        try:
            ports = [c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr and c.raddr.port == 5432]
        except psutil.Error:
            return False
        if not ports:
            return False
        n = await self.pg.fetchval("SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY($1::int[]) AND xact_start IS NOT NULL",
                                   ports)
        return bool(n)


async def applied(url: str, consumer: str) -> int:
    store = SqlStore(url)
    try:
        async with store.read() as tx:
            q = select(func.count()).select_from(applied_events).where(applied_events.c.consumer == consumer)
            return int((await tx.conn.execute(q)).scalar_one())
    finally:
        await store.close()


def start(worker: str, env: dict[str, str], node: str) -> subprocess.Popen[bytes]:
    # this checkout's code (python -m from its root), not whichever tree the installed script points at
    return subprocess.Popen([sys.executable, "-m", "livecommerce.cli", "worker", worker], env={**env, "LC_NODE_ID": node},
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGCONT)  # in case a failed look left it frozen
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


async def check_exactly_once(worker: str, url: str, events: list[LogEvent]) -> None:
    store = SqlStore(url)
    try:
        async with store.read() as tx:
            c = tx.conn
            if worker == "orders":
                states = {r[0]: r[1] for r in await c.execute(select(orders.c.id, orders.c.state))}
                want = {e.data["order_id"]: e.type.split(".")[1] for e in events if e.type != "order.reserved"}
                assert states == want
                hist = [r[0] for r in await c.execute(select(order_events.c.event_id))]
                assert sorted(hist) == sorted(e.id for e in events)  # each event's history row once
            elif worker == "wallet":
                got = {r[0]: int(r[1]) for r in await c.execute(select(wallet_ledger.c.user_id, func.sum(wallet_ledger.c.delta))
                                                                  .group_by(wallet_ledger.c.user_id))}
                want_w: dict[str, int] = {}
                for e in events:
                    d = e.data
                    want_w[d["user"]] = want_w.get(d["user"], 0) + (int(d["amount"]) if e.type == "wallet.topup" else -int(d["value"]))
                assert got == want_w
                assert int((await c.execute(select(func.count()).select_from(wallet_ledger))).scalar_one()) == len(events)
            elif worker == "earnings":  # the hosts' share at the default split (0.5), each gift once
                got = {r[0]: int(r[1]) for r in await c.execute(select(host_earnings.c.host_id, func.sum(host_earnings.c.amount))
                                                                  .group_by(host_earnings.c.host_id))}
                want_e: dict[str, int] = {}
                for e in events:
                    if e.type == "gift.sent":
                        want_e[e.data["host"]] = want_e.get(e.data["host"], 0) + int(e.data["value"]) * 5000 // 10_000
                assert got == want_e
                gifts = sorted(r[0] for r in await c.execute(select(host_earnings.c.gift_event_id)))
                assert gifts == sorted(e.id for e in events if e.type == "gift.sent")
            else:
                sums = {(r[0], r[1]): int(r[2]) for r in await c.execute(
                    select(points_ledger.c.user_id, points_ledger.c.role, func.sum(points_ledger.c.delta))
                    .group_by(points_ledger.c.user_id, points_ledger.c.role))}
                kept = {(r[0], r[1]): int(r[2]) for r in await c.execute(
                    select(points_balances.c.user_id, points_balances.c.role, points_balances.c.balance))}
                want_p: dict[tuple[str, str], int] = {}
                for e in events:
                    if e.type == "gift.sent":
                        v = int(e.data["value"])
                        want_p[(e.data["user"], "viewer")] = want_p.get((e.data["user"], "viewer"), 0) + v
                        want_p[(e.data["host"], "host")] = want_p.get((e.data["host"], "host"), 0) + v
                assert sums == want_p and kept == want_p
                rows = int((await c.execute(select(func.count()).select_from(points_ledger))).scalar_one())
                assert rows == 2 * sum(1 for e in events if e.type == "gift.sent")
    finally:
        await store.close()


@pytest.mark.slow
@pytest.mark.parametrize("worker", ["orders", "wallet", "points", "earnings"])
async def test_a_worker_killed_inside_a_batch_transaction_loses_and_duplicates_nothing(
    worker: str, store_url: str, settings: Settings, redis: Any
) -> None:
    await upgrade(store_url)
    stream = order_stream if worker == "orders" else gift_stream
    log = RedisLog(redis, Keys(settings.key_prefix))
    events: list[LogEvent] = []
    waves = [0]

    async def append_wave() -> None:
        wave = stream(waves[0])
        waves[0] += 1
        for i in range(0, len(wave), 1000):
            await log.append_many(wave[i : i + 1000])
        events.extend(wave)

    def total() -> int:  # points and earnings claim only the events that award or accrue
        return sum(1 for e in events if worker not in ("points", "earnings") or e.type == "gift.sent")

    await append_wave()
    consumer = worker  # each worker's exactly-once consumer name is its own name
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=store_url, LC_LOG_JSON="0",
               LC_LOG_LEVEL="WARNING", LC_SECRET=settings.secret, LC_LOG_CLAIM_IDLE_MS="1000", LC_WORKER_BATCH="300")
    db = Db(store_url)
    await db.open()
    proc = start(worker, env, "k1")
    try:
        def alive() -> None:
            assert proc.poll() is None, f"the worker exited with {proc.returncode}"

        async def committed() -> int:
            alive()
            return await applied(store_url, consumer)

        await wait_until(committed, timeout=60, interval=0.01, what="the worker's first committed batch")
        # Look while the worker is frozen (SIGSTOP), so what the database says still holds when
        # the SIGKILL lands; not inside a transaction: let it run a moment and look again. A fast
        # worker may apply the whole stream between two looks: then the stream gets another wave.
        rng = random.Random(7)
        deadline = time.monotonic() + 90
        while True:
            alive()
            proc.send_signal(signal.SIGSTOP)
            if await db.in_transaction(proc.pid):
                break
            proc.send_signal(signal.SIGCONT)
            assert time.monotonic() < deadline, f"never saw the worker inside a batch's transaction ({await applied(store_url, consumer)} applied)"
            if await applied(store_url, consumer) >= total():
                await append_wave()
            await asyncio.sleep(rng.uniform(0, 0.004))
        proc.send_signal(signal.SIGKILL)  # while frozen: the transaction is still open
        assert proc.wait(10) == -signal.SIGKILL
        at_kill = await applied(store_url, consumer)
        assert 0 < at_kill < total(), f"the kill must land mid-stream ({at_kill} of {total()} applied)"
        proc = start(worker, env, "k2")  # another member takes over what k1 held (claimed once idle)
        await wait_until(lambda: applied(store_url, consumer), until=lambda n: n >= total(), timeout=120, interval=0.2,
                         what=f"all {total()} events applied after the kill")
    finally:
        stop(proc)
        await db.close()
        await log.close()
    assert await applied(store_url, consumer) == total()
    await check_exactly_once(worker, store_url, events)
