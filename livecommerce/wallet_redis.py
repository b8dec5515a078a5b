"""Redis adapter for wallets: balances, gift debits with combos, top-ups, and the outbox.

Keys: a user's wallet lives in shard ``N = shard_of(user)`` (64 shards), every key of a
shard in the ``{wallet:N}`` slot, so each script touches one slot:

* ``{wallet:N}:bal``      hash user -> coins (the hot balance; never below zero)
* ``{wallet:N}:out``      hash event id -> packed log event (the outbox, see
  :mod:`livecommerce.wallet`)
* ``{wallet:N}:topups``   hash ``"<key>|<user>"`` -> amount (top-up idempotency, kept)
* ``{wallet:N}:combo:<user>:<room>:<gift>``  ``"combo_id|total"``, expires after the combo window

Sharding by a fixed number of slots instead of ``{user:ID}`` lets the outbox sweeper find
every pending event by scanning 64 hashes, with no index to keep in step.

Contracts:

* :meth:`send_gift` debits ``price * count`` only when the balance covers it, grows the
  combo and stores the ``gift.sent`` event in the outbox, in one script.
* :meth:`topup` credits once per ``(user, idempotency key)``.
* :meth:`publish` appends outbox events to the log, then clears them; :meth:`sweep`
  re-appends events left in the outbox (their gateway died or the log was down) once older
  than a grace period. Appends reuse the event id, so the ledger worker absorbs duplicates.

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from .errors import IdempotencyConflict
from .gifts import COMBO_WINDOW_MS, Combo, GiftSpec
from .keys import Keys
from .log import Log, LogEvent, decode_event, encode_event, new_event
from .redis_conn import guarded
from .wallet import (
    GIFT_SENT,
    OUTBOX_GRACE_MS,
    TOPIC,
    TOPUP,
    WALLET_SHARDS,
    DebitReject,
    shard_of,
    topup_event_id,
)

GIFT = (files("livecommerce") / "wallet_gift.lua").read_text()
TOPUP_LUA = (files("livecommerce") / "wallet_topup.lua").read_text()


@dataclass(frozen=True, slots=True)
class SentGift:
    """A debited gift: its ``gift.sent`` event (in the outbox until published), the
    sender's balance after it, and the combo it joined."""

    event: LogEvent
    balance: int
    combo: Combo


@dataclass(frozen=True, slots=True)
class ToppedUp:
    """A top-up: its ``wallet.topup`` event, the balance, and whether the idempotency key
    had been used before (then nothing was credited now)."""

    event: LogEvent
    balance: int
    duplicate: bool


