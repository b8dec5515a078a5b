"""Redis adapter for lotteries: definition, entrants, state, committed record, indexes.

Keys (every per-lottery key shares the ``{lottery:ID}`` slot, so each script touches one slot):

* ``{lottery:ID}:meta``     hash: the definition, ``seed`` (secret until drawn), ``state``,
  ``record`` (JSON, once drawn), ``drawn_ms``, ``lease_owner``, ``lease_until``,
  ``closed_by`` (the show's stamp when the room's end closed it)
* ``{lottery:ID}:members``  set of entrants (each user once)
* ``{lottery:ID}:entrants`` list of entrants in entry order (the published order)
* ``{lottery:ID}:gifts``    hash user -> gift value so far (gift lotteries)
* ``lottery:due``           sorted set id -> deadline of lotteries not yet announced (workers poll it)
* ``{room:ID}:lotteries``   sorted set id -> deadline of the room's open lotteries

Contracts:

* :meth:`enter` is atomic: a user is added once, only while the lottery is ``open`` and the
  caller's clock is before the deadline, and (gift lotteries) once the user's gift total
  reaches the minimum.
* :meth:`transition` is a compare-and-set on ``state``; the draw is committed with
  ``closed -> drawn`` together with the record, so exactly one worker commits; the
  committer holds the announcer lease (:meth:`take_lease`).

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, cast

from .keys import Keys
from .lottery import EnterResult, Lottery, LotteryState, Prize, Rule, step
from .redis_conn import guarded

ENTER = (files("livecommerce") / "lottery_enter.lua").read_text()
STEP = (files("livecommerce") / "lottery_step.lua").read_text()
LEASE = (files("livecommerce") / "lottery_lease.lua").read_text()

RECORD_TTL_S = 30 * 24 * 3600  # after announce; SQL keeps records for good (later)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True, slots=True)
class Stored:
    """A lottery as stored: its definition, state, the secret seed, and the committed
    record once drawn (None before)."""

    lottery: Lottery
    state: LotteryState
    seed: str
    record: dict[str, Any] | None
    lease_owner: str
    lease_until: int


def _to_hash(lot: Lottery, seed: str) -> dict[str, str]:
    return {
        "id": lot.id,
        "room": lot.room,
        "title": lot.title,
        "host": lot.host,
        "prize_kind": lot.prize.kind,
        "prize_id": lot.prize.id,
        "prize_amount": str(lot.prize.amount),
        "prize_coupon": json.dumps(dict(lot.prize.coupon)) if lot.prize.coupon is not None else "",
        "winners_k": str(lot.winners_k),
        "rule": lot.rule,
        "keyword": lot.keyword,
        "min_gift_value": str(lot.min_gift_value),
        "started_ms": str(lot.started_ms),
        "deadline_ms": str(lot.deadline_ms),
        "seed_hash": lot.seed_hash,
        "seed": seed,
        "state": "open",
    }


def stored_from_reply(raw: Mapping[Any, Any] | None) -> Stored | None:
    """A lottery from the ``HGETALL`` of its meta hash (None: no such lottery); for readers
    that pipeline the read with others (the gateway's room snapshot)."""
    if not raw:
        return None
    return _from_hash({_s(k): _s(v) for k, v in raw.items()})


def _from_hash(h: Mapping[str, str]) -> Stored:
    lot = Lottery(
        id=h["id"],
        room=h["room"],
        prize=Prize(cast(Any, h["prize_kind"]), h["prize_id"], int(h.get("prize_amount") or 0),
                    json.loads(h["prize_coupon"]) if h.get("prize_coupon") else None),
        winners_k=int(h["winners_k"]),
        rule=cast(Rule, h["rule"]),
        started_ms=int(h["started_ms"]),
        deadline_ms=int(h["deadline_ms"]),
        seed_hash=h["seed_hash"],
        keyword=h.get("keyword", ""),
        min_gift_value=int(h.get("min_gift_value") or 0),
        title=h.get("title", ""),
        host=h.get("host", ""),
    )
    rec = h.get("record")
    return Stored(
        lottery=lot,
        state=cast(LotteryState, h["state"]),
        seed=h["seed"],
        record=json.loads(rec) if rec else None,
        lease_owner=h.get("lease_owner", ""),
        lease_until=int(h.get("lease_until") or 0),
    )


class RedisLotteries:
    """The lottery store on Redis (one server or a cluster)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys
        self._enter = redis.register_script(ENTER)
        self._step = redis.register_script(STEP)
        self._lease = redis.register_script(LEASE)

    # ---- key names
    def k(self, lottery_id: str, part: str) -> str:
        return self.keys.entity("lottery", lottery_id, part)

    @property
    def due_key(self) -> str:
        return self.keys.global_key("lottery:due")

    def room_key(self, room: str) -> str:
        return self.keys.room(room, "lotteries")

    # ---- writes
    async def create(self, lot: Lottery, seed: str) -> None:
        """Store a new lottery as ``open`` and index it (due set, room's open set).

        The meta hash is written first, so an index never names a missing lottery.
        """
        async with guarded():
            await self._r.hset(self.k(lot.id, "meta"), mapping=_to_hash(lot, seed))
            await self._r.zadd(self.due_key, {lot.id: lot.deadline_ms})
            await self._r.zadd(self.room_key(lot.room), {lot.id: lot.deadline_ms})

    async def enter(self, lottery_id: str, user: str, *, now_ms: int, gift_value: int = 0) -> tuple[EnterResult, int]:
        """Add ``user`` once (see the module contract). Returns ``(result, n)``: for ``ok``
        the entrant's 1-based position, for ``rule_not_met`` the user's gift total."""
        keys = [self.k(lottery_id, p) for p in ("meta", "members", "entrants", "gifts")]
        async with guarded():
            code, n = await self._enter(keys=keys, args=[user, now_ms, gift_value])
        return cast(EnterResult, _s(code)), int(n)

    async def transition(
        self, lottery_id: str, expected: LotteryState, new: LotteryState, fields: Mapping[str, Any] | None = None
    ) -> tuple[bool, str]:
        """Compare-and-set ``state`` from ``expected`` to ``new``, setting ``fields`` with
        it. Returns ``(applied, state now)``; the state is ``''`` for an unknown lottery."""
        args: list[Any] = [expected, new]
        for f, v in (fields or {}).items():
            args += [f, v]
        async with guarded():
            ok, state = await self._step(keys=[self.k(lottery_id, "meta")], args=args)
        return bool(int(ok)), _s(state)

    async def commit(self, lottery_id: str, record: Mapping[str, Any], *, worker: str, now_ms: int, lease_ms: int) -> bool:
        """``closed -> drawn`` with the record; the committer takes the announcer lease.
        True for exactly one caller per lottery."""
        ok, _ = await self.transition(
            lottery_id,
            "closed",
            "drawn",
            {
                "record": json.dumps(record, separators=(",", ":"), ensure_ascii=False),
                "drawn_ms": record["drawn_ms"],
                "lease_owner": worker,
                "lease_until": now_ms + lease_ms,
            },
        )
        return ok

    async def take_lease(self, lottery_id: str, *, worker: str, now_ms: int, lease_ms: int) -> bool:
        """The announcer lease of a drawn lottery: True for its owner (a restarted worker
        with the same name) or for anyone once it expired."""
        async with guarded():
            return bool(await self._lease(keys=[self.k(lottery_id, "meta")], args=[worker, now_ms, lease_ms]))

    async def mark_announced(self, lottery_id: str, room: str, *, now_ms: int) -> bool:
        """``drawn -> announced``; drop it from the due set; keep the record 30 days."""
        ok, _ = await self.transition(lottery_id, "drawn", "announced", {"announced_ms": now_ms})
        async with guarded():
            await self._r.zrem(self.due_key, lottery_id)
            for part in ("meta", "members", "entrants", "gifts"):
                await self._r.expire(self.k(lottery_id, part), RECORD_TTL_S)
        return ok

    async def close_for_room(self, lottery_id: str, room: str, *, marker: str, draw: bool, now_ms: int) -> bool:
        """The room's show ended: an ``open`` lottery stops taking entries, stamped with
        ``marker``. With ``draw`` it is ``closed`` and due now (a draw worker draws it from
        the entrants it has); otherwise ``cancelled`` and never drawn (its keys then expire
        like an announced lottery's, ``RECORD_TTL_S``). True when the lottery
        is closed by this ``marker`` (now, or by an earlier call: repeating is a no-op);
        False for a lottery that was not open (drawn, closed by its deadline, gone). The
        room's index keeps it until the caller has recorded what closed (:meth:`unindex_room`).
        """
        new, _ = step("open", "close" if draw else "cancel")
        ok, state = await self.transition(lottery_id, "open", new, {"closed_ms": now_ms, "closed_by": marker})
        if not ok:
            async with guarded():
                stamp = await self._r.hget(self.k(lottery_id, "meta"), "closed_by")
            if stamp is None or _s(stamp) != marker:
                return False
        async with guarded():
            if state == "closed":  # due now; XX: never re-adds one already announced
                await self._r.zadd(self.due_key, {lottery_id: now_ms}, xx=True)
            elif state == "cancelled":  # never drawn or announced: its record lives as long as an announced one
                await self._r.zrem(self.due_key, lottery_id)
                for part in ("meta", "members", "entrants", "gifts"):
                    await self._r.expire(self.k(lottery_id, part), RECORD_TTL_S)
        return True

    async def forget(self, lottery_id: str) -> None:
        """Drop an id from the due set (its meta hash is gone)."""
        async with guarded():
            await self._r.zrem(self.due_key, lottery_id)

    async def unindex_room(self, lottery_id: str, room: str) -> None:
        """The lottery no longer takes entries: drop it from the room's open set."""
        async with guarded():
            await self._r.zrem(self.room_key(room), lottery_id)

    # ---- reads
    async def get(self, lottery_id: str) -> Stored | None:
        async with guarded():
            raw = await self._r.hgetall(self.k(lottery_id, "meta"))
        return stored_from_reply(raw)

    async def entrants(self, lottery_id: str) -> list[str]:
        """The ordered entrant list (entry order)."""
        async with guarded():
            return [_s(x) for x in await self._r.lrange(self.k(lottery_id, "entrants"), 0, -1)]

    async def entered(self, lottery_ids: Sequence[str], user: str) -> set[str]:
        """Which of ``lottery_ids`` ``user`` has entered: one pipelined round trip.

        Raises:
            Unavailable: Redis unreachable.
        """
        if not lottery_ids:
            return set()
        pipe = self._r.pipeline(transaction=False)
        for lid in lottery_ids:
            pipe.sismember(self.k(lid, "members"), user)
        async with guarded():
            got = await pipe.execute()
        return {lid for lid, yes in zip(lottery_ids, got, strict=True) if yes}

    async def entrant_count(self, lottery_id: str) -> int:
        async with guarded():
            return int(await self._r.llen(self.k(lottery_id, "entrants")))

    async def room_lottery_ids(self, room: str) -> list[str]:
        """Every id in the room's index (open lotteries, by deadline; also those past their
        deadline that no worker has closed yet)."""
        async with guarded():
            return [_s(i) for i in await self._r.zrange(self.room_key(room), 0, -1)]

    async def open_in_room(self, room: str, *, now_ms: int) -> list[Lottery]:
        """The room's lotteries whose deadline is still ahead (entries may still come)."""
        async with guarded():
            ids = await self._r.zrangebyscore(self.room_key(room), now_ms + 1, "+inf")
        out = []
        for i in ids:
            st = await self.get(_s(i))
            if st is not None and st.state == "open":
                out.append(st.lottery)
        return out

    async def due(self, *, now_ms: int, limit: int = 100) -> list[str]:
        """Ids of lotteries whose deadline passed and that are not announced yet."""
        async with guarded():
            ids = await self._r.zrangebyscore(self.due_key, "-inf", now_ms, start=0, num=limit)
        return [_s(i) for i in ids]

    async def public(self, lottery_id: str) -> dict[str, Any] | None:
        """What anyone may see: the committed record once drawn (seed, winners, proof,
        state); before that the definition, ``seed_hash``, state and entrant count."""
        st = await self.get(lottery_id)
        if st is None:
            return None
        if st.record is not None:
            return {**st.record, "state": st.state}
        return {**st.lottery.public(), "state": st.state, "entrant_count": await self.entrant_count(lottery_id)}
