"""Redis adapter for wallets: balances, gift debits with combos, top-ups, and the outbox.

Keys: a user's wallet lives in shard ``N = shard_of(user)`` (64 shards), every key of a
shard in the ``{wallet:N}`` slot, so each script touches one slot:

* ``{wallet:N}:bal``      hash user -> coins (the hot balance; never below zero)
* ``{wallet:N}:out``      hash event id -> packed log event (the outbox, see
  :mod:`livecommerce.wallet`)
* ``{wallet:N}:topups``   hash ``"<key>|<user>"`` -> amount (top-up idempotency, kept)
* ``{wallet:N}:combo:<user>:<room>:<gift>``  ``"combo_id|total"``, expires after the combo window
* ``{wallet:N}:greq:<len(user)>:<user>:<request id>``  a gift request debited: its first
  outcome (fingerprint, balance, combo, event id), expires after a day

Sharding by a fixed number of slots instead of ``{user:ID}`` lets the outbox sweeper find
every pending event by scanning 64 hashes, with no index to keep in step.

Contracts:

* :meth:`send_gift` debits ``price * count`` only when the balance covers it, grows the
  combo and stores the ``gift.sent`` event in the outbox, in one script.
* :meth:`send_gifts` does the same for a batch (the gift storm): one script call per
  wallet shard of the batch (``wallet_gift_batch.lua``, the twin of
  :func:`~livecommerce.wallet.decide_gift_batch`), all of them in one pipeline on one Redis
  (concurrent calls on a cluster); a gift with a ``request_id`` is debited at most once and
  a repeat answers the first outcome.
* :meth:`topup` credits once per ``(user, idempotency key)``.
* :meth:`publish` appends outbox events to the log, then clears them; :meth:`sweep`
  re-appends events left in the outbox (their gateway died or the log was down) once older
  than a grace period. Appends reuse the event id, so the ledger worker absorbs duplicates.

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

from .errors import IdempotencyConflict
from .gifts import COMBO_WINDOW_MS, Combo, GiftSpec
from .keys import Keys
from .log import Log, LogEvent, decode_event, encode_event, new_event
from .redis_conn import guarded, is_cluster_client, run_script_calls
from .wallet import (
    GIFT_REQUEST_TTL_MS,
    GIFT_REVERSED,
    GIFT_SENT,
    OUTBOX_GRACE_MS,
    TOPIC,
    TOPUP,
    WALLET_SHARDS,
    DebitReject,
    gift_fingerprint,
    gift_request_key,
    shard_of,
    topup_event_id,
)

_ids = random.Random()  # event ids: 128 random bits, seeded from the OS; cheaper than uuid4 per gift
GIFT = (files("livecommerce") / "wallet_gift.lua").read_text()
GIFT_BATCH = (files("livecommerce") / "wallet_gift_batch.lua").read_text()
TOPUP_LUA = (files("livecommerce") / "wallet_topup.lua").read_text()
CLEAR = (files("livecommerce") / "wallet_clear.lua").read_text()


@dataclass(frozen=True, slots=True)
class SentGift:
    """A debited gift: its ``gift.sent`` event (in the outbox until published), the
    sender's balance after it, and the combo it joined."""

    event: LogEvent
    balance: int
    combo: Combo


@dataclass(slots=True)
class GiftOrder:
    """One gift of a batch: ``user`` sends ``count`` units of ``spec`` in ``room`` (whose
    host gets the credit); ``request_id`` (optional) makes a retry answer the first outcome.
    (Not frozen: built once per gift on the hot path, at a fifth of a frozen one's cost.)"""

    user: str
    room: str
    host: str
    spec: GiftSpec
    count: int
    combo_id: str | None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class GiftReplayed:
    """A gift whose request id was debited before: the first debit's balance (right after
    it), combo and event id. Nothing moved now; the first debit's event is in the log or
    still in the outbox (the sweeper appends it)."""

    event_id: str
    balance: int
    combo: Combo


