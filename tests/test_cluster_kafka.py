"""Kafka at scale: real ``livecommerce worker orders`` processes in one consumer group split
the partitions of the ``orders`` topic (keyed by order id); members join, one is killed with
SIGKILL, one leaves with SIGTERM, while events keep coming. Every event is applied once:
no order lost, no transition applied twice. Tansu broker (``kafka_bootstrap``), SQL on
PostgreSQL when ``LC_TEST_DATABASE_URL`` is set (else SQLite in WAL mode)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from livecommerce import migrations
from livecommerce.log_kafka import KafkaLog
from livecommerce.store_sql import SqlStore, make_engine
from tests.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.kafka]

PARTITIONS = 6
ORDERS = 240


@pytest.fixture
async def db_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema (``LC_TEST_DATABASE_URL``), else an SQLite file."""
    base = os.environ.get("LC_TEST_DATABASE_URL", "")
    if not base:
        url = f"sqlite+aiosqlite:///{tmp_path}/kafka.db"
        await migrations.upgrade(url)
        yield url
        return
    schema = f"lct_{uuid.uuid4().hex[:12]}"
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    await migrations.upgrade(url)
    yield url
    dsn = base.replace("postgresql+asyncpg", "postgresql").split("?")[0]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class Worker:
    """One ``livecommerce worker orders`` process."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._out = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "livecommerce.cli", "worker", "orders", "--node-id", name],
                                     stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out

    def assignments(self) -> list[list[int]]:
        return [line["partitions"] for line in self.lines() if line.get("event") == "log.kafka.assigned"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._out.close()
        return rc


def order_event(i: int, kind: str, sale: str) -> tuple[str, str, dict[str, Any], str]:
    oid = f"{sale}.o{i:04d}"
    d = {"order_id": oid, "sale_id": sale, "room_id": "shop", "user_id": f"u{i}", "qty": 1, "unit_price": 100,
         "pay_by_ms": 4_000_000_000_000, "payment_window_s": 900, "request_id": f"rq{i}",
         "reserved_ms": 4_000_000_000_000 - 900_000, "amount": 100, "paid_ms": 1, "cancelled_ms": 1, "reason": "buyer"}
    return oid, f"order.{kind}", d, f"{oid}:{kind}"


def script(sale: str) -> list[tuple[str, str, dict[str, Any], str]]:
    """Every order is reserved; a third are then paid and a third cancelled (later in the stream)."""
    out = []
    for i in range(ORDERS):
        out.append(order_event(i, "reserved", sale))
        if i >= 20:
            j = i - 20
            if j % 3 == 0:
                out.append(order_event(j, "paid", sale))
            elif j % 3 == 1:
                out.append(order_event(j, "cancelled", sale))
    for j in range(ORDERS - 20, ORDERS):
        if j % 3 == 0:
            out.append(order_event(j, "paid", sale))
        elif j % 3 == 1:
            out.append(order_event(j, "cancelled", sale))
    return out


async def applied_count(url: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            n = await conn.scalar(text("SELECT count(*) FROM applied_events WHERE consumer = 'orders'"))
    finally:
        await engine.dispose()
    return int(n or 0)


async def test_workers_joining_dying_and_leaving_apply_every_order_event_once(
    kafka_bootstrap: str, redis_url: str, prefix: str, db_url: str, tmp_path: Path
) -> None:
    sale = f"s{uuid.uuid4().hex[:6]}"
    events = script(sale)
    log = KafkaLog(kafka_bootstrap, prefix=prefix, partitions=PARTITIONS, idempotent=False)
    await log.ensure_topic("orders")
    env = {
        **os.environ,
        "LC_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LC_KAFKA_IDEMPOTENT": "0",
        "LC_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "LC_KAFKA_PARTITIONS": str(PARTITIONS),
        "LC_REDIS_URL": redis_url,
        "LC_KEY_PREFIX": prefix,
        "LC_DATABASE_URL": db_url,
        "LC_LOG_JSON": "1",
        "LC_LOG_LEVEL": "INFO",
        "LC_SECRET": "kafka-test-secret-" + uuid.uuid4().hex,
    }
    workers: dict[str, Worker] = {}
    sent = 0

    async def produce(upto: int, per_s: float = 150.0) -> None:
        nonlocal sent
        while sent < upto:
            key, kind, d, eid = events[sent]
            await log.append("orders", key, kind, d, event_id=eid)
            sent += 1
            await asyncio.sleep(1 / per_s)  # pacing: a steady stream while members come and go

    try:
        workers["wA"] = Worker("wA", env, tmp_path)
        await produce(len(events) // 5)
        await wait_until(lambda: applied_count(db_url), timeout=30, interval=0.2, what="worker A to apply something")
        workers["wB"] = Worker("wB", env, tmp_path)
        workers["wC"] = Worker("wC", env, tmp_path)
        joined = asyncio.create_task(wait_until(lambda: (workers["wB"].assignments(), workers["wC"].assignments()),
                                                until=all, timeout=30, interval=0.2, what="B and C to get partitions"))
        await produce(len(events) * 2 // 5)
        await joined
        # A dies in the middle of the stream: its partitions move after the session timeout,
        # from the last committed offset (effects after it are applied again: idempotent)
        workers["wA"].stop(signal.SIGKILL)
        await produce(len(events) * 3 // 5)
        # B leaves cleanly
        assert workers["wB"].stop(signal.SIGTERM) == 0
        await produce(len(events))
        await wait_until(lambda: applied_count(db_url), until=lambda n: n == len(events), timeout=60, interval=0.2,
                         what="every event applied")
    finally:
        for w in workers.values():
            w.stop()
        await log.close()

    # partitions were split: every member owned some; C ended with all of them
    owned = {name: w.assignments() for name, w in workers.items()}
    assert all(any(a for a in owned[n]) for n in owned), owned
    assert len(owned["wA"][-1]) < PARTITIONS and len(owned["wB"][-1]) < PARTITIONS, owned
    assert sorted(owned["wC"][-1]) == list(range(PARTITIONS)), owned["wC"]
    # every event once: orders, states and per-order histories
    assert await applied_count(db_url) == len(events)
    store = SqlStore(db_url)
    try:
        orders = await store.list_orders(sale_id=sale, limit=1000)
        assert len(orders) == ORDERS
        by_id = {o.id: o for o in orders}
        for i in range(ORDERS):
            oid = f"{sale}.o{i:04d}"
            want = ["reserved"] + (["paid"] if i % 3 == 0 else ["cancelled"] if i % 3 == 1 else [])
            assert by_id[oid].state == want[-1], (oid, by_id[oid].state)
            hist = [h.to_state for h in await store.order_history(oid)]
            assert hist == want, (oid, hist)
    finally:
        await store.close()

