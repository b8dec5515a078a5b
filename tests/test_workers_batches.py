"""The SQL workers in batches (M2 3/7): the orders settler, the wallet ledger and the points
worker apply a fetched batch in one transaction, so

* a batch holding a duplicate of an event applied before, and a whole batch delivered again,
  change nothing (no row, no balance, no push);
* a batch holding one bad event (a poison: it cannot be applied) applies every other event
  exactly once, acks them, and gives back only the bad one, which fails again next time
  while the events after it go through;

on SQLite and PostgreSQL, with the real Redis Streams log. The kill -9 of the real worker
processes mid-batch is ``tests/test_workers_killed.py``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from livecommerce.broker import MemoryBroker
from livecommerce.keys import Keys
from livecommerce.log import LogEvent, new_event
from livecommerce.log_redis import RedisLog
from livecommerce.notify import Notifier
from livecommerce.points import Rules
from livecommerce.presence import MemoryPresence
from livecommerce.protocol.codec import unpack_internal
from livecommerce.schema import (
    applied_events,
    order_events,
    points_balances,
    points_ledger,
    wallet_ledger,
)
from livecommerce.store_sql import SqlStore
from workers.orders import OrderSettler
from workers.points import PointsWorker
from workers.runner import run_consumer
from workers.wallet import WalletLedger

NOW = 1_700_000_000_000


def reserved(i: int) -> LogEvent:
    oid = f"s1.o{i:03d}"
    return new_event("orders", oid, "order.reserved", {
        "order_id": oid, "sale_id": "s1", "room_id": "r1", "user_id": f"u{i}", "qty": 1 + i % 2, "unit_price": 500,
        "pay_by_ms": NOW + 900_000, "payment_window_s": 900, "request_id": f"rq{i}", "reserved_ms": NOW}, f"{oid}:reserved", NOW)


def moved(i: int, to: str) -> LogEvent:
    ev = reserved(i)
    d = dict(ev.data)
    if to == "paid":
        d |= {"amount": d["qty"] * 500, "discount": 0, "coupon_id": None}
    else:
        d |= {"reason": "timeout"}
    return new_event("orders", ev.key, f"order.{to}", d, f"{ev.key}:{to}", NOW + 1000)


def gift(i: int, user: str, host: str, value: int) -> LogEvent:
    return new_event("gifts", user, "gift.sent", {"user": user, "room": f"room-{host}", "host": host, "gift_id": "rose", "count": 1,
                                                  "price": value, "value": value}, f"g{i}", NOW)


def topup(user: str, amount: int) -> LogEvent:
    return new_event("gifts", user, "wallet.topup", {"user": user, "amount": amount, "balance": amount, "idempotency_key": "k",
                                                     "by": "ops"}, f"topup:{user}:k", NOW)


class Inbox:
    """A gateway node's inbox (the memory broker): the private events pushed to its users."""

    def __init__(self) -> None:
        shared: dict[str, Any] = {"subs": defaultdict(set), "hist": defaultdict(list), "seq": {}}
        self.node = MemoryBroker(Keys("t"), shared=shared)
        self.node.set_handler(self._got)
        self.presence = MemoryPresence()
        self.notifier = Notifier(None, MemoryBroker(Keys("t"), shared=shared), Keys("t"), presence=self.presence)
        self.got: list[tuple[str, str, str]] = []  # (user, type, order or "")

    def _got(self, channel: str, body: bytes) -> None:
        msg = unpack_internal(body)
        env = msg["env"]
        self.got.append((msg["user"], env["t"], env.get("d", {}).get("order_id", "")))

    async def online(self, users: list[str]) -> None:
        await self.node.subscribe(Keys("t").node_inbox("n1"))
        await self.presence.users_connected("n1", dict.fromkeys(users, 1))


