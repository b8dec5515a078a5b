"""The cart at the edge (issue 19 part 3; the contract is docs/commerce.md "Cart and checkout"):

* ``GET /api/v1/rooms/{room}/cart``: the caller's cart in the room with current prices,
  availability, limits, gifts and the coupon proposal;
* ``POST …/cart/items {product_id, sku?, qty?}``, ``PUT …/cart/items/{product}/{sku} {qty}``,
  ``DELETE …/cart/items/{product}/{sku}``, ``DELETE …/cart``: change it;
* ``POST …/cart/checkout {lines?, coupon_ids?}`` with an ``Idempotency-Key`` (required): one
  order of every line, all or nothing (:class:`~livecommerce.cart_checkout.CartCheckout`).

A line of a product with a live flash sale in the room is priced and reserved through the
sale (:meth:`gateway.commerce.FlashSales.sale_for_product`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.cart import Line, cart_order_id, check_id, check_qty, parse_line
from livecommerce.cart_checkout import CartCheckout, SaleTerms
from livecommerce.errors import BadFrame

from .commerce import FlashSales
from .core import Gateway
from .idempotency import header_key, idempotent
from .openapi import H_IDEM, ID, INT, P_ROOM, STR, J, arr, nullable, obj, op, ref
from .validation import read_object


class Carts:
    """Each viewer's cart per room, and its checkout."""

    def __init__(self, gw: Gateway, cart: CartCheckout, sales: FlashSales) -> None:
        self.gw = gw
        self.cart = cart
        self.sales = sales

    async def _sales(self, room: str, product_ids: Sequence[str]) -> dict[str, SaleTerms]:
        out = {}
        for pid in dict.fromkeys(product_ids):
            d = await self.sales.sale_for_product(room, pid)
            if d is not None:
                out[pid] = SaleTerms(str(d["sale_id"]), int(d["price"]), int(d["per_user_limit"]), int(d["remaining"]),
                                     int(d.get("payment_window_s") or self.gw.s.payment_window_s), str(d.get("state") or "live"))
        return out

    async def _view(self, ident: Identity, room: str) -> web.Response:
        raw, _ = await self.cart.carts.lines(room, ident.user)
        sales = await self._sales(room, [p for p, _, _ in raw])
        return web.json_response(await self.cart.view(ident.user, room, sales, now_ms=self.gw.now_ms()))

    def _room(self, request: web.Request) -> str:
        return check_id(request.match_info["room"], "room")

    async def http_get(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        return await self._view(ident, self._room(request))

    async def _sku_of(self, line: Line) -> str:
        if line.sku:
            return line.sku
        got = await self.cart.catalog.product(line.product_id)
        if got is None:
            from livecommerce.errors import NotFound
            raise NotFound(f"no product {line.product_id!r}")
        active = got.active_skus
        if len(active) != 1:
            raise BadFrame(f"product {line.product_id} has several SKUs: name one ('sku')", code="invalid")
        return active[0].id

    async def _known(self, product_id: str, sku: str) -> None:
        from livecommerce.errors import Conflict, NotFound
        got = await self.cart.catalog.product(product_id)
        if got is None:
            raise NotFound(f"no product {product_id!r}")
        s = got.sku(sku)
        if s is None:
            raise NotFound(f"product {product_id!r} has no SKU {sku!r}")
        if got.state == "archived" or s.state == "archived":
            raise Conflict(f"{product_id}/{sku} is no longer sold", code="archived" if got.state == "archived" else "sku_archived")

    async def http_add(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = self._room(request)
        line = parse_line(await read_object(request, required=True))
        sku = await self._sku_of(line)
        await self._known(line.product_id, sku)
        await self.cart.carts.change(room, ident.user, line.product_id, sku, add=line.qty, now_ms=self.gw.now_ms())
        return await self._view(ident, room)

    async def http_set(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = self._room(request)
        pid, sku = check_id(request.match_info["product"], "product"), check_id(request.match_info["sku"], "sku")
        body = await read_object(request, required=True)
        extra = sorted(str(k) for k in body if k != "qty")
        if extra:
            raise BadFrame(f"unknown field {extra[0]!r} (known: qty)", code="invalid")
        qty = check_qty(body.get("qty"), lo=0)
        if qty:
            await self._known(pid, sku)
        await self.cart.carts.change(room, ident.user, pid, sku, set_to=qty, now_ms=self.gw.now_ms())
        return await self._view(ident, room)

    async def http_remove(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = self._room(request)
        pid, sku = check_id(request.match_info["product"], "product"), check_id(request.match_info["sku"], "sku")
        await self.cart.carts.change(room, ident.user, pid, sku, set_to=0, now_ms=self.gw.now_ms())
        return await self._view(ident, room)

    async def http_clear(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = self._room(request)
        await self.cart.carts.clear(room, ident.user, now_ms=self.gw.now_ms())
        return await self._view(ident, room)

    async def http_checkout(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = self._room(request)
        body = await read_object(request)
        extra = sorted(str(k) for k in body if k not in ("lines", "coupon_ids"))
        if extra:
            raise BadFrame(f"unknown field {extra[0]!r} (known: lines, coupon_ids)", code="invalid")
        key = header_key(request)
        if key is None:
            raise BadFrame("checkout needs an Idempotency-Key header (a retry with the same key answers the same order)",
                           code="idempotency_key_required")
        raw_lines = body.get("lines")
        from_cart = raw_lines is None
        if raw_lines is not None and (not isinstance(raw_lines, list) or len(raw_lines) > 50):
            raise BadFrame("'lines' must be a list of at most 50 {product_id, sku, qty}", code="invalid")
        lines = [parse_line(x) for x in raw_lines or []]
        coupons = body.get("coupon_ids")
        if coupons is not None and (not isinstance(coupons, list) or not all(isinstance(c, str) and 0 < len(c) <= 140
                                                                              for c in coupons)):
            raise BadFrame("'coupon_ids' must be a list of coupon ids", code="invalid")
        run = functools.partial(self._checkout, ident, room, key, lines, from_cart, coupons)
        return await idempotent(self.gw, request, ident, key=key, target=room, body=body, run=run)

    async def _checkout(self, ident: Identity, room: str, key: str, lines: list[Line], from_cart: bool,
                        coupons: list[str] | None) -> web.Response:
        if from_cart:
            raw, _ = await self.cart.carts.lines(room, ident.user)
            lines = [Line(p, s, q) for p, s, q in raw]
        sales = await self._sales(room, [ln.product_id for ln in lines])
        order, duplicate = await self.cart.checkout(user=ident.user, room=room, order_id=cart_order_id(ident.user, key),
                                                    lines=lines, coupon_ids=coupons, sales=sales, now_ms=self.gw.now_ms(),
                                                    request_id=key[:64])
        if from_cart and not duplicate:
            for ln in order.lines:
                if not ln.gift:
                    await self.cart.carts.change(room, ident.user, ln.product_id, ln.sku, set_to=0, now_ms=self.gw.now_ms())
        return web.json_response({**order.view(), "duplicate": duplicate}, status=200 if duplicate else 201)


# ------------------------------------------------------------------------------ OpenAPI

_LINE_IN: J = obj({"product_id": ID, "sku": ID, "qty": {"type": "integer", "minimum": 1, "maximum": 99}}, ["product_id"],
                  extra=False)
OPENAPI_SCHEMAS: dict[str, J] = {
    "Cart": obj({"room": ID, "lines": arr({"type": "object"}), "gifts": arr({"type": "object"}), "qty": INT, "subtotal": INT,
                 "coupons": obj({"proposed": arr(STR), "discount": INT, "total": INT, "eligible": arr({"type": "object"}),
                                 "ineligible": arr({"type": "object"})}, ["proposed", "discount", "total"]),
                 "v": INT}, ["room", "lines", "gifts", "qty", "subtotal", "coupons", "v"],
                desc="A viewer's cart in a room: each line with its current price (`unit_price`: the list price, or the live "
                     "sale's), `available`, `limit`, `bought`, `subtotal`, `ok`/`problem`; the gifts it earns; the coupon "
                     "proposal (at most one platform + one shop coupon)."),
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
                   ok=("201", ref("CartOrder"), "the order, reserved (200 with `duplicate: true` for a retry)"),
                   errors=(404, 409, 422),
                   desc="`Idempotency-Key` is required (400 `idempotency_key_required`): the same key and body answer the "
                        "same order. Without `lines`, the cart's lines; without `coupon_ids`, the proposal (`[]`: none). "
                        "409: `sold_out`, `limit_reached`, `no_product`, `no_sku`, `archived`, `sku_archived`, "
                        "`price_changed` (a SKU's price changed between the read that priced the line and its hold: "
                        "read the cart again and check out with a new key), "
                        "`not_started`/`ended`/`room_ended` (a sale line), `coupon_not_usable`, `order_exists`; nothing is "
                        "held. 400: `cart_empty`, `too_many_coupons`, `invalid`."),
    },
}
