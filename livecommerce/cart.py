"""The cart and its checkout at list price: lines, gifts, coupons, the order's lines. No I/O.

A **cart** belongs to one user in one room: at most :data:`MAX_LINES` lines, one per SKU,
each 1..:data:`MAX_LINE_QTY` units (:func:`cart_step` is the rule every change follows;
``cart_put.lua`` is its atomic twin). Nothing is reserved while a line sits in the cart.

**Checkout** turns lines into one order (``cart.<hash>``, :func:`cart_order_id`): every line
reserved or none (one catalogue hold per product under the order id, product by product in
id order, :func:`holds_plan`; a line of a product on flash sale in the room reserves through
the sale), gifts added while their stock lasts (:func:`gift_lines`), coupons locked (at
most one platform and one shop coupon: :func:`propose`), one pay window. The order's gate
in Redis moves by :data:`ORDER_STEPS`::

    reserved --pay--> paid
        |
        +--cancel / time-out--> cancelled
        +--a line refused at checkout--> refused   (never an order: nothing on the log)

and every hold follows the gate (pay: each hold paid; cancel: each released), exactly once,
whoever repeats the step.

**Coupons.** A *shop* coupon is a drop of a room (usable on orders in that room); a
*platform* coupon has no room (points redemptions, segment drops). Each coupon's
threshold is compared with the cart's subtotal and its discount computed on it
(:func:`coupon_discount`); the order's discount is ``min(subtotal, sum)``. The proposal is
the eligible combination, at most one per scope, with the largest discount (ties: fewer
coupons, then the earliest expiry, then the ids).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import product as cartesian
from typing import Any, Literal

from .catalog import GiftRule
from .errors import BadFrame, Conflict
from .flash_sale import ident_problem

MAX_LINES = 50
MAX_LINE_QTY = 99
MAX_COUPONS = 2  # one platform + one shop
CART_TTL_S = 7 * 24 * 3600
CART_SALE_ID = "cart"  # the ``sale_id`` of every cart order (SQL, events)
ORDER_PREFIX = "cart."

Scope = Literal["platform", "shop"]
CouponReason = Literal["below_threshold", "other_room", "expired", "not_claimed"]
GateState = Literal["reserved", "paid", "cancelled", "refused"]
GateStep = Literal["pay", "cancel", "refuse"]

ORDER_STEPS: dict[tuple[GateState, GateStep], GateState] = {
    ("reserved", "pay"): "paid",
    ("reserved", "cancel"): "cancelled",
    ("reserved", "refuse"): "refused",  # a line was refused at checkout: every hold released, no order
}


def is_cart_order(order_id: str) -> bool:
    return order_id.startswith(ORDER_PREFIX)


def cart_order_id(user: str, key: str) -> str:
    """The order a checkout with this idempotency key makes: the same key, the same order
    (a retry whose stored answer was lost reserves under the same id and meets its holds)."""
    return ORDER_PREFIX + hashlib.sha256(f"{user}\n{key}".encode()).hexdigest()[:24]


def gate_step(state: GateState, step: GateStep) -> tuple[GateState, str]:
    """The gate after ``step`` and the outcome word: ``paid``/``released`` when it moved,
    ``already_paid``, ``already_cancelled`` (pay after cancel), ``already_released``
    (cancel again). Never raises."""
    to = ORDER_STEPS.get((state, step))
    if to is not None:
        return to, {"pay": "paid", "cancel": "released", "refuse": "refused"}[step]
    if step == "refuse":
        return state, f"already_{state}"
    if state == "paid":
        return state, "already_paid"
    return state, "already_cancelled" if step == "pay" else "already_released"


# ------------------------------------------------------------------------------ lines


@dataclass(frozen=True, slots=True)
class Line:
    """A cart line: units of one SKU of one product."""

    product_id: str
    sku: str
    qty: int


def check_qty(v: Any, *, lo: int = 1, name: str = "qty") -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_LINE_QTY:
        raise BadFrame(f"'{name}' must be an integer in {lo}..{MAX_LINE_QTY}", code="invalid")
    return v


def check_id(v: Any, name: str) -> str:
    problem = ident_problem(v)
    if problem is not None:
        raise BadFrame(f"'{name}' {problem}", code="invalid")
    return str(v)


def parse_line(d: Any, *, default_qty: int | None = 1) -> Line:
    """``{product_id, sku?, qty?}`` (``sku`` ``""`` when absent: the product's only SKU).

    Raises:
        BadFrame: (``invalid``) not an object, unknown fields, bad ids or quantity.
    """
    if not isinstance(d, Mapping):
        raise BadFrame("a line is {product_id, sku, qty}", code="invalid")
    extra = sorted(str(k) for k in d if k not in ("product_id", "sku", "qty"))
    if extra:
        raise BadFrame(f"unknown field {extra[0]!r} (known: product_id, sku, qty)", code="invalid")
    pid = check_id(d.get("product_id"), "product_id")
    sku = "" if d.get("sku") is None else check_id(d.get("sku"), "sku")
    raw = d.get("qty", default_qty)
    if raw is None:
        raise BadFrame("'qty' is required", code="invalid")
    return Line(pid, sku, check_qty(raw))


def cart_step(lines: Mapping[tuple[str, str], int], key: tuple[str, str], *, add: int | None = None,
              set_to: int | None = None) -> dict[tuple[str, str], int]:
    """The cart's lines after adding ``add`` units of ``key`` (product, sku) or setting its
    quantity to ``set_to`` (0 removes it). The Lua twin is ``cart_put.lua``.

    Raises:
        Conflict: ``cart_full`` (a new line past :data:`MAX_LINES`), ``qty_too_large`` (a
            line past :data:`MAX_LINE_QTY`).
    """
    out = dict(lines)
    qty = (out.get(key, 0) + (add or 0)) if set_to is None else set_to
    if qty > MAX_LINE_QTY:
        raise Conflict(f"a line holds at most {MAX_LINE_QTY} units", code="qty_too_large")
    if qty <= 0:
        out.pop(key, None)
        return out
    if key not in out and len(out) >= MAX_LINES:
        raise Conflict(f"a cart holds at most {MAX_LINES} lines: check out or remove some", code="cart_full")
    out[key] = qty
    return out


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One line of a cart order: ``n`` numbers the lines from 1; ``unit_price`` in cents
    (0 for a gift); ``sale_id`` the flash sale it was reserved through, if any."""

    n: int
    product_id: str
    sku: str
    qty: int
    unit_price: int
    sale_id: str | None = None
    gift: bool = False

    @property
    def subtotal(self) -> int:
        return self.qty * self.unit_price

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def line_from(d: Mapping[str, Any]) -> OrderLine:
    """The inverse of :meth:`OrderLine.to_dict` (events, the gate record: trusted input)."""
    return OrderLine(int(d["n"]), str(d["product_id"]), str(d["sku"]), int(d["qty"]), int(d["unit_price"]),
                     None if d.get("sale_id") in (None, "") else str(d["sale_id"]), bool(d.get("gift")))


def totals(lines: Sequence[OrderLine]) -> tuple[int, int]:
    """``(units, subtotal)`` of the bought lines (gifts are neither)."""
    bought = [ln for ln in lines if not ln.gift]
    return sum(ln.qty for ln in bought), sum(ln.subtotal for ln in bought)


def gift_lines(bought: Sequence[OrderLine], rules: Mapping[tuple[str, str], GiftRule]) -> list[tuple[str, str, int, str]]:
    """The gifts the bought lines earn: ``(product_id, sku, qty, for_sku)`` for each line
    whose SKU has a rule (``rules``: (product, sku) -> rule) and at least ``min_qty``
    units; one gift per rule per order, in line order. Whether its stock lasts is the
    reserve script's call."""
    out = []
    for ln in bought:
        rule = rules.get((ln.product_id, ln.sku))
        if rule is not None and not ln.gift and ln.qty >= rule.min_qty:
            out.append((rule.product_id or ln.product_id, rule.sku, rule.qty, ln.sku))
    return out


def holds_plan(lines: Iterable[OrderLine]) -> list[tuple[str, list[OrderLine]]]:
    """The catalogue holds of an order: its lines not reserved through a sale, grouped per
    product, products in id order (the order every checkout takes them in)."""
    by: dict[str, list[OrderLine]] = {}
    for ln in lines:
        if ln.sale_id is None:
            by.setdefault(ln.product_id, []).append(ln)
    return sorted(by.items())


def refund_lines(lines: Sequence[OrderLine], *, qty_before: int, qty: int) -> list[OrderLine]:
    """Which units a refund of ``qty`` units after ``qty_before`` refunded ones puts back:
    the bought units counted line by line in line order, units ``qty_before`` ..
    ``qty_before + qty - 1``; gifts come back with the refund that returns the last bought
    unit. Each returned line carries the units of its line this refund covers."""
    units, _ = totals(lines)
    lo, hi = qty_before, min(units, qty_before + qty)
    out: list[OrderLine] = []
    at = 0
    for ln in lines:
        if ln.gift:
            continue
        a, b = max(lo, at), min(hi, at + ln.qty)
        if b > a:
            out.append(OrderLine(ln.n, ln.product_id, ln.sku, b - a, ln.unit_price, ln.sale_id))
        at += ln.qty
    if hi >= units > lo:
        out += [ln for ln in lines if ln.gift]
    return out


# ------------------------------------------------------------------------------ coupons


@dataclass(frozen=True, slots=True)
class Offer:
    """One of the user's coupons as the cart sees it (``room`` ``""``: a platform coupon)."""

    coupon_id: str
    room: str
    kind: str  # full_reduction | percent
    threshold: int
    value: int
    expires_ms: int
    state: str = "claimed"

    @property
    def scope(self) -> Scope:
        return "shop" if self.room else "platform"


def coupon_discount(o: Offer, subtotal: int) -> int:
    """What ``o`` takes off ``subtotal`` (its threshold met): ``full_reduction`` its value,
    ``percent`` ``floor(subtotal * value / 100)``, never more than the subtotal."""
    d = subtotal * o.value // 100 if o.kind == "percent" else o.value
    return max(0, min(d, subtotal))


def ineligible(o: Offer, *, subtotal: int, room: str, now_ms: int) -> CouponReason | None:
    """Why ``o`` cannot be used on a cart of ``subtotal`` in ``room`` now (None: it can)."""
    if o.state != "claimed":
        return "not_claimed"
    if now_ms >= o.expires_ms:
        return "expired"
    if o.room and o.room != room:
        return "other_room"
    if subtotal < o.threshold:
        return "below_threshold"
    return None


@dataclass(frozen=True, slots=True)
class Proposal:
    coupons: tuple[Offer, ...]
    discount: int


def combo_discount(combo: Sequence[Offer], subtotal: int) -> int:
    return min(subtotal, sum(coupon_discount(o, subtotal) for o in combo))


def stackable(combo: Sequence[Offer]) -> bool:
    """At most one coupon per scope (one platform + one shop), no coupon twice."""
    scopes = [o.scope for o in combo]
    return len(set(scopes)) == len(scopes) and len({o.coupon_id for o in combo}) == len(combo)


def _rank(combo: Sequence[Offer], subtotal: int) -> tuple[int, int, tuple[int, ...], tuple[str, ...]]:
    return (-combo_discount(combo, subtotal), len(combo), tuple(sorted(o.expires_ms for o in combo)),
            tuple(sorted(o.coupon_id for o in combo)))


def propose(offers: Iterable[Offer], *, subtotal: int, room: str, now_ms: int) -> Proposal:
    """The best eligible combination (see the module docstring); no coupon when none helps."""
    usable = [o for o in offers if ineligible(o, subtotal=subtotal, room=room, now_ms=now_ms) is None]
    per_scope: dict[str, list[Offer | None]] = {"platform": [None], "shop": [None]}
    for o in usable:
        per_scope[o.scope].append(o)
    best: tuple[Offer, ...] = ()
    for p, s in cartesian(per_scope["platform"], per_scope["shop"]):
        combo = tuple(o for o in (p, s) if o is not None)
        if combo_discount(combo, subtotal) > 0 and _rank(combo, subtotal) < _rank(best, subtotal):
            best = combo
    return Proposal(best, combo_discount(best, subtotal))


def choose(offers: Mapping[str, Offer], ids: Sequence[str], *, subtotal: int, room: str, now_ms: int) -> Proposal:
    """The coupons the buyer named, checked: each theirs and eligible, stackable.

    Raises:
        BadFrame: (``too_many_coupons``) more than one per scope or more than two.
        Conflict: (``coupon_not_usable``) not the user's unused coupon, or not eligible.
    """
    if len(ids) > MAX_COUPONS or len(set(ids)) != len(ids):
        raise BadFrame("at most one platform coupon and one shop coupon per order", code="too_many_coupons")
    combo = []
    for cid in ids:
        o = offers.get(cid)
        if o is None:
            raise Conflict(f"coupon {cid} is not one of your unused coupons", code="coupon_not_usable")
        why = ineligible(o, subtotal=subtotal, room=room, now_ms=now_ms)
        if why is not None:
            raise Conflict(f"coupon {cid} cannot be used on this order: {why.replace('_', ' ')}", code="coupon_not_usable")
        combo.append(o)
    if not stackable(combo):
        raise BadFrame("at most one platform coupon and one shop coupon per order", code="too_many_coupons")
    return Proposal(tuple(combo), combo_discount(combo, subtotal))


def offer_view(o: Offer, subtotal: int, reason: CouponReason | None) -> dict[str, Any]:
    out: dict[str, Any] = {"coupon_id": o.coupon_id, "scope": o.scope, "kind": o.kind, "threshold": o.threshold,
                           "value": o.value, "expires_ms": o.expires_ms}
    if reason is None:
        out["discount"] = coupon_discount(o, subtotal)
    else:
        out["reason"] = reason
    return out


def split_discount(proposal: Proposal, subtotal: int) -> list[tuple[Offer, int]]:
    """Each coupon's share of the order's discount (the shop coupon first, the platform one
    takes what is left under the subtotal): what each lock records."""
    left = subtotal
    out = []
    for o in sorted(proposal.coupons, key=lambda o: o.scope != "shop"):
        d = min(left, coupon_discount(o, subtotal))
        out.append((o, d))
        left -= d
    return out
