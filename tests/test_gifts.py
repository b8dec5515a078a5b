"""Gifts: the catalogue, combo rules (pure and their Lua twin), per-tick coalescing, and the
room broadcast with leaderboards across two gateway nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from livecommerce.errors import ConfigError, NotFound
from livecommerce.gifts import (
    Combo,
    GiftSpec,
    GiftTally,
    load_catalogue,
    next_combo,
    parse_catalogue,
)
from livecommerce.keys import Keys
from livecommerce.leaderboard import BoardGate, BoardTally, clamp_top, ranked
from livecommerce.wallet_redis import RedisWallet, SentGift
from tests.wsclient import Client

ROSE = GiftSpec("rose", "Rose", 1, 1)


def test_the_packaged_catalogue_loads_and_prices_are_coins() -> None:
    cat = load_catalogue()
    assert len(cat) >= 5 and cat.get("rose").price == 1 and cat.get("rocket").tier == 4
    with pytest.raises(NotFound) as exc:
        cat.get("unicorn")
    assert exc.value.code == "unknown_gift"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gifts: []", "non-empty"),
        ("gifts: [{id: a, name: A, price: 0, tier: 1}]", "gifts[0].price"),
        ("gifts: [{id: 'a b', name: A, price: 1}]", "gifts[0].id"),
        ("gifts: [{id: a, name: A, price: 1, tier: 9}]", "gifts[0].tier"),
        ("gifts: [{id: a, name: A, price: 1}, {id: a, name: B, price: 2}]", "listed twice"),
        ("gifts: [: nope", "YAML"),
    ],
)
def test_a_bad_catalogue_is_refused_naming_the_entry(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_catalogue(text)


def test_a_missing_catalogue_file_is_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_catalogue(str(tmp_path / "nope.yaml"))


@given(st.lists(st.tuples(st.integers(1, 5), st.sampled_from([None, "a", "b"])), min_size=1, max_size=30))
def test_a_combo_total_is_the_sum_of_the_sends_since_it_started(sends: list[tuple[int, str | None]]) -> None:
    combo: Combo | None = None
    started_at = 0
    for i, (count, requested) in enumerate(sends):
        nxt = next_combo(combo, count=count, requested=requested, new_id=f"n{i}")
        if combo is None or nxt.id != combo.id or (requested is not None and requested != combo.id):
            started_at = i
        combo = nxt
        assert combo.total == sum(c for c, _ in sends[started_at : i + 1])
        if requested is not None:
            assert combo.id == requested


async def test_the_lua_combo_twin_agrees_with_the_rule(redis: aioredis.Redis, keys: Keys) -> None:
    w = RedisWallet(redis, keys, combo_window_ms=300)
    await w.topup(user="u", amount=1000, idempotency_key="k", by="ops", now_ms=1)
    expect: Combo | None = None
    for count, requested in [(1, None), (2, None), (3, "x"), (1, "x"), (1, None), (2, "y")]:
        r = await w.send_gift(user="u", room="r", host="h", spec=ROSE, count=count, combo_id=requested, now_ms=1)
        assert isinstance(r, SentGift)
        expect = next_combo(expect, count=count, requested=requested, new_id=r.combo.id)
        assert r.combo == expect
    await asyncio.sleep(0.4)  # past the window: a new combo
    r = await w.send_gift(user="u", room="r", host="h", spec=ROSE, count=1, combo_id=None, now_ms=1)
    assert isinstance(r, SentGift) and r.combo.total == 1 and r.combo.id != "y"


def test_a_tick_of_sends_becomes_one_event_per_combo_with_delta_and_total() -> None:
    cat = load_catalogue()
    t = GiftTally()
    for total in range(1, 11):
        t.add("r", "u", "U", "rose", Combo("c1", total), 1)
    t.add("r", "u", "U", "rose", Combo("c1", 7), 1)  # an older total arriving late never shrinks it
    t.add("r", "v", "V", "cake", Combo("c2", 3), 3)
    events = dict(((d["user"], d["combo_id"]), d) for _, d in t.take(cat))
    assert events[("u", "c1")] | {} == {
        "user": "u", "name": "U", "gift_id": "rose", "gift_name": "Rose", "tier": 1, "price": 1,
        "combo_id": "c1", "count": 11, "total": 10, "value": 11,
    }
    assert events[("v", "c2")]["value"] == 3 * 99
    assert t.take(cat) == [] and len(t) == 0


def test_board_increments_sum_per_member_and_pushes_only_changes() -> None:
    b = BoardTally()
    b.add_gift(room="r", host="h", user="u", value=5)
    b.add_gift(room="r", host="h", user="u", value=7)
    assert b.take() == {("room", "r", "u"): 12, ("host", "h", "u"): 12, ("hosts", "", "h"): 12}
    assert ranked([("a", 9.0), ("b", 9.0), ("c", 1.0)]) == [
        {"rank": 1, "id": "a", "score": 9}, {"rank": 1, "id": "b", "score": 9}, {"rank": 3, "id": "c", "score": 1}]
    g = BoardGate()
    assert g.changed("r", [{"id": "a"}]) and not g.changed("r", [{"id": "a"}])
    assert (clamp_top(None), clamp_top("0"), clamp_top("5000"), clamp_top("x")) == (10, 1, 100, 10)


async def test_a_gift_burst_is_broadcast_as_a_growing_combo_and_ranked_on_every_node(
    gateway_factory: Any, token: Callable[..., str]
) -> None:
    a = await gateway_factory(command_rate=1000.0, command_burst=1000)
    b = await gateway_factory()
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{a.url}/api/v1/rooms", json={"id": "show1"},
                          headers={"Authorization": f"Bearer {token('h1', role='host', rooms=('show1',))}"}) as resp:
            assert resp.status == 201
        for user in ("fan", "fan2"):
            async with s.post(f"{a.url}/api/v1/wallets/{user}/topup", json={"amount": 1000, "idempotency_key": f"k-{user}"},
                              headers={"Authorization": f"Bearer {token('ops', role='ops')}"}) as resp:
                assert resp.status == 201
    watcher = await Client.connect(b.ws, "show1", token("w"), fmt="json")
    fan = await Client.connect(a.ws, "show1", token("fan"), fmt="json")
    fan2 = await Client.connect(a.ws, "show1", token("fan2"), fmt="json")
    for _ in range(40):  # a burst: 40 frames before reading any reply
        await fan.send("gift", gift_id="rose", count=1)
    acks = []
    while len(acks) < 40:
        e = await fan.next_event(5)
        assert e["t"] not in ("error",), e
        if e["t"] == "ack":
            acks.append(e)
    assert sorted(r["d"]["total"] for r in acks) == list(range(1, 41))  # one combo, every unit counted once
    assert len({r["d"]["combo_id"] for r in acks}) == 1
    r = await fan2.request("gift", gift_id="cake", count=2, combo_id="big")
    assert r["d"] == {"balance": 1000 - 198, "combo_id": "big", "total": 2, "value": 198}

    gifts: list[dict[str, Any]] = []
    board: dict[str, Any] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (sum(g["count"] for g in gifts) < 42 or not board):
        e = await watcher.next_event(5)
        if e["t"] == "gift":
            gifts.append(e["d"])
        elif e["t"] == "leaderboard" and len(e["d"]["top"]) == 2:
            board = e["d"]
    roses = [g for g in gifts if g["gift_id"] == "rose"]
    assert sum(g["count"] for g in roses) == 40 and len(roses) < 40  # coalesced per tick
    assert [g["total"] for g in roses] == sorted(g["total"] for g in roses) and roses[-1]["total"] == 40
    assert [g for g in gifts if g["gift_id"] == "cake"] == [{
        "user": "fan2", "name": "fan2", "gift_id": "cake", "gift_name": "Birthday cake", "tier": 2, "price": 99,
        "combo_id": "big", "count": 2, "total": 2, "value": 198}]
    assert board["top"] == [{"rank": 1, "id": "fan2", "score": 198}, {"rank": 2, "id": "fan", "score": 40}]

    async with aiohttp.ClientSession() as s:
        async with s.get(f"{b.url}/api/v1/rooms/show1/leaderboard?n=1") as resp:
            assert (await resp.json())["top"] == [{"rank": 1, "id": "fan2", "score": 198}]
        async with s.get(f"{b.url}/api/v1/hosts/h1/leaderboard") as resp:
            assert [x["id"] for x in (await resp.json())["top"]] == ["fan2", "fan"]
        async with s.get(f"{b.url}/api/v1/leaderboards/hosts") as resp:
            assert (await resp.json())["top"] == [{"rank": 1, "id": "h1", "score": 238}]
        async with s.get(f"{b.url}/api/v1/gifts") as resp:
            assert (await resp.json())["gifts"][0] == {"id": "rose", "name": "Rose", "price": 1, "tier": 1}
    late = await Client.connect(b.ws, "show1", token("late"), fmt="json")
    assert late.welcome["d"]["leaderboard"][0]["id"] == "fan2"
    for c in (watcher, fan, fan2, late):
        await c.close()
