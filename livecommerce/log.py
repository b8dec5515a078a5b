"""The ``Log`` port: the durable plane (at-least-once), and its in-memory twin.

Contract (every backend, checked by ``tests/test_log_contract.py``):

* ``append(topic, key, type, data)`` stores an event durably before returning its event id.
  Events with the same ``key`` keep their order (one partition per key).
* A consumer group sees every event appended to the topic, from the first one kept, at least
  once. Groups are independent: each group sees every event.
* Within one group each event is handed to one consumer at a time. An event handed to a
  consumer stays pending until ``ack``; if that consumer dies, the event is redelivered to
  another consumer of the group (Redis and memory: claimed once it has been pending longer
  than ``claim_idle_ms``; Kafka: rebalance, and reading resumes at the last committed offset).
  ``close`` without ``ack`` hands the event back to the group at once.
* ``nack`` gives deliveries back: they come back from the same consumer's next ``fetch``
  before new events (Kafka rewinds the partition, so the events after them come back too).
* Effects must be idempotent on ``LogEvent.id``: that is how at-least-once delivery becomes
  exactly-once effects (see ``livecommerce.store``: ``applied_events``).

Backends: :class:`MemoryLog` here (tests, single-process runs),
:class:`livecommerce.log_redis.RedisLog` (default, Redis Streams) and
:class:`livecommerce.log_kafka.KafkaLog` (scale-out); :func:`livecommerce.log_open.open_log`
picks one from the settings.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import msgpack

from .clock import now_ms
from .errors import ConfigError

TOPICS = ("orders", "gifts", "points", "lottery", "activity")

DEFAULT_CLAIM_IDLE_MS = 5000

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


@dataclass(frozen=True, slots=True)
class LogEvent:
    id: str  # globally unique event id: the idempotency key of every effect
    topic: str
    key: str  # partition key: order id, user id, room id
    type: str  # e.g. order.reserved, order.paid, gift.sent
    data: dict[str, Any]
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class Delivery:
    event: LogEvent
    token: Any  # backend handle used by ack (stream id / partition+offset)


class Consumer(Protocol):
    """One member of a consumer group, reading one topic.

    A consumer object is used by one task at a time (fetch, handle, ack, fetch ...).
    """

    async def fetch(self, *, max_events: int = 100, timeout_ms: int = 1000) -> list[Delivery]:
        """Up to ``max_events`` deliveries: redeliveries first, then new events.

        Waits up to ``timeout_ms`` for something to arrive; an empty list means nothing came.

        Raises:
            Unavailable: the backend cannot be reached.
        """
        ...

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Mark deliveries done; the group will not hand them out again.

        An ack that is lost (the consumer lost its Kafka partition meanwhile) is not an
        error: the event is redelivered and the idempotent effect absorbs it.

        Raises:
            Unavailable: the backend cannot be reached (the events stay pending).
        """
        ...

    async def nack(self, deliveries: list[Delivery]) -> None:
        """Give deliveries back unprocessed: the next ``fetch`` returns them again.

        Raises:
            Unavailable: the backend cannot be reached.
        """
        ...

    async def close(self) -> None:
        """Leave the group; deliveries not acked are handed back to the group."""
        ...


@runtime_checkable
class LagReporter(Protocol):
    """An optional ability of a :class:`Consumer` (probed with ``isinstance``): how far its
    group is behind on the partitions this member reads. The Redis and Kafka consumers have it."""

    async def lag(self) -> dict[int, int]:
        """``{partition: events}`` the group has not acked (committed) yet on each partition
        this member reads now: on Redis Streams every partition (each member reads all), on
        Kafka the partitions assigned to this member. Taken from the backend, so every member
        of a group reports the same figure for a partition.

        Raises:
            Unavailable: the backend cannot be reached.
        """
        ...


