"""The generic consumer loop every log worker runs: fetch a batch, handle it, ack it.

At-least-once in, exactly-once effects out: ``handle`` stores its effects idempotently on
``LogEvent.id`` (``INSERT ... ON CONFLICT DO NOTHING`` on an applied-events table, or the
same in one Redis script), and the batch is acked only after ``handle`` returned. A crash
between the two redelivers the batch and the idempotent store absorbs it.

``burst=True`` is the drain mode of arq: take what is there, return how many events were
handled. Tests await it instead of sleeping.

Batches and bad events: a worker applies a fetched batch in one transaction and, if that
fails for anything but :class:`~livecommerce.errors.Unavailable`, halves it
(:func:`apply_halving`) until the event that fails is alone, so the events around it are
applied (once: the effects are idempotent) and acked; it raises :class:`BatchFailed`, and
``run_consumer`` acks what was applied and gives back only what failed, which comes back
first in the next fetch, alone in its failing, as a bad event always has.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable

from livecommerce.errors import Unavailable
from livecommerce.log import Consumer, Delivery, LagReporter, Log, LogEvent
from workers.metrics import LAG_EVERY_S, WorkerMetrics, process_metrics

logger = logging.getLogger("livecommerce.workers.runner")

Handler = Callable[[list[LogEvent]], Awaitable[None]]

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0


def freeze_heap() -> None:
    """Move everything allocated so far (modules, engines, tables) out of the garbage
    collector's sight (``gc.freeze``), so the collections a batch's thousands of short-lived
    objects trigger scan only those: the batch workers call it once at start (measured: about
    a third less CPU per event for the orders worker)."""
    gc.collect()
    gc.freeze()


class BatchFailed(Exception):
    """A handler applied part of a batch: the events whose ids are in ``done`` are applied
    (ack them); ``failed`` lists the ids that raised, ``cause`` the first of their errors."""

    def __init__(self, done: set[str], failed: list[str], cause: Exception) -> None:
        super().__init__(f"{len(failed)} event(s) failed, {len(done)} applied: {cause!r}")
        self.done = done
        self.failed = failed
        self.cause = cause


async def apply_halving(events: list[LogEvent], apply: Callable[[list[LogEvent]], Awaitable[None]]) -> None:
    """``await apply(events)`` (one transaction); if it raises anything but ``Unavailable``,
    apply each half the same way, so a bad event ends up alone and every other event is
    applied. ``apply`` must be idempotent on the event ids (a half may hold events an
    earlier, failed attempt did not commit).

    Raises:
        Unavailable: from ``apply``, at once (halving cannot help; the batch comes back).
        Exception: what ``apply`` raised, when no event of the batch could be applied.
        BatchFailed: some events applied (``done``), others failed.
    """
    done: set[str] = set()
    failed: list[tuple[str, Exception]] = []

    async def go(part: list[LogEvent]) -> None:
        try:
            await apply(part)
        except Unavailable:
            raise
        except Exception as exc:
            if len(part) == 1:
                failed.append((part[0].id, exc))
                return
            mid = len(part) // 2
            await go(part[:mid])
            await go(part[mid:])
            return
        done.update(e.id for e in part)

    await go(events)
    if not failed:
        return
    if not done:
        raise failed[0][1]
    raise BatchFailed(done, [i for i, _ in failed], failed[0][1])


class _Backoff:
    """Exponential delays: 0.1 s, 0.2 s ... up to ``BACKOFF_MAX_S``; ``reset`` after a success."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.next_s = first_s

    def step(self) -> float:
        delay, self.next_s = self.next_s, min(self.next_s * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.next_s = self.first_s


async def _pause(delay_s: float, stop: asyncio.Event | None) -> None:
    """Sleep ``delay_s``, or less if ``stop`` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(delay_s)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)


async def _release(consumer: Consumer, batch: list[Delivery], fields: dict[str, object]) -> None:
    """Nack a batch that was not handled; if even that fails, redelivery waits for a claim."""
    try:
        await consumer.nack(batch)
    except Unavailable as exc:
        logger.warning("worker.nack_failed", extra={**fields, "err": exc.message})


async def run_consumer(
    log: Log,
    topic: str,
    group: str,
    name: str,
    handle: Handler,
    *,
    burst: bool = False,
    stop: asyncio.Event | None = None,
    batch: int = 100,
    prefetch: bool = False,
    fetch_timeout_ms: int = 1000,
    backoff_first_s: float = BACKOFF_FIRST_S,
    backoff_max_s: float = BACKOFF_MAX_S,
    metrics: WorkerMetrics | None = None,
) -> int:
    """Consume ``topic`` as member ``name`` of ``group`` until stopped; return events handled.

    Each round fetches up to ``batch`` events, awaits ``handle(events)`` and acks them.
    ``handle`` must make its effects idempotent on ``LogEvent.id``: a batch may come again
    after a crash, a failed ack or a rebalance.

    * ``burst=True``: return as soon as a fetch (waiting ``fetch_timeout_ms``) comes back
      empty, with the number of events acked.
    * ``prefetch=True``: while ``handle`` works on this batch, what the log already holds
      is fetched (without waiting for more, so an idle log never delays this batch's ack);
      it is handled next, or, when this batch fails, given back with it (after it), and on
      stop it goes back to the group with ``close``.
    * ``stop``: when set, the current batch is finished (handled and acked), then the
      consumer leaves the group and the count is returned. A fetch in progress ends within
      ``fetch_timeout_ms``.
    * ``Unavailable`` from the log or from ``handle``: the batch (if any) is given back,
      ``worker.backoff`` is logged, and the loop retries after an exponential backoff
      (``backoff_first_s`` doubling up to ``backoff_max_s``).
    * any other exception from ``handle``: the batch is given back unacked (so it is
      redelivered) and ``worker.handler_failed`` is logged with the traceback; a long-running
      loop retries after the backoff, a burst re-raises it.
    * :class:`BatchFailed` from ``handle``: the events it names ``done`` are acked and
      counted, the others given back, ``worker.handler_failed`` is logged; a burst re-raises
      its ``cause``, a long-running loop goes on at once (it made progress; the failed
      events come back first in the next fetch).

    Metrics (``metrics``, default :func:`workers.metrics.process_metrics`): events acked,
    handler errors and batch sizes always; a long-running loop also registers its health
    (see :mod:`workers.metrics`: it progresses on each ack and each empty fetch, and is
    marked failed if an exception ends it) and polls its group's lag every
    :data:`~workers.metrics.LAG_EVERY_S` s when the consumer can tell it
    (:class:`~livecommerce.log.LagReporter`).

    Raises:
        Exception: in burst mode, whatever ``handle`` raised (other than ``Unavailable``).
    """
    m = metrics or process_metrics()
    state = None if burst else m.loop(topic, group, name)
    counters = m.counters(topic, group)  # the label children, looked up once
    fields: dict[str, object] = {"topic": topic, "group": group, "worker": name}
    backoff = _Backoff(backoff_first_s, backoff_max_s)
    consumer: Consumer | None = None
    handled = 0
    ahead: asyncio.Future[list[Delivery]] | None = None  # the next batch, fetched while the handler works

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    async def back_off(stage: str, exc: BaseException) -> None:
        delay = backoff.step()
        err = exc.message if isinstance(exc, Unavailable) else repr(exc)
        logger.warning("worker.backoff", extra={**fields, "stage": stage, "delay_s": delay, "err": err})
        await _pause(delay, stop)

    async def take_ahead() -> list[Delivery] | None:
        """The batch fetched ahead, once its fetch is over (None: none, or the fetch failed
        and the next round fetches again)."""
        nonlocal ahead
        if ahead is None:
            return None
        task, ahead = ahead, None
        try:
            return await task
        except Unavailable:
            return None

    async def give_back(c: Consumer, deliveries: list[Delivery] | None) -> None:
        if deliveries:
            await _release(c, deliveries, fields)

    async def poll_lag(c: Consumer) -> None:
        """Ask the log for the group's lag, at most every LAG_EVERY_S (never while a fetch runs)."""
        if state is None or not isinstance(c, LagReporter) or time.monotonic() - state.lag_at < LAG_EVERY_S:
            return
        try:
            m.set_lag(state, await c.lag())
        except Unavailable as exc:
            state.lag_at = time.monotonic()
            logger.warning("worker.lag_failed", extra={**fields, "err": exc.message})

    later: list[Delivery] | None = None  # a batch fetched ahead, handled next
    failure: BaseException | None = None
    try:
        while not stopped():
            if later:
                assert consumer is not None
                deliveries, later = later, None
            else:
                try:
                    if consumer is None:
                        consumer = await log.consumer(topic, group, name)
                        logger.info("worker.started", extra=fields)
                    deliveries = await consumer.fetch(max_events=batch, timeout_ms=fetch_timeout_ms)
                except Unavailable as exc:
                    await back_off("fetch", exc)
                    continue
            if not deliveries:
                if burst:
                    break
                if state is not None:
                    state.progressed(committed=False)  # drained: nothing waits to be committed
                await poll_lag(consumer)
                continue
            counters.batch_size.observe(len(deliveries))
            if prefetch:  # what is there already, without waiting: an idle log must not hold this batch's ack
                ahead = asyncio.ensure_future(consumer.fetch(max_events=batch, timeout_ms=0))
            try:
                await handle([d.event for d in deliveries])
            except Unavailable as exc:
                nxt = await take_ahead()  # one consumer call at a time: the fetch ahead ends first
                # one nack for both, this batch first (Kafka rewinds each partition to the
                # first offset given back: two nacks would seek forward past this batch)
                await _release(consumer, deliveries + (nxt or []), fields)
                await back_off("handle", exc)
                continue
            except BatchFailed as part:
                nxt = await take_ahead()
                counters.errors.inc()
                logger.error("worker.handler_failed", exc_info=part.cause,
                             extra={**fields, "events": len(deliveries), "failed": part.failed[:10], "applied": len(part.done)})
                applied = [d for d in deliveries if d.event.id in part.done]
                # the failed ones, then the batch fetched ahead, in one nack (they come back first)
                await _release(consumer, [d for d in deliveries if d.event.id not in part.done] + (nxt or []), fields)
                try:
                    await consumer.ack(applied)
                    handled += len(applied)
                    counters.committed(state, len(applied))
                except Unavailable as exc:  # applied: they come back and the idempotent store absorbs them
                    await back_off("ack", exc)
                if burst:
                    raise part.cause from part
                continue
            except Exception:
                nxt = await take_ahead()
                counters.errors.inc()
                logger.exception("worker.handler_failed", extra={**fields, "events": len(deliveries),
                                                              "first": deliveries[0].event.id})
                await _release(consumer, deliveries + (nxt or []), fields)
                if burst:
                    raise
                await _pause(backoff.step(), stop)
                continue
            nxt = await take_ahead()
            try:
                await consumer.ack(deliveries)
            except Unavailable as exc:
                # effects are stored; the events come back and the idempotent store absorbs them
                await give_back(consumer, nxt)
                await back_off("ack", exc)
                continue
            handled += len(deliveries)
            counters.committed(state, len(deliveries))
            backoff.reset()
            if not nxt:
                await poll_lag(consumer)
            later = nxt  # empty or None: the next round fetches (and waits) as usual
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if state is not None:
            m.ended(state, failure)
        if ahead is not None:  # cancelled while the handler worked
            ahead.cancel()
            with contextlib.suppress(BaseException):
                await ahead
        if consumer is not None:
            try:
                await consumer.close()  # a batch fetched ahead and not handled goes back to the group
            except Unavailable as exc:
                logger.warning("worker.close_failed", extra={**fields, "err": exc.message})
            logger.info("worker.stopped", extra={**fields, "handled": handled})
    return handled
