"""``gift {gift_id, count, combo_id?}``: wallet debit, combo broadcast, leaderboards.

A gift is one wallet script (debit, never below zero, error ``insufficient_funds``; the
combo grows in the same step; the ``gift.sent`` event goes to the wallet outbox), then the
log append (topic ``gifts``). The reply is ``ack`` with ``d: {balance, combo_id, total,
value}``.

Broadcast: sends are summed per ``(room, user, gift, combo)`` on this node and published
once per tick as one ``gift`` event ``{user, name, gift_id, gift_name, tier, price,
combo_id, count, total, value}`` (``count``/``value``: this tick's delta, ``total``: the
combo's running units). Leaderboard increments are summed the same way and added to Redis
before the tick's gift events go out. Once a second each node pushes ``leaderboard {top}``
(the room's top gifters) to its viewers of rooms whose board may have moved, only when the
top changed; ``welcome`` carries ``leaderboard`` too.

HTTP (public): ``GET /api/v1/gifts`` (the catalogue), ``GET
/api/v1/rooms/{room}/leaderboard?n=``, ``GET /api/v1/hosts/{host}/leaderboard?n=`` (a
host's top fans), ``GET /api/v1/leaderboards/hosts?n=`` (hosts by gifts received).

Hooks called: ``gw.services["on_gift"]`` (list of ``async (room, user, value)``, e.g.
gift lotteries) after each successful gift. The room's host comes from the room's meta
(``host``), cached per node; rooms without one credit ``room:<id>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.errors import Unavailable
from livecommerce.gifts import GiftTally, catalogue_payload, load_catalogue
from livecommerce.leaderboard import BoardGate, BoardTally, clamp_top, ranked
from livecommerce.leaderboard_redis import RedisLeaderboards
from livecommerce.points import room_owner
from livecommerce.protocol.commands import Gift
from livecommerce.redis_conn import guarded
from livecommerce.wallet import InsufficientFunds
from livecommerce.wallet_redis import RedisWallet

from .conn import Conn
from .core import Gateway
from .wallet import Outbox

log = logging.getLogger("livecommerce.gateway.gifts")

HOST_CACHE_S = 30.0
LEADERBOARD_TOP = 10


class Gifts:
    def __init__(self, gw: Gateway, wallet: RedisWallet, outbox: Outbox) -> None:
        self.gw = gw
        self.wallet = wallet
        self.outbox = outbox
        self.catalogue = load_catalogue(gw.s.gift_catalogue)
        self.boards = RedisLeaderboards(gw.redis, gw.keys, room_ttl_s=gw.s.room_retention_s)
        self.tally = GiftTally()
        self.board_tally = BoardTally()
        self.gate = BoardGate()
        self.dirty: set[str] = set()  # rooms whose board may have moved since the last push
        self._hosts: dict[str, tuple[str, float]] = {}
        self._flushing: asyncio.Task[None] | None = None

    async def host_of(self, room: str) -> str:
        """The room's host (cached ``HOST_CACHE_S``), ``room:<id>`` when unknown."""
        now = time.monotonic()
        hit = self._hosts.get(room)
        if hit is not None and hit[1] > now:
            return hit[0]
        async with guarded():
            v = await self.gw.redis.hget(self.gw.keys.room_meta(room), "host")
        host = (v.decode() if isinstance(v, bytes) else v) if v else room_owner(room)
        if len(self._hosts) > 50_000:
            self._hosts.clear()
        self._hosts[room] = (host, now + HOST_CACHE_S)
        return host

    async def send(self, conn: Conn, cmd: Gift) -> dict[str, Any]:
        """Debit, log, count for the broadcast and the boards; the reply's ``d``.

        Raises:
            NotFound: (``unknown_gift``). InsufficientFunds. Unavailable.
        """
        spec = self.catalogue.get(cmd.gift_id)
        host = await self.host_of(conn.room)
        r = await self.wallet.send_gift(
            user=conn.user, room=conn.room, host=host, spec=spec, count=cmd.count, combo_id=cmd.combo_id, now_ms=self.gw.now_ms()
        )
        if isinstance(r, tuple):
            _, bal = r
            raise InsufficientFunds(f"this gift costs {spec.price * cmd.count} coins; the wallet holds {bal}")
        await self.outbox.emit(r.event)
        value = spec.price * cmd.count
        self.tally.add(conn.room, conn.user, conn.ident.name, spec.id, r.combo, cmd.count)
        self.board_tally.add_gift(room=conn.room, host=host, user=conn.user, value=value)
        for hook in self.gw.services.get("on_gift", []):
            await hook(conn.room, conn.user, value)
        return {"balance": r.balance, "combo_id": r.combo.id, "total": r.combo.total, "value": value}

    # ---- per tick: boards, then one gift event per combo that moved
    def on_tick(self, now: float) -> None:
        if (self.tally or self.board_tally) and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        incs = self.board_tally.take()
        try:
            await self.boards.add(incs)
        except Unavailable as exc:
            self.board_tally.restore(incs)
            log.warning("gifts.boards_deferred", extra={"err": exc.message})
        for room, d in self.tally.take(self.catalogue):
            try:
                await self.gw.publish(room, "gift", d)
            except Unavailable as exc:  # a lossy broadcast: the ledger has the gift
                log.warning("gifts.publish_failed", extra={"room": room, "err": exc.message})

    def observe(self, env: dict[str, Any]) -> None:
        if env.get("t") == "gift":
            self.dirty.add(env.get("room") or "")

    async def on_second(self) -> None:
        local = self.gw.hub.rooms
        rooms = [r for r in self.dirty if r in local]
        self.dirty.clear()
        if rooms:
            tops = await self.boards.tops(rooms, LEADERBOARD_TOP)
            now = self.gw.now_ms()
            for room, pairs in tops.items():
                top = ranked(pairs)
                if self.gate.changed(room, top):
                    self.gw.hub.send_local(room, {"t": "leaderboard", "room": room, "ts": now, "d": {"top": top}})
        self.gate.keep_only(local.keys())

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        return {"leaderboard": ranked(await self.boards.top("room", room, LEADERBOARD_TOP))}


