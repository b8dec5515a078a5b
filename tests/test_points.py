"""Points: award rules and levels (pure), the points worker applying each event exactly once
(redelivered on Redis Streams and Kafka, and killed with SIGKILL mid-batch), redemptions
that never overdraw, and points at the edge (pushes, levels on comments, activity events)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from livecommerce.broker_redis import RedisBroker
from livecommerce.config import Settings
from livecommerce.errors import BadFrame
from livecommerce.gifts import GiftSpec
from livecommerce.keys import Keys
from livecommerce.log import Log, LogEvent
from livecommerce.log_open import open_log
from livecommerce.log_redis import RedisLog
from livecommerce.migrations import upgrade
from livecommerce.notify import Notifier
from livecommerce.points import (
    Award,
    Rules,
    WatchSession,
    awards_for,
    level_for,
    parse_redeem,
    room_owner,
)
from livecommerce.store_sql import SqlStore
from livecommerce.wallet_redis import RedisWallet, SentGift
from tests.waiting import wait_until
from tests.wsclient import Client
from workers.points import CONSUMER, PointsWorker
from workers.points import drain as points_drain
from workers.runner import run_consumer
from workers.wallet import WalletLedger

RULES = Rules(levels=(0, 100, 500, 2000), comment_points=1, comment_daily_cap=20, watch_points_per_min=2)
LILY = GiftSpec("lily", "Lily", 7, 1)


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- rules


def test_a_level_is_the_highest_threshold_reached() -> None:
    t = (0, 100, 500)
    assert [level_for(p, t) for p in (-5, 0, 99, 100, 499, 500, 10**9)] == [0, 0, 0, 1, 1, 2, 2]


def test_each_event_awards_its_rows() -> None:
    gift = {"user": "a", "room": "r", "host": "h", "gift_id": "x", "count": 2, "price": 5, "value": 10}
    assert awards_for("gift.sent", gift, host=None, rules=RULES) == [
        Award("a", "viewer", 10, "gift.sent"), Award("h", "host", 10, "gift.received")]
    paid = {"order_id": "o", "user_id": "b", "room_id": "r2", "amount": 1299}
    assert awards_for("order.paid", paid, host=None, rules=RULES) == [
        Award("b", "viewer", 12, "order.paid"), Award(room_owner("r2"), "host", 12, "order.sold")]
    assert awards_for("order.paid", paid, host="h2", rules=RULES)[1].user == "h2"
    assert awards_for("order.paid", {**paid, "amount": 99}, host=None, rules=RULES) == []
    assert awards_for("activity.comment", {"user": "c", "n": 20}, host=None, rules=RULES) == [Award("c", "viewer", 1, "comment")]
    assert awards_for("activity.comment", {"user": "c", "n": 21}, host=None, rules=RULES) == []
    assert awards_for("activity.watch", {"user": "d", "minutes": 3}, host=None, rules=RULES) == [Award("d", "viewer", 6, "watch")]
    assert awards_for("order.reserved", paid, host=None, rules=RULES) == []


@given(st.lists(st.integers(0, 400_000), min_size=1, max_size=20))
def test_watch_minutes_are_emitted_once_and_partial_minutes_carry_over(gaps: list[int]) -> None:
    s = WatchSession("s", "u", "r", started_ms=0)
    t, emitted, ids = 0, 0, set()
    for g in gaps:
        t += g
        got = s.take(t)
        if got is not None:
            ids.add(got[0])
            emitted += got[1]["minutes"]
    assert emitted == t // 60_000 and len(ids) == s.seq


def test_a_redemption_names_a_value_and_a_request_id() -> None:
    assert parse_redeem({"value": 20, "request_id": "r-1"}).value == 20
    for bad in ({"value": 0, "request_id": "r"}, {"value": 5}, {"value": 5, "request_id": "a b"}):
        with pytest.raises(BadFrame):
            parse_redeem(bad)


# ---------------------------------------------------------------- the worker


async def test_the_worker_awards_hosts_and_viewers_and_caches_levels(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    log = RedisLog(redis, keys)
    await redis.hset(keys.room_meta("r1"), mapping={"id": "r1", "host": "h1"})
    await log.append("gifts", "a", "gift.sent", {"user": "a", "room": "r1", "host": "h1", "gift_id": "x", "count": 1, "price": 100, "value": 100})
    await log.append("orders", "o1", "order.paid", {"order_id": "o1", "user_id": "a", "room_id": "r1", "amount": 25_000}, event_id="o1:paid")
    await log.append("orders", "o2", "order.paid", {"order_id": "o2", "user_id": "b", "room_id": "r2", "amount": 1_000}, event_id="o2:paid")
    for n in (1, 2, 3, 25):
        await log.append("activity", "a", "activity.comment", {"user": "a", "room": "r1", "day": 1, "n": n}, event_id=f"comment:a:1:{n}")
    await log.append("activity", "a", "activity.watch", {"user": "a", "room": "r1", "session": "s", "minutes": 7}, event_id="watch:s:1")
    worker = PointsWorker(store, redis, keys, RULES)
    assert await points_drain(log, worker, fetch_timeout_ms=100) == 8
    assert await store.points_balance("a", "viewer") == 100 + 250 + 3 + 14
    assert await store.points_balance("h1", "host") == 350
    assert await store.points_balance(room_owner("r2"), "host") == 10 and await store.points_balance("b") == 10
    assert await redis.hgetall(keys.user("a", "points")) == {b"viewer": b"367", b"host": b"0", b"level": b"1", b"host_level": b"0"}
    assert {e.reason for e in await store.points_ledger("a")} == {"gift.sent", "order.paid", "comment", "watch"}
    assert {e.ref_event_id for e in await store.points_ledger("h1")} == {"o1:paid", (await store.points_ledger("a"))[-1].ref_event_id}


def _kafka_settings(settings: Settings, boot: str) -> Settings:
    return settings.replace(kafka_bootstrap=boot, kafka_session_timeout_ms=2000, kafka_idempotent=False, kafka_partitions=2)


async def _consume_all(log: Log, handlers: list[tuple[str, str, Any]], *, fetch_ms: int) -> None:
    """Drain several (topic, group, handler) at once: Kafka joins run in parallel."""
    await asyncio.gather(*(run_consumer(log, topic, group, f"{group}-m", h, burst=True, fetch_timeout_ms=fetch_ms)
                           for topic, group, h in handlers))


@pytest.mark.parametrize("backend", ["redis", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_redelivering_every_gift_and_order_event_twice_changes_no_balance(
    backend: str, settings: Settings, redis: aioredis.Redis, keys: Keys, store: SqlStore, request: pytest.FixtureRequest
) -> None:
    if backend == "kafka" and store.dialect == "postgresql":
        pytest.skip("the Kafka case runs on SQLite (time); PostgreSQL is covered by the Redis case")
    s = _kafka_settings(settings, request.getfixturevalue("kafka_bootstrap")) if backend == "kafka" else settings
    log = open_log(s, redis)
    fetch_ms = 1500 if backend == "kafka" else 100
    wallet = RedisWallet(redis, keys)
    try:
        events: list[LogEvent] = []
        for u in ("a", "b", "c"):
            events.append((await wallet.topup(user=u, amount=100, idempotency_key="k", by="ops", now_ms=now_ms())).event)
        for i in range(30):
            r = await wallet.send_gift(user="abc"[i % 3], room="r1", host="h1", spec=LILY, count=1 + i % 4, combo_id=None, now_ms=now_ms())
            if isinstance(r, SentGift):
                events.append(r.event)
        for i in range(6):
            data = {"order_id": f"o{i}", "user_id": "abc"[i % 3], "room_id": "r1", "amount": 1_000 * (i + 1), "host": "h1"}
            events.append(LogEvent(f"o{i}:paid", "orders", f"o{i}", "order.paid", data, now_ms()))
        for e in events + events:  # every event appended twice, same id
            await log.append(e.topic, e.key, e.type, e.data, event_id=e.id, ts=e.ts)
        await wallet.clear(events)
        gifts = [e for e in events if e.type == "gift.sent"]
        want_viewer = {u: sum(e.data["value"] for e in gifts if e.key == u) for u in "abc"}
        for i in range(6):
            want_viewer["abc"[i % 3]] += 10 * (i + 1)
        want_host = sum(e.data["value"] for e in gifts) + sum(10 * (i + 1) for i in range(6))

        async def balances() -> tuple[Any, ...]:
            return (
                {u: await store.points_balance(u, "viewer") for u in "abc"},
                await store.points_balance("h1", "host"),
                {u: (await store.wallet_balance(u), await wallet.balance(u)) for u in "abc"},
                len(await store.points_ledger("h1", limit=500)),
            )

        points = PointsWorker(store, redis, keys, RULES)
        await _consume_all(log, [("gifts", "wallet", WalletLedger(store)), ("gifts", CONSUMER, points),
                                 ("orders", CONSUMER, points)], fetch_ms=fetch_ms)
        first = await balances()
        assert first[0] == want_viewer and first[1] == want_host
        assert all(sql == hot for sql, hot in first[2].values())  # Redis balance == SQL ledger sum
        assert first[3] == len(gifts) + 6
        # the whole log once more, through fresh groups: every event a third and fourth time
        await _consume_all(log, [("gifts", "wallet-replay", WalletLedger(store)), ("gifts", "points-replay", points),
                                 ("orders", "points-replay", points)], fetch_ms=fetch_ms)
        assert await balances() == first
        assert points.applied == len(gifts) + 6
    finally:
        await log.close()


async def test_redemptions_never_overdraw_and_grant_one_coupon_each(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    log = RedisLog(redis, keys)
    await log.append("gifts", "a", "gift.sent", {"user": "a", "room": "r", "host": "h", "gift_id": "x", "count": 1, "price": 300, "value": 300})
    for rid in ("r1", "r2", "r1"):  # r2 would overdraw; r1 is retried
        await log.append("points", "a", "points.redeem", {"user": "a", "value": 20, "cost": 200, "request_id": rid}, event_id=f"redeem:a:{rid}")
    worker = PointsWorker(store, redis, keys, RULES)
    await points_drain(log, worker, fetch_timeout_ms=100)
    await points_drain(log, worker, fetch_timeout_ms=100)
    assert await store.points_balance("a", "viewer") == 100
    assert [e.delta for e in await store.points_ledger("a")] == [-200, 300]
    coupons = await worker.coupons.user_coupons("a", now_ms=now_ms())
    assert len(coupons) == 1 and coupons[0]["value"] == 20 and coupons[0]["state"] == "claimed"
    assert await worker.coupons.lock_for_order("a", coupons[0]["coupon_id"], "o9", 500) == 20


def _applied(path: Path) -> int:
    """Events the points consumer has committed (a plain read of the SQLite file)."""
    with sqlite3.connect(path, timeout=10) as db:
        return int(db.execute("SELECT count(*) FROM applied_events WHERE consumer = ?", (CONSUMER,)).fetchone()[0])


async def test_the_points_worker_killed_mid_batch_loses_and_duplicates_nothing(
    settings: Settings, redis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    n = 800
    path = tmp_path / "points.db"
    db = f"sqlite+aiosqlite:///{path}"
    await upgrade(db)
    log = RedisLog(redis, keys)
    for start in range(0, n, 50):  # 50 appends in flight at a time
        await asyncio.gather(*(
            log.append("gifts", f"u{i % 40}", "gift.sent",
                       {"user": f"u{i % 40}", "room": "r", "host": f"h{i % 3}", "gift_id": "x", "count": 1, "price": 1, "value": 1 + i % 5})
            for i in range(start, start + 50)
        ))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=db, LC_LOG_JSON="0",
               LC_NODE_ID="pw1", LC_LOG_LEVEL="WARNING", LC_SECRET=settings.secret,
               LC_WORKER_BATCH="50")  # several batches, so the kill lands mid-stream (one batch of 1,000 would hold all 800)
    exe = str(Path(sys.executable).with_name("livecommerce"))
    proc = await asyncio.create_subprocess_exec(exe, "worker", "points", env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        # kill right after the first batches commit
        await wait_until(lambda: _applied(path), timeout=30, interval=0.005, what="the worker's first committed batch")
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    at_kill = _applied(path)
    assert 0 < at_kill < n, f"the worker must die mid-stream (applied {at_kill} of {n})"
    store = SqlStore(db)
    try:
        worker = PointsWorker(store, redis, keys, RULES)
        # the restarted worker (same node id) takes back what it held, then the rest
        assert await run_consumer(log, "gifts", CONSUMER, "pw1", worker, burst=True, fetch_timeout_ms=300) >= n - at_kill
        assert _applied(path) == n
        assert worker.applied == n - at_kill  # the batch cut by the kill was not applied twice
        for h in range(3):
            want = sum(1 + i % 5 for i in range(n) if i % 3 == h)
            assert await store.points_balance(f"h{h}", "host") == want
        assert sum([await store.points_balance(f"u{u}", "viewer") for u in range(40)]) == sum(1 + i % 5 for i in range(n))
        rows = sum([len(await store.points_ledger(f"u{u}", limit=1000)) for u in range(40)])
        assert rows == n
    finally:
        await store.close()


# ---------------------------------------------------------------- at the edge


async def test_points_reach_the_user_show_on_comments_and_buy_coupons(
    gateway_factory: Any, token: Callable[..., str], store: SqlStore, redis: aioredis.Redis, keys: Keys
) -> None:
    node = await gateway_factory(database_url=store.url, comment_points_daily_cap=2, comment_rate=100.0, comment_burst=100)
    gw = node.gw
    ops = {"Authorization": f"Bearer {token('ops', role='ops')}"}
    fan_h = {"Authorization": f"Bearer {token('fan')}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{node.url}/api/v1/wallets/fan/topup", json={"amount": 1000, "idempotency_key": "k"}, headers=ops) as resp:
            assert resp.status == 201
    fan = await Client.connect(node.ws, "live1", token("fan"), fmt="json")
    assert (await fan.request("gift", gift_id="cake", count=5))["d"]["balance"] == 505  # 495 coins
    await node.services.wallet_outbox.flush()
    broker = RedisBroker(redis, keys)
    worker = PointsWorker(store, redis, keys, Rules.from_settings(node.settings), notifier=Notifier(redis, broker, keys))
    log: Log = node.services.log
    try:
        await points_drain(log, worker, fetch_timeout_ms=100)
        e = await fan.next_event(5, skip=("online", "likes", "gift", "leaderboard"))
        assert e["t"] == "points" and e["d"]["balance"] == 495 and e["d"]["level"] == 1
        for i in range(4):
            r = await fan.request("comment", text=f"hello {i}")
            assert r["t"] == "ack"
        e = await fan.next_event(5, skip=("online", "likes", "gift", "leaderboard", "points", "ack"))
        assert e["t"] == "comment" and e["d"]["level"] == 1  # level on comments, from the worker's cache
        # watch time: pretend the session began 2.5 minutes ago, then leave
        sess = node.services.points.sessions[("fan", "live1")]
        sess.started_ms -= 150_000
        sess.last_emit_ms = sess.started_ms
        await fan.close()

        def session_closed() -> bool:
            points = node.services.points
            if ("fan", "live1") not in points.sessions:
                return True
            points.check_sessions(gw.now_ms())
            return False

        await wait_until(session_closed, interval=0.02, what="the fan's watch session closed")
        await node.services.points.stop()  # waits for the background appends
        await points_drain(log, worker, fetch_timeout_ms=100)
        assert await store.points_balance("fan", "viewer") == 495 + 2 + 2  # two capped comments, two minutes
        assert sorted(e.reason for e in await store.points_ledger("fan")) == ["comment", "comment", "gift.sent", "watch"]

        async with aiohttp.ClientSession() as s:
            async with s.post(f"{node.url}/api/v1/points/fan/redeem", json={"value": 30, "request_id": "q1"}, headers=fan_h) as resp:
                assert resp.status == 202
                asked = await resp.json()
                assert asked["cost"] == 300
            async with s.post(f"{node.url}/api/v1/points/fan/redeem", json={"value": 500, "request_id": "q2"}, headers=fan_h) as resp:
                assert (resp.status, (await resp.json())["error"]["code"]) == (409, "insufficient_points")
            await points_drain(log, worker, fetch_timeout_ms=100)
            async with s.get(f"{node.url}/api/v1/points/fan", headers=fan_h) as resp:
                assert await resp.json() == {"user": "fan", "viewer": 199, "host": 0, "level": 1, "host_level": 0}
            async with s.get(f"{node.url}/api/v1/points/fan/ledger?role=viewer", headers=fan_h) as resp:
                assert (await resp.json())["entries"][0]["reason"] == "coupon.redeem"
            async with s.get(f"{node.url}/api/v1/points/fan", headers={"Authorization": f"Bearer {token('snoop')}"}) as resp:
                assert resp.status == 403
            async with s.get(f"{node.url}/api/v1/users/fan/coupons", headers=fan_h) as resp:
                assert [(c["coupon_id"], c["value"]) for c in (await resp.json())["coupons"]] == [(asked["coupon_id"], 30)]
    finally:
        await broker.close()
