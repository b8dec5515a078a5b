"""``livecommerce worker retention``: keep the durable log, settled sales and SQLite's WAL from
growing forever (docs/retention.md). Every ``LC_RETENTION_INTERVAL_S`` (60 s):

* **log** (Redis Streams; Kafka's broker applies ``retention.ms`` itself): each stream is
  trimmed below the point every consumer group has passed and holds nothing pending, and at
  least ``LC_LOG_RETAIN_S`` old; entries older than ``LC_LOG_MAX_AGE_S`` go whatever the
  groups (a group that lagged so long is logged as having lost them). Before entries of
  ``orders``, ``gifts`` and ``activity`` go, the ones profiles fold are folded into
  ``profiles_base`` (exactly once), so ``livecommerce profiles rebuild`` loses nothing.
* **sales**: the most recent sales in SQL whose Redis keys still have no expiry are settled
  if they can be (ended, no hold unpaid): the orders worker does it for the sales it times
  out; this catches sales that left its active set before the rule existed.
* **SQLite**: ``PRAGMA wal_checkpoint(TRUNCATE)``, so the WAL file goes back to zero bytes.

Several retention workers may run: trimming, folding (claims) and settling are idempotent.
``run_once`` is the drain mode (tests, ``scripts/soak.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from livecommerce import clock
from livecommerce.checkout import Checkout
from livecommerce.config import Settings
from livecommerce.errors import LiveCommerceError
from livecommerce.log import Log
from livecommerce.profiles import TOPICS as PROFILE_TOPICS
from livecommerce.store_sql import SqlStore

from .profiles import BaseFolder
from .wiring import Engines

log = logging.getLogger("livecommerce.workers.retention")

SALES_SWEPT = 1000  # the most recent sales checked per round


@dataclass
class Report:
    """What one round did."""

    trimmed: dict[str, int] = field(default_factory=dict)  # topic -> entries removed
    folded: int = 0  # events folded into profiles_base
    settled: list[str] = field(default_factory=list)  # sales given their expiry
    wal: tuple[int, int, int] | None = None  # SQLite's (busy, wal pages, checkpointed)


class RetentionWorker:
    """Everything the worker holds; built from the settings (or given clients, in tests)."""

    def __init__(self, settings: Settings, *, redis: Any = None, durable: Log | None = None, store: SqlStore | None = None) -> None:
        self.s = settings
        self.engines = Engines(settings, redis=redis, durable=durable, store=store)
        self.keys = self.engines.keys
        self.redis = self.engines.redis
        self.log = self.engines.log
        self.store = self.engines.store
        self.checkout = Checkout(self.redis, self.keys, self.log, sale_retention_s=settings.sale_retention_s)
        self.sales = self.checkout.sales
        self.folder = BaseFolder(self.store, self.redis, self.keys, secret=settings.secret)

    async def trim_log(self, now_ms: int) -> dict[str, int]:
        """Trim every log stream (Redis Streams only); returns entries removed per topic.

        Raises:
            Unavailable: Redis or SQL unreachable (what was not trimmed waits for the next round).
        """
        trim = getattr(self.log, "trim", None)
        streams = getattr(self.log, "streams", None)
        if trim is None or streams is None:
            return {}  # Kafka: the broker's retention.ms
        out: dict[str, int] = {}
        for topic in sorted({t for t, _ in await streams()}):
            before = self.folder if topic in PROFILE_TOPICS else None
            out[topic] = await trim(topic, now_ms=now_ms, retain_ms=self.s.log_retain_s * 1000,
                                    max_age_ms=self.s.log_max_age_s * 1000, before=before)
        return out

    async def sweep_sales(self) -> list[str]:
        """Settle recent sales whose keys have no expiry yet (see the module docstring).

        Raises:
            Unavailable: Redis or SQL unreachable.
        """
        done: list[str] = []
        for rec in await self.store.list_sales(limit=SALES_SWEPT):
            sid = rec.sale.id
            if await self.sales.lifetime_left_ms(sid) != -1:  # gone (-2) or already given its expiry
                continue
            if await self.sales.settle(sid, self.s.sale_retention_s * 1000):
                await self.checkout.forget_active(sid)
                done.append(sid)
        return done

    async def run_once(self, now_ms: int | None = None) -> Report:
        """One round: log, sales, WAL. Each part runs even if another failed (logged).

        Raises:
            Unavailable: only if every part failed on it.
        """
        now = clock.now_ms() if now_ms is None else now_ms
        rep = Report()
        folded0 = self.folder.folded
        try:
            rep.trimmed = await self.trim_log(now)
        except LiveCommerceError as exc:
            log.warning("retention.trim_failed", extra={"err": exc.message})
        rep.folded = self.folder.folded - folded0
        try:
            rep.settled = await self.sweep_sales()
        except LiveCommerceError as exc:
            log.warning("retention.sweep_failed", extra={"err": exc.message})
        try:
            rep.wal = await self.store.checkpoint()
        except LiveCommerceError as exc:
            log.warning("retention.checkpoint_failed", extra={"err": exc.message})
        if any(rep.trimmed.values()) or rep.settled or rep.folded:
            log.info("retention.round", extra={"trimmed": rep.trimmed, "folded": rep.folded, "settled": len(rep.settled),
                                               "wal": rep.wal})
        return rep

    async def close(self) -> None:
        await self.engines.close()


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """A round every ``LC_RETENTION_INTERVAL_S`` until ``stop`` is set."""
    w = RetentionWorker(settings)
    await w.store.check_schema()
    log.info("worker.started", extra={"worker": "retention", "node": settings.node_id})
    try:
        while not stop.is_set():
            try:
                await w.run_once()
            except Exception:
                log.exception("retention.crashed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.retention_interval_s)
    finally:
        await w.close()
