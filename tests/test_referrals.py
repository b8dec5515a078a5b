"""Referrals: codes (pure), and rewards awarded exactly once by the growth worker under
redelivery (duplicate appends, a crash between commit and ack, a replay through a fresh
consumer group), whichever of the invite and the paid order is applied first, on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from livecommerce.errors import BadFrame, Conflict, NotFound
from livecommerce.experiments import Experiment, Variant
from livecommerce.experiments_redis import ExperimentsRedis
from livecommerce.growth import ACQUIRED, acquired_event_id
from livecommerce.keys import Keys
from livecommerce.log import LogEvent
from livecommerce.log_redis import RedisLog
from livecommerce.referrals import (
    CODE_LEN,
    INVITEE_POINTS,
    REASON_INVITEE,
    REASON_REFERRER,
    REFERRER_POINTS,
    check_code,
    check_referral,
    new_code,
    referrer_points,
)
from livecommerce.referrals_redis import ReferralsRedis
from livecommerce.store_sql import SqlStore
from workers.growth import CONSUMER, GrowthWorker
from workers.growth import drain as growth_drain
from workers.runner import run_consumer


def now_ms() -> int:
    return int(time.time() * 1000)


def test_codes_are_eight_unambiguous_characters() -> None:
    code = new_code(bytes(range(8)))
    assert len(code) == CODE_LEN and check_code(code.lower()) == code and check_code(f" {code[:4]}-{code[4:]} ") == code
    for bad in ("SHORT", "ABCDEFG0", 12345678, "ABCDEFGHJ"):
        with pytest.raises(BadFrame):
            check_code(bad)
    with pytest.raises(NotFound):
        check_referral("b", None)
    with pytest.raises(Conflict):
        check_referral("a", "a")
    assert check_referral("b", "a") == "a"
    assert referrer_points("x") == REFERRER_POINTS and referrer_points(300) == 300 and referrer_points(-5) == 0


async def test_one_code_per_user_and_the_first_acquisition_wins(redis: aioredis.Redis, keys: Keys) -> None:
    refs = ReferralsRedis(redis, keys)
    draws = iter([bytes([1] * 8), bytes([1] * 8), bytes([2] * 8)])
    a = await refs.ensure_code("a", lambda n: next(draws))
    assert await refs.ensure_code("a", lambda n: b"never used") == a and await refs.owner(a) == "a"
    b = await refs.ensure_code("b", lambda n: next(draws))  # the first draw collides with a's code
    assert b != a and await refs.owner(b) == "b"
    assert await refs.acquire("c", {"channel": "invite", "referrer": "a"}) == (True, {"channel": "invite", "referrer": "a"})
    assert await refs.acquire("c", {"channel": "ads"}) == (False, {"channel": "invite", "referrer": "a"})


def _paid(order: str, user: str, amount: int, ts: int) -> LogEvent:
    data = {"order_id": order, "user_id": user, "room_id": "r1", "sale_id": "s1", "amount": amount, "host": "h1"}
    return LogEvent(f"{order}:paid", "orders", order, "order.paid", data, ts)


def _acquired(user: str, referrer: str, ts: int) -> LogEvent:
    data = {"user": user, "channel": "invite", "invite_code": "ABCDEFGH", "referrer": referrer}
    return LogEvent(acquired_event_id(user), "growth", user, ACQUIRED, data, ts)


async def _rows(store: SqlStore, user: str) -> list[tuple[str, int, str]]:
    return sorted((e.reason, e.delta, e.ref_event_id) for e in await store.points_ledger(user, limit=500) if e.reason.startswith("referral."))


async def test_rewards_are_awarded_once_under_redelivery(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    log = RedisLog(redis, keys, claim_idle_ms=50)
    t = now_ms() - 60_000
    # invitee b (referrer a) pays twice; c (referrer a) pays after its invite but the order
    # is applied first; d pays without an invite; e had paid before claiming a's code;
    # every event is appended twice with the same id
    events = [_acquired("b", "a", t), _paid("o1", "b", 5_000, t + 10), _paid("o2", "b", 7_000, t + 20),
              _paid("o3", "c", 3_000, t + 30), _paid("o4", "d", 3_000, t + 40), _acquired("c", "a", t + 25),
              _paid("o6", "e", 2_000, t + 5), _acquired("e", "a", t + 60)]
    for e in events + events:
        await log.append(e.topic, e.key, e.type, e.data, event_id=e.id, ts=e.ts)
    worker = GrowthWorker(store, redis, keys)

    crashed: list[int] = []

    async def crash_after_commit(batch: list[LogEvent]) -> None:
        await worker(batch)  # effects committed ...
        if not crashed:
            crashed.append(len(batch))
            raise RuntimeError("killed between commit and ack")  # ... and the ack never happens

    # the orders first (c's paid order is known before c's invite), crashing once
    with pytest.raises(RuntimeError):
        await run_consumer(log, "orders", CONSUMER, "g-1", crash_after_commit, burst=True, fetch_timeout_ms=100)
    await run_consumer(log, "orders", CONSUMER, "g-1", crash_after_commit, burst=True, fetch_timeout_ms=100)
    await growth_drain(log, worker, fetch_timeout_ms=100)
    assert crashed and {(r.invitee, r.event_id) for r in worker.rewards} == {("b", "o1:paid"), ("c", "o3:paid")}
    want_a = [(REASON_REFERRER, REFERRER_POINTS, "o1:paid"), (REASON_REFERRER, REFERRER_POINTS, "o3:paid")]
    assert await _rows(store, "a") == want_a
    assert await _rows(store, "b") == [(REASON_INVITEE, INVITEE_POINTS, "o1:paid")]
    assert await _rows(store, "c") == [(REASON_INVITEE, INVITEE_POINTS, "o3:paid")]
    assert await _rows(store, "d") == [] and await _rows(store, "e") == []
    assert await store.points_balance("a", "viewer") == 2 * REFERRER_POINTS
    assert (await redis.hgetall(keys.user("a", "points")))[b"viewer"] == str(2 * REFERRER_POINTS).encode()  # re-cached
    # the whole log again through a fresh group, and a second worker process: nothing moves
    other = GrowthWorker(store, redis, keys)
    for topic in ("orders", "growth"):
        await run_consumer(log, topic, "growth-replay", "r-1", other, burst=True, fetch_timeout_ms=100)
    assert other.applied == 0 and other.rewards == []
    assert await _rows(store, "a") == want_a and await store.points_balance("b", "viewer") == INVITEE_POINTS
    # a later paid order of an invitee earns nothing more
    late = _paid("o5", "b", 9_000, t + 90)
    await log.append(late.topic, late.key, late.type, late.data, event_id=late.id, ts=late.ts)
    await growth_drain(log, worker, fetch_timeout_ms=100)
    assert await _rows(store, "b") == [(REASON_INVITEE, INVITEE_POINTS, "o1:paid")]


async def test_concurrent_batches_with_two_paid_orders_claim_one_reward(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    t = now_ms() - 10_000
    first = GrowthWorker(store, redis, keys)
    await first([_acquired("b", "a", t)])
    w1, w2 = GrowthWorker(store, redis, keys), GrowthWorker(store, redis, keys)
    await asyncio.gather(w1([_paid("o1", "b", 1_000, t + 1)]), w2([_paid("o2", "b", 2_000, t + 2)]))
    assert len(w1.rewards) + len(w2.rewards) == 1
    rows = await _rows(store, "b")
    assert len(rows) == 1 and rows[0][:2] == (REASON_INVITEE, INVITEE_POINTS)
    assert await store.points_balance("a", "viewer") == REFERRER_POINTS


async def test_an_experiment_sets_the_referrer_reward(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    exp = Experiment("ref-1", "salt", (Variant("control", 1, {}), Variant("double", 1, {"referral.referrer_points": 400})))
    await ExperimentsRedis(redis, keys).create(exp)
    double = next(u for u in (f"u{i}" for i in range(100)) if exp.assign(u) == "double")
    log = RedisLog(redis, keys)
    t = now_ms() - 10_000
    for e in (_acquired("n1", double, t), _paid("o9", "n1", 1_000, t + 1)):
        await log.append(e.topic, e.key, e.type, e.data, event_id=e.id, ts=e.ts)
    await growth_drain(log, GrowthWorker(store, redis, keys), fetch_timeout_ms=100)
    assert await _rows(store, double) == [(REASON_REFERRER, 400, "o9:paid")]
