"""``livecommerce worker profiles``: viewer profiles and fan intimacy from the log, exactly once;
and ``rebuild``, which recomputes every profile from the log.

Live: consumes ``orders``, ``gifts`` and ``activity`` as group ``profiles``. A batch is one
transaction: take the shared profiles lock, claim the batch's event ids (``applied_events``
under consumer ``profiles``), fold each fresh event's contributions
(:func:`livecommerce.profiles.contributions`) into its user's stored profile, and project the
touched (viewer, host) pairs into ``fan_members``. After the commit the fan badge and
leaderboard cache in Redis is refreshed for those pairs.

Rebuild strategy (``livecommerce profiles rebuild``): start from ``profiles_base`` (the fold
of the events log retention trimmed, see below) and read what the log still holds **from
its first entry in a fresh consumer group** per topic (``profiles-rebuild-<ms>``), folding
every event once (ids deduplicated; events already folded into the base are skipped) with
the same pure function; then, in one transaction holding the profiles lock exclusively
(live batches wait), read what was appended meanwhile (a catch-up pass in the same groups),
claim every id for ``profiles`` (so the live worker does not apply them again) and replace
every profile (base merged with the fold) and the fan projection. Because the fold is a
commutative monoid, the result equals what the live worker computed from the same events.
If retention folded an event into the base while the rebuild had folded it too, the attempt
starts again. The rebuild's groups are dropped at the end (Redis; Kafka's offsets expire).

Retention (``livecommerce worker retention``, Redis Streams): before trimming entries that
every group has passed, it folds the relevant ones into ``profiles_base`` (:class:`BaseFolder`,
claims under ``profiles-base``), so nothing a rebuild needs is lost. On Kafka the broker's
``retention.ms`` deletes old segments unseen: there the rebuild recomputes from what is
retained (plus the base, empty) (docs/retention.md).

Resolved at application time (Redis, cached per process): a room's host (``{room:ID}:meta``
``host``) and a sale's product category (``{sale:ID}:meta`` ``product_id`` ->
``{product:ID}:meta`` ``category``). Erased users: events of a user whose pseudonym is in
``erasures``, dated up to the erasure, are folded under the pseudonym.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from livecommerce import profiles_sql
from livecommerce.clock import now_ms
from livecommerce.config import Settings
from livecommerce.errors import Unavailable
from livecommerce.fanclub_redis import FanclubRedis
from livecommerce.keys import Keys
from livecommerce.log import Log, LogEvent
from livecommerce.profiles import (
    TOPICS,
    Context,
    Profile,
    contributions,
    erased_key,
    merge,
    pseudonym,
)
from livecommerce.profiles_redis import Resolver
from livecommerce.store_sql import SqlStore

from .runner import run_consumer
from .wiring import Engines

log = logging.getLogger("livecommerce.workers.profiles")

CONSUMER = "profiles"
RELEVANT = frozenset({
    "activity.watch", "activity.comment", "gift.sent", "wallet.topup", "order.reserved", "order.cancelled",
    "order.paid", "refund.requested", "order.refunded", "fan.follow", "fan.club",
})
_USER_FIELDS = ("user", "user_id")


def _users(events: Iterable[LogEvent]) -> set[str]:
    return {str(e.data[f]) for e in events for f in _USER_FIELDS if e.data.get(f)}


class ProfilesWorker:
    """The batch handler (shared by the three topic loops)."""

    def __init__(self, store: SqlStore, redis: Any, keys: Keys, *, secret: str) -> None:
        self.store = store
        self.secret = secret
        self.resolver = Resolver(redis, keys)
        self.fans = FanclubRedis(redis, keys)
        self.applied = 0

    async def __call__(self, events: list[LogEvent]) -> None:
        """Fold the batch's fresh events into profiles in one transaction, then refresh the
        fan cache.

        Raises:
            Unavailable: SQL or Redis unreachable (the batch comes back).
        """
        mine = [e for e in events if e.type in RELEVANT]
        if not mine:
            return
        await self.resolver.prepare(mine)
        now = now_ms()
        fan_rows: list[dict[str, Any]] = []
        async with self.store.write() as tx:
            await profiles_sql.lock(tx.conn, exclusive=False)
            fresh = await profiles_sql.claim(tx.conn, CONSUMER, [e.id for e in mine], now_ms=now)
            gone = await profiles_sql.erasure_map(tx.conn, self.secret, _users(mine))
            erased = {p for p, _ in gone.values()}
            ctx = Context(self.resolver.host_of, self.resolver.category_of, key_at=lambda u, ts: erased_key(u, ts, gone))
            partials: dict[str, Profile] = {}
            for e in mine:
                if e.id not in fresh:
                    continue
                fresh.discard(e.id)  # an id twice in one batch is folded once
                self.applied += 1
                for user, part in contributions(e.type, e.data, e.ts, ctx):
                    partials[user] = merge(partials.get(user, {}), part)
            new = await profiles_sql.apply_partials(tx.conn, partials, erased=erased, now_ms=now)
            for user, part in partials.items():
                hosts = set(part.get("hosts", {})) | set(part.get("follows", {})) | set(part.get("clubs", {}))
                fan_rows.extend(profiles_sql.fan_rows(user, new[user], hosts, now))
        await self.fans.put(fan_rows)


async def drain(durable: Log, worker: ProfilesWorker, *, name: str = "profiles-1", fetch_timeout_ms: int = 300) -> int:
    """Burst mode over the three topics; return the number of events handled."""
    n = 0
    for topic in TOPICS:
        n += await run_consumer(durable, topic, CONSUMER, name, worker, burst=True, fetch_timeout_ms=fetch_timeout_ms)
    return n


class BaseFolder:
    """Folds log events that retention is about to trim into ``profiles_base``, exactly
    once (claims under ``profiles-base``), with the live worker's erasure rule and resolver."""

    def __init__(self, store: SqlStore, redis: Any, keys: Keys, *, secret: str) -> None:
        self.store = store
        self.secret = secret
        self.resolver = Resolver(redis, keys)
        self.folded = 0

    async def __call__(self, events: list[LogEvent]) -> None:
        """Raises:
            Unavailable: SQL or Redis unreachable (nothing was folded: do not trim)."""
        mine = [e for e in events if e.type in RELEVANT]
        if not mine:
            return
        await self.resolver.prepare(mine)
        now = now_ms()
        async with self.store.write() as tx:
            await profiles_sql.lock(tx.conn, exclusive=False)
            fresh = await profiles_sql.claim(tx.conn, profiles_sql.BASE_CONSUMER, [e.id for e in mine], now_ms=now)
            gone = await profiles_sql.erasure_map(tx.conn, self.secret, _users(mine))
            ctx = Context(self.resolver.host_of, self.resolver.category_of, key_at=lambda u, ts: erased_key(u, ts, gone))
            partials: dict[str, Profile] = {}
            for e in mine:
                if e.id not in fresh:
                    continue
                fresh.discard(e.id)
                self.folded += 1
                for user, part in contributions(e.type, e.data, e.ts, ctx):
                    partials[user] = merge(partials.get(user, {}), part)
            await profiles_sql.fold_into_base(tx.conn, partials, now_ms=now)


