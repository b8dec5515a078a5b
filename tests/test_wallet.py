"""Wallets: the debit rule, atomic gift debits under concurrency, top-up idempotency, the
outbox sweeper, and the ledger worker (Redis balance == SQL ledger sum after a drain)."""

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

from livecommerce.errors import BadFrame, Conflict
from livecommerce.gifts import GiftSpec
from livecommerce.keys import Keys
from livecommerce.log import Log
from livecommerce.log_redis import RedisLog
from livecommerce.store_sql import SqlStore
from livecommerce.wallet import decide_debit, ledger_delta, parse_topup, shard_of
from livecommerce.wallet_redis import RedisWallet, SentGift
from tests.wsclient import Client
from workers.wallet import drain

HEART = GiftSpec("heart", "Heart", 3, 1)


@given(st.integers(0, 1000), st.integers(1, 1000))
def test_a_debit_is_allowed_only_when_the_balance_covers_it(balance: int, cost: int) -> None:
    assert (decide_debit(balance, cost) is None) == (balance - cost >= 0)


def test_topup_body_needs_a_positive_amount_and_a_key() -> None:
    assert parse_topup({"amount": 5, "idempotency_key": "k-1"}).amount == 5
    assert parse_topup({"amount": 5}, "hdr.1").idempotency_key == "hdr.1"
    for bad in ({"amount": 0, "idempotency_key": "k"}, {"amount": True, "idempotency_key": "k"}, {"amount": 5},
                {"amount": 5, "idempotency_key": "a b"}):
        with pytest.raises(BadFrame):
            parse_topup(bad)


def test_ledger_rows_credit_topups_and_debit_gifts() -> None:
    assert ledger_delta("wallet.topup", {"user": "u", "amount": 7}) == ("u", 7, "topup")
    assert ledger_delta("gift.sent", {"user": "u", "value": 9}) == ("u", -9, "gift.sent")
    assert ledger_delta("order.paid", {}) is None
    assert shard_of("alice") == shard_of("alice") and 0 <= shard_of("bob") < 64


async def _topup(w: RedisWallet, user: str, amount: int, key: str = "k1", log: Log | None = None) -> None:
    r = await w.topup(user=user, amount=amount, idempotency_key=key, by="ops", now_ms=int(time.time() * 1000))
    assert not r.duplicate
    if log is not None:
        await w.publish(log, [r.event])


async def test_topup_credits_once_per_idempotency_key(redis: aioredis.Redis, keys: Keys) -> None:
    w = RedisWallet(redis, keys)
    first = await w.topup(user="u", amount=50, idempotency_key="pay-1", by="u", now_ms=1)
    again = await w.topup(user="u", amount=50, idempotency_key="pay-1", by="u", now_ms=2)
    assert (first.balance, first.duplicate, again.balance, again.duplicate) == (50, False, 50, True)
    assert first.event.id == again.event.id == "topup:u:pay-1"
    with pytest.raises(Conflict) as exc:
        await w.topup(user="u", amount=60, idempotency_key="pay-1", by="u", now_ms=3)
    assert exc.value.code == "idempotency_conflict"
    assert await w.balance("u") == 50


async def test_concurrent_gift_spam_never_overdraws_and_the_ledger_equals_the_balance(
    redis: aioredis.Redis, keys: Keys, store: SqlStore
) -> None:
    w = RedisWallet(redis, keys)
    log = RedisLog(redis, keys)
    await _topup(w, "spammer", 100, log=log)
    results = await asyncio.gather(*(
        w.send_gift(user="spammer", room="r1", host="h", spec=HEART, count=1, combo_id=None, now_ms=int(time.time() * 1000))
        for _ in range(60)
    ))
    sent = [r for r in results if isinstance(r, SentGift)]
    assert len(sent) == 33 and all(r == ("insufficient_funds", 1) for r in results if not isinstance(r, SentGift))
    assert sorted(r.balance for r in sent) == list(range(1, 100, 3))  # every step seen once, never below 0
    assert max(r.combo.total for r in sent) == 33  # one combo grew to 33 units
    await w.publish(log, [r.event for r in sent])
    await w.publish(log, [(await w.topup(user="spammer", amount=1, idempotency_key="k2", by="ops", now_ms=5)).event])
    assert await w.pending() == []
    assert await drain(log, store, fetch_timeout_ms=100) == 35
    assert await store.wallet_balance("spammer") == await w.balance("spammer") == 2
    assert len(await store.wallet_ledger("spammer")) == 35


