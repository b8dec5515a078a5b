"""Redis adapter of the cart (:mod:`livecommerce.cart`): each user's cart in a room, and
each cart order's gate.

=====================================  =====  ==============================================
key                                    type   holds
=====================================  =====  ==============================================
``{cart:ROOM/USER}:lines``             hash   ``<product>/<sku>`` -> units; ``#v`` the version
``{cart:ROOM/USER}:order``             zset   the lines by when first added (display order)
``{order:ID}:cart``                    hash   the gate: ``rec`` (the order: user, room,
                                              lines, totals, coupons, pay-by), ``req`` (the
                                              request's fingerprint), ``state``, ``reason``,
                                              ``paid_ms``, ``settled_ms``, ``refusal``
``cart:deadlines``                     zset   reserved cart orders by pay-by (the time-out)
=====================================  =====  ==============================================

Each change of a cart is one script (``cart_put.lua``), each step of a gate one script
(``cart_gate.lua``, the twin of :func:`~livecommerce.cart.gate_step`). Driver errors
become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, cast

from .cart import CART_TTL_S, MAX_LINE_QTY, MAX_LINES, GateState, OrderLine, line_from
from .errors import Conflict
from .keys import Keys
from .redis_conn import guarded

_LUA = files("livecommerce")
PUT = (_LUA / "cart_put.lua").read_text()
GATE = (_LUA / "cart_gate.lua").read_text()
GATE_TTL_S = 30 * 24 * 3600


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True, slots=True)
class CartOrder:
    """A cart order as its gate holds it."""

    order_id: str
    user: str
    room: str
    lines: tuple[OrderLine, ...]
    qty: int
    subtotal: int
    discount: int
    coupons: tuple[tuple[str, str, int], ...]  # (coupon id, scope, its share of the discount)
    pay_by_ms: int
    created_ms: int
    state: GateState
    reason: str = ""
    paid_ms: int = 0
    settled_ms: int = 0
    refusal: dict[str, Any] | None = None
    asked: tuple[OrderLine, ...] = ()  # the lines the holds were asked for (gift candidates included)

    @property
    def amount(self) -> int:
        return self.subtotal - self.discount

    @property
    def coupon_ids(self) -> list[str]:
        return [c for c, _, _ in self.coupons]

    def record(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "user": self.user, "room": self.room, "lines": [ln.to_dict() for ln in self.lines],
                "qty": self.qty, "subtotal": self.subtotal, "discount": self.discount,
                "coupons": [list(c) for c in self.coupons], "pay_by_ms": self.pay_by_ms, "created_ms": self.created_ms,
                "asked": [ln.to_dict() for ln in self.asked]}

    def view(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "room": self.room, "state": self.state, "lines": [ln.to_dict() for ln in self.lines],
                "qty": self.qty, "subtotal": self.subtotal, "discount": self.discount, "amount": self.amount,
                "coupon_ids": self.coupon_ids, "pay_by_ms": self.pay_by_ms, "created_ms": self.created_ms,
                "reason": self.reason or None, "paid_ms": self.paid_ms or None}


def _order(order_id: str, h: dict[str, str]) -> CartOrder:
    r = json.loads(h["rec"])
    return CartOrder(order_id, str(r["user"]), str(r["room"]), tuple(line_from(x) for x in r["lines"]), int(r["qty"]),
                     int(r["subtotal"]), int(r["discount"]), tuple((str(c), str(s), int(d)) for c, s, d in r["coupons"]),
                     int(r["pay_by_ms"]), int(r["created_ms"]), cast(GateState, h.get("state", "reserved")),
                     h.get("reason", ""), int(h.get("paid_ms") or 0), int(h.get("settled_ms") or 0),
                     json.loads(h["refusal"]) if h.get("refusal") else None,
                     tuple(line_from(x) for x in r.get("asked") or ()))


class RedisCart:
    """Carts and cart-order gates (see the module docstring)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._put = redis.register_script(PUT)
        self._gate = redis.register_script(GATE)

    # ------------------------------------------------------------------ carts
    def _ck(self, room: str, user: str) -> list[str]:
        return [self.keys.entity("cart", f"{room}/{user}", "lines"), self.keys.entity("cart", f"{room}/{user}", "order")]

    async def lines(self, room: str, user: str) -> tuple[list[tuple[str, str, int]], int]:
        """The cart's lines ``(product, sku, qty)`` in the order they were added, and its version."""
        lk, ok = self._ck(room, user)
        async with guarded():
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(lk)
            pipe.zrange(ok, 0, -1)
            h, order = await pipe.execute()
        qty = {_s(k): int(v) for k, v in h.items()}
        out = []
        for f in (_s(x) for x in order):
            if f in qty:
                pid, _, sku = f.partition("/")
                out.append((pid, sku, qty[f]))
        return out, qty.get("#v", 0)

    async def change(self, room: str, user: str, product_id: str, sku: str, *, add: int | None = None,
                     set_to: int | None = None, now_ms: int) -> int:
        """Add ``add`` units of a SKU, or set its quantity (0 removes); the new version.

        Raises:
            Conflict: ``cart_full``, ``qty_too_large`` (:func:`~livecommerce.cart.cart_step`).
        """
        mode, n = ("add", add or 0) if set_to is None else ("set", set_to)
        async with guarded():
            raw = await self._put(keys=self._ck(room, user),
                                  args=[mode, f"{product_id}/{sku}", n, MAX_LINES, MAX_LINE_QTY, now_ms, CART_TTL_S])
        code = _s(raw[0])
        if code == "cart_full":
            raise Conflict(f"a cart holds at most {MAX_LINES} lines: check out or remove some", code="cart_full")
        if code == "qty_too_large":
            raise Conflict(f"a line holds at most {MAX_LINE_QTY} units", code="qty_too_large")
        return int(raw[1])

    async def clear(self, room: str, user: str, *, now_ms: int) -> int:
        async with guarded():
            raw = await self._put(keys=self._ck(room, user), args=["clear", "", 0, MAX_LINES, MAX_LINE_QTY, now_ms, CART_TTL_S])
        return int(raw[1])

    # ------------------------------------------------------------------ gates
    def gate_key(self, order_id: str) -> str:
        return self.keys.entity("order", order_id, "cart")

    @property
    def deadlines_key(self) -> str:
        return self.keys.global_key("cart:deadlines")

    async def order(self, order_id: str) -> CartOrder | None:
        async with guarded():
            h = await self.redis.hgetall(self.gate_key(order_id))
        if not h:
            return None
        return _order(order_id, {_s(k): _s(v) for k, v in h.items()})

    async def open(self, order: CartOrder, fingerprint: str, *, now_ms: int) -> str:
        """Record a new order (``opened``), or say it exists: ``dup`` (the same request
        made it) or ``exists`` (another request). The order joins the time-out's deadlines
        first, so a checkout that dies between its holds is released by the time-out."""
        async with guarded():
            await self.redis.zadd(self.deadlines_key, {order.order_id: order.pay_by_ms})
            raw = await self._gate(keys=[self.gate_key(order.order_id)],
                                   args=["open", now_ms, fingerprint, json.dumps(order.record(), separators=(",", ":")),
                                         order.pay_by_ms, GATE_TTL_S])
        return _s(raw[0])

    async def set_record(self, order: CartOrder) -> None:
        """Replace the order's record (its lines once the holds took them; same order)."""
        async with guarded():
            await self.redis.hset(self.gate_key(order.order_id), "rec", json.dumps(order.record(), separators=(",", ":")))

    async def step(self, order_id: str, step: str, *, now_ms: int, reason: str = "", refusal: dict[str, Any] | None = None
                   ) -> tuple[str, int]:
        """One gate step (``pay``, ``cancel``, ``refuse``): the outcome and, for a payment,
        when it was paid."""
        args: list[Any] = [step, now_ms]
        if step == "cancel":
            args.append(reason)
        elif step == "refuse":
            args += [reason, json.dumps(refusal or {}, separators=(",", ":"))]
        async with guarded():
            raw = await self._gate(keys=[self.gate_key(order_id)], args=args)
        code = _s(raw[0])
        return code, int(_s(raw[1])) if len(raw) > 1 and step == "pay" else 0

    async def forget_deadline(self, order_id: str) -> None:
        async with guarded():
            await self.redis.zrem(self.deadlines_key, order_id)

    async def due(self, now_ms: int, limit: int = 500) -> list[str]:
        """Cart orders whose pay-by time has come (oldest first)."""
        async with guarded():
            raw = await self.redis.zrangebyscore(self.deadlines_key, "-inf", now_ms, start=0, num=limit)
        return [_s(x) for x in raw]
