"""One contract, two implementations of the ``Presence`` port: the in-memory twin and Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from livecommerce.presence import FRESH_MS, MemoryPresence, Presence, tally
from livecommerce.presence_redis import RedisPresence

T0 = 1_700_000_000_000


@pytest.fixture(params=["memory", "redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def make_presence(request, redis, keys) -> Callable[[], Presence]:
    """Each call is another gateway node's view of the same presence (on Redis Cluster the
    many-user calls take their pipelined path, on one Redis their script)."""
    shared: dict = {}
    client = request.getfixturevalue("cluster_redis") if request.param == "cluster" else redis

    def make() -> Presence:
        return MemoryPresence(shared) if request.param == "memory" else RedisPresence(client, keys)

    return make


async def test_a_room_counts_the_connections_every_node_reported(make_presence):
    a, b = make_presence(), make_presence()
    assert await a.report("n1", {"r": 3}, now_ms=T0) == {"r": 3}
    assert await b.report("n2", {"r": 2, "s": 1}, now_ms=T0 + 10) == {"r": 5, "s": 1}
    assert await a.online(["r", "s", "nobody"], now_ms=T0 + 20) == {"r": 5, "s": 1, "nobody": 0}
    assert await a.report("n1", {"r": 1}, now_ms=T0 + 1000) == {"r": 3}  # a node's new report replaces its old one


async def test_a_node_that_stopped_reporting_stops_counting_and_is_forgotten(make_presence):
    a, b = make_presence(), make_presence()
    await a.report("n1", {"r": 3}, now_ms=T0)
    assert await b.online(["r"], now_ms=T0 + FRESH_MS) == {"r": 3}
    assert await b.online(["r"], now_ms=T0 + FRESH_MS + 1) == {"r": 0}
    assert await b.report("n2", {"r": 2}, now_ms=T0 + FRESH_MS + 1) == {"r": 2}
    # n1's stale report was dropped: it does not come back when read with an earlier clock
    assert await b.online(["r"], now_ms=T0) == {"r": 2}


async def test_forget_takes_a_node_out_of_a_room_at_once(make_presence):
    a, b = make_presence(), make_presence()
    await a.report("n1", {"r": 3}, now_ms=T0)
    await b.report("n2", {"r": 2}, now_ms=T0)
    await a.forget("n1", "r")
    assert await b.online(["r"], now_ms=T0) == {"r": 2}
    await a.forget("n1", "never-reported")


async def test_user_nodes_are_the_nodes_holding_open_connections(make_presence):
    a, b = make_presence(), make_presence()
    await a.user_connected("u", "n1", +1)
    await a.user_connected("u", "n1", +1)
    await b.user_connected("u", "n2", +1)
    got = await a.user_nodes(["u", "v"])
    assert sorted(got["u"]) == ["n1", "n2"] and got["v"] == []
    await b.user_connected("u", "n2", -1)
    assert await a.user_nodes(["u"]) == {"u": ["n1"]}
    await a.user_connected("u", "n1", -1)
    assert await a.user_nodes(["u"]) == {"u": ["n1"]}  # one connection still open
    await a.user_connected("u", "n1", -1)
    assert await b.user_nodes(["u"]) == {"u": []}
    await a.user_connected("w", "n1", -1)  # a close without an open (a lost +1) leaves nothing behind
    assert await b.user_nodes(["w"]) == {"w": []}


async def test_many_users_connect_and_leave_in_one_call(make_presence):
    a, b = make_presence(), make_presence()
    await a.users_connected("n1", {"u1": 2, "u2": 1, "u3": 0})
    await b.users_connected("n2", {"u1": 1})
    got = await b.user_nodes(["u1", "u2", "u3"])
    assert sorted(got["u1"]) == ["n1", "n2"] and got["u2"] == ["n1"] and got["u3"] == []
    await a.users_connected("n1", {"u1": -2, "u2": -1, "ghost": -1})
    assert await b.user_nodes(["u1", "u2", "ghost"]) == {"u1": ["n2"], "u2": [], "ghost": []}
    await a.users_connected("n1", {})


async def test_a_worker_batch_of_users_gets_each_users_own_nodes(make_presence):
    """A batch of pushes asks for hundreds of users at once (Redis: one script call)."""
    a, b = make_presence(), make_presence()
    users = [f"u{i}" for i in range(300)]
    await a.users_connected("n1", {u: 1 for u in users[::3]})
    await b.users_connected("n2", {u: 2 for u in users[::5]})
    await a.users_connected("n1", {users[3]: -1})  # connected and gone: no node left
    got = await b.user_nodes(users)
    want = {u: sorted(n for n, on in (("n1", i % 3 == 0 and i != 3), ("n2", i % 5 == 0)) if on) for i, u in enumerate(users)}
    assert {u: sorted(ns) for u, ns in got.items()} == want


async def test_empty_questions_get_empty_answers(make_presence):
    p = make_presence()
    assert await p.report("n1", {}, now_ms=T0) == {}
    assert await p.online([], now_ms=T0) == {}
    assert await p.user_nodes([]) == {}


async def test_redis_keeps_the_hash_other_readers_parse(redis, keys):
    """ops and the feed read ``lc:{room:ID}:online`` (node -> "count:ms") themselves."""
    await RedisPresence(redis, keys).report("n1", {"r": 4}, now_ms=T0)
    assert await redis.hgetall(keys.room_online("r")) == {b"n1": f"4:{T0}".encode()}
    assert 0 < await redis.ttl(keys.room_online("r")) <= 60
    await redis.hset(keys.room_online("r"), "garbled", "x")  # an unreadable field counts as stale
    assert await RedisPresence(redis, keys).report("n2", {"r": 1}, now_ms=T0 + 1) == {"r": 5}
    assert set(await redis.hkeys(keys.room_online("r"))) == {b"n1", b"n2"}


def test_tally_counts_fresh_reports_and_names_the_stale_ones():
    assert tally({"a": (3, 1000), "b": (2, 1000 - FRESH_MS), "c": (7, 999 - FRESH_MS)}, 1000) == (5, ["c"])
    assert tally({}, 0) == (0, [])
