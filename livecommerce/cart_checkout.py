"""The cart's money path: view, checkout, pay, cancel, time out, refund (rules:
:mod:`livecommerce.cart`; docs/commerce.md "Cart and checkout").

Redis decides, the log remembers, as for flash sales (:mod:`livecommerce.checkout`):

* **checkout**: the order's gate is opened first (with its lines and pay-by, and on the
  time-out's deadlines), then one hold per product under the order id, product by product in
  id order (a line of a product on flash sale in the room reserves through the sale's script,
  at the sale's price and limit; a list-price line's hold checks, in the same script, that
  the price it was priced at is still the SKU's, else ``price_changed``), then the coupons
  are locked; any refusal releases what was
  taken and marks the gate ``refused`` (no order, nothing on the log). Then ``order.reserved``
  (``<order>:reserved``, with the lines) is appended. A retry (same idempotency key, so the
  same order id) meets its own holds (``duplicate``: nothing moves) and appends again.
* **pay** / **cancel** / **time-out**: one step of the gate decides (exactly once), then every
  hold follows (each hold's own step is idempotent, so a repeated or crashed step is completed
  by the next attempt: a retried payment, the time-out finding the order again), then
  ``order.paid`` / ``order.cancelled`` is appended under the order's one id.
* **refund**: the refunded units go back on sale line by line (:func:`cart.refund_lines`),
  once per refund id in each product's slot.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .cart import (
    CART_SALE_ID,
    Line,
    Offer,
    OrderLine,
    Proposal,
    choose,
    gift_lines,
    ineligible,
    offer_view,
    propose,
    refund_lines,
    split_discount,
    totals,
)
from .cart_redis import CartOrder, RedisCart
from .catalog import GiftRule, Product, SkuStock, decide_reserve
from .catalog_redis import RedisCatalog, Refused, Reserved
from .coupons import coupon_id
from .coupons_redis import CouponsRedis
from .errors import BadFrame, Conflict, LiveCommerceError, NotFound
from .flash_sale_redis import RedisFlashSale
from .keys import Keys
from .log import Log

log = logging.getLogger("livecommerce.cart")
TOPIC = "orders"


@dataclass(frozen=True, slots=True)
class SaleTerms:
    """A live (or sold-out) flash sale of a product in the room, as the gateway knows it."""

    sale_id: str
    price: int
    per_user_limit: int
    remaining: int
    payment_window_s: int
    state: str = "live"


class CheckoutRefused(Conflict):
    """A line (or a coupon) refused at checkout: nothing is reserved. ``code`` is the reason
    (``sold_out``, ``limit_reached``, ``no_product``, ``no_sku``, ``archived``,
    ``sku_archived``, ``price_changed`` (the price moved between the read that priced the
    line and its hold), the sale's ``not_started``/``ended``/``room_ended``,
    ``coupon_not_usable``); ``product_id``/``sku`` name the line, and the error body and
    frame carry them (``details``, each only when known)."""

    def __init__(self, message: str, *, code: str, product_id: str | None = None, sku: str | None = None) -> None:
        super().__init__(message, code=code, details={k: v for k, v in (("product_id", product_id), ("sku", sku)) if v})
        self.product_id = product_id
        self.sku = sku


_MESSAGES = {
    "sold_out": "not enough units left",
    "limit_reached": "over the per-user limit",
    "no_product": "no such product",
    "no_sku": "no such SKU",
    "archived": "the product is no longer sold",
    "sku_archived": "the SKU is no longer sold",
    "not_started": "its flash sale has not started",
    "ended": "its flash sale has ended",
    "room_ended": "the show has ended",
}


def refusal(code: str, product_id: str | None, sku: str | None, extra: str = "") -> CheckoutRefused:
    where = f"{product_id}/{sku}" if sku else (product_id or "")
    if code == "price_changed":
        return CheckoutRefused(f"the price of {where} changed{extra}: read the cart again", code=code,
                               product_id=product_id, sku=sku)
    return CheckoutRefused(f"{where}: {_MESSAGES.get(code, code)}{extra}", code=code, product_id=product_id, sku=sku)


@dataclass(frozen=True, slots=True)
class CartPay:
    order_id: str
    outcome: str
    amount: int
    discount: int


def _fingerprint(lines: Sequence[OrderLine], coupon_ids: Sequence[str] | None) -> str:
    body = json.dumps([[ln.product_id, ln.sku, ln.qty] for ln in lines if not ln.gift] + [list(coupon_ids or ["*"])],
                      separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def _coupon_column(coupons: Sequence[tuple[str, str, int]]) -> str | None:
    """The orders table's one ``coupon_id`` for its old readers: the shop coupon, else the
    platform one (every coupon of the order, with its scope and share of the discount, is a
    row of ``order_coupons``)."""
    for scope in ("shop", "platform"):
        for cid, sc, _ in coupons:
            if sc == scope:
                return cid[:128]
    return coupons[0][0][:128] if coupons else None


class CartCheckout:
    """Carts and cart orders (see the module docstring)."""

    def __init__(self, redis: Any, keys: Keys, log: Log, *, sales: RedisFlashSale | None = None,
                 payment_window_s: int = 900, room_retention_s: int = 7 * 86400) -> None:
        self.redis = redis
        self.keys = keys
        self.log = log
        self.carts = RedisCart(redis, keys)
        self.catalog = RedisCatalog(redis, keys)
        self.sales = sales or RedisFlashSale(redis, keys)
        self.coupons = CouponsRedis(redis, keys)
        self.payment_window_s = payment_window_s
        self.room_retention_s = room_retention_s

    # ------------------------------------------------------------------ the cart
    async def offers(self, user: str, now_ms: int) -> list[Offer]:
        """The user's coupons not yet used (claimed, or locked by an order)."""
        out = []
        for c in await self.coupons.user_coupons(user, now_ms=now_ms):
            if c.get("state") in ("claimed", "expired"):
                out.append(Offer(str(c["coupon_id"]), str(c.get("room") or ""), str(c["kind"]), int(c["threshold"]),
                                 int(c["value"]), int(c["expires_ms"]), "claimed"))
        return out

    async def _products(self, ids: Sequence[str]) -> dict[str, tuple[Product, dict[str, SkuStock]] | None]:
        return await self.catalog.read_many(ids)

    async def view(self, user: str, room: str, sales: Mapping[str, SaleTerms], *, now_ms: int) -> dict[str, Any]:
        """The cart with current prices, availability, limits, gifts and the coupon proposal."""
        raw, v = await self.carts.lines(room, user)
        products = await self._products([p for p, _, _ in raw])
        bought: dict[str, dict[str, int]] = {}
        for pid in products:
            bought[pid] = await self.catalog.bought(pid, user, [s for p, s, _ in raw if p == pid])
        lines: list[dict[str, Any]] = []
        ok_lines: list[OrderLine] = []
        rules: dict[tuple[str, str], GiftRule] = {}
        for i, (pid, sku_id, qty) in enumerate(raw, start=1):
            got = products.get(pid)
            line: dict[str, Any] = {"product_id": pid, "sku": sku_id, "qty": qty, "name": None, "attrs": {}, "image": "",
                                    "unit_price": 0, "list_price": 0, "sale_id": None, "available": 0, "limit": None,
                                    "bought": bought.get(pid, {}).get(sku_id, 0), "subtotal": 0, "ok": False, "problem": None}
            if got is None:
                line["problem"] = "no_product"
                lines.append(line)
                continue
            product, units = got
            sku = product.sku(sku_id)
            line |= {"name": product.name, "image": product.image}
            if sku is None:
                line["problem"] = "no_sku"
                lines.append(line)
                continue
            line |= {"attrs": dict(sku.attrs), "image": sku.image or product.image, "list_price": sku.price,
                     "unit_price": sku.price, "available": units.get(sku_id, SkuStock()).available,
                     "limit": sku.limit or None}
            sale = sales.get(pid)
            if sale is not None:  # the sale's own count of the user's units (reserved + paid), its limit
                try:
                    had = await self.sales.bought(sale.sale_id, user)
                except NotFound:
                    had = 0
                line |= {"unit_price": sale.price, "sale_id": sale.sale_id, "available": sale.remaining,
                         "limit": sale.per_user_limit, "bought": had}
                problem = "sold_out" if sale.remaining < qty else (
                    "limit_reached" if had + qty > sale.per_user_limit else None)
            else:
                why = decide_reserve(product.state, {s.id: (s.state == "archived", units.get(s.id, SkuStock()).available)
                                                     for s in product.skus}, [(sku_id, qty)],
                                     limits={sku_id: sku.limit}, bought=bought.get(pid, {}))
                problem = None if why is None else why[0]
                if sku.gift is not None:
                    rules[(pid, sku_id)] = sku.gift
            line |= {"subtotal": qty * line["unit_price"], "ok": problem is None, "problem": problem}
            if problem is None:
                ok_lines.append(OrderLine(i, pid, sku_id, qty, int(line["unit_price"]), line["sale_id"]))
            lines.append(line)
        gifts = []
        for gp, gs, gq, for_sku in gift_lines(ok_lines, rules):
            g = products.get(gp) if gp in products else await self.catalog.read(gp)
            avail = g[1].get(gs, SkuStock()).available if g is not None else 0
            gifts.append({"product_id": gp, "sku": gs, "qty": gq, "unit_price": 0, "for_sku": for_sku, "gift": True,
                          "name": g[0].name if g is not None else None, "available": avail})
        qty_total, subtotal = totals(ok_lines)
        offers = await self.offers(user, now_ms)
        best = propose(offers, subtotal=subtotal, room=room, now_ms=now_ms)
        eligible: list[dict[str, Any]] = []
        other: list[dict[str, Any]] = []
        for o in offers:
            reason = ineligible(o, subtotal=subtotal, room=room, now_ms=now_ms)
            (eligible if reason is None else other).append(offer_view(o, subtotal, reason))
        claimable = []
        for drop, left in await self.coupons.claimable(room, user, now_ms=now_ms):
            o = Offer(coupon_id(drop.id, user), drop.room, drop.kind, drop.threshold, drop.value, drop.expires_ms)
            if o.coupon_id in {x.coupon_id for x in offers}:
                continue
            with_it = propose([*offers, o], subtotal=subtotal, room=room, now_ms=now_ms)
            entry = offer_view(o, subtotal, ineligible(o, subtotal=subtotal, room=room, now_ms=now_ms))
            entry.pop("coupon_id")
            entry.pop("discount", None)
            claimable.append({"drop_id": drop.id, **entry, "remaining": left,
                              "saves": with_it.discount - best.discount})
        claimable.sort(key=lambda c: (-c["saves"], c["threshold"], c["drop_id"]))
        return {"room": room, "lines": lines, "gifts": gifts, "qty": qty_total, "subtotal": subtotal,
                "coupons": {"proposed": [o.coupon_id for o in best.coupons], "discount": best.discount,
                            "total": subtotal - best.discount, "eligible": eligible, "ineligible": other,
                            "claimable": claimable},
                "v": v}

    # ------------------------------------------------------------------ checkout
    async def _price(self, user: str, lines: Sequence[Line], sales: Mapping[str, SaleTerms]
                     ) -> tuple[list[OrderLine], dict[str, dict[str, int]], dict[tuple[str, str], GiftRule],
                                tuple[str, str, int] | None]:
        """The order's bought lines at the prices read now (merged per SKU, in request
        order), each product's SKUs' limits, the gift rules. Each list-price line
        carries the price read here into its hold (:meth:`_checkout`): a price changed between
        this read and the hold refuses the checkout with ``price_changed`` (nothing held), so
        the buyer never pays a price that is no longer the product's. The fourth value is
        the first list-price line with fewer units available at this read than it asks
        (product, sku, available), or None.

        Raises:
            CheckoutRefused: ``no_product``, ``no_sku``.
            BadFrame: no SKU named for a product with several.
        """
        merged: dict[tuple[str, str], int] = {}
        products = await self._products([ln.product_id for ln in lines])
        for ln in lines:
            got = products[ln.product_id]
            if got is None:
                raise refusal("no_product", ln.product_id, None)
            sku = ln.sku
            if not sku:
                active = got[0].active_skus
                if len(got[0].skus) != 1 and len(active) != 1:
                    raise BadFrame(f"product {ln.product_id} has several SKUs: name one ('sku')", code="invalid")
                sku = (active or got[0].skus)[0].id
            merged[(ln.product_id, sku)] = merged.get((ln.product_id, sku), 0) + ln.qty
        out: list[OrderLine] = []
        limits: dict[str, dict[str, int]] = {}
        rules: dict[tuple[str, str], GiftRule] = {}
        short: tuple[str, str, int] | None = None
        for n, ((pid, sku_id), qty) in enumerate(merged.items(), start=1):
            got = products[pid]
            assert got is not None
            product = got[0]
            found = product.sku(sku_id)
            if found is None:
                raise refusal("no_sku", pid, sku_id)
            if qty > 1000:
                raise BadFrame(f"{pid}/{sku_id}: at most 1000 units in one order", code="invalid")
            sale = sales.get(pid)
            if sale is not None:
                out.append(OrderLine(n, pid, sku_id, qty, sale.price, sale.sale_id))
                continue
            limits.setdefault(pid, {})[sku_id] = found.limit
            if found.gift is not None:
                rules[(pid, sku_id)] = found.gift
            out.append(OrderLine(n, pid, sku_id, qty, found.price))
            available = got[1].get(sku_id, SkuStock()).available
            if short is None and available < qty:
                short = (pid, sku_id, available)
        return out, limits, rules, short

    async def checkout(self, *, user: str, room: str, order_id: str, lines: Sequence[Line],
                       coupon_ids: Sequence[str] | None, sales: Mapping[str, SaleTerms], now_ms: int,
                       request_id: str = "") -> tuple[CartOrder, bool]:
        """Reserve every line as one order (see the module docstring); ``(order, duplicate)``.
        ``coupon_ids`` None: the proposal; ``[]``: none.

        Raises:
            BadFrame: ``cart_empty``, ``invalid``, ``too_many_coupons``.
            CheckoutRefused: a line or coupon refused (nothing is held).
            Conflict: ``order_exists`` (this order id was made by another request).
            Unavailable: Redis or the log down (retry with the same key).
        """
        if not lines:
            raise BadFrame("the cart is empty: add a line first", code="cart_empty")
        existing = await self.carts.order(order_id)
        if existing is not None and existing.user != user:
            raise Conflict(f"order {order_id} exists", code="order_exists")
        bought, limits, rules, short = await self._price(user, lines, sales)
        if existing is None and short is not None:
            # sold out at the read: refused before anything is opened or held (the storm's
            # common answer costs the reads only); units put back later are found by the
            # next checkout, as by one that came a moment earlier. A retry of an order that
            # exists goes on to meet its holds.
            pid, sku, available = short
            raise refusal("sold_out", pid, sku, f" ({available} left)")
        return await self._checkout(user, room, order_id, bought, limits, rules, coupon_ids, sales, now_ms, request_id,
                                    prior=existing)

    async def _checkout(self, user: str, room: str, oid: str, bought: list[OrderLine],
                        limits: Mapping[str, Mapping[str, int]], rules: Mapping[tuple[str, str], GiftRule],
                        coupon_ids: Sequence[str] | None, sales: Mapping[str, SaleTerms], now_ms: int,
                        request_id: str, *, prior: CartOrder | None) -> tuple[CartOrder, bool]:
        qty, subtotal = totals(bought)
        offers = {o.coupon_id: o for o in await self.offers(user, now_ms)}
        fp = _fingerprint(bought, coupon_ids)
        if prior is not None:
            if prior.state == "refused":
                r = prior.refusal or {}
                raise refusal(str(r.get("code") or prior.reason), r.get("product_id"), r.get("sku"))
            if prior.state != "reserved":
                return prior, True
        if prior is None:
            chosen = propose(offers.values(), subtotal=subtotal, room=room, now_ms=now_ms) if coupon_ids is None else \
                choose(offers, coupon_ids, subtotal=subtotal, room=room, now_ms=now_ms)
        else:  # a retry: the coupons it chose
            chosen = Proposal(tuple(offers.get(c) or Offer(c, "", "full_reduction", 0, 0, 0) for c in prior.coupon_ids),
                              prior.discount)
        window = min([self.payment_window_s, *(sales[ln.product_id].payment_window_s for ln in bought if ln.sale_id)])
        pay_by = now_ms + window * 1000 if prior is None else prior.pay_by_ms
        gifts = [OrderLine(len(bought) + i, gp, gs, gq, 0, None, True)
                 for i, (gp, gs, gq, _) in enumerate(gift_lines(bought, rules), start=1)]
        shares = split_discount(chosen, subtotal)
        order = CartOrder(oid, user, room, tuple(bought + gifts), qty, subtotal, sum(d for _, d in shares),
                          tuple((o.coupon_id, o.scope, d) for o, d in shares), pay_by, now_ms, "reserved")
        if prior is None:
            opened = await self.carts.open(order, fp, now_ms=now_ms)
            if opened == "exists":
                raise Conflict(f"order {oid} was made by another request: use a new Idempotency-Key", code="order_exists")
            if opened == "dup":
                return await self._checkout(user, room, oid, bought, limits, rules, coupon_ids, sales, now_ms, request_id,
                                            prior=await self.carts.order(oid))
        else:
            order = prior
        duplicate = prior is not None
        asked = order.asked or order.lines
        taken: list[tuple[str, str | None]] = []  # (product, sale) holds taken, to release on a refusal
        final: list[OrderLine] = []
        try:
            for pid in sorted({ln.product_id for ln in asked}):
                mine = [ln for ln in asked if ln.product_id == pid]
                sale_lines = [ln for ln in mine if ln.sale_id and not ln.gift]
                for ln in sale_lines:
                    assert ln.sale_id is not None
                    try:
                        got = await self.sales.reserve(ln.sale_id, user, ln.qty, oid, now_ms, oid)
                    except NotFound:
                        got = "ended"
                    if isinstance(got, str):
                        raise refusal(got, pid, ln.sku)
                    taken.append((pid, ln.sale_id))
                    final.append(ln)
                need = [ln for ln in mine if not ln.sale_id and not ln.gift]
                opt = [ln for ln in mine if ln.gift]
                if not need and not opt:
                    continue
                held = await self.catalog.reserve(pid, oid, user, [(ln.sku, ln.qty) for ln in need], pay_by_ms=pay_by - 1,
                                               now_ms=now_ms, limits=limits.get(pid, {}),
                                               optional=[(ln.sku, ln.qty) for ln in opt],
                                               priced={ln.sku: ln.unit_price for ln in need})
                if isinstance(held, Refused):
                    if held.reason == "hold_exists":
                        raise Conflict(f"order {oid} was made by another request: use a new Idempotency-Key",
                                       code="order_exists")
                    extra = f" ({held.available} left)" if held.reason == "sold_out" else (
                        f" (limit {limits.get(pid, {}).get(held.sku or '', 0)}, you hold {held.available})"
                        if held.reason == "limit_reached" else f" (now {held.available})"
                        if held.reason == "price_changed" else "")
                    raise refusal(held.reason, pid, held.sku, extra)
                assert isinstance(held, Reserved)
                if held.lines:
                    taken.append((pid, None))
                final += need
                got_opt = dict(held.lines[len(need):])
                final += [ln for ln in opt if got_opt.get(ln.sku, 0) >= ln.qty]
            for cid, scope, _ in order.coupons:
                await self.coupons.lock_for_order(user, cid, f"{oid}/{scope}", order.subtotal, now_ms=now_ms)
        except (CheckoutRefused, Conflict) as exc:  # every hold taken goes back, then the gate says why
            code = exc.code if isinstance(exc, CheckoutRefused) or exc.code != "coupon_not_usable" else "coupon_not_usable"
            await self._release(oid, taken, now_ms)
            for _, scope, _ in order.coupons:
                await self.coupons.restore(f"{oid}/{scope}", now_ms=now_ms)
            info = {"code": code, "product_id": getattr(exc, "product_id", None), "sku": getattr(exc, "sku", None)}
            await self.carts.step(oid, "refuse", now_ms=now_ms, reason=code, refusal=info)
            await self._forget(oid)
            if isinstance(exc, CheckoutRefused):
                raise
            raise CheckoutRefused(exc.message, code=exc.code) from exc
        final.sort(key=lambda ln: ln.n)
        if tuple(final) != order.lines:  # a gift out of stock: the order is what the holds took
            order = CartOrder(order.order_id, order.user, order.room, tuple(final), order.qty, order.subtotal, order.discount,
                              order.coupons, order.pay_by_ms, order.created_ms, order.state, asked=asked)
            await self.carts.set_record(order)
        await self.log.append(TOPIC, oid, "order.reserved", self._data(order, request_id=request_id),
                              event_id=f"{oid}:reserved", ts=now_ms)
        return order, duplicate

    async def _forget(self, oid: str) -> None:
        await self.carts.forget_deadline(oid)

    async def _release(self, oid: str, taken: Sequence[tuple[str, str | None]], now_ms: int) -> None:
        for pid, sale_id in reversed(taken):
            if sale_id is None:
                await self.catalog.release(pid, oid, now_ms=now_ms)
            else:
                try:
                    await self.sales.release(sale_id, oid)
                except NotFound:
                    pass

    def _data(self, o: CartOrder, **extra: Any) -> dict[str, Any]:
        window_s = max(0, (o.pay_by_ms - o.created_ms) // 1000)
        return {"order_id": o.order_id, "sale_id": CART_SALE_ID, "room_id": o.room, "user_id": o.user, "qty": o.qty,
                "unit_price": 0, "gross": o.subtotal, "discount": o.discount,
                "coupon_id": _coupon_column(o.coupons), "pay_by_ms": o.pay_by_ms, "payment_window_s": window_s,
                "reserved_ms": o.created_ms, "lines": [ln.to_dict() for ln in o.lines],
                "coupons": [{"coupon_id": c, "scope": sc, "discount": d} for c, sc, d in o.coupons], **extra}

    # ------------------------------------------------------------------ pay / cancel
    async def order(self, order_id: str, user: str | None = None) -> CartOrder:
        """The cart order (``user``: must be theirs; a refused checkout is no order).

        Raises:
            NotFound: no such order (or not the user's).
        """
        o = await self.carts.order(order_id)
        if o is None or o.state == "refused" or (user is not None and o.user != user):
            raise NotFound(f"no order {order_id}", code="not_found")
        return o

    async def _holds(self, o: CartOrder, step: str, at_ms: int) -> None:
        """Every hold follows the gate (each step idempotent)."""
        done: set[tuple[str, str | None]] = set()
        for ln in o.lines:
            key = (ln.product_id, ln.sale_id if ln.sale_id and not ln.gift else None)
            if key in done:
                continue
            done.add(key)
            if key[1] is not None:
                try:
                    if step == "pay":
                        await self.sales.mark_paid(key[1], o.order_id, at_ms)
                    else:
                        await self.sales.release(key[1], o.order_id)
                except NotFound:
                    log.warning("cart.sale_hold_missing", extra={"order": o.order_id, "sale": key[1]})
            elif step == "pay":
                await self.catalog.pay(ln.product_id, o.order_id, now_ms=min(at_ms, o.pay_by_ms - 1))
            else:
                await self.catalog.release(ln.product_id, o.order_id, now_ms=at_ms)

    async def pay(self, *, order_id: str, user: str | None, now_ms: int) -> CartPay:
        """Pay the order (the provider's verified callback or the dev ``/pay``): the gate
        moves once, every hold follows, the coupons are consumed, ``order.paid`` appended.
        ``expired`` / ``already_cancelled``: nothing taken (the order is cancelled).

        Raises:
            NotFound: no such order of ``user``.
        """
        o = await self.order(order_id, user)
        code, paid_ms = await self.carts.step(order_id, "pay", now_ms=now_ms)
        if code in ("paid", "already_paid"):
            await self._holds(o, "pay", paid_ms)
            for _, scope, _ in o.coupons:
                await self.coupons.consume(f"{order_id}/{scope}", now_ms=paid_ms)
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(self.keys.room(o.room, "payers"), o.user)
            pipe.expire(self.keys.room(o.room, "payers"), self.room_retention_s)
            await pipe.execute()
            await self.log.append(TOPIC, order_id, "order.paid",
                                  self._data(o, amount=o.amount, paid_ms=paid_ms),
                                  event_id=f"{order_id}:paid", ts=paid_ms)
            await self._forget(order_id)
        elif code in ("expired", "already_cancelled"):
            await self.cancel(order_id=order_id, user=None, now_ms=now_ms, reason="timeout")
        return CartPay(order_id, code, o.amount, o.discount)

    async def cancel(self, *, order_id: str, user: str | None, now_ms: int, reason: str) -> str:
        """Cancel (buyer, ops, time-out): ``released`` / ``already_released`` (every hold
        released again: a crashed cancel is completed), ``already_paid`` (the time-out lost
        to the payment: the holds are paid again, completing a crashed payment).

        Raises:
            NotFound: no such order of ``user``. Conflict: (``already_paid``) a buyer's cancel of a paid order.
        """
        o = await self.order(order_id, user)
        code, _ = await self.carts.step(order_id, "cancel", now_ms=now_ms, reason=reason)
        if code == "already_paid":
            if reason != "timeout":
                raise Conflict("the order is paid; ask for a refund instead", code="already_paid")
            await self._holds(o, "pay", o.paid_ms or now_ms)
            await self._forget(order_id)
            return code
        after = await self.carts.order(order_id)
        why = after.reason if after is not None and after.reason else reason
        await self._holds(o, "release", now_ms)
        for _, scope, _ in o.coupons:
            await self.coupons.restore(f"{order_id}/{scope}", now_ms=now_ms)
        await self.log.append(TOPIC, order_id, "order.cancelled",
                              self._data(o, amount=o.amount, reason=why, cancelled_ms=now_ms),
                              event_id=f"{order_id}:cancelled", ts=now_ms)
        await self._forget(order_id)
        return code

    async def expire_due(self, now_ms: int, limit: int = 500) -> list[tuple[str, str]]:
        """Cancel the cart orders whose pay window closed (and complete any whose payment
        or cancel crashed half-way); ``(order_id, outcome)`` pairs."""
        done = []
        for oid in await self.carts.due(now_ms, limit):
            try:
                done.append((oid, await self.cancel(order_id=oid, user=None, now_ms=now_ms, reason="timeout")))
            except NotFound:  # a refused checkout, or a gate that expired
                await self._forget(oid)
            except LiveCommerceError as exc:
                log.warning("cart.timeout_failed", extra={"order": oid, "err": exc.message})
        return done

    # ------------------------------------------------------------------ refunds
    async def refund(self, order_id: str, refund_id: str, *, qty_before: int, qty: int) -> bool:
        """Put the refunded units back on sale, line by line, once per ``refund_id``; True
        when something was restocked now.

        Raises:
            NotFound: no such order (its gate expired).
        """
        o = await self.order(order_id)
        moved = False
        by_product: dict[str, list[tuple[str, int]]] = {}
        for ln in refund_lines(o.lines, qty_before=qty_before, qty=qty):
            if ln.sale_id and not ln.gift:
                try:
                    outcome, restocked, _ = await self.sales.refund(ln.sale_id, order_id, refund_id, ln.qty)
                    moved = moved or (outcome == "ok" and restocked)
                except (NotFound, Conflict) as exc:
                    log.info("cart.refund_sale_stock_not_moved", extra={"order": order_id, "err": exc.message})
            else:
                by_product.setdefault(ln.product_id, []).append((ln.sku, ln.qty))
        for pid, lines in sorted(by_product.items()):
            merged: dict[str, int] = {}
            for s, q in lines:
                merged[s] = merged.get(s, 0) + q
            got = await self.catalog.refund(pid, order_id, refund_id, list(merged.items()))
            if got == "too_many":
                log.error("cart.refund_too_many", extra={"order": order_id, "refund": refund_id, "product": pid})
            moved = moved or got == "ok"
        return moved