class Log(Protocol):
    async def append(
        self, topic: str, key: str, type: str, data: dict[str, Any], *, event_id: str | None = None, ts: int | None = None
    ) -> str:
        """Store one event durably and return its id (``event_id`` or a new uuid4 hex).

        Raises:
            ValueError: the topic name is not ``[A-Za-z0-9_-]{1,100}``.
            Unavailable: the backend cannot be reached; the event may or may not be stored.
        """
        ...

    async def append_many(self, events: Sequence[LogEvent]) -> None:
        """Store several events (built with :func:`new_event`) durably, as one call to the
        backend (a Redis pipeline, one Kafka produce batch). Each event is stored as
        :meth:`append` would store it; events with the same key keep their order.

        Raises:
            Unavailable: the backend cannot be reached; any of the events may or may not be
                stored (appending them again is safe: effects are idempotent on the id).
        """
        ...

    async def consumer(self, topic: str, group: str, name: str) -> Consumer:
        """Join ``group`` on ``topic`` as ``name`` (unique among the live members).

        Raises:
            ValueError: the topic name is not valid.
            Unavailable: the backend cannot be reached.
        """
        ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------- shared by the backends
def check_topic(topic: str) -> str:
    """Topic names are the same on every backend: letters, digits, ``_`` and ``-``.

    Raises:
        ValueError: the name has other characters or is empty.
    """
    if not _TOPIC_NAME.match(topic):
        raise ValueError(f"bad topic name {topic!r}: use [A-Za-z0-9_-]{{1,100}}")
    return topic


def new_event(
    topic: str, key: str, type: str, data: dict[str, Any], event_id: str | None, ts: int | None
) -> LogEvent:
    """The event ``append`` stores: a fresh uuid4 id and the wall clock unless given."""
    return LogEvent(
        id=event_id or uuid.uuid4().hex,
        topic=check_topic(topic),
        key=key,
        type=type,
        data=data,
        ts=now_ms() if ts is None else ts,
    )


def partition_for(key: str, partitions: int) -> int:
    """Stable partition of ``key`` (crc32, the same in every process and run)."""
    return zlib.crc32(key.encode()) % partitions


def encode_event(event: LogEvent) -> bytes:
    """msgpack of the event's fields, the value stored by the Redis and Kafka backends."""
    packed: bytes = msgpack.packb(
        {"id": event.id, "topic": event.topic, "key": event.key, "type": event.type, "data": event.data, "ts": event.ts},
        use_bin_type=True,
    )
    return packed


def decode_event(raw: bytes) -> LogEvent:
    """Inverse of :func:`encode_event`.

    Raises:
        ValueError: ``raw`` is not an encoded event.
    """
    try:
        d = msgpack.unpackb(raw, raw=False)
        return LogEvent(id=d["id"], topic=d["topic"], key=d["key"], type=d["type"], data=d["data"], ts=d["ts"])
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a log event: {exc!r}") from exc


# ---------------------------------------------------------------- memory twin
@dataclass(slots=True)
class _Pending:
    consumer: str
    since: float  # clock() when handed out; -inf: claimable now


@dataclass(slots=True)
class _MemGroup:
    cursors: list[int]  # next index to hand out, per partition
    # (partition, index) -> who holds it; insertion order = delivery order
    pending: dict[tuple[int, int], _Pending] = field(default_factory=dict)


