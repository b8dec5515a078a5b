"""``livecommerce worker reach``: fan-outs of ``host.live`` and schedule reminders, and the
reminder sweep (rules: :mod:`livecommerce.reach`, docs/reach.md).

Two loops in one process:

* **Fan-out** (consumer group ``reach`` on topic ``reach``): for each ``host.live`` or
  ``schedule.due`` event, page through its audience (the host's followers, the schedule's
  subscribers) :data:`~livecommerce.reach.PAGE` users at a time. Each page is one SQL
  transaction (:func:`livecommerce.reach_sql.fan_page`: the page's inbox rows and the
  fan-out's cursor); then the users whose row is new get their unread count raised (one
  Redis pipeline) and the notice pushed to wherever they are connected (one presence read
  and one publish to the nodes' inboxes: :meth:`~livecommerce.notify.Notifier.to_users`).
  Exactly one row per recipient whatever is redelivered or killed: the rows' primary key
  and the cursor, committed together. A ``host.live`` also reminds the subscribers of the
  host's schedules that the go-live starts (up to 30 min early), with the sweep's event id. A push is at most once (a kill between a page's
  commit and its push loses that page's pushes; the rows are in the inboxes).
* **Sweep** (every :data:`SWEEP_S`, by the worker holding the ``reach:sweep`` lease): due
  schedules become ``schedule.due`` events (one ``append_many``), then ``reminded``; every
  :data:`PRUNE_EVERY_MS`, inbox rows older than 30 days are deleted (``reach_sql.prune``). A
  crash between the two appends them again on the next sweep: the same event ids, whose
  fan-outs are finished, so nobody is reminded twice.

:meth:`ReachWorker.drain` and :meth:`Sweeper.sweep` are the burst modes tests await.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from livecommerce import reach_sql
from livecommerce.clock import now_ms as _now_ms
from livecommerce.config import Settings
from livecommerce.errors import Unavailable
from livecommerce.log import Log, LogEvent, new_event
from livecommerce.notify import Notifier
from livecommerce.protocol.events import envelope
from livecommerce.reach import (
    EARLY_MS,
    HOST_LIVE,
    KEEP_MS,
    PAGE,
    SCHEDULE_DUE,
    TOPIC,
    Fanout,
    due_event,
    due_event_id,
    fanout_of,
    push_frame,
    starts_with_show,
)
from livecommerce.reach_redis import RedisReach
from livecommerce.store_sql import SqlStore

from .runner import run_consumer
from .wiring import Engines

log = logging.getLogger("livecommerce.workers.reach")

CONSUMER = "reach"
SWEEP_S = 1.0
LEASE_MS = 30_000
PRUNE_EVERY_MS = 600_000  # inbox rows older than KEEP_MS go, by the sweeper, every 10 min


class ReachWorker:
    """The fan-out handler (see the module docstring). ``notifier`` None: rows only."""

    def __init__(self, store: SqlStore, reach: RedisReach, notifier: Notifier | None, *, page: int = PAGE) -> None:
        self.store = store
        self.reach = reach
        self.notifier = notifier
        self.page = page
        self.written = 0  # rows written by this process
        self.pushed = 0  # notices sent to nodes by this process

    async def __call__(self, events: list[LogEvent]) -> None:
        """Fan out every reach event of the batch, one after the other.

        Raises:
            Unavailable: SQL unreachable (the batch comes back; finished pages are skipped).
        """
        for e in events:
            f = fanout_of(e.type, e.id, e.data)
            if f is None:
                continue
            await self.fan(f)
            if e.type == HOST_LIVE:
                await self.remind_with_show(f.of, str(e.data["room"]), int(e.data.get("live_ms") or 0))

    async def remind_with_show(self, host: str, room: str, live_ms: int) -> int:
        """The host's schedules this go-live starts (:func:`~livecommerce.reach.starts_with_show`):
        their subscribers are reminded now, by the fan-out the sweep's ``schedule.due`` would
        run (same event id: whichever comes first writes the rows, the other finds it done);
        then they are ``reminded``. Returns how many schedules."""
        mine = [s for s in await reach_sql.host_scheduled(self.store, host, until_ms=live_ms + EARLY_MS)
                if starts_with_show(s, host=host, room=room, live_ms=live_ms)]
        for s in mine:
            due = fanout_of(SCHEDULE_DUE, due_event_id(s.id), due_event(s))
            assert due is not None
            await self.fan(due)
        await reach_sql.mark_reminded(self.store, [s.id for s in mine], now_ms=_now_ms())
        return len(mine)

    async def fan(self, f: Fanout) -> int:
        """Every remaining page of ``f``; return the rows this call wrote."""
        wrote = 0
        pages = 0
        while True:
            new, done = await reach_sql.fan_page(self.store, f, now_ms=_now_ms(), page=self.page)
            pages += 1
            if new:
                wrote += len(new)
                self.written += len(new)
                await self.deliver(f, new)
            if done:
                break
        log.info("reach.fanned_out", extra={"event": f.event_id, "audience": f.audience, "of": f.of, "rows": wrote,
                                            "pages": pages})
        return wrote

    async def deliver(self, f: Fanout, users: list[str]) -> None:
        """The page's new recipients: unread counts, then the notice to the connected ones.
        Best effort: the rows are committed, so a failure here is logged, not retried."""
        t, d = push_frame(f.notice)
        env = envelope(t, None, d, ts=_now_ms())
        try:
            await self.reach.add_unread(users)
            if self.notifier is not None:
                self.pushed += await self.notifier.to_users([(u, env) for u in users])
        except Unavailable as exc:
            log.warning("reach.push_failed", extra={"event": f.event_id, "users": len(users), "err": exc.message})

    async def drain(self, durable: Log, *, name: str = "reach-1", fetch_timeout_ms: int = 300) -> int:
        return await run_consumer(durable, TOPIC, CONSUMER, name, self, burst=True, fetch_timeout_ms=fetch_timeout_ms)


class Sweeper:
    """Turns due schedules into ``schedule.due`` events, under the sweep lease."""

    def __init__(self, store: SqlStore, reach: RedisReach, durable: Log, *, worker: str, lease_ms: int = LEASE_MS) -> None:
        self.store = store
        self.reach = reach
        self.log = durable
        self.worker = worker
        self.lease_ms = lease_ms
        self._pruned_ms = 0

    async def sweep(self, now_ms: int | None = None) -> int:
        """One pass; return how many schedules it announced (0 without the lease).

        Raises:
            Unavailable: Redis, SQL or the log unreachable.
        """
        if not await self.reach.take_lease(self.worker, self.lease_ms):
            return 0
        now = _now_ms() if now_ms is None else now_ms
        if now - self._pruned_ms >= PRUNE_EVERY_MS:
            self._pruned_ms = now
            gone = await reach_sql.prune(self.store, now - KEEP_MS)
            if gone:
                log.info("reach.pruned", extra={"rows": gone})
        due = await reach_sql.due_schedules(self.store, now)
        if not due:
            return 0
        await self.log.append_many([new_event(TOPIC, s.host, SCHEDULE_DUE, due_event(s), due_event_id(s.id), now)
                                    for s in due])
        n = await reach_sql.mark_reminded(self.store, [s.id for s in due], now_ms=now)
        log.info("reach.reminders_due", extra={"schedules": [s.id for s in due][:20], "count": len(due), "marked": n})
        return len(due)

    async def loop(self, stop: asyncio.Event) -> None:
        """Sweep every :data:`SWEEP_S` until ``stop``; then give the lease up, so another
        worker sweeps at once instead of after the lease."""
        while not stop.is_set():
            try:
                await self.sweep()
            except Unavailable as exc:
                log.warning("reach.sweep_failed", extra={"err": exc.message})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_S)
        try:
            await self.reach.release_lease(self.worker)
        except Unavailable as exc:
            log.warning("reach.lease_left", extra={"err": exc.message})


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Fan out and sweep until ``stop`` is set."""
    async with Engines(settings) as e:
        await e.store.check_schema()
        reach = RedisReach(e.redis, e.keys, ttl_s=settings.user_cache_ttl_s)
        worker = ReachWorker(e.store, reach, e.notifier)
        sweeper = Sweeper(e.store, reach, e.log, worker=settings.node_id)
        log.info("worker.started", extra={"worker": "reach", "node": settings.node_id})
        handled, _ = await asyncio.gather(
            run_consumer(e.log, TOPIC, CONSUMER, settings.node_id, worker, stop=stop, batch=10),
            sweeper.loop(stop))
        log.info("worker.stopped", extra={"worker": "reach", "handled": handled, "rows": worker.written})
