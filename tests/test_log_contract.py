"""One contract for the ``Log`` port, run against memory, Redis Streams (one server and a
local 3-node Redis Cluster, ``redis_cluster_url`` from ``tests/fixtures_cluster.py``) and
Kafka (Tansu).

Each test gets its own key prefix (Redis keys ``<prefix>:{log:...}``, Kafka topics
``<prefix>.<topic>``), so tests share one Redis and one broker without seeing each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from livecommerce.errors import Unavailable
from livecommerce.keys import Keys
from livecommerce.log import (
    Consumer,
    Delivery,
    LagReporter,
    Log,
    LogEvent,
    MemoryLog,
    decode_event,
    encode_event,
    new_event,
)
from livecommerce.log_kafka import KafkaLog
from livecommerce.log_open import open_log
from livecommerce.log_redis import RedisLog
from livecommerce.redis_conn import connect

CLAIM_IDLE_MS = 300
PARTITIONS = 4
KAFKA_TIMING: dict[str, Any] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}


@dataclass
class Backend:
    name: str
    log: Log


@pytest.fixture(
    params=[
        "memory",
        "redis",
        pytest.param("redis-cluster", marks=pytest.mark.cluster),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ],
)
async def backend(request: pytest.FixtureRequest, prefix: str, redis: aioredis.Redis) -> AsyncIterator[Backend]:
    log: Log
    if request.param == "memory":
        log = MemoryLog(partitions=PARTITIONS, claim_idle_ms=CLAIM_IDLE_MS)
    elif request.param == "redis":
        log = RedisLog(redis, Keys(prefix), partitions=PARTITIONS, claim_idle_ms=CLAIM_IDLE_MS)
    elif request.param == "redis-cluster":
        client = connect(request.getfixturevalue("redis_cluster_url"))
        assert isinstance(client, RedisCluster)
        log = RedisLog(client, Keys(prefix), partitions=PARTITIONS, claim_idle_ms=CLAIM_IDLE_MS, owns_client=True)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        log = KafkaLog(bootstrap, prefix=prefix, partitions=PARTITIONS, idempotent=False, **KAFKA_TIMING)
    yield Backend(request.param, log)
    await log.close()


async def collect(consumer: Consumer, n: int, *, ack: bool = True, timeout_s: float = 10.0,
                  max_events: int = 100) -> list[Delivery]:
    """Fetch until ``n`` deliveries came (or the time is up), acking them unless told not to."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        batch = await consumer.fetch(max_events=min(max_events, n - len(got)), timeout_ms=200)
        if ack and batch:
            await consumer.ack(batch)
        got += batch
        await asyncio.sleep(0)  # let a sibling consumer of the group take its turn
    return got


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.event.id for d in deliveries]


async def append_many(log: Log, n: int, *, keys: int = 8, type: str = "order.reserved") -> list[str]:
    return [await log.append("orders", f"k{i % keys}", type, {"i": i}) for i in range(n)]


# ---------------------------------------------------------------- the contract
async def test_appended_events_are_fetched_with_their_fields_and_stay_acked(backend: Backend) -> None:
    log = backend.log
    eid = await log.append("orders", "o1", "order.reserved", {"qty": 2, "sku": "a"}, event_id="e-1", ts=1234)
    assert eid == "e-1"
    generated = await log.append("orders", "o2", "order.paid", {"amount": 990})
    c = await log.consumer("orders", "settle", "w1")
    got = await collect(c, 2)
    by_id = {d.event.id: d.event for d in got}
    assert by_id["e-1"] == LogEvent("e-1", "orders", "o1", "order.reserved", {"qty": 2, "sku": "a"}, 1234)
    assert by_id[generated].type == "order.paid" and by_id[generated].data == {"amount": 990}
    assert by_id[generated].ts > 0
    await c.close()
    again = await log.consumer("orders", "settle", "w1")  # the same member, restarted
    assert await again.fetch(timeout_ms=300) == []


async def test_a_batch_append_stores_each_event_once_with_its_fields_and_key_order(backend: Backend) -> None:
    events = [new_event("orders", f"k{i % 3}", "order.reserved", {"i": i}, f"b-{i}", 1000 + i) for i in range(30)]
    await backend.log.append_many(events)
    await backend.log.append_many([])
    c = await backend.log.consumer("orders", "settle", "w1")
    got = await collect(c, 30)
    assert sorted(ids(got)) == sorted(e.id for e in events) and len(got) == 30
    assert {d.event.id: d.event for d in got} == {e.id: e for e in events}
    for k in range(3):
        seen = [d.event.data["i"] for d in got if d.event.key == f"k{k}"]
        assert seen == sorted(seen), f"key k{k} out of order: {seen}"
    assert await c.fetch(timeout_ms=300) == []


async def test_events_with_the_same_key_arrive_in_append_order(backend: Backend) -> None:
    appended = await append_many(backend.log, 40, keys=5)
    c = await backend.log.consumer("orders", "settle", "w1")
    got = await collect(c, 40, max_events=7)
    assert sorted(ids(got)) == sorted(appended)
    for k in range(5):
        seen = [d.event.data["i"] for d in got if d.event.key == f"k{k}"]
        assert seen == sorted(seen), f"key k{k} out of order: {seen}"


async def test_unacked_events_of_a_closed_consumer_go_to_another_member(backend: Backend) -> None:
    appended = await append_many(backend.log, 6)
    a = await backend.log.consumer("orders", "settle", "a")
    taken = await collect(a, 6, ack=False)
    assert sorted(ids(taken)) == sorted(appended)
    await a.close()
    b = await backend.log.consumer("orders", "settle", "b")
    again = await collect(b, 6)
    assert sorted(ids(again)) == sorted(appended)


