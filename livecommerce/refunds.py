"""Refunds of paid orders (after-sales): requests, decisions, amounts and reversals. No I/O.

A viewer asks for a refund of a paid order (all of it, or some units) with a reason; ops or
the host of the order's room approve or reject it; an approved refund is *settled*: the
payment is credited back, the points the order awarded are clawed back, the units go back to
stock when the campaign says ``restock_on_refund`` (else they are counted as refunded and
kept), and the host's GMV drops by the refunded amount. Every step is one event on the
durable log (topic ``orders``, key the order id, so an order's steps keep their order):

============================  ==============================================================
event (id)                    data (every refund event carries the whole refund, so a
                              handler that sees a later step first can catch up)
============================  ==============================================================
``refund.requested``          :meth:`Refund.event_data`: ``refund_id, order_id, n, user_id,
(``<refund>:requested``)      room_id, sale_id, host, qty, amount, reason, note,
                              order_qty, order_amount, qty_before, amount_before,
                              requested_ms``
``refund.approved``           the same (without ``note``) + ``decided_by, decided_ms,
(``<refund>:approved``)       decision_note``
``refund.rejected``           the same as ``refund.approved``
(``<refund>:rejected``)
``order.refunded``            the approved data + ``restocked`` (bool), ``credited`` (coins),
(``<refund>:refunded``)       ``full`` (the order is wholly refunded now), ``settled_ms``
============================  ==============================================================

Refund ids are ``<order_id>.r<n>`` (``n`` = 1, 2 ... per order), so an order's refunds,
and every event id, are deterministic: a retried append is the same event.

Life-cycle of one refund (:data:`REFUND_TRANSITIONS`)::

    requested --approve--> approved --settle--> refunded
        |
        +------reject----> rejected

and of the order (:data:`livecommerce.orders.ORDER_TRANSITIONS`): ``paid -> refund_requested
-> refunded`` (everything is back) or ``-> paid`` (rejected, or a partial refund settled;
it may ask again). At most one refund per order is open at a time: a new request is accepted
only when every earlier one is settled or its rejection applied (the Redis record's
``done`` flag, set by the refunds worker), so the SQL order always moves in the same order
as the log.

Rules (module constants):

* **Window**: a refund may be asked within :data:`REFUND_WINDOW_MS` (15 days) of payment.
* **Amounts**: refunding ``k`` units in total returns ``amount * k // qty`` in total (the
  paid amount, after the coupon's discount, spread over the units, rounding down, with
  the last unit carrying the remainder). A refund of ``qty`` units after ``qty_before``
  returns ``amount*(qty_before+qty)//order_qty - amount*qty_before//order_qty``; refunding
  every unit returns exactly what is left. Orders paid 0 (a full discount) are refunded
  whole only.
* **Credit**: the payment goes back to the buyer's wallet as store credit,
  :data:`COINS_PER_CENT` coin per cent (a ``wallet.topup`` with ``by: refund:<id>``, so the
  wallet worker writes the ledger row and the Redis balance moves in the same script).
* **Points already spent**: the clawback is a reversing ledger entry (reason
  ``order.refunded`` for the buyer, ``order.unsold`` for the host) written in full even when
  the balance no longer covers it: balances may go negative, levels are recomputed from the
  new balance, and a negative viewer balance redeems nothing until it is earned back. Coupons
  bought with points before are not taken back. Clawed points are the award recomputed on
  the net amount: ``(amount - before)//100 - (amount - after)//100``, so the clawbacks of
  every partial refund add up to exactly the award of a wholly refunded order.
* **Coupons** used on a refunded order stay used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .errors import BadFrame, Conflict, NotFound
from .fulfilment import (
    AFTER_SALE_KINDS,
    HOME_STATE,
    PENDING_STATE,
    AfterSaleKind,
    Progress,
    decide_after_sale,
    default_kind,
)
from .points import CENTS_PER_POINT, Award

REQUESTED = "refund.requested"
APPROVED = "refund.approved"
REJECTED = "refund.rejected"
ORDER_REFUNDED = "order.refunded"
EVENT_TYPES = frozenset({REQUESTED, APPROVED, REJECTED, ORDER_REFUNDED})
TOPIC = "orders"

RefundState = Literal["requested", "approved", "rejected", "refunded"]
RefundStep = Literal["approve", "reject", "settle"]

REFUND_TRANSITIONS: dict[tuple[RefundState, RefundStep], RefundState] = {
    ("requested", "approve"): "approved",
    ("requested", "reject"): "rejected",
    ("approved", "settle"): "refunded",
}

REASONS: tuple[str, ...] = (
    "damaged",
    "not_as_described",
    "wrong_item",
    "missing_parts",
    "not_delivered",
    "changed_mind",
    "other",
)
MAX_NOTE = 500
REFUND_WINDOW_MS = 15 * 86_400_000
COINS_PER_CENT = 1


def refund_step(state: RefundState, step: RefundStep) -> RefundState | None:
    """The state after ``step``; None when the step already happened (``approve`` on an
    approved refund, ``settle`` on a refunded one: a no-op).

    Raises:
        Conflict: (``illegal_transition``) e.g. approving a rejected refund.
    """
    nxt = REFUND_TRANSITIONS.get((state, step))
    if nxt is not None:
        return nxt
    if (state, step) in (("approved", "approve"), ("rejected", "reject"), ("refunded", "settle"), ("refunded", "approve")):
        return None
    raise Conflict(f"a {state} refund cannot {step}", code="illegal_transition")


def refund_id(order_id: str, n: int) -> str:
    return f"{order_id}.r{n}"


def order_of(rid: str) -> tuple[str, int]:
    """``(order_id, n)`` of a refund id.

    Raises:
        BadFrame: (``invalid``) not a refund id.
    """
    oid, sep, tail = rid.rpartition(".")
    if not sep or not oid or not tail.startswith("r") or not tail[1:].isdigit():
        raise BadFrame(f"{rid!r} is not a refund id (<order_id>.r<n>)", code="invalid")
    return oid, int(tail[1:])


def event_id(rid: str, what: Literal["requested", "approved", "rejected", "refunded"]) -> str:
    return f"{rid}:{what}"


def credit_key(rid: str) -> str:
    """The wallet top-up idempotency key of a refund's credit (1..48 of ``[A-Za-z0-9-_.]``)."""
    return "rf-" + hashlib.sha1(rid.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class RefundAsk:
    """A validated request body: ``qty`` None means every unit not yet refunded; ``kind``
    None means what the order's progress allows (:func:`~livecommerce.fulfilment.default_kind`)."""

    qty: int | None
    reason: str
    note: str
    kind: AfterSaleKind | None = None


def parse_request(body: Any) -> RefundAsk:
    """Validate ``POST /api/v1/orders/{id}/refunds {qty?, reason, note?, kind?}``.

    Raises:
        BadFrame: (``invalid``) naming the bad field.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object {qty?, reason, note?}", code="invalid")
    qty = body.get("qty")
    if qty is not None and (isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= 1000):
        raise BadFrame("'qty' must be an integer in 1..1000 (omit it to refund every unit)", code="invalid")
    reason = body.get("reason")
    if reason not in REASONS:
        raise BadFrame(f"'reason' must be one of {', '.join(REASONS)}", code="invalid")
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise BadFrame(f"'note' must be text of at most {MAX_NOTE} characters", code="invalid")
    kind = body.get("kind")
    if kind is not None and kind not in AFTER_SALE_KINDS:
        raise BadFrame("'kind' must be refund (before shipping) or return (return-and-refund, once delivered)", code="invalid")
    return RefundAsk(qty, str(reason), note.strip(), kind)


def cumulative_amount(order_amount: int, order_qty: int, units: int) -> int:
    """What refunding ``units`` units of an order returns in total (see the module rules)."""
    return order_amount * units // order_qty


@dataclass(frozen=True, slots=True)
class Refund:
    """One refund request, with what the order looked like when it was asked.

    ``qty_before`` / ``amount_before`` are the units and cents already refunded (settled or
    approved) by earlier refunds of the order; ``amount`` is what this one returns.
    """

    id: str
    order_id: str
    n: int
    user_id: str
    room_id: str
    sale_id: str
    host: str
    qty: int
    amount: int
    reason: str
    note: str
    order_qty: int
    order_amount: int
    qty_before: int
    amount_before: int
    requested_ms: int
    kind: str = "refund"  # refund (before shipping) | return (return-and-refund, once delivered)

    @property
    def full(self) -> bool:
        """True when this refund returns the order's last units (the order ends refunded)."""
        return self.qty_before + self.qty == self.order_qty

    def event_data(self, *, with_note: bool = True) -> dict[str, Any]:
        d = {"refund_id": self.id, **asdict(self)}
        del d["id"]
        if not with_note:
            del d["note"]
        return d


def refund_from_event(d: Mapping[str, Any]) -> Refund:
    """The :class:`Refund` an event carries (``note`` is empty on the later steps)."""
    return Refund(
        id=str(d["refund_id"]),
        order_id=str(d["order_id"]),
        n=int(d["n"]),
        user_id=str(d["user_id"]),
        room_id=str(d["room_id"]),
        sale_id=str(d["sale_id"]),
        host=str(d.get("host") or ""),
        qty=int(d["qty"]),
        amount=int(d["amount"]),
        reason=str(d["reason"]),
        note=str(d.get("note") or ""),
        order_qty=int(d["order_qty"]),
        order_amount=int(d["order_amount"]),
        qty_before=int(d["qty_before"]),
        amount_before=int(d["amount_before"]),
        requested_ms=int(d["requested_ms"]),
        kind=str(d.get("kind") or "refund"),
    )


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What a request is judged against: the SQL order (immutable once paid) and the
    order's earlier refunds as the Redis record knows them."""

    order_id: str
    user_id: str
    room_id: str
    sale_id: str
    state: str
    qty: int
    amount: int
    paid_ms: int | None


@dataclass(frozen=True, slots=True)
class PriorRefund:
    """One earlier refund of the order in its Redis record: ``state`` and ``done`` (the
    refunds worker applied its last step)."""

    n: int
    qty: int
    amount: int
    state: RefundState
    done: bool


def plan_refund(
    order: OrderFacts,
    prior: list[PriorRefund],
    ask: RefundAsk,
    *,
    user: str,
    host: str,
    now_ms: int,
    progress: Progress | None = None,
) -> Refund:
    """The refund ``ask`` makes, judged in this order: ownership, the order was paid, what
    the order's ``progress`` allows (a refund before shipping, a return once delivered:
    :func:`~livecommerce.fulfilment.decide_after_sale`), the window (refunds: 15 days from
    payment; a return is open until receipt is confirmed), nothing open, units left, a
    partial refund of an order paid 0.

    Raises:
        Conflict: ``not_paid``, ``already_shipped``, ``not_delivered``,
            ``receipt_confirmed``, ``refund_window_closed``, ``refund_pending`` (an earlier
            refund is not settled yet), ``nothing_to_refund``, ``too_many_units``,
            ``whole_order_only``.
        NotFound: ``user`` does not own the order (others' orders do not exist for them).
    """
    if order.user_id != user:
        raise NotFound(f"no order {order.order_id}")
    if order.state in ("reserved", "cancelled") or order.paid_ms is None:
        raise Conflict("only paid orders can be refunded", code="not_paid")
    progress = progress if progress is not None else Progress()
    kind = ask.kind or default_kind(progress)
    decide_after_sale(kind, progress)
    if kind == "refund" and now_ms - order.paid_ms > REFUND_WINDOW_MS:
        raise Conflict(f"refunds are accepted within {REFUND_WINDOW_MS // 86_400_000} days of payment", code="refund_window_closed")
    if any(not p.done for p in prior):
        raise Conflict("a refund of this order is still being handled", code="refund_pending")
    taken = [p for p in prior if p.state in ("approved", "refunded")]
    qty_before = sum(p.qty for p in taken)
    amount_before = cumulative_amount(order.amount, order.qty, qty_before)
    left = order.qty - qty_before
    if left <= 0:
        raise Conflict("every unit of this order is refunded already", code="nothing_to_refund")
    qty = left if ask.qty is None else ask.qty
    if qty > left:
        raise Conflict(f"only {left} unit(s) of this order can still be refunded", code="too_many_units")
    if order.amount == 0 and qty != left:
        raise Conflict("an order paid 0 is refunded whole only", code="whole_order_only")
    amount = cumulative_amount(order.amount, order.qty, qty_before + qty) - amount_before
    n = max((p.n for p in prior), default=0) + 1
    return Refund(
        id=refund_id(order.order_id, n),
        order_id=order.order_id,
        n=n,
        user_id=order.user_id,
        room_id=order.room_id,
        sale_id=order.sale_id,
        host=host,
        qty=qty,
        amount=amount,
        reason=ask.reason,
        note=ask.note,
        order_qty=order.qty,
        order_amount=order.amount,
        qty_before=qty_before,
        amount_before=amount_before,
        requested_ms=now_ms,
        kind=kind,
    )


def settlement(r: Refund) -> tuple[Literal["refunded", "paid", "delivered"], int, int]:
    """How the order moves when ``r`` settles: ``(to_state, refund_qty, refund_amount)``:
    ``refunded`` when everything is back, else the state the request came from (``paid``
    for a refund, ``delivered`` for a return)."""
    return ("refunded" if r.full else home_state(r)), r.qty, r.amount


def pending_state(r: Refund) -> Literal["refund_requested", "return_requested"]:
    """The order state while ``r`` is open."""
    return PENDING_STATE["return" if r.kind == "return" else "refund"]


def home_state(r: Refund) -> Literal["paid", "delivered"]:
    """The order state ``r`` returns the order to when rejected or partial."""
    return HOME_STATE["return" if r.kind == "return" else "refund"]


def clawback_points(order_amount: int, amount_before: int, amount: int) -> int:
    """Points to take back (>= 0) when ``amount`` more cents of an order paid
    ``order_amount`` are refunded after ``amount_before`` (the award recomputed on the net)."""
    net_before = order_amount - amount_before
    net_after = net_before - amount
    return net_before // CENTS_PER_POINT - max(0, net_after) // CENTS_PER_POINT


def clawback_awards(d: Mapping[str, Any]) -> list[Award]:
    """The reversing points rows of an ``order.refunded`` event: the buyer (viewer,
    ``order.refunded``) and the host credited by ``order.paid`` (host, ``order.unsold``),
    both negative. Empty when the refund takes back less than a point."""
    pts = clawback_points(int(d["order_amount"]), int(d["amount_before"]), int(d["amount"]))
    if pts <= 0:
        return []
    host = str(d.get("host") or f"room:{d['room_id']}")
    return [Award(str(d["user_id"]), "viewer", -pts, "order.refunded"), Award(host, "host", -pts, "order.unsold")]


def credited_coins(amount_cents: int) -> int:
    return amount_cents * COINS_PER_CENT


def history_entry(kind: str, ts_ms: int, **fields: Any) -> dict[str, Any]:
    """One row of an order's merged history (``GET /api/v1/orders/{id}/history``)."""
    return {"ts": ts_ms, "kind": kind, **{k: v for k, v in fields.items() if v is not None}}
