"""A log worker process for the crash tests in ``tests/test_runner.py``.

``python -m tests.log_worker_proc --backend redis|kafka --url URL --prefix P --db FILE``
consumes ``orders`` as member ``--name`` of group ``settle`` through
:func:`workers.runner.run_consumer`. Its handler stores each event id in SQLite with
``INSERT OR IGNORE`` (the effect, idempotent on the event id) and logs every delivery, prints
``stored <n>`` once the transaction is committed, and from batch ``--hang-from`` on sleeps
``--hang-s`` seconds before returning, that is, before the runner acks: the window in which
the test kills it with SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from livecommerce.keys import Keys
from livecommerce.log import Log, LogEvent
from livecommerce.log_kafka import KafkaLog
from livecommerce.log_redis import RedisLog
from livecommerce.redis_conn import connect
from workers.runner import run_consumer

TOPIC, GROUP = "orders", "settle"
CLAIM_IDLE_MS = 300
KAFKA_TIMING: dict[str, Any] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS applied (event_id TEXT PRIMARY KEY, worker TEXT NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS deliveries (event_id TEXT NOT NULL, worker TEXT NOT NULL)")
    return db


def store_handler(
    db: sqlite3.Connection, worker: str, *, hang_from: int | None = None, hang_s: float = 0.0
) -> Callable[[list[LogEvent]], Awaitable[None]]:
    """The effect of a batch: one transaction, idempotent on the event id."""
    batches = 0

    async def handle(events: list[LogEvent]) -> None:
        nonlocal batches
        db.execute("BEGIN IMMEDIATE")
        for e in events:
            db.execute("INSERT OR IGNORE INTO applied (event_id, worker) VALUES (?, ?)", (e.id, worker))
            db.execute("INSERT INTO deliveries (event_id, worker) VALUES (?, ?)", (e.id, worker))
        db.execute("COMMIT")
        print(f"stored {len(events)} {' '.join(e.id for e in events)}", flush=True)
        if hang_from is not None and batches >= hang_from:
            await asyncio.sleep(hang_s)  # effect stored, not acked yet
        batches += 1

    return handle


def open_test_log(backend: str, url: str, prefix: str) -> Log:
    """The log the test and this process share: 4 partitions, short timings."""
    if backend == "kafka":
        return KafkaLog(url, prefix=prefix, partitions=4, idempotent=False, **KAFKA_TIMING)
    return RedisLog(connect(url), Keys(prefix), partitions=4, claim_idle_ms=CLAIM_IDLE_MS, owns_client=True)


async def main(args: argparse.Namespace) -> None:
    log = open_test_log(args.backend, args.url, args.prefix)
    db = open_db(args.db)
    try:
        handle = store_handler(db, args.name, hang_from=args.hang_from, hang_s=args.hang_s)
        await run_consumer(log, TOPIC, GROUP, args.name, handle, burst=True, batch=args.batch)
    finally:
        await log.close()
        db.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=["redis", "kafka"], required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--name", default="doomed")
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--hang-from", type=int, default=1)
    p.add_argument("--hang-s", type=float, default=60.0)
    asyncio.run(main(p.parse_args()))
