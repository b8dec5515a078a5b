"""``livecommerce worker refunds``: apply every refund step from the log, exactly once.

Consumes topic ``orders`` as group ``refunds`` (other event types are skipped):

* ``refund.requested``: the ``refunds`` row (``requested``) and the order ``paid ->
  refund_requested`` (history row ``<refund>:requested``).
* ``refund.rejected``: the row ``rejected`` and the order back to ``paid``
  (``<refund>:rejected``); then the Redis record is marked done (the next request may come).
* ``refund.approved``: first the effects, each idempotent on the refund id, so a crash
  anywhere is repaired by the redelivery: (1) the sale's refund script (units leave
  ``paid``; back to stock when the campaign restocks, else counted as kept; a restock is
  broadcast as ``sale.stock``), (2) the wallet credit (a ``wallet.topup`` with the refund's
  idempotency key, appended to the log from the wallet outbox: the wallet worker writes the
  ledger row), (3) ``order.refunded`` appended with the same id every time. Then the row
  becomes ``approved``.
* ``order.refunded``: the order moves ``refund_requested -> refunded`` (all back) or ``->
  paid`` (partial) with the refund's units and amount (``<refund>:refunded``), which is what
  reverses the host's GMV (GMV is the net of refunds); the row becomes ``refunded``, the
  Redis record done, and the buyer gets ``order.refunded``. The points worker claws back
  the order's points from the same event; the profiles worker folds it into the profile
  and the fan intimacy.

Every SQL step runs in ``store.apply("refunds", event_id)``; steps met out of order (several
consumers, a lost append) catch up: each event carries the whole refund, and the order's
``refund_requested`` step is recorded under the deterministic id ``<refund>:requested``
whichever event gets there first, so the request's own event is then a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livecommerce.broker_redis import RedisBroker
from livecommerce.cart import is_cart_order
from livecommerce.cart_checkout import CartCheckout
from livecommerce.clock import now_ms as _now
from livecommerce.config import Settings
from livecommerce.errors import BadFrame, Conflict, LiveCommerceError, NotFound, Unavailable
from livecommerce.flash_sale_redis import RedisFlashSale
from livecommerce.keys import Keys
from livecommerce.log import Log, LogEvent
from livecommerce.notify import Notifier
from livecommerce.payments import PaymentProvider
from livecommerce.payments_http import HttpPaymentProvider
from livecommerce.payments_redis import PaymentsRedis
from livecommerce.protocol.events import envelope
from livecommerce.refunds import (
    APPROVED,
    EVENT_TYPES,
    ORDER_REFUNDED,
    REJECTED,
    REQUESTED,
    TOPIC,
    Refund,
    credit_key,
    credited_coins,
    event_id,
    home_state,
    pending_state,
    refund_from_event,
    settlement,
)
from livecommerce.refunds_redis import RECORD_RETENTION_S, RefundsRedis
from livecommerce.refunds_sql import decide, ensure, settle
from livecommerce.store_sql import SqlStore, SqlTx
from livecommerce.wallet_redis import RedisWallet

from .runner import run_consumer
from .wiring import Engines

log = logging.getLogger("livecommerce.workers.refunds")

CONSUMER = "refunds"
CATCH_UP_MS = 10 * 60_000  # how long a request waits for the orders worker to write its order's step
# the SQL states an order may still be in, behind the log, when its request is applied
BEHIND: dict[str, frozenset[str]] = {"refund_requested": frozenset({"reserved"}),
                                     "return_requested": frozenset({"reserved", "paid", "shipped"})}


class RefundsWorker:
    """The batch handler; ``effects`` counts refunds whose Redis effects ran now."""

    def __init__(self, store: SqlStore, redis: Any, keys: Keys, durable: Log, *, notifier: Notifier | None = None,
                 broker: RedisBroker | None = None, retention_s: int = RECORD_RETENTION_S,
                 provider: PaymentProvider | None = None) -> None:
        self.store = store
        self.log = durable
        self.sales = RedisFlashSale(redis, keys)
        self.cart = CartCheckout(redis, keys, durable, sales=self.sales)  # cart orders restock line by line
        self.wallet = RedisWallet(redis, keys)
        self.records = RefundsRedis(redis, keys)
        # an order paid through the provider is refunded there, to the original method
        # (docs/commerce.md, the payment boundary); without a provider, or for an order paid
        # by the dev /pay, the refund is wallet credit as before
        self.provider = provider
        self.payments = PaymentsRedis(redis, keys)
        self.notifier = notifier
        self.broker = broker
        self.retention_s = retention_s  # the refund records' lifetime once the order has none open
        self.effects = 0
        self.applied = 0

    async def __call__(self, events: list[LogEvent]) -> None:
        """Apply the batch's refund events in log order.

        Raises:
            Unavailable: SQL, Redis or the log unreachable, or the order's payment not in
                SQL yet (the batch comes back).
        """
        for e in events:
            if e.type in EVENT_TYPES:
                await self.handle(e)

    async def handle(self, e: LogEvent) -> None:
        r = refund_from_event(e.data)
        if e.type == APPROVED:
            await self._effects(e, r)
        async with self.store.apply(CONSUMER, e.id, now_ms=e.ts) as tx:
            fresh = tx is not None
            if tx is not None:
                await self._apply(tx, e, r)
        if fresh:
            self.applied += 1
        if e.type in (REJECTED, ORDER_REFUNDED):
            await self.records.settle(r.id, retention_s=self.retention_s)  # the order may take its next request
        if fresh:
            await self._push(e, r)

    async def _apply(self, tx: SqlTx, e: LogEvent, r: Refund) -> None:
        await ensure(tx.conn, r)
        if e.type == REQUESTED:
            await self._requested(tx, r, e.ts)
        elif e.type == APPROVED:
            await decide(tx.conn, r.id, "approved", by=str(e.data.get("decided_by", "")), ts_ms=e.ts, note=e.data.get("decision_note"))
        elif e.type == REJECTED:
            await decide(tx.conn, r.id, "rejected", by=str(e.data.get("decided_by", "")), ts_ms=e.ts, note=e.data.get("decision_note"))
            await self._requested(tx, r, e.ts)
            await self._move(tx, r, home_state(r), event_id(r.id, "rejected"), e.ts, reason=f"{r.kind} rejected")
        elif e.type == ORDER_REFUNDED:
            await decide(tx.conn, r.id, "approved", by=str(e.data.get("decided_by", "")), ts_ms=int(e.data.get("decided_ms") or e.ts),
                         note=e.data.get("decision_note"))
            await self._requested(tx, r, e.ts)
            to, qty, amount = settlement(r)
            await self._move(tx, r, to, event_id(r.id, "refunded"), e.ts, qty=qty, amount=amount, reason=f"refund {r.reason}")
            await settle(tx.conn, r.id, ts_ms=e.ts, restocked=bool(e.data.get("restocked")), credited=int(e.data.get("credited") or 0))

    async def _requested(self, tx: SqlTx, r: Refund, ts: int) -> None:
        """The order's ``paid -> refund_requested`` (a return: ``delivered ->
        return_requested``) step, under its deterministic id."""
        order = await tx.get_order(r.order_id)
        if order is None:
            raise Unavailable(f"order {r.order_id} is not settled in SQL yet")
        if order.state in BEHIND[pending_state(r)] and _now() - (r.requested_ms or ts) < CATCH_UP_MS:
            # the gate (Redis) saw the order paid / delivered before the orders worker wrote it:
            # the batch comes back once that consumer caught up (past CATCH_UP_MS the step is
            # recorded as refused, as any step SQL cannot take, so this group never stalls)
            raise Unavailable(f"order {r.order_id} is {order.state} in SQL, not yet {home_state(r)}")
        await self._move(tx, r, pending_state(r), event_id(r.id, "requested"), r.requested_ms or ts,
                         reason=f"{r.kind} asked: {r.reason}")

    async def _move(self, tx: SqlTx, r: Refund, to: Any, eid: str, ts: int, *, qty: int = 0, amount: int = 0, reason: str) -> None:
        try:
            await tx.transition(r.order_id, to, eid, now_ms=ts, refund_qty=qty, refund_amount=amount, reason=reason)
        except (Conflict, NotFound) as exc:
            # the log is the order's story; a step SQL cannot take is recorded, not retried forever
            log.warning("refunds.transition_refused", extra={"refund": r.id, "to": to, "err": exc.message})

    async def _effects(self, e: LogEvent, r: Refund) -> None:
        """Restock (or count as kept), credit the wallet, append ``order.refunded``:
        each idempotent on the refund id, in this order."""
        restocked, remaining, first = False, -1, False
        try:
            if is_cart_order(r.order_id):
                restocked = first = await self.cart.refund(r.order_id, r.id, qty_before=r.qty_before, qty=r.qty)
            else:
                outcome, restocked, remaining = await self.sales.refund(r.sale_id, r.order_id, r.id, r.qty)
                first = outcome == "ok"
        except (NotFound, Conflict) as exc:
            # a sale settled long ago has no stock to move any more (docs/retention.md)
            level = logging.INFO if exc.code == "sale_expired" else logging.ERROR
            log.log(level, "refunds.stock_not_moved", extra={"refund": r.id, "err": exc.message})
        to_original = await self._to_original(e, r)
        credited = 0 if to_original is not None else credited_coins(r.amount)
        if credited > 0:
            up = await self.wallet.topup(user=r.user_id, amount=credited, idempotency_key=credit_key(r.id), by=f"refund:{r.id}", now_ms=e.ts)
            await self.wallet.publish(self.log, [up.event])
        data = {**e.data, "restocked": restocked, "credited": credited, "full": r.full, "settled_ms": e.ts,
                "refunded_to": "original" if to_original is not None else "wallet", "provider_refund_id": to_original}
        await self.log.append(TOPIC, r.order_id, ORDER_REFUNDED, data, event_id=event_id(r.id, "refunded"), ts=e.ts)
        if first:
            self.effects += 1
            if restocked and self.broker is not None and not is_cart_order(r.order_id):
                env = envelope("sale.stock", r.room_id, {"sale_id": r.sale_id, "remaining": remaining}, ts=e.ts)
                try:
                    await self.broker.publish_room(r.room_id, env, now_ms=e.ts)
                except LiveCommerceError as exc:  # a lossy broadcast: the stock is in Redis
                    log.warning("refunds.stock_broadcast_failed", extra={"sale": r.sale_id, "err": exc.message})

    async def _to_original(self, e: LogEvent, r: Refund) -> str | None:
        """Refund ``r`` at the provider when the order was paid through it: the provider's
        refund id (idempotent on the refund id: a redelivery gets the same refund), else None
        (wallet credit).

        Raises:
            Unavailable: the provider or Redis down (the batch comes back).
        """
        if self.provider is None or r.amount <= 0:
            return None
        rec = await self.payments.intent(r.order_id)
        if rec is None:
            return None
        try:
            got = await self.provider.refund(intent_id=rec.intent_id, amount=r.amount, reason=f"refund:{r.id}",
                                             idempotency_key=credit_key(r.id))
        except BadFrame as exc:  # the provider refuses (e.g. the intent never succeeded): a bug to look at
            raise Unavailable(f"payment provider refused refund {r.id}: {exc.message}") from exc
        await self.payments.record_refund(r.order_id, {"id": got.id, "intent_id": rec.intent_id, "amount": got.amount,
                                                       "reason": f"refund:{r.id}", "status": got.status, "ts": e.ts})
        return got.id

    async def _push(self, e: LogEvent, r: Refund) -> None:
        if self.notifier is None:
            return
        t = {REQUESTED: "refund.requested", APPROVED: "refund.approved", REJECTED: "refund.rejected", ORDER_REFUNDED: "order.refunded"}[e.type]
        d = {"refund_id": r.id, "order_id": r.order_id, "qty": r.qty, "amount": r.amount}
        if e.type == ORDER_REFUNDED:
            d |= {"credited": e.data.get("credited"), "full": r.full, "restocked": e.data.get("restocked")}
        try:
            await self.notifier.to_user(r.user_id, envelope(t, r.room_id, d, ts=_now()))
        except LiveCommerceError as exc:
            log.warning("refunds.push_failed", extra={"user": r.user_id, "err": exc.message})


async def drain(durable: Log, worker: RefundsWorker, *, name: str = "refunds-1", fetch_timeout_ms: int = 300) -> int:
    """Burst mode: apply what the log holds now (including the ``order.refunded`` events
    this pass appends); return the number of events handled."""
    total = 0
    while True:
        n = await run_consumer(durable, TOPIC, CONSUMER, name, worker, burst=True, fetch_timeout_ms=fetch_timeout_ms)
        total += n
        if n == 0:
            return total


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Consume ``orders`` until ``stop`` is set."""
    async with Engines(settings) as e:
        provider = HttpPaymentProvider(settings.payment_provider_url) if settings.payment_provider_url else None
        worker = RefundsWorker(e.store, e.redis, e.keys, e.log, notifier=e.notifier, broker=e.broker,
                               retention_s=settings.sale_retention_s, provider=provider)
        try:
            await e.store.check_schema()
            log.info("worker.started", extra={"worker": "refunds", "node": settings.node_id})
            await run_consumer(e.log, TOPIC, CONSUMER, settings.node_id, worker, stop=stop)
        finally:
            if provider is not None:
                await provider.close()
