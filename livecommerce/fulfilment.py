"""Fulfilment (issue 19, part 5): shipping addresses, shipments, receipt and the after-sales
rule that depends on how far an order has travelled. No I/O.

An order's way from payment to the buyer (the order states are
:data:`livecommerce.orders.ORDER_TRANSITIONS`)::

    paid --first shipment--> shipped --every unit shipped and delivered--> delivered
                                                                              |
        completed <--buyer confirms, or LC_AUTO_CONFIRM_S after delivery------+

* A **shipment** carries some units of the order's lines (``{sku: qty}``) with a carrier and
  a tracking number; an order may have several (a partial shipment, then the rest). The
  first one moves the order to ``shipped``; the order is ``delivered`` once every unit
  still owed is shipped and every outbound shipment delivered.
* **After-sales depend on the state** (:func:`decide_after_sale`): a *refund* (money back,
  nothing to send back) only before anything shipped; a *return* (return-and-refund: the
  buyer sends the goods back in a return shipment and the refund is approved once it is
  received) only once the order is delivered, until receipt is confirmed. An exchange is a
  return plus a new order: no state of its own.

Shipment life-cycle (:data:`SHIPMENT_TRANSITIONS`): ``shipped --deliver--> delivered``.
Shipment ids are ``<order_id>.s<n>`` (n = 1, 2 ... per order), so the order (and its
Redis slot) is known from the id, and every log event id is deterministic:

=========================  ======================================  =========================
event                      id                                      data
=========================  ======================================  =========================
``order.shipped``          ``<shipment>:shipped``                  the shipment
                                                                   (:meth:`Shipment.data`),
                                                                   ``order_state``
``order.delivered``        ``<shipment>:delivered``                the shipment, delivered
``order.completed``        ``<order>:completed``                   ``order_id, user_id,
                                                                   room_id, by, completed_ms``
=========================  ======================================  =========================

``order_state`` on a shipment event is the state the order reaches with it (``shipped``,
``delivered``, or unchanged for a return shipment), decided when the event is made, so the
worker applies what the gate decided.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import BadFrame, Conflict

SHIPPED = "order.shipped"
DELIVERED = "order.delivered"
COMPLETED = "order.completed"
EVENT_TYPES = frozenset({SHIPPED, DELIVERED, COMPLETED})

ShipmentKind = Literal["outbound", "return"]
ShipmentState = Literal["shipped", "delivered"]
ShipmentStep = Literal["deliver"]
SHIPMENT_TRANSITIONS: dict[tuple[ShipmentState, ShipmentStep], ShipmentState] = {("shipped", "deliver"): "delivered"}

AfterSaleKind = Literal["refund", "return"]
AFTER_SALE_KINDS: tuple[AfterSaleKind, ...] = ("refund", "return")
#: the order state an open request of each kind puts the order in, and the one it comes back to
PENDING_STATE: dict[AfterSaleKind, Literal["refund_requested", "return_requested"]] = {
    "refund": "refund_requested", "return": "return_requested"}
HOME_STATE: dict[AfterSaleKind, Literal["paid", "delivered"]] = {"refund": "paid", "return": "delivered"}

MAX_ADDRESSES = 20
MAX_SHIPMENTS = 50
DEFAULT_AUTO_CONFIRM_S = 7 * 86400

_CARRIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.&-]{0,39}$")
_TRACKING = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{3,39}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{4,23}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")

#: address fields: (name, max length, required)
ADDRESS_FIELDS: tuple[tuple[str, int, bool], ...] = (
    ("name", 100, True),
    ("phone", 24, True),
    ("line1", 200, True),
    ("line2", 200, False),
    ("city", 100, True),
    ("region", 100, False),
    ("postal_code", 16, False),
    ("country", 2, True),
)


# ---------------------------------------------------------------- addresses


def parse_address(body: Any, *, partial: bool = False) -> dict[str, Any]:
    """Validate an address body (``POST``: every required field; ``PATCH``, ``partial``: the
    fields given). Returns the cleaned fields (text stripped, ``country`` upper-case, and
    ``is_default`` when given).

    Raises:
        BadFrame: (``invalid``) naming the field and what it must be.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object {name, phone, line1, line2?, city, region?, postal_code?, country, "
                       "is_default?}", code="invalid")
    known = {n for n, _, _ in ADDRESS_FIELDS} | {"is_default"}
    extra = sorted(set(body) - known)
    if extra:
        raise BadFrame(f"unknown field {extra[0]!r}: an address has {', '.join(sorted(known))}", code="invalid")
    out: dict[str, Any] = {}
    for name, size, required in ADDRESS_FIELDS:
        if name not in body or body[name] is None:
            if required and not partial:
                raise BadFrame(f"{name}: required", code="invalid")
            if name in body and required:
                raise BadFrame(f"{name}: required, cannot be null", code="invalid")
            if name in body:
                out[name] = None
            continue
        v = body[name]
        if not isinstance(v, str):
            raise BadFrame(f"{name}: must be text, got {type(v).__name__}", code="invalid")
        v = " ".join(v.split())
        if required and not v:
            raise BadFrame(f"{name}: must not be empty", code="invalid")
        if len(v) > size:
            raise BadFrame(f"{name}: at most {size} characters, got {len(v)}", code="invalid")
        if name == "phone" and not _PHONE.match(v):
            raise BadFrame(f"phone: digits with an optional leading + (5 to 24 characters), got {v!r}", code="invalid")
        if name == "country":
            v = v.upper()
            if not _COUNTRY.match(v):
                raise BadFrame(f"country: a two-letter ISO 3166 code (CN, US ...), got {v!r}", code="invalid")
        out[name] = v or None
    if "is_default" in body:
        if not isinstance(body["is_default"], bool):
            raise BadFrame("is_default: must be true or false", code="invalid")
        out["is_default"] = body["is_default"]
    if partial and not out:
        raise BadFrame("nothing to change: give at least one field", code="invalid")
    return out


