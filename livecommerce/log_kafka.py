"""The durable log on Kafka (through aiokafka): the scale-out ``Log`` backend.

Layout: topic ``<prefix>.<topic>`` with ``partitions`` partitions, created with the admin
client the first time this process uses it (an existing topic is kept as it is), with
``retention.ms`` when ``retention_ms`` is given: retention is the broker's (docs/retention.md). Messages
are keyed by the event key (Kafka's murmur2 partitioner keeps each key in one partition, so
its order holds); the value is :func:`~livecommerce.log.encode_event`. The producer waits for
``acks=all``; idempotence is on unless ``idempotent=False`` (``LC_KAFKA_IDEMPOTENT``; the
Tansu test broker rejects InitProducerId).

Delivery (the contract is in :mod:`livecommerce.log`): one ``AIOKafkaConsumer`` per
``Consumer``, in the consumer group ``<prefix>.<group>``, ``enable_auto_commit=False``, ``auto_offset_reset=
"earliest"`` (a new group reads from the first message kept). Offsets are committed only by
``ack``: per partition, the offset after the highest delivered offset such that every
delivery up to it is acked. On a rebalance, a partition's uncommitted deliveries are
forgotten (acks of them are dropped, as their new owner reads them again from the committed
offset). ``nack`` rewinds the partition to the first nacked offset.

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from .errors import ConfigError, Unavailable
from .log import Delivery, LogEvent, check_topic, decode_event, encode_event, new_event

log = logging.getLogger("livecommerce.log.kafka")

_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS


@contextlib.asynccontextmanager
async def _guard(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (KafkaError, OSError) as exc:
        raise Unavailable(f"kafka {what} failed: {exc.__class__.__name__}") from exc


class KafkaLog:
    """``Log`` on Kafka.

    Args:
        bootstrap: ``host:port[,host:port]``.
        prefix: topic name prefix (``LC_KEY_PREFIX``), separated by a dot.
        partitions: partitions of a topic this log creates; the unit of parallelism of a
            group (more members than partitions stay idle).
        idempotent: idempotent producer (needs InitProducerId on the broker).
        client_id: client id shown by the broker.
        session_timeout_ms, heartbeat_interval_ms: group membership timing. A dead member's
            partitions move after ``session_timeout_ms``. On Tansu a join completes after
            about half the session timeout, so tests use 2000/300.
        rebalance_timeout_ms: how long the coordinator waits for members to rejoin.
        request_timeout_ms: per request to the broker.
        replication_factor: replicas of a topic this log creates (1 suits one broker; use
            3 on a production cluster, or create the topics beforehand).
        retention_ms: ``retention.ms`` of the topics this log creates (``LC_LOG_MAX_AGE_S``;
            None: the broker's default). The broker deletes older segments whatever the
            groups' offsets, so keep it above the longest lag a group may have.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        prefix: str = "lc",
        partitions: int = 6,
        idempotent: bool = True,
        client_id: str = "livecommerce",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        rebalance_timeout_ms: int | None = None,
        request_timeout_ms: int = 30_000,
        replication_factor: int = 1,
        retention_ms: int | None = None,
    ) -> None:
        if partitions < 1:
            raise ConfigError("a log needs at least one partition")
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.partitions = partitions
        self.idempotent = idempotent
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms or session_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.replication_factor = replication_factor
        self.retention_ms = retention_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._ready_topics: set[str] = set()
        self._consumers: set[KafkaConsumer] = set()

    def _topic_configs(self) -> dict[str, str]:
        return {} if self.retention_ms is None else {"retention.ms": str(self.retention_ms)}

    def topic_name(self, topic: str) -> str:
        return f"{self.prefix}.{check_topic(topic)}"

    def group_name(self, group: str) -> str:
        """Group ids are broker-wide, so they carry the prefix like topics do."""
        return f"{self.prefix}.{group}"

    async def ensure_topic(self, topic: str) -> str:
        """Create ``<prefix>.<topic>`` with ``partitions`` partitions unless it exists.

        Raises:
            ValueError: bad topic name.
            Unavailable: broker unreachable or it refused to create the topic.
        """
        name = self.topic_name(topic)
        if name in self._ready_topics:
            return name
        async with self._lock:
            if name in self._ready_topics:
                return name
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap, client_id=self.client_id, request_timeout_ms=self.request_timeout_ms
            )
            async with _guard("create topic"):
                await admin.start()
                try:
                    resp = await admin.create_topics(
                        [NewTopic(name, num_partitions=self.partitions, replication_factor=self.replication_factor,
                                  topic_configs=self._topic_configs())]
                    )
                finally:
                    await admin.close()
            for err in getattr(resp, "topic_errors", ()):
                code, message = err[1], err[2] if len(err) > 2 else ""
                if code not in (0, _TOPIC_EXISTS):
                    raise Unavailable(f"kafka refused to create topic {name}: error {code} {message}")
            self._ready_topics.add(name)
        return name

    async def _get_producer(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=self.idempotent,
                    request_timeout_ms=self.request_timeout_ms,
                )
                async with _guard("producer start"):
                    try:
                        await producer.start()
                    except BaseException:
                        await producer.stop()
                        raise
                self._producer = producer
        return self._producer

    async def append(
        self, topic: str, key: str, type: str, data: dict[str, Any], *, event_id: str | None = None, ts: int | None = None
    ) -> str:
        """Produce to ``<prefix>.<topic>`` keyed by ``key`` and wait for ``acks=all``.

        See :meth:`livecommerce.log.Log.append`.

        Raises:
            ValueError: bad topic name.
            Unavailable: broker unreachable; the event may or may not be stored.
        """
        event = new_event(topic, key, type, data, event_id, ts)
        name = await self.ensure_topic(topic)
        producer = await self._get_producer()
        async with _guard("produce"):
            await producer.send_and_wait(name, value=encode_event(event), key=key.encode(), timestamp_ms=event.ts)
        return event.id

    async def append_many(self, events: Sequence[LogEvent]) -> None:
        """Hand every event to the producer at once, then wait for all their ``acks=all``:
        the producer puts what goes to one partition into one produce batch. See
        :meth:`livecommerce.log.Log.append_many`.

        Raises:
            Unavailable: broker unreachable; any of the events may or may not be stored.
        """
        if not events:
            return
        names = {t: await self.ensure_topic(t) for t in {e.topic for e in events}}
        producer = await self._get_producer()
        async with _guard("produce"):
            sent = [await producer.send(names[e.topic], value=encode_event(e), key=e.key.encode(), timestamp_ms=e.ts)
                    for e in events]
            for outcome in await asyncio.gather(*sent, return_exceptions=True):  # every ack retrieved
                if isinstance(outcome, BaseException):
                    raise outcome

    async def consumer(self, topic: str, group: str, name: str) -> KafkaConsumer:
        """Join ``group`` and return once the group has given this member its partitions.

        Raises:
            ValueError: bad topic name.
            Unavailable: broker unreachable.
        """
        kafka_topic = await self.ensure_topic(topic)
        c = KafkaConsumer(self, topic, kafka_topic, group, name)
        await c.start()
        self._consumers.add(c)
        return c

    async def close(self) -> None:
        """Stop the producer and every consumer still open."""
        for c in list(self._consumers):
            await c.close()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()