@dataclass(frozen=True, slots=True)
class GiftRefused:
    """Nothing moved: ``insufficient_funds`` (``balance`` is what the wallet holds) or
    ``idempotency_conflict`` (the request id was used for another gift)."""

    code: Literal["insufficient_funds", "idempotency_conflict"]
    balance: int


GiftResult = SentGift | GiftReplayed | GiftRefused


@dataclass(frozen=True, slots=True)
class ToppedUp:
    """A top-up: its ``wallet.topup`` event, the balance, and whether the idempotency key
    had been used before (then nothing was credited now)."""

    event: LogEvent
    balance: int
    duplicate: bool


class RedisWallet:
    def __init__(self, redis: Any, keys: Keys, *, combo_window_ms: int = COMBO_WINDOW_MS,
                 shards_per_call: int | None = None) -> None:
        """``shards_per_call``: how many wallet shards one gift batch script call may hold:
        1 (one call per shard, all of a batch's calls in one pipeline), or 0 for every shard
        of a batch in one call. Default: 1 on Redis Cluster (a script's keys must share a
        slot there), 0 on one Redis (no slots: one call instead of one per shard spares the
        client most of its per-command cost)."""
        self._r = redis
        self.keys = keys
        self.combo_window_ms = combo_window_ms
        self.shards_per_call = (1 if is_cluster_client(redis) else 0) if shards_per_call is None else shards_per_call
        self._gift = redis.register_script(GIFT)
        self._gift_batch = redis.register_script(GIFT_BATCH)
        self._topup = redis.register_script(TOPUP_LUA)
        self._clear = redis.register_script(CLEAR)
        self._shard_keys = [(self._k(n, "bal"), self._k(n, "out")) for n in range(WALLET_SHARDS)]

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

    async def send_gifts(self, orders: Sequence[GiftOrder], *, now_ms: int) -> list[GiftResult]:
        """Decide a batch of gifts, in arrival order per wallet shard (see the module
        docstring); the results in the order of ``orders``. Each :class:`SentGift`'s event
        is in the outbox until published. Room, gift and combo ids must hold no newline nor
        \\x1f (the wire's ids cannot).

        Raises:
            Unavailable: Redis unreachable. Each script call is atomic; which calls ran is
                unknown, so callers answer ``unavailable`` and a client's retry with the same
                request id learns the outcome.
        """
        by_shard: dict[int, list[int]] = {}
        for i, o in enumerate(orders):
            by_shard.setdefault(shard_of(o.user), []).append(i)
        events: list[LogEvent | None] = [None] * len(orders)
        order: list[int] = []  # the orders' indexes in the order of the script's answers
        calls: list[tuple[list[str], list[Any]]] = []
        keys: list[str] = []
        args: list[Any] = []
        entity = self.keys.entity
        for shard, idx in by_shard.items():
            if not keys or self.shards_per_call == 1:
                keys, args = [], [self.combo_window_ms, GIFT_REQUEST_TTL_MS]
                calls.append((keys, args))
            keys += self._shard_keys[shard]
            sid = str(shard)
            blob: list[bytes] = []
            for i in idx:
                o = orders[i]
                spec = o.spec
                cost = spec.price * o.count
                eid = f"{_ids.getrandbits(128):032x}"
                event = events[i] = LogEvent(id=eid, topic=TOPIC, key=o.user, type=GIFT_SENT, ts=now_ms, data={
                    "user": o.user, "room": o.room, "host": o.host, "gift_id": spec.id, "count": o.count,
                    "price": spec.price, "value": cost})
                keys.append(entity("wallet", sid, f"combo:{o.user}:{o.room}:{spec.id}"))
                if o.request_id:
                    keys.append(entity("wallet", sid, "greq:" + gift_request_key(o.user, o.request_id)))
                    fp = gift_fingerprint(o.room, spec.id, o.count, o.combo_id)
                else:
                    fp = ""
                user = o.user.encode()
                packed = encode_event(event)
                blob += (f"{cost}\x1f{o.count}\x1f{o.combo_id or ''}\x1f{eid[:12]}\x1f{eid}\x1f{fp}\x1f{len(user)}\x1f"
                         f"{len(packed)}\x1f".encode(), user, packed)
            args += (len(idx), b"".join(blob))
            order += idx
        async with guarded():
            replies = await run_script_calls(self._r, self._gift_batch, calls)
        out: list[GiftResult | None] = [None] * len(orders)
        r = [x for reply in replies for x in reply] if len(replies) > 1 else replies[0]
        j = 0
        for i in order:
            code = r[j]
            if code == b"ok":
                ev = events[i]
                assert ev is not None
                out[i] = SentGift(ev, int(r[j + 1]), Combo(_s(r[j + 2]), int(r[j + 3])))
            elif code == b"dup":
                out[i] = GiftReplayed(_s(r[j + 4]), int(r[j + 1]), Combo(_s(r[j + 2]), int(r[j + 3])))
            else:
                out[i] = GiftRefused("insufficient_funds" if code == b"insufficient_funds" else "idempotency_conflict",
                                     int(r[j + 1]))
            j += 5
        return out  # type: ignore[return-value]  # every index was filled

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

    async def reverse_gift(self, *, user: str, gift_event_id: str, event_id: str, data: dict[str, Any],
                           now_ms: int) -> tuple[LogEvent, int, bool]:
        """Record a gift's reversal once (:mod:`livecommerce.earnings`): credit the sender
        ``data["refund_coins"]`` (0 for a chargeback) and put the ``gift.reversed`` event in
        the outbox, in one script (the top-up script, keyed ``rev:<gift event>``). Returns
        ``(event, balance, duplicate)``; a repeat of the same reversal moves nothing
        (``duplicate``: the first one's event is in the log or still in the outbox, which
        the sweeper appends; the event returned then is not to be appended).

        Raises:
            IdempotencyConflict: the gift was reversed before as the other kind.
            Unavailable: Redis unreachable.
        """
        coins = int(data["refund_coins"])
        event = new_event(TOPIC, user, GIFT_REVERSED, data, event_id, now_ms)
        keys = [self._k(user, "bal"), self._k(user, "out"), self._k(user, "topups")]
        async with guarded():
            code, bal = await self._topup(keys=keys, args=[user, coins, f"rev:{gift_event_id}|{user}", event_id, encode_event(event)])
        if int(code) < 0:
            raise IdempotencyConflict("the gift was reversed before as the other kind (refund or chargeback): nothing changed")
        return event, int(bal), int(code) == 0

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
        """Forget published outbox entries: ``wallet_clear.lua``, one call per shard
        (pipelined) on a cluster, one call for every shard on one Redis."""
        by_shard: dict[str, list[bytes]] = {}
        for e in events:
            eid = e.id.encode()
            by_shard.setdefault(self._k(e.key, "out"), []).append(b"%d\x1f%s" % (len(eid), eid))
        if not by_shard:
            return
        if self.shards_per_call == 1:
            calls: list[tuple[list[str], list[bytes]]] = [([key], [b"".join(ids)]) for key, ids in by_shard.items()]
        else:
            calls = [(list(by_shard), [b"".join(ids) for ids in by_shard.values()])]
        async with guarded():
            await run_script_calls(self._r, self._clear, calls)

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

    async def gift_request(self, user: str, request_id: str) -> str | None:
        """The event id of ``user``'s gift request ``request_id`` if it was debited (within
        a day), else None (tests and operators: was this gift taken?)."""
        async with guarded():
            v = await self._r.get(self._k(user, "greq:" + gift_request_key(user, request_id)))
        return None if v is None else _s(v).rsplit("\n", 1)[-1]

    async def combo(self, user: str, room: str, gift_id: str) -> Combo | None:
        """The user's running combo of ``gift_id`` in ``room`` (None outside the window)."""
        async with guarded():
            v = await self._r.get(self._k(user, f"combo:{user}:{room}:{gift_id}"))
        if v is None:
            return None
        cid, _, total = (v.decode() if isinstance(v, bytes) else v).partition("|")
        return Combo(cid, int(total))



def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
