"""The show report at the edge: counting a show's viewers and followers, and the report.

The figures and their sources are :mod:`livecommerce.showreport` (docs/earnings.md).

* A ``welcome`` hook notes each viewer who joins a room; a hub observer of ``room.live``
  notes the viewers present on this node when a show starts. Once a second the node adds
  what it noted to the show's distinct-viewer counter (one pipeline, nothing per join).
* A ``live`` hook records the host's follower count when a show goes live, an ``ended``
  hook when it ends (each once per show, whichever node asks first), after writing this
  node's last viewers; then it logs ``room.report`` with the report as of the end.
* ``GET /api/v1/rooms/{room}/report`` (the room's host or ops): the report of the room's
  current or last show, recomputed at each request from Redis (the room's meta, its
  viewers) and SQL (orders, the earnings ledger), so every node answers the same. 404 for a
  room never created, 409 ``not_live_yet`` before its first show.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from aiohttp import web

from livecommerce import showreport_sql
from livecommerce.auth import Identity
from livecommerce.errors import LiveCommerceError, NotFound
from livecommerce.showreport import report, show_window
from livecommerce.showreport_redis import ShowReportRedis
from livecommerce.store_sql import SqlStore

from .core import Gateway
from .openapi import HOST, INT, MS, NUM, P_ROOM, STR, J, arr, nullable, obj, op, ref

log = logging.getLogger("livecommerce.gateway.showreport")


class ShowReports:
    """Viewer and follower counting for the report, and the report route (module docstring)."""

    def __init__(self, gw: Gateway, counters: ShowReportRedis, store: SqlStore) -> None:
        self.gw = gw
        self.counters = counters
        self.store = store
        self.joins: dict[str, set[str]] = defaultdict(set)

    # ---- hooks (gateway.wiring)
    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        """Welcome hook: note the viewer (adds nothing to the frame)."""
        if ident.role == "viewer":
            self.joins[room].add(ident.user)
        return {}

    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer of ``room.live``: the viewers already here when a show starts."""
        room = str(env.get("room") or "")
        r = self.gw.hub.rooms.get(room) if room else None
        if r is not None:
            self.joins[room] |= {c.user for c in r.all() if c.ident.role == "viewer" and not c.closed}

    async def flush(self, only: str | None = None) -> None:
        """Add the noted viewers to their shows' counters (kept for the next try on failure)."""
        if only is not None:
            taken = {only: self.joins.pop(only)} if only in self.joins else {}
        else:
            taken, self.joins = dict(self.joins), defaultdict(set)
        if not taken:
            return
        try:
            await self.counters.add_viewers(taken)
        except LiveCommerceError as exc:
            for room, users in taken.items():
                self.joins[room] |= users
            log.warning("showreport.flush_failed", extra={"rooms": len(taken), "err": exc.message})

    async def on_second(self) -> None:
        if self.joins:
            await self.flush()

    async def on_live(self, room: str, pub: dict[str, Any]) -> None:
        """``live`` hook: the host's follower count at the start of the show."""
        await self._mark(room, pub, "followers_base")

    async def on_ended(self, room: str, pub: dict[str, Any]) -> None:
        """``ended`` hook: this node's last viewers, the follower count at the end, and the
        report as of now in the log."""
        await self.flush(only=room)
        await self._mark(room, pub, "followers_end")
        try:
            rep = await self.build(room)
        except LiveCommerceError as exc:
            log.warning("showreport.report_failed", extra={"room": room, "err": exc.message})
            return
        log.info("room.report", extra={"room": room, **{k: v for k, v in rep.items() if not isinstance(v, list | dict)}})

    async def _mark(self, room: str, pub: dict[str, Any], field: str) -> None:
        host, live_ms = str(pub.get("host") or ""), int(pub.get("live_ms") or 0)
        if not host or not live_ms:
            return
        try:
            await self.counters.mark_followers(room, live_ms, field, await self.counters.followers(host))
        except LiveCommerceError as exc:  # the report then counts from the current figure
            log.warning("showreport.followers_failed", extra={"room": room, "err": exc.message})

    # ---- the report
    async def build(self, room: str) -> dict[str, Any]:
        """The report of the room's current or last show.

        Raises:
            NotFound: no such room. Conflict: (``not_live_yet``) no show yet.
            Unavailable: Redis or SQL unreachable.
        """
        meta, viewers = await self.counters.read(room)
        if meta is None:
            raise NotFound(f"no room {room!r}")
        now = self.gw.now_ms()
        live, end, ended = show_window(meta, now_ms=now)
        base = meta.get("followers_base")
        if base is None:
            new_followers = 0
        else:
            last = meta.get("followers_end")
            end_count = int(last) if ended and last is not None else await self.counters.followers(meta.get("host", ""))
            new_followers = max(0, end_count - int(base))
        orders, products = await showreport_sql.show_orders(self.store, room, live, end)
        gifts = await showreport_sql.show_gifts(self.store, room, live, end)
        return report(room, meta, now_ms=now, viewers=viewers, new_followers=new_followers, orders=orders, products=products,
                      gifts=gifts, currency=self.gw.s.payment_currency)

    async def http_report(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = request.match_info["room"]
        ident.require_host(room)
        return web.json_response(await self.build(room))


_LINE: J = obj({"product_id": STR, "name": STR, "units": INT, "gmv": INT, "gmv_text": STR}, ["product_id", "units", "gmv"])
OPENAPI_SCHEMAS: dict[str, J] = {
    "ShowReport": obj({
        "room": STR, "title": STR, "host": STR, "state": STR, "ended": {"type": "boolean"}, "live_ms": MS, "ended_ms": nullable(MS),
        "as_of_ms": MS, "duration_s": NUM, "duration_text": {**STR, "description": "e.g. `42 min`"},
        "peak_online": INT, "avg_online": NUM, "viewers": {**INT, "description": "distinct viewers who joined the show"},
        "new_followers": {**INT, "description": "the host's followers at the end minus at the start (net)"},
        "comments": INT, "likes": INT,
        "gifts": obj({"count": INT, "value": INT, "reversed_value": INT, "unit": {"const": "coins"},
                      "top_gifters": arr(obj({"user": STR, "value": INT}, ["user", "value"]))}, ["count", "value", "top_gifters"]),
        "orders": {**INT, "description": "paid orders placed during the show"}, "buyers": INT, "currency": STR,
        "paid_amount": {**INT, "description": "cents"}, "refunded_amount": {**INT, "description": "cents"},
        "gmv": {**INT, "description": "cents: paid minus refunded"}, "gmv_text": {**STR, "description": "e.g. `¥1,234.50`"},
        "refund_rate": {**NUM, "description": "refunded amount / paid amount"},
        "conversion": {**NUM, "description": "distinct buyers / distinct viewers"},
        "top_products": arr(_LINE),
    }, ["room", "live_ms", "duration_s", "peak_online", "avg_online", "viewers", "new_followers", "comments", "likes", "gifts",
        "orders", "gmv", "refund_rate", "conversion", "top_products"], desc="what one show did (docs/earnings.md)"),
}
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/rooms/{room}/report": {"get": op(
        "The show report: duration, online, viewers, followers, comments, likes, gifts, orders, GMV, refunds, conversion",
        tag="rooms", auth=HOST, params=[P_ROOM], ok=("200", ref("ShowReport"), "the report of the current or last show"),
        errors=(404, 409),
        desc="Recomputed at each request from shared stores (any node answers the same). Orders paid after the show and "
             "gifts the workers have not applied yet join it within seconds. 409 `not_live_yet`: no show yet.")},
}