async def test_events_left_in_the_outbox_are_swept_into_the_log(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    w = RedisWallet(redis, keys)
    log = RedisLog(redis, keys)
    await _topup(w, "v", 10)  # its gateway "died" before appending: nothing in the log
    r = await w.send_gift(user="v", room="r", host="h", spec=HEART, count=2, combo_id="c1", now_ms=int(time.time() * 1000))
    assert isinstance(r, SentGift) and r.combo.id == "c1"
    assert len(await w.pending()) == 2
    assert await w.sweep(log, now_ms=int(time.time() * 1000), grace_ms=60_000) == 0  # too young: left to the gateway
    assert await w.sweep(log, now_ms=int(time.time() * 1000) + 10_000, grace_ms=5_000) == 2
    await log.append(r.event.topic, r.event.key, r.event.type, r.event.data, event_id=r.event.id)  # the gateway woke up
    assert await drain(log, store, fetch_timeout_ms=100) == 3
    assert await store.wallet_balance("v") == await w.balance("v") == 4


async def _http(session: aiohttp.ClientSession, method: str, url: str, tok: str, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, headers={"Authorization": f"Bearer {tok}"}, **kw) as resp:
        return resp.status, await resp.json()


async def test_gifts_over_websockets_from_many_connections_share_one_wallet_exactly(
    gateway_factory: Any, token: Callable[..., str], store: SqlStore
) -> None:
    node = await gateway_factory(database_url=store.url, command_rate=1000.0, command_burst=1000)
    async with aiohttp.ClientSession() as s:
        status, body = await _http(s, "POST", f"{node.url}/api/v1/wallets/fan/topup", token("fan"),
                                   json={"amount": 500, "idempotency_key": "t1"})
        assert (status, body["balance"]) == (201, 500)
        assert (await _http(s, "POST", f"{node.url}/api/v1/wallets/fan/topup", token("other"),
                            json={"amount": 5, "idempotency_key": "t2"}))[0] == 403
        status, body = await _http(s, "POST", f"{node.url}/api/v1/wallets/fan/topup", token("fan"),
                                   json={"amount": 500, "idempotency_key": "t1"})
        assert (status, body["balance"], body["duplicate"]) == (200, 500, True)
    clients = [await Client.connect(node.ws, "room1", token("fan"), fmt="json") for _ in range(8)]

    async def spam(c: Client) -> tuple[int, int]:
        ok = poor = 0
        for _ in range(30):  # 8 x 30 x 5 coins = 1200 asked for, 500 held
            r = await c.request("gift", gift_id="heart", count=1)
            if r["t"] == "ack":
                ok += 1
                assert r["d"]["balance"] >= 0
            else:
                assert r["d"]["code"] == "insufficient_funds", r
                poor += 1
        return ok, poor

    counts = await asyncio.gather(*(spam(c) for c in clients))
    assert sum(ok for ok, _ in counts) == 100 and sum(p for _, p in counts) == 140
    r = await clients[0].request("gift", gift_id="no-such-gift")
    assert r["d"]["code"] == "unknown_gift"
    for c in clients:
        await c.close()
    log: Log = node.services.log
    await node.services.wallet_outbox.flush()
    assert await drain(log, store, fetch_timeout_ms=100) == 101
    async with aiohttp.ClientSession() as s:
        status, body = await _http(s, "GET", f"{node.url}/api/v1/wallets/fan/ledger?limit=500", token("fan"))
    assert status == 200 and body["balance"] == body["ledger_balance"] == 0
    assert len(body["entries"]) == 101 and body["entries"][-1]["reason"] == "topup"


async def test_a_batch_claims_each_event_once_and_commits_nothing_when_it_fails(store: SqlStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.apply_batch("wallet", ["e2", "e1", "e2"]) as (tx, fresh):
            assert fresh == {"e1", "e2"}
            await tx.add_wallet_entries([("u", 5, "topup", "e1", 1)])
            raise RuntimeError("crash before the commit")
    assert await store.wallet_balance("u") == 0 and not await store.was_applied("wallet", "e1")
    async with store.apply_batch("wallet", ["e1"]) as (tx, fresh):
        assert fresh == {"e1"}
        assert await tx.add_wallet_entries([("u", 5, "topup", "e1", 1), ("u", 5, "topup", "e1", 1)]) == 1
    async with store.apply_batch("wallet", ["e1", "e3"]) as (tx, fresh):
        assert fresh == {"e3"}
    assert await store.wallet_balance("u") == 5
    assert await store.points_balances(["u", "nobody"]) == {"u": {"viewer": 0, "host": 0}, "nobody": {"viewer": 0, "host": 0}}
