"""The catalogue over HTTP: hosts manage their own products and SKUs, ops any.

* ``POST /api/v1/products`` ``{id?, name, description?, category?, image?, owner?}`` with
  ``skus: [{id?, attrs, price, stock?, image?}]`` or, for one SKU, ``price`` (and ``stock``)
  -> 201 the product; the same definition again -> 200 (``created: false``); another
  definition under a taken id -> 409 ``product_exists``. A host's products are its own
  (``owner`` may name another user only for ops; ops without ``owner`` make a platform
  product only ops change).
* ``GET /api/v1/products[?owner=&state=&limit=&offset=]``: a host lists its own, ops
  anyone's (from SQL, with each SKU's units live from Redis).
* ``GET /api/v1/products/{product}`` (public): the product, each SKU with ``stock``
  (available units); its owner and ops also see ``units`` (available, reserved, sold,
  stocked).
* ``PATCH /api/v1/products/{product}`` ``{name?, description?, category?, image?, state?}``;
  ``DELETE`` the same path archives it (no new reservations; it leaves every room's list).
* ``POST /api/v1/products/{product}/skus`` (one more SKU), ``PATCH .../skus/{sku}``
  ``{price?, image?, state?, stock? | add_stock?}``, ``DELETE .../skus/{sku}`` (archive).

Every write takes an ``Idempotency-Key`` (``gateway/idempotency.py``): the same request
again gets the first answer; ``add_stock`` without one is not safe to retry. Bad input is a
400 ``invalid`` naming the field (``skus[2].price: must be integer cents``), never a 500.
Writes go through :class:`~livecommerce.catalog_sync.Catalogue` (Redis, then SQL); a change
of what a room's list shows reaches those lists (``gateway/bag.py``) and their viewers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from livecommerce import catalog_sql
from livecommerce.auth import Identity
from livecommerce.catalog import (
    Product,
    ProductState,
    SkuStock,
    add_sku,
    check_owner,
    may_manage,
    patch_product,
    patch_sku,
    validate_product,
    validate_sku,
    validate_sku_patch,
)
from livecommerce.catalog_sync import Catalogue
from livecommerce.errors import BadFrame, Forbidden, NotFound, Unauthorized

from .core import Gateway
from .idempotency import header_key, idempotent
from .openapi import (
    BOOL,
    CENTS,
    H_IDEM,
    ID,
    INT,
    MS,
    Q_LIMIT,
    Q_OFFSET,
    STR,
    USER,
    J,
    arr,
    nullable,
    obj,
    op,
    ref,
)
from .validation import page, read_object

log = logging.getLogger("livecommerce.gateway.catalog")

#: ``(product)`` after a change of its definition: the rooms' lists refresh or drop it
ProductChanged = Callable[[Product], Awaitable[None]]


def product_view(product: Product, units: dict[str, SkuStock], *, full: bool) -> dict[str, Any]:
    """A product as the API shows it: each SKU with ``stock`` (available units), and with
    ``units`` for its owner and ops."""
    out = product.to_dict()
    for s in out["skus"]:
        u = units.get(s["id"], SkuStock())
        s["stock"] = u.available
        if full:
            s["units"] = u.to_dict()
    return out


class CatalogService:
    """Products and SKUs over HTTP (module docstring)."""

    def __init__(self, gw: Gateway, catalogue: Catalogue, changed: list[ProductChanged]) -> None:
        self.gw = gw
        self.catalogue = catalogue
        self.changed = changed  # called after a definition changed (the rooms' lists)

    # ---- the rules of who does what
    @staticmethod
    def _require_manager(ident: Identity) -> None:
        if ident.role not in ("host", "ops"):
            raise Forbidden("products are managed by their hosts and by ops")

    async def _owned(self, product_id: str, ident: Identity) -> Product:
        """The product, if ``ident`` may change it.

        Raises:
            Forbidden: a viewer, another host, or a platform product for a host.
            NotFound: no such product (asked after the role, so a viewer learns nothing).
        """
        self._require_manager(ident)
        product = await self.catalogue.product(product_id)
        if not may_manage(product.owner, user=ident.user, role=ident.role):
            owner = f"host {product.owner!r}" if product.owner else "the platform (ops)"
            raise Forbidden(f"product {product_id!r} belongs to {owner}: hosts change their own products only")
        return product

    async def _after_change(self, product: Product) -> None:
        for hook in self.changed:
            await hook(product)

    async def _view(self, product_id: str, *, full: bool) -> dict[str, Any]:
        got = await self.catalogue.get(product_id)
        if got is None:
            raise NotFound(f"no product {product_id!r}")
        return product_view(got[0], got[1], full=full)

    async def _idempotent(self, request: web.Request, ident: Identity, target: str, body: Any,
                          run: Callable[[], Awaitable[web.Response]]) -> web.Response:
        return await idempotent(self.gw, request, ident, key=header_key(request), target=target, body=body, run=run)

    # ---- HTTP (gateway.routes)
    async def http_create(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        self._require_manager(ident)
        body = await read_object(request, required=True)
        return await self._idempotent(request, ident, "", body, functools.partial(self._create, ident, body))

    async def _create(self, ident: Identity, body: dict[str, Any]) -> web.Response:
        if ident.role == "host" and body.get("owner") not in (None, ident.user):
            raise Forbidden("a host creates its own products: leave 'owner' out")
        owner = ident.user if ident.role == "host" else check_owner(body.get("owner"))
        draft = validate_product(body, owner=owner, default_id=f"p{secrets.token_hex(5)}")
        existing = await self.catalogue.get(draft.product.id)
        if existing is not None and not may_manage(existing[0].owner, user=ident.user, role=ident.role):
            raise Forbidden(f"product id {draft.product.id!r} is taken by another owner: pick another id")
        product, created = await self.catalogue.create(draft, now_ms=self.gw.now_ms(), by=ident.user)
        view = await self._view(product.id, full=True)
        return web.json_response({**view, "created": created}, status=201 if created else 200)

    async def http_list(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        self._require_manager(ident)
        owner = request.query.get("owner")
        if ident.role == "host":
            if owner not in (None, ident.user):
                raise Forbidden("a host lists its own products: leave 'owner' out")
            owner = ident.user
        state = request.query.get("state")
        if state not in (None, "active", "archived"):
            raise BadFrame("'state' must be active or archived", code="invalid")
        limit, offset = page(request)
        listed = await catalog_sql.list_products(self.catalogue.store, owner=owner, state=_state(state), limit=limit,
                                                 offset=offset)
        live = await asyncio.gather(*(self.catalogue.get(p.id) for p in listed))
        out = [product_view(got[0], got[1], full=True) if got is not None else product_view(p, {}, full=True)
               for p, got in zip(listed, live, strict=True)]
        return web.json_response({"products": out})

    async def http_get(self, request: web.Request) -> web.Response:
        ident = self._maybe_ident(request)
        product_id = request.match_info["product"]
        got = await self.catalogue.get(product_id)
        if got is None:
            raise NotFound(f"no product {product_id!r}")
        full = ident is not None and may_manage(got[0].owner, user=ident.user, role=ident.role)
        return web.json_response(product_view(got[0], got[1], full=full))

    def _maybe_ident(self, request: web.Request) -> Identity | None:
        """A public route: a token, if any and valid, shows more; a bad one shows less."""
        try:
            return self.gw.identify_request(request)
        except Unauthorized:
            return None

    async def http_patch(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        product_id = request.match_info["product"]
        body = await read_object(request, required=True)

        async def run() -> web.Response:
            await self._owned(product_id, ident)
            _, after = await self.catalogue.update(product_id, lambda p: patch_product(p, body), now_ms=self.gw.now_ms(),
                                                   by=ident.user)
            await self._after_change(after)
            return web.json_response(await self._view(product_id, full=True))

        return await self._idempotent(request, ident, product_id, body, run)

    async def http_archive(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        product_id = request.match_info["product"]

        async def run() -> web.Response:
            await self._owned(product_id, ident)
            _, after = await self.catalogue.update(product_id, lambda p: patch_product(p, {"state": "archived"}),
                                                   now_ms=self.gw.now_ms(), by=ident.user)
            await self._after_change(after)
            return web.json_response(await self._view(product_id, full=True))

        return await self._idempotent(request, ident, product_id, None, run)

    async def http_add_sku(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        product_id = request.match_info["product"]
        body = await read_object(request, required=True)

        async def run() -> web.Response:
            product = await self._owned(product_id, ident)
            sku, stock = validate_sku(body, index=len(product.skus))
            _, after = await self.catalogue.update(product_id, lambda p: add_sku(p, sku), now_ms=self.gw.now_ms(),
                                                   by=ident.user, initial_stock={sku.id: stock or 0})
            await self._after_change(after)
            return web.json_response(await self._view(product_id, full=True), status=201)

        return await self._idempotent(request, ident, product_id, body, run)

    async def http_patch_sku(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        product_id, sku_id = request.match_info["product"], request.match_info["sku"]
        body = await read_object(request, required=True)

        async def run() -> web.Response:
            product = await self._owned(product_id, ident)
            patch = validate_sku_patch(body)
            if product.sku(sku_id) is None:
                raise NotFound(f"product {product_id!r} has no SKU {sku_id!r}")
            now = self.gw.now_ms()
            if patch.stock is not None or patch.add_stock is not None:  # first: a refused change changes nothing
                await self.catalogue.change_stock(product_id, sku_id, set_to=patch.stock, add=patch.add_stock, now_ms=now,
                                                  by=ident.user)
            if patch.changes_definition:
                _, after = await self.catalogue.update(product_id, lambda p: patch_sku(p, sku_id, patch), now_ms=now,
                                                       by=ident.user)
                await self._after_change(after)
            return web.json_response(await self._view(product_id, full=True))

        return await self._idempotent(request, ident, f"{product_id}/{sku_id}", body, run)

    async def http_archive_sku(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        product_id, sku_id = request.match_info["product"], request.match_info["sku"]

        async def run() -> web.Response:
            product = await self._owned(product_id, ident)
            if product.sku(sku_id) is None:
                raise NotFound(f"product {product_id!r} has no SKU {sku_id!r}")
            patch = validate_sku_patch({"state": "archived"})
            _, after = await self.catalogue.update(product_id, lambda p: patch_sku(p, sku_id, patch),
                                                   now_ms=self.gw.now_ms(), by=ident.user)
            await self._after_change(after)
            return web.json_response(await self._view(product_id, full=True))

        return await self._idempotent(request, ident, f"{product_id}/{sku_id}", None, run)


def _state(v: str | None) -> ProductState | None:
    return None if v is None else ("archived" if v == "archived" else "active")


# ------------------------------------------------------------------------------ OpenAPI

P_PRODUCT = {"name": "product", "in": "path", "required": True, "schema": ID}
P_SKU = {"name": "sku", "in": "path", "required": True, "schema": ID}
MANAGER = "the product's owner (a host) or ops"
STATE: J = {"enum": ["active", "archived"]}
TEXT: J = {"type": "string", "maxLength": 2000}
URL: J = {"type": "string", "maxLength": 500, "description": "an http(s) URL or a path starting with /"}
ATTRS: J = {"type": "object", "additionalProperties": {"type": ["string", "integer"]}, "maxProperties": 3,
            "description": "one value per option of the product, e.g. {\"colour\": \"red\", \"size\": \"M\"}"}
UNITS: J = obj({"available": INT, "reserved": INT, "sold": INT, "stocked": INT}, ["available", "reserved", "sold", "stocked"],
               desc="stocked == available + reserved + sold")
STOCK_IN: J = {"type": "integer", "minimum": 0, "maximum": 10_000_000}
LIMIT: J = {"type": "integer", "minimum": 0, "maximum": 1000, "description": "the most units one user may hold and buy (0: no limit)"}
GIFT: J = {**obj({"min_qty": {"type": "integer", "minimum": 1, "maximum": 1000}, "sku": ID,
                  "qty": {"type": "integer", "minimum": 1, "maximum": 100}, "product_id": ID}, ["min_qty", "sku"], extra=False),
           "description": "gift with purchase (赠品): buy at least min_qty of this SKU, get qty of sku (of product_id, default "
                          "this product) at price 0 while its stock lasts"}

OPENAPI_SCHEMAS: dict[str, J] = {
    "SkuCreate": obj({"id": ID, "attrs": ATTRS, "price": CENTS, "stock": STOCK_IN, "image": URL, "limit": LIMIT, "gift": GIFT},
                     ["price"], extra=False,
                     desc="Without `id`, the id is made from the attrs' values (`red-M`), else `sku<n>`."),
    "ProductCreate": obj({
        "id": ID, "name": {"type": "string", "maxLength": 200}, "description": TEXT, "category": {"type": "string", "maxLength": 64},
        "image": URL, "owner": {**USER, "description": "ops only: the host whose product it is (none: a platform product)"},
        "price": {**CENTS, "description": "a product of one SKU: its price (or list skus)"},
        "stock": {**STOCK_IN, "description": "a product of one SKU: its units"},
        "skus": {**arr(ref("SkuCreate")), "maxItems": 200},
    }, ["name"], extra=False, desc="Give `skus` (variants with their own price, stock and image) or `price` (one SKU)."),
    "Sku": obj({"id": ID, "attrs": {"type": "object", "additionalProperties": STR}, "price": CENTS, "image": STR,
                "state": STATE, "stock": INT, "units": UNITS, "limit": INT, "gift": {"type": "object"}},
               ["id", "attrs", "price", "image", "state", "stock"]),
    "Product": obj({
        "id": ID, "owner": STR, "name": STR, "description": STR, "category": STR, "image": STR, "state": STATE,
        "skus": arr(ref("Sku")), "options": arr(obj({"name": STR, "values": arr(STR)}, ["name", "values"])),
        "price": CENTS, "price_min": CENTS, "price_max": CENTS, "v": INT, "created_ms": MS, "updated_ms": MS, "created": BOOL,
    }, ["id", "name", "price", "skus", "state", "v"], desc="`price` is the lowest active SKU price (what a pin shows)."),
    "ProductPatch": obj({"name": {"type": "string", "maxLength": 200}, "description": TEXT,
                         "category": {"type": "string", "maxLength": 64}, "image": URL, "state": STATE}, extra=False),
    "SkuPatch": obj({"price": CENTS, "image": URL, "state": STATE, "limit": LIMIT, "gift": nullable(GIFT), "stock": {**STOCK_IN, "description": "set the available units"},
                     "add_stock": {"type": "integer", "minimum": -10_000_000, "maximum": 10_000_000,
                                   "description": "add units (negative: take out); retry only with the same Idempotency-Key"}},
                    extra=False, desc="`stock` and `add_stock` are exclusive."),
}

_W = (404, 409, 422)
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/products": {
        "post": op("Create a product with its SKUs", tag="catalog", auth="hosts (their own products) and ops",
                   params=[H_IDEM], body=ref("ProductCreate"),
                   ok=("201", ref("Product"), "created (200 with created=false for the same definition again)"),
                   errors=(409, 422), desc="409 `product_exists`: the id holds another definition (PATCH it). 403: the id is "
                                      "another owner's."),
        "get": op("List products (a host: its own; ops: anyone's)", tag="catalog", auth="hosts and ops",
                  params=[{"name": "owner", "in": "query", "schema": USER}, {"name": "state", "in": "query", "schema": STATE},
                          Q_LIMIT, Q_OFFSET],
                  ok=("200", obj({"products": arr(ref("Product"))}, ["products"]), "products, newest first")),
    },
    "/api/v1/products/{product}": {
        "get": op("A product with its SKUs and their stock", tag="catalog", auth=None, params=[P_PRODUCT],
                  ok=("200", ref("Product"), "the product (SKU `units` for its owner and ops)"), errors=(404,)),
        "patch": op("Change a product's name, description, category, image or state", tag="catalog", auth=MANAGER,
                    params=[P_PRODUCT, H_IDEM], body=ref("ProductPatch"), ok=("200", ref("Product"), "changed"), errors=_W),
        "delete": op("Archive a product (no new reservations; it leaves every room's list)", tag="catalog", auth=MANAGER,
                     params=[P_PRODUCT, H_IDEM], ok=("200", ref("Product"), "archived"), errors=_W),
    },
    "/api/v1/products/{product}/skus": {
        "post": op("Add a SKU to a product", tag="catalog", auth=MANAGER, params=[P_PRODUCT, H_IDEM], body=ref("SkuCreate"),
                   ok=("201", ref("Product"), "the product with its new SKU"), errors=_W),
    },
    "/api/v1/products/{product}/skus/{sku}": {
        "patch": op("Change a SKU's price, image, state or stock", tag="catalog", auth=MANAGER,
                    params=[P_PRODUCT, P_SKU, H_IDEM], body=ref("SkuPatch"), ok=("200", ref("Product"), "changed"), errors=_W,
                    desc="409 `stock_out_of_range`: fewer than 0 units would be available."),
        "delete": op("Archive a SKU", tag="catalog", auth=MANAGER, params=[P_PRODUCT, P_SKU, H_IDEM],
                     ok=("200", ref("Product"), "archived"), errors=_W),
    },
}