@dataclass(slots=True)
class _MemTopic:
    parts: list[list[LogEvent]]
    groups: dict[str, _MemGroup] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class MemoryLog:
    """In-process twin of the Redis Streams log, with the same delivery semantics.

    ``partitions`` partitions per topic (a key's partition is :func:`partition_for`); a
    pending event is claimable by any member of its group after ``claim_idle_ms`` on
    ``clock`` (seconds, monotonic), like XAUTOCLAIM. Nothing survives the process.
    """

    def __init__(
        self,
        *,
        partitions: int = 1,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if partitions < 1:
            raise ConfigError("a log needs at least one partition")
        self.partitions = partitions
        self.claim_idle_ms = claim_idle_ms
        self._clock = clock
        self._topics: dict[str, _MemTopic] = {}

    def _topic(self, topic: str) -> _MemTopic:
        t = self._topics.get(check_topic(topic))
        if t is None:
            t = self._topics[topic] = _MemTopic(parts=[[] for _ in range(self.partitions)])
        return t

    async def append(
        self, topic: str, key: str, type: str, data: dict[str, Any], *, event_id: str | None = None, ts: int | None = None
    ) -> str:
        """See :meth:`Log.append`. Raises: ValueError: bad topic name."""
        event = new_event(topic, key, type, data, event_id, ts)
        t = self._topic(topic)
        t.parts[partition_for(key, self.partitions)].append(event)
        t.notify()
        return event.id

    async def append_many(self, events: Sequence[LogEvent]) -> None:
        """See :meth:`Log.append_many`."""
        for event in events:
            t = self._topic(event.topic)
            t.parts[partition_for(event.key, self.partitions)].append(event)
            t.notify()

    async def consumer(self, topic: str, group: str, name: str) -> MemoryConsumer:
        """See :meth:`Log.consumer`; a new group starts at the first event. Raises: ValueError."""
        t = self._topic(topic)
        g = t.groups.get(group)
        if g is None:
            g = t.groups[group] = _MemGroup(cursors=[0] * self.partitions)
        return MemoryConsumer(self, t, g, name)

    async def close(self) -> None:
        """Nothing to release; the events stay readable while the object lives."""


class MemoryConsumer:
    """A group member of :class:`MemoryLog`; tokens are ``(partition, index)``."""

    def __init__(self, log: MemoryLog, topic: _MemTopic, group: _MemGroup, name: str) -> None:
        self._log = log
        self._topic = topic
        self._group = group
        self.name = name
        self._retry: list[tuple[int, int]] = []
        self._first = True  # the first fetch takes back what this name held before
        self._closed = False

    def _deliver(self, pos: tuple[int, int], now: float) -> Delivery:
        self._group.pending[pos] = _Pending(self.name, now)
        return Delivery(self._topic.parts[pos[0]][pos[1]], pos)

    def _take(self, max_events: int) -> list[Delivery]:
        g, now = self._group, self._log._clock()
        idle_s = self._log.claim_idle_ms / 1000
        out: list[Delivery] = []
        if self._first:
            self._retry[:0] = [pos for pos, p in g.pending.items() if p.consumer == self.name]
            self._first = False
        while self._retry and len(out) < max_events:
            pos = self._retry.pop(0)
            p = g.pending.get(pos)
            if p is not None and p.consumer == self.name:
                out.append(self._deliver(pos, now))
        for pos, p in list(g.pending.items()):
            if len(out) >= max_events:
                break
            if now - p.since >= idle_s:
                del g.pending[pos]  # re-inserted at the end: the oldest claim goes first
                out.append(self._deliver(pos, now))
        parts = self._topic.parts
        for part in range(len(parts)):
            while len(out) < max_events and g.cursors[part] < len(parts[part]):
                out.append(self._deliver((part, g.cursors[part]), now))
                g.cursors[part] += 1
        return out

    def _next_claim_in(self) -> float:
        """Seconds until a pending event becomes claimable (inf: none pending)."""
        idle_s = self._log.claim_idle_ms / 1000
        now = self._log._clock()
        return min((p.since + idle_s - now for p in self._group.pending.values()), default=float("inf"))

    async def fetch(self, *, max_events: int = 100, timeout_ms: int = 1000) -> list[Delivery]:
        """See :meth:`Consumer.fetch`."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            changed = self._topic.changed
            out = self._take(max_events)
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            wait = min(left, max(self._next_claim_in(), 0.001))
            try:
                await asyncio.wait_for(changed.wait(), wait)
            except TimeoutError:
                pass

    async def lag(self) -> dict[int, int]:
        """See :meth:`LagReporter.lag`: per partition, events not handed out plus pending ones."""
        g, parts = self._group, self._topic.parts
        out = {p: len(parts[p]) - g.cursors[p] for p in range(len(parts))}
        for part, _ in g.pending:
            out[part] += 1
        return out

    async def ack(self, deliveries: list[Delivery]) -> None:
        """See :meth:`Consumer.ack`; an ack for an event claimed by another member is lost."""
        for d in deliveries:
            p = self._group.pending.get(d.token)
            if p is not None and p.consumer == self.name:
                del self._group.pending[d.token]

    async def nack(self, deliveries: list[Delivery]) -> None:
        """See :meth:`Consumer.nack`."""
        self._retry.extend(d.token for d in deliveries)

    async def close(self) -> None:
        """Hand what this member holds back to the group, claimable at once."""
        if self._closed:
            return
        self._closed = True
        for p in self._group.pending.values():
            if p.consumer == self.name:
                p.since = float("-inf")
        self._topic.notify()
