"""Campaign effect: every flash sale's and coupon drop's funnel, counted at the edge.

What each step means is :mod:`livecommerce.funnel`. This module counts the first three
steps on every gateway, in memory, and adds them to Redis once a second
(:class:`~livecommerce.funnel_redis.FunnelRedis`):

* **viewers / saw**: a hub observer sees ``sale.started``, ``sale.ended``,
  ``coupon.dropped`` and ``product.pinned`` as they reach the node's rooms and takes the
  room's local viewers at that moment; a ``welcome`` extra notes each viewer who joins a
  room, and the flush counts them for the room's running campaigns (from the room's
  ``campaigns`` hash, which the observers keep: any node learns of a campaign from the
  broadcast) and, for a sale, as having seen it when its product is pinned.
* **tried**: the ``buy`` and ``coupon.claim`` commands are wrapped, and the HTTP buy and
  claim routes observed (``on_response_prepare``), whatever the answer.

The other steps and the GMV come from SQL (orders) and Redis (coupon counts) when asked:

* ``GET /api/v1/sales/{sale}/funnel`` (ops, host of the room)
* ``GET /api/v1/coupons/{drop}/funnel`` (ops, host of the room; ops for a segment drop)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from livecommerce import store_sql
from livecommerce.checkout import Checkout
from livecommerce.errors import LiveCommerceError, NotFound
from livecommerce.funnel import funnel
from livecommerce.funnel_redis import FunnelRedis, Kind

from .conn import Conn
from .core import CommandHandler, Gateway
from .wallet import sql_store

log = logging.getLogger("livecommerce.gateway.funnel")

SOLD = ("paid", "refund_requested", "refunded")
Step = tuple[Kind, str, str]


class FunnelTracker:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.store = FunnelRedis(gw.redis, gw.keys)
        self.adds: dict[Step, set[str]] = defaultdict(set)
        self.joins: dict[str, set[str]] = defaultdict(set)  # room -> viewers who joined
        self.pins: list[tuple[str, str, set[str]]] = []  # (room, product, viewers present)
        self.starts: list[tuple[str, Kind, str, str | None, int]] = []
        self.stops: list[tuple[str, Kind, str]] = []

    def _local_viewers(self, room: str) -> set[str]:
        r = self.gw.hub.rooms.get(room)
        return {c.user for c in r.all() if c.ident.role == "viewer" and not c.closed} if r is not None else set()

    def observe(self, env: dict[str, Any]) -> None:
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

    async def on_welcome(self, room: str, ident: Any) -> dict[str, Any]:
        if ident.role == "viewer":
            self.joins[room].add(ident.user)
        return {}

    def tried(self, kind: Kind, cid: str, user: str) -> None:
        self.adds[kind, cid, "tried"].add(user)

    async def flush(self) -> None:
        """Write what this node counted since the last flush (a failed write is retried)."""
        starts, stops, joins, pins = self.starts, self.stops, self.joins, self.pins
        self.starts, self.stops, self.joins, self.pins = [], [], defaultdict(set), []
        try:
            for room, kind, cid, product, until in starts:
                await self.store.start(room, kind, cid, product_id=product, until_ms=until)
            for room, kind, cid in stops:
                await self.store.stop(room, kind, cid)
            rooms = set(joins) | {p[0] for p in pins}
            if rooms:
                running = await self.store.running(rooms, self.gw.now_ms())
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
                await self.store.add(adds)
            except LiveCommerceError:
                for k, v in adds.items():
                    self.adds[k] |= v
                raise
        except LiveCommerceError as exc:
            log.warning("funnel.flush_failed", extra={"err": exc.message})

    async def on_second(self) -> None:
        if self.adds or self.joins or self.pins or self.starts or self.stops:
            await self.flush()


def wrap(handler: CommandHandler, kind: Kind, field: str, tracker: FunnelTracker) -> CommandHandler:
    async def counted(gw: Gateway, conn: Conn, cmd: Any) -> dict[str, Any] | None:
        cid = getattr(cmd, field, None)
        if isinstance(cid, str):
            tracker.tried(kind, cid, conn.user)
        return await handler(gw, conn, cmd)

    return counted


async def sale_funnel(gw: Gateway, tracker: FunnelTracker, sale_id: str) -> dict[str, Any]:
    checkout: Checkout = gw.services["checkout"]
    sale = await checkout.sale(sale_id)
    o = store_sql.orders
    q = select(
        func.count(func.distinct(o.c.user_id)),
        func.count(func.distinct(o.c.user_id)).filter(o.c.state.in_(SOLD)),
        func.count(func.distinct(o.c.user_id)).filter(o.c.refunded_qty > 0),
    ).where(o.c.sale_id == sale_id)
    async with sql_store(gw).read() as tx:
        reserved, paid, refunded = (await tx.conn.execute(q)).one()
    sql = await sql_store(gw).sale_stats(sale_id)
    counts = {**await tracker.store.counts("sale", sale_id), "reserved": reserved, "paid": paid, "refunded": refunded}
    st = await checkout.sales.stats(sale_id)
    return funnel("sale", sale_id, sale.room, counts, gmv=sql.gmv, refunded_amount=sql.refunded, orders=sql.orders,
                  extra={"stock": st.initial, "remaining": st.remaining, "sold_units": sql.paid_units, "restocked": st.restocked,
                         "refunded_kept": st.refunded_kept})


async def drop_funnel(gw: Gateway, tracker: FunnelTracker, drop_id: str, ident: Any) -> dict[str, Any]:
    coupons = gw.services["coupons"]
    got = await coupons.get_drop(drop_id)
    if got is None:
        raise NotFound(f"no coupon drop {drop_id!r}")
    drop, c = got
    if drop.room:
        ident.require_host(drop.room)
    else:
        ident.require_ops()
    o = store_sql.orders
    mine = o.c.coupon_id.like(f"{drop_id}:%")
    q = select(
        func.count(func.distinct(o.c.user_id)).filter(o.c.state.in_(SOLD)),
        func.count(func.distinct(o.c.user_id)).filter(o.c.refunded_qty > 0),
        func.coalesce(func.sum(o.c.amount - o.c.refunded_amount).filter(o.c.state.in_(SOLD)), 0),
        func.coalesce(func.sum(o.c.refunded_amount), 0),
        func.count().filter(o.c.state.in_(SOLD)),
    ).where(mine)
    async with sql_store(gw).read() as tx:
        paid, refunded, gmv, back, orders = (await tx.conn.execute(q)).one()
    counts = {**await tracker.store.counts("coupon", drop_id), "reserved": c["claimed"], "paid": paid, "refunded": refunded}
    extra = {"quantity": drop.quantity, "claimed": c["claimed"], "used": c["used"], "remaining": c["remaining"]}
    members = await coupons.members_count(drop_id)
    if members:
        extra["segment_members"] = members
    return funnel("coupon", drop_id, drop.room or None, counts, gmv=int(gmv), refunded_amount=int(back), orders={"paid": int(orders)}, extra=extra)


def setup(gw: Gateway, app: web.Application) -> None:
    tracker = FunnelTracker(gw)
    gw.services["funnel"] = tracker
    gw.hub.observers.append(tracker.observe)
    gw.welcome_extras.append(tracker.on_welcome)
    gw.hub.on_second.append(tracker.on_second)
    gw.services.setdefault("shutdown", []).insert(0, tracker.flush)
    if "buy" in gw.commands:
        gw.commands["buy"] = wrap(gw.commands["buy"], "sale", "sale_id", tracker)
    if "coupon.claim" in gw.commands:
        gw.commands["coupon.claim"] = wrap(gw.commands["coupon.claim"], "coupon", "drop_id", tracker)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if request.method != "POST":
            return
        info = request.match_info
        canonical = info.route.resource.canonical if info.route.resource is not None else ""
        kind: Kind | None = {"/api/v1/sales/{sale}/buy": "sale", "/api/v1/coupons/{drop}/claim": "coupon"}.get(canonical)  # type: ignore[assignment]
        if kind is None or response.status in (401, 400):
            return
        try:
            user = gw.identify_request(request).user
        except LiveCommerceError:
            return
        tracker.tried(kind, info["sale"] if kind == "sale" else info["drop"], user)

    app.on_response_prepare.append(on_prepare)

    async def sale(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        sale_id = request.match_info["sale"]
        s = await gw.services["checkout"].sale(sale_id)
        ident.require_host(s.room)
        await tracker.flush()
        return web.json_response(await sale_funnel(gw, tracker, sale_id))

    async def drop(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        await tracker.flush()
        return web.json_response(await drop_funnel(gw, tracker, request.match_info["drop"], ident))

    app.router.add_get("/api/v1/sales/{sale}/funnel", sale)
    app.router.add_get("/api/v1/coupons/{drop}/funnel", drop)
