"""One contract, two brokers: the in-memory twin and Redis (centrifuge's shared broker tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from livecommerce.broker import MemoryBroker, split_room_message
from livecommerce.broker_redis import RedisBroker
from livecommerce.keys import Keys
from tests.waiting import wait_until


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


async def subscribers(redis, channel: str) -> int:
    return int(dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0))


async def change_subscription(broker, redis, channel: str, *, subscribe: bool) -> None:
    """(Un)subscribe and wait until Redis has taken it: redis-py sends the command without
    waiting for its answer. The in-memory twin's take effect at once."""
    before = await subscribers(redis, channel)
    await (broker.subscribe if subscribe else broker.unsubscribe)(channel)
    if isinstance(broker, RedisBroker):
        want = before + 1 if subscribe else before - 1
        await wait_until(lambda: subscribers(redis, channel), until=lambda n: n == want,
                         what=f"Redis to count {want} subscriber(s) of {channel}")


async def collect(broker, redis, channel: str) -> list:
    got: list = []
    broker.set_handler(lambda ch, data: got.append((ch, data)))
    await change_subscription(broker, redis, channel, subscribe=True)
    return got


async def test_published_room_events_reach_every_subscriber_in_seq_order(make_broker, redis, keys):
    pub, s1, s2 = make_broker(), make_broker(), make_broker()
    g1 = await collect(s1, redis, keys.room_channel("r"))
    g2 = await collect(s2, redis, keys.room_channel("r"))
    seqs = [await pub.publish_room("r", env("r", i), now_ms=1000) for i in range(10)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    await wait_until(lambda: (len(g1), len(g2)), until=lambda n: n == (10, 10), what="10 events at each subscriber")
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


async def test_events_without_history_carry_no_seq(make_broker, redis, keys):
    b = make_broker()
    got = await collect(b, redis, keys.room_channel("c"))
    assert await b.publish_room("c", env("c", 1, "likes"), history=False, now_ms=1000) == 0
    await wait_until(lambda: len(got), until=lambda n: n == 1, what="the event")
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


async def test_node_inbox_gets_raw_bodies(make_broker, redis, keys):
    b = make_broker()
    got = await collect(b, redis, keys.node_inbox("n1"))
    await b.publish_node("n1", b"hello")
    await wait_until(lambda: list(got), until=lambda g: g == [(keys.node_inbox("n1"), b"hello")], what="the raw body in the inbox")


async def test_node_messages_sent_together_reach_their_own_inboxes_in_order(make_broker, redis, keys):
    b = make_broker()
    got = await collect(b, redis, keys.node_inbox("n1"))
    await b.publish_nodes([("n1", b"a"), ("n2", b"x"), ("n1", b"b")])
    want = [(keys.node_inbox("n1"), b"a"), (keys.node_inbox("n1"), b"b")]
    await wait_until(lambda: list(got), until=lambda g: g == want, what="n1's two bodies, in order, and not n2's")


async def test_unsubscribed_channels_get_nothing(make_broker, redis, keys):
    b = make_broker()
    got = await collect(b, redis, keys.room_channel("u"))
    await change_subscription(b, redis, keys.room_channel("u"), subscribe=False)
    await b.publish_room("u", env("u", 1), now_ms=1000)
    # a barrier, not a pause: one subscriber gets a channel's messages in publish order, so
    # the marker published after the room event arrives after it, had it been delivered
    await change_subscription(b, redis, keys.node_inbox("marker"), subscribe=True)
    await b.publish_node("marker", b"after")
    await wait_until(lambda: list(got), until=lambda g: (keys.node_inbox("marker"), b"after") in g, what="the marker")
    assert [(ch, data) for ch, data in got if ch != keys.node_inbox("marker")] == []


def test_room_keys_share_one_hash_slot():
    from redis.crc import key_slot

    k = Keys("lc")
    slots = {key_slot(x.encode()) for x in (k.room_channel("42"), k.room_hist("42"), k.room_seq("42"), k.room_online("42"))}
    assert len(slots) == 1