class _Fold:
    """One rebuild pass: every relevant event the log holds, once, folded per key (events
    folded into ``profiles_base`` are skipped: the base holds them)."""

    def __init__(self, store: SqlStore, redis: Any, keys: Keys, secret: str, erasures: dict[str, tuple[str, int]]) -> None:
        self.store = store
        self.resolver = Resolver(redis, keys)
        self.secret = secret
        self.erasures = erasures
        self.rebuilt: dict[str, Profile] = {}
        self.seen: set[str] = set()
        self.folded: set[str] = set()  # seen and folded here (not in the base)
        self.erased: set[str] = set()
        self.ctx = Context(self.resolver.host_of, self.resolver.category_of, key_at=self.key_of)

    def key_of(self, user: str, ts: int) -> str:
        hit = self.erasures.get(pseudonym(self.secret, user))
        if hit is not None:
            self.erased.add(hit[0])
        return hit[0] if hit is not None and ts <= hit[1] else user

    async def __call__(self, events: list[LogEvent]) -> None:
        mine = [e for e in events if e.type in RELEVANT and e.id not in self.seen]
        if not mine:
            return
        async with self.store.read() as tx:
            based = await profiles_sql.claimed_among(tx.conn, profiles_sql.BASE_CONSUMER, [e.id for e in mine])
        await self.resolver.prepare(mine)
        for e in mine:
            if e.id in self.seen:
                continue
            self.seen.add(e.id)
            if e.id in based:
                continue
            self.folded.add(e.id)
            for user, part in contributions(e.type, e.data, e.ts, self.ctx):
                self.rebuilt[user] = merge(self.rebuilt.get(user, {}), part)

    async def read(self, durable: Log, group: str, fetch_timeout_ms: int) -> None:
        for topic in TOPICS:
            await run_consumer(durable, topic, group, "rebuild", self, burst=True, fetch_timeout_ms=fetch_timeout_ms)


