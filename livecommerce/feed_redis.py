"""Redis side of the feed: the index of live rooms, each room's feed hash, and one read
of every candidate's signals.

Keys:

* ``lc:{feed}:live``  sorted set room -> ``live_ms``: candidates (gateways add a room when
  they see it go live, remove it when they see it end; stale members are dropped when a
  read finds their meta not live, so the index only has to be a superset)
* ``{room:ID}:feed``  hash: ``category`` (set by the host or ops), ``pin_category`` (the
  category of the product pinned last), ``gmv`` (cents paid in the room, ever),
  ``show`` / ``show_gmv`` (the ``live_ms`` of the show the GMV counter belongs to, and
  the cents paid during it); it expires ``ttl_s`` after its last write or go-live

The other signals are the rooms' own counters: ``{room:ID}:meta`` (``state``, ``host``,
``title``, ``live_ms``, ``comments`` of the show, ``likes_base``), ``{room:ID}:likes``
and ``{room:ID}:online``. Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .feed import LiveRoom, online_total
from .keys import Keys
from .redis_conn import guarded, is_cluster_client
from .retention import ROOM_RETENTION_S

ADD_GMV = """
-- KEYS[1] room meta, KEYS[2] room feed hash (one slot); ARGV[1] cents, ARGV[2] paid ms,
-- ARGV[3] the feed hash's lifetime (s)
local live = redis.call('HGET', KEYS[1], 'live_ms') or ''
redis.call('HINCRBY', KEYS[2], 'gmv', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if live == '' or tonumber(ARGV[2]) < tonumber(live) then return 0 end
if redis.call('HGET', KEYS[2], 'show') ~= live then
  redis.call('HSET', KEYS[2], 'show', live, 'show_gmv', 0)
end
return redis.call('HINCRBY', KEYS[2], 'show_gmv', ARGV[1])
"""

_META = ("state", "host", "title", "live_ms", "comments", "likes_base")
_FEED = ("category", "pin_category", "show", "show_gmv")


def _s(v: Any) -> str:
    return "" if v is None else v.decode() if isinstance(v, bytes) else str(v)


def _i(v: Any) -> int:
    try:
        return int(_s(v) or 0)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class RoomCounters:
    """One read of a room: its meta, its show counters and its online count."""

    room: LiveRoom  # rates still zero: the caller's SignalWindow fills them
    comments: int
    likes: int
    gmv: int


class FeedRedis:
    def __init__(self, redis: Any, keys: Keys, *, ttl_s: int = ROOM_RETENTION_S) -> None:
        self._r = redis
        self.keys = keys
        self.ttl_s = ttl_s  # a room's feed hash lives this long after its last write or go-live
        self.live_key = keys.global_key("{feed}:live")
        self._add_gmv = redis.register_script(ADD_GMV)

    def _feed(self, room: str) -> str:
        return self.keys.room(room, "feed")

    async def index(self, room: str, live_ms: int) -> None:
        async with guarded():
            await self._r.zadd(self.live_key, {room: live_ms})
            await self._r.expire(self._feed(room), self.ttl_s)  # a live room keeps its category

    async def unindex(self, rooms: Iterable[str]) -> None:
        rs = list(rooms)
        if rs:
            async with guarded():
                await self._r.zrem(self.live_key, *rs)

    async def candidates(self, limit: int = 5000) -> list[str]:
        """Indexed rooms, most recently started first."""
        async with guarded():
            return [_s(r) for r in await self._r.zrevrange(self.live_key, 0, limit - 1)]

    async def set_category(self, room: str, category: str, *, field: str = "category") -> None:
        async with guarded():
            if category:
                await self._r.hset(self._feed(room), field, category)
                await self._r.expire(self._feed(room), self.ttl_s)
            else:
                await self._r.hdel(self._feed(room), field)

    async def add_gmv(self, rows: Sequence[tuple[str, int, int]]) -> None:
        """Add paid ``(room, cents, paid_ms)`` to the rooms' GMV counters."""
        if not rows:
            return
        if is_cluster_client(self._r):
            async with guarded():
                for room, cents, ts in rows:
                    await self._add_gmv(keys=[self.keys.room_meta(room), self._feed(room)], args=[cents, ts, self.ttl_s])
            return
        pipe = self._r.pipeline(transaction=False)
        for room, cents, ts in rows:
            await self._add_gmv(keys=[self.keys.room_meta(room), self._feed(room)], args=[cents, ts, self.ttl_s], client=pipe)
        async with guarded():
            await pipe.execute()

    async def states(self, rooms: Sequence[str]) -> dict[str, str]:
        """Each room's state now (``""`` for a room that does not exist)."""
        if not rooms:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for room in rooms:
            pipe.hget(self.keys.room_meta(room), "state")
        async with guarded():
            got = await pipe.execute()
        return {room: _s(v) for room, v in zip(rooms, got, strict=True)}

    async def read(self, rooms: Sequence[str], *, now_ms: int) -> dict[str, RoomCounters]:
        """Meta, counters, online and feed hash of ``rooms`` in one pipeline; rooms that
        do not exist are left out (state is reported as stored: callers filter)."""
        if not rooms:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for room in rooms:
            pipe.hmget(self.keys.room_meta(room), *_META)
            pipe.get(self.keys.room_likes(room))
            pipe.hgetall(self.keys.room_online(room))
            pipe.hmget(self._feed(room), *_FEED)
        async with guarded():
            got = await pipe.execute()
        out: dict[str, RoomCounters] = {}
        for i, room in enumerate(rooms):
            meta, likes, online, feed = got[4 * i : 4 * i + 4]
            m = dict(zip(_META, meta, strict=True))
            f = dict(zip(_FEED, feed, strict=True))
            if not _s(m["state"]):
                continue
            live_ms = _i(m["live_ms"])
            show_gmv = _i(f["show_gmv"]) if _s(f["show"]) == str(live_ms) else 0
            lr = LiveRoom(
                id=room,
                host=_s(m["host"]) or f"room:{room}",
                state=_s(m["state"]),
                title=_s(m["title"]),
                category=_s(f["category"]) or _s(f["pin_category"]) or None,
                live_ms=live_ms,
                online=online_total(online or {}, now_ms),
            )
            out[room] = RoomCounters(lr, _i(m["comments"]), max(0, _i(likes) - _i(m["likes_base"])), show_gmv)
        return out