class RedisWallet:
    def __init__(self, redis: Any, keys: Keys, *, combo_window_ms: int = COMBO_WINDOW_MS) -> None:
        self._r = redis
        self.keys = keys
        self.combo_window_ms = combo_window_ms
        self._gift = redis.register_script(GIFT)
        self._topup = redis.register_script(TOPUP_LUA)

    def _k(self, user_or_shard: str | int, part: str) -> str:
        shard = user_or_shard if isinstance(user_or_shard, int) else shard_of(user_or_shard)
        return self.keys.entity("wallet", str(shard), part)

    async def balance(self, user: str) -> int:
        """The user's coins (0 for a wallet never topped up)."""
        async with guarded():
            v = await self._r.hget(self._k(user, "bal"), user)
        return int(v or 0)

    async def send_gift(
        self,
        *,
        user: str,
        room: str,
        host: str,
        spec: GiftSpec,
        count: int,
        combo_id: str | None,
        now_ms: int,
        event_id: str | None = None,
    ) -> SentGift | tuple[DebitReject, int]:
        """Debit ``spec.price * count`` coins from ``user`` for a gift to ``room``'s
        ``host``. Returns the :class:`SentGift`, or ``("insufficient_funds", balance)``
        with nothing changed.

        Raises:
            Unavailable: Redis unreachable (nothing or everything was done: one script).
        """
        cost = spec.price * count
        data = {
            "user": user,
            "room": room,
            "host": host,
            "gift_id": spec.id,
            "count": count,
            "price": spec.price,
            "value": cost,
        }
        event = new_event(TOPIC, user, GIFT_SENT, data, event_id or uuid.uuid4().hex, now_ms)
        combo_key = self._k(user, f"combo:{user}:{room}:{spec.id}")
        args = [user, cost, count, combo_id or "", uuid.uuid4().hex[:12], self.combo_window_ms, event.id, encode_event(event)]
        async with guarded():
            ok, bal, cid, total = await self._gift(keys=[self._k(user, "bal"), self._k(user, "out"), combo_key], args=args)
        if not int(ok):
            return "insufficient_funds", int(bal)
        cid = cid.decode() if isinstance(cid, bytes) else str(cid)
        return SentGift(event, int(bal), Combo(cid, int(total)))

    async def topup(self, *, user: str, amount: int, idempotency_key: str, by: str, now_ms: int) -> ToppedUp:
        """Credit ``amount`` coins once per ``(user, idempotency_key)``.

        Raises:
            IdempotencyConflict: the key was used for another amount.
            Unavailable: Redis unreachable.
        """
        eid = topup_event_id(user, idempotency_key)
        data = {"user": user, "amount": amount, "idempotency_key": idempotency_key, "by": by}
        event = new_event(TOPIC, user, TOPUP, data, eid, now_ms)
        keys = [self._k(user, "bal"), self._k(user, "out"), self._k(user, "topups")]
        async with guarded():
            code, bal = await self._topup(keys=keys, args=[user, amount, f"{idempotency_key}|{user}", eid, encode_event(event)])
        if int(code) < 0:
            raise IdempotencyConflict(f"idempotency key {idempotency_key!r} was used for another amount: use a new key")
        return ToppedUp(event, int(bal), duplicate=int(code) == 0)

    async def publish(self, log: Log, events: Iterable[LogEvent]) -> None:
        """Append outbox events to the log (same ids and times), then clear them.

        Raises:
            Unavailable: the log or Redis is unreachable; what was not cleared stays in
                the outbox for :meth:`sweep`.
        """
        done: list[LogEvent] = []
        for e in events:
            await log.append(e.topic, e.key, e.type, e.data, event_id=e.id, ts=e.ts)
            done.append(e)
        await self.clear(done)

    async def clear(self, events: Iterable[LogEvent]) -> None:
        """Forget published outbox entries (one pipelined HDEL per shard)."""
        by_shard: dict[str, list[str]] = {}
        for e in events:
            by_shard.setdefault(self._k(e.key, "out"), []).append(e.id)
        if not by_shard:
            return
        pipe = self._r.pipeline(transaction=False)
        for key, ids in by_shard.items():
            pipe.hdel(key, *ids)
        async with guarded():
            await pipe.execute()

    async def pending(self, *, older_than_ms: int | None = None) -> list[LogEvent]:
        """Outbox events (only those with ``ts`` before ``older_than_ms`` when given)."""
        out: list[LogEvent] = []
        async with guarded():
            for shard in range(WALLET_SHARDS):
                async for _eid, raw in self._r.hscan_iter(self._k(shard, "out"), count=500):
                    try:
                        e = decode_event(raw)
                    except ValueError:
                        continue
                    if older_than_ms is None or e.ts < older_than_ms:
                        out.append(e)
        return out

    async def sweep(self, log: Log, *, now_ms: int, grace_ms: int = OUTBOX_GRACE_MS) -> int:
        """Re-append outbox events older than ``grace_ms`` and clear them; return how many.

        Raises:
            Unavailable: the log or Redis is unreachable (the rest waits for the next sweep).
        """
        stale = await self.pending(older_than_ms=now_ms - grace_ms)
        if stale:
            await self.publish(log, stale)
        return len(stale)

    async def combo(self, user: str, room: str, gift_id: str) -> Combo | None:
        """The user's running combo of ``gift_id`` in ``room`` (None outside the window)."""
        async with guarded():
            v = await self._r.get(self._k(user, f"combo:{user}:{room}:{gift_id}"))
        if v is None:
            return None
        cid, _, total = (v.decode() if isinstance(v, bytes) else v).partition("|")
        return Combo(cid, int(total))

