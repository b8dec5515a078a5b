"""Redis adapter for red packets: drop (debit), grab, credit, end (refund), announce.

A packet lives in its dropper's wallet shard ``N`` (:func:`~livecommerce.wallet.shard_of`),
so the drop's debit and the packet are one script, and so is the end with its refund; its
id names the shard (``<N>-<token>``). Keys, all in the ``{wallet:N}`` slot:

* ``{wallet:N}:rp:<id>``          hash: the definition, ``seed`` (secret until the end),
  ``state``, ``grabbed`` (shares taken), ``taken`` (their coins), ``refunded``,
  ``ended_ms``, ``lease_owner``/``lease_until`` (the announcer)
* ``{wallet:N}:rp:<id>:shares``   list: the split, in grab order (fixed at the drop)
* ``{wallet:N}:rp:<id>:grabs``    hash user -> ``index|amount|at_ms``
* ``{wallet:N}:rp:<id>:order``    list: the grabbers in grab order
* ``{wallet:N}:rpdue``            sorted set packet id -> when the keeper looks at it (its
  expiry; 0 once every share is taken; the announcer's lease end while announcing)
* ``{wallet:N}:rpc``              hash credit id -> JSON: *pending credits*, shares grabbed
  (and refunds written) whose recipient's wallet is not credited yet
* ``{wallet:N}:rpreq:<len>:<user>:<request id>``  a drop request: ``fingerprint\\npacket``
* ``{wallet:M}:rpcr:<credit id>`` in the *recipient's* shard: the credit was applied (the
  mark that makes a second application a no-op), kept :data:`MARK_TTL_MS` (2 days)

Contracts:

* :meth:`drop` debits ``amount`` only when the balance covers it, stores the packet and its
  shares and writes ``redpacket.debit`` to the outbox, in one script; once per request id.
* :meth:`grab` takes the next share in one script: never more shares than the packet has,
  never two for one user, never after the end or the expiry; the share becomes a pending
  credit in the same step.
* :meth:`credit` applies a pending credit to its recipient once per credit id (the ledger
  event written to the recipient's outbox in the same step); :meth:`clear_pending` then
  forgets the pending entry. Anyone may :meth:`credit` a pending entry again: the gateway
  right after the grab, the keeper for entries left behind (:meth:`pending`).
* :meth:`step` ends a due packet once (the refund becomes a pending credit of the dropper)
  and leases its announcement; :meth:`announced` closes it.

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal, cast

from .keys import Keys
from .log import LogEvent, encode_event, new_event
from .redis_conn import guarded
from .redpackets import (
    CREDIT,
    DEBIT,
    REFUND,
    Grab,
    GrabCode,
    PacketState,
    RedPacket,
    build_record,
    debit_event_id,
    shard_of_packet,
)
from .wallet import TOPIC, WALLET_SHARDS, shard_of

DROP = (files("livecommerce") / "redpackets_drop.lua").read_text()
GRAB = (files("livecommerce") / "redpackets_grab.lua").read_text()
CREDIT_LUA = (files("livecommerce") / "redpackets_credit.lua").read_text()
STEP = (files("livecommerce") / "redpackets_step.lua").read_text()
DONE = (files("livecommerce") / "redpackets_done.lua").read_text()

REQUEST_TTL_MS = 24 * 3600 * 1000  # a drop's request id answers its first packet for a day
# a credit's applied-mark: far longer than a pending credit lives (the keeper applies and drops
# it within seconds; a keeper down for days is the bound), short enough that a million grabs a
# day keep about two million small keys
MARK_TTL_MS = 2 * 24 * 3600 * 1000
RECORD_TTL_MS = 30 * 24 * 3600 * 1000  # an announced packet's record

StepAction = Literal["open", "announce", "leased", "done", "missing"]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True, slots=True)
class Dropped:
    """The drop debited ``amount``: the dropper's balance after it and its ``redpacket.debit``
    event (in the outbox until published)."""

    balance: int
    event: LogEvent


@dataclass(frozen=True, slots=True)
class DropReplayed:
    """The request id dropped a packet before: its id. Nothing moved now."""

    packet_id: str


@dataclass(frozen=True, slots=True)
class DropRefused:
    """Nothing moved: ``insufficient_funds`` (``balance`` is what the wallet holds) or
    ``idempotency_conflict`` (the request id was used for another drop)."""

    code: Literal["insufficient_funds", "idempotency_conflict"]
    balance: int


DropResult = Dropped | DropReplayed | DropRefused


@dataclass(frozen=True, slots=True)
class PendingCredit:
    """A grabbed share (``kind`` ``credit``, ``index`` >= 0) or a refund (``refund``, index -1)
    not yet applied to ``user``'s wallet. ``id`` is its credit id and ledger event id."""

    id: str
    kind: Literal["credit", "refund"]
    user: str
    amount: int
    packet: str
    room: str
    by: str
    index: int
    ts: int

    @classmethod
    def from_json(cls, raw: str | bytes) -> PendingCredit:
        """Raises: ValueError: not a pending credit."""
        try:
            d = json.loads(raw)
            return cls(str(d["id"]), cast(Any, str(d["kind"])), str(d["user"]), int(d["amount"]), str(d["packet"]),
                       str(d["room"]), str(d["by"]), int(d["index"]), int(d["ts"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a pending credit: {exc!r}") from exc

    def event(self) -> LogEvent:
        """The ledger event, the same every time it is built (id, data and ts)."""
        data: dict[str, Any] = {"user": self.user, "amount": self.amount, "packet": self.packet, "room": self.room}
        if self.kind == "credit":
            data.update(by=self.by, index=self.index)
        return new_event(TOPIC, self.user, CREDIT if self.kind == "credit" else REFUND, data, self.id, self.ts)


@dataclass(frozen=True, slots=True)
class Grabbed:
    """What :meth:`RedisRedPackets.grab` answered: ``ok`` with the share (``amount``, its
    ``index``, shares ``left``) and its pending credit; ``already_grabbed`` with the user's
    first share; else a refusal code with zeros."""

    code: GrabCode
    amount: int = 0
    index: int = 0
    left: int = 0
    pending: PendingCredit | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """A packet as stored: definition, state, the secret seed, the counts and the refund."""

    packet: RedPacket
    state: PacketState
    seed: str
    grabbed: int
    taken: int
    refunded: int | None
    ended_ms: int | None


def packet_from_hash(h: Mapping[str, str]) -> RedPacket:
    return RedPacket(
        id=h["id"], room=h["room"], by=h["by"], host=h.get("host", ""), amount=int(h["amount"]), count=int(h["count"]),
        created_ms=int(h["created_ms"]), expires_ms=int(h["expires_ms"]), seed_hash=h["seed_hash"],
        password=h.get("password", ""), followers_only=h.get("followers_only") == "1", greeting=h.get("greeting", ""),
    )


def stored_from_reply(raw: Mapping[Any, Any] | None) -> Stored | None:
    """A packet from the ``HGETALL`` of its meta hash (None: no such packet); for readers
    that pipeline the read with others (the room snapshot)."""
    if not raw:
        return None
    h = {_s(k): _s(v) for k, v in raw.items()}
    return Stored(
        packet=packet_from_hash(h), state=cast(PacketState, h["state"]), seed=h.get("seed", ""),
        grabbed=int(h.get("grabbed") or 0), taken=int(h.get("taken") or 0),
        refunded=int(h["refunded"]) if h.get("refunded") else None,
        ended_ms=int(h["ended_ms"]) if h.get("ended_ms") else None,
    )


class RedisRedPackets:
    """The red packet store on Redis (one server or a cluster)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys
        self._drop = redis.register_script(DROP)
        self._grab = redis.register_script(GRAB)
        self._credit = redis.register_script(CREDIT_LUA)
        self._step = redis.register_script(STEP)
        self._done = redis.register_script(DONE)

    # ---- key names
    def _w(self, shard: int, part: str) -> str:
        return self.keys.entity("wallet", str(shard), part)

    def k(self, pid: str, part: str = "") -> str:
        """A key of packet ``pid`` (``part`` '' for its meta hash).

        Raises:
            ValueError: ``pid`` names no shard (callers check :func:`shard_of_packet` first).
        """
        shard = shard_of_packet(pid)
        if shard is None:
            raise ValueError(f"not a red packet id: {pid!r}")
        return self._w(shard, f"rp:{pid}" + (f":{part}" if part else ""))

    def room_key(self, room: str) -> str:
        """The room's index of its packets not yet announced (id -> expiry)."""
        return self.keys.room(room, "redpackets")

    # ---- the drop
    async def drop(self, packet: RedPacket, *, seed: str, shares: list[int], request_id: str, fingerprint: str) -> DropResult:
        """Debit the dropper and store the packet (module contract)."""
        shard = shard_of(packet.by)
        if shard_of_packet(packet.id) != shard:
            raise ValueError("a packet's id must name its dropper's wallet shard")
        event = new_event(TOPIC, packet.by, DEBIT, {"user": packet.by, "amount": packet.amount, "packet": packet.id,
                                                    "room": packet.room}, debit_event_id(packet.id), packet.created_ms)
        meta = {"id": packet.id, "room": packet.room, "by": packet.by, "host": packet.host, "amount": packet.amount,
                "count": packet.count, "created_ms": packet.created_ms, "expires_ms": packet.expires_ms,
                "seed_hash": packet.seed_hash, "seed": seed, "password": packet.password,
                "followers_only": int(packet.followers_only), "greeting": packet.greeting}
        args: list[Any] = [packet.by, packet.amount, packet.id, event.id, encode_event(event), packet.expires_ms,
                           REQUEST_TTL_MS, fingerprint, ",".join(map(str, shares))]
        for f, v in meta.items():
            args += [f, v]
        req = self._w(shard, f"rpreq:{len(packet.by)}:{packet.by}:{request_id}")
        keys = [self._w(shard, "bal"), self._w(shard, "out"), self.k(packet.id), self.k(packet.id, "shares"),
                self._w(shard, "rpdue"), req]
        async with guarded():
            code, v = await self._drop(keys=keys, args=args)
        code = _s(code)
        if code == "ok":
            return Dropped(int(v), event)
        if code == "dup":
            return DropReplayed(_s(v))
        return DropRefused(cast(Any, code), int(v or 0))

    async def index_room(self, packet: RedPacket) -> None:
        """List the packet in its room's index (what ``welcome`` and the room's listing read)."""
        async with guarded():
            await self._r.zadd(self.room_key(packet.room), {packet.id: packet.expires_ms})

    async def unindex_room(self, room: str, pid: str) -> None:
        async with guarded():
            await self._r.zrem(self.room_key(room), pid)

    async def room_packet_ids(self, room: str, *, now_ms: int) -> list[str]:
        """The room's packets whose expiry is still ahead, by expiry."""
        async with guarded():
            return [_s(i) for i in await self._r.zrangebyscore(self.room_key(room), now_ms + 1, "+inf")]

    # ---- grabbing and crediting
    async def grab(self, pid: str, user: str, *, now_ms: int) -> Grabbed:
        """Take the next share for ``user`` (module contract)."""
        shard = shard_of_packet(pid)
        if shard is None:
            return Grabbed("not_found")
        keys = [self.k(pid), self.k(pid, "shares"), self.k(pid, "grabs"), self.k(pid, "order"),
                self._w(shard, "rpc"), self._w(shard, "rpdue")]
        async with guarded():
            code, amount, index, left, pending = await self._grab(keys=keys, args=[user, now_ms, pid])
        c = cast(GrabCode, _s(code))
        return Grabbed(c, int(amount), int(index), int(left), PendingCredit.from_json(pending) if c == "ok" else None)

    async def credit(self, pc: PendingCredit) -> tuple[bool, int, LogEvent]:
        """Apply ``pc`` to its recipient's wallet once. Returns ``(credited now, balance,
        its ledger event)``; the event is in the recipient's wallet outbox when credited
        now (publish it with the wallet's outbox), and was written there before otherwise."""
        shard = shard_of(pc.user)
        ev = pc.event()
        keys = [self._w(shard, "bal"), self._w(shard, "out"), self._w(shard, f"rpcr:{pc.id}")]
        async with guarded():
            done, bal = await self._credit(keys=keys, args=[pc.user, pc.amount, pc.id, encode_event(ev), MARK_TTL_MS])
        return bool(int(done)), int(bal), ev

    async def clear_pending(self, pc: PendingCredit) -> None:
        """Forget an applied pending credit."""
        shard = shard_of_packet(pc.packet)
        if shard is None:
            return
        async with guarded():
            await self._r.hdel(self._w(shard, "rpc"), pc.id)

    async def pending(self, *, older_than_ms: int | None = None) -> list[PendingCredit]:
        """Pending credits of every shard (only those made before ``older_than_ms`` if given)."""
        pipe = self._r.pipeline(transaction=False)
        for n in range(WALLET_SHARDS):
            pipe.hgetall(self._w(n, "rpc"))
        async with guarded():
            got = await pipe.execute()
        out = []
        for h in got:
            for raw in (h or {}).values():
                try:
                    pc = PendingCredit.from_json(raw)
                except ValueError:
                    continue
                if older_than_ms is None or pc.ts < older_than_ms:
                    out.append(pc)
        return out

    # ---- the end
    async def due(self, *, now_ms: int, limit: int = 100) -> list[str]:
        """Ids of packets the keeper must look at now (expired, emptied, or a dead announcer's)."""
        pipe = self._r.pipeline(transaction=False)
        for n in range(WALLET_SHARDS):
            pipe.zrangebyscore(self._w(n, "rpdue"), "-inf", now_ms, start=0, num=limit)
        async with guarded():
            got = await pipe.execute()
        return [_s(i) for ids in got for i in ids][:limit]

    async def step(self, pid: str, *, now_ms: int, worker: str, lease_ms: int) -> tuple[StepAction, int]:
        """End a due packet once and lease its announcement (see ``redpackets_step.lua``)."""
        shard = shard_of_packet(pid)
        if shard is None:
            return "missing", 0
        async with guarded():
            action, refunded = await self._step(keys=[self.k(pid), self._w(shard, "rpdue"), self._w(shard, "rpc")],
                                                args=[now_ms, worker, lease_ms, pid])
        return cast(StepAction, _s(action)), int(refunded)

    async def announced(self, pid: str, *, now_ms: int) -> bool:
        """``ended -> announced``; off the due set; keys kept :data:`RECORD_TTL_MS`."""
        shard = shard_of_packet(pid)
        if shard is None:
            return False
        keys = [self.k(pid), self.k(pid, "shares"), self.k(pid, "grabs"), self.k(pid, "order"), self._w(shard, "rpdue")]
        async with guarded():
            return bool(await self._done(keys=keys, args=[pid, now_ms, RECORD_TTL_MS]))

    # ---- reads
    async def get(self, pid: str) -> Stored | None:
        if shard_of_packet(pid) is None:
            return None
        async with guarded():
            raw = await self._r.hgetall(self.k(pid))
        return stored_from_reply(raw)

    async def grabs(self, pid: str) -> list[Grab]:
        """The packet's grabs in grab order."""
        async with guarded():
            raw = await self._r.hgetall(self.k(pid, "grabs"))
        out = []
        for u, v in raw.items():
            i, a, t = _s(v).split("|")
            out.append(Grab(_s(u), int(a), int(i), int(t)))
        return sorted(out, key=lambda g: g.index)

    async def record(self, pid: str) -> dict[str, Any] | None:
        """The public record (:func:`~livecommerce.redpackets.build_record`): the seed and
        the shares only once the packet has ended."""
        st = await self.get(pid)
        if st is None:
            return None
        return build_record(st.packet, state=st.state, grabs=await self.grabs(pid),
                            seed=st.seed if st.state != "open" else None, refunded=st.refunded, ended_ms=st.ended_ms)

    async def balances(self, users: Iterable[str]) -> dict[str, int]:
        """Hot wallet balances (tests, the keeper's logs)."""
        users = list(users)
        pipe = self._r.pipeline(transaction=False)
        for u in users:
            pipe.hget(self._w(shard_of(u), "bal"), u)
        async with guarded():
            got = await pipe.execute()
        return {u: int(v or 0) for u, v in zip(users, got, strict=True)}
