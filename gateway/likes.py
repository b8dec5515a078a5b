"""``like {count}`` over WebSocket: aggregated per node, one ``likes {total}`` per room per second.

Each ``like`` only adds to this node's in-memory tally. The hub's once-a-second callback
(:meth:`Likes.on_second`) adds every room's tally to ``{room:ID}:likes`` with INCRBY (a
GET for local rooms without new likes, so other nodes' likes show up too) in one pipeline,
then pushes ``likes {total}`` (the exact total read back from Redis) to this node's viewers
of each room whose total changed, through ``hub.send_local`` (a counter: coalesced into
the tick's batch, shed first for slow clients). Late joiners get ``likes`` in ``welcome``: the
total this node last pushed plus its pending tally (the node's room snapshot,
``gateway.snapshots``, follows the push).

:class:`Likes` is built by ``gateway.wiring`` (``await flush()`` adds the pending tally
now, e.g. before a show's summary is taken).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from livecommerce.likes import LikeTally, PushGate
from livecommerce.likes_redis import RedisLikes
from livecommerce.protocol.commands import Like
from livecommerce.protocol.events import envelope

from .conn import Conn
from .core import Gateway

log = logging.getLogger("livecommerce.gateway.likes")


class Likes:
    def __init__(self, gw: Gateway, counters: RedisLikes) -> None:
        self.gw = gw
        self.counters = counters
        self.tally = LikeTally()
        self.gate = PushGate()

    async def flush(self) -> dict[str, int]:
        """Add the pending tally to Redis; return the exact total of every room that had
        likes or has local viewers. On a Redis error the tally is kept for the next try.

        Raises:
            Unavailable: Redis unreachable.
        """
        deltas = self.tally.take()
        try:
            return await self.counters.add_and_read(deltas, self.gw.hub.rooms.keys())
        except BaseException:
            self.tally.restore(deltas)
            raise

    async def on_second(self) -> None:
        totals = await self.flush()
        now = self.gw.now_ms()
        local = self.gw.hub.rooms
        for room, total in totals.items():
            if room in local and self.gate.changed(room, total):
                self.gw.hub.send_local(room, envelope("likes", room, {"total": total}, ts=now))
        self.gate.keep_only(local.keys())

    async def total(self, room: str) -> int:
        return await self.counters.total(room) + self.tally.pending(room)

    # ---- handlers (gateway.routes)
    async def like(self, conn: Conn, cmd: Like) -> dict[str, Any] | None:
        self.tally.add(conn.room, cmd.count)
        return None

    async def get_likes(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        return web.json_response({"room": room, "likes": await self.total(room)})
