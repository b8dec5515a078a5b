"""Red packets on real Redis and SQL: the drop debits once, grabbing races never over-pay,
each share is credited once, the keeper ends, refunds and announces exactly once (also with
keepers racing and after a crash between any two steps), and after the wallet worker's
drain every Redis balance equals its SQL ledger and the coins are conserved."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from livecommerce.broker import MemoryBroker
from livecommerce.keys import Keys
from livecommerce.log import Log
from livecommerce.log_redis import RedisLog
from livecommerce.redis_conn import connect
from livecommerce.redpackets import (
    RedPacket,
    drop_fingerprint,
    new_packet,
    new_seed,
    packet_id,
    parse_drop,
    split,
    verify_record,
)
from livecommerce.redpackets_redis import Dropped, DropRefused, DropReplayed, RedisRedPackets
from livecommerce.store_sql import SqlStore
from livecommerce.wallet import shard_of
from livecommerce.wallet_redis import RedisWallet
from workers.redpackets import RedPacketKeeper
from workers.wallet import drain

NOW = int(time.time() * 1000)


async def _fund(w: RedisWallet, log: Log, user: str, amount: int) -> None:
    r = await w.topup(user=user, amount=amount, idempotency_key=f"t{secrets.token_hex(4)}", by="ops", now_ms=NOW)
    await w.publish(log, [r.event])


async def _drop(store: RedisRedPackets, w: RedisWallet, log: Log, by: str, amount: int, count: int, *,
                rid: str = "d1", duration_s: int = 60, now: int = NOW, **kw: Any) -> RedPacket:
    req = parse_drop({"amount": amount, "count": count, "request_id": rid, "duration_s": duration_s, **kw})
    seed = new_seed(secrets.token_bytes(32))
    pid = packet_id(shard_of(by), secrets.token_hex(6))
    p = new_packet(req, id=pid, room="room1", by=by, host="host", now_ms=now, seed=seed)
    res = await store.drop(p, seed=seed, shares=split(seed, pid, amount, count), request_id=rid,
                           fingerprint=drop_fingerprint("room1", req))
    assert isinstance(res, Dropped), res
    await w.publish(log, [res.event])
    await store.index_room(p)
    return p


@pytest.fixture
async def pooled(redis_url: str, redis: aioredis.Redis) -> Any:
    """A client with the gateway's blocking pool (128 connections): racers wait for one."""
    client = connect(redis_url)
    yield client
    await client.aclose()


def _parts(redis: aioredis.Redis, keys: Keys) -> tuple[RedisRedPackets, RedisWallet, RedisLog, MemoryBroker]:
    return RedisRedPackets(redis, keys), RedisWallet(redis, keys), RedisLog(redis, keys), MemoryBroker()


async def test_a_drop_debits_once_per_request_and_never_overdraws(redis: aioredis.Redis, keys: Keys) -> None:
    store, w, log, _ = _parts(redis, keys)
    await _fund(w, log, "host", 100)
    req = parse_drop({"amount": 60, "count": 3, "request_id": "same"})
    results = []
    for i in range(3):  # the first, a retry of it, and a new request the balance no longer covers
        rid = "same" if i < 2 else "other"
        r = parse_drop({"amount": 60, "count": 3, "request_id": rid})
        seed = new_seed(secrets.token_bytes(32))
        p = new_packet(r, id=packet_id(shard_of("host"), f"p{i}"), room="room1", by="host", host="host", now_ms=NOW, seed=seed)
        results.append(await store.drop(p, seed=seed, shares=split(seed, p.id, 60, 3), request_id=rid,
                                        fingerprint=drop_fingerprint("room1", r)))
    first, again, poor = results
    assert isinstance(first, Dropped) and first.balance == 40
    assert again == DropReplayed(packet_id(shard_of("host"), "p0"))
    assert poor == DropRefused("insufficient_funds", 40)
    assert await w.balance("host") == 40
    other = parse_drop({"amount": 10, "count": 3, "request_id": "same"})  # the key reused for another drop
    seed = new_seed(secrets.token_bytes(32))
    p = new_packet(other, id=packet_id(shard_of("host"), "p9"), room="room1", by="host", host="host", now_ms=NOW, seed=seed)
    conflict = await store.drop(p, seed=seed, shares=split(seed, p.id, 10, 3), request_id="same",
                                fingerprint=drop_fingerprint("room1", other))
    assert conflict == DropRefused("idempotency_conflict", 0) and await w.balance("host") == 40
    assert req.amount == 60


