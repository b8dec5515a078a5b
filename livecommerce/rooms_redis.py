"""Redis adapter for rooms: the meta hash ``{room:ID}:meta`` and its life-cycle steps.

Every script touches the room's slot only (``meta`` and the ``likes`` counter). Contracts:

* :meth:`create` creates the room once (False when it exists).
* :meth:`transition` is a compare-and-set of ``state`` that records the show statistics in
  the same step (likes counter at ``go_live`` and ``end``, reset of comments and peak), so
  two hosts pressing "end" at once end the show once with one summary.
* :meth:`tick` adds one gateway's comments and online count to live shows only.
* :meth:`record_closed` stores what ending a show closed, once per show (``closed``; the
  next ``go_live`` clears it).
* :meth:`host` / :func:`room_host` (and :meth:`hosts` for many rooms in one round trip)
  answer "whose room is this?" from the meta hash: the host named at creation, or None
  for a room never created: the one place that reads it (the gateway's ``Gifts.host_of``
  caches it for gifts, refunds and fan badges). What a caller does with None is the
  caller's rule (the gateway credits ``room_owner(room)``).

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from .keys import Keys
from .redis_conn import guarded, is_cluster_client
from .rooms import RoomInfo, RoomState

CREATE = (files("livecommerce") / "rooms_create.lua").read_text()
STEP = (files("livecommerce") / "rooms_step.lua").read_text()
TICK = (files("livecommerce") / "rooms_tick.lua").read_text()
CLOSED = (files("livecommerce") / "rooms_closed.lua").read_text()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def room_host(redis: Any, keys: Keys, room: str) -> str | None:
    """The room's host as stored at creation, or None (never created, or no host).

    For callers that hold a Redis client but no :class:`RedisRooms`; the same read as
    :meth:`RedisRooms.host`.

    Raises:
        Unavailable: Redis unreachable.
    """
    async with guarded():
        v = await redis.hget(keys.room_meta(room), "host")
    return _s(v) if v else None


class RedisRooms:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys
        self._create = redis.register_script(CREATE)
        self._step = redis.register_script(STEP)
        self._tick = redis.register_script(TICK)
        self._closed = redis.register_script(CLOSED)

    async def create(self, info: RoomInfo) -> bool:
        """Store a new room as ``created``; False when the id is taken."""
        args = ["id", info.id, "title", info.title, "host", info.host, "created_ms", info.created_ms, "state", "created"]
        async with guarded():
            return bool(await self._create(keys=[self.keys.room_meta(info.id)], args=args))

    async def get(self, room: str) -> dict[str, str] | None:
        """The room's meta fields, or None for a room never created."""
        async with guarded():
            raw = await self._r.hgetall(self.keys.room_meta(room))
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None

    async def state(self, room: str) -> str:
        """The room's state (``created``, ``live``, ``ended``), or ``''`` for a room never
        created: the authoritative answer node-local caches fall back to."""
        async with guarded():
            v = await self._r.hget(self.keys.room_meta(room), "state")
        return "" if v is None else _s(v)

    async def state_and_host(self, room: str) -> tuple[str, str | None]:
        """:meth:`state` and :meth:`host` in one read.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            st, host = await self._r.hmget(self.keys.room_meta(room), ["state", "host"])
        return ("" if st is None else _s(st)), (_s(host) if host else None)

    async def host(self, room: str) -> str | None:
        """The room's host, or None for a room never created (see :func:`room_host`).

        Raises:
            Unavailable: Redis unreachable.
        """
        return await room_host(self._r, self.keys, room)

    async def hosts(self, rooms: Sequence[str]) -> dict[str, str | None]:
        """:meth:`host` of each room, in one pipelined round trip.

        Raises:
            Unavailable: Redis unreachable.
        """
        if not rooms:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for room in rooms:
            pipe.hget(self.keys.room_meta(room), "host")
        async with guarded():
            got = await pipe.execute()
        return {room: (_s(v) if v else None) for room, v in zip(rooms, got, strict=True)}

    async def record_closed(self, room: str, ended_ms: str, closed: str) -> tuple[bool, str]:
        """Store ``closed`` (JSON) for the show that ended at ``ended_ms`` unless one is
        stored already. Returns ``(stored now, the stored JSON)``; ``(False, '')`` when the
        room is no longer that ended show (it went live again)."""
        async with guarded():
            won, stored = await self._closed(keys=[self.keys.room_meta(room)], args=[ended_ms, closed])
        return bool(int(won)), _s(stored)

    async def transition(self, room: str, expected: RoomState, new: RoomState, *, now_ms: int, online: int) -> tuple[bool, str]:
        """Compare-and-set ``expected -> new`` (``live`` or ``ended``) with the statistics.
        Returns ``(applied, state now)``."""
        keys = [self.keys.room_meta(room), self.keys.room_likes(room), self.keys.room(room, "viewers")]
        async with guarded():
            ok, state = await self._step(keys=keys, args=[expected, new, now_ms, online])
        return bool(int(ok)), _s(state)

    async def tick(self, rows: Sequence[tuple[str, int, int, bool]]) -> None:
        """``rows`` of ``(room, online, new comments, sampled)``, one pipelined script call
        each; ``sampled``: ``online`` is a reading of the room's online count (it joins the
        show's average online)."""
        if not rows:
            return
        if is_cluster_client(self._r):
            # redis-py refuses EVALSHA in a cluster pipeline: one call per room, concurrently
            async with guarded():
                await asyncio.gather(*(self._tick(keys=[self.keys.room_meta(room)], args=[online, comments, int(sampled)])
                                       for room, online, comments, sampled in rows))
            return
        pipe = self._r.pipeline(transaction=False)
        for room, online, comments, sampled in rows:
            await self._tick(keys=[self.keys.room_meta(room)], args=[online, comments, int(sampled)], client=pipe)
        async with guarded():
            await pipe.execute()
