"""Lotteries at the edge: start (host), enter (viewers), and the public record.

* ``POST /api/v1/rooms/{room}/lotteries`` (host of the room or ops) and the WebSocket host
  action ``lottery.start``: body ``{prize, winners, duration_s, rule, keyword? |
  min_gift_value?, title?}`` (see :func:`livecommerce.lottery.new_lottery`). A ``coins``
  prize only from ops (403 otherwise: the platform pays it); a ``coupon`` prize names one of
  the room's drops (404 otherwise), whose terms are copied into the prize. The draw worker
  pays coin and coupon prizes (``workers.lottery.PrizeAwarder``).
  A secret seed is drawn here; ``lottery.started`` carries only its sha256 (``seed_hash``).
* ``lottery.enter {lottery_id}``: explicit entry (``enter`` lotteries; ``gift`` lotteries
  once the user's gifts reached the minimum). Reply ``ack`` with ``d.entered``; errors
  ``not_found``, ``closed``, ``rule_not_met``, ``host_may_not_enter``.
* Keyword entry: a comment hook (:meth:`LotteryService.on_comment`) enters the commenter into each open keyword
  lottery of the room whose keyword the comment contains; the commenter gets a private
  ``lottery.entered {id, position}``.
* Gift entry: a gift hook (:meth:`LotteryService.on_gift`, ``async (room, user, value)``);
  the gift code calls it after a successful gift with its value (same unit as
  ``min_gift_value``); the user enters once their gifts in the lottery reach the minimum.
* ``GET /api/v1/lotteries/{id}`` (public): before the draw the definition, ``seed_hash``,
  state and entrant count; after it the full record that ``livecommerce lottery verify``
  checks. ``GET /api/v1/rooms/{room}/lotteries``: the room's open lotteries.
* ``welcome`` carries ``lotteries``: the room's open lotteries, for late joiners (from the
  node's room snapshot, ``gateway.snapshots``; a lottery started here marks it changed).

Built by ``gateway.wiring`` with the lotteries adapter and the room gate (starts and
entries in a room whose show ended answer ``room_ended``); routes in ``gateway.routes``.
The draw itself is the worker's (``workers/lottery.py``). Each node caches a room's open
lotteries to keep comment handling cheap: the cache of a room is dropped when this node
receives the room's ``lottery.started`` or ``lottery.ended`` (a hub observer), and expires
after :data:`CACHE_S` in case such an event was lost (pub/sub is at most once).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.coupons_redis import CouponsRedis
from livecommerce.errors import Conflict, Forbidden, NotFound
from livecommerce.lottery import (
    EnterResult,
    EntryReject,
    Lottery,
    coupon_terms,
    entry_reject,
    new_lottery,
    new_seed,
)
from livecommerce.lottery_redis import RedisLotteries
from livecommerce.protocol.commands import HostAction, LotteryEnter
from livecommerce.protocol.events import envelope, reply

from .conn import Conn
from .core import Gateway
from .idempotency import header_key, idempotent
from .rooms import RoomGate
from .snapshots import RoomSnapshots, ServedRooms
from .validation import read_object

log = logging.getLogger("livecommerce.gateway.lottery")

CACHE_S = 5.0

_MESSAGES: dict[str, str] = {
    "not_found": "no such lottery in this room",
    "closed": "the lottery is closed",
    "room_ended": "the show this lottery belongs to has ended",
    "rule_not_met": "the entry rule of this lottery is not met",
    "host_may_not_enter": "the room's host cannot enter its own lottery",
}


def _reject(code: EntryReject | EnterResult, lot: Lottery | None = None) -> Exception:
    msg = _MESSAGES.get(code, code)
    if code == "rule_not_met" and lot is not None:
        if lot.rule == "keyword":
            msg = f"comment the keyword {lot.keyword!r} to enter"
        elif lot.rule == "gift":
            msg = f"send gifts worth at least {lot.min_gift_value} to enter"
    if code == "not_found":
        return NotFound(msg)
    return Conflict(msg, code=code)


class LotteryService:
    def __init__(self, gw: Gateway, store: RedisLotteries, gate: RoomGate, views: RoomSnapshots | None = None,
                 coupons: CouponsRedis | None = None) -> None:
        self.gw = gw
        self.store = store
        self.gate = gate
        self.coupons = coupons  # a coupon prize names one of the room's drops
        self.views = views  # the node's room snapshots (welcome lists the room's open lotteries)
        self._open: dict[str, tuple[float, list[Lottery]]] = {}
        #: this node's current room snapshots; ``served.quiet``: the rooms whose snapshot lists
        #: no lottery, where the comment hook is not called (a started lottery takes its room
        #: off at once: ``observe``)
        self.served = ServedRooms(lambda snap: bool(snap.lotteries))
        self.serving = self.served.serving  # the snapshot listener (gateway.wiring)
        self.quiet = self.served.quiet

    async def open_in(self, room: str) -> list[Lottery]:
        """The room's open lotteries (cached for ``CACHE_S``). A room whose current snapshot
        on this node lists no lottery has none open: nothing is read (the common case for a
        comment or a gift; a started lottery reaches the snapshot with its event)."""
        snap = self.served.snaps.get(room)
        if snap is not None and not snap.lotteries:
            return []
        now = time.monotonic()
        hit = self._open.get(room)
        if hit is not None and hit[0] > now:
            return hit[1]
        lots = await self.store.open_in_room(room, now_ms=self.gw.now_ms())
        if len(self._open) > 10_000:
            self._open.clear()
        self._open[room] = (now + CACHE_S, lots)
        return lots

    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer: a lottery started or ended in a room; re-read its open lotteries.
        (It runs after the room snapshots' observer, so a served snapshot has the event.)"""
        t = env.get("t")
        if t in ("lottery.started", "lottery.ended", "room.ended"):
            room = env.get("room") or ""
            self._open.pop(room, None)
            self.served.heard(room, started=t == "lottery.started")

    async def start(self, room: str, ident: Identity, body: dict[str, Any]) -> dict[str, Any]:
        """Validate, store and announce a new lottery; returns its public view.

        Raises:
            Forbidden: not the room's host (nor ops). BadFrame: invalid body.
        """
        ident.require_host(room)
        await self.gate.check(room)  # RoomEnded
        seed = new_seed(secrets.token_bytes(32))
        lot = new_lottery(body, id=secrets.token_hex(8), room=room, host=ident.user, now_ms=self.gw.now_ms(), seed=seed)
        lot = await self._check_prize(lot, ident)
        await self.store.create(lot, seed)
        self._open.pop(room, None)
        seq = await self.gw.publish(room, "lottery.started", lot.public())
        if self.views is not None:
            self.views.changed(room)
        log.info("lottery.started", extra={"lottery": lot.id, "room": room, "rule": lot.rule, "k": lot.winners_k})
        return {**lot.public(), "state": "open", "seq": seq}

    async def _check_prize(self, lot: Lottery, ident: Identity) -> Lottery:
        """The lottery with its coupon prize's terms copied from the named drop (the drop
        may expire before the draw; each winner's coupon is made on these terms).

        Raises:
        Forbidden: a coin prize started by anyone but ops (the platform pays it).
        NotFound: a coupon prize naming no coupon drop of this room.
        """
        if lot.prize.kind == "coins" and not ident.is_ops:
            raise Forbidden("coin prizes are paid by the platform: ask ops to start this lottery, "
                            "or offer a coupon or product prize")
        if lot.prize.kind == "coupon" and self.coupons is not None:
            got = await self.coupons.get_drop(lot.prize.id)
            if got is None or got[0].room != lot.room:
                raise NotFound(f"no coupon drop {lot.prize.id!r} in room {lot.room!r}: drop one first "
                               "(POST /api/v1/rooms/{room}/coupons), then name its drop_id as the prize")
            drop = got[0]
            return replace(lot, prize=replace(lot.prize, coupon=coupon_terms(drop.kind, drop.threshold, drop.value)))
        return lot

    async def enter(self, lot: Lottery, user: str, *, gift_value: int = 0) -> tuple[EnterResult, int]:
        return await self.store.enter(lot.id, user, now_ms=self.gw.now_ms(), gift_value=gift_value)

    async def on_comment(self, conn: Conn, d: dict[str, Any]) -> None:
        """Comment hook: keyword comments enter open keyword lotteries. Never fails
        the comment: a lottery error is logged and the comment goes out."""
        if conn.ident.may_host(conn.room):
            return
        now = self.gw.now_ms()
        try:
            for lot in await self.open_in(conn.room):
                if entry_reject(lot, via="comment", now_ms=now, is_host=False, text=d.get("text", "")) is None:
                    res, n = await self.enter(lot, conn.user)
                    if res == "ok":
                        conn.send(envelope("lottery.entered", conn.room, {"id": lot.id, "position": n}, ts=now))
        except Exception:
            log.exception("lottery.on_comment_failed", extra={"room": conn.room, "user": conn.user})

    async def on_gift(self, room: str, user: str, value: int) -> None:
        """Gift hook: a gift of ``value`` counts toward the room's open gift lotteries.
        Never raises into the gift path: failures are logged."""
        try:
            now = self.gw.now_ms()
            for lot in await self.open_in(room):
                if entry_reject(lot, via="gift", now_ms=now, is_host=False) is None and lot.host != user:
                    res, n = await self.enter(lot, user, gift_value=value)
                    if res == "ok":
                        await self.gw.notifier.to_user(
                            user, envelope("lottery.entered", room, {"id": lot.id, "position": n}, ts=now), room=room
                        )
        except Exception:
            log.exception("lottery.on_gift_failed", extra={"room": room, "user": user})


    # ---- WebSocket (gateway.routes)
    async def ws_start(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        return reply("ack", cmd.id, await self.start(conn.room, conn.ident, cmd.d), ts=self.gw.now_ms())

    async def ws_enter(self, conn: Conn, cmd: LotteryEnter) -> dict[str, Any]:
        await self.gate.check(conn.room)  # RoomEnded
        st = await self.store.get(cmd.lottery_id)
        lot = st.lottery if st is not None and st.lottery.room == conn.room else None
        rej = entry_reject(lot, via="enter", now_ms=self.gw.now_ms(), is_host=conn.ident.may_host(conn.room))
        if rej is not None:
            raise _reject(rej, lot)
        assert lot is not None
        res, n = await self.enter(lot, conn.user)
        if res not in ("ok", "already_entered"):
            raise _reject(res, lot)
        d = {"lottery_id": lot.id, "entered": True, "already": res == "already_entered"}
        if res == "ok":
            d["position"] = n
        return reply("ack", cmd.id, d, ts=self.gw.now_ms())

    # ---- HTTP (gateway.routes)
    async def http_start(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = request.match_info["room"]
        body = await read_object(request, required=True)

        async def run() -> web.Response:
            return web.json_response(await self.start(room, ident, body), status=201)

        # each start draws a new lottery: a retried start with its key gets the first one
        return await idempotent(self.gw, request, ident, key=header_key(request), target=room, body=body, run=run)

    async def http_mine(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)  # Unauthorized
        lots = await self.store.open_in_room(request.match_info["room"], now_ms=self.gw.now_ms())
        mine = await self.store.entered([lot.id for lot in lots], ident.user)
        return web.json_response({"entered": sorted(mine)})

    async def http_get(self, request: web.Request) -> web.Response:
        lid = request.match_info["id"]
        ok = 0 < len(lid) <= 64 and all(c.isalnum() or c in "-_." for c in lid)
        rec = await self.store.public(lid) if ok else None
        if rec is None:
            raise NotFound("no such lottery")
        return web.json_response(rec)

    async def http_room(self, request: web.Request) -> web.Response:
        lots = await self.store.open_in_room(request.match_info["room"], now_ms=self.gw.now_ms())
        return web.json_response({"lotteries": [lot.public() for lot in lots]})