async def test_unacked_events_of_a_silent_consumer_are_claimed_after_the_idle_time(backend: Backend) -> None:
    if backend.name == "kafka":
        pytest.skip("a silent Kafka member is evicted by its session timeout: "
                    "tests/test_runner.py kills a consumer process with SIGKILL for that")
    appended = await append_many(backend.log, 6)
    a = await backend.log.consumer("orders", "settle", "a")
    taken = await collect(a, 3, ack=False)  # then a hangs: no ack, no close
    await a.ack([])  # an empty ack is a no-op
    b = await backend.log.consumer("orders", "settle", "b")
    started = time.monotonic()
    got = await collect(b, 6)
    assert sorted(ids(got)) == sorted(appended)
    assert set(ids(taken)) <= set(ids(got))
    assert time.monotonic() - started >= CLAIM_IDLE_MS / 1000 * 0.5  # claimed, not stolen
    assert await collect(a, 1, timeout_s=0.5) == []  # b acked them: nothing left for a


async def test_each_group_sees_every_event(backend: Backend) -> None:
    appended = await append_many(backend.log, 12)
    settle = await backend.log.consumer("orders", "settle", "w1")
    points = await backend.log.consumer("orders", "points", "w1")
    assert sorted(ids(await collect(settle, 12))) == sorted(appended)
    assert sorted(ids(await collect(points, 12))) == sorted(appended)


async def test_members_of_one_group_split_the_events_without_overlap(backend: Backend) -> None:
    a = await backend.log.consumer("orders", "settle", "a")
    b = await backend.log.consumer("orders", "settle", "b")  # Kafka: returns after the rebalance
    appended = await append_many(backend.log, 40, keys=40)
    got_a: list[Delivery] = []
    got_b: list[Delivery] = []

    async def drain(c: Consumer, into: list[Delivery]) -> None:
        deadline = time.monotonic() + 10
        while len(got_a) + len(got_b) < 40 and time.monotonic() < deadline:
            batch = await c.fetch(max_events=5, timeout_ms=100)
            await c.ack(batch)
            into += batch
            await asyncio.sleep(0)  # the other member's turn

    await asyncio.gather(drain(a, got_a), drain(b, got_b))
    assert sorted(ids(got_a) + ids(got_b)) == sorted(appended)
    assert not set(ids(got_a)) & set(ids(got_b))
    assert got_a and got_b, "one member took every event"


async def test_nacked_deliveries_come_back_first_on_the_next_fetch(backend: Backend) -> None:
    appended = await append_many(backend.log, 3, keys=1)
    c = await backend.log.consumer("orders", "settle", "w1")
    first = await collect(c, 3, ack=False)
    await c.nack(first)
    again = await collect(c, 3)
    assert ids(again) == ids(first) == appended


# ---------------------------------------------------------------- backend details
async def test_lag_counts_what_the_group_has_not_acked_on_the_partitions_a_member_reads(backend: Backend) -> None:
    log = backend.log
    await append_many(log, 20)
    c = await log.consumer("orders", "lagging", "w1")
    assert isinstance(c, LagReporter)
    got = await collect(c, 8, ack=False, max_events=8)
    lag = await c.lag()
    assert sum(lag.values()) == 20  # delivered but not acked still counts
    assert set(lag) <= set(range(PARTITIONS)) and lag
    await c.ack(got)
    assert sum((await c.lag()).values()) == 20 - len(got)
    rest = await collect(c, 20 - len(got))
    assert len(rest) == 20 - len(got)
    assert sum((await c.lag()).values()) == 0
    await c.close()


def test_event_encoding_round_trips() -> None:
    e = LogEvent("id1", "orders", "k", "order.paid", {"n": [1, 2], "b": b"\x00", "s": "é"}, 17)
    assert decode_event(encode_event(e)) == e
    with pytest.raises(ValueError):
        decode_event(b"\x93\x01\x02\x03")


async def test_bad_topic_names_are_refused() -> None:
    with pytest.raises(ValueError):
        await MemoryLog().append("orders.x", "k", "t", {})


async def test_redis_partitions_are_one_stream_per_hash_tag(redis: aioredis.Redis, prefix: str) -> None:
    log = RedisLog(redis, Keys(prefix), partitions=3)
    for i in range(30):
        await log.append("orders", f"k{i}", "t", {})
    names = sorted([k.decode() async for k in redis.scan_iter(match=f"{prefix}:*")])
    assert names == [f"{prefix}:{{log:orders:{p}}}" for p in range(3)]


async def test_redis_log_turns_connection_errors_into_unavailable(prefix: str) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    log = RedisLog(dead, Keys(prefix), owns_client=True)
    with pytest.raises(Unavailable):
        await log.append("orders", "k", "t", {})
    with pytest.raises(Unavailable):
        await log.consumer("orders", "g", "w")
    await log.close()


async def test_open_log_picks_redis_streams_without_kafka(settings, redis: aioredis.Redis) -> None:  # type: ignore[no-untyped-def]
    log = open_log(settings, redis, partitions=2)
    assert isinstance(log, RedisLog) and log.partitions == 2
    own = open_log(settings)
    assert isinstance(own, RedisLog)
    await own.append("orders", "k", "t", {})
    await own.close()


def test_open_log_picks_kafka_when_a_bootstrap_is_set(settings) -> None:  # type: ignore[no-untyped-def]
    log = open_log(settings.replace(kafka_bootstrap="127.0.0.1:9", kafka_idempotent=False, kafka_partitions=3))
    assert isinstance(log, KafkaLog)
    assert (log.partitions, log.idempotent, log.topic_name("orders")) == (3, False, f"{settings.key_prefix}.orders")

