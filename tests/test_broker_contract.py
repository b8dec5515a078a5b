"""One contract, two brokers: the in-memory twin and Redis (centrifuge's shared broker tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from livecommerce.broker import MemoryBroker, split_room_message
from livecommerce.broker_redis import RedisBroker
from livecommerce.keys import Keys


@pytest.fixture(params=["memory", "redis"])
async def make_broker(request, redis, keys) -> AsyncIterator[Callable[..., object]]:
    made: list[object] = []
    shared: dict = {"subs": __import__("collections").defaultdict(set), "hist": __import__("collections").defaultdict(list), "seq": {}}

    def make(history_size: int = 100):
        if request.param == "memory":
            b = MemoryBroker(keys, history_size=history_size, shared=shared)
        else:
            b = RedisBroker(redis, keys, history_size=history_size)
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()  # type: ignore[attr-defined]


def env(room: str, i: int, t: str = "comment") -> dict:
    return {"t": t, "room": room, "ts": 1, "d": {"i": i}}


async def collect(broker, channel: str) -> list:
    got: list = []
    broker.set_handler(lambda ch, data: got.append((ch, data)))
    await broker.subscribe(channel)
    await asyncio.sleep(0.05)
    return got


async def wait_for(pred, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_published_room_events_reach_every_subscriber_in_seq_order(make_broker, keys):
    pub, s1, s2 = make_broker(), make_broker(), make_broker()
    g1 = await collect(s1, keys.room_channel("r"))
    g2 = await collect(s2, keys.room_channel("r"))
    seqs = [await pub.publish_room("r", env("r", i), now_ms=1000) for i in range(10)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    await wait_for(lambda: len(g1) == 10 and len(g2) == 10)
    for got in (g1, g2):
        decoded = [split_room_message(data) for _, data in got]
        assert [s for s, _ in decoded] == seqs
        assert [e["d"]["i"] for _, e in decoded] == list(range(10))
        assert all(e["seq"] == s for s, e in decoded)


async def test_history_returns_what_came_after_since(make_broker):
    b = make_broker()
    seqs = [await b.publish_room("h", env("h", i), now_ms=1000) for i in range(5)]
    h = await b.history("h", seqs[1])
    assert h.recovered and h.top == seqs[-1]
    assert [e["seq"] for e in h.events] == seqs[2:]
    assert [e["d"]["i"] for e in h.events] == [2, 3, 4]
    empty = await b.history("h", seqs[-1])
    assert empty.recovered and empty.events == []


async def test_history_says_not_recovered_for_a_gap_or_a_future_since(make_broker):
    b = make_broker(history_size=3)
    seqs = [await b.publish_room("g", env("g", i), now_ms=1000) for i in range(300)]
    assert not (await b.history("g", seqs[0])).recovered
    assert not (await b.history("g", seqs[-1] + 5)).recovered


async def test_events_without_history_carry_no_seq(make_broker, keys):
    b = make_broker()
    got = await collect(b, keys.room_channel("c"))
    assert await b.publish_room("c", env("c", 1, "likes"), history=False, now_ms=1000) == 0
    await wait_for(lambda: len(got) == 1)
    seq, e = split_room_message(got[0][1])
    assert seq == 0 and "seq" not in e
    assert (await b.history("c", 0)).events == []


async def test_seqs_are_seeded_from_the_clock_so_they_rise_after_a_reset(make_broker, redis, keys):
    b = make_broker()
    first = await b.publish_room("z", env("z", 0), now_ms=1000)
    assert first == 1000 * 1000 + 1
    if isinstance(b, RedisBroker):
        await redis.delete(keys.room_seq("z"))  # the counter is lost (a Redis restart)
        again = await b.publish_room("z", env("z", 1), now_ms=2000)
        assert again > first


async def test_node_inbox_gets_raw_bodies(make_broker, keys):
    b = make_broker()
    got = await collect(b, keys.node_inbox("n1"))
    await b.publish_node("n1", b"hello")
    await wait_for(lambda: got == [(keys.node_inbox("n1"), b"hello")])


async def test_unsubscribed_channels_get_nothing(make_broker, keys):
    b = make_broker()
    got = await collect(b, keys.room_channel("u"))
    await b.unsubscribe(keys.room_channel("u"))
    await asyncio.sleep(0.05)
    await b.publish_room("u", env("u", 1), now_ms=1000)
    await asyncio.sleep(0.2)
    assert got == []


def test_room_keys_share_one_hash_slot():
    from redis.crc import key_slot

    k = Keys("lc")
    slots = {key_slot(x.encode()) for x in (k.room_channel("42"), k.room_hist("42"), k.room_seq("42"), k.room_online("42"))}
    assert len(slots) == 1