async def rebuild(store: SqlStore, redis: Any, keys: Keys, durable: Log, *, secret: str, group: str | None = None,
                  fetch_timeout_ms: int = 300) -> dict[str, int]:
    """Recompute every profile and the fan projection from the log (see the module
    docstring); return ``{events, profiles}``.

    Raises:
        Unavailable: SQL, Redis or the log unreachable, or users kept being erased while it
            ran (three attempts).
    """
    now = now_ms()
    async with store.read() as tx:
        erasures = await profiles_sql.all_erasures(tx.conn)
    groups: list[str] = []
    try:
        for attempt in range(3):
            g = f"{group or f'profiles-rebuild-{now:x}'}-{attempt}"
            groups.append(g)
            f = _Fold(store, redis, keys, secret, erasures)
            await f.read(durable, g, fetch_timeout_ms)
            async with store.write() as tx:
                await profiles_sql.lock(tx.conn, exclusive=True)
                await f.read(durable, g, fetch_timeout_ms)  # what was appended meanwhile; live batches wait on the lock
                latest = await profiles_sql.all_erasures(tx.conn)
                if latest != erasures:  # someone was erased meanwhile: fold again with the new map
                    erasures = latest
                    continue
                if await profiles_sql.claimed_among(tx.conn, profiles_sql.BASE_CONSUMER, f.folded):
                    continue  # retention folded some of them into the base meanwhile: fold again
                base = await profiles_sql.load_base(tx.conn)
                rebuilt = {u: merge(base.get(u, {}), f.rebuilt.get(u, {})) for u in base.keys() | f.rebuilt.keys()}
                erased = f.erased | (base.keys() & latest.keys())
                await profiles_sql.claim(tx.conn, CONSUMER, f.seen, now_ms=now)
                old_hosts = await profiles_sql.fan_hosts(tx.conn)
                n = await profiles_sql.replace_all(tx.conn, rebuilt, erased=erased, now_ms=now)
            rows = [r for u, p in rebuilt.items()
                    for r in profiles_sql.fan_rows(u, p, set(p.get("hosts", {})) | set(p.get("clubs", {})), now)]
            fans = FanclubRedis(redis, keys)
            await fans.clear(old_hosts | {r["host_id"] for r in rows})
            await fans.put(rows)
            log.info("profiles.rebuilt", extra={"events": len(f.seen), "profiles": n, "group": g, "base": len(base)})
            return {"events": len(f.seen), "profiles": n}
        raise Unavailable("users kept being erased (or events folded into the base) during the rebuild: run it again")
    finally:
        drop = getattr(durable, "drop_group", None)  # Redis: a finished group would hold back trimming
        if drop is not None:
            for g in groups:
                for topic in TOPICS:
                    try:
                        await drop(topic, g)
                    except Unavailable as exc:
                        log.warning("profiles.rebuild_group_left", extra={"group": g, "topic": topic, "err": exc.message})


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Consume the three topics until ``stop`` is set."""
    async with Engines(settings) as e:
        worker = ProfilesWorker(e.store, e.redis, e.keys, secret=settings.secret)
        await e.store.check_schema()
        log.info("worker.started", extra={"worker": "profiles", "node": settings.node_id})
        await asyncio.gather(*(run_consumer(e.log, t, CONSUMER, settings.node_id, worker, stop=stop) for t in TOPICS))
