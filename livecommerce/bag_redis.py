"""Redis adapter of the rooms' product lists: ``{room:ID}:bag``, a hash of the list's
version ``v`` and the list itself as JSON (:meth:`livecommerce.bag.Bag.to_dict`).

A write is one compare-and-set on the version (``bag_put.lua``) in the room's slot; the list
is kept for good, like the room's meta (a room shows the same list at its next show; at
most :data:`~livecommerce.bag.MAX_ITEMS` small items per room). Driver errors become
:class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from .bag import EMPTY, Bag, bag_from_dict
from .keys import Keys
from .redis_conn import guarded

PUT = (files("livecommerce") / "bag_put.lua").read_text()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisBags:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys
        self._put = redis.register_script(PUT)

    def key(self, room: str) -> str:
        return self.keys.room(room, "bag")

    async def get(self, room: str) -> Bag:
        """The room's list (empty, version 0, when it never had one). One command."""
        async with guarded():
            raw = await self._r.hget(self.key(room), "json")
        return EMPTY if raw is None else bag_from_dict(json.loads(_s(raw)))

    async def put(self, room: str, bag: Bag, *, expected_v: int) -> tuple[bool, Bag]:
        """Store ``bag`` (whose ``v`` must be ``expected_v + 1``) if the stored version is
        still ``expected_v``; returns whether it was stored, and the list stored now."""
        assert bag.v == expected_v + 1, "a list's next version is one more than the one it replaces"
        async with guarded():
            raw = await self._put(keys=[self.key(room)],
                                  args=[expected_v, json.dumps(bag.to_dict(), separators=(",", ":"), ensure_ascii=False)])
        if int(raw[0]) == 1:
            return True, bag
        text = _s(raw[2])
        return False, bag_from_dict(json.loads(text)) if text else EMPTY
