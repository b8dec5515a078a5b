"""The lottery draw worker: at each lottery's deadline, close, draw, commit, announce.

``run(settings, stop)`` polls the ``lottery:due`` sorted set (deadline order) a few times a
second; :meth:`LotteryDrawer.drain` is the burst mode tests await.

Exactly once, whatever the number of workers and crashes (see
:mod:`livecommerce.lottery_redis`):

1. ``open -> closed`` (compare-and-set): entries stop, so the entrant list is frozen.
2. Any worker may compute the draw: it is a deterministic function of the stored seed and
   the frozen list, so racing workers compute the same winners.
3. ``closed -> drawn`` with the record is a compare-and-set: one worker commits and holds
   the announcer lease; only it publishes ``lottery.ended``.
4. A worker that finds a ``drawn`` lottery (its announcer crashed, or failed a hook) takes
   the lease when it is its own (restarted with the same ``LC_NODE_ID``) or expired, and
   republishes the *stored* record: never a new draw.
5. After publishing, winners get a private ``lottery.won``, the prize hooks run, and the
   lottery becomes ``announced``.

Prizes that arrive: :class:`PrizeAwarder`, the built-in hook, pays each winner of a
``coins`` prize (a wallet credit keyed ``(winner, lottery:<id>)``: the wallet's ledger event
``wallet.topup`` on the durable log, applied to SQL by the wallet worker) and of a ``coupon``
prize (a coupon on the terms copied from the named drop at start, in a private drop per
winner: :func:`~livecommerce.lottery.prize_drop_id`), then tells the winner
(``prize.awarded``), and of a ``product`` prize (a zero-price paid order of one unit on the
orders log, :func:`~livecommerce.lottery.prize_order_id`, event id ``<order>:paid``: the
orders worker puts it into SQL once, and the host ships it like any paid order). Every step
is idempotent, so an announcement repeated after a crash pays nobody twice.

Further hooks: ``async def hook(record: dict) -> None``, listed as ``"module:function"`` in
:data:`PRIZE_HOOKS` (or passed to :class:`LotteryDrawer`). A hook may be called more than
once for one lottery (after a crash), so it must be idempotent on ``record["id"]``, e.g.
append ``lottery.ended`` to the durable log with ``event_id=f"lottery.ended:{id}"``. A hook
that raises leaves the lottery ``drawn``; it is retried (with a republish) after the lease.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from livecommerce.broker_redis import RedisBroker
from livecommerce.clock import now_ms as _now_ms
from livecommerce.config import Settings
from livecommerce.coupons import CouponDrop
from livecommerce.coupons_redis import CouponsRedis
from livecommerce.keys import Keys
from livecommerce.log import Log
from livecommerce.lottery import (
    PRIZE_COUPON_TTL_MS,
    award_key,
    build_record,
    ended_event,
    prize_drop_id,
    prize_order_id,
    prize_sale_id,
)
from livecommerce.lottery_redis import RedisLotteries
from livecommerce.notify import Notifier
from livecommerce.protocol.events import envelope
from livecommerce.wallet_redis import RedisWallet

from .wiring import Engines

log = logging.getLogger("livecommerce.workers.lottery")

DrawnHook = Callable[[dict[str, Any]], Awaitable[None]]

# "module:function" prize hooks run after each announcement (see the module docstring).
PRIZE_HOOKS: list[str] = []

POLL_S = 0.25
LEASE_MS = 30_000
RETRY_MS = 1_000

Action = Literal["drawn", "republished", "skipped", "missing"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one :meth:`LotteryDrawer.process` call did: ``drawn`` (this worker committed
    and announced), ``republished`` (announced a record committed earlier), ``skipped``
    (another worker holds it, or it is done), ``missing`` (unknown id, unindexed)."""

    lottery_id: str
    action: Action
    winners: list[str] = field(default_factory=list)


def load_hooks(specs: Sequence[str]) -> list[DrawnHook]:
    """Import ``"module:function"`` hooks."""
    hooks = []
    for spec in specs:
        mod, _, fn = spec.partition(":")
        hooks.append(getattr(importlib.import_module(mod), fn))
    return hooks


