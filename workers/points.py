"""The points worker: host and viewer points from the durable log, exactly once.

Consumes, as group ``points``: ``gifts`` (``gift.sent``, ``gift.reversed``), ``orders`` (``order.paid``),
``activity`` (``activity.comment``, ``activity.watch``) and ``points``
(``points.redeem``). The rules are :func:`livecommerce.points.awards_for`. A batch is one
transaction (``store.apply_batch("points", ids)``): each event id is claimed once and its
rows, every one referencing the event id, commit with the claim, so an event is applied
once however often it is delivered (a crash before the ack, a rebalance, a duplicate
append), and a worker killed mid-batch leaves nothing of that batch behind.

After each batch, for every user the batch touched (applied or already applied: a
restart after a crash between the commit and this step repairs it), the worker reads the
balances from SQL, caches ``{viewer, host, level, host_level}`` in ``{user:ID}:points``
(what ``gw.level_of`` reads; it expires ``LC_USER_CACHE_TTL_S`` after its last write, and a
returning user's level comes back with their next point) and pushes ``points {balance, level, host_balance,
host_level}`` to the user's connections.

Redemptions (``points.redeem {user, value, cost, request_id}``): in the same
transaction the worker writes ``-cost`` (``coupon.redeem``) only if the viewer
balance covers it. A user's redemptions share the user's partition of topic ``points``, so
one consumer handles them in order and two cannot overdraw together. Then, whether this
delivery or an earlier one wrote it, a written debit means the coupon is granted
(idempotently: a private one-coupon drop named from the event id) and ``coupon.claimed``
is pushed; a refused one pushes ``points.redeem {ok: false, code: insufficient_points}``.

Host of an ``order.paid`` room: the ``host`` field of the event if any, else the room's
meta (``{room:ID}:meta`` ``host``), else ``room:<id>`` (see :mod:`livecommerce.points`).

Refunds (``order.refunded``, issue 11): reversing rows for the refunded share of the
order's awards, ``order.refunded`` (buyer, viewer) and ``order.unsold`` (the host the event
names, resolved like ``order.paid``'s), both negative and written even when the balance no
longer covers them (balances may go negative; levels are recomputed from the new balance):
see :func:`livecommerce.refunds.clawback_awards`. Erased viewers (``DELETE /api/v1/me/data``):
with the deployment secret, the rows of their events dated up to the erasure go to their
pseudonym (:mod:`livecommerce.profiles_sql` ``erasures``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from livecommerce.clock import now_ms as _now
from livecommerce.config import Settings
from livecommerce.coupons import REDEEMED_TTL_S, CouponDrop
from livecommerce.coupons_redis import CouponsRedis
from livecommerce.keys import Keys
from livecommerce.log import Log, LogEvent
from livecommerce.notify import Notifier
from livecommerce.points import REDEEM, Award, Rules, awards_for, level_for, redeem_drop_id, room_of
from livecommerce.points_redis import PointsRedis
from livecommerce.protocol.events import envelope
from livecommerce.refunds import ORDER_REFUNDED, clawback_awards
from livecommerce.retention import USER_CACHE_TTL_S
from livecommerce.rooms_redis import room_host
from livecommerce.store import PointsRole, Store
from workers.runner import apply_halving, freeze_heap, run_consumer
from workers.wiring import Engines

log = logging.getLogger("livecommerce.workers.points")

CONSUMER = "points"  # the store's exactly-once consumer name and the log group
TOPICS = ("gifts", "orders", "activity", "points")


class PointsWorker:
    """The batch handler (one per process; safe for the four topic loops to share)."""

    def __init__(self, store: Store, redis: Any, keys: Keys, rules: Rules, *, notifier: Notifier | None = None,
                 secret: str | None = None, cache_ttl_s: int = USER_CACHE_TTL_S) -> None:
        self.store = store
        self.secret = secret  # with it, awards of erased users go to their pseudonym (issue 11)
        self.redis = redis
        self.keys = keys
        self.rules = rules
        self.cache_ttl_s = cache_ttl_s  # the {user:ID}:points cache's lifetime after each write
        self.notifier = notifier
        self.coupons = CouponsRedis(redis, keys)
        self.cache = PointsRedis(redis, keys)
        self.applied = 0  # events whose rows this process wrote

    async def __call__(self, events: list[LogEvent]) -> None:
        """Apply a batch in one transaction (halved until a bad event is alone if it fails:
        :func:`~workers.runner.apply_halving`), then grant the accepted redemptions and
        refresh and push the touched users' points.

        Raises:
            Unavailable: SQL or Redis unreachable (the batch comes back; events applied
                before are skipped then).
            BatchFailed: some events applied, others failed (see :mod:`workers.runner`).
        """
        hosts: dict[str, str | None] = {}  # room -> host, looked up once per batch
        done: list[tuple[LogEvent, list[Award] | None]] = []
        touched: set[str] = set()
        try:
            await apply_halving(events, lambda part: self._apply(part, hosts, done, touched))
        finally:
            for e, plan in done:
                if plan is None:
                    await self._grant(e)
            await self.refresh(sorted(touched))

    async def _apply(self, events: list[LogEvent], hosts: dict[str, str | None], done: list[tuple[LogEvent, list[Award] | None]],
                     touched: set[str]) -> None:
        """One transaction for ``events``; once committed, their plans join ``done`` and the
        users they award join ``touched``."""
        plans: list[tuple[LogEvent, list[Award] | None]] = []  # None: a redemption
        for e in events:
            if e.type == REDEEM:
                plans.append((e, None))
                continue
            if e.type == ORDER_REFUNDED:  # reversing rows for the order's awards (issue 11)
                awards = clawback_awards(e.data)
            else:
                awards = awards_for(e.type, e.data, host=await self._host(e, hosts), rules=self.rules)
            if awards:
                plans.append((e, awards))
        if self.secret is not None and plans:
            plans = await self._pseudonymise(plans)
        if not plans:
            return
        applied = 0
        async with self.store.apply_batch(CONSUMER, [e.id for e, _ in plans]) as (tx, fresh):
            rows: list[tuple[str, PointsRole, int, str, str, int]] = []
            for e, plan in plans:
                if e.id not in fresh:
                    continue
                fresh.discard(e.id)  # an id twice in one batch is applied once
                applied += 1
                if plan is None:  # a redemption sees every award written before it
                    await tx.add_points_entries(rows)
                    rows = []
                    user, cost = str(e.data["user"]), int(e.data["cost"])
                    if await tx.points_balance(user, "viewer") >= cost:
                        await tx.add_points_entry(user, "viewer", -cost, "coupon.redeem", e.id, e.ts)
                    continue
                rows.extend((a.user, a.role, a.delta, a.reason, e.id, e.ts) for a in plan)
            await tx.add_points_entries(rows)
        self.applied += applied
        done.extend(plans)  # applied now or before: a restart after a crash before the refresh repairs it
        touched.update(a.user for _, plan in plans if plan for a in plan)
        touched.update(str(e.data["user"]) for e, plan in plans if plan is None)

    async def _pseudonymise(self, plans: list[tuple[LogEvent, list[Award] | None]]) -> list[tuple[LogEvent, list[Award] | None]]:
        """Awards of an erased viewer's events dated up to the erasure go to the pseudonym
        (a worker lagging behind a ``DELETE /api/v1/me/data`` writes no row under the id)."""
        from livecommerce.profiles_sql import erasure_map
        from livecommerce.store_sql import SqlStore

        if not isinstance(self.store, SqlStore) or self.secret is None:
            return plans
        users = {a.user for _, plan in plans if plan for a in plan}
        async with self.store.read() as tx:
            gone = await erasure_map(tx.conn, self.secret, users)
        if not gone:
            return plans
        return [(e, None if plan is None else [
            dataclasses.replace(a, user=gone[a.user][0]) if a.user in gone and e.ts <= gone[a.user][1] else a for a in plan])
            for e, plan in plans]

    async def _host(self, e: LogEvent, hosts: dict[str, str | None]) -> str | None:
        """The host of the event's room when its awards need one (the event names none)."""
        room = room_of(e.type, e.data)
        if room is None:
            return None
        if room not in hosts:
            hosts[room] = await room_host(self.redis, self.keys, room)
        return hosts[room]

    async def _grant(self, e: LogEvent) -> None:
        """After the commit: grant the coupon of an accepted redemption (idempotently),
        or tell the user it was refused."""
        user, cost = str(e.data["user"]), int(e.data["cost"])
        if await self.store.points_entry(e.id, user, "coupon.redeem") is None:
            await self._push(user, envelope("points.redeem", None, {
                "ok": False, "code": "insufficient_points", "request_id": e.data.get("request_id"), "cost": cost}, ts=_now()))
            return
        drop = CouponDrop(
            id=redeem_drop_id(e.id),
            room="",
            kind="full_reduction",
            threshold=0,
            value=int(e.data["value"]),
            quantity=1,
            expires_ms=e.ts + REDEEMED_TTL_S * 1000,
            created_by="points",
            created_ms=e.ts,
        )
        coupon = await self.coupons.grant(user, drop, now_ms=e.ts)
        if coupon is not None:
            await self._push(user, envelope("coupon.claimed", None, {**coupon, "via": "points", "request_id": e.data.get("request_id")},
                                            ts=_now()))

    async def refresh(self, users: list[str]) -> dict[str, dict[str, int]]:
        """Cache the users' balances and levels in Redis and push ``points`` to each."""
        if not users:
            return {}
        levels = self.rules.levels
        states: dict[str, dict[str, int]] = {}
        for user, b in (await self.store.points_balances(users)).items():
            viewer, host = b["viewer"], b["host"]
            states[user] = {"viewer": viewer, "host": host, "level": level_for(viewer, levels), "host_level": level_for(host, levels)}
        await self.cache.remember(states, ttl_s=self.cache_ttl_s)
        now = _now()
        pushes = [
            (user, envelope("points", None, {
                "balance": st["viewer"], "level": st["level"], "host_balance": st["host"], "host_level": st["host_level"]}, ts=now))
            for user, st in states.items()
        ]
        if self.notifier is not None:
            try:  # one presence read and one pipeline of publishes for the whole batch
                await self.notifier.to_users(pushes)
            except Exception as exc:  # a lossy push: the balance is in the ledger and the cache
                log.warning("points.push_failed", extra={"users": len(pushes), "err": repr(exc)})
        return states

    async def _push(self, user: str, env: dict[str, Any]) -> None:
        if self.notifier is None:
            return
        try:
            await self.notifier.to_user(user, env)
        except Exception as exc:  # a lossy push: the balance is in the ledger and the cache
            log.warning("points.push_failed", extra={"user": user, "err": repr(exc)})


async def drain(log_: Log, worker: PointsWorker, *, name: str = "points-1", fetch_timeout_ms: int = 500, batch: int = 1000) -> int:
    """Burst mode over the four topics; return the number of events handled."""
    n = 0
    for topic in TOPICS:
        n += await run_consumer(log_, topic, CONSUMER, name, worker, burst=True, fetch_timeout_ms=fetch_timeout_ms, batch=batch, prefetch=True)
    return n


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Consume the four topics until ``stop`` is set."""
    async with Engines(settings) as e:
        worker = PointsWorker(e.store, e.redis, e.keys, Rules.from_settings(settings), notifier=e.notifier,
                              secret=settings.secret, cache_ttl_s=settings.user_cache_ttl_s)
        log.info("points.worker_started", extra={"worker": settings.node_id})
        freeze_heap()
        await asyncio.gather(*(run_consumer(e.log, t, CONSUMER, settings.node_id, worker, stop=stop, batch=settings.worker_batch, prefetch=True)
                               for t in TOPICS))
