"""Red packets across real processes killed with SIGKILL: nothing lost, nothing paid twice.

* A ``livecommerce gateway`` process killed while hundreds of grabs are in flight: the
  grabbers retry on a second gateway (a retry answers the first share), the keeper applies
  the credits the dead gateway left pending, the wallet worker writes the ledger; then every
  share is credited exactly once, to the user the record names, and the coins are conserved.
* A ``livecommerce worker redpackets`` process killed while it ends, refunds and announces
  hundreds of expired packets; a restarted keeper finishes: every packet is refunded exactly
  once and announced.

The processes run this checkout's code (``python -m livecommerce.cli`` from its root).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livecommerce.config import Settings
from livecommerce.keys import Keys
from livecommerce.log_open import open_log
from livecommerce.migrations import upgrade
from livecommerce.redpackets import (
    drop_fingerprint,
    new_packet,
    new_seed,
    packet_id,
    parse_drop,
    split,
    verify_record,
)
from livecommerce.redpackets_redis import Dropped, RedisRedPackets
from livecommerce.store_sql import SqlStore
from livecommerce.wallet import shard_of
from livecommerce.wallet_redis import RedisWallet
from scripts.chaos_rush import Proc, free_port, lc_env, token, wait_ready
from tests.waiting import wait_until
from workers.redpackets import RedPacketKeeper
from workers.wallet import drain


def _proc(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    return Proc(name, [sys.executable, "-m", "livecommerce.cli", *args, "--node-id", name], env, log_dir)


def _env(s: Settings, db: str) -> dict[str, str]:
    return lc_env(redis_url=s.redis_url, key_prefix=s.key_prefix, database_url=db, secret=s.secret, log_json="1")


async def _call(http: aiohttp.ClientSession, method: str, url: str, tok: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, headers={"Authorization": f"Bearer {tok}"}, **kw) as r:
        return r.status, await r.json()


@pytest.mark.timeout(180)
async def test_a_gateway_killed_mid_grab_loses_no_share_and_pays_none_twice(settings: Settings, redis: Any,
                                                                            tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/rp.db"
    await upgrade(db)
    env = _env(settings, db)
    ports = [free_port(), free_port()]
    gws = [_proc(f"gw-rp{i}", ["gateway", "--port", str(p)], env, tmp_path) for i, p in enumerate(ports)]
    bases = [f"http://127.0.0.1:{p}/api/v1" for p in ports]
    room, host, shares, amount, users = "rp-kill", "boss", 200, 5000, [f"g{i}" for i in range(400)]
    store = SqlStore(db)
    try:
        for g in gws:
            g.start()
        for g, p in zip(gws, ports, strict=True):
            await wait_ready(f"http://127.0.0.1:{p}", 60, g)
        htok = token(host, "host", rooms=(room,), secret=settings.secret)
        async with aiohttp.ClientSession() as http:
            assert (await _call(http, "POST", f"{bases[0]}/rooms", htok, json={"id": room}))[0] == 201
            st, _ = await _call(http, "POST", f"{bases[0]}/wallets/{host}/topup", token("ops", "ops", secret=settings.secret),
                                json={"amount": amount, "idempotency_key": "fund"})
            assert st == 201
            st, p = await _call(http, "POST", f"{bases[0]}/rooms/{room}/redpackets", htok,
                                json={"amount": amount, "count": shares, "request_id": "big", "duration_s": 600})
            assert st == 201, p
            answers: dict[str, int] = {}  # user -> the share a gateway answered

            async def grab(u: str, base: str) -> None:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    st, r = await _call(http, "POST", f"{base}/redpackets/{p['id']}/grab", token(u, secret=settings.secret),
                                        timeout=aiohttp.ClientTimeout(total=10))
                    if st in (200, 201):
                        answers[u] = r["amount"]

            rush = [asyncio.create_task(grab(u, bases[0])) for u in users]
            await wait_until(lambda: len(answers), until=lambda n: n >= 20, timeout=30, what="20 grabs answered")
            gws[0].kill9()  # mid-rush: grabs in flight die with it
            await asyncio.gather(*rush)
            answered_before = len(answers)
            assert answered_before < shares, "the kill must land mid-rush"
            # every grabber retries on the other gateway: a user who grabbed gets the same share back
            first = dict(answers)
            await asyncio.gather(*(grab(u, bases[1]) for u in users))
            assert all(answers[u] == a for u, a in first.items())
        # the keeper: credits the dead gateway left pending, then the end (every share taken)
        keys = Keys(settings.key_prefix)
        durable = open_log(settings.replace(database_url=db), redis)
        packets, wallet = RedisRedPackets(redis, keys), RedisWallet(redis, keys)
        keeper = RedPacketKeeper(packets, wallet, durable, _NoBroker(), worker="k1")
        left_pending = len(await packets.pending())
        await keeper.sweep(now_ms=int(time.time() * 1000) + 60_000)
        assert [o.action for o in await keeper.drain()] == ["ended"]
        assert await packets.pending() == []
        await wallet.sweep(durable, now_ms=int(time.time() * 1000) + 60_000)  # what the dead gateway did not append
        rec = await packets.record(p["id"])
        assert rec is not None and verify_record(rec).ok and rec["grabbed"] == shares and rec["refunded"] == 0
        named = {g["user"]: g["amount"] for g in rec["grabs"]}
        assert len(named) == shares and all(named[u] == a for u, a in answers.items())
        balances = await packets.balances([host, *users])
        assert {u: b for u, b in balances.items() if b and u != host} == named  # each share once, to its grabber
        assert sum(balances.values()) == amount
        await drain(durable, store, fetch_timeout_ms=200)
        for u in [host, *named]:
            assert await store.wallet_balance(u) == balances[u], u
        print(f"answered before the kill: {answered_before}; credits left pending by it: {left_pending}")
        await durable.close()
    finally:
        await store.close()
        for g in gws:
            g.kill9()


class _NoBroker:
    """The room has no viewer in this test: ``redpacket.ended`` goes nowhere."""

    async def publish_room(self, room: str, env: dict[str, Any], *, history: bool = True, now_ms: int) -> int:
        return 0


@pytest.mark.timeout(180)
async def test_a_keeper_killed_mid_refund_refunds_every_packet_exactly_once(settings: Settings, redis: Any,
                                                                           tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/rk.db"
    await upgrade(db)
    keys = Keys(settings.key_prefix)
    packets, wallet = RedisRedPackets(redis, keys), RedisWallet(redis, keys)
    durable = open_log(settings.replace(database_url=db), redis)
    n, now = 400, int(time.time() * 1000)
    droppers = [f"d{i % 40}" for i in range(n)]
    for d in set(droppers):
        r = await wallet.topup(user=d, amount=10_000, idempotency_key="fund", by="ops", now_ms=now)
        await wallet.publish(durable, [r.event])
    pids, grabbed = [], 0
    for i, d in enumerate(droppers):  # 400 packets of 30 coins in 3 shares, one grabbed each, expiring now
        req = parse_drop({"amount": 30, "count": 3, "request_id": f"r{i}", "duration_s": 5})
        seed = new_seed(secrets.token_bytes(32))
        pk = new_packet(req, id=packet_id(shard_of(d), secrets.token_hex(6)), room="rk", by=d, host=d, now_ms=now - 10_000, seed=seed)
        res = await packets.drop(pk, seed=seed, shares=split(seed, pk.id, 30, 3), request_id=f"r{i}",
                                 fingerprint=drop_fingerprint("rk", req))
        assert isinstance(res, Dropped)
        await wallet.publish(durable, [res.event])
        g = await packets.grab(pk.id, f"v{i}", now_ms=now - 9_000)
        assert g.code == "ok" and g.pending is not None
        _, _, ev = await packets.credit(g.pending)
        await wallet.publish(durable, [ev])
        await packets.clear_pending(g.pending)
        pids.append(pk.id)
        grabbed += g.amount
    env = _env(settings, db)
    worker = _proc("rp-keeper", ["worker", "redpackets"], env, tmp_path)

    async def announced() -> int:
        pipe = redis.pipeline(transaction=False)
        for pid in pids:
            pipe.hget(packets.k(pid), "state")
        return sum(1 for s in await pipe.execute() if s == b"announced")

    store = SqlStore(db)
    try:
        worker.start()
        done = await wait_until(announced, until=lambda k: k >= 20, timeout=60, what="the keeper mid-way (20 announced)")
        worker.kill9()
        at_kill = await announced()
        assert at_kill < n, f"the kill must land mid-way (saw {done})"
        worker.start()  # the same LC_NODE_ID: it takes back its own leases at once
        await wait_until(announced, until=lambda k: k == n, timeout=90, what="every packet announced")
        worker.kill9()
        stored = [await packets.get(pid) for pid in pids]
        assert sum(st.refunded or 0 for st in stored if st is not None) == 30 * n - grabbed
        assert await packets.pending() == []
        bal = await packets.balances(sorted(set(droppers)))
        spent = {d: 0 for d in set(droppers)}
        for pid, d in zip(pids, droppers, strict=True):
            st = await packets.get(pid)
            assert st is not None and verify_record(await packets.record(pid)).ok
            spent[d] += 30 - (st.refunded or 0)
        assert bal == {d: 10_000 - spent[d] for d in spent}  # each refund once
        await wallet.sweep(durable, now_ms=int(time.time() * 1000) + 60_000)
        await drain(durable, store, fetch_timeout_ms=200)
        for d in spent:
            assert await store.wallet_balance(d) == bal[d], d
        print(f"announced when killed: {at_kill} of {n}")
    finally:
        worker.kill9()
        await store.close()
        await durable.close()
