"""The room's product list (小黄车) at the edge: the host curates it, viewers see it.

HTTP (JSON; writes by the room's host or ops, each with an optional ``Idempotency-Key``):

* ``GET /api/v1/rooms/{room}/bag`` (public): ``{room, items, explaining, v}``;
* ``PUT /api/v1/rooms/{room}/bag {product_ids, explaining?}``: the whole list at once;
* ``POST /api/v1/rooms/{room}/bag/items {product_id, position?}``: add one (already listed:
  no change); ``DELETE /api/v1/rooms/{room}/bag/items/{product}``: remove one;
* ``PUT /api/v1/rooms/{room}/bag/order {product_ids}``: reorder (exactly the listed ones;
  else 409 ``bag_changed`` with the list as it is);
* ``PUT /api/v1/rooms/{room}/bag/explaining {product_id|null}``: the item being explained
  now (讲解中), or none.

A host lists its own products and platform products; ops any active product. Every answer
is the list after the change with ``changed``. Each change publishes ``bag.changed
{items, explaining, v, by}`` (critical) on the room's channel; a change that changed nothing
publishes the list again (same ``v``), so a host's retry after a lost publish repairs every
node's copy. Clients keep the list with the highest ``v`` they saw.

``welcome`` carries ``bag`` from a node-local copy of each room the node serves (:class:
`RoomBags`): loaded once (one Redis read) when the node first serves the room, then kept by
the room's own ``bag.changed`` events (a hub observer, which also sees events that gap
repair reads back from the history). A broker resubscribe drops the copies of the rooms it
concerns (what was published meanwhile may be lost), and a copy counts only for the hub's
current ``Room`` object, so a room the node stopped serving and serves again is read anew.
A change made through this node updates its copy at once (read-your-writes), and a copy
older than :data:`MAX_AGE_S` is read again in the background (``on_second``), so a change
whose broadcast was lost (a process killed between the write and the publish) still reaches
every node. A join into a room the node already serves costs the bag no Redis command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.bag import (
    Add,
    Bag,
    BagItem,
    Explain,
    Op,
    Remove,
    Reorder,
    Replace,
    bag_from_dict,
    item_of,
    optional_product_id,
    position_of,
    product_id_of,
    product_ids_of,
)
from livecommerce.bag_redis import RedisBags
from livecommerce.bag_sync import MakeOp, RoomLists
from livecommerce.catalog import Product
from livecommerce.catalog_redis import RedisCatalog
from livecommerce.errors import Conflict, Forbidden, NotFound, Unavailable
from livecommerce.protocol.commands import HostAction
from livecommerce.protocol.events import reply

from .conn import Conn
from .core import Gateway
from .idempotency import header_key, idempotent
from .openapi import H_IDEM, ID, INT, P_ROOM, STR, J, arr, nullable, obj, op, ref
from .validation import read_object

if TYPE_CHECKING:
    from .hub import Room

log = logging.getLogger("livecommerce.gateway.bag")

MAX_AGE_S = 30.0  # a copy older than this is read again in the background (on_second)
REFRESH_PER_S = 20  # at most this many background reads a second
#: ``room`` -> the room's host (``RoomGate.host``)
HostOf = Callable[[str], Awaitable[str]]


@dataclass(slots=True)
class _Held:
    room: Room  # the hub's Room object the copy belongs to (a new one: read again)
    bag: Bag
    wire: dict[str, Any]  # the welcome field, built once per version
    at: float  # when the copy was last read or confirmed (monotonic)


class RoomBags:
    """The rooms' product lists: host changes (HTTP), ``bag.changed``, node-local copies for
    ``welcome`` (module docstring)."""

    def __init__(self, gw: Gateway, bags: RedisBags, products: RedisCatalog, host_of: HostOf) -> None:
        self.gw = gw
        self.bags = bags
        self.products = products
        self.host_of = host_of
        self.lists = RoomLists(bags, products, self._publish, stored=self._mine)
        self.max_age_s = MAX_AGE_S
        self._held: dict[str, _Held] = {}
        self._loads: dict[str, asyncio.Future[Bag]] = {}
        self.loads = 0  # Redis reads made for welcomes (tests and metrics read it)

    # ------------------------------------------------------------------ the node's copies
    def _hold(self, room_id: str, room: Room, bag: Bag) -> None:
        held = self._held.get(room_id)
        if held is not None and held.room is room and held.bag.v >= bag.v:
            return  # what we hold is as new (an event overtook the read)
        self._held[room_id] = _Held(room, bag, bag.to_dict(), time.monotonic())
        if len(self._held) > 2 * len(self.gw.hub.rooms) + 64:  # rooms the node stopped serving
            rooms = self.gw.hub.rooms
            self._held = {r: h for r, h in self._held.items() if rooms.get(r) is h.room}

    def _mine(self, room_id: str, bag: Bag) -> None:
        """A change made through this node: its joiners see it at once (read-your-writes),
        whatever the pub/sub delay of its own event."""
        room = self.gw.hub.rooms.get(room_id)
        if room is not None:
            self._hold(room_id, room, bag)

    async def on_second(self) -> None:
        """Once a second: read again, in the background of joins, the copies older than
        :data:`MAX_AGE_S` (at most :data:`REFRESH_PER_S` rooms a second). A change whose
        broadcast was lost (its process died between the write and the publish) reaches this
        node's joiners within that age."""
        now = time.monotonic()
        rooms = self.gw.hub.rooms
        old = [r for r, h in self._held.items() if now - h.at > self.max_age_s and rooms.get(r) is h.room]
        for room_id in sorted(old, key=lambda r: self._held[r].at)[:REFRESH_PER_S]:
            room = rooms.get(room_id)
            try:
                bag = await self.bags.get(room_id)
            except Unavailable:  # Redis away: try again next second (the other second tasks still run)
                return
            held = self._held.get(room_id)
            if room is not None and held is not None and held.room is room:
                if bag.v > held.bag.v:
                    self._held[room_id] = _Held(room, bag, bag.to_dict(), time.monotonic())
                else:
                    held.at = time.monotonic()

    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer of ``bag.changed``: the event holds the whole list."""
        room_id = env.get("room")
        room = self.gw.hub.rooms.get(room_id) if isinstance(room_id, str) else None
        if room is None or room_id is None:
            return
        try:
            bag = bag_from_dict(env["d"])
        except (ValueError, KeyError, TypeError):
            log.warning("bag.bad_event", extra={"room": room_id})
            self._held.pop(room_id, None)
            return
        self._hold(room_id, room, bag)

    def on_resubscribed(self, channels: set[str]) -> None:
        """The broker subscribed ``channels`` again: events may have been lost meanwhile."""
        for room_id in list(self._held):
            if self.gw.keys.room_channel(room_id) in channels:
                del self._held[room_id]

    async def current(self, room_id: str) -> Bag:
        """The room's list: this node's copy when it serves the room, else from Redis (and
        held from then on while it serves it). Concurrent first readers share one read."""
        room = self.gw.hub.rooms.get(room_id)
        held = self._held.get(room_id)
        if room is not None and held is not None and held.room is room:
            return held.bag
        if room is None:
            return await self.bags.get(room_id)
        pending = self._loads.get(room_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Bag] = asyncio.get_running_loop().create_future()
        self._loads[room_id] = fut
        try:
            self.loads += 1
            bag = await self.bags.get(room_id)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            self._loads.pop(room_id, None)
        if self.gw.hub.rooms.get(room_id) is room:
            self._hold(room_id, room, bag)
        held = self._held.get(room_id)
        bag = held.bag if held is not None and held.room is room and held.bag.v > bag.v else bag
        fut.set_result(bag)
        return bag

    async def welcome(self, room_id: str, ident: Identity) -> dict[str, Any]:
        """Welcome hook: ``bag`` from the node's copy (no Redis command once held)."""
        room = self.gw.hub.rooms.get(room_id)
        held = self._held.get(room_id)
        if room is not None and held is not None and held.room is room:
            return {"bag": held.wire}
        bag = await self.current(room_id)
        held = self._held.get(room_id)
        return {"bag": held.wire if held is not None and held.bag is bag else bag.to_dict()}

    # ------------------------------------------------------------------ changes
    async def change(self, room_id: str, make: MakeOp, by: str) -> tuple[Bag, bool]:
        """A host's change (:meth:`RoomLists.change`: stored, then ``bag.changed``)."""
        return await self.lists.change(room_id, make, by)

    async def product_changed(self, product: Product) -> None:
        """Catalogue hook: the product's summary in every list that shows it."""
        await self.lists.product_changed(product)

    async def _publish(self, room_id: str, bag: Bag, by: str) -> None:
        await self.gw.publish(room_id, "bag.changed", {**bag.to_dict(), "by": by})

    async def _listable(self, room_id: str, product_id: str, ident: Identity) -> BagItem:
        """The product's summary, if ``ident`` may show it in the room.

        Raises:
            NotFound: no such product. Conflict: (``archived``) it is archived.
            Forbidden: a host's list shows its own products, the room host's and platform ones.
        """
        product = await self.products.product(product_id)
        if product is None:
            raise NotFound(f"no product {product_id!r}: create it with POST /api/v1/products")
        if product.state == "archived":
            raise Conflict(f"product {product_id!r} is archived: restore it first (PATCH state active)", code="archived")
        if not ident.is_ops and product.owner not in ("", ident.user, await self.host_of(room_id)):
            raise Forbidden(f"product {product_id!r} belongs to host {product.owner!r}: a room lists its host's own "
                            "products and platform products")
        return item_of(product)

    # ------------------------------------------------------------------ HTTP and WebSocket
    def _answer(self, room_id: str, bag: Bag, changed: bool) -> web.Response:
        return web.json_response({"room": room_id, **bag.to_dict(), "changed": changed})

    async def _host_write(self, request: web.Request, body: Any, make: Callable[[Identity], MakeOp],
                          target: str = "") -> web.Response:
        ident = self.gw.identify_request(request)
        room_id = request.match_info["room"]
        ident.require_host(room_id)

        async def run() -> web.Response:
            bag, changed = await self.change(room_id, make(ident), ident.user)
            return self._answer(room_id, bag, changed)

        return await idempotent(self.gw, request, ident, key=header_key(request), target=f"{room_id}{target}", body=body,
                                run=run)

    async def http_get(self, request: web.Request) -> web.Response:
        room_id = request.match_info["room"]
        bag = await self.current(room_id)
        return web.json_response({"room": room_id, **bag.to_dict()})

    # ---- the ops, from an HTTP body or a host command's data (the same checks for both)
    def _set_op(self, room_id: str, ident: Identity, d: Mapping[str, Any]) -> MakeOp:
        ids = product_ids_of(d.get("product_ids"))
        explaining = optional_product_id(d, "explaining") if "explaining" in d else None

        async def build(bag: Bag) -> Op:
            have = {i.product_id: i for i in bag.items}
            items = [have[p] if p in have else await self._listable(room_id, p, ident) for p in ids]
            return Replace(tuple(items), explaining)
        return build

    def _add_op(self, room_id: str, ident: Identity, d: Mapping[str, Any]) -> MakeOp:
        pid = product_id_of(d.get("product_id"))
        position = position_of(d)

        async def build(bag: Bag) -> Op:
            if pid in bag.ids:
                return Add(next(i for i in bag.items if i.product_id == pid), position)
            return Add(await self._listable(room_id, pid, ident), position)
        return build

    @staticmethod
    def _remove_op(pid: str) -> MakeOp:
        async def build(bag: Bag) -> Op:
            return Remove(pid)
        return build

    @staticmethod
    def _order_op(d: Mapping[str, Any]) -> MakeOp:
        ids = product_ids_of(d.get("product_ids"))

        async def build(bag: Bag) -> Op:
            return Reorder(ids)
        return build

    @staticmethod
    def _explain_op(d: Mapping[str, Any]) -> MakeOp:
        pid = optional_product_id(d)

        async def build(bag: Bag) -> Op:
            return Explain(pid)
        return build

    # ---- HTTP (gateway.routes)
    async def http_put(self, request: web.Request) -> web.Response:
        body = await read_object(request, required=True)
        room_id = request.match_info["room"]
        return await self._host_write(request, body, lambda ident: self._set_op(room_id, ident, body))

    async def http_add(self, request: web.Request) -> web.Response:
        body = await read_object(request, required=True)
        room_id = request.match_info["room"]
        return await self._host_write(request, body, lambda ident: self._add_op(room_id, ident, body))

    async def http_remove(self, request: web.Request) -> web.Response:
        pid = product_id_of(request.match_info["product"], "product")
        return await self._host_write(request, None, lambda ident: self._remove_op(pid), target=f"/{pid}")

    async def http_order(self, request: web.Request) -> web.Response:
        body = await read_object(request, required=True)
        return await self._host_write(request, body, lambda ident: self._order_op(body))

    async def http_explain(self, request: web.Request) -> web.Response:
        body = await read_object(request, required=True)
        return await self._host_write(request, body, lambda ident: self._explain_op(body))

    # ---- WebSocket host commands (gateway.routes; dispatch already refused viewers: ROLES)
    async def _ws(self, conn: Conn, cmd: HostAction, make: MakeOp) -> dict[str, Any]:
        conn.ident.require_host(conn.room)
        bag, changed = await self.change(conn.room, make, conn.ident.user)
        return reply("ack", cmd.id, {"room": conn.room, **bag.to_dict(), "changed": changed}, ts=self.gw.now_ms())

    async def ws_set(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        """``bag.set {product_ids, explaining?}``."""
        return await self._ws(conn, cmd, self._set_op(conn.room, conn.ident, cmd.d))

    async def ws_add(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        """``bag.add {product_id, position?}``."""
        return await self._ws(conn, cmd, self._add_op(conn.room, conn.ident, cmd.d))

    async def ws_remove(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        """``bag.remove {product_id}``."""
        return await self._ws(conn, cmd, self._remove_op(product_id_of(cmd.d.get("product_id"))))

    async def ws_order(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        """``bag.order {product_ids}``."""
        return await self._ws(conn, cmd, self._order_op(cmd.d))

    async def ws_explain(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        """``bag.explain {product_id | null}``."""
        return await self._ws(conn, cmd, self._explain_op(cmd.d))


# ------------------------------------------------------------------------------ OpenAPI

BAG_ITEM: J = obj({"product_id": ID, "name": STR, "image": STR, "price_min": INT, "price_max": INT, "skus": INT},
                  ["product_id", "name", "image", "price_min", "price_max", "skus"])
IDS: J = {**arr(ID), "maxItems": 100}
OPENAPI_SCHEMAS: dict[str, J] = {
    "Bag": obj({"room": ID, "items": arr(ref("BagItem")), "explaining": nullable(ID), "v": INT,
                "changed": {"type": "boolean", "description": "whether this request changed the list"}},
               ["room", "items", "explaining", "v"],
               desc="A room's product list: items in order, the product being explained now (讲解中) or null, and the "
                    "version (`bag.changed` carries the same with a higher `v` after each change)."),
    "BagItem": BAG_ITEM,
}
P_PRODUCT_IN_BAG = {"name": "product", "in": "path", "required": True, "schema": ID}
HOST_W = "the room's host (token role `host` listing the room) or ops"
_E = (403, 404, 409, 422)
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/rooms/{room}/bag": {
        "get": op("The room's product list (小黄车)", tag="bag", auth=None, params=[P_ROOM],
                  ok=("200", ref("Bag"), "the list (empty, v 0, when the room has none)")),
        "put": op("Set the whole list (and the item being explained)", tag="bag", auth=HOST_W, params=[P_ROOM, H_IDEM],
                  body=obj({"product_ids": IDS, "explaining": nullable(ID)}, ["product_ids"], extra=False),
                  ok=("200", ref("Bag"), "the list (`bag.changed` to viewers)"), errors=_E),
    },
    "/api/v1/rooms/{room}/bag/items": {
        "post": op("Add a product to the list", tag="bag", auth=HOST_W, params=[P_ROOM, H_IDEM],
                   body=obj({"product_id": ID, "position": {"type": "integer", "minimum": 0, "maximum": 100,
                                                           "description": "0 is the top; default the end"}},
                            ["product_id"], extra=False),
                   ok=("200", ref("Bag"), "the list (already listed: unchanged)"), errors=_E,
                   desc="409 `bag_full` (100 products), `archived`. 403: another host's product."),
    },
    "/api/v1/rooms/{room}/bag/items/{product}": {
        "delete": op("Take a product off the list", tag="bag", auth=HOST_W, params=[P_ROOM, P_PRODUCT_IN_BAG, H_IDEM],
                     ok=("200", ref("Bag"), "the list (not listed: unchanged)"), errors=(403, 422)),
    },
    "/api/v1/rooms/{room}/bag/order": {
        "put": op("Reorder the list", tag="bag", auth=HOST_W, params=[P_ROOM, H_IDEM],
                  body=obj({"product_ids": IDS}, ["product_ids"], extra=False), ok=("200", ref("Bag"), "the list"), errors=_E,
                  desc="409 `bag_changed`: the ids are not exactly the listed products (the message lists them)."),
    },
    "/api/v1/rooms/{room}/bag/explaining": {
        "put": op("Mark the product being explained now (讲解中), or none", tag="bag", auth=HOST_W, params=[P_ROOM, H_IDEM],
                  body=obj({"product_id": nullable(ID)}, ["product_id"], extra=False), ok=("200", ref("Bag"), "the list"),
                  errors=_E, desc="409 `not_listed`: add the product first."),
    },
}