def ship_to(address: Mapping[str, Any]) -> dict[str, Any]:
    """The snapshot of an address a shipment carries (later edits do not change a parcel)."""
    return {n: address.get(n) for n, _, _ in ADDRESS_FIELDS}


# ---------------------------------------------------------------- shipments


def shipment_id(order_id: str, n: int) -> str:
    return f"{order_id}.s{n}"


def order_of_shipment(sid: str) -> tuple[str, int]:
    """``(order_id, n)`` of a shipment id.

    Raises:
        BadFrame: (``invalid``) not a shipment id.
    """
    oid, sep, tail = sid.rpartition(".")
    if not sep or not oid or not tail.startswith("s") or not tail[1:].isdigit() or int(tail[1:]) < 1:
        raise BadFrame(f"{sid!r} is not a shipment id (<order_id>.s<n>)", code="invalid")
    return oid, int(tail[1:])


@dataclass(frozen=True, slots=True)
class Shipment:
    """One parcel. ``lines`` maps SKU to units; a return shipment names its ``refund_id``."""

    id: str
    order_id: str
    n: int
    user_id: str
    room_id: str
    kind: ShipmentKind
    carrier: str
    tracking_number: str
    lines: dict[str, int]
    state: ShipmentState
    created_by: str
    created_ms: int
    ship_to: dict[str, Any] | None = None
    refund_id: str | None = None
    delivered_ms: int | None = None
    delivered_by: str | None = None

    def data(self) -> dict[str, Any]:
        """The event / record form (JSON-able)."""
        return {"shipment_id": self.id, "order_id": self.order_id, "n": self.n, "user_id": self.user_id,
                "room_id": self.room_id, "kind": self.kind, "carrier": self.carrier,
                "tracking_number": self.tracking_number, "lines": dict(self.lines), "state": self.state,
                "created_by": self.created_by, "created_ms": self.created_ms, "ship_to": self.ship_to,
                "refund_id": self.refund_id, "delivered_ms": self.delivered_ms, "delivered_by": self.delivered_by}