class PrizeAwarder:
    """The built-in prize hook (module docstring): coins and coupons, once per winner."""

    def __init__(self, wallet: RedisWallet, coupons: CouponsRedis, log_: Log | None, notifier: Notifier) -> None:
        self.wallet = wallet
        self.coupons = coupons
        self.log = log_  # None: the wallet worker's outbox sweep appends the credit events
        self.notifier = notifier

    async def __call__(self, record: dict[str, Any]) -> None:
        """Pay every winner of ``record``.

        Raises:
            Unavailable: Redis (or the log) unreachable; the hook is retried after the lease
                and pays only those not paid yet.
        """
        prize = record.get("prize") or {}
        kind = prize.get("kind")
        if kind not in ("coins", "coupon", "product") or not record.get("winners"):
            return
        lid, room, drawn = str(record["id"]), str(record["room"]), int(record.get("drawn_ms") or _now_ms())
        for user in record["winners"]:
            detail: dict[str, Any] | None
            if kind == "coins":
                detail = await self._coins(lid, user, int(prize["amount"]), drawn)
            elif kind == "product":
                detail = await self._product(lid, room, user, str(prize.get("id") or ""), drawn)
            else:
                detail = await self._coupon(lid, room, user, prize, drawn)
            if detail is None:
                continue
            try:  # a lossy push: the credit or the coupon is in the user's wallet either way
                await self.notifier.to_user(user, envelope("prize.awarded", room, {"lottery_id": lid, **detail}, ts=_now_ms()))
            except Exception as exc:
                log.warning("lottery.prize_notice_failed", extra={"lottery": lid, "user": user, "err": repr(exc)})

    async def _coins(self, lid: str, user: str, amount: int, now_ms: int) -> dict[str, Any]:
        key = award_key(lid)
        got = await self.wallet.topup(user=user, amount=amount, idempotency_key=key, by=key, now_ms=now_ms)
        if self.log is not None and not got.duplicate:
            await self.wallet.publish(self.log, [got.event])  # else the outbox sweep appends it
        log.info("lottery.prize_paid", extra={"lottery": lid, "user": user, "coins": amount, "again": got.duplicate})
        return {"kind": "coins", "amount": amount, "balance": got.balance}

    async def _product(self, lid: str, room: str, user: str, product: str, now_ms: int) -> dict[str, Any] | None:
        """A zero-price order of one unit, paid, on the orders log: the orders worker puts it
        into SQL once (its event id is the order's ``:paid``, as every paid order's), and the
        host ships it like any paid order (``POST /api/v1/orders/{id}/shipments``)."""
        if self.log is None:
            log.error("lottery.prize_needs_the_log", extra={"lottery": lid, "user": user})
            return None
        oid = prize_order_id(lid, user)
        data = {"order_id": oid, "sale_id": prize_sale_id(lid), "room_id": room, "user_id": user, "qty": 1, "unit_price": 0,
                "amount": 0, "discount": 0, "coupon_id": None, "payment_window_s": 0, "reserved_ms": now_ms,
                "pay_by_ms": now_ms, "product_id": product, "prize": lid}
        await self.log.append("orders", oid, "order.paid", data, event_id=f"{oid}:paid", ts=now_ms)
        log.info("lottery.prize_paid", extra={"lottery": lid, "user": user, "order": oid, "product": product})
        return {"kind": "product", "product_id": product, "order_id": oid}

    async def _coupon(self, lid: str, room: str, user: str, prize: dict[str, Any], now_ms: int) -> dict[str, Any] | None:
        terms = prize.get("coupon")
        if not isinstance(terms, dict):  # started before terms were copied: nothing to make it from
            log.error("lottery.prize_without_terms", extra={"lottery": lid, "user": user, "drop": prize.get("id")})
            return None
        drop = CouponDrop(id=prize_drop_id(lid, user), room=room, kind=terms["kind"], threshold=int(terms["threshold"]),
                          value=int(terms["value"]), quantity=1, expires_ms=now_ms + PRIZE_COUPON_TTL_MS,
                          created_by=award_key(lid), created_ms=now_ms)
        coupon = await self.coupons.grant(user, drop, now_ms=now_ms)
        log.info("lottery.prize_paid", extra={"lottery": lid, "user": user, "coupon": drop.id})
        return {"kind": "coupon", "coupon": coupon}


