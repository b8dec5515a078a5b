"""Gift batches (the gift storm): the batch rule, its Lua twin, the adapter, and the batched
gateway path under concurrency and under a killed gateway.

* ``wallet_gift_batch.lua`` decides a batch exactly as
  :func:`~livecommerce.wallet.decide_gift_batch` (hypothesis writes a shard's state straight
  into the keys of the script's KEYS contract, real Redis), in one group per call (Redis
  Cluster) and in several groups per call (one Redis);
* ``RedisWallet.send_gifts`` answers each gift as a lone gift would be answered, request ids
  included, whatever the number of shards per call;
* many WebSocket connections spamming the same wallets through the group commit never
  overdraw, repeated request ids debit once, and the ledger equals the balance;
* a gateway process killed -9 while gifts are in flight: every gift is debited at most once,
  and a client retrying each unanswered request id on another gateway learns its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.auth import issue_token
from livecommerce.config import Settings
from livecommerce.gifts import Combo, GiftSpec
from livecommerce.keys import Keys
from livecommerce.log import Log
from livecommerce.log_open import open_log
from livecommerce.log_redis import RedisLog
from livecommerce.migrations import upgrade
from livecommerce.store_sql import SqlStore
from livecommerce.wallet import (
    GiftDebit,
    GiftDecision,
    GiftShard,
    decide_gift_batch,
    gift_request_key,
    shard_of,
)
from livecommerce.wallet_redis import (
    GIFT_BATCH,
    GiftOrder,
    GiftRefused,
    GiftReplayed,
    RedisWallet,
    SentGift,
)
from scripts.chaos_rush import free_port, gateway_proc, lc_env, wait_ready
from tests.waiting import wait_until
from tests.wsclient import Client
from workers.wallet import drain

HEART = GiftSpec("heart", "Heart", 5, 1)
NOW = 1_700_000_000_000


# ---------------------------------------------------------------- the rule


def test_a_repeated_request_answers_its_first_debit_and_another_gift_under_its_id_conflicts() -> None:
    shard = GiftShard({"u": 12}, {}, {})
    g = [GiftDebit("u", 5, 1, "c", None, "n1", "e1", "1:u:r1", "A"),
         GiftDebit("u", 5, 1, "c", None, "n2", "e2", "1:u:r1", "A"),
         GiftDebit("u", 5, 1, "c", None, "n3", "e3", "1:u:r1", "B"),
         GiftDebit("u", 5, 1, "c", None, "n4", "e4", None),
         GiftDebit("u", 5, 1, "c", None, "n5", "e5", "1:u:r2", "A")]
    out, after = decide_gift_batch(shard, g)
    assert out == [GiftDecision("ok", 7, Combo("n1", 1), "e1"), GiftDecision("dup", 7, Combo("n1", 1), "e1"),
                   GiftDecision("idempotency_conflict", 0), GiftDecision("ok", 2, Combo("n1", 2), "e4"),
                   GiftDecision("insufficient_funds", 2)]
    assert after.balances == {"u": 2} and set(after.requests) == {"1:u:r1"}  # a refused request is not recorded
    assert shard.balances == {"u": 12}  # the input is not changed


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 3)), max_size=30), st.integers(0, 200))
def test_a_batch_never_overdraws_and_debits_what_it_says(gifts: list[tuple[int, int]], balance: int) -> None:
    batch = [GiftDebit("u", cost, n, "c", None, f"n{i}", f"e{i}") for i, (cost, n) in enumerate(gifts)]
    out, after = decide_gift_batch(GiftShard({"u": balance}, {}, {}), batch)
    spent = sum(g.cost for g, d in zip(batch, out, strict=True) if d.code == "ok")
    assert after.balances.get("u", 0) == balance - spent >= 0
    assert all(d.balance >= 0 for d in out)


# ---------------------------------------------------------------- the rule and its Lua twin (real Redis)


class Lab:
    def __init__(self, client: sync_redis.Redis, prefix: str) -> None:
        self.r = client
        self.prefix = prefix
        self.script = client.register_script(GIFT_BATCH)


@pytest.fixture(scope="module")
def lab(redis_url: str) -> Iterator[Lab]:
    client = sync_redis.Redis.from_url(redis_url)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield Lab(client, prefix)
    for k in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(k)
    client.close()


USERS = ("u1", "u2", "u3")
gift_strategy = st.tuples(
    st.sampled_from(USERS),
    st.integers(0, 40),  # cost
    st.integers(1, 4),  # count
    st.sampled_from(["rose", "cake"]),  # the combo key is (user, gift)
    st.sampled_from([None, "c1", "c9"]),  # requested combo id
    st.sampled_from([None, "r1", "r2"]),  # request id
    st.sampled_from(["A", "B"]),  # fingerprint
)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@settings(max_examples=150, deadline=None)
@given(
    balances=st.fixed_dictionaries({u: st.none() | st.integers(0, 100) for u in USERS}),
    combos=st.dictionaries(st.tuples(st.sampled_from(USERS), st.sampled_from(["rose", "cake"])),
                           st.builds(Combo, st.sampled_from(["c1", "c2"]), st.integers(1, 20)), max_size=3),
    records=st.dictionaries(st.tuples(st.sampled_from(USERS), st.sampled_from(["r1", "r2"])),
                            st.tuples(st.sampled_from(["A", "B"]), st.integers(0, 99), st.integers(1, 9)), max_size=2),
    gifts=st.lists(gift_strategy, min_size=1, max_size=12),
    groups_per_call=st.sampled_from([1, 0]),
)
def test_the_batch_script_decides_as_decide_gift_batch(lab: Lab, balances: dict[str, int | None],
                                                       combos: dict[tuple[str, str], Combo],
                                                       records: dict[tuple[str, str], tuple[str, int, int]],
                                                       gifts: list[tuple[Any, ...]], groups_per_call: int) -> None:
    run = f"{lab.prefix}:{uuid.uuid4().hex[:8]}"
    group_of = {u: i for i, u in enumerate(USERS)}  # one group (shard slot) per user

    def k(user: str, part: str) -> str:
        return f"{run}:{{wallet:{group_of[user]}}}:{part}"

    for u, b in balances.items():
        if b is not None:
            lab.r.hset(k(u, "bal"), u, b)
    for (u, g), c in combos.items():
        lab.r.set(k(u, f"combo:{g}"), f"{c.id}|{c.total}", px=60_000)
    requests: dict[str, tuple[str, GiftDecision]] = {}
    for (u, rid), (fp, bal, total) in records.items():
        first = GiftDecision("ok", bal, Combo("cr", total), f"old-{u}-{rid}")
        requests[gift_request_key(u, rid)] = (fp, first)
        lab.r.set(k(u, "greq:" + gift_request_key(u, rid)), f"{fp}\n{bal}\ncr\n{total}\nold-{u}-{rid}", px=60_000)

    debits = [GiftDebit(u, cost, n, f"{u}:{g}", want, f"new{i}", f"ev{i}", None if rid is None else gift_request_key(u, rid), fp)
              for i, (u, cost, n, g, want, rid, fp) in enumerate(gifts)]
    expected, after = decide_gift_batch(GiftShard({u: b or 0 for u, b in balances.items()},
                                                  {f"{u}:{g}": c for (u, g), c in combos.items()}, requests), debits)

    # the script: one group per user (its shard), in the order the users first appear
    order = list(dict.fromkeys(d.user for d in debits))
    calls: list[tuple[list[str], list[Any], list[int]]] = []
    for u in order:
        if not calls or groups_per_call == 1:
            calls.append(([], [3000, 60_000], []))
        keys, args, idx = calls[-1]
        mine = [i for i, d in enumerate(debits) if d.user == u]
        keys += [k(u, "bal"), k(u, "out")]
        blob = b""
        for i in mine:
            d, (_, _, _, g, _, rid, _) = debits[i], gifts[i]
            keys.append(k(u, f"combo:{g}"))
            if rid is not None:
                keys.append(k(u, "greq:" + gift_request_key(u, rid)))
            packed = f"packed-{d.event_id}".encode()
            blob += (f"{d.cost}\x1f{d.count}\x1f{d.requested or ''}\x1f{d.new_combo_id}\x1f{d.event_id}\x1f"
                     f"{d.fingerprint if rid is not None else ''}\x1f{len(u)}\x1f{len(packed)}\x1f{u}").encode() + packed
        args += [len(mine), blob]
        idx += mine
    got: dict[int, GiftDecision] = {}
    for keys, args, idx in calls:
        r = lab.script(keys=keys, args=args)
        for j, i in enumerate(idx):
            code, bal, cid, total, eid = (_s(x) for x in r[5 * j:5 * j + 5])
            got[i] = GiftDecision(code, int(bal), Combo(cid, int(total)) if code in ("ok", "dup") else None,  # type: ignore[arg-type]
                                  eid if code in ("ok", "dup") else None)
    assert [got[i] for i in range(len(debits))] == expected
    for u in USERS:
        assert int(lab.r.hget(k(u, "bal"), u) or 0) == after.balances.get(u, 0)
        debited = {d.event_id for d, e in zip(debits, expected, strict=True) if d.user == u and e.code == "ok"}
        assert {_s(x) for x in lab.r.hkeys(k(u, "out"))} == debited  # each debit's event once in the outbox
        for g in ("rose", "cake"):
            c = after.combos.get(f"{u}:{g}")
            v = lab.r.get(k(u, f"combo:{g}"))
            assert (None if v is None else _s(v)) == (None if c is None else f"{c.id}|{c.total}")
        for rid in ("r1", "r2"):
            rec = after.requests.get(gift_request_key(u, rid))
            v = lab.r.get(k(u, "greq:" + gift_request_key(u, rid)))
            assert (v is None) == (rec is None)
            if rec is not None and v is not None:
                fp, d = rec
                assert d.combo is not None
                assert _s(v) == f"{fp}\n{d.balance}\n{d.combo.id}\n{d.combo.total}\n{d.event_id}"


# ---------------------------------------------------------------- the adapter


@pytest.mark.parametrize("shards_per_call", [1, 0])
async def test_send_gifts_answers_each_gift_as_a_lone_gift_in_arrival_order(redis: aioredis.Redis, keys: Keys,
                                                                            shards_per_call: int) -> None:
    w = RedisWallet(redis, keys, shards_per_call=shards_per_call)
    users = [f"s{i}" for i in range(12)]
    assert len({shard_of(u) for u in users}) > 3
    now = int(time.time() * 1000)
    for u in users:
        await w.topup(user=u, amount=12, idempotency_key="k", by="ops", now_ms=now)
    orders = [GiftOrder(u, "r1", "h", HEART, 1, None, f"q{n}") for n in range(3) for u in users]  # 15 coins each, 12 held
    orders.append(GiftOrder(users[0], "r1", "h", HEART, 1, None, "q0"))  # a retry
    orders.append(GiftOrder(users[1], "r1", "h", HEART, 2, None, "q0"))  # another gift under a used id
    out = await w.send_gifts(orders, now_ms=now)
    for n in range(3):
        for i, u in enumerate(users):
            r = out[n * len(users) + i]
            if n < 2:
                assert isinstance(r, SentGift) and r.balance == 12 - 5 * (n + 1) and r.combo.total == n + 1
                assert r.event.key == u and r.event.data["value"] == 5
            else:
                assert r == GiftRefused("insufficient_funds", 2)
    first = out[0]
    assert isinstance(first, SentGift)
    assert out[-2] == GiftReplayed(first.event.id, 7, first.combo)
    assert out[-1] == GiftRefused("idempotency_conflict", 0)
    assert [await w.balance(u) for u in users] == [2] * len(users)
    assert await w.gift_request(users[0], "q0") == first.event.id and await w.gift_request(users[0], "q2") is None
    assert len([e for e in await w.pending() if e.type == "gift.sent"]) == 2 * len(users)
    await w.publish(RedisLog(redis, keys), await w.pending())  # appended, then cleared from every shard's outbox
    assert await w.pending() == []


async def test_any_user_id_travels_whole_through_the_batch(redis: aioredis.Redis, keys: Keys) -> None:
    w = RedisWallet(redis, keys)
    odd = ["ü\x1f\n|x", "a" * 64, "7"]  # separators and multi-byte characters in user ids
    now = int(time.time() * 1000)
    for u in odd:
        await w.topup(user=u, amount=10, idempotency_key="k", by="ops", now_ms=now)
    out = await w.send_gifts([GiftOrder(u, "r", "h", HEART, 1, "c-1", "q.1") for u in odd * 2], now_ms=now)
    assert [type(r) for r in out] == [SentGift] * 3 + [GiftReplayed] * 3
    assert [r.balance for r in out] == [5] * 6 and [await w.balance(u) for u in odd] == [5, 5, 5]
    assert all(isinstance(r, SentGift) and r.event.key == u and r.combo == Combo("c-1", 1) for r, u in zip(out[:3], odd, strict=True))


@pytest.mark.cluster
async def test_on_redis_cluster_a_batch_goes_as_one_call_per_shard_and_clears_every_outbox(cluster_redis: Any,
                                                                                          keys: Keys) -> None:
    w = RedisWallet(cluster_redis, keys)
    assert w.shards_per_call == 1  # a script's keys share one slot on a cluster
    users = [f"c{i}" for i in range(20)]
    assert len({shard_of(u) for u in users}) > 5
    now = int(time.time() * 1000)
    for u in users:
        await w.topup(user=u, amount=7, idempotency_key="k", by="ops", now_ms=now)
    out = await w.send_gifts([GiftOrder(u, "r", "h", HEART, 1, None, "q") for u in users * 2], now_ms=now)
    first = out[: len(users)]
    assert all(isinstance(r, SentGift) and r.balance == 2 for r in first)
    assert all(isinstance(r, GiftReplayed) and r.balance == 2 for r in out[len(users):])
    log = RedisLog(cluster_redis, keys, partitions=4)
    await w.publish(log, await w.pending())  # appended per partition stream, cleared per shard
    assert await w.pending() == []
    c = await log.consumer("gifts", "g", "c1")
    got = 0
    while batch := await c.fetch(max_events=200, timeout_ms=100):
        got += len(batch)
        await c.ack(batch)
    await c.close()
    assert got == 2 * len(users)  # the top-ups and the gifts, each once


async def test_a_batch_append_puts_each_event_in_its_partition_once(redis: aioredis.Redis, keys: Keys) -> None:
    log = RedisLog(redis, keys, partitions=3)
    w = RedisWallet(redis, keys)
    now = int(time.time() * 1000)
    users = [f"p{i}" for i in range(9)]
    for u in users:
        await w.topup(user=u, amount=50, idempotency_key="k", by="ops", now_ms=now)
    sent = [r for r in await w.send_gifts([GiftOrder(u, "r", "h", HEART, 1, None) for u in users * 2], now_ms=now)
            if isinstance(r, SentGift)]
    await log.append_many([r.event for r in sent])
    c = await log.consumer("gifts", "g", "c1")
    got = []
    while batch := await c.fetch(max_events=100, timeout_ms=100):
        got += [d.event for d in batch]
        await c.ack(batch)
    await c.close()
    assert sorted(e.id for e in got) == sorted(r.event.id for r in sent)
    for u in users:  # each key's events in their order
        assert [e.id for e in got if e.key == u] == [r.event.id for r in sent if r.event.key == u]


# ---------------------------------------------------------------- the gateway's group commit


async def _http(session: aiohttp.ClientSession, method: str, url: str, tok: str, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, headers={"Authorization": f"Bearer {tok}"}, **kw) as resp:
        return resp.status, await resp.json()


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_gift_spam_from_many_connections_through_the_group_commit_never_overdraws(
    gateway_factory: Any, token: Callable[..., str], store: SqlStore
) -> None:
    node = await gateway_factory(database_url=store.url, command_rate=1000.0, command_burst=1000)
    users = [f"fan{i}" for i in range(6)]
    async with aiohttp.ClientSession() as s:
        for u in users:
            status, _ = await _http(s, "POST", f"{node.url}/api/v1/wallets/{u}/topup", token("ops", role="ops"),
                                    json={"amount": 100, "idempotency_key": f"t-{u}"})
            assert status == 201
    clients = [(u, await Client.connect(node.ws, "spam", token(u), fmt=fmt))
               for u in users for fmt in ("json", "msgpack", "json")]

    async def spam(user: str, c: Client, first: int) -> dict[str, dict[str, Any]]:
        # a burst: every frame sent before any reply is read; the user's three connections send
        # request ids first..first+14 (first = 0, 5, 10): 25 distinct ids, most sent two or
        # three times concurrently
        for j in range(first, first + 15):
            await c.send("gift", gift_id="heart", count=1, request_id=f"{user}-{j}")
        answers: dict[str, dict[str, Any]] = {}
        while len(answers) < 15:
            e = await c.next_event(10)
            if e["t"] in ("ack", "error"):
                answers[f"{user}-{first + e['id'] - 1}"] = e
        return answers

    results = await asyncio.gather(*(spam(u, c, 5 * (i % 3)) for i, (u, c) in enumerate(clients)))
    for u in users:
        mine = [r for (owner, _), r in zip(clients, results, strict=True) if owner == u]
        acked = {rid for r in mine for rid, e in r.items() if e["t"] == "ack"}
        for rid in acked:  # every connection that was answered for a request got the same debit
            answers = [r[rid] for r in mine if rid in r and r[rid]["t"] == "ack"]
            assert len({(a["d"]["balance"], a["d"]["total"]) for a in answers}) == 1
        for r in mine:
            for e in r.values():
                if e["t"] == "error":
                    assert e["d"]["code"] == "insufficient_funds", e
                else:
                    assert e["d"]["balance"] >= 0
        assert len(acked) == 20  # 100 coins, 5 a heart, 25 requests: 20 debited, whatever the order
    for _, c in clients:
        await c.close()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{node.url}/metrics") as resp:
            text = await resp.text()
    gifts, batches = _metric(text, "lc_gift_batch_gifts_total"), _metric(text, "lc_gift_batches_total")
    assert gifts == len(clients) * 15 and batches < gifts  # the group commit put several gifts in one call
    log: Log = node.services.log
    await node.services.wallet_outbox.flush()
    assert await drain(log, store, fetch_timeout_ms=100) == len(users) * 21  # 20 gifts + the top-up, each once
    async with aiohttp.ClientSession() as s:
        for u in users:
            status, body = await _http(s, "GET", f"{node.url}/api/v1/wallets/{u}/ledger?limit=100", token(u))
            assert status == 200 and body["balance"] == body["ledger_balance"] == 0 and len(body["entries"]) == 21


async def test_a_connections_pipelined_gifts_are_decided_and_answered_in_frame_order(
    gateway_factory: Any, token: Callable[..., str], redis: aioredis.Redis
) -> None:
    node = await gateway_factory(command_rate=1000.0, command_burst=1000)
    async with aiohttp.ClientSession() as s:
        status, _ = await _http(s, "POST", f"{node.url}/api/v1/wallets/fan/topup", token("ops", role="ops"),
                                json={"amount": 100, "idempotency_key": "t"})
        assert status == 201
        async with s.get(f"{node.url}/metrics") as resp:
            before = await resp.text()
    c = await Client.connect(node.ws, "line", token("fan"), fmt="json")
    # one burst: 12 hearts, a ping, a gift nobody sells, 12 hearts (5 coins each, 100 held),
    # sent while Redis is busy: the first batch waits there while the next frames arrive
    frames = [("gift", {"gift_id": "heart"})] * 12 + [("ping", {}), ("gift", {"gift_id": "nope"})] + \
        [("gift", {"gift_id": "heart"})] * 12
    busy = asyncio.ensure_future(redis.eval(BUSY, 0, 400_000))
    await asyncio.sleep(0.05)
    for t, d in frames:
        await c.send(t, **d)
    await busy
    answers = []
    while len(answers) < len(frames):
        e = await c.next_event(10)
        if e["t"] in ("ack", "error", "pong"):
            answers.append(e)
    assert [e["id"] for e in answers] == list(range(1, len(frames) + 1))  # every answer in frame order
    hearts = [e for e in answers if e["id"] not in (13, 14)]
    assert [e["d"]["balance"] for e in hearts[:20]] == [100 - 5 * k for k in range(1, 21)]  # decided in frame order
    assert [e["t"] for e in hearts[20:]] == ["error"] * 4 and all(e["d"]["code"] == "insufficient_funds" for e in hearts[20:])
    assert answers[12]["t"] == "pong" and answers[13]["d"]["code"] == "unknown_gift"
    await c.close()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{node.url}/metrics") as resp:
            after = await resp.text()
    gifts = _metric(after, "lc_gift_batch_gifts_total") - _metric(before, "lc_gift_batch_gifts_total")
    batches = _metric(after, "lc_gift_batches_total") - _metric(before, "lc_gift_batches_total")
    assert gifts == 24 and batches <= 4  # one connection's gifts shared batches: it did not wait for each answer


# ---------------------------------------------------------------- a gateway killed -9 with gifts in flight


@pytest.mark.timeout(120)
async def test_a_gateway_killed_with_gifts_in_flight_debits_each_at_most_once_and_retries_learn_the_outcome(
    settings: Settings, tmp_path: Path, redis: aioredis.Redis, keys: Keys
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/kill.db"
    await upgrade(db)
    env = lc_env(redis_url=settings.redis_url, key_prefix=settings.key_prefix, database_url=db, secret=settings.secret,
                 command_rate="100000", command_burst="100000")
    ports = [free_port(), free_port()]
    a, b = (gateway_proc(f"gw-{n}", p, env, tmp_path) for n, p in zip("ab", ports, strict=True))
    a.start()
    b.start()
    wallet = RedisWallet(redis, keys)
    users = [f"k{i}" for i in range(8)]
    budget = 5 * 400  # coins: 400 hearts each, more than they send before the kill
    try:
        await wait_ready(f"http://127.0.0.1:{ports[0]}", 60, a)
        await wait_ready(f"http://127.0.0.1:{ports[1]}", 60, b)
        async with aiohttp.ClientSession() as http:  # a created room's host is held by the gateway for good
            host = issue_token(settings.secret, user="h", role="host", rooms=("kill",), now_s=int(time.time()), ttl_s=3600)
            status, _ = await _http(http, "POST", f"http://127.0.0.1:{ports[0]}/api/v1/rooms", host, json={"id": "kill"})
            assert status == 201
        now = int(time.time() * 1000)
        for u in users:  # straight into Redis and the log, as the top-up route does
            await wallet.topup(user=u, amount=budget, idempotency_key="seed", by="ops", now_ms=now)
        sent: dict[str, list[str]] = {u: [] for u in users}
        acked: dict[str, dict[str, Any]] = {}
        stop = asyncio.Event()

        async def gifter(u: str) -> None:
            tok = _token(settings.secret, u)
            async with websockets.connect(f"ws://127.0.0.1:{ports[0]}/ws?room=kill&format=json&token={tok}") as ws:
                await ws.recv()  # welcome
                n = 0
                inflight: set[int] = set()
                with contextlib.suppress(websockets.ConnectionClosed):
                    while not stop.is_set() or inflight:
                        while not stop.is_set() and len(inflight) < 4:
                            n += 1
                            sent[u].append(f"{u}-{n}")
                            inflight.add(n)
                            await ws.send(json.dumps({"t": "gift", "id": n, "d": {"gift_id": "heart", "request_id": f"{u}-{n}"}}))
                        f = json.loads(await ws.recv())
                        if f.get("t") in ("ack", "error") and f.get("id") in inflight:
                            inflight.discard(f["id"])
                            assert f["t"] == "ack", f
                            acked[f"{u}-{f['id']}"] = f["d"]

        tasks = [asyncio.ensure_future(gifter(u)) for u in users]
        while len(acked) < 200:  # gifts flowing on every connection
            await asyncio.sleep(0.02)
        # Redis busy for 0.5 s: the gateway's next batches wait in Redis's socket, unanswered;
        # the gateway dies; then Redis runs them: debited, and nobody is told
        busy = asyncio.ensure_future(redis.eval(BUSY, 0, 3_000_000))
        while await _answers_ping(settings.redis_url):  # until Redis is inside the busy script
            await asyncio.sleep(0.01)
        n = -1
        while n != len(acked):  # until the gateway answers nothing more
            n = len(acked)
            await asyncio.sleep(0.3)
        # and until the gateway's next batch is in Redis's socket, unread (a batch still in the
        # gateway, e.g. waiting for a new pooled connection whose handshake Redis cannot answer
        # while busy, would die with it and test nothing)
        assert a.proc is not None
        await wait_until(lambda: _waits_in_redis(a.proc.pid, settings.redis_url), timeout=2.0, interval=0.02,
                         what="a command of the gateway waiting in Redis's socket")
        a.kill9()
        await busy
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        unanswered = [rid for u in users for rid in sent[u] if rid not in acked]
        assert unanswered  # every client had gifts in flight when its gateway died
        lost = [rid for rid in unanswered if await wallet.gift_request(rid.rsplit("-", 1)[0], rid) is not None]
        if not lost:  # the command waiting in Redis's socket was another of the gateway's (its once-a-second writes), not a gift batch
            pytest.skip(f"{len(unanswered)} unanswered, none debited: no gift batch was in Redis's socket at the kill this time")

        # the clients retry every request on the other gateway: each learns its outcome
        retried: dict[str, dict[str, Any]] = {}
        for u in users:
            c = await Client.connect(f"ws://127.0.0.1:{ports[1]}/ws", "kill", _token(settings.secret, u), fmt="json")
            for rid in [r for r in sent[u] if r not in acked] + sent[u][:3]:  # the unanswered, and a few answered ones
                r = await c.request("gift", gift_id="heart", request_id=rid)
                assert r["t"] == "ack", r
                retried[rid] = r["d"]
            await c.close()
        for rid, d in retried.items():
            if rid in acked:  # an answered gift's retry answers the same debit
                assert (d["balance"], d["total"], d["combo_id"]) == (acked[rid]["balance"], acked[rid]["total"],
                                                                      acked[rid]["combo_id"])
        # at most once: each user paid exactly once per request it sent, no more
        for u in users:
            assert await wallet.balance(u) == budget - 5 * len(sent[u])
            for rid in sent[u]:
                assert await wallet.gift_request(u, rid) is not None
        # and the ledger agrees once the outbox left by the dead gateway is swept into the log
        s = Settings.from_env({}, redis_url=settings.redis_url, key_prefix=settings.key_prefix, database_url=db)
        durable = open_log(s, redis)
        store = SqlStore(db)
        try:
            await wallet.sweep(durable, now_ms=int(time.time() * 1000) + 60_000)
            await drain(durable, store, fetch_timeout_ms=200)
            for u in users:
                assert await store.wallet_balance(u) == await wallet.balance(u)
        finally:
            await store.close()
            await durable.close()
    finally:
        a.kill9()
        b.stop()


BUSY = """local t0 = redis.call('TIME')
repeat local t = redis.call('TIME') until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) >= tonumber(ARGV[1])
return 1"""


def _waits_in_redis(pid: int, redis_url: str) -> bool:
    """Whether a command the process ``pid`` sent sits unread in Redis's socket: the server
    side of one of its connections to Redis has bytes queued (``/proc/net/tcp`` rx_queue)."""
    import psutil

    port = int(redis_url.split("://", 1)[1].split("/", 1)[0].rpartition(":")[2] or 6379)
    mine = {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr and c.raddr.port == port}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, queues = f[1], f[2], f[4]
            if int(local.rsplit(":", 1)[1], 16) == port and int(remote.rsplit(":", 1)[1], 16) in mine \
                    and int(queues.split(":")[1], 16) > 0:
                return True
    return False


async def _answers_ping(redis_url: str) -> bool:
    """Whether Redis answers a PING within 50 ms (a raw connection: nothing to clean up)."""
    host, _, port = redis_url.split("://", 1)[1].split("/", 1)[0].rpartition(":")
    reader, writer = await asyncio.open_connection(host or "127.0.0.1", int(port or 6379))
    try:
        writer.write(b"PING\r\n")
        await asyncio.wait_for(reader.readline(), 0.05)
        return True
    except TimeoutError:
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _token(secret: str, user: str) -> str:
    return issue_token(secret, user=user, role="viewer", now_s=int(time.time()), ttl_s=3600)
