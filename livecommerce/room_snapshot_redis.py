"""Reads a :class:`~livecommerce.room_snapshot.RoomSnapshot` from Redis.

Every key of a room's own state is in the room's slot (``{room:ID}``): seq, meta, pin,
likes, the room's gift board and the indexes of its lotteries, coupon drops and red packets, so they
are read in one pipelined round trip, the seq first (the state read after it is at least
as new as that seq; events past it are applied again on top, see
:func:`~livecommerce.room_snapshot.apply`). The lotteries and drops those indexes name live
in their own slots: when there are any, their records are read in a second pipeline.

:meth:`RedisRoomSnapshots.refresh` re-reads, for many rooms in one pipeline, what no event
keeps current (:func:`~livecommerce.room_snapshot.needs_refresh`): the meta of rooms not
created yet and the counts of listed drops.

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .coupons import public_drop
from .coupons_redis import CouponsRedis, drop_from_replies
from .keys import Keys
from .leaderboard import ranked
from .lottery_redis import RedisLotteries, stored_from_reply
from .redis_conn import guarded
from .redpackets_redis import RedisRedPackets
from .redpackets_redis import stored_from_reply as packet_from_reply
from .room_snapshot import RoomSnapshot, coupon_entry

#: the room's best gifters a welcome shows (``gateway.gifts.LEADERBOARD_TOP``)
LEADERBOARD_TOP = 10
#: lotteries and drops of one room read at most (a welcome lists the first few)
MAX_LISTED = 200


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _meta(raw: Mapping[Any, Any] | None) -> dict[str, str] | None:
    return {_s(k): _s(v) for k, v in raw.items()} if raw else None


class RedisRoomSnapshots:
    def __init__(self, redis: Any, keys: Keys, lotteries: RedisLotteries, coupons: CouponsRedis,
                 redpackets: RedisRedPackets | None = None) -> None:
        self._r = redis
        self.keys = keys
        self._lotteries = lotteries
        self._coupons = coupons
        self._redpackets = redpackets

    async def load(self, room: str, *, now_ms: int) -> RoomSnapshot:
        """The room's snapshot: one round trip, two when it lists lotteries or drops.

        Raises:
            Unavailable: Redis unreachable.
        """
        k = self.keys
        pipe = self._r.pipeline(transaction=False)
        pipe.get(k.room_seq(room))
        pipe.hgetall(k.room_meta(room))
        pipe.get(k.room(room, "pin"))
        pipe.get(k.room_likes(room))
        pipe.zrevrange(k.room(room, "lb"), 0, LEADERBOARD_TOP - 1, withscores=True)
        pipe.zrangebyscore(self._lotteries.room_key(room), now_ms + 1, "+inf", start=0, num=MAX_LISTED)
        pipe.zrangebyscore(k.room(room, "coupons"), now_ms + 1, "+inf", start=0, num=MAX_LISTED)
        if self._redpackets is not None:
            pipe.zrangebyscore(self._redpackets.room_key(room), now_ms + 1, "+inf", start=0, num=MAX_LISTED)
        async with guarded():
            seq, meta, pin, likes, board, lot_ids, drop_ids, *more = await pipe.execute()
        snap = RoomSnapshot(
            room=room,
            seq=int(seq or 0),
            meta=_meta(meta),
            pin=json.loads(pin) if pin else None,
            likes=int(likes or 0),
            leaderboard=ranked([(_s(m), float(sc)) for m, sc in board]),
        )
        lots = [_s(i) for i in lot_ids]
        drops = [_s(i) for i in drop_ids]
        packets = [_s(i) for i in more[0]] if more else []
        if lots or drops or packets:
            pipe = self._r.pipeline(transaction=False)
            for lid in lots:
                pipe.hgetall(self._lotteries.k(lid, "meta"))
            for did in drops:
                pipe.hgetall(self._coupons.key(did, "meta"))
                pipe.get(self._coupons.key(did, "left"))
            for pid in packets:
                assert self._redpackets is not None
                pipe.hgetall(self._redpackets.k(pid))
            async with guarded():
                res = await pipe.execute()
            for i, lid in enumerate(lots):
                st = stored_from_reply(res[i])
                if st is not None and st.state == "open":
                    snap.lotteries[lid] = st.lottery.public()
            base = len(lots)
            for j, did in enumerate(drops):
                got = drop_from_replies(res[base + 2 * j], res[base + 2 * j + 1])
                if got is not None:
                    drop, counts = got
                    snap.coupons[did] = coupon_entry(public_drop(drop), counts["remaining"], counts["claimed"], counts["used"])
            base += 2 * len(drops)
            for j, pid in enumerate(packets):
                rp = packet_from_reply(res[base + j])
                if rp is not None and rp.state == "open":
                    snap.redpackets[pid] = rp.packet.public()
        return snap

    async def refresh(self, snaps: Iterable[RoomSnapshot]) -> dict[str, tuple[dict[str, str] | None, dict[str, tuple[int, int, int]]]]:
        """For each snapshot: the room's meta when the snapshot has none (the room may have
        been created since) else its own, and the counts ``(remaining, claimed, used)`` of
        its listed drops (a drop gone from Redis is left out). One round trip.

        Raises:
            Unavailable: Redis unreachable.
        """
        plan: list[tuple[RoomSnapshot, bool, list[str]]] = []
        pipe = self._r.pipeline(transaction=False)
        for snap in snaps:
            ask_meta = snap.meta is None
            if ask_meta:
                pipe.hgetall(self.keys.room_meta(snap.room))
            drops = list(snap.coupons)
            for did in drops:
                pipe.hgetall(self._coupons.key(did, "meta"))
                pipe.get(self._coupons.key(did, "left"))
            plan.append((snap, ask_meta, drops))
        if not plan:
            return {}
        async with guarded():
            res = await pipe.execute()
        out: dict[str, tuple[dict[str, str] | None, dict[str, tuple[int, int, int]]]] = {}
        i = 0
        for snap, ask_meta, drops in plan:
            meta = snap.meta
            if ask_meta:
                meta = _meta(res[i])
                i += 1
            counts: dict[str, tuple[int, int, int]] = {}
            for did in drops:
                got = drop_from_replies(res[i], res[i + 1])
                i += 2
                if got is not None:
                    c = got[1]
                    counts[did] = (c["remaining"], c["claimed"], c["used"])
            out[snap.room] = (meta, counts)
        return out
