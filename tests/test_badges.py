"""The author's badges on a comment: the pure rule with the memory reader, the reader's
contract over memory and Redis, and the badges on real comments through a gateway."""

from __future__ import annotations

from typing import Any

import pytest

from livecommerce.badges import FAN_CACHE_S, LEVEL_CACHE_S, Badges, MemoryBadgeReader, Read, Wanted
from livecommerce.badges_redis import RedisBadges
from livecommerce.errors import Unavailable
from livecommerce.keys import Keys
from tests.wsclient import Client


async def _decorate(b: Badges, *, room: str = "r1", host: str = "h1", user: str = "u1", now: float = 0.0) -> dict[str, Any]:
    d: dict[str, Any] = {"user": user, "level": 0}
    await b.decorate(d, room=room, host=host, user=user, now=now)
    return d


async def test_level_fan_badge_and_buyer_are_read_once_then_held() -> None:
    mem = MemoryBadgeReader()
    mem.levels["u1"], mem.fans[("h1", "u1")], mem.payers = 7, 3, {("r1", "u1")}
    b = Badges(mem)
    assert await _decorate(b) == {"user": "u1", "level": 7, "fan": {"host": "h1", "level": 3}, "buyer": True}
    assert mem.reads == 1
    mem.levels["u1"] = 9  # changed in Redis: the node holds its copy for LEVEL_CACHE_S
    assert (await _decorate(b, now=1.0))["level"] == 7
    assert mem.reads == 1  # everything held fresh: no read at all
    assert (await _decorate(b, now=LEVEL_CACHE_S + 0.1))["level"] == 9
    assert mem.reads == 2


async def test_a_non_buyer_is_asked_again_so_a_payment_shows_on_the_next_comment() -> None:
    mem = MemoryBadgeReader()
    b = Badges(mem)
    assert "buyer" not in await _decorate(b)
    mem.payers.add(("r1", "u1"))
    assert (await _decorate(b, now=0.5))["buyer"] is True
    assert mem.reads == 2
    assert "buyer" not in await _decorate(b, room="r2", now=0.6)  # a buyer in r1 is not one in r2


async def test_a_host_wears_no_fan_badge_in_their_own_room_and_a_non_member_none() -> None:
    mem = MemoryBadgeReader()
    mem.fans[("h1", "h1")] = 5
    b = Badges(mem)
    assert "fan" not in await _decorate(b, user="h1")
    assert "fan" not in await _decorate(b, user="u2")
    mem.fans[("h1", "u2")] = 1  # joined: seen once the held "not a member" is older than FAN_CACHE_S
    assert "fan" not in await _decorate(b, user="u2", now=1.0)
    assert (await _decorate(b, user="u2", now=FAN_CACHE_S + 1))["fan"] == {"host": "h1", "level": 1}


class _Down:
    async def read(self, room: str, host: str, user: str, wanted: Wanted) -> Read:
        raise Unavailable("redis down")


async def test_an_unreachable_engine_never_fails_the_comment_and_keeps_what_is_held() -> None:
    mem = MemoryBadgeReader()
    mem.levels["u1"], mem.fans[("h1", "u1")] = 4, 2
    b = Badges(mem)
    await _decorate(b)
    b.reader = _Down()
    held = await _decorate(b, now=LEVEL_CACHE_S + FAN_CACHE_S + 5)  # stale, and the read fails
    assert held == {"user": "u1", "level": 4, "fan": {"host": "h1", "level": 2}}
    assert await _decorate(b, user="u9", now=100.0) == {"user": "u9", "level": 0}


@pytest.fixture(params=["memory", "redis"])
async def reader(request: Any, redis: Any, keys: Keys) -> Any:
    """Each reader with user u1 at level 6, a member of h1's club at fan level 2, a payer in r1."""
    if request.param == "memory":
        mem = MemoryBadgeReader()
        mem.levels["u1"], mem.fans[("h1", "u1")], mem.payers = 6, 2, {("r1", "u1")}
        return mem
    # the keys as their writers leave them: the points worker, the profiles worker, the pay script
    await redis.hset(keys.user("u1", "points"), mapping={"viewer": 100, "level": 6})
    await redis.hset(keys.entity("fan", "h1", "badges"), "u1", 2)
    await redis.sadd(keys.room("r1", "payers"), "u1")
    return RedisBadges(redis, keys)


async def test_reader_contract_answers_only_what_is_wanted(reader: Any) -> None:
    every = Wanted(level=True, fan=True, buyer=True)
    assert await reader.read("r1", "h1", "u1", every) == Read(level=6, fan=2, buyer=True)
    assert await reader.read("r2", "h2", "u1", every) == Read(level=6, fan=None, buyer=False)
    assert await reader.read("r1", "h1", "nobody", every) == Read(level=0, fan=None, buyer=False)
    assert await reader.read("r1", "h1", "u1", Wanted(level=False, fan=True, buyer=False)) == Read(fan=2)
    assert await reader.read("r1", "h1", "u1", Wanted(level=False, fan=False, buyer=True)) == Read(buyer=True)


async def test_a_payers_comment_carries_buyer_and_the_hosts_own_comment_no_fan_badge(gateway_factory: Any, token: Any,
                                                                                       redis: Any) -> None:
    node = await gateway_factory()
    keys = node.services.checkout.keys
    host_tok = token("h1", "host", ("shop",))
    h = await Client.connect(node.ws, "shop", host_tok)
    await redis.sadd(keys.room("shop", "payers"), "payer")  # as the pay script leaves it
    await redis.hset(keys.entity("fan", "room:shop", "badges"), "payer", 3)  # a room without a host: the owner key
    await redis.hset(keys.user("payer", "points"), mapping={"level": 5})
    p = await Client.connect(node.ws, "shop", token("payer"))
    v = await Client.connect(node.ws, "shop", token("viewer"))
    try:
        for c, text in ((p, "paid!"), (v, "just looking"), (h, "welcome all")):
            ack = await c.request("comment", text=text)
            assert ack["t"] == "ack", ack
        got: dict[str, dict[str, Any]] = {}
        while len(got) < 3:
            e = await h.next_event()
            if e["t"] == "comment":
                got[e["d"]["text"]] = e["d"]
        assert got["paid!"]["buyer"] is True and got["paid!"]["level"] == 5
        assert got["paid!"]["fan"] == {"host": "room:shop", "level": 3}
        assert "buyer" not in got["just looking"] and "fan" not in got["just looking"] and got["just looking"]["level"] == 0
        assert "fan" not in got["welcome all"] and got["welcome all"]["role"] == "host"
    finally:
        for c in (p, v, h):
            await c.close()
