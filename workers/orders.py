"""``livecommerce worker orders``: settle orders from the log, time out unpaid ones, run the
sale schedule.

Three loops in one process:

* **settle**: consume topic ``orders`` (group ``orders``) in batches of
  ``LC_WORKER_BATCH``: ``order.reserved`` inserts the order, ``order.paid`` /
  ``order.cancelled`` move it; a batch is one transaction that claims every event id once
  (``store.apply_batch``) and applies the steps in log order (``Tx.settle``, the rule is
  :func:`livecommerce.orders.settle`), so a redelivered event or batch changes nothing;
  after the commit the buyers are told (``order.paid``, ``order.cancelled``) through the
  node inboxes.
* **time-out**: every second, holds past their payment deadline are released in Redis
  (stock back, exactly once) and ``order.cancelled`` is appended; an ended sale with no
  hold left is settled: its keys expire after ``LC_SALE_RETENTION_S`` (docs/retention.md).
* **auto-confirm**: every ``LC_AUTO_CONFIRM_SWEEP_S``, the holder of the sweep's lease
  confirms receipt of the orders delivered ``LC_AUTO_CONFIRM_S`` ago (``order.completed``,
  settled by this same consumer): :func:`confirm_sweep`.
* **schedule**: sales whose start or end time came are started / ended in Redis and
  ``sale.started`` / ``sale.ended`` is broadcast once (an announcement claim in Redis), so
  several worker processes may run this loop safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

from livecommerce.broker_redis import RedisBroker
from livecommerce.cart import is_cart_order
from livecommerce.checkout import Checkout, sale_of, sale_started_data
from livecommerce.clock import now_ms as _now_ms
from livecommerce.config import Settings
from livecommerce.errors import Conflict, LiveCommerceError, NotFound
from livecommerce.fulfilment import COMPLETED, DELIVERED, SHIPPED, Shipment, shipment_from
from livecommerce.fulfilment import EVENT_TYPES as FULFILMENT_EVENTS
from livecommerce.fulfilment_redis import FulfilmentRedis
from livecommerce.fulfilment_sql import due_confirmations, put_shipments
from livecommerce.log import Log, LogEvent
from livecommerce.notify import Notifier
from livecommerce.order_lines_sql import put_order_coupons, put_order_lines
from livecommerce.orders import Order, OrderState, OrderStep, Payment, new_order
from livecommerce.protocol.events import envelope
from livecommerce.store_sql import SqlStore

from .runner import apply_halving, freeze_heap, run_consumer
from .wiring import Engines

log = logging.getLogger("livecommerce.workers.orders")
CONSUMER = "orders"
PUSHED = frozenset({"order.paid", "order.cancelled", COMPLETED})  # the buyer hears these from the worker


class OrderSettler:
    """The ``orders`` handler: a fetched batch is one transaction (``apply_batch``: each event
    id claimed once; ``Tx.settle``: the batch's order steps, one statement per table), so a
    redelivered batch or a duplicate event changes nothing. A batch that fails is halved
    until the bad event is alone (:func:`~workers.runner.apply_halving`): the others are
    applied once, the bad one is retried as before. After each commit the buyers of the
    orders that moved are told (``order.paid``, ``order.cancelled``) in one round of pushes.
    """

    def __init__(self, store: SqlStore, notifier: Notifier | None) -> None:
        self.store = store
        self.notifier = notifier

    def _order(self, d: dict[str, Any]) -> Order:
        window = int(d.get("payment_window_s", 900))
        reserved_ms = int(d.get("reserved_ms") or (int(d.get("pay_by_ms", 0)) - window * 1000))
        return new_order(
            order_id=d["order_id"],
            sale_id=d["sale_id"],
            room_id=d["room_id"],
            user_id=d["user_id"],
            qty=int(d["qty"]),
            unit_price=int(d["unit_price"]),
            now_ms=reserved_ms,
            payment_window_s=window,
            request_id=d.get("request_id"),
            gross=None if d.get("gross") is None else int(d["gross"]),
            discount=int(d.get("discount") or 0) if d.get("gross") is not None else 0,
            coupon_id=d.get("coupon_id") if d.get("gross") is not None else None,
        )

    def _step(self, ev: LogEvent) -> OrderStep | None:
        """The order step an event asks for (None: not an order event this worker applies).

        Raises:
            KeyError, ValueError, BadFrame: an ``order.reserved`` that does not describe an
                order, or a move without an order id (a bad event).
        """
        d = ev.data
        if ev.type == "order.reserved":
            return OrderStep(ev.id, d["order_id"], "reserved", ev.ts, order=self._order(d))
        if ev.type in FULFILMENT_EVENTS:
            return self._fulfilment_step(ev)
        if ev.type not in ("order.paid", "order.cancelled"):
            return None
        try:  # the whole order, to rebuild it if the reserve event never made it (a failed append)
            rebuilt: Order | None = self._order(d)
        except (KeyError, ValueError, TypeError, LiveCommerceError):
            rebuilt = None
        paid = ev.type == "order.paid"
        payment = Payment(int(d["amount"]), int(d.get("discount") or 0), d.get("coupon_id")) if paid and "amount" in d else None
        return OrderStep(ev.id, str(d["order_id"]), "paid" if paid else "cancelled", ev.ts, order=rebuilt,
                         reason=d.get("reason"), payment=payment)

    @staticmethod
    def _fulfilment_step(ev: LogEvent) -> OrderStep | None:
        """The order step of a fulfilment event (None: the event moves no order: a later
        parcel of a shipped order, a parcel delivered while others are on their way, a return
        parcel). The state it reaches was decided by the fulfilment record when the event was
        made (``order_state``)."""
        d = ev.data
        if ev.type == COMPLETED:
            return OrderStep(ev.id, str(d["order_id"]), "completed", ev.ts, reason=f"receipt confirmed ({d.get('by')})")
        to = d.get("order_state")
        if to not in ("shipped", "delivered"):
            return None
        what = "shipped" if ev.type == SHIPPED else "delivered"
        return OrderStep(ev.id, str(d["order_id"]), cast(OrderState, to), ev.ts,
                         reason=f"{d.get('shipment_id')} {what} ({d.get('carrier')} {d.get('tracking_number')})")

    async def _apply(self, events: list[LogEvent], pushes: list[tuple[str, dict[str, Any]]]) -> None:
        """One transaction for ``events``; the pushes of the orders that moved are added to
        ``pushes`` once it committed."""
        todo: list[tuple[LogEvent, OrderStep]] = []
        parcels: list[Shipment] = []
        lines: list[dict[str, Any]] = []
        async with self.store.apply_batch(CONSUMER, [e.id for e in events], now_ms=_now_ms()) as (tx, fresh):
            for ev in events:
                if ev.id not in fresh:
                    continue  # applied before: a redelivery
                fresh.discard(ev.id)  # an id twice in one batch is applied once
                if ev.type in (SHIPPED, DELIVERED):
                    parcels.append(shipment_from(ev.data))
                if ev.type in ("order.reserved", "order.paid", "order.cancelled") and ev.data.get("lines"):
                    lines.append(ev.data)  # a cart order's lines and coupons (any of its events carries them)
                step = self._step(ev)
                if step is None:
                    if ev.type not in FULFILMENT_EVENTS:
                        log.info("orders.ignored", extra={"type": ev.type, "event": ev.id})
                    continue
                todo.append((ev, step))
            outcomes = await tx.settle([step for _, step in todo])
            if parcels:  # in log order, in the batch's transaction: each parcel once, forward only
                await put_shipments(tx.conn, parcels)
            if lines:  # each order's lines and coupons once (keyed by order and line number / coupon), with the order
                await put_order_lines(tx.conn, lines)
                await put_order_coupons(tx.conn, lines)
        for (ev, step), out in zip(todo, outcomes, strict=True):
            d = ev.data
            if out.refused is not None:
                # Redis decided first (it is the source of truth for holds); a late or
                # impossible transition is recorded as skipped, not retried forever
                log.warning("orders.transition_refused", extra={"order": step.order_id, "to": step.to, "err": out.refused.message})
            elif ev.type in PUSHED and out.changed:  # the gateway pushed order.shipped / order.delivered itself
                body = {k: d[k] for k in ("order_id", "sale_id", "qty") if k in d} | {
                    "amount": d.get("amount", int(d.get("qty", 0)) * int(d.get("unit_price", 0))), "reason": d.get("reason")}
                if ev.type == COMPLETED:
                    body = {"order_id": d["order_id"], "by": d.get("by"), "completed_ms": d.get("completed_ms")}
                pushes.append((d["user_id"], envelope(ev.type, d.get("room_id"), body, ts=ev.ts)))

    async def handle(self, events: list[LogEvent]) -> None:
        """Apply a batch (see the class docstring).

        Raises:
            Unavailable: SQL unreachable (the batch comes back; what committed is skipped then).
            BatchFailed: some events applied, others failed (see :mod:`workers.runner`).
            Exception: the batch's only event, or every one, failed.
        """
        pushes: list[tuple[str, dict[str, Any]]] = []
        try:
            await apply_halving(events, lambda part: self._apply(part, pushes))
        finally:
            if self.notifier is not None and pushes:
                try:
                    await self.notifier.to_users(pushes)
                except LiveCommerceError as exc:  # lossy, as a push is: the order is in SQL
                    log.warning("orders.push_failed", extra={"users": len(pushes), "err": exc.message})


async def schedule_tick(checkout: Checkout, broker: RedisBroker, store: SqlStore | None, now_ms: int) -> None:
    """Start and end the sales whose time came; broadcast each transition once."""
    starts, ends = await checkout.due_transitions(now_ms)
    for sid in starts:
        try:
            sale = await checkout.sales.get(sid)
            if now_ms < sale.ends_ms:
                state = await checkout.sales.start(sid, now_ms)
                st = await checkout.sales.stats(sid)
                if await checkout.claim_announcement(sid, "started"):
                    env = envelope("sale.started", sale.room, sale_started_data(sale, st.remaining), ts=now_ms)
                    await broker.publish_room(sale.room, env, now_ms=now_ms)
                    log.info("sale.started", extra={"sale": sid, "room": sale.room})
                if store is not None:
                    await store.put_sale(sale, state=state, now_ms=now_ms)
        except (NotFound, Conflict) as exc:
            log.info("schedule.start_skipped", extra={"sale": sid, "err": exc.message})
        await checkout.unschedule(sid, "start")
    for sid in ends:
        try:
            state = await checkout.sales.end(sid, now_ms)
            sale = await checkout.sale(sid)
            if await checkout.claim_announcement(sid, "ended"):
                env = envelope("sale.ended", sale.room, {"sale_id": sid}, ts=now_ms)
                await broker.publish_room(sale.room, env, now_ms=now_ms)
                log.info("sale.ended", extra={"sale": sid, "room": sale.room})
            if store is not None:
                await store.put_sale(sale, state=state, now_ms=now_ms)
        except (NotFound, Conflict) as exc:
            log.info("schedule.end_skipped", extra={"sale": sid, "err": exc.message})
        await checkout.unschedule(sid, "end")


async def timeout_tick(checkout: Checkout, broker: RedisBroker, now_ms: int) -> int:
    """Release overdue holds; broadcast the new stock of each sale that got some back."""
    done = await checkout.expire_due(now_ms)
    touched = {sale_of(oid) for oid, outcome in done if outcome == "released" and not is_cart_order(oid)}
    for sid in touched:
        st = await checkout.sales.stats(sid)
        sale = await checkout.sale(sid)
        env = envelope("sale.stock", sale.room, {"sale_id": sid, "remaining": st.remaining}, ts=now_ms)
        await broker.publish_room(sale.room, env, now_ms=now_ms)
    if done:
        log.info("orders.timed_out", extra={"count": len(done)})
    return len(done)


async def confirm_sweep(records: FulfilmentRedis, store: SqlStore, durable: Log, *, owner: str, now_ms: int, after_s: int,
                        lease_ms: int, limit: int = 500) -> int:
    """Confirm receipt of the orders delivered ``after_s`` ago or more (``order.completed``
    by ``auto``). One sweeper at a time holds the lease (``owner``: the node id, so a
    restarted worker takes its own lease back; a dead one's expires after ``lease_ms``).
    Exactly once whatever dies when: each order's confirm is one Redis step, the event has one
    id, and an order confirmed whose event never made it is still ``delivered`` in SQL, so
    the next sweep finds it and appends the event again. Returns the orders confirmed now."""
    if not await records.take_lease("auto-confirm", owner=owner, lease_ms=lease_ms):
        return 0
    done = 0
    for oid, user, room in await due_confirmations(store, delivered_before_ms=now_ms - after_s * 1000, limit=limit):
        try:
            done += await records.confirm_and_log(durable, oid, user=user, room=room, by="auto", now_ms=now_ms)
        except Conflict as exc:  # a return is open: the order completes once it is settled, or never
            log.info("orders.auto_confirm_skipped", extra={"order": oid, "err": exc.message})
    if done:
        log.info("orders.auto_confirmed", extra={"count": done})
    return done


class OrdersWorker:
    """Everything the worker holds; ``drain`` is the burst mode used by tests."""

    def __init__(self, settings: Settings, *, redis: Any = None, durable: Log | None = None) -> None:
        self.s = settings
        self.engines = Engines(settings, redis=redis, durable=durable)
        self.keys = self.engines.keys
        self.redis = self.engines.redis
        self.log = self.engines.log
        self.store = self.engines.store
        self.broker = self.engines.broker
        self.notifier = self.engines.notifier
        self.checkout = Checkout(self.redis, self.keys, self.log, sale_retention_s=settings.sale_retention_s)
        self.settler = OrderSettler(self.store, self.notifier)
        self.fulfilment = FulfilmentRedis(self.redis, self.keys)

    async def sweep(self, now_ms: int) -> int:
        """One auto-confirm sweep (see :func:`confirm_sweep`)."""
        lease_ms = max(30_000, int(self.s.auto_confirm_sweep_s * 3000))
        return await confirm_sweep(self.fulfilment, self.store, self.log, owner=self.s.node_id, now_ms=now_ms,
                                   after_s=self.s.auto_confirm_s, lease_ms=lease_ms)

    async def drain(self) -> int:
        return await run_consumer(self.log, "orders", CONSUMER, self.s.node_id, self.settler.handle, burst=True, fetch_timeout_ms=300,
                                  batch=self.s.worker_batch, prefetch=True)

    async def consume(self, stop: asyncio.Event) -> None:
        await run_consumer(self.log, "orders", CONSUMER, self.s.node_id, self.settler.handle, stop=stop, batch=self.s.worker_batch, prefetch=True)

    async def clock(self, stop: asyncio.Event) -> None:
        tick = 0
        next_sweep = 0.0
        while not stop.is_set():
            try:
                now = _now_ms()
                await schedule_tick(self.checkout, self.broker, self.store, now)
                if tick % 4 == 0:
                    await timeout_tick(self.checkout, self.broker, now)
                if now >= next_sweep:
                    next_sweep = now + self.s.auto_confirm_sweep_s * 1000
                    await self.sweep(now)
            except LiveCommerceError as exc:
                log.warning("orders.clock_failed", extra={"err": exc.message})
            except Exception:
                log.exception("orders.clock_crashed")
            tick += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    async def close(self) -> None:
        await self.engines.close()


async def run(settings: Settings, stop: asyncio.Event) -> None:
    w = OrdersWorker(settings)
    await w.store.check_schema()
    freeze_heap()
    log.info("worker.started", extra={"worker": "orders", "node": settings.node_id})
    try:
        await asyncio.gather(w.consume(stop), w.clock(stop))
    finally:
        await w.close()
