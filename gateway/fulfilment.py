"""Fulfilment at the edge: shipping addresses, shipments, deliveries, receipt (the rules are
:mod:`livecommerce.fulfilment`; docs/commerce.md).

* ``GET|POST /api/v1/me/addresses``, ``PATCH|DELETE /api/v1/me/addresses/{address}``: the
  caller's shipping addresses (validated; one is the default; part of the data export and
  erasure).
* ``POST /api/v1/orders/{order}/shipments {carrier, tracking_number, lines?, address_id?}``
  (the host of the order's room, or ops): a parcel of some or all of the units still owed,
  to the buyer's default address (or the one named). The fulfilment record in Redis decides
  (``livecommerce/fulfilment_redis.py``: one step with the refund gate), then
  ``order.shipped`` is appended to the orders log (the orders worker writes SQL once) and
  pushed to the buyer's connections. The same carrier and tracking number again answers the
  parcel (200, ``duplicate: true``) and re-appends its event (a lost append is repaired).
* ``POST /api/v1/shipments/{shipment}/delivered``: ops, or the carrier's callback signed
  like the payment provider's (``X-LC-Signature: t=..,v1=HMAC-SHA256(LC_CARRIER_WEBHOOK_SECRET,
  "<t>." + body)``); ``order.delivered`` once every parcel arrived.
* ``POST /api/v1/orders/{order}/confirm`` (the buyer or ops): receipt confirmed
  (``order.completed``); the orders worker does it ``LC_AUTO_CONFIRM_S`` after delivery.
* ``POST /api/v1/refunds/{refund}/return {carrier, tracking_number}`` (the buyer): the return
  parcel of a return-and-refund; the return is approved once it is marked delivered.
* ``GET /api/v1/fulfilment/orders?room=&state=`` (the room's host, ops): orders to ship
  (paid, or partly shipped) with the buyer's ship-to and what is still owed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from livecommerce import fulfilment_sql
from livecommerce.auth import Identity
from livecommerce.cart import is_cart_order
from livecommerce.errors import (
    BadFrame,
    Conflict,
    Forbidden,
    LiveCommerceError,
    NotFound,
    Unauthorized,
)
from livecommerce.fulfilment import (
    DELIVERED,
    SHIPPED,
    OrderView,
    Shipment,
    delivered_event_id,
    order_of_shipment,
    owed,
    parse_address,
    parse_ship,
    plan_return,
    plan_shipment,
    ship_to,
    shipped_event_id,
)
from livecommerce.fulfilment_redis import FulfilmentRedis, ShipRecord
from livecommerce.log import Log
from livecommerce.order_lines_sql import lines_of
from livecommerce.orders import Order, OrderState
from livecommerce.payments import SIGNATURE_HEADER, verify
from livecommerce.protocol.events import envelope
from livecommerce.refunds import order_of
from livecommerce.refunds_redis import RefundsRedis
from livecommerce.store_sql import SqlStore

from .core import Gateway
from .idempotency import header_key, idempotent
from .validation import read_object

log = logging.getLogger("livecommerce.gateway.fulfilment")
TOPIC = "orders"


class Fulfilment:
    """Addresses, shipments, deliveries and receipt."""

    def __init__(self, gw: Gateway, records: FulfilmentRedis, refunds: RefundsRedis, store: SqlStore, log: Log) -> None:
        self.gw = gw
        self.records = records
        self.refunds = refunds
        self.store = store
        self.log = log
        self._secret = gw.s.carrier_webhook_secret  # never logged

    # ---- reads other capabilities use
    async def lines_of(self, order: Order) -> dict[str, int]:
        """The order's lines ``{sku: units}``: a flash-sale order is one line, its sale's
        product; a cart order its lines by SKU (gifts included), from SQL."""
        if is_cart_order(order.id):
            out: dict[str, int] = {}
            for ln in (await lines_of(self.store, [order.id])).get(order.id, []):
                out[ln.sku] = out.get(ln.sku, 0) + ln.qty
            return out or {order.sale_id: order.qty}
        rec = await self.store.get_sale(order.sale_id)
        return {rec.sale.product_id if rec is not None else order.sale_id: order.qty}

    async def view_of(self, order: Order) -> OrderView:
        return OrderView(order.id, order.user_id, order.room_id, order.state, await self.lines_of(order), order.refunded_qty)

    async def shipments_of(self, order_id: str) -> list[dict[str, Any]]:
        """The order's parcels: the fulfilment record's (current), else SQL's (the record
        expired), oldest first."""
        rec = await self.records.record(order_id)
        if rec.shipments:
            return [s.data() for s in rec.shipments]
        return (await fulfilment_sql.order_shipments(self.store, [order_id]))[order_id]

    async def progress(self, order_id: str) -> dict[str, Any]:
        rec = await self.records.record(order_id)
        return {"progress": rec.st or "unshipped", "owed_units": rec.owe if rec.v else None,
                "completed_ms": rec.completed_ms, "completed_by": rec.completed_by}

    # ---- shipments
    async def _order(self, order_id: str) -> Order:
        o = await self.store.get_order(order_id)
        if o is None:
            raise NotFound(f"no order {order_id} (a just-paid order reaches SQL within a second: retry)")
        return o

    async def ship(self, ident: Identity, order_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """A parcel of the order; ``(shipment, duplicate)``.

        Raises:
            NotFound: no such order. Forbidden: not the room's host nor ops.
            Conflict: see :func:`livecommerce.fulfilment.plan_shipment`, ``no_address``,
                ``shipment_changed``, ``refund_open``, ``receipt_confirmed``.
            BadFrame: a bad body.
        """
        ask = parse_ship(body)
        order = await self._order(order_id)
        ident.require_host(order.room_id)
        rec = await self.records.record(order_id)
        for s in rec.shipments:
            if s.kind == "outbound" and (s.carrier, s.tracking_number) == (ask.carrier, ask.tracking_number):
                await self._append_shipped(s, rec.st)
                return s.data(), True
        if ask.address_id is not None:
            addr = await fulfilment_sql.get_address(self.store, order.user_id, ask.address_id)
            if addr is None:
                raise NotFound(f"the buyer has no address {ask.address_id}")
        else:
            addr = await fulfilment_sql.default_address(self.store, order.user_id)
            if addr is None:
                raise Conflict("the buyer has no shipping address yet: they add one under Me > Addresses "
                               "(POST /api/v1/me/addresses)", code="no_address")
        view = await self.view_of(order)
        now = self.gw.now_ms()
        s = plan_shipment(view, rec.shipments, ask, by=ident.user, now_ms=now, ship_to_=ship_to(addr))
        left = sum(owed(view.lines, view.refunded_qty, [*rec.shipments, s]).values())
        st = await self.records.ship(s, v=rec.v, owe=left)
        await self._append_shipped(s, st)
        log.info("fulfilment.shipped", extra={"order": order_id, "shipment": s.id, "by": ident.user})
        await self._push(s.user_id, SHIPPED, s.room_id, {"order_id": order_id, "shipment": self._public(s), "progress": st}, now)
        return s.data(), False

    async def _append_shipped(self, s: Shipment, st: str) -> None:
        await self.log.append(TOPIC, s.order_id, SHIPPED, {**s.data(), "order_state": "shipped" if s.kind == "outbound" else None},
                              event_id=shipped_event_id(s.id), ts=s.created_ms)

    async def _push(self, user: str, t: str, room: str, d: dict[str, Any], now: int) -> None:
        """The buyer's connections hear it at once (lossy, as every push: the order's page
        reads the same from the order)."""
        try:
            await self.gw.notifier.to_user(user, envelope(t, room, d, ts=now))
        except LiveCommerceError as exc:
            log.warning("fulfilment.push_failed", extra={"user": user, "t": t, "err": exc.message})

    @staticmethod
    def _public(s: Shipment) -> dict[str, Any]:
        d = s.data()
        d.pop("created_by", None)
        return d

    async def deliver(self, sid: str, *, by: str) -> dict[str, Any]:
        """Mark a parcel delivered (once; a repeat re-appends its event).

        Raises:
            NotFound: no such shipment. BadFrame: not a shipment id.
        """
        now = self.gw.now_ms()
        changed, st, s = await self.records.deliver(sid, now_ms=now, by=by)
        order_state = ("delivered" if st in ("delivered", "completed") else "shipped") if s.kind == "outbound" else None
        await self.log.append(TOPIC, s.order_id, DELIVERED, {**s.data(), "order_state": order_state},
                              event_id=delivered_event_id(s.id), ts=int(s.delivered_ms or now))
        if changed:
            log.info("fulfilment.delivered", extra={"shipment": sid, "by": by, "progress": st})
            if s.kind == "outbound":
                await self._push(s.user_id, DELIVERED, s.room_id,
                                 {"order_id": s.order_id, "shipment": self._public(s), "progress": st}, now)
        return {"shipment": s.data(), "progress": st, "changed": changed}

    async def confirm(self, order_id: str, *, by: str, now_ms: int, user: str, room: str) -> bool:
        """Confirm receipt once and append ``order.completed`` (again on a repeat: the same id).

        Raises:
            Conflict: ``not_delivered``, ``return_open``.
        """
        return await self.records.confirm_and_log(self.log, order_id, user=user, room=room, by=by, now_ms=now_ms)

    async def ship_return(self, ident: Identity, rid: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The buyer's return parcel of an open return.

        Raises:
            NotFound: no such refund of the caller. Conflict: see :func:`plan_return`.
        """
        ask = parse_ship(body, lines_allowed=False)
        ref = await self.refunds.record(rid)
        if ref is None or (ref.get("u") != ident.user and not ident.is_ops):
            raise NotFound(f"no refund {rid}")
        oid, _ = order_of(rid)
        rec = await self.records.record(oid)
        for s in rec.shipments:
            if s.refund_id == rid and (s.carrier, s.tracking_number) == (ask.carrier, ask.tracking_number):
                await self._append_shipped(s, rec.st)
                return s.data(), True
        order = await self._order(oid)
        now = self.gw.now_ms()
        kind = str(ref.get("k") or ref.get("data", {}).get("kind") or "refund")
        s = plan_return(await self.view_of(order), rec.shipments, ask, refund_id=rid, refund_kind=kind,
                        refund_state=str(ref["s"]), units=int(ref["q"]), by=ident.user, now_ms=now)
        st = await self.records.ship(s, v=rec.v, owe=rec.owe)
        await self._append_shipped(s, st)
        log.info("fulfilment.return_shipped", extra={"refund": rid, "shipment": s.id})
        return s.data(), False

    def _carrier(self, request: web.Request, raw: bytes) -> str | None:
        """The carrier's name when the request carries a signature that verifies; None when
        it carries none.

        Raises:
            Unauthorized: a signature that does not verify (or no secret is configured).
        """
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            return None
        refusal = verify(self._secret, header, raw, now_s=int(time.time()), window_s=self.gw.s.payment_replay_window_s) \
            if self._secret else "bad_signature"
        if refusal is not None:
            log.info("fulfilment.callback_refused", extra={"reason": refusal})
            raise Unauthorized(f"carrier callback refused: {refusal.replace('_', ' ')}", code=refusal)
        return "carrier"

    # ---- handlers (gateway.routes)
    async def http_ship(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        oid = request.match_info["order"]
        body = await read_object(request, required=True)

        async def run() -> web.Response:
            s, dup = await self.ship(ident, oid, body)
            return web.json_response({"shipment": s, "duplicate": dup}, status=200 if dup else 201)

        return await idempotent(self.gw, request, ident, key=header_key(request), target=oid, body=body, run=run)

    async def http_delivered(self, request: web.Request) -> web.Response:
        raw = await request.read()
        sid = request.match_info["shipment"]
        by = self._carrier(request, raw)
        if by is None:
            ident = self.gw.identify_request(request)
            if not ident.is_ops:
                raise Forbidden("deliveries are marked by ops or by the carrier's signed callback")
            by = ident.user
        order_of_shipment(sid)
        return web.json_response(await self.deliver(sid, by=by))

    async def http_confirm(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        oid = request.match_info["order"]
        order = await self.store.get_order(oid)
        if order is None or not (ident.is_ops or order.user_id == ident.user):
            raise NotFound(f"no order {oid}")
        changed = await self.confirm(oid, by="buyer" if order.user_id == ident.user else ident.user, now_ms=self.gw.now_ms(),
                                     user=order.user_id, room=order.room_id)
        return web.json_response({"order_id": oid, "completed": True, "changed": changed})

    async def http_return(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        rid = request.match_info["refund"]
        body = await read_object(request, required=True)

        async def run() -> web.Response:
            s, dup = await self.ship_return(ident, rid, body)
            return web.json_response({"shipment": s, "duplicate": dup}, status=200 if dup else 201)

        return await idempotent(self.gw, request, ident, key=header_key(request), target=rid, body=body, run=run)

    async def http_to_ship(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = request.query.get("room")
        if room is None:
            if not ident.is_ops:
                raise Forbidden("a host lists the orders of a room of theirs (?room=); ops any")
        else:
            ident.require_host(room)
        state = request.query.get("state", "paid")
        if state not in ("paid", "shipped"):
            raise BadFrame("state: paid (units still to ship) or shipped (on the way)", code="invalid")
        # to ship: paid orders and shipped ones still owing units (a partial parcel went out)
        wanted: tuple[OrderState, ...] = ("paid", "shipped") if state == "paid" else ("shipped",)
        # one read per state: an order the orders worker moves from paid to shipped between the
        # two reads is in both; it is listed once (a page test showed its card twice)
        by_id = {o.id: o for st in wanted for o in await self.store.list_orders(room_id=room, state=st, limit=200)}
        orders = list(by_id.values())
        out = []
        for o in sorted(orders, key=lambda o: o.created_ms):
            rec: ShipRecord = await self.records.record(o.id)
            view = await self.view_of(o)
            left = owed(view.lines, view.refunded_qty, rec.shipments)
            if (state == "paid" and not left) or rec.st in ("delivered", "completed"):
                continue
            addr = await fulfilment_sql.default_address(self.store, o.user_id)
            out.append({"order_id": o.id, "user_id": o.user_id, "room_id": o.room_id, "state": o.state, "qty": o.qty,
                        "amount": o.amount, "created_ms": o.created_ms, "progress": rec.st or "unshipped",
                        "owed": left, "lines": view.lines,
                        "shipments": [self._public(s) for s in rec.shipments],
                        "ship_to": ship_to(addr) if addr is not None else None})
        return web.json_response({"orders": out})

    # ---- addresses
    async def http_addresses(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        return web.json_response({"addresses": await fulfilment_sql.list_addresses(self.store, ident.user)})

    async def http_address_add(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        body = await read_object(request, required=True)
        fields = parse_address(body)

        async def run() -> web.Response:
            addr = await fulfilment_sql.add_address(self.store, ident.user, fields, now_ms=self.gw.now_ms())
            return web.json_response(addr, status=201)

        return await idempotent(self.gw, request, ident, key=header_key(request), target="addresses", body=body, run=run)

    async def http_address_patch(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        fields = parse_address(await read_object(request, required=True), partial=True)
        return web.json_response(await fulfilment_sql.update_address(self.store, ident.user, request.match_info["address"], fields,
                                                                     now_ms=self.gw.now_ms()))

    async def http_address_delete(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        aid = request.match_info["address"]
        if not await fulfilment_sql.delete_address(self.store, ident.user, aid):
            raise NotFound(f"no address {aid}")
        return web.json_response({"deleted": aid})


# ------------------------------------------------------------------------------ OpenAPI

_ERR = {"$ref": "#/components/schemas/Error"}
_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_ADDR_ID = {"name": "address", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}}
_P_ORDER = {"name": "order", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:@|-]{1,200}$"}}
_P_SHIP = {"name": "shipment", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:@|-]{1,200}$"}}
_P_REFUND = {"name": "refund", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:@|-]{1,200}$"}}
_H_IDEM = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"},
           "description": "one answer per key and caller (a retry returns the first answer)"}
_ADDRESS_PROPS: dict[str, Any] = {
    "name": {"type": "string", "maxLength": 100}, "phone": {"type": "string", "maxLength": 24},
    "line1": {"type": "string", "maxLength": 200}, "line2": {"type": ["string", "null"], "maxLength": 200},
    "city": {"type": "string", "maxLength": 100}, "region": {"type": ["string", "null"], "maxLength": 100},
    "postal_code": {"type": ["string", "null"], "maxLength": 16}, "country": {"type": "string", "minLength": 2, "maxLength": 2},
    "is_default": {"type": "boolean"}}
_ADDRESS_IN: dict[str, Any] = {"type": "object", "properties": _ADDRESS_PROPS, "additionalProperties": False}
_ADDRESS = {"type": "object", "required": ["id", "name", "phone", "line1", "city", "country", "is_default"],
            "properties": {**_ADDRESS_PROPS, "id": _STR, "created_ms": _INT, "updated_ms": _INT}}
_SHIPMENT = {"type": "object", "required": ["shipment_id", "order_id", "kind", "carrier", "tracking_number", "lines", "state"],
             "properties": {"shipment_id": _STR, "order_id": _STR, "n": _INT, "user_id": _STR, "room_id": _STR,
                            "kind": {"enum": ["outbound", "return"]}, "carrier": _STR, "tracking_number": _STR,
                            "lines": {"type": "object", "additionalProperties": _INT}, "state": {"enum": ["shipped", "delivered"]},
                            "ship_to": {"type": ["object", "null"]}, "refund_id": {"type": ["string", "null"]},
                            "created_by": _STR, "created_ms": _INT, "delivered_ms": {"type": ["integer", "null"]},
                            "delivered_by": {"type": ["string", "null"]}}}
_SHIP_IN: dict[str, Any] = {"type": "object", "required": ["carrier", "tracking_number"], "additionalProperties": False, "properties": {
    "carrier": {"type": "string", "minLength": 1, "maxLength": 40}, "tracking_number": {"type": "string", "minLength": 4, "maxLength": 40},
    "lines": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "object", "required": ["sku", "qty"],
              "properties": {"sku": {"type": "string", "minLength": 1, "maxLength": 128},
                             "qty": {"type": "integer", "minimum": 1, "maximum": 100000}}}},
    "address_id": {"type": "string", "minLength": 1, "maxLength": 64}}}
_RETURN_IN = {"type": "object", "required": ["carrier", "tracking_number"], "additionalProperties": False, "properties": {
    "carrier": _SHIP_IN["properties"]["carrier"], "tracking_number": _SHIP_IN["properties"]["tracking_number"]}}
_SHIPPED = {"type": "object", "required": ["shipment", "duplicate"], "properties": {"shipment": _SHIPMENT, "duplicate": {"type": "boolean"}}}


def _op(summary: str, desc: str, *, ok: dict[str, Any], errors: dict[str, str], status: str = "200",
        params: list[Any] | None = None, body: dict[str, Any] | None = None, auth: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "description": desc, "tags": ["fulfilment"],
                           "security": [{"bearer": []}] if auth else [],
                           "responses": {status: {"description": "OK", "content": {"application/json": {"schema": ok}}},
                                         **{c: {"description": d, "content": {"application/json": {"schema": _ERR}}}
                                            for c, d in errors.items()}}}
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return out


_E = {"400": "bad input (`invalid` names the field)", "401": "no valid token", "403": "not allowed", "404": "not found"}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/me/addresses": {
        "get": _op("Your shipping addresses (the default first)", "Who: any signed-in user.",
                   ok={"type": "object", "properties": {"addresses": {"type": "array", "items": _ADDRESS}}},
                   errors={k: _E[k] for k in ("400", "401")}),
        "post": _op("Add a shipping address", "The first one, or one with `is_default: true`, is the default. 409 "
                    "`too_many_addresses` (20). Who: any signed-in user.", status="201", ok=_ADDRESS, params=[_H_IDEM],
                    body={**_ADDRESS_IN, "required": ["name", "phone", "line1", "city", "country"]},
                    errors={**{k: _E[k] for k in ("400", "401")}, "409": "too many addresses", "422": "idempotency key reused"}),
    },
    "/api/v1/me/addresses/{address}": {
        "patch": _op("Change an address (`is_default: true` makes it the default)",
                     "409 `default_required`: the default cannot be un-defaulted; make another the default. Who: its owner.",
                     ok=_ADDRESS, params=[_ADDR_ID], body=_ADDRESS_IN,
                     errors={**{k: _E[k] for k in ("400", "401", "404")}, "409": "the default must stay a default"}),
        "delete": _op("Delete an address (the most recent other one becomes the default)", "Who: its owner.",
                      ok={"type": "object", "properties": {"deleted": _STR}}, params=[_ADDR_ID],
                      errors={k: _E[k] for k in ("400", "401", "404")}),
    },
    "/api/v1/orders/{order}/shipments": {
        "post": _op("Ship (some of) a paid order's units",
                    "Omit `lines` to ship every unit still owed. The parcel goes to the buyer's default address (or "
                    "`address_id`). 201; the same carrier and tracking number again: 200 with the parcel (`duplicate`). "
                    "409 `not_paid`, `refund_open`, `not_shippable`, `nothing_to_ship`, `too_many_units`, `no_address`, "
                    "`shipment_changed` (retry), `receipt_confirmed`. Who: the host of the order's room, or ops.",
                    status="201", ok=_SHIPPED, params=[_P_ORDER, _H_IDEM], body=_SHIP_IN,
                    errors={**_E, "409": "the order cannot ship this", "422": "idempotency key reused"}),
    },
    "/api/v1/shipments/{shipment}/delivered": {
        "post": _op("Mark a parcel delivered (ops, or the carrier's signed callback)",
                    "A carrier signs the body with `X-LC-Signature: t=<unix>,v1=<hex HMAC-SHA256 of '<t>.' + body>` under "
                    "LC_CARRIER_WEBHOOK_SECRET (no token then). The order is delivered once every unit shipped and every "
                    "parcel arrived. Repeating it answers `changed: false`. 401 `bad_signature`, `stale_timestamp`, "
                    "`malformed_signature`. Who: ops (a bearer token), or the carrier (the signature).",
                    ok={"type": "object", "properties": {"shipment": _SHIPMENT, "progress": _STR, "changed": {"type": "boolean"}}},
                    params=[_P_SHIP, {"name": SIGNATURE_HEADER, "in": "header", "schema": _STR}], errors=_E, auth=False),
    },
    "/api/v1/orders/{order}/confirm": {
        "post": _op("Confirm receipt of a delivered order (it completes)",
                    "Done automatically LC_AUTO_CONFIRM_S (7 days) after delivery. After it, after-sales go through a "
                    "ticket. 409 `not_delivered`, `return_open`. Who: the buyer or ops.",
                    ok={"type": "object", "properties": {"order_id": _STR, "completed": {"type": "boolean"},
                                                          "changed": {"type": "boolean"}}},
                    params=[_P_ORDER], errors={**_E, "409": "not delivered, or a return is open"}),
    },
    "/api/v1/refunds/{refund}/return": {
        "post": _op("Send back the goods of a return (the return parcel)",
                    "For a return-and-refund (kind `return`); the return is approved once this parcel is marked delivered. "
                    "409 `not_a_return`, `return_closed`, `return_shipped`. Who: the buyer.",
                    status="201", ok=_SHIPPED, params=[_P_REFUND, _H_IDEM], body=_RETURN_IN,
                    errors={**_E, "409": "no return parcel for this refund", "422": "idempotency key reused"}),
    },
    "/api/v1/fulfilment/orders": {
        "get": _op("Orders to ship (`state=paid`: units still owed, perhaps after a partial parcel) or on their way "
                   "(`state=shipped`), with the buyer's ship-to, the parcels and what is owed",
                   "Who: the host of `room`, or ops (any room when `room` is omitted).",
                   ok={"type": "object", "properties": {"orders": {"type": "array", "items": {"type": "object"}}}},
                   params=[{"name": "room", "in": "query", "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}},
                           {"name": "state", "in": "query", "schema": {"enum": ["paid", "shipped"]}}],
                   errors={k: _E[k] for k in ("400", "401", "403")}),
    },
}
