"""The cart at the edge (issue 19; the contract is docs/commerce.md "Cart and checkout"),
over HTTP and over the WebSocket, one implementation behind both:

* ``GET /api/v1/rooms/{room}/cart`` / ``cart.get``: the caller's cart in the room with
  current prices, availability, limits, gifts and the coupon proposal;
* ``POST …/cart/items {product_id, sku?, qty?}`` / ``cart.add``, ``PUT
  …/cart/items/{product}/{sku} {qty}`` / ``cart.set {product_id, sku, qty}``, ``DELETE
  …/cart/items/{product}/{sku}`` / ``cart.remove {product_id, sku}``, ``DELETE …/cart`` /
  ``cart.clear``: change it (each answers the cart);
* ``POST …/cart/checkout {lines?, coupon_ids?}`` with an ``Idempotency-Key`` (required) /
  ``cart.checkout {lines?, coupon_ids?, request_id}``: one order of every line, all or
  nothing (:class:`~livecommerce.cart_checkout.CartCheckout`). The key (or ``request_id``)
  names the order (:func:`~livecommerce.cart.cart_order_id`) and is bound to the request
  through :func:`gateway.idempotency.run_once` with the same fingerprint on both transports:
  the same key and body answer the same order, another body is ``idempotency_conflict``.

A WebSocket command acts on the room the connection joined; its answer is the HTTP
answer's body in the ``ack`` frame, its refusal the error frame with the same code and
fields. A change reaches the user's other connections in the room as ``cart.changed {room,
v, qty}`` (the cart's version and its units), a small notice: read the cart to see it.

A line of a product with a live flash sale in the room is priced and reserved through the
sale (:meth:`gateway.commerce.FlashSales.sale_for_product`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.cart import Line, cart_order_id, check_id, check_qty, parse_line
from livecommerce.cart_checkout import CartCheckout, SaleTerms
from livecommerce.errors import BadFrame, Conflict, LiveCommerceError, NotFound
from livecommerce.idempotency import Stored, check_key, fingerprint
from livecommerce.protocol.commands import CartAction
from livecommerce.protocol.events import envelope, reply

from .commerce import FlashSales
from .conn import Conn
from .core import Gateway
from .idempotency import header_key, idempotent, run_once
from .openapi import H_IDEM, ID, INT, P_ROOM, STR, J, arr, nullable, obj, op, ref
from .rooms import RoomGate
from .validation import read_object

log = logging.getLogger("livecommerce.gateway.cart")

#: the route a checkout's key is bound to, on either transport (the fingerprint's route)
CHECKOUT_ROUTE = "/api/v1/rooms/{room}/cart/checkout"
Json = dict[str, Any]


def fields(d: Any, known: Sequence[str], what: str) -> Mapping[str, Any]:
    """``d`` as a map of the ``known`` fields only.

    Raises:
        BadFrame: (``invalid``) not a map, or a field it does not know (named).
    """
    if not isinstance(d, Mapping):
        raise BadFrame(f"{what} must be an object", code="invalid")
    extra = sorted(str(k) for k in d if k not in known)
    if extra:
        raise BadFrame(f"unknown field {extra[0]!r} (known: {', '.join(known) or 'none'})", code="invalid")
    return d


@dataclass(frozen=True, slots=True)
class CheckoutAsk:
    """A checked checkout request: its lines (none: the cart's), its coupons (None: the
    proposal), the body its key is bound to."""

    lines: list[Line]
    from_cart: bool
    coupons: list[str] | None
    body: Json


def parse_checkout(d: Any, *, known: Sequence[str] = ("lines", "coupon_ids")) -> CheckoutAsk:
    """``{lines?, coupon_ids?}`` (and on the WebSocket ``request_id``, left out of the bound body).

    Raises:
        BadFrame: (``invalid``) unknown fields, bad lines or coupon ids.
    """
    body = dict(fields(d, known, "a checkout"))
    body.pop("request_id", None)
    raw_lines = body.get("lines")
    if raw_lines is not None and (not isinstance(raw_lines, list) or len(raw_lines) > 50):
        raise BadFrame("'lines' must be a list of at most 50 {product_id, sku, qty}", code="invalid")
    lines = [parse_line(x) for x in raw_lines or []]
    coupons = body.get("coupon_ids")
    if coupons is not None and (not isinstance(coupons, list) or not all(isinstance(c, str) and 0 < len(c) <= 140
                                                                          for c in coupons)):
        raise BadFrame("'coupon_ids' must be a list of coupon ids", code="invalid")
    return CheckoutAsk(lines, raw_lines is None, coupons, body)


@dataclass(frozen=True, slots=True)
class Placed:
    """A checkout's answer on either transport: the HTTP status and the body (the
    CartOrder view with ``duplicate``)."""

    status: int
    body: Json

    def stored(self) -> Stored:
        return Stored(self.status, json.dumps(self.body))


class Carts:
    """Each viewer's cart per room, and its checkout."""

    def __init__(self, gw: Gateway, cart: CartCheckout, sales: FlashSales, gate: RoomGate | None = None) -> None:
        self.gw = gw
        self.cart = cart
        self.sales = sales
        self.gate = gate  # a checkout in an ended show answers room_ended (a retry of an order made before, its order)

    # ------------------------------------------------------------------ one implementation
    async def _sales(self, room: str, product_ids: Sequence[str]) -> dict[str, SaleTerms]:
        out = {}
        for pid in dict.fromkeys(product_ids):
            d = await self.sales.sale_for_product(room, pid)
            if d is not None:
                out[pid] = SaleTerms(str(d["sale_id"]), int(d["price"]), int(d["per_user_limit"]), int(d["remaining"]),
                                     int(d.get("payment_window_s") or self.gw.s.payment_window_s), str(d.get("state") or "live"))
        return out

    async def view(self, user: str, room: str) -> Json:
        """The cart (docs/commerce.md "Cart and checkout"; OpenAPI ``Cart``)."""
        raw, _ = await self.cart.carts.lines(room, user)
        sales = await self._sales(room, [p for p, _, _ in raw])
        return await self.cart.view(user, room, sales, now_ms=self.gw.now_ms())

    async def _changed(self, user: str, room: str, by: Conn | None) -> Json:
        """The cart after a change, told to the user's other connections in the room."""
        cart = await self.view(user, room)
        d = {"room": room, "v": cart["v"], "qty": sum(int(ln["qty"]) for ln in cart["lines"])}
        skip = None if by is None else f"{self.gw.s.node_id}/{by.id}"
        try:
            await self.gw.notifier.to_user(user, envelope("cart.changed", room, d, ts=self.gw.now_ms()), room=room, skip=skip)
        except LiveCommerceError as exc:  # lossy, as every push: the cart itself is right
            log.warning("cart.push_failed", extra={"user": user, "room": room, "err": exc.message})
        return cart

    async def _sku_of(self, line: Line) -> str:
        if line.sku:
            return line.sku
        got = await self.cart.catalog.product(line.product_id)
        if got is None:
            raise NotFound(f"no product {line.product_id!r}")
        active = got.active_skus
        if len(active) != 1:
            raise BadFrame(f"product {line.product_id} has several SKUs: name one ('sku')", code="invalid")
        return active[0].id

    async def _known(self, product_id: str, sku: str) -> None:
        got = await self.cart.catalog.product(product_id)
        if got is None:
            raise NotFound(f"no product {product_id!r}")
        s = got.sku(sku)
        if s is None:
            raise NotFound(f"product {product_id!r} has no SKU {sku!r}")
        if got.state == "archived" or s.state == "archived":
            raise Conflict(f"{product_id}/{sku} is no longer sold", code="archived" if got.state == "archived" else "sku_archived",
                           details={"product_id": product_id, "sku": sku})

    async def add(self, user: str, room: str, d: Any, by: Conn | None = None) -> Json:
        """``{product_id, sku?, qty?}``: add units of a SKU; the cart.

        Raises:
            BadFrame, NotFound, Conflict: ``invalid``, ``not_found``, ``archived``,
                ``sku_archived``, ``cart_full``, ``qty_too_large``.
        """
        line = parse_line(d)
        sku = await self._sku_of(line)
        await self._known(line.product_id, sku)
        await self.cart.carts.change(room, user, line.product_id, sku, add=line.qty, now_ms=self.gw.now_ms())
        return await self._changed(user, room, by)

    async def set_line(self, user: str, room: str, product_id: str, sku: str, qty: Any, by: Conn | None = None) -> Json:
        """Set a line's quantity (0 removes it); the cart."""
        n = check_qty(qty, lo=0)
        if n:
            await self._known(product_id, sku)
        await self.cart.carts.change(room, user, product_id, sku, set_to=n, now_ms=self.gw.now_ms())
        return await self._changed(user, room, by)

    async def clear(self, user: str, room: str, by: Conn | None = None) -> Json:
        await self.cart.carts.clear(room, user, now_ms=self.gw.now_ms())
        return await self._changed(user, room, by)

    async def checkout(self, ident: Identity, room: str, key: str, ask: CheckoutAsk, by: Conn | None = None) -> Placed:
        """One order of every line, under the order id the key names (a retry meets it:
        ``duplicate``); the ordered lines leave the cart. The caller binds the key to the
        request (:func:`~gateway.idempotency.run_once`).

        Raises:
            BadFrame: ``cart_empty``, ``too_many_coupons``, ``invalid``.
            CheckoutRefused: a line or coupon refused (``product_id``, ``sku``); nothing is held.
        """
        user = ident.user
        oid = cart_order_id(user, key)
        lines = ask.lines
        prior = await self.cart.carts.order(oid)
        made = prior is not None and prior.user == user and prior.state != "refused"
        if self.gate is not None and not made:
            await self.gate.check(room)  # RoomEnded: the show is over (a retry of an order made before it passes)
        if ask.from_cart:
            if made and prior is not None:
                # a retry of a checkout that emptied the cart: the lines it ordered
                lines = [Line(ln.product_id, ln.sku, ln.qty) for ln in prior.asked or prior.lines if not ln.gift]
            else:
                raw, _ = await self.cart.carts.lines(room, user)
                lines = [Line(p, s, q) for p, s, q in raw]
        sales = await self._sales(room, [ln.product_id for ln in lines])
        order, duplicate = await self.cart.checkout(user=user, room=room, order_id=oid, lines=lines, coupon_ids=ask.coupons,
                                                    sales=sales, now_ms=self.gw.now_ms(), request_id=key[:64])
        if ask.from_cart and not duplicate:
            for ln in order.lines:
                if not ln.gift:
                    await self.cart.carts.change(room, user, ln.product_id, ln.sku, set_to=0, now_ms=self.gw.now_ms())
            await self._changed(user, room, by)
        return Placed(200 if duplicate else 201, {**order.view(), "duplicate": duplicate})

    # ------------------------------------------------------------------ HTTP (gateway.routes)
    def _room(self, request: web.Request) -> str:
        return check_id(request.match_info["room"], "room")

    def _line_of(self, request: web.Request) -> tuple[str, str]:
        return check_id(request.match_info["product"], "product"), check_id(request.match_info["sku"], "sku")

    async def http_get(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        return web.json_response(await self.view(ident.user, self._room(request)))

    async def http_add(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = self._room(request)
        return web.json_response(await self.add(ident.user, room, await read_object(request, required=True)))

    async def http_set(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = self._room(request)
        pid, sku = self._line_of(request)
        body = fields(await read_object(request, required=True), ("qty",), "the body")
        return web.json_response(await self.set_line(ident.user, room, pid, sku, body.get("qty")))

    async def http_remove(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = self._room(request)
        pid, sku = self._line_of(request)
        return web.json_response(await self.set_line(ident.user, room, pid, sku, 0))

    async def http_clear(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        return web.json_response(await self.clear(ident.user, self._room(request)))

    async def http_checkout(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = self._room(request)
        ask = parse_checkout(await read_object(request))
        key = header_key(request)
        if key is None:
            raise BadFrame("checkout needs an Idempotency-Key header (a retry with the same key answers the same order)",
                           code="idempotency_key_required")
        run = functools.partial(self._http_checkout, ident, room, key, ask)
        return await idempotent(self.gw, request, ident, key=key, target=room, body=ask.body, run=run)

    async def _http_checkout(self, ident: Identity, room: str, key: str, ask: CheckoutAsk) -> web.Response:
        placed = await self.checkout(ident, room, key, ask)
        return web.json_response(placed.body, status=placed.status)

    # ------------------------------------------------------------------ WebSocket (gateway.routes)
    async def ws_get(self, conn: Conn, cmd: CartAction) -> Json:
        """``cart.get {}``: the cart."""
        fields(cmd.d, (), "cart.get")
        return reply("ack", cmd.id, await self.view(conn.user, conn.room), ts=self.gw.now_ms())

    async def ws_add(self, conn: Conn, cmd: CartAction) -> Json:
        """``cart.add {product_id, sku?, qty?}``: the cart."""
        return reply("ack", cmd.id, await self.add(conn.user, conn.room, cmd.d, conn), ts=self.gw.now_ms())

    async def ws_set(self, conn: Conn, cmd: CartAction) -> Json:
        """``cart.set {product_id, sku, qty}`` (0 removes): the cart."""
        d = fields(cmd.d, ("product_id", "sku", "qty"), "cart.set")
        if "qty" not in d:
            raise BadFrame("'qty' is required", code="invalid")
        cart = await self.set_line(conn.user, conn.room, check_id(d.get("product_id"), "product_id"),
                                   check_id(d.get("sku"), "sku"), d["qty"], conn)
        return reply("ack", cmd.id, cart, ts=self.gw.now_ms())

    async def ws_remove(self, conn: Conn, cmd: CartAction) -> Json:
        """``cart.remove {product_id, sku}``: the cart."""
        d = fields(cmd.d, ("product_id", "sku"), "cart.remove")
        cart = await self.set_line(conn.user, conn.room, check_id(d.get("product_id"), "product_id"),
                                   check_id(d.get("sku"), "sku"), 0, conn)
        return reply("ack", cmd.id, cart, ts=self.gw.now_ms())

    async def ws_clear(self, conn: Conn, cmd: CartAction) -> Json:
        """``cart.clear {}``: the empty cart."""
        fields(cmd.d, (), "cart.clear")
        return reply("ack", cmd.id, await self.clear(conn.user, conn.room, conn), ts=self.gw.now_ms())

    async def ws_checkout(self, conn: Conn, cmd: CartAction) -> Json:
        """``cart.checkout {lines?, coupon_ids?, request_id}``: the order (``duplicate`` for a
        retry); ``request_id`` is the checkout's idempotency key, bound as HTTP's is."""
        ask = parse_checkout(cmd.d, known=("lines", "coupon_ids", "request_id"))
        rid = cmd.d.get("request_id")
        if rid is None:
            raise BadFrame("'request_id' is required (a retry with the same request_id answers the same order)",
                           code="invalid")
        if not isinstance(rid, str):
            raise BadFrame("'request_id' must be a string", code="invalid")
        key = check_key(rid)
        fp = fingerprint("POST", CHECKOUT_ROUTE, conn.room, ask.body)
        run = functools.partial(self.checkout, conn.ident, conn.room, key, ask, conn)
        placed = await run_once(self.gw, conn.user, key=key, fp=fp, run=run, keep=Placed.stored, replay=None)
        return reply("ack", cmd.id, placed.body, ts=self.gw.now_ms())


# ------------------------------------------------------------------------------ OpenAPI

_LINE_IN: J = obj({"product_id": ID, "sku": ID, "qty": {"type": "integer", "minimum": 1, "maximum": 99}}, ["product_id"],
                  extra=False)
OPENAPI_SCHEMAS: dict[str, J] = {
    "Cart": obj({"room": ID, "lines": arr({"type": "object"}), "gifts": arr({"type": "object"}), "qty": INT, "subtotal": INT,
                 "coupons": obj({"proposed": arr(STR), "discount": INT, "total": INT, "eligible": arr({"type": "object"}),
                                 "ineligible": arr({"type": "object"}),
                                 "claimable": arr(obj({"drop_id": ID, "scope": STR, "kind": STR, "threshold": INT, "value": INT,
                                                       "expires_ms": INT, "remaining": INT, "saves": INT, "reason": STR},
                                                      ["drop_id", "saves"]))},
                                ["proposed", "discount", "total"]),
                 "v": INT}, ["room", "lines", "gifts", "qty", "subtotal", "coupons", "v"],
                desc="A viewer's cart in a room: each line with its current price (`unit_price`: the list price, or the live "
                     "sale's), `available`, `limit`, `bought` (what the user holds or bought of the SKU; a sale line: of the "
                     "sale), `subtotal`, `ok`/`problem`; the gifts it earns; the coupon "
                     "proposal (at most one platform + one shop coupon); `coupons.claimable`: the room's drops the viewer "
                     "could still claim, each with what claiming it would save on this cart (`saves`, cents over the "
                     "proposal) or why it would not apply (`reason`): claim with POST /api/v1/coupons/{drop}/claim."),
    "CartOrder": obj({"order_id": ID, "room": ID, "state": STR, "lines": arr(obj({
        "n": INT, "product_id": ID, "sku": ID, "qty": INT, "unit_price": INT, "sale_id": nullable(ID),
        "gift": {"type": "boolean"}}, ["n", "product_id", "sku", "qty", "unit_price"])), "qty": INT, "subtotal": INT,
        "discount": INT, "amount": INT, "coupon_ids": arr(STR), "pay_by_ms": INT, "duplicate": {"type": "boolean"}},
        ["order_id", "lines", "amount", "pay_by_ms"],
        desc="A cart order, reserved: pay it with POST /api/v1/orders/{order}/payments (or the dev /pay) before `pay_by_ms`."),
}
_VIEWER = "the signed-in viewer (their own cart)"
P_PRODUCT = {"name": "product", "in": "path", "required": True, "schema": ID}
P_SKU = {"name": "sku", "in": "path", "required": True, "schema": ID}
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/rooms/{room}/cart": {
        "get": op("The caller's cart in the room", tag="cart", auth=_VIEWER, params=[P_ROOM], ok=("200", ref("Cart"), "the cart")),
        "delete": op("Empty the cart", tag="cart", auth=_VIEWER, params=[P_ROOM], ok=("200", ref("Cart"), "the empty cart")),
    },
    "/api/v1/rooms/{room}/cart/items": {
        "post": op("Add units of a SKU to the cart", tag="cart", auth=_VIEWER, params=[P_ROOM], body=_LINE_IN,
                   ok=("200", ref("Cart"), "the cart"), errors=(404, 409),
                   desc="409 `cart_full` (50 lines), `qty_too_large` (99 units a line), `archived`, `sku_archived`. "
                        "Nothing is reserved until checkout."),
    },
    "/api/v1/rooms/{room}/cart/items/{product}/{sku}": {
        "put": op("Set a line's quantity (0 removes it)", tag="cart", auth=_VIEWER, params=[P_ROOM, P_PRODUCT, P_SKU],
                  body=obj({"qty": {"type": "integer", "minimum": 0, "maximum": 99}}, ["qty"], extra=False),
                  ok=("200", ref("Cart"), "the cart"), errors=(404, 409)),
        "delete": op("Remove a line", tag="cart", auth=_VIEWER, params=[P_ROOM, P_PRODUCT, P_SKU],
                     ok=("200", ref("Cart"), "the cart")),
    },
    "/api/v1/rooms/{room}/cart/checkout": {
        "post": op("Check out: one order of every line, all or nothing", tag="cart", auth=_VIEWER, params=[P_ROOM, H_IDEM],
                   body=obj({"lines": {**arr(_LINE_IN), "maxItems": 50}, "coupon_ids": {**arr(STR), "maxItems": 2}}, [],
                            extra=False),
                   ok=("201", ref("CartOrder"), "the order, reserved; a retry with the same key and body replays this answer (header `Idempotent-Replayed: true`), or answers 200 with `duplicate: true` when the first answer was not kept"),
                   errors=(404, 409, 422),
                   desc="`Idempotency-Key` is required (400 `idempotency_key_required`): the same key and body answer the "
                        "same order. Without `lines`, the cart's lines; without `coupon_ids`, the proposal (`[]`: none). "
                        "409: `sold_out`, `limit_reached`, `no_product`, `no_sku`, `archived`, `sku_archived`, "
                        "`price_changed` (a SKU's price changed between the read that priced the line and its hold: "
                        "read the cart again and check out with a new key), "
                        "`not_started`/`ended` (a sale line), `room_ended` (the room's show has ended: the cart is kept), "
                        "`coupon_not_usable`, `order_exists`; nothing is "
                        "held. 400: `cart_empty`, `too_many_coupons`, `invalid`."),
    },
}