def shipment_from(d: Mapping[str, Any]) -> Shipment:
    """The :class:`Shipment` of an event or record.

    Raises:
        KeyError, ValueError, TypeError: not a shipment.
    """
    kind = str(d.get("kind") or "outbound")
    state = str(d.get("state") or "shipped")
    if kind not in ("outbound", "return") or state not in ("shipped", "delivered"):
        raise ValueError(f"not a shipment kind/state: {kind}/{state}")
    return Shipment(
        id=str(d["shipment_id"]), order_id=str(d["order_id"]), n=int(d["n"]), user_id=str(d["user_id"]),
        room_id=str(d["room_id"]), kind=kind,  # type: ignore[arg-type]
        carrier=str(d["carrier"]), tracking_number=str(d["tracking_number"]),
        lines={str(k): int(v) for k, v in dict(d["lines"]).items()}, state=state,  # type: ignore[arg-type]
        created_by=str(d.get("created_by") or ""), created_ms=int(d["created_ms"]),
        ship_to=dict(d["ship_to"]) if d.get("ship_to") else None, refund_id=d.get("refund_id") or None,
        delivered_ms=int(d["delivered_ms"]) if d.get("delivered_ms") is not None else None,
        delivered_by=d.get("delivered_by") or None)


@dataclass(frozen=True, slots=True)
class ShipAsk:
    """A validated ``POST /orders/{id}/shipments`` body (``lines`` None: every unit owed)."""

    carrier: str
    tracking_number: str
    lines: dict[str, int] | None
    address_id: str | None = None