class LotteryDrawer:
    """Draws due lotteries. One per worker process; ``worker`` names it for the lease."""

    def __init__(
        self,
        store: RedisLotteries,
        broker: Any,
        notifier: Notifier,
        *,
        worker: str,
        lease_ms: int = LEASE_MS,
        hooks: Sequence[DrawnHook] = (),
    ) -> None:
        self.store = store
        self.broker = broker
        self.notifier = notifier
        self.worker = worker
        self.lease_ms = lease_ms
        self.hooks = list(hooks)
        self._backoff: dict[str, int] = {}  # lottery id -> ms before retrying a failed announce

    @classmethod
    def for_redis(cls, redis: Any, keys: Keys, *, worker: str, sharded: bool = False, **kw: Any) -> LotteryDrawer:
        broker = RedisBroker(redis, keys, sharded=sharded)
        return cls(RedisLotteries(redis, keys), broker, Notifier(redis, broker, keys), worker=worker, **kw)

    async def drain(self, *, now_ms: int | None = None, limit: int = 100) -> list[Outcome]:
        """Process every lottery due at ``now_ms`` (default: now) once; return what was done."""
        now = _now_ms() if now_ms is None else now_ms
        out = []
        for lid in await self.store.due(now_ms=now, limit=limit):
            if self._backoff.get(lid, 0) > now:
                continue
            try:
                out.append(await self.process(lid, now_ms=now))
            except Exception:
                # after a publish (failed hook): wait out the lease, so the announcement is
                # not repeated every poll; before it (Redis blip): retry soon
                self._backoff.setdefault(lid, now + RETRY_MS)
                log.exception("lottery.process_failed", extra={"lottery": lid})
        return out

    async def process(self, lottery_id: str, *, now_ms: int) -> Outcome:
        """Move one due lottery as far as it goes (module docstring, steps 1-5).

        Raises:
            Unavailable: Redis unreachable (nothing half-done: every step is a CAS).
            Exception: from a prize hook; the lottery stays ``drawn`` and is retried.
        """
        st = await self.store.get(lottery_id)
        if st is None:
            await self.store.forget(lottery_id)
            return Outcome(lottery_id, "missing")
        lot = st.lottery
        state: str = st.state
        if state == "open":
            if now_ms < lot.deadline_ms:
                return Outcome(lottery_id, "skipped")
            _, state = await self.store.transition(lottery_id, "open", "closed", {"closed_ms": now_ms})
            await self.store.unindex_room(lottery_id, lot.room)
        if state == "closed":
            entrants = await self.store.entrants(lottery_id)
            record = build_record(lot, seed=st.seed, entrants=entrants, drawn_ms=now_ms)
            if await self.store.commit(lottery_id, record, worker=self.worker, now_ms=now_ms, lease_ms=self.lease_ms):
                log.info("lottery.drawn", extra={"lottery": lottery_id, "entrants": len(entrants), "winners": len(record["winners"])})
                await self._announce(record, now_ms=now_ms)
                return Outcome(lottery_id, "drawn", record["winners"])
            again = await self.store.get(lottery_id)
            if again is None:
                return Outcome(lottery_id, "missing")
            st, state = again, again.state
        if state == "drawn":
            if not await self.store.take_lease(lottery_id, worker=self.worker, now_ms=now_ms, lease_ms=self.lease_ms):
                return Outcome(lottery_id, "skipped")
            fresh = await self.store.get(lottery_id)
            if fresh is None or fresh.record is None:
                return Outcome(lottery_id, "missing")
            log.info("lottery.republish", extra={"lottery": lottery_id})
            await self._announce(fresh.record, now_ms=now_ms)
            return Outcome(lottery_id, "republished", fresh.record["winners"])
        if state == "announced":
            await self.store.mark_announced(lottery_id, lot.room, now_ms=now_ms)  # re-drops the index
        elif state == "cancelled":  # its room's show ended with {"lotteries": "cancel"}
            await self.store.forget(lottery_id)
        return Outcome(lottery_id, "skipped")

    async def _announce(self, record: dict[str, Any], *, now_ms: int) -> None:
        room = record["room"]
        d = ended_event(record)
        await self.broker.publish_room(room, envelope("lottery.ended", room, d, ts=now_ms), history=True, now_ms=now_ms)
        won = {"id": record["id"], "title": record.get("title", ""), "prize": record["prize"], "record_url": d["record_url"]}
        for w in record["winners"]:
            await self.notifier.to_user(w, envelope("lottery.won", room, won, ts=now_ms))
        try:
            for hook in self.hooks:
                await hook(record)
        except Exception:
            self._backoff[record["id"]] = now_ms + self.lease_ms
            raise
        await self.store.mark_announced(record["id"], room, now_ms=now_ms)
        self._backoff.pop(record["id"], None)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Poll due lotteries until ``stop`` is set."""
    async with Engines(settings) as e:
        awarder = PrizeAwarder(RedisWallet(e.redis, e.keys), CouponsRedis(e.redis, e.keys), e.log, e.notifier)
        drawer = LotteryDrawer(RedisLotteries(e.redis, e.keys), e.broker, e.notifier, worker=settings.node_id,
                               hooks=[awarder, *load_hooks(PRIZE_HOOKS)])
        log.info("lottery.worker_started", extra={"worker": settings.node_id})
        while not stop.is_set():
            try:
                await drawer.drain()
            except Exception as exc:  # Redis down: keep polling, the CAS steps resume
                log.warning("lottery.poll_failed", extra={"err": repr(exc)})
            try:
                await asyncio.wait_for(stop.wait(), POLL_S)
            except TimeoutError:
                pass