async def test_many_grabbers_racing_never_overpay_and_the_ledger_agrees(
    pooled: aioredis.Redis, keys: Keys, store: SqlStore
) -> None:
    """300 grabbers, each grabbing twice at once, race for 50 shares of 1,000 coins."""
    packets, w, log, broker = _parts(pooled, keys)
    await _fund(w, log, "host", 1000)
    p = await _drop(packets, w, log, "host", 1000, 50)
    users = [f"v{i}" for i in range(300)]
    got = await asyncio.gather(*(packets.grab(p.id, u, now_ms=NOW + 1) for u in users for _ in range(2)))
    ok = [g for g in got if g.code == "ok"]
    assert len(ok) == 50 and sum(g.amount for g in ok) == 1000 and min(g.amount for g in ok) > 0
    assert sorted(g.index for g in ok) == list(range(50))
    assert len({g.pending.user for g in ok if g.pending}) == 50  # nobody twice
    dups = [g for g in got if g.code == "already_grabbed"]
    firsts = {g.pending.user: g.amount for g in ok if g.pending}
    assert len(dups) == 50 and all(firsts[users[i // 2]] == d.amount for i, d in enumerate(got) if d.code == "already_grabbed")
    assert {g.code for g in got} == {"ok", "already_grabbed", "empty"}
    # every credit applied twice at once: credited once
    credits = await asyncio.gather(*(packets.credit(g.pending) for g in ok for _ in range(2) if g.pending))
    assert sum(1 for done, _, _ in credits if done) == 50
    await w.publish(log, [ev for done, _, ev in credits if done])
    for g in ok:
        assert g.pending is not None
        await packets.clear_pending(g.pending)
    # emptied: the keeper ends it at once, with nothing to refund
    keeper = RedPacketKeeper(packets, w, log, broker, worker="k1")
    assert [(o.action, o.refunded) for o in await keeper.drain(now_ms=NOW + 2)] == [("ended", 0)]
    rec = await packets.record(p.id)
    assert rec is not None and rec["state"] == "announced" and verify_record(rec).ok
    assert [g["amount"] for g in rec["grabs"]] == rec["shares"]
    # SQL: one debit, 50 credits, each once; every balance equals its ledger; coins conserved
    assert await drain(log, store, fetch_timeout_ms=100) == 1 + 1 + 50
    balances = await packets.balances(["host", *users])
    assert balances["host"] == 0 and sum(balances.values()) == 1000
    for u in ["host", *[g.pending.user for g in ok if g.pending]]:
        assert await store.wallet_balance(u) == balances[u]


async def test_expiry_refunds_the_rest_once_with_keepers_racing_and_announces_once(
    redis: aioredis.Redis, keys: Keys, store: SqlStore
) -> None:
    packets, w, log, broker = _parts(redis, keys)
    await _fund(w, log, "host", 500)
    p = await _drop(packets, w, log, "host", 500, 10, duration_s=5)
    for u in ("a", "b", "c"):
        g = await packets.grab(p.id, u, now_ms=NOW + 10)
        assert g.code == "ok" and g.pending is not None
        done, _, ev = await packets.credit(g.pending)
        assert done
        await w.publish(log, [ev])
        await packets.clear_pending(g.pending)
    keepers = [RedPacketKeeper(packets, w, log, broker, worker=f"k{i}") for i in range(4)]
    assert [o for k in keepers for o in await k.drain(now_ms=NOW + 1000)] == []  # not due yet
    outs = await asyncio.gather(*(k.drain(now_ms=p.expires_ms) for k in keepers))
    ended = [o for batch in outs for o in batch if o.action == "ended"]
    taken = sum(g["amount"] for g in (await packets.record(p.id) or {})["grabs"])
    assert len(ended) == 1 and ended[0].refunded == 500 - taken > 0
    assert (await packets.grab(p.id, "late", now_ms=NOW + 20)).code == "ended"  # no grab after the end, whatever the clock
    assert sum(k.credited for k in keepers) == 1
    assert await w.balance("host") == 500 - taken
    # the keeper looks again: nothing more happens
    assert [o.action for k in keepers for o in await k.drain(now_ms=p.expires_ms + 60_000)] == []
    rec = await packets.record(p.id)
    assert rec is not None and verify_record(rec).ok and rec["refunded"] == 500 - taken
    assert await packets.room_packet_ids("room1", now_ms=NOW) == []
    hist = await broker.history("room1", 0)
    ends = [e for e in hist.events if e["t"] == "redpacket.ended"]
    assert len(ends) == 1 and ends[0]["d"]["refunded"] == 500 - taken and ends[0]["d"]["best"]["user"] in "abc"
    assert await drain(log, store, fetch_timeout_ms=100) == 1 + 1 + 3 + 1
    assert await store.wallet_balance("host") == 500 - taken
    assert sum((await packets.balances(["host", "a", "b", "c"])).values()) == 500


async def test_a_grab_whose_process_died_before_the_credit_is_credited_once_by_the_keeper(
    redis: aioredis.Redis, keys: Keys, store: SqlStore
) -> None:
    packets, w, log, broker = _parts(redis, keys)
    await _fund(w, log, "host", 30)
    p = await _drop(packets, w, log, "host", 30, 3)
    g = await packets.grab(p.id, "v1", now_ms=NOW)  # ... and the gateway is killed here
    assert g.code == "ok" and g.pending is not None
    assert await w.balance("v1") == 0 and len(await packets.pending()) == 1
    keeper = RedPacketKeeper(packets, w, log, broker, worker="k1")
    assert await keeper.sweep(now_ms=NOW + 1000, grace_ms=5000) == 0  # young: its gateway may still be at it
    assert await keeper.sweep(now_ms=NOW + 10_000, grace_ms=5000) == 1
    assert await keeper.sweep(now_ms=NOW + 20_000, grace_ms=5000) == 0 and await packets.pending() == []
    assert await w.balance("v1") == g.amount
    # the gateway's own credit arriving late (it was only slow) changes nothing
    done, bal, _ = await packets.credit(g.pending)
    assert (done, bal) == (False, g.amount)
    # a retry of the grab answers the first share
    again = await packets.grab(p.id, "v1", now_ms=NOW + 1)
    assert (again.code, again.amount, again.index) == ("already_grabbed", g.amount, 0)
    assert await drain(log, store, fetch_timeout_ms=100) == 3
    assert await store.wallet_balance("v1") == g.amount


async def test_a_keeper_that_died_after_the_end_leaves_the_refund_to_the_next_once(
    redis: aioredis.Redis, keys: Keys, store: SqlStore
) -> None:
    packets, w, log, broker = _parts(redis, keys)
    await _fund(w, log, "host", 40)
    p = await _drop(packets, w, log, "host", 40, 4, duration_s=5)
    # keeper k1 ends the packet (the refund becomes pending) and dies before applying it
    assert await packets.step(p.id, now_ms=p.expires_ms, worker="k1", lease_ms=30_000) == ("announce", 40)
    assert await w.balance("host") == 0
    k2 = RedPacketKeeper(packets, w, log, broker, worker="k2", lease_ms=30_000)
    assert await k2.drain(now_ms=p.expires_ms + 1000) == []  # k1's lease holds
    outs = await k2.drain(now_ms=p.expires_ms + 31_000)  # expired: k2 takes over
    assert [(o.action, o.refunded) for o in outs] == [("ended", 40)]
    assert await w.balance("host") == 40
    # k1 restarted with its name (its lease is gone) and the sweeper: nothing twice
    k1 = RedPacketKeeper(packets, w, log, broker, worker="k1")
    assert await k1.drain(now_ms=p.expires_ms + 32_000) == []
    assert await k1.sweep(now_ms=p.expires_ms + 99_000) == 0
    assert await w.balance("host") == 40
    assert await drain(log, store, fetch_timeout_ms=100) == 3
    assert await store.wallet_balance("host") == 40


async def test_grabs_are_refused_with_codes(redis: aioredis.Redis, keys: Keys) -> None:
    packets, w, log, _ = _parts(redis, keys)
    await _fund(w, log, "host", 10)
    p = await _drop(packets, w, log, "host", 10, 1, duration_s=5)
    assert (await packets.grab("63-nothere", "v", now_ms=NOW)).code == "not_found"
    assert (await packets.grab("bad id", "v", now_ms=NOW)).code == "not_found"
    assert (await packets.grab(p.id, "v", now_ms=p.expires_ms)).code == "expired"
    assert (await packets.grab(p.id, "v", now_ms=NOW)).code == "ok"
    assert (await packets.grab(p.id, "w", now_ms=NOW)).code == "empty"
    assert await packets.get("99-x") is None and await packets.record("1-nothere") is None


async def test_every_step_runs_on_redis_cluster_in_one_slot(cluster_redis: Any, keys: Keys) -> None:
    """Each script's keys share a slot (a cross-slot script is refused by a cluster): drop,
    racing grabs, credits in the grabbers' shards, the end with its refund, the announcement."""
    from livecommerce.log import MemoryLog

    packets, w, log = RedisRedPackets(cluster_redis, keys), RedisWallet(cluster_redis, keys), MemoryLog()
    broker = MemoryBroker()
    await _fund(w, log, "host", 100)
    p = await _drop(packets, w, log, "host", 100, 10, duration_s=5)
    got = await asyncio.gather(*(packets.grab(p.id, f"c{i}", now_ms=NOW + 1) for i in range(6)))
    assert all(g.code == "ok" for g in got)
    for g in got:
        assert g.pending is not None
        done, _, ev = await packets.credit(g.pending)
        assert done
        await w.publish(log, [ev])
        await packets.clear_pending(g.pending)
    keeper = RedPacketKeeper(packets, w, log, broker, worker="k1")
    taken = sum(g.amount for g in got)
    assert [(o.action, o.refunded) for o in await keeper.drain(now_ms=p.expires_ms)] == [("ended", 100 - taken)]
    balances = await packets.balances(["host", *[f"c{i}" for i in range(6)]])
    assert balances["host"] == 100 - taken and sum(balances.values()) == 100
    rec = await packets.record(p.id)
    assert rec is not None and rec["state"] == "announced" and verify_record(rec).ok
