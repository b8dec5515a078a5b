"""The growth worker: analytics facts, experiment exposures, referral rewards and the
feed's GMV signal, from the durable log, exactly once.

Consumes, as group ``growth``: ``orders`` (``order.reserved``, ``order.paid``,
``order.refunded``), ``gifts`` (``gift.sent``), ``activity`` (``activity.watch``,
``activity.comment``) and ``growth`` (``growth.visit``, ``growth.acquired``,
``experiment.exposure``). A batch is one transaction (``store.apply_batch("growth",
ids)``): the events' claims, their facts (:func:`livecommerce.growth.facts_for`),
acquisitions and exposures (``livecommerce.growth_sql``), and the referral rewards they
complete (:mod:`livecommerce.referrals`: a claim on the invitee's row and two points
ledger rows whose ``ref_event_id`` is the paid order's event id) commit together, so an
event is applied once however often it is delivered.

After the commit, for the events this delivery applied: each paid order's amount is
added to its room's GMV counters in Redis (the feed's "GMV per minute"), and the rewarded
users' points are re-cached and pushed (as the points worker does). Both are best effort:
a crash or a Redis error between the commit and this step loses that bit of signal or
leaves the points cache stale until the user's next award, never a ledger row.

The referrer's reward is the experiment flag ``referral.referrer_points`` of the referrer
(read from the experiments the gateways see, without recording an exposure: the invite
page records it when it shows the amount).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livecommerce import growth_sql
from livecommerce.clock import now_ms as _now
from livecommerce.config import Settings
from livecommerce.errors import LiveCommerceError
from livecommerce.experiments import EXPOSURE, Exposure
from livecommerce.experiments_redis import ExperimentCache, ExperimentsRedis
from livecommerce.feed_redis import FeedRedis
from livecommerce.growth import ACQUIRED, TOPICS, Acquisition, Fact, acquisition_of, facts_for
from livecommerce.keys import Keys
from livecommerce.log import Log, LogEvent
from livecommerce.notify import Notifier
from livecommerce.points import Rules
from livecommerce.referrals import (
    REFERRER_FLAG,
    REFERRER_POINTS,
    Reward,
    referrer_points,
    reward_rows,
)
from livecommerce.retention import ROOM_RETENTION_S, USER_CACHE_TTL_S
from livecommerce.store import PointsRole
from livecommerce.store_sql import SqlStore
from workers.points import PointsWorker
from workers.runner import run_consumer
from workers.wiring import Engines

log = logging.getLogger("livecommerce.workers.growth")

CONSUMER = "growth"


class GrowthWorker:
    """The batch handler (one per process; the four topic loops share it)."""

    def __init__(self, store: SqlStore, redis: Any, keys: Keys, *, rules: Rules | None = None,
                 notifier: Notifier | None = None, experiments: ExperimentCache | None = None,
                 room_retention_s: int = ROOM_RETENTION_S, cache_ttl_s: int = USER_CACHE_TTL_S) -> None:
        self.store = store
        self.feed = FeedRedis(redis, keys, ttl_s=room_retention_s)
        self.experiments = experiments if experiments is not None else ExperimentCache(ExperimentsRedis(redis, keys))
        self.points = PointsWorker(store, redis, keys, rules or Rules(), notifier=notifier, cache_ttl_s=cache_ttl_s)
        self.applied = 0
        self.rewards: list[Reward] = []  # claimed by this process (tests, logs)

    async def __call__(self, events: list[LogEvent]) -> None:
        """Apply a batch in one transaction, then feed GMV and push rewarded points.

        Raises:
            Unavailable: SQL or Redis unreachable (the batch comes back; what was
                applied is skipped then).
        """
        book = await self.experiments.refresh()
        async with self.store.apply_batch(CONSUMER, [e.id for e in events]) as (tx, fresh):
            facts: list[Fact] = []
            acqs: list[Acquisition] = []
            exposures: list[tuple[str, Exposure, int]] = []
            applied: list[LogEvent] = []
            for e in events:
                if e.id not in fresh:
                    continue
                fresh.discard(e.id)  # an id twice in one batch is applied once
                applied.append(e)
                if e.type == ACQUIRED:
                    a = acquisition_of(e.data, e.ts)
                    if a is not None:
                        acqs.append(a)
                elif e.type == EXPOSURE:
                    d = e.data
                    if d.get("user") and d.get("exp") and d.get("variant"):
                        exposures.append((str(d["user"]), Exposure(str(d["exp"]), str(d["variant"])), e.ts))
                else:
                    facts.extend(facts_for(e.id, e.type, e.data, e.ts))
            await growth_sql.record(tx.conn, facts, acqs, exposures)
            maybe = {f.user for f in facts if f.kind == "pay"} | {a.user for a in acqs if a.referrer}
            rewards = await growth_sql.claim_rewards(tx.conn, maybe, now_ms=_now()) if maybe else []
            rows: list[tuple[str, PointsRole, int, str, str, int]] = []
            for r in rewards:
                pts = referrer_points(book.flag(r.referrer, REFERRER_FLAG, REFERRER_POINTS))
                rows.extend(reward_rows(r, referrer_pts=pts))
            if rows:
                await tx.add_points_entries(rows)
        self.applied += len(applied)
        self.rewards.extend(rewards)
        for r in rewards:
            log.info("referral.rewarded", extra={"invitee": r.invitee, "referrer": r.referrer, "event": r.event_id})
        try:  # best effort: the ledger is committed, these are signals and caches
            await self.feed.add_gmv([(str(f.room), f.amount, f.ts) for f in facts if f.kind == "pay" and f.room and f.amount])
            if rewards:
                await self.points.refresh(sorted({u for r in rewards for u in (r.invitee, r.referrer)}))
        except LiveCommerceError as exc:
            log.warning("growth.after_commit_failed", extra={"err": exc.message, "rewards": len(rewards)})


async def drain(log_: Log, worker: GrowthWorker, *, name: str = "growth-1", fetch_timeout_ms: int = 500) -> int:
    """Burst mode over the four topics; return the number of events handled."""
    n = 0
    for topic in TOPICS:
        n += await run_consumer(log_, topic, CONSUMER, name, worker, burst=True, fetch_timeout_ms=fetch_timeout_ms)
    return n


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Consume the four topics until ``stop`` is set."""
    async with Engines(settings) as e:
        worker = GrowthWorker(e.store, e.redis, e.keys, rules=Rules.from_settings(settings), notifier=e.notifier,
                              room_retention_s=settings.room_retention_s, cache_ttl_s=settings.user_cache_ttl_s)
        log.info("growth.worker_started", extra={"worker": settings.node_id})
        await asyncio.gather(*(run_consumer(e.log, t, CONSUMER, settings.node_id, worker, stop=stop) for t in TOPICS))