async def count(store: SqlStore, table: Any, *where: Any) -> int:
    async with store.read() as tx:
        return int((await tx.conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one())


async def order_state(store: SqlStore) -> dict[str, tuple[str, int, list[str]]]:
    out = {}
    for o in await store.list_orders(limit=1000):
        out[o.id] = (o.state, o.amount, [h.event_id for h in await store.order_history(o.id)])
    return out


async def settle_pushes(inbox: Inbox) -> list[tuple[str, str, str]]:
    await asyncio.sleep(0)  # the memory broker delivers on the next loop turn
    await asyncio.sleep(0)
    got, inbox.got = inbox.got, []
    return sorted(got)


# ---------------------------------------------------------------- duplicates and redelivery
async def test_orders_a_duplicate_and_a_redelivered_batch_change_nothing(store: SqlStore) -> None:
    inbox = Inbox()
    await inbox.online([f"u{i}" for i in range(10)])
    settler = OrderSettler(store, inbox.notifier)
    first = [reserved(i) for i in range(6)] + [moved(0, "paid"), moved(1, "paid"), moved(2, "cancelled"),
                                              moved(7, "paid")]  # o7's reserve never arrived: rebuilt from its paid event
    await settler.handle(first)
    after_first = await order_state(store)
    assert {k: v[0] for k, v in after_first.items()} == {
        "s1.o000": "paid", "s1.o001": "paid", "s1.o002": "cancelled", "s1.o003": "reserved", "s1.o004": "reserved",
        "s1.o005": "reserved", "s1.o007": "paid"}
    assert after_first["s1.o007"][2] == ["s1.o007:reserved", "s1.o007:paid"]
    assert await settle_pushes(inbox) == sorted([("u0", "order.paid", "s1.o000"), ("u1", "order.paid", "s1.o001"),
                                                 ("u2", "order.cancelled", "s1.o002"), ("u7", "order.paid", "s1.o007")])
    # a batch with two events applied before, and new ones (one moving an order of the first batch)
    second = [moved(0, "paid"), reserved(3), reserved(8), moved(8, "paid"), moved(4, "cancelled")]
    await settler.handle(second)
    after_second = await order_state(store)
    assert {k: v for k, v in after_second.items() if k not in ("s1.o004", "s1.o008")} == \
        {k: v for k, v in after_first.items() if k != "s1.o004"}
    assert after_second["s1.o004"][0] == "cancelled" and after_second["s1.o008"] == ("paid", 500, ["s1.o008:reserved", "s1.o008:paid"])
    assert await settle_pushes(inbox) == sorted([("u8", "order.paid", "s1.o008"), ("u4", "order.cancelled", "s1.o004")])
    # the first batch again, whole (a crash before its ack), then both in one batch
    applied = await count(store, applied_events, applied_events.c.consumer == "orders")
    history = await count(store, order_events)
    await settler.handle(first)
    await settler.handle(second + first)
    assert await order_state(store) == after_second
    assert await count(store, applied_events, applied_events.c.consumer == "orders") == applied == 13
    assert await count(store, order_events) == history
    assert await settle_pushes(inbox) == []  # nobody is told twice


async def ledger_sums(store: SqlStore) -> tuple[dict[str, int], dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    async with store.read() as tx:
        c = tx.conn
        wallet = {u: int(s) for u, s in await c.execute(select(wallet_ledger.c.user_id, func.sum(wallet_ledger.c.delta))
                                                           .group_by(wallet_ledger.c.user_id))}
        pts = {(u, r): int(s) for u, r, s in await c.execute(select(points_ledger.c.user_id, points_ledger.c.role,
                                                                    func.sum(points_ledger.c.delta))
                                                             .group_by(points_ledger.c.user_id, points_ledger.c.role))}
        kept = {(u, r): int(b) for u, r, b in await c.execute(select(points_balances.c.user_id, points_balances.c.role,
                                                                     points_balances.c.balance))}
    return wallet, pts, kept


async def test_wallet_and_points_a_duplicate_and_a_redelivered_batch_change_nothing(
    store: SqlStore, redis: aioredis.Redis, keys: Keys
) -> None:
    ledger = WalletLedger(store)
    points = PointsWorker(store, redis, keys, Rules())
    first = [topup("a", 1000), topup("b", 500)] + [gift(i, "a" if i % 2 else "b", "h1", 10 + i) for i in range(10)]
    second = [first[3], first[0], gift(10, "a", "h2", 7), gift(11, "b", "h1", 5)]
    for batch in (first, second, first, second + first):
        await ledger(batch)
        await points(batch)
    wallet, pts, kept = await ledger_sums(store)
    spent = {u: sum(10 + i for i in range(10) if (u == "a") == bool(i % 2)) for u in ("a", "b")}
    assert wallet == {"a": 1000 - spent["a"] - 7, "b": 500 - spent["b"] - 5}
    assert pts == {("a", "viewer"): spent["a"] + 7, ("b", "viewer"): spent["b"] + 5, ("h1", "host"): spent["a"] + spent["b"] + 5,
                   ("h2", "host"): 7}
    assert kept == pts  # the kept balances are the ledger's sums
    assert await count(store, wallet_ledger) == 14 and await count(store, points_ledger) == 24
    assert await store.points_balances(["a", "h1"]) == {"a": {"viewer": spent["a"] + 7, "host": 0},
                                                        "h1": {"viewer": 0, "host": spent["a"] + spent["b"] + 5}}
    assert ledger.written == 14 and points.applied == 12
    cached = await redis.hgetall(keys.user("h1", "points"))
    assert int(cached[b"host"]) == spent["a"] + spent["b"] + 5  # the cache the gateway reads, refreshed from the kept balance


# ---------------------------------------------------------------- a poison event
@pytest.fixture
async def log(redis: aioredis.Redis, keys: Keys) -> AsyncIterator[RedisLog]:
    lg = RedisLog(redis, keys, claim_idle_ms=60_000)
    yield lg
    await lg.close()


async def test_orders_a_poison_event_fails_alone_and_the_others_are_applied_once(store: SqlStore, log: RedisLog) -> None:
    settler = OrderSettler(store, None)
    bad = reserved(500)
    bad = LogEvent(bad.id, bad.topic, bad.key, bad.type, {k: v for k, v in bad.data.items() if k != "unit_price"}, bad.ts)
    good = [reserved(i) for i in range(40)] + [moved(i, "paid") for i in range(0, 40, 2)]
    await log.append_many([*good[:25], bad, *good[25:]])
    with pytest.raises(KeyError, match="unit_price"):  # a drain re-raises what the bad event raised
        await run_consumer(log, "orders", "orders", "w1", settler.handle, burst=True, batch=100, prefetch=True, fetch_timeout_ms=200)
    states = await order_state(store)
    assert len(states) == 40 and sum(1 for s, _, _ in states.values() if s == "paid") == 20
    assert await count(store, applied_events, applied_events.c.consumer == "orders") == 60  # each once, the bad one not
    # the bad event comes back alone and fails again; what was appended after it goes through
    later = [reserved(i) for i in range(40, 50)]
    await log.append_many(later)
    with pytest.raises(KeyError):
        await run_consumer(log, "orders", "orders", "w1", settler.handle, burst=True, batch=100, prefetch=True, fetch_timeout_ms=200)
    assert len(await order_state(store)) == 50
    assert await count(store, applied_events, applied_events.c.consumer == "orders") == 70
    assert await count(store, order_events) == 70
    assert await store.get_order(bad.data["order_id"]) is None


async def test_wallet_and_points_a_poison_gift_fails_alone_and_the_others_are_applied_once(
    store: SqlStore, log: RedisLog, redis: aioredis.Redis, keys: Keys
) -> None:
    good = [topup("a", 10_000)] + [gift(i, "a", "h1", 1 + i % 3) for i in range(60)]
    bad = new_event("gifts", "a", "gift.sent", {"user": "a", "room": "room-h1", "host": "h1", "value": "lots"}, "g-bad", NOW)
    await log.append_many([*good[:30], bad, *good[30:]])
    ledger = WalletLedger(store)
    points = PointsWorker(store, redis, keys, Rules())
    for group, handler in (("wallet", ledger), ("points", points)):
        with pytest.raises(ValueError):
            await run_consumer(log, "gifts", group, "w1", handler, burst=True, batch=64, prefetch=True, fetch_timeout_ms=200)
    value = sum(1 + i % 3 for i in range(60))
    assert await store.wallet_balance("a") == 10_000 - value and await count(store, wallet_ledger) == 61
    assert await store.points_balance("a", "viewer") == value == await store.points_balance("h1", "host")
    assert await count(store, points_ledger) == 120
    for group, handler in (("wallet", ledger), ("points", points)):  # again: only the bad one comes back, and fails
        with pytest.raises(ValueError):
            await run_consumer(log, "gifts", group, "w1", handler, burst=True, batch=64, prefetch=True, fetch_timeout_ms=200)
    assert ledger.written == 61 and points.applied == 60  # the top-up awards no points
    wallet, pts, kept = await ledger_sums(store)
    assert kept == pts and wallet == {"a": 10_000 - value}
