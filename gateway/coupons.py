"""Coupon drops and claims over WebSocket and HTTP; the coupon service orders use.

* ``coupon.drop {kind, threshold?, value, quantity, expires_in_s?|expires_ms?, drop_id?}``
  (host action, host of the room or ops) and ``POST /api/v1/rooms/{room}/coupons`` (same
  body): create a drop and broadcast ``coupon.dropped {drop_id, kind, threshold, value,
  quantity, remaining, expires_ms, by}``. Reply / 201: the drop.
* ``coupon.claim {drop_id}``: atomic claim; the reply is ``coupon.claimed`` (with the
  command's ``id``) ``{coupon_id, drop_id, kind, threshold, value, expires_ms, state,
  remaining}``; errors ``sold_out``, ``already_claimed``, ``expired``, ``not_found``.
  HTTP twin: ``POST /api/v1/coupons/{drop}/claim``.
* ``GET /api/v1/coupons/{drop}``: the drop and ``remaining / claimed / used`` (public).
* ``GET /api/v1/rooms/{room}/coupons``: the room's live drops (public); ``welcome`` carries
  them as ``coupons``.
* ``GET /api/v1/users/{user}/coupons``: the user's coupons (the user or ops).

Built by ``gateway.wiring`` with the drops adapter (a
:class:`~livecommerce.coupons_redis.CouponsRedis`, which implements
:class:`~livecommerce.coupons.CouponService`, ``lock_for_order`` / ``consume`` / ``restore``,
for order payment; wiring hands the same adapter to the modules that need it), the room
gate (drops and claims in a room whose show ended answer ``room_ended``) and the ``tried``
hooks (a WebSocket claim calls them first, whatever its answer: the funnel's "tried" step);
routes in ``gateway.routes``.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.coupons import CLAIM_MESSAGES, dropped_event, new_drop, public_drop
from livecommerce.coupons_redis import Claimed, CouponsRedis
from livecommerce.errors import Conflict, NotFound
from livecommerce.protocol.commands import CouponClaim, HostAction
from livecommerce.protocol.events import reply

from .conn import Conn
from .core import Gateway
from .hooks import TriedHook
from .idempotency import header_key, idempotent
from .rooms import RoomGate
from .snapshots import RoomSnapshots
from .validation import read_object


class Coupons:
    def __init__(self, gw: Gateway, store: CouponsRedis, gate: RoomGate, tried: list[TriedHook],
                 views: RoomSnapshots | None = None) -> None:
        self.gw = gw
        self.store = store
        self.gate = gate
        self.tried = tried  # gw.hooks.tried: the funnel counts every claim, whatever the answer
        self.views = views  # the node's room snapshots (welcome lists the room's drops)

    async def drop(self, room: str, body: dict[str, Any], ident: Identity) -> dict[str, Any]:
        """Create and broadcast a drop.

        Raises:
            Forbidden: not the room's host or ops. BadFrame: bad body. Conflict: the id exists.
        """
        ident.require_host(room)
        await self.gate.check(room)  # RoomEnded
        d = new_drop(body, room=room, by=ident.user, now_ms=self.gw.now_ms(), default_id=f"cd{secrets.token_hex(6)}")
        if not await self.store.create_drop(d):
            raise Conflict(f"coupon drop {d.id!r} already exists")
        ev = dropped_event(d, d.quantity)
        seq = await self.gw.publish(room, "coupon.dropped", ev)
        if self.views is not None:
            self.views.changed(room)
        return {**ev, "room": room, "seq": seq}

    async def claim(self, drop_id: str, user: str) -> dict[str, Any]:
        """Claim; the ``coupon.claimed`` data.

        Raises:
            NotFound / Conflict: with the claim's code (``not_found``, ``expired``,
            ``already_claimed``, ``sold_out``).
        """
        r = await self.store.claim(drop_id, user, now_ms=self.gw.now_ms())
        if not isinstance(r, Claimed):
            cls = NotFound if r == "not_found" else Conflict
            raise cls(CLAIM_MESSAGES[r], code=r)
        if self.views is not None:
            self.views.coupon_claimed(drop_id, r.remaining)  # claims are not broadcast
        return {**r.coupon, "remaining": r.remaining}

    async def state(self, drop_id: str) -> dict[str, Any]:
        got = await self.store.get_drop(drop_id)
        if got is None:
            raise NotFound(f"no coupon drop {drop_id!r}")
        drop, counts = got
        return {**public_drop(drop), **counts}

    async def room_drops(self, room: str, limit: int = 50) -> list[dict[str, Any]]:
        out = []
        for did in (await self.store.room_drops(room, now_ms=self.gw.now_ms()))[:limit]:
            got = await self.store.get_drop(did)
            if got is not None:
                out.append({**public_drop(got[0]), **got[1]})
        return out

    # ---- WebSocket (gateway.routes)
    async def ws_drop(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        return reply("ack", cmd.id, await self.drop(conn.room, cmd.d, conn.ident), ts=self.gw.now_ms())

    async def ws_claim(self, conn: Conn, cmd: CouponClaim) -> dict[str, Any]:
        for hook in self.tried:
            hook("coupon", cmd.drop_id, conn.user)
        await self.gate.check(conn.room)  # RoomEnded; a drop the end closed refuses in its script too
        return reply("coupon.claimed", cmd.id, await self.claim(cmd.drop_id, conn.user), ts=self.gw.now_ms())

    # ---- HTTP (gateway.routes)
    async def http_drop(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        return web.json_response(await self.drop(request.match_info["room"], await read_object(request), ident), status=201)

    async def http_claim(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        drop = request.match_info["drop"]

        async def run() -> web.Response:
            return web.json_response(await self.claim(drop, ident.user), status=201)

        return await idempotent(self.gw, request, ident, key=header_key(request), target=drop, body=None, run=run)

    async def http_state(self, request: web.Request) -> web.Response:
        return web.json_response(await self.state(request.match_info["drop"]))

    async def http_room(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        return web.json_response({"room": room, "drops": await self.room_drops(room)})

    async def http_user(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        user = request.match_info["user"]
        ident.require_self_or_ops(user)
        return web.json_response({"user": user, "coupons": await self.store.user_coupons(user, now_ms=self.gw.now_ms())})
