"""Orders: the order value, its lifecycle table, payment deadlines and refunds by amount.

No I/O. All transition logic lives in :data:`ORDER_TRANSITIONS`::

    reserved --> paid --> refund_requested --> refunded
        |         ^               |
        v         +---------------+   (refund rejected, or a partial refund settled)
    cancelled

* Re-applying a transition whose effect already holds (``paid`` on a paid order) is a no-op:
  :func:`apply_transition` returns the same order with ``changed=False``. Event-level
  idempotency (the same log event twice) is the store's job (``order_events.event_id``).
* Any other step is illegal and raises :class:`~livecommerce.errors.Conflict`.
* Partial refunds are amounts: ``refunded_qty`` / ``refunded_amount`` grow with each settled
  refund; the order ends ``refunded`` when the whole amount is back, else returns to ``paid``
  (and may ask again). Invariant: ``0 <= refunded_amount <= amount`` and
  ``0 <= refunded_qty <= qty``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import BadFrame, Conflict

OrderState = Literal["reserved", "paid", "cancelled", "refund_requested", "refunded"]
ORDER_STATES: tuple[OrderState, ...] = get_args(OrderState)
TERMINAL: frozenset[OrderState] = frozenset({"cancelled", "refunded"})

ORDER_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    "reserved": frozenset({"paid", "cancelled"}),
    "paid": frozenset({"refund_requested"}),
    "refund_requested": frozenset({"refunded", "paid"}),
    "cancelled": frozenset(),
    "refunded": frozenset(),
}

# The log event type that records each target state (what workers append and consume).
EVENT_FOR_STATE: dict[OrderState, str] = {
    "reserved": "order.reserved",
    "paid": "order.paid",
    "cancelled": "order.cancelled",
    "refund_requested": "order.refund_requested",
    "refunded": "order.refunded",
}


@dataclass(frozen=True, slots=True)
class Order:
    """One order. Money is integer cents: ``amount = qty * unit_price - discount`` (the
    coupon's discount, never below zero). Times are epoch ms."""

    id: str
    sale_id: str
    room_id: str
    user_id: str
    qty: int
    unit_price: int
    amount: int
    state: OrderState
    pay_by_ms: int
    created_ms: int
    updated_ms: int
    coupon_id: str | None = None
    discount: int = 0
    refunded_qty: int = 0
    refunded_amount: int = 0
    request_id: str | None = None

    @property
    def net_amount(self) -> int:
        """What the buyer finally paid: amount minus refunds (GMV contribution when paid)."""
        return self.amount - self.refunded_amount


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """``order`` after the step; ``changed`` is False when the step was a no-op (already in
    that state, or the same event applied before)."""

    order: Order
    changed: bool


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One row of an order's state history."""

    order_id: str
    event_id: str
    from_state: OrderState | None
    to_state: OrderState
    ts_ms: int
    refund_qty: int = 0
    refund_amount: int = 0
    reason: str | None = None


def new_order(
    *,
    order_id: str,
    sale_id: str,
    room_id: str,
    user_id: str,
    qty: int,
    unit_price: int,
    now_ms: int,
    payment_window_s: int,
    coupon_id: str | None = None,
    discount: int = 0,
    request_id: str | None = None,
) -> Order:
    """A freshly reserved order with its payment deadline.

    Raises:
        BadFrame: qty < 1, a negative price or discount.
    """
    if qty < 1:
        raise BadFrame("qty must be at least 1", code="invalid")
    if unit_price < 0 or discount < 0:
        raise BadFrame("price and discount must not be negative", code="invalid")
    gross = qty * unit_price
    return Order(
        id=order_id,
        sale_id=sale_id,
        room_id=room_id,
        user_id=user_id,
        qty=qty,
        unit_price=unit_price,
        amount=max(0, gross - discount),
        state="reserved",
        pay_by_ms=payment_deadline(now_ms, payment_window_s),
        created_ms=now_ms,
        updated_ms=now_ms,
        coupon_id=coupon_id,
        discount=min(discount, gross),
        request_id=request_id,
    )


def payment_deadline(reserved_ms: int, payment_window_s: int) -> int:
    """Epoch ms by which a reservation made at ``reserved_ms`` must be paid (exclusive:
    payment at ``>= deadline`` is late). The Lua reserve script computes the same value."""
    return reserved_ms + payment_window_s * 1000


def is_overdue(order: Order, now_ms: int) -> bool:
    """True when the order is still unpaid at or after its deadline (time-out cancels it)."""
    return order.state == "reserved" and now_ms >= order.pay_by_ms


def check_transition(current: OrderState, to: OrderState) -> bool:
    """True if ``current -> to`` is a change, False if it is a no-op (``to == current``).

    Raises:
        Conflict: the step is not in :data:`ORDER_TRANSITIONS` (code ``illegal_transition``).
    """
    if to == current:
        return False
    if to not in ORDER_TRANSITIONS.get(current, frozenset()):
        raise Conflict(f"order cannot go from {current} to {to}", code="illegal_transition")
    return True


def apply_transition(
    order: Order,
    to: OrderState,
    *,
    now_ms: int,
    refund_qty: int = 0,
    refund_amount: int = 0,
) -> TransitionResult:
    """Move ``order`` to ``to``.

    Refund settlement (from ``refund_requested``):

    * ``to="refunded"``: the rest comes back; with no amounts given, the whole remainder is
      refunded; given amounts must be exactly the remainder.
    * ``to="paid"``: a partial refund (``refund_amount > 0``, leaving something paid) or a
      rejected request (no amounts).

    Amounts are only allowed on those two steps.

    Raises:
        Conflict: illegal step (see :func:`check_transition`).
        BadFrame: refund amounts out of range or given on another step.
    """
    if not check_transition(order.state, to):
        return TransitionResult(order, False)
    if refund_qty < 0 or refund_amount < 0:
        raise BadFrame("refund amounts must not be negative", code="invalid")
    settling = order.state == "refund_requested" and to in ("refunded", "paid")
    if (refund_qty or refund_amount) and not settling:
        raise BadFrame(
            f"refund amounts are only valid when settling a refund, not {to}", code="invalid"
        )
    rq, ra = order.refunded_qty, order.refunded_amount
    if to == "refunded":
        left_q, left_a = order.qty - rq, order.amount - ra
        if refund_qty == 0 and refund_amount == 0:
            refund_qty, refund_amount = left_q, left_a
        if refund_amount != left_a or refund_qty > left_q:
            raise BadFrame(
                f"a full refund must return the remaining {left_a} (and at most {left_q} units)",
                code="invalid",
            )
    elif settling and (refund_amount or refund_qty):
        if ra + refund_amount >= order.amount:
            raise BadFrame("this refund returns everything: settle it as refunded", code="invalid")
        if rq + refund_qty > order.qty:
            raise BadFrame(f"cannot refund more than {order.qty} units", code="invalid")
    new = dataclasses.replace(
        order,
        state=to,
        updated_ms=now_ms,
        refunded_qty=rq + refund_qty,
        refunded_amount=ra + refund_amount,
    )
    return TransitionResult(new, True)