def parse_ship(body: Any, *, lines_allowed: bool = True) -> ShipAsk:
    """Validate ``{carrier, tracking_number, lines?: [{sku, qty}], address_id?}``.

    Raises:
        BadFrame: (``invalid``) naming the field.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object {carrier, tracking_number, lines?}", code="invalid")
    carrier, tracking = body.get("carrier"), body.get("tracking_number")
    if not isinstance(carrier, str) or not _CARRIER.match(carrier.strip()):
        raise BadFrame("carrier: 1..40 letters, digits, spaces and . _ & - (SF Express, ZTO, UPS ...)", code="invalid")
    if not isinstance(tracking, str) or not _TRACKING.match(tracking.strip()):
        raise BadFrame("tracking_number: 4..40 letters, digits and -", code="invalid")
    lines: dict[str, int] | None = None
    raw = body.get("lines")
    if raw is not None:
        if not lines_allowed:
            raise BadFrame("lines: a return sends back what the refund names; give no lines", code="invalid")
        if not isinstance(raw, list) or not raw or len(raw) > 100:
            raise BadFrame("lines: a non-empty list of {sku, qty} (omit it to ship every unit owed)", code="invalid")
        lines = {}
        for i, ln in enumerate(raw):
            if not isinstance(ln, Mapping):
                raise BadFrame(f"lines[{i}]: must be an object {{sku, qty}}", code="invalid")
            sku, qty = ln.get("sku"), ln.get("qty")
            if not isinstance(sku, str) or not 1 <= len(sku) <= 128:
                raise BadFrame(f"lines[{i}].sku: must be a SKU id", code="invalid")
            if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= 100_000:
                raise BadFrame(f"lines[{i}].qty: must be an integer in 1..100000", code="invalid")
            if sku in lines:
                raise BadFrame(f"lines[{i}].sku: {sku!r} is listed twice", code="invalid")
            lines[sku] = qty
    address = body.get("address_id")
    if address is not None and (not isinstance(address, str) or not 1 <= len(address) <= 64):
        raise BadFrame("address_id: must be one of the buyer's address ids", code="invalid")
    return ShipAsk(carrier.strip(), tracking.strip().upper(), lines, address)


def owed(order_lines: Mapping[str, int], refunded_units: int, shipments: Sequence[Shipment]) -> dict[str, int]:
    """Units of each line still to ship: the order's lines, less what outbound shipments
    carried, less units refunded before shipping (taken from the last lines first)."""
    left = {sku: q - sum(s.lines.get(sku, 0) for s in shipments if s.kind == "outbound") for sku, q in order_lines.items()}
    cut = refunded_units
    for sku in reversed(list(left)):
        take = min(cut, max(0, left[sku]))
        left[sku] -= take
        cut -= take
    return {sku: q for sku, q in left.items() if q > 0}


@dataclass(frozen=True, slots=True)
class OrderView:
    """What fulfilment needs of an order: its state (SQL), lines and refunded units."""

    order_id: str
    user_id: str
    room_id: str
    state: str
    lines: dict[str, int]
    refunded_qty: int = 0


def plan_shipment(order: OrderView, shipments: Sequence[Shipment], ask: ShipAsk, *, by: str, now_ms: int,
                  ship_to_: dict[str, Any] | None) -> Shipment:
    """The next outbound shipment of ``order``.

    Raises:
        Conflict: ``not_paid`` (reserved or cancelled), ``refund_open`` (a refund is being
            handled: decide it first), ``not_shippable`` (refunded, delivered, completed,
            a return open), ``nothing_to_ship`` (every unit owed has shipped),
            ``too_many_units``, ``too_many_shipments``.
        BadFrame: (``invalid``) a line names a SKU the order does not have.
    """
    if order.state in ("reserved", "cancelled"):
        raise Conflict(f"order {order.order_id} is {order.state}: only paid orders ship", code="not_paid")
    if order.state == "refund_requested":
        raise Conflict(f"order {order.order_id} has a refund being handled: approve or reject it before shipping",
                       code="refund_open")
    if order.state not in ("paid", "shipped"):
        raise Conflict(f"order {order.order_id} is {order.state}: nothing more ships", code="not_shippable")
    if len(shipments) >= MAX_SHIPMENTS:
        raise Conflict(f"an order has at most {MAX_SHIPMENTS} shipments", code="too_many_shipments")
    due = owed(order.lines, order.refunded_qty, shipments)
    if not due:
        raise Conflict(f"every unit of order {order.order_id} has shipped", code="nothing_to_ship")
    lines = dict(due) if ask.lines is None else ask.lines
    for sku, qty in lines.items():
        if sku not in order.lines:
            raise BadFrame(f"lines: order {order.order_id} has no SKU {sku!r} (it has {', '.join(order.lines)})", code="invalid")
        if qty > due.get(sku, 0):
            raise Conflict(f"only {due.get(sku, 0)} unit(s) of {sku} are still to ship", code="too_many_units")
    n = max((s.n for s in shipments), default=0) + 1
    return Shipment(id=shipment_id(order.order_id, n), order_id=order.order_id, n=n, user_id=order.user_id,
                    room_id=order.room_id, kind="outbound", carrier=ask.carrier, tracking_number=ask.tracking_number,
                    lines=lines, state="shipped", created_by=by, created_ms=now_ms, ship_to=ship_to_)


def plan_return(order: OrderView, shipments: Sequence[Shipment], ask: ShipAsk, *, refund_id: str, refund_kind: str,
                refund_state: str, units: int, by: str, now_ms: int) -> Shipment:
    """The buyer's return shipment for an open return (``refund_kind == "return"``).

    Raises:
        Conflict: ``not_a_return`` (a refund sends nothing back), ``return_closed`` (the
            request was rejected or settled), ``return_shipped`` (this return has its parcel).
    """
    if refund_kind != "return":
        raise Conflict(f"{refund_id} is a refund, not a return: nothing is sent back", code="not_a_return")
    if refund_state not in ("requested", "approved"):
        raise Conflict(f"return {refund_id} is {refund_state}", code="return_closed")
    if any(s.refund_id == refund_id for s in shipments):
        raise Conflict(f"return {refund_id} has its return shipment already", code="return_shipped")
    if len(shipments) >= MAX_SHIPMENTS:
        raise Conflict(f"an order has at most {MAX_SHIPMENTS} shipments", code="too_many_shipments")
    first = next(iter(order.lines), "default")
    n = max((s.n for s in shipments), default=0) + 1
    return Shipment(id=shipment_id(order.order_id, n), order_id=order.order_id, n=n, user_id=order.user_id,
                    room_id=order.room_id, kind="return", carrier=ask.carrier, tracking_number=ask.tracking_number,
                    lines={first: units} if len(order.lines) == 1 else {"units": units}, state="shipped", created_by=by,
                    created_ms=now_ms, refund_id=refund_id)


def shipment_step(state: ShipmentState, step: ShipmentStep) -> ShipmentState | None:
    """The state after ``step``; None when it already happened (a repeated delivery).

    Raises:
        Conflict: (``illegal_transition``) not in :data:`SHIPMENT_TRANSITIONS`.
    """
    nxt = SHIPMENT_TRANSITIONS.get((state, step))
    if nxt is not None:
        return nxt
    if (state, step) == ("delivered", "deliver"):
        return None
    raise Conflict(f"a {state} shipment cannot {step}", code="illegal_transition")


def order_state_after(order: OrderView, shipments: Sequence[Shipment]) -> str:
    """The order state ``shipments`` (including the one just made or delivered) put an order
    in that was ``paid`` or ``shipped``: ``delivered`` when nothing is owed and every
    outbound shipment is delivered, ``shipped`` when one exists, else the order's state.
    Other states (a return open ...) are not moved by shipments."""
    if order.state not in ("paid", "shipped"):
        return order.state
    out = [s for s in shipments if s.kind == "outbound"]
    if not out:
        return order.state
    if not owed(order.lines, order.refunded_qty, out) and all(s.state == "delivered" for s in out):
        return "delivered"
    return "shipped"


# ---------------------------------------------------------------- after-sales and receipt


@dataclass(frozen=True, slots=True)
class Progress:
    """How far an order has travelled, as the order's fulfilment record knows it."""

    shipped: bool = False  # an outbound shipment exists
    delivered: bool = False  # ... and the order is delivered (nothing owed, all delivered)
    completed: bool = False  # receipt confirmed (by the buyer or automatically)


