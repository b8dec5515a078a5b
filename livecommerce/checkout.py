"""The money path's orchestration: reserve, pay, cancel, time out, schedule.

Redis (through :class:`~livecommerce.flash_sale_redis.RedisFlashSale`) is the source of truth
for stock and holds; every state change is then appended to the durable log
(``orders`` topic, keyed by order id) with a deterministic event id
(``<order_id>:reserved|paid|cancelled``), so a retry after a crash appends the same event
again and the workers' effects stay exactly once.

Failure order and why it is safe:

* reserve succeeds, the log append fails: the client gets an error and retries with the same
  ``request_id``; the script answers the same order (``duplicate``) and the append is retried.
  If the client never retries, the hold still times out from Redis (:meth:`expire_due`), and
  the cancellation's event carries the whole order, so SQL learns of it then.
* pay succeeds in Redis, the append fails: the caller retries the payment (idempotent
  ``already_paid``), which appends again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from .cart import is_cart_order
from .cart_checkout import CartCheckout
from .errors import BadFrame, Conflict, LiveCommerceError, NotFound, Unavailable
from .flash_sale import (
    BatchBuy,
    Reject,
    Reserved,
    Sale,
    SaleState,
    check_ident,
    decide_reserve,
    request_key,
)
from .flash_sale_redis import BatchReserved, RedisFlashSale, check_buy
from .keys import Keys
from .log import Log, LogEvent, new_event
from .redis_conn import guarded
from .retention import ROOM_RETENTION_S, SALE_RETENTION_S

log = logging.getLogger("livecommerce.checkout")

MAX_BATCH = 500  # buys decided by one script call (Redis runs nothing else meanwhile)


class CouponService(Protocol):
    async def lock_for_order(self, user: str, coupon_id: str, order_id: str, amount: int) -> int: ...

    async def consume(self, order_id: str) -> None: ...

    async def restore(self, order_id: str) -> None: ...


class RoomGate(Protocol):
    """Whether a room's show has ended (gateways answer from a node-local cache kept by the
    room's broadcast, falling back to the room's state in Redis)."""

    async def ended(self, room: str) -> bool: ...


def new_order_id(sale_id: str, now_ms: int) -> str:
    """``<sale_id>.<time><random>``: the sale is recoverable from the id (rsplit on '.')."""
    return f"{sale_id}.{now_ms:x}{secrets.token_hex(5)}"


def sale_of(order_id: str) -> str:
    if "." not in order_id:
        raise NotFound(f"no order {order_id}", code="not_found")
    return order_id.rsplit(".", 1)[0]


@dataclass(frozen=True, slots=True)
class Opened:
    """A sale opened by :meth:`Checkout.start`: its state after the call, the sale with its
    current window (an early start moves it) and the units left."""

    state: SaleState
    sale: Sale
    remaining: int


@dataclass(frozen=True, slots=True)
class Placed:
    """A buy's answer from :meth:`Checkout.place`: ``result``; the sale's units left after
    its group commit (-1: not known); and, when the caller asked and the commit left no
    stock, who holds units then (one atomic snapshot with the answer), else None.
    ``behind``: buys of the sale queued for its next commit when this one was decided (a
    rush in progress: a stock figure taken now is superseded within milliseconds)."""

    result: Reserved | Reject
    remaining: int
    buyers: set[str] | None = None
    behind: int = 0


@dataclass(slots=True)
class _Pending:
    buy: BatchBuy
    request_id: str
    want_buyers: bool
    done: asyncio.Future[Placed]


@dataclass(frozen=True, slots=True)
class PayResult:
    order_id: str
    outcome: str  # paid | already_paid | already_cancelled | expired
    amount: int
    discount: int


class Checkout:
    # set by the gateway: a buy in a room whose show has ended answers ``room_ended``
    room_gate: RoomGate | None = None

    def __init__(self, redis: Any, keys: Keys, log: Log, *, coupons: CouponService | None = None,
                 sale_retention_s: int = SALE_RETENTION_S, room_retention_s: int = ROOM_RETENTION_S,
                 payment_window_s: int = 900) -> None:
        self.redis = redis
        self.keys = keys
        self.sales = RedisFlashSale(redis, keys)
        # cart orders (``cart.<hash>``): pay, cancel and time-out dispatch to it by the order id
        self.cart = CartCheckout(redis, keys, log, sales=self.sales, payment_window_s=payment_window_s,
                                 room_retention_s=room_retention_s)
        self.log = log
        self.coupons = coupons
        self.sale_retention_s = sale_retention_s  # a settled sale's keys (docs/retention.md)
        self.room_retention_s = room_retention_s  # the room's payers set after the last payment
        self._sale_cache: dict[str, Sale] = {}
        self._queues: dict[str, list[_Pending]] = {}  # sale -> buys waiting for its next commit
        self._committing: set[str] = set()  # sales whose commit loop runs
        self._commits: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ campaigns
    async def create_sale(self, sale: Sale) -> bool:
        """Store the sale in Redis and put it on the schedule (start and end times)."""
        created = await self.sales.create(sale)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.global_key("sched:start"), {sale.id: sale.starts_ms})
        pipe.zadd(self.keys.global_key("sched:end"), {sale.id: sale.ends_ms})
        pipe.sadd(self.keys.global_key("sales:active"), sale.id)
        await pipe.execute()
        return created

    async def sale(self, sale_id: str) -> Sale:
        s = self._sale_cache.get(sale_id)
        if s is None:
            s = await self.sales.get(sale_id)
            if len(self._sale_cache) > 10_000:
                self._sale_cache.clear()
            self._sale_cache[sale_id] = s
        return s

    async def due_transitions(self, now_ms: int) -> tuple[list[str], list[str]]:
        """Sale ids whose start / end time has come (still on the schedule)."""
        starts = await self.redis.zrangebyscore(self.keys.global_key("sched:start"), "-inf", now_ms, start=0, num=100)
        ends = await self.redis.zrangebyscore(self.keys.global_key("sched:end"), "-inf", now_ms, start=0, num=100)
        return [_s(x) for x in starts], [_s(x) for x in ends]

    async def claim_announcement(self, sale_id: str, what: str) -> bool:
        """True for exactly one caller per (sale, what): who broadcasts sale.started/ended."""
        return bool(await self.redis.set(self.keys.sale(sale_id, f"ann:{what}"), "1", nx=True, ex=7 * 86400))

    async def start(self, sale_id: str, now_ms: int) -> Opened:
        """Open the sale now (idempotent: a live or sold-out sale stays as it is), take it off
        the start schedule and put its end, which an early start may have moved, on the end
        schedule. Announcing it is the caller's (:meth:`claim_announcement`).

        Raises:
            NotFound: no such sale.
            Conflict: the sale has ended, or its window closed already.
            Unavailable: Redis unreachable.
        """
        state = await self.sales.start(sale_id, now_ms)
        st = await self.sales.stats(sale_id)
        sale = await self.sales.get(sale_id)  # the window may have moved
        self._sale_cache[sale_id] = sale
        await self.unschedule(sale_id, "start")
        async with guarded():
            await self.redis.zadd(self.keys.global_key("sched:end"), {sale_id: sale.ends_ms})
        return Opened(state, sale, st.remaining)

    async def unschedule(self, sale_id: str, what: str) -> None:
        await self.redis.zrem(self.keys.global_key(f"sched:{what}"), sale_id)

    async def close_for_room(self, sale_ids: list[str], *, marker: str, now_ms: int) -> list[str]:
        """The room's show ended: end its open (live or sold-out) sales, stamped with the
        show's ``marker``, and take them off the schedule. Scheduled sales are left for a
        later show. Returns the ids closed by this ``marker``, in the given order (the same
        list when repeated). Holds keep their pay window.

        Raises:
            Unavailable: Redis unreachable.
        """
        closed = []
        for sale_id in sale_ids:
            try:
                if not await self.sales.close_for_room(sale_id, now_ms, marker):
                    continue
            except NotFound:  # its keys expired long ago
                continue
            self._sale_cache.pop(sale_id, None)  # the window moved
            await self.unschedule(sale_id, "end")
            closed.append(sale_id)
        return closed

    # ------------------------------------------------------------------ reserve
    async def buy(self, *, user: str, sale_id: str, qty: int, request_id: str, now_ms: int) -> Reserved | Reject:
        """Reserve, then append ``order.reserved``: :meth:`place`'s answer alone."""
        return (await self.place(user=user, sale_id=sale_id, qty=qty, request_id=request_id, now_ms=now_ms)).result

    async def place(self, *, user: str, sale_id: str, qty: int, request_id: str, now_ms: int,
                    want_buyers: bool = False) -> Placed:
        """Reserve in Redis, then append ``order.reserved``, as part of the sale's next group
        commit: the buys of one sale that arrive while its previous commit is in flight (or
        within the same loop turn) are decided together, in arrival order, by one script call
        (:meth:`RedisFlashSale.reserve_batch`; a lone buy by :meth:`RedisFlashSale.reserve`),
        and their events go to the log in one call (:meth:`Log.append_many`). Each buy gets
        the answer it would get alone; a repeated ``request_id`` gets its first order (and its
        event is appended again: a crash between the script and the append is repaired by the
        retry). The caller hears only once its event is on the log.

        In a room whose show has ended the answer is ``room_ended``: from :attr:`room_gate`
        (once per commit), and from the script for the sales the room's end closed (a node
        whose gate missed the end); a retried ``request_id`` of a reservation made before the
        end gets its first order. ``want_buyers``: the caller wants the sale's buyers if its
        commit leaves no stock (:attr:`Placed.buyers`).

        Raises:
            BadFrame: qty outside 1..1000 or an unusable id (before anything is queued).
            NotFound: no such sale.
            Conflict: the order id minted for this buy was taken (astronomically unlikely).
            Unavailable: Redis or the log unreachable: the buy may or may not have been
                reserved; retrying the same ``request_id`` tells.
        """
        order_id = new_order_id(sale_id, now_ms)
        check_buy(user, qty, request_id, order_id)
        loop = asyncio.get_running_loop()
        pending = _Pending(BatchBuy(user, qty, request_key(user, request_id), now_ms, order_id), request_id,
                           want_buyers, loop.create_future())
        queue = self._queues.get(sale_id)
        if queue is None:
            check_ident(sale_id, "sale_id")
            queue = self._queues[sale_id] = []
        queue.append(pending)
        if sale_id not in self._committing:  # the commit starts after this loop turn's buys queued
            self._committing.add(sale_id)
            task = loop.create_task(self._commit_loop(sale_id), name=f"commit-{sale_id}")
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)
        return await pending.done

    async def _commit_loop(self, sale_id: str) -> None:
        """Commit the sale's queued buys, one batch at a time, until none is left."""
        queue = self._queues[sale_id]
        try:
            while queue:
                batch = queue[:MAX_BATCH]
                del queue[:MAX_BATCH]
                await self._commit(sale_id, batch)
        finally:
            self._committing.discard(sale_id)
            if queue:  # cancelled (the node stops): whoever still waits hears it
                for p in queue:
                    if not p.done.done():
                        p.done.set_exception(Unavailable("the node stopped before this buy was sent"))
                queue.clear()
            del self._queues[sale_id]

    async def _commit(self, sale_id: str, batch: list[_Pending]) -> None:
        """One group commit: the script, then the log, then every buyer's answer."""
        try:
            placed, sold_out = await self._decide(sale_id, batch)
        except BaseException as exc:  # Unavailable, NotFound, a cancelled node: every buyer hears it
            if isinstance(exc, Exception) and not isinstance(exc, LiveCommerceError):
                log.exception("checkout.commit_failed", extra={"sale": sale_id, "buys": len(batch)})
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(_own(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for p, out in zip(batch, placed, strict=True):
            if p.done.done():
                continue
            if isinstance(out, Exception):
                p.done.set_exception(_own(out))
            else:
                p.done.set_result(out)
        queued = self._queues.get(sale_id)
        if sold_out is not None and queued:  # after the batch's own answers: the reserved hear first
            self._answer_behind(sold_out[0], queued, sold_out[1], sold_out[2])

    async def _decide(self, sale_id: str, batch: list[_Pending]
                      ) -> tuple[list[Placed | Exception], tuple[Sale, set[str], bool] | None]:
        """The batch's answers, and (sale, buyers, room ended) when it left the sale sold out
        with the buyers known (the buys queued behind are answered from that snapshot)."""
        sale = await self.sale(sale_id)
        room_ended = self.room_gate is not None and await self.room_gate.ended(sale.room)
        if len(batch) == 1 and not room_ended:  # a lone buy: the per-buy script
            b = batch[0].buy
            one = await self.sales.reserve(sale_id, b.user, b.qty, batch[0].request_id, b.now_ms, b.order_id)
            decided = BatchReserved([one], one.remaining if isinstance(one, Reserved) else -1,
                                    "sold_out" if isinstance(one, Reserved) and one.last_unit else "live", None)
        else:
            queued = self._queues.get(sale_id)
            decided = await self.sales.reserve_batch(
                sale_id, [p.buy for p in batch], request_ids=[p.request_id for p in batch], room_ended=room_ended,
                want_buyers=bool(queued) or any(p.want_buyers for p in batch))
        behind = len(self._queues.get(sale_id) or ())
        events = [self._reserved_event(sale, r, p) for p, r in zip(batch, decided.results, strict=True)
                  if isinstance(r, Reserved)]
        lost: Unavailable | None = None
        if events:
            try:
                await self.log.append_many(events)
            except Unavailable as exc:  # the reserved hear it and retry; a refusal stands as it is
                lost = exc
        out: list[Placed | Exception] = []
        for p, r in zip(batch, decided.results, strict=True):
            if r == "order_exists":
                out.append(Conflict(f"order id {p.buy.order_id} is taken in sale {sale_id}", code="order_exists"))
            elif lost is not None and isinstance(r, Reserved):
                out.append(lost)
            else:
                out.append(Placed(r, decided.remaining, decided.buyers, behind))
        sold_out = None
        if decided.buyers is not None and decided.state == "sold_out":
            sold_out = (sale, decided.buyers, room_ended)
        return out, sold_out

    @staticmethod
    def _answer_behind(sale: Sale, queued: list[_Pending], buyers: set[str], room_ended: bool) -> None:
        """A commit left the sale sold out: the buys queued behind it from users who held
        nothing then are answered from that snapshot, without Redis (as the script would
        have answered them right after that commit: :func:`decide_reserve` on no stock); the
        buyers' own (a retry gets its first order) stay queued for the next commit."""
        keep = []
        for p in queued:
            b = p.buy
            if b.user in buyers or p.done.done():
                if not p.done.done():
                    keep.append(p)
                continue
            answer = "room_ended" if room_ended else decide_reserve(sale, now_ms=b.now_ms, remaining=0, bought=0,
                                                                     qty=b.qty, state="sold_out")
            p.done.set_result(Placed(answer or "sold_out", 0, buyers))
        queued[:] = keep

    async def drain(self) -> None:
        """Wait for the group commits in flight (a stopping node answers the buys it took)."""
        while self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)

    @staticmethod
    def _reserved_event(sale: Sale, r: Reserved, p: _Pending) -> LogEvent:
        return new_event(
            "orders",
            r.order_id,
            "order.reserved",
            {
                "order_id": r.order_id,
                "sale_id": sale.id,
                "room_id": sale.room,
                "user_id": r.user,
                "qty": r.qty,
                "unit_price": r.unit_price,
                "pay_by_ms": r.pay_by_ms,
                "payment_window_s": sale.payment_window_s,
                "request_id": p.request_id,
                "reserved_ms": r.pay_by_ms - sale.payment_window_s * 1000,
            },
            f"{r.order_id}:reserved",
            p.buy.now_ms,
        )

    # ------------------------------------------------------------------ pay / cancel
    async def pay(self, *, order_id: str, user: str | None, now_ms: int, coupon_id: str | None = None) -> PayResult:
        """Simulated payment: mark the hold paid in Redis (exactly once), then log it.

        ``user`` (when given) must own the order. A coupon is locked for the order first
        and consumed when the payment succeeds, restored when it does not.

        Raises:
            NotFound: no such order. Forbidden-like Conflict: the order belongs to another user.
            BadFrame: (``coupon_at_checkout``) a coupon for a cart order (its coupons were
                chosen at checkout).
        """
        if is_cart_order(order_id):
            if coupon_id:
                raise BadFrame("a cart order's coupons are chosen at checkout", code="coupon_at_checkout")
            got = await self.cart.pay(order_id=order_id, user=user, now_ms=now_ms)
            return PayResult(order_id, got.outcome, got.amount, got.discount)
        sale_id = sale_of(order_id)
        hold = await self.sales.hold(sale_id, order_id)
        if hold is None:
            raise NotFound(f"no order {order_id}", code="not_found")
        if user is not None and hold.user != user:
            raise NotFound(f"no order {order_id}", code="not_found")  # do not reveal others' orders
        sale = await self.sale(sale_id)
        gross = hold.qty * sale.price
        discount = 0
        if coupon_id:
            if self.coupons is None:
                raise BadFrame("coupons are not enabled on this node", code="coupon_not_usable")
            discount = min(gross, await self.coupons.lock_for_order(hold.user, coupon_id, order_id, gross))
        outcome = await self.sales.mark_paid(sale_id, order_id, now_ms)
        if outcome in ("paid", "already_paid"):
            if coupon_id and self.coupons is not None:
                await self.coupons.consume(order_id)
            # paying viewers' comments are kept first in hot rooms
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(self.keys.room(sale.room, "payers"), hold.user)
            pipe.expire(self.keys.room(sale.room, "payers"), self.room_retention_s)
            await pipe.execute()
            await self.log.append(
                "orders",
                order_id,
                "order.paid",
                {
                    "order_id": order_id,
                    "sale_id": sale_id,
                    "room_id": sale.room,
                    "user_id": hold.user,
                    "qty": hold.qty,
                    "unit_price": sale.price,
                    "amount": gross - discount,
                    "discount": discount,
                    "coupon_id": coupon_id,
                    "paid_ms": now_ms,
                    "pay_by_ms": hold.pay_by_ms,
                    "payment_window_s": sale.payment_window_s,
                    "request_id": hold.request_id,
                },
                event_id=f"{order_id}:paid",
                ts=now_ms,
            )
        else:
            if coupon_id and self.coupons is not None:
                await self.coupons.restore(order_id)
            if outcome in ("expired", "already_cancelled"):
                # the hold is (or was) released: make sure the cancellation reached the log,
                # also when the process that released it died before appending (idempotent)
                await self.cancel(order_id=order_id, user=None, now_ms=now_ms, reason="timeout")
        return PayResult(order_id, outcome, gross - discount, discount)

    async def cancel(self, *, order_id: str, user: str | None, now_ms: int, reason: str) -> str:
        """Release a reserved order (buyer cancel or payment time-out), exactly once.

        Returns ``released``, ``already_released`` or ``already_paid``.

        Raises:
            NotFound: no such order (or not the user's).
        """
        if is_cart_order(order_id):
            return await self.cart.cancel(order_id=order_id, user=user, now_ms=now_ms, reason=reason)
        sale_id = sale_of(order_id)
        hold = await self.sales.hold(sale_id, order_id)
        if hold is None or (user is not None and hold.user != user):
            raise NotFound(f"no order {order_id}", code="not_found")
        # journaled until its event is on the log: a process killed between the release and
        # the append leaves the entry, and the next time-out sweep (expire_due) completes it
        mark = f"{order_id}|{reason}"
        await self.redis.zadd(self._cancelling, {mark: now_ms})
        outcome = await self.sales.release(sale_id, order_id)
        if outcome == "already_paid":
            await self.redis.zrem(self._cancelling, mark)
            if reason != "timeout":
                raise Conflict("the order is paid; ask for a refund instead", code="already_paid")
            return outcome
        sale = await self.sale(sale_id)
        if self.coupons is not None:
            await self.coupons.restore(order_id)
        await self.log.append(
            "orders",
            order_id,
            "order.cancelled",
            {
                "order_id": order_id,
                "sale_id": sale_id,
                "room_id": sale.room,
                "user_id": hold.user,
                "qty": hold.qty,
                "unit_price": sale.price,
                "pay_by_ms": hold.pay_by_ms,
                "payment_window_s": sale.payment_window_s,
                "request_id": hold.request_id,
                "reason": reason,
                "cancelled_ms": now_ms,
            },
            event_id=f"{order_id}:cancelled",
            ts=now_ms,
        )
        await self.redis.zrem(self._cancelling, mark)
        return outcome

    @property
    def _cancelling(self) -> str:
        """Cancels begun and not yet on the log: ``<order>|<reason>`` scored by their start."""
        return self.keys.global_key("orders:cancelling")

    async def complete_cancels(self, now_ms: int, *, older_than_ms: int = 5000, limit: int = 500) -> list[tuple[str, str]]:
        """Finish the flash-sale cancels a process began more than ``older_than_ms`` ago and
        did not log (killed between the release and the append): the release again
        (``already_released``: nothing moves) and ``order.cancelled`` under its one event id."""
        done: list[tuple[str, str]] = []
        for raw in await self.redis.zrangebyscore(self._cancelling, "-inf", now_ms - older_than_ms, start=0, num=limit):
            mark = _s(raw)
            order_id, _, reason = mark.partition("|")
            try:
                outcome = await self.cancel(order_id=order_id, user=None, now_ms=now_ms, reason=reason or "timeout")
                done.append((order_id, outcome))
                log.warning("order.cancel_completed", extra={"order": order_id, "reason": reason, "outcome": outcome})
            except NotFound:  # its sale's keys are gone: nothing left to log
                pass
            await self.redis.zrem(self._cancelling, mark)
        return done

    async def active_sales(self) -> list[str]:
        """The sales not yet settled (created and not timed out and expired), sorted."""
        async with guarded():
            return sorted(_s(x) for x in await self.redis.smembers(self.keys.global_key("sales:active")))

    async def forget_active(self, sale_id: str) -> None:
        """Take a settled sale out of :meth:`active_sales`."""
        async with guarded():
            await self.redis.srem(self.keys.global_key("sales:active"), sale_id)

    async def expire_due(self, now_ms: int, *, limit: int = 500) -> list[tuple[str, str]]:
        """Cancel every hold whose payment deadline passed, in every active sale.

        Returns ``(order_id, outcome)`` pairs. Sales that ended with nothing reserved are
        settled: their keys get their lifetime (``sale_retention_s``) and they leave the
        active set.
        """
        done: list[tuple[str, str]] = await self.complete_cancels(now_ms, limit=limit)
        active = [_s(x) for x in await self.redis.smembers(self.keys.global_key("sales:active"))]
        for sale_id in active:
            try:
                due = await self.sales.due(sale_id, now_ms, limit)
            except NotFound:
                continue
            for order_id in due:
                try:
                    done.append((order_id, await self.cancel(order_id=order_id, user=None, now_ms=now_ms, reason="timeout")))
                except NotFound:
                    continue
            if not due:
                try:
                    st = await self.sales.stats(sale_id)
                except NotFound:  # its keys are gone: nothing left to time out
                    await self.redis.srem(self.keys.global_key("sales:active"), sale_id)
                    continue
                if st.state == "ended" and st.reserved == 0 and await self.sales.settle(sale_id, self.sale_retention_s * 1000):
                    await self.redis.srem(self.keys.global_key("sales:active"), sale_id)
                    self._sale_cache.pop(sale_id, None)
                    log.info("sale.settled", extra={"sale": sale_id, "expires_s": self.sale_retention_s})
        done += await self.cart.expire_due(now_ms, limit=limit)
        return done


def _own(exc: BaseException) -> Exception:
    """A copy of a commit's failure for one buyer (each raises its own, with its own traceback);
    anything that is not a library error is the node going away."""
    if isinstance(exc, LiveCommerceError):
        try:
            return type(exc)(exc.message, code=exc.code)
        except TypeError:  # a subclass with another constructor: share the one
            return exc
    return Unavailable("the node stopped before this buy was decided")


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def sale_started_data(sale: Sale, remaining: int) -> dict[str, Any]:
    """The ``sale.started`` event body (also what late joiners need to render the sale)."""
    return {
        "sale_id": sale.id,
        "product_id": sale.product_id,
        "price": sale.price,
        "stock": sale.stock,
        "remaining": remaining,
        "per_user_limit": sale.per_user_limit,
        "starts_ms": sale.starts_ms,
        "ends_ms": sale.ends_ms,
        "payment_window_s": sale.payment_window_s,
    }