@dataclass(slots=True)
class _Track:
    """Deliveries of one partition since its assignment, for the commit point."""

    epoch: int
    delivered: collections.deque[int] = field(default_factory=collections.deque)  # offsets, ascending
    acked: set[int] = field(default_factory=set)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._c = consumer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._c._forget(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._c._forget(assigned)
        log.info("log.kafka.assigned", extra={"group": self._c.group, "member": self._c.name,
                                              "partitions": sorted(tp.partition for tp in assigned)})


class KafkaConsumer:
    """A member of a Kafka consumer group; tokens are ``(TopicPartition, offset, epoch)``.

    ``epoch`` changes whenever the partition is assigned or revoked, so an ack of a delivery
    made before a rebalance never commits for the new assignment.
    """

    def __init__(self, log: KafkaLog, topic: str, kafka_topic: str, group: str, name: str) -> None:
        self._log = log
        self.topic = topic
        self.kafka_topic = kafka_topic
        self.group = group
        self.name = name
        self._tracks: dict[TopicPartition, _Track] = {}
        self._epoch = 0
        self._closed = False
        self._c = AIOKafkaConsumer(
            bootstrap_servers=log.bootstrap,
            client_id=f"{log.client_id}:{name}",
            group_id=log.group_name(group),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=log.session_timeout_ms,
            heartbeat_interval_ms=log.heartbeat_interval_ms,
            rebalance_timeout_ms=log.rebalance_timeout_ms,
            request_timeout_ms=log.request_timeout_ms,
        )

    async def start(self) -> None:
        """Subscribe and join the group (returns after the first assignment).

        Raises:
            Unavailable: broker unreachable.
        """
        self._c.subscribe([self.kafka_topic], listener=_Rebalance(self))
        async with _guard("consumer start"):
            try:
                await self._c.start()
            except BaseException:
                await self._c.stop()
                raise

    def _forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._epoch += 1
            self._tracks[tp] = _Track(self._epoch)

    def assignment(self) -> set[int]:
        """The partitions this member reads now."""
        return {tp.partition for tp in self._c.assignment()}

    async def fetch(self, *, max_events: int = 100, timeout_ms: int = 1000) -> list[Delivery]:
        """See :meth:`livecommerce.log.Consumer.fetch`.

        Raises:
            Unavailable: broker unreachable.
        """
        async with _guard("fetch"):
            batches = await self._c.getmany(timeout_ms=timeout_ms, max_records=max_events)
        out: list[Delivery] = []
        for tp, records in batches.items():
            track = self._tracks.get(tp)
            if track is None:
                self._forget([tp])
                track = self._tracks[tp]
            for rec in records:
                try:
                    event = decode_event(rec.value)
                except ValueError:
                    log.error("log.bad_entry", extra={"topic": tp.topic, "partition": tp.partition, "offset": rec.offset})
                    track.delivered.append(rec.offset)
                    track.acked.add(rec.offset)  # committed past with the next ack
                    continue
                track.delivered.append(rec.offset)
                out.append(Delivery(event, (tp, rec.offset, track.epoch)))
        return out

    async def lag(self) -> dict[int, int]:
        """See :meth:`livecommerce.log.LagReporter.lag`: per assigned partition, the end
        offset minus the group's committed offset (the beginning offset when nothing is
        committed yet).

        Raises:
            Unavailable: broker unreachable.
        """
        tps = sorted(self._c.assignment(), key=lambda tp: tp.partition)
        if not tps:
            return {}
        async with _guard("lag"):
            ends = await self._c.end_offsets(tps)
            out: dict[int, int] = {}
            starts: dict[Any, int] | None = None
            for tp in tps:
                done = await self._c.committed(tp)
                if done is None:
                    if starts is None:
                        starts = await self._c.beginning_offsets(tps)
                    done = starts[tp]
                out[tp.partition] = max(0, int(ends[tp]) - int(done))
        return out

    def _current(self, deliveries: list[Delivery]) -> dict[TopicPartition, list[int]]:
        """Offsets per partition of the deliveries made in the current assignment."""
        by_tp: dict[TopicPartition, list[int]] = {}
        for d in deliveries:
            tp, offset, epoch = d.token
            track = self._tracks.get(tp)
            if track is not None and track.epoch == epoch:
                by_tp.setdefault(tp, []).append(offset)
        return by_tp

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Commit, per partition, past the longest acked prefix of the deliveries.

        Acks of deliveries from before a rebalance are dropped (their new owner reads them
        again). See :meth:`livecommerce.log.Consumer.ack`.

        Raises:
            Unavailable: broker unreachable (the events are delivered again later).
        """
        commits: dict[TopicPartition, int] = {}
        for tp, offsets in self._current(deliveries).items():
            track = self._tracks[tp]
            track.acked.update(offsets)
            upto = None
            while track.delivered and track.delivered[0] in track.acked:
                upto = track.delivered.popleft()
                track.acked.discard(upto)
            if upto is not None:
                commits[tp] = upto + 1
        if not commits:
            return
        try:
            async with _guard("commit"):
                await self._c.commit(commits)
        except Unavailable as exc:
            if isinstance(exc.__cause__, CommitFailedError | IllegalStateError):
                # the group moved on: whoever owns the partition now reads from the last commit
                log.info("log.kafka.commit_lost", extra={"group": self.group, "member": self.name,
                                                          "reason": exc.__cause__.__class__.__name__})
                return
            raise

    async def nack(self, deliveries: list[Delivery]) -> None:
        """Rewind each partition to its first nacked offset (later events come back too).

        Raises:
            Unavailable: never in practice (seek is local), kept for the port's contract.
        """
        for tp, offsets in self._current(deliveries).items():
            first = min(offsets)
            track = self._tracks[tp]
            track.delivered = collections.deque(o for o in track.delivered if o < first)
            track.acked = {o for o in track.acked if o < first}
            try:
                self._c.seek(tp, first)
            except IllegalStateError:  # revoked meanwhile: the new owner starts at the commit
                continue

    async def close(self) -> None:
        """Leave the group without committing: unacked events go to the next owner."""
        if self._closed:
            return
        self._closed = True
        self._log._consumers.discard(self)
        with contextlib.suppress(KafkaError, OSError):
            await self._c.stop()
