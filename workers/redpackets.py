"""The red packet keeper: ends packets at expiry (or once emptied), refunds what nobody
grabbed, announces ``redpacket.ended``, and applies credits a killed process left behind.

``run(settings, stop)`` polls a few times a second; :meth:`RedPacketKeeper.drain` is the
burst mode tests await. Any number of keepers may run; exactly once holds whatever the
number of keepers and crashes (see :mod:`livecommerce.redpackets_redis`):

1. :meth:`~livecommerce.redpackets_redis.RedisRedPackets.step` ends a due packet in one
   script of its slot (a compare-and-set on ``open``): grabs stop and the refund (amount
   minus the shares taken) becomes a pending credit of the dropper, once. The same step
   leases the announcement to the caller (its own lease, or anyone's once expired).
2. The holder applies the refund (:meth:`credit`: once per credit id, the ledger event in the
   dropper's wallet outbox in the same script), appends the event to the log and clears it,
   publishes ``redpacket.ended`` (the stored record: never a new split) and marks the
   packet ``announced``. A keeper killed anywhere in 2 leaves the packet on the due set with
   its lease: the next look (its own after a restart with the same ``LC_NODE_ID``, anyone's
   after :data:`LEASE_MS`) redoes 2; the refund is applied once whatever happens.
3. Every :data:`SWEEP_S` seconds, pending credits older than ``OUTBOX_GRACE_MS`` (a grab
   whose gateway died between the share and the credit, a keeper that died after the end)
   are applied the same way. Their ledger events then reach SQL through the wallet worker
   (``workers/wallet.py``), which writes each event id once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from livecommerce.clock import now_ms as _now_ms
from livecommerce.config import Settings
from livecommerce.errors import Unavailable
from livecommerce.log import Log
from livecommerce.protocol.events import envelope
from livecommerce.redpackets import ended_event, refund_id
from livecommerce.redpackets_redis import PendingCredit, RedisRedPackets
from livecommerce.wallet import OUTBOX_GRACE_MS
from livecommerce.wallet_redis import RedisWallet

from .wiring import Engines

log = logging.getLogger("livecommerce.workers.redpackets")

POLL_S = 0.25
SWEEP_S = 2.0
LEASE_MS = 30_000

Action = Literal["ended", "skipped", "missing"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one :meth:`RedPacketKeeper.process` did: ``ended`` (announced, refund applied),
    ``skipped`` (not due, another keeper's lease, already done), ``missing``."""

    packet_id: str
    action: Action
    refunded: int = 0


class RedPacketKeeper:
    """Ends, refunds and announces due packets; applies left-behind credits."""

    def __init__(self, store: RedisRedPackets, wallet: RedisWallet, log_: Log, broker: Any, *, worker: str,
                 lease_ms: int = LEASE_MS) -> None:
        self.store = store
        self.wallet = wallet
        self.log = log_
        self.broker = broker
        self.worker = worker
        self.lease_ms = lease_ms
        self.credited = 0  # credits this keeper applied (tests, logs)

    async def apply(self, pc: PendingCredit) -> bool:
        """Apply one pending credit (once per credit id), append its ledger event, clear it.
        True when it was credited by this call.

        Raises:
            Unavailable: Redis or the log unreachable (the credit stays pending: next sweep).
        """
        done, _, ev = await self.store.credit(pc)
        if done:
            await self.wallet.publish(self.log, [ev])  # else it was appended (or the wallet sweeper will)
            self.credited += 1
        await self.store.clear_pending(pc)
        return done

    async def sweep(self, *, now_ms: int, grace_ms: int = OUTBOX_GRACE_MS) -> int:
        """Apply pending credits older than ``grace_ms``; return how many were credited now."""
        n = 0
        for pc in await self.store.pending(older_than_ms=now_ms - grace_ms):
            if await self.apply(pc):
                n += 1
                log.info("redpacket.credit_recovered", extra={"packet": pc.packet, "credit": pc.id, "user": pc.user})
        return n

    async def drain(self, *, now_ms: int | None = None, limit: int = 100) -> list[Outcome]:
        """Process every packet due at ``now_ms`` (default: now) once."""
        now = _now_ms() if now_ms is None else now_ms
        out = []
        for pid in await self.store.due(now_ms=now, limit=limit):
            try:
                out.append(await self.process(pid, now_ms=now))
            except Exception:
                log.exception("redpacket.process_failed", extra={"packet": pid})  # due again after the lease
        return out

    async def process(self, pid: str, *, now_ms: int) -> Outcome:
        """End one due packet, apply its refund, announce it (module docstring, 1-2).

        Raises:
            Unavailable: Redis or the log unreachable (the lease brings it back).
        """
        action, refunded = await self.store.step(pid, now_ms=now_ms, worker=self.worker, lease_ms=self.lease_ms)
        if action == "missing":
            return Outcome(pid, "missing")
        if action != "announce":
            return Outcome(pid, "skipped")
        st = await self.store.get(pid)
        if st is None:
            return Outcome(pid, "missing")
        if refunded > 0:
            p = st.packet
            await self.apply(PendingCredit(refund_id(pid), "refund", p.by, refunded, pid, p.room, p.by, -1, st.ended_ms or now_ms))
        record = await self.store.record(pid)
        assert record is not None
        room = st.packet.room
        await self.broker.publish_room(room, envelope("redpacket.ended", room, ended_event(record), ts=now_ms), history=True,
                                       now_ms=now_ms)
        await self.store.unindex_room(room, pid)
        await self.store.announced(pid, now_ms=now_ms)
        log.info("redpacket.ended", extra={"packet": pid, "room": room, "grabbed": record["grabbed"], "refunded": refunded})
        return Outcome(pid, "ended", refunded)


async def _loop(keeper: RedPacketKeeper, stop: asyncio.Event) -> None:
    last_sweep = 0.0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            await keeper.drain()
            if loop.time() - last_sweep >= SWEEP_S:
                last_sweep = loop.time()
                await keeper.sweep(now_ms=_now_ms())
        except Unavailable as exc:  # Redis or the log down: keep polling, every step resumes
            log.warning("redpacket.poll_failed", extra={"err": exc.message})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_S)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """End, refund and announce due packets, apply left-behind credits, until ``stop``."""
    async with Engines(settings) as e:
        keeper = RedPacketKeeper(RedisRedPackets(e.redis, e.keys), RedisWallet(e.redis, e.keys), e.log, e.broker,
                                 worker=settings.node_id)
        log.info("redpacket.keeper_started", extra={"worker": settings.node_id})
        await _loop(keeper, stop)
