"""Orders: the order value, its lifecycle table, payment deadlines and refunds by amount.

No I/O. All transition logic lives in :data:`ORDER_TRANSITIONS`::

    reserved --> paid --> refund_requested --> refunded <----------------+
        |        |  ^               |                                    |
        v        |  +---------------+  (refund rejected, or partial)     |
    cancelled    v                                                       |
              shipped --> delivered --> return_requested ----------------+
                              |   ^               |
                              |   +---------------+  (return rejected, or partial)
                              v
                          completed

* ``paid -> shipped``: the order's first shipment; ``shipped -> delivered``: every unit owed
  shipped and every parcel delivered; ``delivered -> completed``: receipt confirmed (by the
  buyer, or automatically ``LC_AUTO_CONFIRM_S`` after delivery). See
  :mod:`livecommerce.fulfilment`, which also holds the after-sales rule: a refund only
  before shipping (``paid -> refund_requested``), a return-and-refund only once delivered
  (``delivered -> return_requested``).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import BadFrame, Conflict, NotFound

OrderState = Literal["reserved", "paid", "cancelled", "refund_requested", "refunded", "shipped", "delivered",
                     "return_requested", "completed"]
ORDER_STATES: tuple[OrderState, ...] = get_args(OrderState)
TERMINAL: frozenset[OrderState] = frozenset({"cancelled", "refunded", "completed"})
#: states whose units are sold (paid for, whatever happened since): GMV and sold units count them
SOLD_STATES: tuple[OrderState, ...] = ("paid", "refund_requested", "refunded", "shipped", "delivered", "return_requested",
                                       "completed")

ORDER_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    "reserved": frozenset({"paid", "cancelled"}),
    "paid": frozenset({"refund_requested", "shipped"}),
    "refund_requested": frozenset({"refunded", "paid"}),
    "shipped": frozenset({"delivered"}),
    "delivered": frozenset({"completed", "return_requested"}),
    "return_requested": frozenset({"refunded", "delivered"}),
    "cancelled": frozenset(),
    "refunded": frozenset(),
    "completed": frozenset(),
}
#: an open after-sale request and the state its order comes back to (rejected, or partial)
SETTLES_TO: dict[OrderState, OrderState] = {"refund_requested": "paid", "return_requested": "delivered"}

# The log event type that records each target state (what workers append and consume).
EVENT_FOR_STATE: dict[OrderState, str] = {
    "reserved": "order.reserved",
    "paid": "order.paid",
    "cancelled": "order.cancelled",
    "refund_requested": "order.refund_requested",
    "refunded": "order.refunded",
    "shipped": "order.shipped",
    "delivered": "order.delivered",
    "return_requested": "order.return_requested",
    "completed": "order.completed",
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
    gross: int | None = None,
) -> Order:
    """A freshly reserved order with its payment deadline. ``gross``: the price of the whole
    order when its units have different prices (a cart order: ``unit_price`` 0, the lines
    carry theirs); default ``qty * unit_price``.

    Raises:
        BadFrame: qty < 1, a negative price or discount.
    """
    if qty < 1:
        raise BadFrame("qty must be at least 1", code="invalid")
    if unit_price < 0 or discount < 0 or (gross is not None and gross < 0):
        raise BadFrame("price and discount must not be negative", code="invalid")
    gross = qty * unit_price if gross is None else gross
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

    Refund settlement (from ``refund_requested``, or ``return_requested``):

    * ``to="refunded"``: the rest comes back; with no amounts given, the whole remainder is
      refunded; given amounts must be exactly the remainder.
    * ``to="paid"`` (``"delivered"`` from a return): a partial refund (``refund_amount > 0``,
      leaving something paid) or a rejected request (no amounts).

    Amounts are only allowed on those two steps.

    Raises:
        Conflict: illegal step (see :func:`check_transition`).
        BadFrame: refund amounts out of range or given on another step.
    """
    if not check_transition(order.state, to):
        return TransitionResult(order, False)
    if refund_qty < 0 or refund_amount < 0:
        raise BadFrame("refund amounts must not be negative", code="invalid")
    settling = order.state in SETTLES_TO and to in ("refunded", SETTLES_TO[order.state])
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


# ---------------------------------------------------------------- a batch of steps


@dataclass(frozen=True, slots=True)
class Payment:
    """What an ``order.paid`` says was paid: the net ``amount`` after the coupon's
    ``discount`` (see ``Tx.record_payment``)."""

    amount: int
    discount: int
    coupon_id: str | None = None


