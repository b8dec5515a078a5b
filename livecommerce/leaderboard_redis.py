"""Redis sorted sets behind the gift leaderboards (see :mod:`livecommerce.leaderboard`).

Keys: ``{room:ID}:lb`` (the room's gifters, in the room's slot; it expires ``room_ttl_s``
after the room's last gift), ``{host:ID}:lb`` (a host's fans), ``lb:hosts`` (hosts by gifts
received). Scores are coins. Driver errors
become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from typing import Any

from .keys import Keys
from .leaderboard import BoardKind, Increment
from .redis_conn import guarded
from .retention import ROOM_RETENTION_S


class RedisLeaderboards:
    def __init__(self, redis: Any, keys: Keys, *, room_ttl_s: int = ROOM_RETENTION_S) -> None:
        self._r = redis
        self.keys = keys
        self.room_ttl_s = room_ttl_s

    def key(self, kind: BoardKind, board: str) -> str:
        if kind == "room":
            return self.keys.room(board, "lb")
        if kind == "host":
            return self.keys.entity("host", board, "lb")
        return self.keys.global_key("lb:hosts")

    async def add(self, incs: dict[Increment, int]) -> None:
        """Add increments (one pipelined ZINCRBY each).

        Raises:
            Unavailable: Redis unreachable (the caller keeps the increments for later).
        """
        if not incs:
            return
        pipe = self._r.pipeline(transaction=False)
        rooms: set[str] = set()
        for (kind, board, member), v in incs.items():
            pipe.zincrby(self.key(kind, board), v, member)
            if kind == "room":
                rooms.add(board)
        for room in rooms:  # a room's board lives room_ttl_s after its last gift
            pipe.expire(self.key("room", room), self.room_ttl_s)
        async with guarded():
            await pipe.execute()

    async def top(self, kind: BoardKind, board: str, n: int) -> list[tuple[str, float]]:
        """The best ``n`` members, best first."""
        async with guarded():
            raw = await self._r.zrevrange(self.key(kind, board), 0, n - 1, withscores=True)
        return [(m.decode() if isinstance(m, bytes) else m, float(s)) for m, s in raw]

    async def tops(self, rooms: list[str], n: int) -> dict[str, list[tuple[str, float]]]:
        """``top("room", r, n)`` for several rooms in one pipeline."""
        if not rooms:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for r in rooms:
            pipe.zrevrange(self.key("room", r), 0, n - 1, withscores=True)
        async with guarded():
            res = await pipe.execute()
        return {
            r: [(m.decode() if isinstance(m, bytes) else m, float(s)) for m, s in raw]
            for r, raw in zip(rooms, res, strict=True)
        }

    async def score(self, kind: BoardKind, board: str, member: str) -> int:
        async with guarded():
            s = await self._r.zscore(self.key(kind, board), member)
        return int(s or 0)