def setup(gw: Gateway, app: web.Application) -> None:
    wallet: RedisWallet = gw.services["wallet"]  # gateway.wallet runs first (CAPABILITIES)
    gifts = Gifts(gw, wallet, gw.services["wallet_outbox"])
    gw.services["gifts"] = gifts
    gw.hub.on_tick.append(gifts.on_tick)
    gw.hub.on_second.append(gifts.on_second)
    gw.hub.observers.append(gifts.observe)
    gw.welcome_extras.append(gifts.welcome)

    async def flush_on_stop() -> None:
        if gifts._flushing is not None:
            await asyncio.gather(gifts._flushing, return_exceptions=True)
        await gifts.flush()

    gw.services.setdefault("shutdown", []).insert(0, flush_on_stop)

    @gw.command("gift")
    async def gift(gw: Gateway, conn: Conn, cmd: Gift) -> dict[str, Any]:
        return {"t": "ack", "id": cmd.id, "ts": gw.now_ms(), "d": await gifts.send(conn, cmd)}

    async def catalogue(request: web.Request) -> web.Response:
        return web.json_response({"gifts": catalogue_payload(gifts.catalogue)})

    async def room_board(request: web.Request) -> web.Response:
        room, n = request.match_info["room"], clamp_top(request.query.get("n"))
        return web.json_response({"room": room, "top": ranked(await gifts.boards.top("room", room, n))})

    async def host_board(request: web.Request) -> web.Response:
        host, n = request.match_info["host"], clamp_top(request.query.get("n"))
        return web.json_response({"host": host, "top": ranked(await gifts.boards.top("host", host, n))})

    async def hosts_board(request: web.Request) -> web.Response:
        n = clamp_top(request.query.get("n"))
        return web.json_response({"top": ranked(await gifts.boards.top("hosts", "", n))})

    app.router.add_get("/api/v1/gifts", catalogue)
    app.router.add_get("/api/v1/rooms/{room}/leaderboard", room_board)
    app.router.add_get("/api/v1/hosts/{host}/leaderboard", host_board)
    app.router.add_get("/api/v1/leaderboards/hosts", hosts_board)
