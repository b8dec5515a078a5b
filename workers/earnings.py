"""The host earnings worker: ``gift.sent`` and ``gift.reversed`` into ``host_earnings``.

Consumes topic ``gifts`` as group ``earnings``, ``LC_WORKER_BATCH`` events at a time. Each
gift becomes one accrual row for the room's host at the split of this worker's settings
(``LC_HOST_GIFT_SHARE``, recorded on the row); each ``gift.reversed`` one reversal row
(:mod:`livecommerce.earnings`). A batch is one transaction: ``store.apply_batch("earnings",
ids)`` claims each event id once and the rows commit with the claims, so a batch redelivered
after a crash (a ``kill -9`` before the ack, a rebalance, a duplicate append from the wallet
outbox sweeper) writes nothing twice; a batch that fails is halved until its bad event is
alone (:func:`~workers.runner.apply_halving`).

The host of a gift is the event's ``host``; a gift that names none (older events) takes the
room's host from ``{room:ID}:meta``, looked up once per room per batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livecommerce import earnings_sql
from livecommerce.config import Settings
from livecommerce.earnings import TOPIC, EarningsRow, needs_host, row_for, share_bp
from livecommerce.keys import Keys
from livecommerce.log import Log, LogEvent
from livecommerce.rooms_redis import room_host
from livecommerce.store_sql import SqlStore
from workers.runner import apply_halving, freeze_heap, run_consumer
from workers.wiring import Engines

log = logging.getLogger("livecommerce.workers.earnings")

CONSUMER = "earnings"  # the store's exactly-once consumer name and the log group


class EarningsLedger:
    """The batch handler: one ledger row per gift and per reversal, exactly once."""

    def __init__(self, store: SqlStore, redis: Any, keys: Keys, *, share: float) -> None:
        """Raises:
        ConfigError: ``share`` is not in 0..1.
        """
        self.store = store
        self.redis = redis
        self.keys = keys
        self.share_bp = share_bp(share)
        self.written = 0

    async def __call__(self, events: list[LogEvent]) -> None:
        """Raises:
        Unavailable: SQL or Redis unreachable (the batch comes back).
        BatchFailed: some events applied, others failed (see :mod:`workers.runner`).
        """
        hosts: dict[str, str | None] = {}
        await apply_halving(events, lambda part: self._apply(part, hosts))

    async def _apply(self, events: list[LogEvent], hosts: dict[str, str | None]) -> None:
        rows: list[EarningsRow] = []
        for e in events:
            room = needs_host(e.type, e.data)
            if room is not None and room not in hosts:
                hosts[room] = await room_host(self.redis, self.keys, room)
            row = row_for(e.id, e.type, e.data, host=hosts.get(room) if room else None, bp=self.share_bp, ts_ms=e.ts)
            if row is not None:
                rows.append(row)
        if not rows:
            return
        async with self.store.apply_batch(CONSUMER, [r.event_id for r in rows]) as (tx, fresh):
            new = []
            for r in rows:
                if r.event_id in fresh:
                    fresh.discard(r.event_id)  # an id twice in one batch is written once
                    new.append(r)
            written = await earnings_sql.add_rows(tx.conn, new)
        self.written += written


async def drain(log_: Log, ledger: EarningsLedger, *, name: str = "earnings-1", fetch_timeout_ms: int = 500,
                batch: int = 1000) -> int:
    """Burst mode: apply what the log holds now; return the number of events handled."""
    return await run_consumer(log_, TOPIC, CONSUMER, name, ledger, burst=True, fetch_timeout_ms=fetch_timeout_ms, batch=batch,
                              prefetch=True)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Consume ``gifts`` until ``stop`` is set."""
    async with Engines(settings) as e:
        ledger = EarningsLedger(e.store, e.redis, e.keys, share=settings.host_gift_share)
        log.info("earnings.worker_started", extra={"worker": settings.node_id, "share_bp": ledger.share_bp})
        freeze_heap()
        await run_consumer(e.log, TOPIC, CONSUMER, settings.node_id, ledger, stop=stop, batch=settings.worker_batch, prefetch=True)