def progress_of(st: str) -> Progress:
    """The :class:`Progress` of a fulfilment record's ``st`` ('' | shipped | delivered | completed)."""
    return Progress(shipped=st in ("shipped", "delivered", "completed"), delivered=st in ("delivered", "completed"),
                    completed=st == "completed")


def decide_after_sale(kind: AfterSaleKind, progress: Progress) -> None:
    """Is an after-sale request of ``kind`` open to an order that travelled ``progress``?
    The rule: refund (money back, nothing sent back) only before anything shipped; return
    (return-and-refund) only once delivered, until receipt is confirmed.

    Raises:
        Conflict: ``already_shipped`` (a refund after shipping), ``not_delivered`` (a
            return before delivery), ``receipt_confirmed`` (after completion: a ticket).
    """
    if progress.completed:
        raise Conflict("receipt of this order is confirmed: after-sales are closed; open a ticket (POST /api/v1/tickets)",
                       code="receipt_confirmed")
    if kind == "refund" and progress.shipped:
        raise Conflict("this order has shipped: a refund is only possible before shipping; once it is delivered, ask for a "
                       "return (kind: return)", code="already_shipped")
    if kind == "return" and not progress.delivered:
        if progress.shipped:
            raise Conflict("this order is on its way: a return can be asked once it is delivered", code="not_delivered")
        raise Conflict("this order has not shipped: ask for a refund (kind: refund), nothing needs sending back",
                       code="not_delivered")


def default_kind(progress: Progress) -> AfterSaleKind:
    """The kind a request without one means: a return once delivered, else a refund."""
    return "return" if progress.delivered else "refund"


def may_approve(kind: str, return_received: bool) -> None:
    """A return is approved (its refund paid) only once its parcel is received.

    Raises:
        Conflict: (``return_not_received``).
    """
    if kind == "return" and not return_received:
        raise Conflict("the goods of this return have not been received: mark its return shipment delivered first "
                       "(POST /api/v1/shipments/{id}/delivered)", code="return_not_received")


def auto_confirm_due(delivered_ms: int, now_ms: int, after_s: int) -> bool:
    """True when an order delivered at ``delivered_ms`` is confirmed automatically at ``now_ms``."""
    return now_ms >= delivered_ms + after_s * 1000


def shipped_event_id(sid: str) -> str:
    return f"{sid}:shipped"


def delivered_event_id(sid: str) -> str:
    return f"{sid}:delivered"


def completed_event_id(order_id: str) -> str:
    return f"{order_id}:completed"
