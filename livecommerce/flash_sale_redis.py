"""Redis adapter for flash sales: stock, per-user limits, reservations, payment and release,
each one atomic Lua call (EVALSHA) over the keys of one sale.

Every key of a sale shares the hash tag ``{sale:ID}`` (``Keys.sale(id, part)``), so each
script touches one Redis Cluster slot. Keys (``<prefix>:{sale:ID}:<part>``):

=============  =====  ===================================================================
part           type   holds
=============  =====  ===================================================================
``meta``       hash   the definition (``def``), current window, price, limit, ``state``
``stock``      str    remaining units
``buyers``     hash   user -> units held (reserved + paid); a user at 0 is removed
``req``        hash   user-scoped request id -> order id (the idempotency record)
``orders``     hash   order id -> JSON ``{u, q, s, p, r}`` (user, qty, state, pay-by, request)
``deadlines``  zset   reserved order ids by pay-by ms (the time-out worker's queue)
``counts``     hash   reserved / paid units, reserved / paid / cancelled orders,
                      refunded units kept (``refunded_kept``) and ``restocked``
``refunds``    hash   refund id -> ``"qty|restocked"`` (settled refunds, idempotency)
=============  =====  ===================================================================

Lifetime: none while the sale can still take orders or holds wait for payment; once it is
*settled* (ended, nothing reserved) :meth:`RedisFlashSale.settle` gives every key of the sale
(the above, the announcement claims and the funnel counters) one expiry, longer than the
refund window (``LC_SALE_RETENTION_S``, docs/retention.md).

Invariant at every moment (each script keeps it in one step):
``meta.stock == stock + counts.reserved + counts.paid + counts.refunded_kept`` and
``stock >= 0``.

Driver errors (connection lost, failover, cluster down) become
:class:`~livecommerce.errors.Unavailable`; nothing above sees a ``redis`` exception.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal, cast

import redis.exceptions

from .errors import BadFrame, Conflict, NotFound, Unavailable
from .flash_sale import (
    REJECTS,
    BatchBuy,
    Hold,
    HoldState,
    PayOutcome,
    Reject,
    ReleaseOutcome,
    Reserved,
    Sale,
    SaleState,
    SaleStats,
    check_ident,
    request_key,
)
from .keys import Keys
from .redis_conn import DRIVER_ERRORS

_LUA = files("livecommerce")
CREATE = (_LUA / "flash_sale_create.lua").read_text()
STATE = (_LUA / "flash_sale_state.lua").read_text()
RESERVE = (_LUA / "flash_sale_reserve.lua").read_text()
RESERVE_BATCH = (_LUA / "flash_sale_reserve_batch.lua").read_text()
RELEASE = (_LUA / "flash_sale_release.lua").read_text()
PAY = (_LUA / "flash_sale_pay.lua").read_text()
STATS = (_LUA / "flash_sale_stats.lua").read_text()
REFUND = (_LUA / "flash_sale_refund.lua").read_text()
SETTLE = (_LUA / "flash_sale_settle.lua").read_text()

PARTS = ("meta", "stock", "buyers", "req", "orders", "deadlines", "counts")
# the sale's other keys (same slot), which expire with it once it is settled
OTHER_PARTS = ("refunds", "ann:started", "ann:ended", "stockpub", "f:viewers", "f:saw", "f:tried")

_UNAVAILABLE = (
    *DRIVER_ERRORS,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,  # a failed-over primary answering as a replica
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
)

MAX_QTY = 1000


@contextlib.asynccontextmanager
async def _guarded() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def check_buy(user: str, qty: int, request_id: str, order_id: str) -> None:
    """The checks :meth:`RedisFlashSale.reserve` makes of one buy before any Redis call.

    Raises:
        BadFrame: qty outside 1..1000, or a user, request or order id that is not a string
            of 1-128 characters.
    """
    if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
        raise BadFrame(f"qty must be an integer in 1..{MAX_QTY}", code="invalid")
    for value, name in ((user, "user"), (request_id, "request_id"), (order_id, "order_id")):
        if not isinstance(value, str) or not value or len(value) > 128:
            raise BadFrame(f"'{name}' must be a string of 1-128 characters", code="invalid")


@dataclass(frozen=True, slots=True)
class BatchReserved:
    """What one batch call decided: per buy (in order) a :class:`Reserved`, a
    :data:`Reject` or ``"order_exists"``; the sale's units and state after the batch; and,
    when asked and no stock is left, who holds units (else None)."""

    results: list[Reserved | Reject | Literal["order_exists"]]
    remaining: int
    state: SaleState
    buyers: set[str] | None


class RedisFlashSale:
    """Atomic flash-sale stock in Redis: the twin of :func:`flash_sale.decide_reserve`.

    The gateway may run ``decide_reserve`` first on broadcast state to answer late buyers
    locally; this adapter re-checks state, window, stock, the user's limit and the request
    id in one script, answering in :data:`~livecommerce.flash_sale.Reject` codes.

    Works with ``redis.asyncio.Redis`` and ``RedisCluster`` clients.
    """

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.keys = keys
        self._redis = redis
        self._create = redis.register_script(CREATE)
        self._state = redis.register_script(STATE)
        self._reserve = redis.register_script(RESERVE)
        self._reserve_batch = redis.register_script(RESERVE_BATCH)
        self._key_lists: dict[str, list[str]] = {}  # sale -> its keys (the batch path's, built once)
        self._release = redis.register_script(RELEASE)
        self._pay = redis.register_script(PAY)
        self._stats = redis.register_script(STATS)
        self._refund = redis.register_script(REFUND)
        self._settle = redis.register_script(SETTLE)

    def sale_keys(self, sale_id: str) -> list[str]:
        """All keys of one sale, in the order every script takes them (one slot).

        Raises:
            BadFrame: the sale id is unusable.
        """
        return list(self._sale_keys(sale_id))

    def _sale_keys(self, sale_id: str) -> list[str]:
        keys = self._key_lists.get(sale_id)
        if keys is None:  # built once per sale (the buy path asks on every call)
            check_ident(sale_id, "sale_id")
            keys = [self.keys.sale(sale_id, part) for part in PARTS]
            if len(self._key_lists) >= 10_000:
                self._key_lists.clear()
            self._key_lists[sale_id] = keys
        return keys

    # ------------------------------------------------------------------ lifecycle

    async def create(self, sale: Sale) -> bool:
        """Store a new sale in state ``scheduled`` with its full stock.

        Idempotent: creating the same definition again returns False and changes nothing.

        Raises:
            BadFrame: the sale's id is unusable, or its numbers are out of range.
            Conflict: another definition already uses this id.
            Unavailable: Redis unreachable.
        """
        if sale.stock < 1 or sale.per_user_limit < 1 or sale.price < 0:
            raise BadFrame("stock and per_user_limit must be >= 1, price >= 0", code="invalid")
        if sale.ends_ms <= sale.starts_ms or sale.payment_window_s < 1:
            raise BadFrame("ends_ms must be after starts_ms; payment_window_s >= 1", code="invalid")
        definition = json.dumps(sale.to_dict(), sort_keys=True, separators=(",", ":"))
        args = [
            definition,
            sale.id,
            sale.room,
            sale.product_id,
            sale.price,
            sale.stock,
            sale.per_user_limit,
            sale.starts_ms,
            sale.ends_ms,
            sale.payment_window_s,
            int(sale.restock_on_refund),
        ]
        async with _guarded():
            res = await self._create(keys=self.sale_keys(sale.id), args=args)
        if int(res) < 0:
            raise Conflict(f"sale {sale.id} exists with another definition", code="sale_exists")
        return int(res) == 1

    async def start(self, sale_id: str, now_ms: int) -> SaleState:
        """Open the sale (``scheduled -> live``, or ``sold_out`` with no stock). A host may
        start a prepared sale early: the window then starts at ``now_ms``. Idempotent: a live
        or sold-out sale stays as it is. Returns the state after the call.

        Raises:
            NotFound: no such sale.
            Conflict: the sale has ended, or its window closed already (``now_ms >= ends_ms``).
            Unavailable: Redis unreachable.
        """
        return await self._step(sale_id, "start", now_ms)

    async def end(self, sale_id: str, now_ms: int) -> SaleState:
        """Close the sale (any state -> ``ended``); stopped early, the window ends at
        ``now_ms``. Idempotent. Reservations stay; they are paid or released as usual.

        Raises:
            NotFound: no such sale.
            Unavailable: Redis unreachable.
        """
        return await self._step(sale_id, "end", now_ms)

    async def close_for_room(self, sale_id: str, now_ms: int, marker: str) -> bool:
        """The room's show ended: a ``live`` or ``sold_out`` sale ends now, stamped with the
        show's ``marker``, after which ``reserve`` answers ``room_ended`` (holds keep their
        pay window). True when the sale is closed by this ``marker`` (now, or by an earlier
        call: repeating is a no-op); False for a sale left alone (scheduled, or ended before).

        Raises:
            NotFound: no such sale.
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            outcome, _ = await self._state(keys=self.sale_keys(sale_id)[:2], args=["close", now_ms, marker])
        outcome = _s(outcome)
        if outcome == "no_sale":
            raise NotFound(f"no sale {sale_id}", code="not_found")
        return outcome in ("ok", "noop")

    async def _step(self, sale_id: str, step: str, now_ms: int) -> SaleState:
        async with _guarded():
            outcome, state = await self._state(
                keys=self.sale_keys(sale_id)[:2], args=[step, now_ms]
            )
        outcome, st = _s(outcome), _s(state)
        if outcome == "no_sale":
            raise NotFound(f"no sale {sale_id}", code="not_found")
        if outcome == "illegal":
            raise Conflict(f"sale {sale_id} cannot {step} when {st}", code="illegal_transition")
        if outcome == "late":
            raise Conflict(f"sale {sale_id}'s window is over", code="illegal_transition")
        return cast(SaleState, st)

    async def get(self, sale_id: str) -> Sale:
        """The sale with its current window (moved by an early start or stop).

        Raises:
            NotFound: no such sale.
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            m = await self._redis.hgetall(self.keys.sale(check_ident(sale_id, "sale_id"), "meta"))
        if not m:
            raise NotFound(f"no sale {sale_id}", code="not_found")
        d = {_s(k): _s(v) for k, v in m.items()}
        return Sale(
            id=d["id"],
            room=d["room"],
            product_id=d["product_id"],
            price=int(d["price"]),
            stock=int(d["stock"]),
            per_user_limit=int(d["per_user_limit"]),
            starts_ms=int(d["starts_ms"]),
            ends_ms=int(d["ends_ms"]),
            payment_window_s=int(d["payment_window_s"]),
            restock_on_refund=d["restock_on_refund"] == "1",
        )

    async def settle(self, sale_id: str, lifetime_ms: int) -> bool:
        """Give every key of a settled sale (ended, no hold waiting for payment) the same
        expiry, ``lifetime_ms`` from now; True when done, False when the sale is not
        settled (or gone). Repeating it moves the expiry. Paid holds stay readable for the
        lifetime, so keep it longer than the refund window.

        Raises:
            Unavailable: Redis unreachable.
        """
        keys = [*self.sale_keys(sale_id), *(self.keys.sale(sale_id, p) for p in OTHER_PARTS)]
        async with _guarded():
            r = await self._settle(keys=keys, args=[int(lifetime_ms)])
        return _s(r[0]) == "ok"

    # ------------------------------------------------------------------ the money path

    async def known_request(self, sale_id: str, user: str, request_id: str) -> bool:
        """Whether ``user`` reserved with ``request_id`` in this sale before (a retry the
        reserve script answers with the first order, whatever the sale's state now)."""
        async with _guarded():
            return bool(await self._redis.hexists(self.keys.sale(check_ident(sale_id, "sale_id"), "req"),
                                                  request_key(user, request_id)))

    async def reserve(
        self, sale_id: str, user: str, qty: int, request_id: str, now_ms: int, order_id: str
    ) -> Reserved | Reject:
        """Reserve ``qty`` units for ``user`` as order ``order_id``, in one EVALSHA.

        Checks, in order: a repeated ``request_id`` of this user (answers with the first
        order, ``duplicate=True``, no stock moves, whatever the sale's state now); state and
        window (``not_started``, ``ended``); stock (``sold_out``); the user's limit over units
        reserved and paid (``limit_reached``). On success the units leave stock, the order is
        ``reserved`` until ``pay_by_ms = now_ms + payment_window_s * 1000``, and the sale goes
        ``sold_out`` if it took the last unit (``last_unit=True``).

        ``request_id`` is scoped to the user: another user's equal id is another request.

        Returns:
            :class:`Reserved`, or a :data:`Reject` code (a ``str``).

        Raises:
            BadFrame: qty outside 1..1000 or an unusable id.
            NotFound: no such sale.
            Conflict: ``order_id`` is already used by another reservation of this sale.
            Unavailable: Redis unreachable.
        """
        check_buy(user, qty, request_id, order_id)
        rkey = request_key(user, request_id)
        async with _guarded():
            r = await self._reserve(
                keys=self._sale_keys(sale_id), args=[user, qty, rkey, now_ms, order_id, request_id]
            )
        code = _s(r[0])
        if code in ("ok", "dup"):
            return Reserved(
                sale_id=sale_id,
                order_id=_s(r[1]),
                user=user,
                qty=int(r[2]),
                pay_by_ms=int(r[3]),
                remaining=int(r[4]),
                bought=int(r[5]),
                unit_price=int(r[6]),
                duplicate=code == "dup",
                last_unit=int(r[7]) == 1,
            )
        if code in REJECTS:
            return cast(Reject, code)
        if code == "no_sale":
            raise NotFound(f"no sale {sale_id}", code="not_found")
        raise Conflict(f"order id {order_id} is taken in sale {sale_id}", code="order_exists")

    async def reserve_batch(
        self, sale_id: str, buys: Sequence[BatchBuy], *, request_ids: Sequence[str], room_ended: bool = False,
        want_buyers: bool = False,
    ) -> BatchReserved:
        """Decide ``buys`` of one sale in arrival order in one EVALSHA
        (``flash_sale_reserve_batch.lua``, the twin of
        :func:`~livecommerce.flash_sale.decide_reserve_batch`): each buy is answered as
        :meth:`reserve` would answer it alone right after the buys before it.
        ``request_ids[i]`` is buy i's request id as sent (kept in its order record);
        ``room_ended``: refuse every buy that is not a repeated request with ``room_ended``;
        ``want_buyers``: also return who holds units when no stock is left after the batch.
        The buys are checked by the caller (:func:`check_buy`).

        Returns:
            :class:`BatchReserved`: per buy a :class:`Reserved`, a :data:`Reject` code or
            ``"order_exists"`` (its order id is taken: mint another).

        Raises:
            NotFound: no such sale.
            Unavailable: Redis unreachable.
        """
        keys = self._sale_keys(sale_id)
        args: list[str | int] = ["1" if room_ended else "0", "1" if want_buyers else "0"]
        for b, rid in zip(buys, request_ids, strict=True):
            args += (b.user, b.qty, b.request_key, b.now_ms, b.order_id, rid)
        async with _guarded():
            r = await self._reserve_batch(keys=keys, args=args)
        if r[0] == b"no_sale":
            raise NotFound(f"no sale {sale_id}", code="not_found")
        price = int(r[2])
        out: list[Reserved | Reject | Literal["order_exists"]] = []
        i = 5
        for b in buys:
            code = r[i]
            if code == b"ok" or code == b"dup":
                out.append(Reserved(sale_id, _s(r[i + 1]), b.user, int(r[i + 2]), price, int(r[i + 4]), int(r[i + 5]),
                                    int(r[i + 3]), code == b"dup", code == b"ok" and int(r[i + 4]) == 0))
            else:
                out.append(cast(Reject | Literal["order_exists"], _s(code)))
            i += 6
        buyers = {_s(u) for u in r[4]} if want_buyers and int(r[1]) == 0 else None
        return BatchReserved(out, int(r[1]), cast(SaleState, _s(r[3])), buyers)

    async def release(self, sale_id: str, order_id: str) -> ReleaseOutcome:
        """Cancel a reserved order (buyer cancel or payment time-out): its units go back to
        stock and the user's count drops, exactly once; a ``sold_out`` sale becomes ``live``
        again. Idempotent per order id (``already_released``). A paid order is left alone
        (``already_paid``): the time-out lost the race to the payment.

        Raises:
            NotFound: no such order in this sale.
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            r = await self._release(keys=self.sale_keys(sale_id), args=[order_id])
        code = _s(r[0])
        if code == "unknown":
            raise NotFound(f"no order {order_id} in sale {sale_id}", code="not_found")
        return cast(ReleaseOutcome, code)

    async def mark_paid(self, sale_id: str, order_id: str, now_ms: int | None = None) -> PayOutcome:
        """Move a reserved order's units from reserved to paid, exactly once (idempotent:
        ``already_paid``). A released order stays released (``already_cancelled``: refund the
        payment). With ``now_ms``, a payment at or after the deadline changes nothing
        (``expired``) and the time-out releases the order.

        Raises:
            NotFound: no such order in this sale.
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            r = await self._pay(
                keys=self.sale_keys(sale_id), args=[order_id, "" if now_ms is None else now_ms]
            )
        code = _s(r[0])
        if code == "unknown":
            raise NotFound(f"no order {order_id} in sale {sale_id}", code="not_found")
        return cast(PayOutcome, code)

    # ------------------------------------------------------------------ reads

    async def stats(self, sale_id: str) -> SaleStats:
        """One atomic snapshot (``SaleStats.conserved`` always holds).

        Raises:
            NotFound: no such sale.
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            r = await self._stats(keys=self.sale_keys(sale_id), args=[])
        if not r:
            raise NotFound(f"no sale {sale_id}", code="not_found")
        return SaleStats(
            sale_id=sale_id,
            state=cast(SaleState, _s(r[0])),
            initial=int(r[1]),
            remaining=int(r[2]),
            reserved=int(r[3]),
            paid=int(r[4]),
            buyers=int(r[5]),
            reserved_orders=int(r[6]),
            paid_orders=int(r[7]),
            cancelled_orders=int(r[8]),
            refunded_kept=int(r[9]) if len(r) > 9 else 0,
            restocked=int(r[10]) if len(r) > 10 else 0,
        )

    async def hold(self, sale_id: str, order_id: str) -> Hold | None:
        """What Redis holds for one order, or None if this sale has no such order.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            raw = await self._redis.hget(
                self.keys.sale(check_ident(sale_id, "sale_id"), "orders"), order_id
            )
        if raw is None:
            return None
        o = json.loads(raw)
        return Hold(
            sale_id=sale_id,
            order_id=order_id,
            user=o["u"],
            qty=int(o["q"]),
            state=cast(HoldState, o["s"]),
            pay_by_ms=int(o["p"]),
            request_id=o["r"],
        )

    async def holds(self, sale_id: str) -> list[Hold]:
        """Every order the sale holds, in any state (reserved, paid, cancelled): what the
        inventory check compares with SQL.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            raw = await self._redis.hgetall(self.keys.sale(check_ident(sale_id, "sale_id"), "orders"))
        out = []
        for oid, v in raw.items():
            o = json.loads(v)
            out.append(Hold(sale_id=sale_id, order_id=_s(oid), user=o["u"], qty=int(o["q"]),
                            state=cast(HoldState, o["s"]), pay_by_ms=int(o["p"]), request_id=o.get("r") or ""))
        return out

    async def lifetime_left_ms(self, sale_id: str) -> int:
        """How long the sale's keys have left (PTTL of its meta): -1 while they have no expiry
        (the sale is not settled), -2 when they are gone.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            return int(await self._redis.pttl(self.keys.sale(check_ident(sale_id, "sale_id"), "meta")))

    async def bought(self, sale_id: str, user: str) -> int:
        """Units ``user`` holds in the sale (reserved + paid).

        Raises:
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            v = await self._redis.hget(
                self.keys.sale(check_ident(sale_id, "sale_id"), "buyers"), user
            )
        return int(v or 0)

    async def buyers(self, sale_id: str) -> set[str]:
        """Users holding at least one unit of the sale (reserved or paid): a gateway fetches
        them once when the sale closes, so their retries still reach the reserve script.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            raw = await self._redis.hkeys(self.keys.sale(check_ident(sale_id, "sale_id"), "buyers"))
        return {_s(b) for b in raw}

    async def claim_stock_broadcast(self, sale_id: str, window_ms: int) -> bool:
        """True for one caller per ``window_ms`` per sale (every node asks): the one that
        broadcasts the sale's stock figure for this window (``stockpub``, SET NX PX).

        Raises:
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            return bool(await self._redis.set(self.keys.sale(check_ident(sale_id, "sale_id"), "stockpub"), "1",
                                              nx=True, px=window_ms))

    async def due(self, sale_id: str, now_ms: int, limit: int = 100) -> list[str]:
        """Ids of reserved orders whose deadline is at or before ``now_ms``, oldest first:
        the time-out worker releases them.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with _guarded():
            ids = await self._redis.zrangebyscore(
                self.keys.sale(check_ident(sale_id, "sale_id"), "deadlines"),
                "-inf",
                now_ms,
                start=0,
                num=limit,
            )
        return [_s(i) for i in ids]

    # ------------------------------------------------------------------ refunds

    async def refund(self, sale_id: str, order_id: str, refund_id: str, qty: int) -> tuple[str, bool, int]:
        """Settle a refund of ``qty`` paid units of ``order_id``, exactly once per
        ``refund_id`` (``flash_sale_refund.lua``): the units leave ``paid`` and the buyer's
        held units; with the sale's ``restock_on_refund`` they go back to stock (a sold-out
        sale is live again), else they are counted in ``refunded_kept``.

        Returns ``(outcome, restocked, remaining)``; outcome ``ok`` (done now) or
        ``already`` (this refund was settled before: nothing changed).

        Raises:
            NotFound: no such order in this sale, or (``sale_expired``) the sale was settled
                long ago and its keys expired (nothing to restock).
            Conflict: the order is not paid (``not_paid``), or more units than are left
                unrefunded (``too_many_units``).
            Unavailable: Redis unreachable.
        """
        keys = [*self.sale_keys(sale_id), self.keys.sale(sale_id, "refunds")]
        async with _guarded():
            r = await self._refund(keys=keys, args=[order_id, refund_id, qty])
        code = _s(r[0])
        if code == "no_sale":
            raise NotFound(f"sale {sale_id} was settled and its keys expired", code="sale_expired")
        if code == "unknown":
            raise NotFound(f"no order {order_id} in sale {sale_id}", code="not_found")
        if code == "not_paid":
            raise Conflict(f"order {order_id} is not paid", code="not_paid")
        if code == "too_many":
            raise Conflict(f"only {int(r[1])} unit(s) of order {order_id} are left to refund", code="too_many_units")
        return code, int(r[1]) == 1, int(r[2])
