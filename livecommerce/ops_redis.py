"""Redis side of the ops view: what every gateway node shares so that any node answers for
the whole cluster.

Keys:

* ``lc:ops:nodes``  hash node -> JSON of the node's cumulative totals (``start``, ``ts``,
  ``errors``, ``requests``, ``rooms`` ...), rewritten by each node once a second; an hour
  after the last write it expires (a cluster that stopped)
* ``lc:ops:rooms``  sorted set room -> last ms a node saw activity in it (a day kept)
* ``lc:ops:commerce``  JSON of the latest commerce snapshot (one minute kept), and
  ``lc:ops:commerce:lock``, held by the node that computes the next one

The dashboard also reads the rooms' meta hashes (``{room:ID}:meta``); who is online comes
from the :class:`~livecommerce.presence.Presence` port. Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from .keys import Keys
from .redis_conn import guarded

NODES_TTL_S = 3600
ROOMS_KEEP_MS = 86_400_000


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class OpsRedis:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys
        self._nodes = keys.global_key("ops:nodes")
        self._rooms = keys.global_key("ops:rooms")
        self._commerce = keys.global_key("ops:commerce")
        self._lock = keys.global_key("ops:commerce:lock")

    async def ping(self) -> None:
        """Raises:
        Unavailable: Redis does not answer (the driver's error is the ``__cause__``).
        """
        async with guarded():
            await self._r.ping()

    # ---- per-node totals and the rooms seen
    async def write_node(self, node: str, totals: dict[str, Any], rooms: Iterable[str], now_ms: int) -> None:
        """Store ``node``'s cumulative ``totals`` and mark ``rooms`` as seen at ``now_ms``,
        in one round trip (rooms unseen for a day are dropped).

        Raises:
            Unavailable: Redis unreachable.
        """
        seen = dict.fromkeys(rooms, now_ms)
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(self._nodes, node, json.dumps(totals))
        pipe.expire(self._nodes, NODES_TTL_S)
        if seen:
            pipe.zadd(self._rooms, seen)
            pipe.zremrangebyscore(self._rooms, 0, now_ms - ROOMS_KEEP_MS)
        async with guarded():
            await pipe.execute()

    async def nodes(self) -> dict[str, dict[str, Any]]:
        """Every node's last written totals.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            raw = await self._r.hgetall(self._nodes)
        return {_s(node): json.loads(val) for node, val in raw.items()}

    async def drop_nodes(self, nodes: Sequence[str]) -> None:
        """Forget the totals of ``nodes`` (stopped, or silent for too long).

        Raises:
            Unavailable: Redis unreachable.
        """
        if nodes:
            async with guarded():
                await self._r.hdel(self._nodes, *nodes)

    async def recent_rooms(self, since_ms: int) -> list[str]:
        """Rooms a node saw activity in at or after ``since_ms``.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            got = await self._r.zrangebyscore(self._rooms, since_ms, "+inf")
        return [_s(x) for x in got]

    # ---- the rooms' meta hashes
    async def room_meta(self, rooms: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each room's meta hash (title, host, state, peak_online ...), decoded.

        Raises:
            Unavailable: Redis unreachable.
        """
        if not rooms:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for r in rooms:
            pipe.hgetall(self.keys.room_meta(r))
        async with guarded():
            got = await pipe.execute()
        return {r: {_s(k): _s(v) for k, v in m.items()} for r, m in zip(rooms, got, strict=True)}

    # ---- the commerce snapshot
    async def lock_commerce(self, node: str, ttl_ms: int) -> bool:
        """True when ``node`` takes the lock to compute the next snapshot (held ``ttl_ms``).

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            return bool(await self._r.set(self._lock, node, nx=True, px=ttl_ms))

    async def put_commerce(self, snap: dict[str, Any], *, ttl_s: int = 60) -> None:
        """Raises:
        Unavailable: Redis unreachable.
        """
        async with guarded():
            await self._r.set(self._commerce, json.dumps(snap), ex=ttl_s)

    async def commerce(self) -> dict[str, Any] | None:
        """The latest snapshot a node stored (None: none within its lifetime).

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            raw = await self._r.get(self._commerce)
        return None if raw is None else dict(json.loads(raw))
