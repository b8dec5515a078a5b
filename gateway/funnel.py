"""Campaign effect: every flash sale's and coupon drop's funnel, counted at the edge.

What each step means is :mod:`livecommerce.funnel`. :class:`Funnel` counts the first three
steps on every gateway, in memory, and adds them to Redis once a second
(:class:`~livecommerce.funnel_redis.FunnelRedis`); ``gateway.wiring`` registers its hooks:

* **viewers / saw**: a hub observer (:meth:`Funnel.observe`) sees ``sale.started``,
  ``sale.ended``, ``coupon.dropped`` and ``product.pinned`` as they reach the node's rooms
  and takes the room's local viewers at that moment; a ``welcome`` hook notes each viewer
  who joins a room, and the flush counts them for the room's running campaigns (from the
  room's ``campaigns`` hash, which the observers keep: any node learns of a campaign from
  the broadcast) and, for a sale, as having seen it when its product is pinned.
* **tried**: the ``buy`` and ``coupon.claim`` handlers call the ``tried`` hooks
  (:meth:`Funnel.tried`), and a response hook (:meth:`Funnel.on_response`) counts the HTTP
  buy and claim routes, whatever the answer.

The other steps and the GMV come from SQL (orders, :mod:`livecommerce.funnel_sql`) and
Redis (coupon counts) when asked:

* ``GET /api/v1/sales/{sale}/funnel`` (ops, host of the room)
* ``GET /api/v1/coupons/{drop}/funnel`` (ops, host of the room; ops for a segment drop)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from aiohttp import web

from livecommerce import funnel_sql
from livecommerce.auth import Identity
from livecommerce.checkout import Checkout
from livecommerce.coupons_redis import CouponsRedis
from livecommerce.errors import LiveCommerceError, NotFound
from livecommerce.funnel import Kind, funnel
from livecommerce.funnel_redis import FunnelRedis
from livecommerce.store_sql import SqlStore

from .core import Gateway

log = logging.getLogger("livecommerce.gateway.funnel")

Step = tuple[Kind, str, str]
# the HTTP routes whose requests are tries, and the path parameter naming the campaign
TRIED_ROUTES: dict[str, tuple[Kind, str]] = {
    "/api/v1/sales/{sale}/buy": ("sale", "sale"),
    "/api/v1/coupons/{drop}/claim": ("coupon", "drop"),
}


class Funnel:
    """Counts viewers, who saw and who tried each campaign on this node; serves the
    funnel of a sale and of a coupon drop."""

    def __init__(self, gw: Gateway, counters: FunnelRedis, checkout: Checkout, store: SqlStore,
                 coupons: CouponsRedis) -> None:
        self.gw = gw
        self.counters = counters
        self.checkout = checkout
        self.store = store
        self.coupons = coupons
        self.adds: dict[Step, set[str]] = defaultdict(set)
        self.joins: dict[str, set[str]] = defaultdict(set)  # room -> viewers who joined
        self.pins: list[tuple[str, str, set[str]]] = []  # (room, product, viewers present)
        self.starts: list[tuple[str, Kind, str, str | None, int]] = []
        self.stops: list[tuple[str, Kind, str]] = []

    def _local_viewers(self, room: str) -> set[str]:
        r = self.gw.hub.rooms.get(room)
        return {c.user for c in r.all() if c.ident.role == "viewer" and not c.closed} if r is not None else set()

    # ---- hooks (gateway.wiring)
    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer."""
        t = env.get("t")
        if t not in ("sale.started", "sale.ended", "coupon.dropped", "product.pinned"):
            return
        room, d = str(env.get("room") or ""), env.get("d") or {}
        if not room:
            return
        if t == "sale.started" and isinstance(d.get("sale_id"), str):
            sid = d["sale_id"]
            self.starts.append((room, "sale", sid, d.get("product_id"), int(d.get("ends_ms") or 0) or 2**62))
            vs = self._local_viewers(room)
            self.adds["sale", sid, "viewers"] |= vs
            self.adds["sale", sid, "saw"] |= vs
        elif t == "sale.ended" and isinstance(d.get("sale_id"), str):
            self.stops.append((room, "sale", d["sale_id"]))
        elif t == "coupon.dropped" and isinstance(d.get("drop_id"), str):
            did = d["drop_id"]
            self.starts.append((room, "coupon", did, None, int(d.get("expires_ms") or 0)))
            vs = self._local_viewers(room)
            self.adds["coupon", did, "viewers"] |= vs
            self.adds["coupon", did, "saw"] |= vs
        elif t == "product.pinned" and isinstance(d.get("product_id"), str):
            self.pins.append((room, d["product_id"], self._local_viewers(room)))

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        """Welcome hook: note the viewer who joins (adds nothing to the frame)."""
        if ident.role == "viewer":
            self.joins[room].add(ident.user)
        return {}

    def tried(self, kind: Kind, cid: str, user: str) -> None:
        """Tried hook: ``user`` tried to take campaign ``cid``'s offer."""
        self.adds[kind, cid, "tried"].add(user)

    async def on_response(self, request: web.Request, response: web.StreamResponse) -> None:
        """Response hook: a POST to a buy or claim route is a try, whatever the answer
        (but a bad request or no identity is nobody's try)."""
        if request.method != "POST":
            return
        info = request.match_info
        canonical = info.route.resource.canonical if info.route.resource is not None else ""
        route = TRIED_ROUTES.get(canonical)
        if route is None or response.status in (401, 400):
            return
        try:
            user = self.gw.identify_request(request).user
        except LiveCommerceError:
            return
        kind, param = route
        self.tried(kind, info[param], user)

    async def flush(self) -> None:
        """Write what this node counted since the last flush (a failed write is retried)."""
        starts, stops, joins, pins = self.starts, self.stops, self.joins, self.pins
        self.starts, self.stops, self.joins, self.pins = [], [], defaultdict(set), []
        try:
            for room, kind, cid, product, until in starts:
                await self.counters.start(room, kind, cid, product_id=product, until_ms=until)
            for room, kind, cid in stops:
                await self.counters.stop(room, kind, cid)
            rooms = set(joins) | {p[0] for p in pins}
            if rooms:
                running = await self.counters.running(rooms, self.gw.now_ms())
                for room, (camps, pinned) in running.items():
                    for kind, cid, product in camps:
                        users = joins.get(room, set())
                        self.adds[kind, cid, "viewers"] |= users
                        if kind == "coupon" or (product is not None and product == pinned):
                            self.adds[kind, cid, "saw"] |= users
                        for proom, pid, present in pins:
                            if proom == room and kind == "sale" and pid == product:
                                self.adds[kind, cid, "saw"] |= present
            adds, self.adds = self.adds, defaultdict(set)
            try:
                await self.counters.add(adds)
            except LiveCommerceError:
                for k, v in adds.items():
                    self.adds[k] |= v
                raise
        except LiveCommerceError as exc:
            log.warning("funnel.flush_failed", extra={"err": exc.message})

    async def on_second(self) -> None:
        if self.adds or self.joins or self.pins or self.starts or self.stops:
            await self.flush()

    # ---- reports
    async def sale_report(self, sale_id: str) -> dict[str, Any]:
        sale = await self.checkout.sale(sale_id)
        people = await funnel_sql.sale_people(self.store, sale_id)
        sql = await self.store.sale_stats(sale_id)
        counts = {**await self.counters.counts("sale", sale_id), "reserved": people.reserved, "paid": people.paid,
                  "refunded": people.refunded}
        st = await self.checkout.sales.stats(sale_id)
        return funnel("sale", sale_id, sale.room, counts, gmv=sql.gmv, refunded_amount=sql.refunded, orders=sql.orders,
                      extra={"stock": st.initial, "remaining": st.remaining, "sold_units": sql.paid_units, "restocked": st.restocked,
                             "refunded_kept": st.refunded_kept})

    async def drop_report(self, drop_id: str, ident: Identity) -> dict[str, Any]:
        """Raises:
        NotFound: no such drop. Forbidden: not the room's host (ops for a segment drop).
        """
        got = await self.coupons.get_drop(drop_id)
        if got is None:
            raise NotFound(f"no coupon drop {drop_id!r}")
        drop, c = got
        if drop.room:
            ident.require_host(drop.room)
        else:
            ident.require_ops()
        paid = await funnel_sql.drop_orders(self.store, drop_id)
        counts = {**await self.counters.counts("coupon", drop_id), "reserved": c["claimed"], "paid": paid.paid,
                  "refunded": paid.refunded}
        extra = {"quantity": drop.quantity, "claimed": c["claimed"], "used": c["used"], "remaining": c["remaining"]}
        members = await self.coupons.members_count(drop_id)
        if members:
            extra["segment_members"] = members
        return funnel("coupon", drop_id, drop.room or None, counts, gmv=paid.gmv, refunded_amount=paid.refunded_amount,
                      orders={"paid": paid.orders}, extra=extra)

    # ---- HTTP (gateway.routes)
    async def sale_funnel(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        sale_id = request.match_info["sale"]
        s = await self.checkout.sale(sale_id)
        ident.require_host(s.room)
        await self.flush()
        return web.json_response(await self.sale_report(sale_id))

    async def drop_funnel(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        await self.flush()
        return web.json_response(await self.drop_report(request.match_info["drop"], ident))
