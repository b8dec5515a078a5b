"""The wallet ledger worker: ``wallet.topup`` and ``gift.sent`` into ``wallet_ledger``.

Consumes topic ``gifts`` as group ``wallet``, ``LC_WORKER_BATCH`` events at a time. Each
event that moves coins (:func:`livecommerce.wallet.ledger_delta`) becomes one ledger row,
written with the batch's exactly-once claims (``store.apply_batch("wallet", ids)``: one
transaction per batch, each event id claimed once, one statement per table), so redelivery (a crash before the ack, a rebalance, a
duplicate append from the outbox sweeper) writes nothing twice. The worker also sweeps the
wallet outbox every :data:`SWEEP_S` seconds (:meth:`RedisWallet.sweep`): events debited in
Redis whose gateway died before appending them reach the log, and then the ledger.

Invariant checked by the tests: after a drain, every wallet's Redis balance equals the sum
of its ledger rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from livecommerce.clock import now_ms
from livecommerce.config import Settings
from livecommerce.errors import Unavailable
from livecommerce.log import Log, LogEvent
from livecommerce.store import Store
from livecommerce.wallet import TOPIC, ledger_delta
from livecommerce.wallet_redis import RedisWallet
from workers.runner import apply_halving, freeze_heap, run_consumer
from workers.wiring import Engines

log = logging.getLogger("livecommerce.workers.wallet")

CONSUMER = "wallet"  # the store's exactly-once consumer name and the log group
SWEEP_S = 2.0


class WalletLedger:
    """The batch handler: one ledger row per coin-moving event, exactly once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.written = 0

    async def __call__(self, events: list[LogEvent]) -> None:
        """Write the batch's rows in one transaction (events applied before are skipped); if
        it fails, halve it until the bad event is alone (:func:`~workers.runner.apply_halving`).

        Raises:
            Unavailable: the database is unreachable (the batch comes back).
            BatchFailed: some events applied, others failed (see :mod:`workers.runner`).
        """
        await apply_halving(events, self._apply)

    async def _apply(self, events: list[LogEvent]) -> None:
        rows = [(e, r) for e in events if (r := ledger_delta(e.type, e.data)) is not None]
        if not rows:
            return
        async with self.store.apply_batch(CONSUMER, [e.id for e, _ in rows]) as (tx, fresh):
            new = []
            for e, (user, delta, reason) in rows:
                if e.id in fresh:
                    fresh.discard(e.id)  # an id twice in one batch is written once
                    new.append((user, delta, reason, e.id, e.ts))
            written = await tx.add_wallet_entries(new)
        self.written += written


async def drain(log_: Log, store: Store, *, name: str = "wallet-1", fetch_timeout_ms: int = 500, batch: int = 1000) -> int:
    """Burst mode: apply what the log holds now; return the number of events handled."""
    return await run_consumer(log_, TOPIC, CONSUMER, name, WalletLedger(store), burst=True, fetch_timeout_ms=fetch_timeout_ms,
                              batch=batch, prefetch=True)


async def sweep_loop(wallet: RedisWallet, log_: Log, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            n = await wallet.sweep(log_, now_ms=now_ms())
            if n:
                log.info("wallet.outbox_swept", extra={"events": n})
        except Unavailable as exc:
            log.warning("wallet.sweep_failed", extra={"err": exc.message})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SWEEP_S)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Consume ``gifts`` and sweep the outbox until ``stop`` is set."""
    async with Engines(settings) as e:
        wallet = RedisWallet(e.redis, e.keys)
        freeze_heap()
        await asyncio.gather(
            run_consumer(e.log, TOPIC, CONSUMER, settings.node_id, WalletLedger(e.store), stop=stop, batch=settings.worker_batch, prefetch=True),
            sweep_loop(wallet, e.log, stop),
        )
