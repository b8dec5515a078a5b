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

Hooks called: the gift hooks (``gw.hooks.gift``: ``async (room, user, value)``, e.g. gift
lotteries) after each successful gift. The room's host comes from the room's meta, read
once per room by the room gate (:meth:`~gateway.rooms.RoomGate.host`, also what comments'
fan badges use; :meth:`Gifts.host_of` is the refunds' lookup too); rooms without one credit
``room:<id>``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.errors import Unavailable
from livecommerce.gifts import GiftTally, catalogue_payload, load_catalogue
from livecommerce.leaderboard import BoardGate, BoardTally, clamp_top, ranked
from livecommerce.leaderboard_redis import RedisLeaderboards
from livecommerce.protocol.commands import Gift
from livecommerce.protocol.events import envelope, reply
from livecommerce.wallet import InsufficientFunds
from livecommerce.wallet_redis import RedisWallet

from .conn import Conn
from .core import Gateway
from .hooks import GiftHook
from .rooms import RoomGate
from .wallet import Outbox

log = logging.getLogger("livecommerce.gateway.gifts")

LEADERBOARD_TOP = 10


class Gifts:
    def __init__(self, gw: Gateway, wallet: RedisWallet, outbox: Outbox, boards: RedisLeaderboards, room_gate: RoomGate,
                 hooks: list[GiftHook]) -> None:
        self.gw = gw
        self.wallet = wallet
        self.outbox = outbox
        self.boards = boards
        self.room_gate = room_gate  # the room's host
        self.hooks = hooks  # after each gift (gift lotteries, ops counters)
        self.catalogue = load_catalogue(gw.s.gift_catalogue)
        self.tally = GiftTally()
        self.board_tally = BoardTally()
        self.gate = BoardGate()
        self.dirty: set[str] = set()  # rooms whose board may have moved since the last push
        self._flushing: asyncio.Task[None] | None = None

    async def host_of(self, room: str) -> str:
        """The room's host (held by the room gate once read), ``room:<id>`` when unknown.

        Raises:
            Unavailable: Redis unreachable (and the host not yet known).
        """
        return await self.room_gate.host(room)

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
        for hook in self.hooks:
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

    async def stop(self) -> None:
        """Shutdown: wait for the tick's flush, then flush what is left."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self.flush()

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
                    self.gw.hub.send_local(room, envelope("leaderboard", room, {"top": top}, ts=now))
        self.gate.keep_only(local.keys())

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        return {"leaderboard": ranked(await self.boards.top("room", room, LEADERBOARD_TOP))}

    # ---- handlers (gateway.routes)
    async def gift(self, conn: Conn, cmd: Gift) -> dict[str, Any]:
        return reply("ack", cmd.id, await self.send(conn, cmd), ts=self.gw.now_ms())

    async def get_catalogue(self, request: web.Request) -> web.Response:
        return web.json_response({"gifts": catalogue_payload(self.catalogue)})

    async def room_board(self, request: web.Request) -> web.Response:
        room, n = request.match_info["room"], clamp_top(request.query.get("n"))
        return web.json_response({"room": room, "top": ranked(await self.boards.top("room", room, n))})

    async def host_board(self, request: web.Request) -> web.Response:
        host, n = request.match_info["host"], clamp_top(request.query.get("n"))
        return web.json_response({"host": host, "top": ranked(await self.boards.top("host", host, n))})

    async def hosts_board(self, request: web.Request) -> web.Response:
        n = clamp_top(request.query.get("n"))
        return web.json_response({"top": ranked(await self.boards.top("hosts", "", n))})
