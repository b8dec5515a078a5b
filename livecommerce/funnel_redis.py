"""Redis side of campaign funnels: who was in the room, saw the offer, tried to take it.

Keys (a campaign's counters share its slot; they expire :data:`TTL_S` after the last add):

* ``{sale:ID}:f:viewers|saw|tried`` and ``{coupon:ID}:f:viewers|saw|tried``: HyperLogLogs
  of user ids (PFADD / PFCOUNT; about 0.8% standard error, exact for small counts);
* ``{room:ID}:campaigns``: hash ``sale:<id>`` / ``coupon:<id>`` -> JSON ``{"product_id",
  "until"}``, the room's running campaigns, kept by every gateway from the broadcast
  (``sale.started`` / ``sale.ended`` / ``coupon.dropped``), so a node that joins viewers
  to a room knows which campaigns to count them for.

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .funnel import Kind as Kind
from .keys import Keys
from .redis_conn import guarded

STEPS = ("viewers", "saw", "tried")
TTL_S = 30 * 86400


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class FunnelRedis:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys

    def _k(self, kind: Kind, cid: str, step: str) -> str:
        return self.keys.entity(kind, cid, f"f:{step}")

    async def add(self, items: Mapping[tuple[Kind, str, str], Iterable[str]]) -> None:
        """PFADD users to ``(kind, campaign id, step)`` counters, one pipeline."""
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for (kind, cid, step), users in items.items():
            us = list(users)
            if not us:
                continue
            key = self._k(kind, cid, step)
            pipe.pfadd(key, *us)
            pipe.expire(key, TTL_S)
            n += 1
        if n:
            async with guarded():
                await pipe.execute()

    async def counts(self, kind: Kind, cid: str) -> dict[str, int]:
        pipe = self._r.pipeline(transaction=False)
        for step in STEPS:
            pipe.pfcount(self._k(kind, cid, step))
        async with guarded():
            got = await pipe.execute()
        return {step: int(v) for step, v in zip(STEPS, got, strict=True)}

    async def start(self, room: str, kind: Kind, cid: str, *, product_id: str | None, until_ms: int) -> None:
        key = self.keys.room(room, "campaigns")
        async with guarded():
            await self._r.hset(key, f"{kind}:{cid}", json.dumps({"product_id": product_id, "until": until_ms}))
            await self._r.expire(key, TTL_S)

    async def stop(self, room: str, kind: Kind, cid: str) -> None:
        async with guarded():
            await self._r.hdel(self.keys.room(room, "campaigns"), f"{kind}:{cid}")

    async def running(self, rooms: Iterable[str], now_ms: int) -> dict[str, tuple[list[tuple[Kind, str, str | None]], str | None]]:
        """For each room: its running campaigns ``(kind, id, product_id)`` and the
        product pinned now (None without a pin)."""
        rooms = list(rooms)
        pipe = self._r.pipeline(transaction=False)
        for room in rooms:
            pipe.hgetall(self.keys.room(room, "campaigns"))
            pipe.get(self.keys.room(room, "pin"))
        async with guarded():
            got = await pipe.execute()
        out: dict[str, tuple[list[tuple[Kind, str, str | None]], str | None]] = {}
        for i, room in enumerate(rooms):
            camps: list[tuple[Kind, str, str | None]] = []
            for field, raw in (got[2 * i] or {}).items():
                kind, _, cid = _s(field).partition(":")
                info = json.loads(raw)
                if int(info.get("until") or 0) > now_ms and kind in ("sale", "coupon"):
                    camps.append((kind, cid, info.get("product_id")))  # type: ignore[arg-type]
            pin = got[2 * i + 1]
            pinned = json.loads(pin).get("product_id") if pin else None
            out[room] = (camps, pinned)
        return out