@dataclass(frozen=True, slots=True)
class OrderStep:
    """One log event's effect on one order, as the orders worker applies it.

    * ``to == "reserved"``: insert ``order`` (which must be ``reserved``) with its first
      history row ``event_id``, unless an order with its id exists (then nothing).
    * any other ``to``: move ``order_id`` to ``to`` (no refund amounts), recorded as
      ``event_id``. When the store has no such order and ``order`` is given (the order as it
      was reserved), it is inserted first under ``<order_id>:reserved``: the reserve event
      never made it. Then ``payment``, if any, is recorded (unless a refund was taken).
    """

    event_id: str
    order_id: str
    to: OrderState
    ts_ms: int
    order: Order | None = None
    reason: str | None = None
    payment: Payment | None = None


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one step did: ``changed`` (a reserve inserted the order; a move changed its
    state), the order after it, and ``refused`` when the move was refused (an illegal step,
    or its event id is another order's): nothing of it was written."""

    changed: bool
    order: Order | None
    refused: Conflict | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """The writes a batch of steps makes: orders new to the store (in their state after the
    batch), known orders that changed (the state they were read in, and after), the history
    rows in step order, and each step's outcome."""

    new: dict[str, Order]
    changed: dict[str, tuple[OrderState, Order]]
    history: list[OrderEvent]
    outcomes: list[StepOutcome]


def settle(steps: Sequence[OrderStep], known: Mapping[str, Order], owners: Mapping[str, str]) -> Settlement:
    """Apply ``steps`` in order to the orders the store holds, exactly as the store applies
    one step at a time (``insert_reserved``, ``transition``, ``record_payment``), and return
    the writes of the whole batch, so a batch is one transaction with one statement per table.

    ``known`` holds the store's orders named by the steps (absent: not in the store);
    ``owners`` maps each event id a step may record (``event_id``, and
    ``<order_id>:reserved`` of a step carrying its order) to the order whose history holds
    it, if any. A move whose event id is already in its own order's history changes no
    state (a redelivery) but still records its payment, as ``transition`` then
    ``record_payment`` would.

    Raises:
        Conflict: a reserve whose event id is in another order's history
            (``duplicate_event``): the batch cannot be applied as it is.
        NotFound: a move of an order neither the store nor the step knows.
        BadFrame: a reserve without its order, or of an order not in state ``reserved``.
    """
    current: dict[str, Order] = {}
    new: set[str] = set()
    dirty: set[str] = set()  # known orders a step changed
    own = dict(owners)
    history: list[OrderEvent] = []
    outcomes: list[StepOutcome] = []

    def get(order_id: str) -> Order | None:
        return current.get(order_id) or known.get(order_id)

    def reserve(order: Order, event_id: str) -> bool:
        if get(order.id) is not None:
            return False
        if order.state != "reserved":
            raise BadFrame(f"insert_reserved needs a reserved order, not {order.state}", code="invalid")
        if event_id in own:
            raise Conflict(f"event {event_id} is already recorded for another change", code="duplicate_event")
        current[order.id] = order
        new.add(order.id)
        own[event_id] = order.id
        history.append(OrderEvent(order.id, event_id, None, "reserved", order.created_ms))
        return True

    for s in steps:
        if s.to == "reserved":
            if s.order is None:
                raise BadFrame(f"a reserve step needs its order ({s.event_id})", code="invalid")
            inserted = reserve(s.order, s.event_id)
            outcomes.append(StepOutcome(inserted, get(s.order.id)))
            continue
        if get(s.order_id) is None and s.order is not None:
            reserve(s.order, f"{s.order_id}:reserved")
        order = get(s.order_id)
        if order is None:
            raise NotFound(f"no order {s.order_id}", code="not_found")
        seen = own.get(s.event_id)
        if seen is not None and seen != s.order_id:
            outcomes.append(StepOutcome(False, order, Conflict(f"event {s.event_id} belongs to order {seen}", code="duplicate_event")))
            continue
        if seen is not None:
            result = TransitionResult(order, False)
        else:
            try:
                result = apply_transition(order, s.to, now_ms=s.ts_ms)
            except Conflict as exc:
                outcomes.append(StepOutcome(False, order, exc))
                continue
            if result.changed:
                history.append(OrderEvent(order.id, s.event_id, order.state, result.order.state, s.ts_ms, 0, 0, s.reason))
                own[s.event_id] = order.id
        after = result.order
        pay = s.payment
        if pay is not None and after.refunded_amount == 0 and (
                (after.amount, after.discount, after.coupon_id) != (max(0, pay.amount), max(0, pay.discount), pay.coupon_id)):
            after = dataclasses.replace(after, amount=max(0, pay.amount), discount=max(0, pay.discount), coupon_id=pay.coupon_id)
        if after is not order:
            current[order.id] = after
            if order.id not in new:
                dirty.add(order.id)
        outcomes.append(StepOutcome(result.changed, after))
    changed = {oid: (known[oid].state, current[oid]) for oid in dirty}
    return Settlement({oid: current[oid] for oid in new}, changed, history, outcomes)
