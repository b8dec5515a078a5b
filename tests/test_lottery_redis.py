"""Lotteries on real Redis, real gateways and real WebSocket clients: entries, the draw
worker's exactly-once announcement (racing and restarted workers), and the verify command."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livecommerce import cli
from livecommerce.lottery import new_lottery, new_seed, verify_record
from livecommerce.lottery_redis import RedisLotteries
from tests.waiting import wait_until
from tests.wsclient import Client
from workers.lottery import LotteryDrawer, run

PRIZE = {"kind": "product", "id": "bag1"}


async def next_of(c: Client, t: str, within: float = 5.0) -> dict[str, Any]:
    while True:
        e = await c.next_event(within)
        if e["t"] == t:
            return e


async def no_more(c: Client, t: str, wait: float) -> None:
    """Nothing of type ``t`` arrives within ``wait`` seconds."""
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        try:
            e = await c.next_event(left)
        except TimeoutError:
            return
        assert e["t"] != t, f"unexpected second {t}: {e}"


async def make(store: RedisLotteries, *, rule: str = "enter", k: int = 2, duration_s: int = 60, room: str = "r1", **extra: Any):  # type: ignore[no-untyped-def]
    seed = new_seed(secrets.token_bytes(32))
    body = {"prize": PRIZE, "winners": k, "duration_s": duration_s, "rule": rule, **extra}
    lot = new_lottery(body, id=secrets.token_hex(6), room=room, host="h", now_ms=int(time.time() * 1000), seed=seed)
    await store.create(lot, seed)
    return lot


# ---------------------------------------------------------------- the adapter
async def test_each_user_enters_once_even_when_entries_race(redis, keys):
    store = RedisLotteries(redis, keys)
    lot = await make(store)
    now = lot.started_ms + 1
    res = []
    for batch in range(5):  # 50 concurrent entries at a time (the client's pool size)
        res += await asyncio.gather(*(store.enter(lot.id, f"u{(batch * 50 + i) % 25}", now_ms=now) for i in range(50)))
    assert sum(code == "ok" for code, _ in res) == 25
    assert sum(code == "already_entered" for code, _ in res) == 225
    ents = await store.entrants(lot.id)
    assert sorted(ents) == sorted(f"u{i}" for i in range(25)) and len(ents) == 25
    assert sorted(n for code, n in res if code == "ok") == list(range(1, 26))  # positions in list order


async def test_gift_lottery_enters_once_the_gift_total_reaches_the_minimum(redis, keys):
    store = RedisLotteries(redis, keys)
    lot = await make(store, rule="gift", min_gift_value=100)
    now = lot.started_ms + 1
    assert await store.enter(lot.id, "g", now_ms=now, gift_value=60) == ("rule_not_met", 60)
    assert await store.enter(lot.id, "g", now_ms=now, gift_value=50) == ("ok", 1)
    assert (await store.enter(lot.id, "g", now_ms=now, gift_value=500))[0] == "already_entered"
    assert await store.entrants(lot.id) == ["g"]


async def test_no_entry_after_the_deadline_or_once_closed(redis, keys):
    store = RedisLotteries(redis, keys)
    lot = await make(store)
    assert (await store.enter(lot.id, "late", now_ms=lot.deadline_ms))[0] == "closed"
    assert (await store.transition(lot.id, "open", "closed"))[0]
    assert (await store.enter(lot.id, "early", now_ms=lot.started_ms + 1))[0] == "closed"
    assert (await store.enter("nope", "x", now_ms=0))[0] == "not_found"
    assert await store.entrants(lot.id) == []


# ---------------------------------------------------------------- exactly-once draw
async def test_two_workers_racing_on_the_same_lotteries_announce_one_winner_set_each(redis, keys, settings, gateway_factory, token, redis_url):
    import redis.asyncio as aioredis

    node = await gateway_factory()
    watcher = await Client.connect(node.ws, "r1", token("watcher"), fmt="json")
    store = RedisLotteries(redis, keys)
    lots = [await make(store, k=3) for _ in range(20)]
    for lot in lots:
        for i in range(12):
            await store.enter(lot.id, f"v{i}", now_ms=lot.started_ms + 1)
    other = aioredis.Redis.from_url(redis_url)
    try:
        w1 = LotteryDrawer.for_redis(redis, keys, worker="w1")
        w2 = LotteryDrawer.for_redis(other, keys, worker="w2")
        due = max(lot.deadline_ms for lot in lots)
        out1, out2 = await asyncio.gather(w1.drain(now_ms=due), w2.drain(now_ms=due))
        drawn = [o.lottery_id for o in out1 + out2 if o.action == "drawn"]
        assert sorted(drawn) == sorted(lot.id for lot in lots)  # one committer per lottery
        assert not [o for o in out1 + out2 if o.action == "republished"]
        ended: dict[str, list[list[str]]] = {}
        for _ in lots:
            e = await next_of(watcher, "lottery.ended")
            ended.setdefault(e["d"]["id"], []).append(e["d"]["winners"])
        await no_more(watcher, "lottery.ended", 0.5)
        assert sorted(ended) == sorted(lot.id for lot in lots)
        for lot in lots:
            rec = await store.public(lot.id)
            assert rec is not None and rec["state"] == "announced"
            assert ended[lot.id] == [rec["winners"]]
            assert verify_record(rec).ok
        # later polls find nothing due, even past any lease
        assert await w1.drain(now_ms=due + 10**6) == [] and await w2.drain(now_ms=due + 10**6) == []
    finally:
        await w1.broker.close()
        await w2.broker.close()
        await other.aclose()


async def test_two_running_worker_processes_announce_a_real_time_lottery_once(settings, gateway_factory, token):
    node = await gateway_factory()
    host = await Client.connect(node.ws, "r9", token("h", "host", ("r9",)))
    viewers = [await Client.connect(node.ws, "r9", token(f"v{i}")) for i in range(5)]
    started = await host.request("lottery.start", prize=PRIZE, winners=2, duration_s=1, rule="enter")
    lid = started["d"]["id"]
    for v in viewers:
        assert (await v.request("lottery.enter", lottery_id=lid))["d"]["entered"] is True
    stop = asyncio.Event()
    workers = [asyncio.create_task(run(settings.replace(node_id=f"w{i}"), stop)) for i in range(2)]
    try:
        e = await next_of(viewers[0], "lottery.ended", within=6)
        assert len(e["d"]["winners"]) == 2 and set(e["d"]["winners"]) <= {f"v{i}" for i in range(5)}
        await no_more(viewers[0], "lottery.ended", 1.0)
    finally:
        stop.set()
        await asyncio.gather(*workers)


async def test_a_restarted_worker_republishes_the_committed_result_and_never_draws_again(redis, keys, gateway_factory, token):
    node = await gateway_factory()
    watcher = await Client.connect(node.ws, "r1", token("watcher"))
    store = RedisLotteries(redis, keys)
    lot = await make(store, k=2)
    for i in range(10):
        await store.enter(lot.id, f"v{i}", now_ms=lot.started_ms + 1)
    now = lot.deadline_ms
    calls: list[str] = []

    async def crashing_hook(record: dict[str, Any]) -> None:
        calls.append(record["id"])
        if len(calls) == 1:
            raise RuntimeError("payout database down")

    first = LotteryDrawer.for_redis(redis, keys, worker="w1", hooks=[crashing_hook])
    assert await first.drain(now_ms=now) == []  # published, then the hook failed: still drawn
    e1 = await next_of(watcher, "lottery.ended")
    committed = await store.get(lot.id)
    assert committed is not None and committed.state == "drawn" and committed.record is not None
    # another worker cannot take over while the first one's lease runs
    other = LotteryDrawer.for_redis(redis, keys, worker="w2", hooks=[crashing_hook])
    assert [o.action for o in await other.drain(now_ms=now + 1)] == ["skipped"]
    # the same worker restarted (same name) republishes the stored record
    restarted = LotteryDrawer.for_redis(redis, keys, worker="w1", hooks=[crashing_hook])
    outs = await restarted.drain(now_ms=now + 2)
    assert [o.action for o in outs] == ["republished"]
    e2 = await next_of(watcher, "lottery.ended")
    assert e1["d"]["winners"] == e2["d"]["winners"] == committed.record["winners"]
    assert e1["d"]["seed"] == e2["d"]["seed"]
    done = await store.get(lot.id)
    assert done is not None and done.state == "announced" and done.record == committed.record
    assert calls == [lot.id, lot.id]
    await no_more(watcher, "lottery.ended", 0.3)
    for d in (first, other, restarted):
        await d.broker.close()


async def test_a_worker_that_died_after_committing_is_taken_over_after_its_lease(redis, keys, gateway_factory, token):
    node = await gateway_factory()
    watcher = await Client.connect(node.ws, "r1", token("watcher"))
    store = RedisLotteries(redis, keys)
    lot = await make(store, k=1)
    for i in range(4):
        await store.enter(lot.id, f"v{i}", now_ms=lot.started_ms + 1)
    # what worker w1 did before dying: close, draw, commit; it never published
    from livecommerce.lottery import build_record

    st = await store.get(lot.id)
    assert st is not None
    assert (await store.transition(lot.id, "open", "closed"))[0]
    record = build_record(lot, seed=st.seed, entrants=await store.entrants(lot.id), drawn_ms=lot.deadline_ms)
    assert await store.commit(lot.id, record, worker="w1", now_ms=lot.deadline_ms, lease_ms=30_000)
    w2 = LotteryDrawer.for_redis(redis, keys, worker="w2", lease_ms=30_000)
    assert [o.action for o in await w2.drain(now_ms=lot.deadline_ms + 1)] == ["skipped"]
    outs = await w2.drain(now_ms=lot.deadline_ms + 30_001)
    assert [(o.action, o.winners) for o in outs] == [("republished", record["winners"])]
    assert (await next_of(watcher, "lottery.ended"))["d"]["winners"] == record["winners"]
    await w2.broker.close()


# ---------------------------------------------------------------- end to end + verify
async def test_keyword_lottery_end_to_end_and_the_record_verifies(redis, keys, gateway_factory, token, tmp_path: Path):
    node = await gateway_factory()
    host = await Client.connect(node.ws, "show", token("h", "host", ("show",)))
    fans = [await Client.connect(node.ws, "show", token(f"fan{i}")) for i in range(4)]
    quiet = [await Client.connect(node.ws, "show", token(f"quiet{i}")) for i in range(2)]
    started = await host.request("lottery.start", prize=PRIZE, winners=2, duration_s=30, rule="keyword", keyword="lucky", title="Lucky bag")
    assert started["t"] == "ack", started
    lid = started["d"]["id"]
    ev = await next_of(fans[0], "lottery.started")
    assert ev["d"]["seed_hash"] == started["d"]["seed_hash"] and "seed" not in ev["d"]
    for i, f in enumerate(fans):
        await f.request("comment", text=f"I want the LUCKY bag #{i}")
        assert (await next_of(f, "lottery.entered"))["d"] == {"id": lid, "position": i + 1}
    for q in quiet:
        await q.request("comment", text="just watching")
    await host.request("comment", text="lucky lucky")  # the host never enters
    late = await Client.connect(node.ws, "show", token("late"))
    assert [lot["id"] for lot in late.welcome["d"]["lotteries"]] == [lid]
    err = await quiet[0].request("lottery.enter", lottery_id=lid)
    assert err["t"] == "error" and err["d"]["code"] == "rule_not_met"

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/api/v1/lotteries/{lid}") as r:
            before = await r.json()
        assert before["state"] == "open" and before["entrant_count"] == 4 and "seed" not in before

        drawer = LotteryDrawer.for_redis(redis, keys, worker="w1")
        st = await RedisLotteries(redis, keys).get(lid)
        assert st is not None
        outs = await drawer.drain(now_ms=st.lottery.deadline_ms)
        await drawer.broker.close()
        assert [o.action for o in outs] == ["drawn"]
        ended = await next_of(quiet[1], "lottery.ended")
        winners = ended["d"]["winners"]
        assert len(winners) == 2 and set(winners) <= {f"fan{i}" for i in range(4)}
        assert ended["d"]["proof"]["entrants"] == [f"fan{i}" for i in range(4)]
        for i, f in enumerate(fans):
            if f"fan{i}" in winners:
                assert (await next_of(f, "lottery.won"))["d"]["id"] == lid

        url = f"{node.url}/api/v1/lotteries/{lid}"
        async with http.get(url) as r:
            record = await r.json()
    assert record["winners"] == winners and record["state"] == "announced"

    # livecommerce lottery verify URL (the server runs in this loop: call it in a thread)
    assert await asyncio.to_thread(cli.main, ["lottery", "verify", url]) == 0
    good = tmp_path / "record.json"
    good.write_text(json.dumps(record))
    assert await asyncio.to_thread(cli.main, ["lottery", "verify", str(good)]) == 0

    tampered = {
        "seed": lambda r: r.update(seed="0" * 64),
        "entrant": lambda r: r["proof"]["entrants"].__setitem__(r["proof"]["entrants"].index(next(e for e in r["proof"]["entrants"] if e not in r["winners"])), "mallory"),
        "winner": lambda r: r["winners"].__setitem__(0, next(e for e in r["proof"]["entrants"] if e not in r["winners"])),
    }
    for name, change in tampered.items():
        bad = json.loads(json.dumps(record))
        change(bad)
        path = tmp_path / f"tampered-{name}.json"
        path.write_text(json.dumps(bad))
        assert await asyncio.to_thread(cli.main, ["lottery", "verify", str(path)]) == 1, name


def test_the_verify_command_line_prints_match_or_mismatch_with_exit_codes(tmp_path: Path):
    from livecommerce.lottery import build_record

    seed = "5e" * 32
    lot = new_lottery({"prize": PRIZE, "winners": 3, "duration_s": 5}, id="L7", room="r", host="h", now_ms=0, seed=seed)
    record = build_record(lot, seed=seed, entrants=[f"u{i}" for i in range(9)], drawn_ms=5000)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(record))
    record["winners"] = list(reversed(record["winners"]))
    bad.write_text(json.dumps(record))
    exe = [sys.executable, "-m", "livecommerce.cli", "lottery", "verify"]
    ok = subprocess.run([*exe, str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("MATCH"), ok.stdout + ok.stderr
    no = subprocess.run([*exe, str(bad)], capture_output=True, text=True, timeout=60)
    assert no.returncode == 1 and no.stdout.startswith("MISMATCH") and "differ" in no.stdout
    assert cli.main(["lottery", "verify", str(tmp_path / "nope.json")]) == 1  # unreadable: exit 1 too


async def test_explicit_entry_rules_over_websocket_and_gift_entry_through_the_service(gateway_factory, token):
    node = await gateway_factory()
    host = await Client.connect(node.ws, "r5", token("h", "host", ("r5",)))
    other_host = await Client.connect(node.ws, "r5", token("h2", "host", ("elsewhere",)))
    viewer = await Client.connect(node.ws, "r5", token("v"))
    elsewhere = await Client.connect(node.ws, "r6", token("v6"))
    lid = (await host.request("lottery.start", prize=PRIZE, winners=1, duration_s=30))["d"]["id"]
    first = await viewer.request("lottery.enter", lottery_id=lid)
    assert first["d"] == {"lottery_id": lid, "entered": True, "already": False, "position": 1}
    assert (await viewer.request("lottery.enter", lottery_id=lid))["d"]["already"] is True
    assert (await host.request("lottery.enter", lottery_id=lid))["d"]["code"] == "host_may_not_enter"
    assert (await elsewhere.request("lottery.enter", lottery_id=lid))["d"]["code"] == "not_found"
    assert (await viewer.request("lottery.enter", lottery_id="nosuch"))["d"]["code"] == "not_found"
    assert (await viewer.request("lottery.start", prize=PRIZE, duration_s=5))["d"]["code"] == "forbidden"
    assert (await other_host.request("lottery.start", prize=PRIZE, duration_s=5))["d"]["code"] == "forbidden"

    gid = (await host.request("lottery.start", prize={"kind": "product", "id": "c9"}, duration_s=30, rule="gift", min_gift_value=100))["d"]["id"]
    on_gift = node.gw.hooks.gift
    assert len(on_gift) >= 1
    # the entry notice goes to the user's nodes: wait until presence (written in short windows) has v
    await wait_until(lambda: node.gw.presence.user_nodes(["v"]), until=lambda got: bool(got.get("v")), what="v in presence")
    for hook in on_gift:
        await hook("r5", "v", 60)
    assert (await viewer.request("lottery.enter", lottery_id=gid))["d"]["code"] == "rule_not_met"
    for hook in on_gift:
        await hook("r5", "v", 40)
    assert (await next_of(viewer, "lottery.entered"))["d"]["id"] == gid
    st = node.services.lotteries.store
    assert await st.entrants(gid) == ["v"]

    # a page reloaded mid-show asks which of the room's open lotteries it is in
    async with aiohttp.ClientSession() as http:
        async def mine(tok: str | None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {tok}"} if tok else {}
            async with http.get(f"{node.url}/api/v1/rooms/r5/lotteries/mine", headers=headers) as r:
                return r.status, await r.json()

        assert await mine(token("v")) == (200, {"entered": sorted([lid, gid])})
        assert await mine(token("v6")) == (200, {"entered": []})
        status, body = await mine(None)
        assert status == 401 and body["error"]["code"] == "unauthorized", body


async def test_http_start_needs_the_rooms_host(gateway_factory, token):
    node = await gateway_factory()
    body = {"prize": PRIZE, "winners": 1, "duration_s": 10, "rule": "enter"}
    async with aiohttp.ClientSession() as http:
        for tok, status in ((token("v"), 403), (token("h2", "host", ("x",)), 403), (token("h", "host", ("r7",)), 201), (token("ops", "ops"), 201)):
            async with http.post(f"{node.url}/api/v1/rooms/r7/lotteries", json=body, headers={"Authorization": f"Bearer {tok}"}) as r:
                assert r.status == status, await r.text()
        async with http.post(f"{node.url}/api/v1/rooms/r7/lotteries", json=body) as r:
            assert r.status == 401
        async with http.get(f"{node.url}/api/v1/rooms/r7/lotteries") as r:
            assert len((await r.json())["lotteries"]) == 2
        async with http.get(f"{node.url}/api/v1/lotteries/nosuch") as r:
            assert r.status == 404


@pytest.mark.parametrize("rule", ["enter"])
async def test_a_lottery_with_no_entrants_ends_with_no_winners(redis, keys, rule):
    store = RedisLotteries(redis, keys)
    lot = await make(store, rule=rule)
    drawer = LotteryDrawer.for_redis(redis, keys, worker="w")
    outs = await drawer.drain(now_ms=lot.deadline_ms)
    await drawer.broker.close()
    assert [(o.action, o.winners) for o in outs] == [("drawn", [])]
    rec = await store.public(lot.id)
    assert rec is not None and rec["winners"] == [] and verify_record(rec).ok


async def test_a_keyword_lottery_started_on_another_node_takes_entries_at_once(gateway_factory, token):
    a, b = await gateway_factory(), await gateway_factory()
    fan = await Client.connect(a.ws, "r8", token("fan"))
    await fan.request("comment", text="lucky before any lottery")  # node A caches: no lottery
    host = await Client.connect(b.ws, "r8", token("h", "host", ("r8",)))
    lid = (await host.request("lottery.start", prize=PRIZE, duration_s=30, rule="keyword", keyword="lucky"))["d"]["id"]
    await next_of(fan, "lottery.started")  # node A dropped its cache on this event
    await fan.request("comment", text="lucky me")
    assert (await next_of(fan, "lottery.entered", within=2))["d"]["id"] == lid
