"""The durable log on Redis Streams: the default ``Log`` backend.

Layout: each topic has ``partitions`` streams, ``Keys.stream(f"{topic}:{p}")`` (for example
``lc:{log:orders:0}``), so every partition has its own hash tag and every command below
touches one stream, hence one slot: the same code runs on one Redis and on Redis Cluster
(``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``). A key's partition is
:func:`~livecommerce.log.partition_for`; each entry is one field ``e``, the msgpack of the
event (:func:`~livecommerce.log.encode_event`).

Delivery (the contract is in :mod:`livecommerce.log`):

* a group is created on each partition stream at ``0`` (XGROUP CREATE MKSTREAM, BUSYGROUP
  ignored), so a new group reads the stream from its first entry;
* ``fetch`` returns, in this order: what this consumer name still held when its previous
  incarnation stopped (XREADGROUP ``0``, once), nacked entries (XCLAIM to itself), entries
  pending longer than ``claim_idle_ms`` in the group (XAUTOCLAIM, at most every
  ``claim_idle_ms / 2``), then new entries (XREADGROUP ``>``, blocking);
* ``ack`` is XACK; ``close`` marks held entries idle (XCLAIM ... IDLE) so that a live member
  claims them at its next XAUTOCLAIM instead of waiting ``claim_idle_ms``.

Entries trimmed by ``maxlen`` before being acked are acked and skipped. Driver errors become
:class:`~livecommerce.errors.Unavailable`.

Retention (:meth:`RedisLog.trim`, run by ``livecommerce worker retention``): an entry is
removed once every group of its stream has read past it and holds it no more (XINFO GROUPS,
XPENDING) and it is older than ``retain_ms``, with a hard cap ``max_age_ms`` whatever the
groups (:func:`livecommerce.retention.trim_point`; XTRIM MINID). A group that a finished
job left behind blocks trimming until the cap: drop it with :meth:`RedisLog.drop_group`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib.resources import files
from typing import Any

import redis.exceptions

from .errors import ConfigError, Unavailable
from .keys import Keys
from .log import (
    DEFAULT_CLAIM_IDLE_MS,
    TOPICS,
    Delivery,
    LogEvent,
    check_topic,
    decode_event,
    encode_event,
    new_event,
    partition_for,
)
from .redis_conn import DRIVER_ERRORS, run_script_calls
from .retention import GroupPosition, parse_id, trim_point

log = logging.getLogger("livecommerce.log.redis")

_FIELD = b"e"
_UNREACHABLE = (*DRIVER_ERRORS, redis.exceptions.ClusterError, redis.exceptions.RedisClusterException)
_POLL_MS = 100  # with several partitions, blocking reads are sliced so no partition waits long
APPEND = (files("livecommerce") / "log_append.lua").read_text()


@contextlib.asynccontextmanager
async def _guard() -> AsyncIterator[None]:
    try:
        yield
    except _UNREACHABLE as exc:
        raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc


def _sid(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


#: the most entries counted per stream when Redis cannot say a group's lag itself
LAG_COUNT_CAP = 100_000


class RedisLog:
    """``Log`` on Redis Streams.

    Args:
        redis: a ``redis.asyncio.Redis`` or ``RedisCluster`` (``decode_responses=False``).
        keys: key names (the prefix isolates tenants and tests).
        partitions: streams per topic; keys spread over them, so members of a group can
            work in parallel while each key keeps its order. 1 is right for one Redis.
        claim_idle_ms: how long an entry may stay pending with a silent member before
            another member takes it over. Longer than the slowest batch, or batches run twice.
        maxlen: approximate cap of each stream (None: unbounded). Keep it far above what
            consumers can lag, or unread events are lost.
        owns_client: close ``redis`` on :meth:`close`.
    """

    def __init__(
        self,
        redis: Any,
        keys: Keys,
        *,
        partitions: int = 1,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        maxlen: int | None = None,
        owns_client: bool = False,
    ) -> None:
        if partitions < 1:
            raise ConfigError("a log needs at least one partition")
        self.redis = redis
        self.keys = keys
        self.partitions = partitions
        self.claim_idle_ms = claim_idle_ms
        self.maxlen = maxlen
        self._owns = owns_client
        # every partition's stream name, built once (a batch append asks for each event's)
        self._stream_names = {(t, p): keys.stream(f"{t}:{p}") for t in TOPICS for p in range(partitions)}
        self._append = redis.register_script(APPEND)

    def stream(self, topic: str, partition: int) -> str:
        name = self._stream_names.get((topic, partition))
        if name is None:  # a topic beyond TOPICS
            name = self._stream_names[(topic, partition)] = self.keys.stream(f"{topic}:{partition}")
        return name

    async def append(
        self, topic: str, key: str, type: str, data: dict[str, Any], *, event_id: str | None = None, ts: int | None = None
    ) -> str:
        """XADD to the key's partition stream. See :meth:`livecommerce.log.Log.append`.

        Raises:
            ValueError: bad topic name.
            Unavailable: Redis unreachable.
        """
        event = new_event(topic, key, type, data, event_id, ts)
        stream = self.stream(topic, partition_for(key, self.partitions))
        async with _guard():
            await self.redis.xadd(stream, {_FIELD: encode_event(event)}, maxlen=self.maxlen, approximate=True)
        return event.id

    async def append_many(self, events: Sequence[LogEvent]) -> None:
        """One script call per partition stream (``log_append.lua``: its events XADDed in
        order, atomically), the calls pipelined in one round trip (concurrent on a cluster,
        where each stream's slot has its node). See :meth:`livecommerce.log.Log.append_many`.

        Raises:
            Unavailable: Redis unreachable.
        """
        if not events:
            return
        cap = "" if self.maxlen is None else str(self.maxlen)
        by_stream: dict[str, list[bytes]] = {}
        for event in events:
            stream = self.stream(event.topic, partition_for(event.key, self.partitions))
            packed = encode_event(event)
            by_stream.setdefault(stream, []).append(b"%d\x1f%s" % (len(packed), packed))
        calls = [([stream], [cap, b"".join(parts)]) for stream, parts in by_stream.items()]
        async with _guard():
            if len(calls) == 1:  # one partition stream (one Redis and one partition: every batch)
                await self._append(keys=calls[0][0], args=calls[0][1])
            else:
                await run_script_calls(self.redis, self._append, calls)

    async def consumer(self, topic: str, group: str, name: str) -> RedisConsumer:
        """Create the group on every partition stream (idempotent) and return a member.

        Raises:
            ValueError: bad topic name.
            Unavailable: Redis unreachable.
        """
        check_topic(topic)
        c = RedisConsumer(self, topic, group, name)
        for p in range(self.partitions):
            await c.create_group(p)
        return c

    async def streams(self) -> list[tuple[str, int]]:
        """``(topic, partition)`` of every log stream under this prefix (SCAN).

        Raises:
            Unavailable: Redis unreachable.
        """
        head = self.keys.stream("")[:-1]  # "<prefix>:{log:"
        out: set[tuple[str, int]] = set()
        async with _guard():
            async for raw in self.redis.scan_iter(match=head + "*}", count=1000):  # braces are literal in globs
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                topic, _, p = name[len(head) : -1].rpartition(":")
                if topic and p.isdigit():
                    out.add((topic, int(p)))
        return sorted(out)

    async def positions(self, topic: str, partition: int) -> list[GroupPosition]:
        """Where each consumer group of one partition stream is: its last delivered id and
        the oldest entry it still holds (XINFO GROUPS, XPENDING). Empty for no stream.

        Raises:
            Unavailable: Redis unreachable.
        """
        stream = self.stream(topic, partition)
        out: list[GroupPosition] = []
        async with _guard():
            try:
                groups = await self.redis.xinfo_groups(stream)
            except redis.exceptions.ResponseError:  # no such stream
                return []
            for g in groups:
                name = _text(g["name"])
                oldest = None
                if int(g["pending"]):
                    summary = await self.redis.xpending(stream, name)
                    if summary and summary.get("min") is not None:
                        oldest = _text(summary["min"])
                out.append(GroupPosition(name, _text(g["last-delivered-id"]), oldest))
        return out

    async def trim(
        self, topic: str, *, now_ms: int, retain_ms: int, max_age_ms: int = 0,
        before: Callable[[list[LogEvent]], Awaitable[None]] | None = None, chunk: int = 500,
    ) -> int:
        """Remove what no group needs any more from each partition of ``topic`` (see the
        module docstring); return the number of entries removed. ``before`` gets the events
        about to go, in chunks, and they go only once it returned (a snapshot of what the
        log will no longer hold: profiles' base).

        Raises:
            Unavailable: Redis unreachable.
            Exception: whatever ``before`` raised (that partition is not trimmed).
        """
        removed = 0
        for p in range(self.partitions):
            groups = await self.positions(topic, p)
            ms, seq = trim_point(groups, now_ms=now_ms, retain_ms=retain_ms, max_age_ms=max_age_ms)
            if ms <= 0:
                continue
            if before is not None:
                await self._replay_before(self.stream(topic, p), f"{ms}-{seq}", before, chunk)
            stream = self.stream(topic, p)
            free = trim_point(groups, now_ms=now_ms, retain_ms=retain_ms)  # what every group let go
            async with _guard():
                last_lost = await self.redis.xrevrange(stream, f"({ms}-{seq}", "-", count=1) if (ms, seq) > free else []
                if (ms, seq) > free and free > (0, 0):
                    removed += int(await self.redis.xtrim(stream, minid=f"{free[0]}-{free[1]}", approximate=False))
                lost = int(await self.redis.xtrim(stream, minid=f"{ms}-{seq}", approximate=False))
            removed += lost
            if lost and (ms, seq) > free:  # the hard cap took entries some group still needed
                last = parse_id(_text(last_lost[0][0])) if last_lost else (ms, seq)
                behind = [g.name for g in groups if trim_point([g], now_ms=now_ms, retain_ms=0) <= last]
                log.error("log.group_lost_entries", extra={"topic": topic, "partition": p, "groups": behind, "entries": lost,
                                                           "max_age_s": max_age_ms // 1000})
        return removed

    async def _replay_before(self, stream: str, minid: str, before: Callable[[list[LogEvent]], Awaitable[None]], chunk: int) -> None:
        start = "-"
        while True:
            async with _guard():
                rows = await self.redis.xrange(stream, start, f"({minid}", count=chunk)
            if not rows:
                return
            events = []
            for _, fields in rows:
                raw = fields.get(_FIELD) if fields else None
                if raw is None:
                    continue
                with contextlib.suppress(ValueError):
                    events.append(decode_event(raw))
            if events:
                await before(events)
            if len(rows) < chunk:
                return
            start = "(" + _text(rows[-1][0])

    async def drop_group(self, topic: str, group: str) -> None:
        """Delete a consumer group from every partition stream (a finished rebuild's), so
        it no longer holds back trimming. Idempotent.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with _guard():
            for p in range(self.partitions):
                with contextlib.suppress(redis.exceptions.ResponseError):
                    await self.redis.xgroup_destroy(self.stream(topic, p), group)

    async def close(self) -> None:
        """Close the client if this log opened it."""
        if self._owns:
            with contextlib.suppress(*_UNREACHABLE):
                await self.redis.aclose()


class RedisConsumer:
    """A member of a Redis Streams consumer group; tokens are ``(partition, stream id)``."""

    def __init__(self, log: RedisLog, topic: str, group: str, name: str) -> None:
        self._log = log
        self._r = log.redis
        self.topic = topic
        self.group = group
        self.name = name
        n = log.partitions
        self._streams = [log.stream(topic, p) for p in range(n)]
        self._history: list[bytes | None] = [b"0"] * n  # own pending left to re-read; None: done
        self._claim_cursor: list[bytes] = [b"0-0"] * n
        self._next_claim = 0.0  # monotonic time of the next XAUTOCLAIM sweep
        self._retry: dict[int, list[bytes]] = {}
        self._held: list[set[bytes]] = [set() for _ in range(n)]
        self._start = 0  # partition the next read starts at (round robin)

    async def create_group(self, partition: int) -> None:
        """XGROUP CREATE ... 0 MKSTREAM, ignoring BUSYGROUP.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with _guard():
            try:
                await self._r.xgroup_create(self._streams[partition], self.group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # -------------------------------------------------------------- fetch
    async def fetch(self, *, max_events: int = 100, timeout_ms: int = 1000) -> list[Delivery]:
        """See :meth:`livecommerce.log.Consumer.fetch`.

        Raises:
            Unavailable: Redis unreachable.
        """
        deadline = time.monotonic() + timeout_ms / 1000
        out: list[Delivery] = []
        async with _guard():
            while True:
                await self._read_history(out, max_events)
                await self._claim_retries(out, max_events)
                if len(out) < max_events and time.monotonic() >= self._next_claim:
                    await self._autoclaim(out, max_events)
                if len(out) < max_events:
                    await self._read_new(out, max_events, block_ms=0)
                now = time.monotonic()
                if out or now >= deadline:
                    return out
                # nothing yet: block on new entries until the deadline or the next claim sweep
                wait_ms = int((min(deadline, self._next_claim) - now) * 1000)
                if wait_ms > 0:
                    await self._read_new(out, max_events, block_ms=wait_ms)
                    if out:
                        return out

    def _accept(self, partition: int, entries: list[Any], out: list[Delivery], gone: list[bytes]) -> None:
        for sid, fields in entries:
            sid = _sid(sid)
            raw = fields.get(_FIELD) if fields else None
            if raw is None:  # trimmed before it was acked: nothing left to deliver
                gone.append(sid)
                continue
            try:
                event = decode_event(raw)
            except ValueError:
                log.error("log.bad_entry", extra={"stream": self._streams[partition], "id": sid.decode()})
                gone.append(sid)
                continue
            self._held[partition].add(sid)
            out.append(Delivery(event, (partition, sid)))

    async def _drop(self, partition: int, gone: list[bytes]) -> None:
        if gone:
            await self._r.xack(self._streams[partition], self.group, *gone)

    async def _xreadgroup(self, partition: int, start: bytes | str, count: int, block: int | None) -> list[Any]:
        stream = self._streams[partition]
        try:
            reply = await self._r.xreadgroup(self.group, self.name, {stream: start}, count=count, block=block)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.create_group(partition)  # the stream was deleted under us
            return []
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: [entries]}
            (entries,) = reply.values()
            return list(entries[0])
        return list(reply[0][1])

    async def _read_history(self, out: list[Delivery], max_events: int) -> None:
        """Entries this consumer name still held from a previous run (XREADGROUP 0)."""
        for p, after in enumerate(self._history):
            while after is not None and len(out) < max_events:
                entries = await self._xreadgroup(p, after, max_events - len(out), None)
                if not entries:
                    after = None
                    break
                after = _sid(entries[-1][0])
                gone: list[bytes] = []
                self._accept(p, entries, out, gone)
                await self._drop(p, gone)
            self._history[p] = after

    async def _claim_retries(self, out: list[Delivery], max_events: int) -> None:
        """Nacked entries, claimed back by this member (they come back first)."""
        for p in list(self._retry):
            ids = self._retry[p]
            take, rest = ids[: max_events - len(out)], ids[max_events - len(out) :]
            if not take:
                break
            if rest:
                self._retry[p] = rest
            else:
                del self._retry[p]
            entries = await self._r.xclaim(self._streams[p], self.group, self.name, 0, take)
            by_id = {_sid(sid): (sid, fields) for sid, fields in entries}
            ordered = [by_id[i] for i in take if i in by_id]  # nack order, not stream order
            gone: list[bytes] = []
            self._accept(p, ordered, out, gone)
            await self._drop(p, gone)

    async def _autoclaim(self, out: list[Delivery], max_events: int) -> None:
        """XAUTOCLAIM entries idle for ``claim_idle_ms`` in the group (a dead member's)."""
        self._next_claim = time.monotonic() + max(self._log.claim_idle_ms / 2000, 0.05)
        for p in range(len(self._streams)):
            if len(out) >= max_events:
                return
            reply = await self._r.xautoclaim(
                self._streams[p], self.group, self.name, self._log.claim_idle_ms,
                start_id=self._claim_cursor[p], count=max_events - len(out),
            )
            self._claim_cursor[p] = _sid(reply[0])
            gone: list[bytes] = []
            self._accept(p, list(reply[1]), out, gone)
            await self._drop(p, gone)

    async def _read_new(self, out: list[Delivery], max_events: int, *, block_ms: int) -> None:
        """XREADGROUP ``>`` on each partition stream, one command per stream."""
        n = len(self._streams)
        order = [(self._start + i) % n for i in range(n)]
        self._start = (self._start + 1) % n
        if block_ms <= 0:
            for p in order:
                if len(out) >= max_events:
                    return
                gone: list[bytes] = []
                self._accept(p, await self._xreadgroup(p, ">", max_events - len(out), None), out, gone)
                await self._drop(p, gone)
            return
        if n == 1:
            gone = []
            self._accept(0, await self._xreadgroup(0, ">", max_events - len(out), block_ms), out, gone)
            await self._drop(0, gone)
            return
        # several streams, several slots: no multi-key read, so poll them in short slices
        deadline = time.monotonic() + block_ms / 1000
        while not out:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return
            slice_ms = min(left_ms, _POLL_MS)
            per = max(1, (max_events - len(out)) // n)
            for p in order:
                gone = []
                # block only on the first stream of the round; the rest are checked at once
                block = slice_ms if p == order[0] else None
                self._accept(p, await self._xreadgroup(p, ">", per, block), out, gone)
                await self._drop(p, gone)
                if out:
                    break

    # -------------------------------------------------------------- lag
    async def lag(self) -> dict[int, int]:
        """See :meth:`livecommerce.log.LagReporter.lag`: per partition stream, the entries
        the group has not acked: never delivered (XINFO GROUPS ``lag``) plus pending. Where
        Redis cannot tell the undelivered count (trimmed entries, Redis < 7), the entries
        after the group's last delivered id are counted, up to :data:`LAG_COUNT_CAP`.

        Raises:
            Unavailable: Redis unreachable.
        """
        out: dict[int, int] = {}
        async with _guard():
            for p, stream in enumerate(self._streams):
                try:
                    groups = await self._r.xinfo_groups(stream)
                except redis.exceptions.ResponseError:  # the stream is gone (nothing to read)
                    out[p] = 0
                    continue
                for g in groups:
                    if _text(g["name"]) != self.group:
                        continue
                    undelivered = g.get("lag")
                    if undelivered is None:
                        after = "(" + _text(g["last-delivered-id"])
                        undelivered = len(await self._r.xrange(stream, min=after, max="+", count=LAG_COUNT_CAP))
                    out[p] = int(undelivered) + int(g["pending"])
        return out

    # -------------------------------------------------------------- ack, nack, close
    def _by_partition(self, deliveries: list[Delivery]) -> dict[int, list[bytes]]:
        groups: dict[int, list[bytes]] = {}
        for d in deliveries:
            p, sid = d.token
            groups.setdefault(p, []).append(sid)
        return groups

    async def ack(self, deliveries: list[Delivery]) -> None:
        """XACK per partition stream. See :meth:`livecommerce.log.Consumer.ack`.

        Raises:
            Unavailable: Redis unreachable (the entries stay pending).
        """
        async with _guard():
            for p, ids in self._by_partition(deliveries).items():
                await self._r.xack(self._streams[p], self.group, *ids)
                self._held[p].difference_update(ids)

    async def nack(self, deliveries: list[Delivery]) -> None:
        """Queue the entries to be claimed back by the next fetch (no Redis call)."""
        for p, ids in self._by_partition(deliveries).items():
            self._held[p].difference_update(ids)
            queued = self._retry.setdefault(p, [])
            queued.extend(i for i in ids if i not in queued)

    async def close(self) -> None:
        """Mark held entries idle so live members claim them at once; best effort.

        Raises:
            Unavailable: Redis unreachable (the entries are then claimed after
                ``claim_idle_ms`` as for a dead member).
        """
        async with _guard():
            for p in range(len(self._streams)):
                ids = sorted(self._held[p] | set(self._retry.get(p, [])))
                if ids:
                    await self._r.xclaim(
                        self._streams[p], self.group, self.name, 0, ids,
                        idle=self._log.claim_idle_ms, justid=True,
                    )
                self._held[p].clear()
            self._retry.clear()
