"""Nothing grows forever (docs/retention.md): each key family written per user, sale, room or
refund gets its lifetime, the durable log is trimmed once every consumer group has passed
(never past a lagging group's pending entries), a profiles rebuild after trimming equals
the live profiles, and SQLite's WAL is truncated."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from livecommerce import profiles_sql
from livecommerce.broker_redis import RedisBroker
from livecommerce.checkout import Checkout
from livecommerce.config import Settings
from livecommerce.coupons import CouponDrop
from livecommerce.coupons_redis import USER_INDEX_TTL_MS, CouponsRedis
from livecommerce.errors import NotFound
from livecommerce.fanclub_redis import FanclubRedis
from livecommerce.feed_redis import FeedRedis
from livecommerce.flash_sale import Sale
from livecommerce.flash_sale_redis import OTHER_PARTS, PARTS
from livecommerce.keys import Keys
from livecommerce.leaderboard_redis import RedisLeaderboards
from livecommerce.log import MemoryLog
from livecommerce.log_redis import RedisLog
from livecommerce.pins_redis import RedisPins
from livecommerce.points import Rules
from livecommerce.refunds import Refund
from livecommerce.refunds_redis import RefundsRedis
from livecommerce.retention import FAMILIES, GroupPosition, family_of, parse_id, trim_point
from livecommerce.store_sql import SqlStore
from tests.test_profiles import _events, _snapshot
from workers.points import PointsWorker
from workers.profiles import ProfilesWorker, rebuild
from workers.retention import RetentionWorker
from workers.runner import run_consumer

DAY = 86_400_000


def _now() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------ sales
def _sale(sid: str, now: int) -> Sale:
    return Sale(sid, "r1", "p1", 500, 5, 3, now - 1000, now + 60_000, payment_window_s=60)


async def _ttls(redis: aioredis.Redis, keys: list[str]) -> dict[str, int]:
    return {k: int(await redis.pttl(k)) for k in keys if await redis.exists(k)}


async def test_a_settled_sales_keys_expire_and_an_unsettled_ones_do_not(redis: aioredis.Redis, keys: Keys) -> None:
    co = Checkout(redis, keys, MemoryLog(), sale_retention_s=1000)
    now = _now()
    await co.create_sale(_sale("s1", now))
    await co.sales.start("s1", now)
    paid = await co.buy(user="u1", sale_id="s1", qty=1, request_id="a", now_ms=now)
    held = await co.buy(user="u2", sale_id="s1", qty=2, request_id="b", now_ms=now)
    assert not isinstance(paid, str) and not isinstance(held, str)
    await co.pay(order_id=paid.order_id, user="u1", now_ms=now + 10)
    sale_keys = [keys.sale("s1", p) for p in (*PARTS, *OTHER_PARTS)]

    await co.sales.end("s1", now + 20)
    await co.expire_due(now + 30)  # ended, but a hold still waits for its payment
    assert all(t == -1 for t in (await _ttls(redis, sale_keys)).values())
    assert await redis.sismember(keys.global_key("sales:active"), "s1")

    await co.expire_due(held.pay_by_ms)  # the hold times out
    await co.expire_due(held.pay_by_ms)  # the next tick finds the sale settled
    ttls = await _ttls(redis, sale_keys)
    assert {keys.sale("s1", p) for p in ("meta", "stock", "buyers", "req", "orders", "counts")} <= set(ttls)
    assert all(0 < t <= 1_000_000 for t in ttls.values()), ttls
    assert not await redis.sismember(keys.global_key("sales:active"), "s1")

    # a refund after settling still works, and its record goes with the sale
    outcome, _, _ = await co.sales.refund("s1", paid.order_id, f"{paid.order_id}.r1", 1)
    assert outcome == "ok" and 0 < await redis.pttl(keys.sale("s1", "refunds")) <= 1_000_000


async def test_a_refund_of_a_sale_whose_keys_expired_says_so(redis: aioredis.Redis, keys: Keys) -> None:
    co = Checkout(redis, keys, MemoryLog())
    with pytest.raises(NotFound) as exc:
        await co.sales.refund("gone", "gone.x1", "gone.x1.r1", 1)
    assert exc.value.code == "sale_expired"


async def test_the_retention_sweep_settles_an_ended_sale_left_without_expiry(redis: aioredis.Redis, keys: Keys,
                                                                             settings: Settings, store: SqlStore) -> None:
    s = settings.replace(sale_retention_s=500, database_url=store.url)
    co = Checkout(redis, keys, MemoryLog())
    now = _now()
    for sid in ("old", "live"):
        await co.create_sale(_sale(sid, now))
        await co.sales.start(sid, now)
        await store.put_sale(_sale(sid, now), state="live", now_ms=now)
    await co.sales.end("old", now)
    w = RetentionWorker(s, redis=redis, durable=MemoryLog(), store=store)
    assert (await w.run_once(now)).settled == ["old"]
    assert 0 < await redis.pttl(keys.sale("old", "meta")) <= 500_000
    assert await redis.pttl(keys.sale("live", "meta")) == -1
    assert (await w.run_once(now)).settled == []  # once


# ------------------------------------------------------------------ refunds, users, rooms
def _refund(order: str, n: int, qty_before: int) -> Refund:
    return Refund(f"{order}.r{n}", order, n, "u1", "r1", "s1", "h1", 1, 100, "damaged", "", 3, 300, qty_before,
                  qty_before * 100, _now())


async def test_a_refund_record_expires_once_no_refund_of_the_order_is_open(redis: aioredis.Redis, keys: Keys) -> None:
    rr = RefundsRedis(redis, keys)
    key = keys.entity("order", "s1.o1", "refunds")
    await rr.request(_refund("s1.o1", 1, 0))
    assert await redis.pttl(key) == -1  # open: kept
    await rr.decide("s1.o1.r1", "approved", by="h1", now_ms=_now())
    await rr.settle("s1.o1.r1", retention_s=100)
    assert 0 < await redis.pttl(key) <= 100_000
    await rr.request(_refund("s1.o1", 2, 1))  # a second refund opens: kept again
    assert await redis.pttl(key) == -1


async def test_the_points_cache_expires_after_its_last_write(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    w = PointsWorker(store, redis, keys, Rules(), cache_ttl_s=321)
    await w.refresh(["u1"])
    assert await redis.hget(keys.user("u1", "points"), "level") is not None
    assert 0 < await redis.ttl(keys.user("u1", "points")) <= 321


async def test_a_rooms_seq_expires_with_its_history(redis: aioredis.Redis, keys: Keys) -> None:
    broker = RedisBroker(redis, keys, history_ttl_s=77)
    try:
        first = await broker.publish_room("r1", {"t": "notice", "room": "r1", "d": {}}, now_ms=_now())
        assert 0 < await redis.ttl(keys.room_seq("r1")) <= 77
        assert 0 < await redis.ttl(keys.room_hist("r1")) <= 77
        await redis.delete(keys.room_seq("r1"), keys.room_hist("r1"))  # what expiry does
        again = await broker.publish_room("r1", {"t": "notice", "room": "r1", "d": {}}, now_ms=_now() + 5)
        assert again > first  # seeded from the clock: above every seq given out
    finally:
        await broker.close()


async def test_an_ended_rooms_likes_expire_after_the_last_like(gateway_factory: Any) -> None:
    node = await gateway_factory(room_retention_s=99)
    likes = node.services.likes
    likes.tally.add("r9", 3)
    assert (await likes.flush())["r9"] == 3
    assert 0 < await node.gw.redis.ttl(node.gw.keys.room_likes("r9")) <= 99


async def test_room_caches_and_boards_expire_after_their_last_write(redis: aioredis.Redis, keys: Keys) -> None:
    await RedisPins(redis, keys, pin_ttl_s=50).set_pin("r1", {"product_id": "p1"})
    await RedisLeaderboards(redis, keys, room_ttl_s=50).add({("room", "r1", "u1"): 5, ("host", "h1", "u1"): 5})
    feed = FeedRedis(redis, keys, ttl_s=50)
    await feed.set_category("r1", "tea")
    await feed.add_gmv([("r2", 100, _now())])
    co = Checkout(redis, keys, MemoryLog(), room_retention_s=50)
    now = _now()
    await co.create_sale(_sale("s1", now))
    await co.sales.start("s1", now)
    r = await co.buy(user="u1", sale_id="s1", qty=1, request_id="a", now_ms=now)
    assert not isinstance(r, str)
    await co.pay(order_id=r.order_id, user="u1", now_ms=now)
    for key in (keys.room("r1", "pin"), keys.room("r1", "lb"), keys.room("r1", "feed"), keys.room("r2", "feed"),
                keys.room("r1", "payers")):
        assert 0 < await redis.ttl(key) <= 50, key
    assert await redis.ttl(keys.entity("host", "h1", "lb")) == -1  # per host, bounded by its fans: kept


async def test_a_fan_version_counter_expires_and_restarts_above_every_version(redis: aioredis.Redis, keys: Keys) -> None:
    fans = FanclubRedis(redis, keys, ttl_s=60)
    await redis.set(keys.user("u1", "fanv"), 7)  # a counter from before the clock seeding
    assert await fans.next_version("u1") == 8
    assert 0 < await redis.ttl(keys.user("u1", "fanv")) <= 60
    await redis.delete(keys.user("u1", "fanv"))  # expired
    v = await fans.next_version("u1")
    assert v > 8 and v > (_now() - 1000) * 1000
    assert await fans.next_version("u1") == v + 1


async def test_a_users_coupon_index_expires_after_the_last_claim(redis: aioredis.Redis, keys: Keys) -> None:
    c = CouponsRedis(redis, keys)
    now = _now()
    await c.create_drop(CouponDrop("d1", "r1", "full_reduction", 0, 100, 5, now + 60_000, "h1", now))
    await c.claim("d1", "u1", now_ms=now)
    assert USER_INDEX_TTL_MS - 60_000 < await redis.pttl(keys.user("u1", "coupons")) <= USER_INDEX_TTL_MS


def test_every_key_family_has_a_rule_and_the_families_name_the_keys_we_write() -> None:
    assert {f.rule for f in FAMILIES} <= {"ttl", "settled", "capped", "kept", "cleanup"}
    doc = (Path(__file__).resolve().parent.parent / "docs" / "retention.md").read_text()
    rows = {line.split("|")[1].split("`")[0].strip(): line for line in doc.splitlines()
            if line.startswith("| ") and line.count("|") == 5}
    for f in FAMILIES:  # docs/retention.md's table has a row for each family, with its rule
        assert f.name in rows, f.name
        assert f"| {f.rule}:" in rows[f.name], f.name
    k = Keys("lc")
    for key, family in ((k.user("u", "points"), "user points"), (k.sale("s", "orders"), "sale state"),
                        (k.room_likes("r"), "room likes"), (k.room_seq("r"), "room seq"), (k.stream("orders:0"), "log stream"),
                        (k.entity("order", "s.o", "refunds"), "order refunds"), (k.sale("s", "f:saw"), "sale funnel")):
        assert family_of(key, "lc") == family, key


# ------------------------------------------------------------------ the log
def _gp(name: str, last: str, pending: str | None = None) -> GroupPosition:
    return GroupPosition(name, last, pending)


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 5), st.one_of(st.none(), st.integers(0, 10**6))), max_size=4),
       st.integers(0, 2 * 10**6), st.integers(0, 10**6))
def test_the_trim_point_never_passes_a_group_or_the_retention(groups: list[tuple[int, int, int | None]], now: int, retain: int) -> None:
    gs = [_gp(f"g{i}", f"{ms}-{seq}", None if p is None else f"{min(p, ms)}-0") for i, (ms, seq, p) in enumerate(groups)]
    point = trim_point(gs, now_ms=now, retain_ms=retain)
    if not gs:
        assert point == (0, 0)
    for g in gs:
        assert point <= (parse_id(g.last_delivered)[0], parse_id(g.last_delivered)[1] + 1)
        if g.oldest_pending:
            assert point <= parse_id(g.oldest_pending)
    assert point <= (max(now - retain, 0), 0) or not gs
    capped = trim_point(gs, now_ms=now, retain_ms=retain, max_age_ms=1000)
    assert capped >= (now - 1000, 0) and capped >= point


async def _fill(log: RedisLog, n: int, topic: str = "orders") -> None:
    for i in range(n):
        await log.append(topic, f"k{i}", "order.reserved", {"user_id": f"u{i}"}, event_id=f"e{i}")


async def test_a_stream_is_trimmed_below_what_every_group_has_passed(redis: aioredis.Redis, keys: Keys) -> None:
    log = RedisLog(redis, keys)
    await _fill(log, 10)
    fast, slow = await log.consumer("orders", "fast", "c1"), await log.consumer("orders", "slow", "c1")
    await fast.ack(await fast.fetch(max_events=10, timeout_ms=100))
    await slow.ack(await slow.fetch(max_events=6, timeout_ms=100))
    later = _now() + 10
    assert await log.trim("orders", now_ms=later, retain_ms=0) == 6  # what both groups passed
    assert await redis.xlen(log.stream("orders", 0)) == 4
    # the retention window keeps young entries even when every group passed them
    await slow.ack(await slow.fetch(max_events=10, timeout_ms=100))
    assert await log.trim("orders", now_ms=later, retain_ms=3_600_000) == 0
    assert await log.trim("orders", now_ms=later, retain_ms=0) == 4


async def test_trimming_stops_at_a_lagging_groups_pending_entry(redis: aioredis.Redis, keys: Keys,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    log = RedisLog(redis, keys)
    await _fill(log, 10)
    lag, done = await log.consumer("orders", "lag", "c1"), await log.consumer("orders", "done", "c1")
    await done.ack(await done.fetch(max_events=10, timeout_ms=100))
    got = await lag.fetch(max_events=8, timeout_ms=100)
    await lag.ack(got[:2] + got[3:])  # the third entry stays pending (a consumer died on it)
    assert await log.trim("orders", now_ms=_now() + 10, retain_ms=0) == 2
    # the pending entry is still there and comes back to the group
    rest = [d.event.id for d in await (await log.consumer("orders", "lag", "c1")).fetch(max_events=10, timeout_ms=100)]
    assert rest[0] == got[2].event.id
    # a group that never read holds everything; the hard cap does not, and says who lost what
    await log.consumer("orders", "idle", "c1")
    assert await log.trim("orders", now_ms=_now() + 10, retain_ms=0, max_age_ms=3_600_000) == 0
    assert not [r for r in caplog.records if r.getMessage() == "log.group_lost_entries"]
    assert await log.trim("orders", now_ms=_now() + 10, retain_ms=0, max_age_ms=1) == 8
    lost = [r for r in caplog.records if r.getMessage() == "log.group_lost_entries"]
    assert len(lost) == 1 and set(lost[0].groups) == {"idle", "lag"}  # type: ignore[attr-defined]
    assert await redis.xlen(log.stream("orders", 0)) == 0


async def test_a_stream_no_group_reads_is_kept(redis: aioredis.Redis, keys: Keys) -> None:
    log = RedisLog(redis, keys)
    await _fill(log, 3)
    assert await log.trim("orders", now_ms=_now() + 10, retain_ms=0) == 0
    assert await log.streams() == [("orders", 0)]


async def test_a_rebuild_after_trimming_equals_the_live_profiles(redis: aioredis.Redis, keys: Keys, store: SqlStore,
                                                                 settings: Settings) -> None:
    log = RedisLog(redis, keys, partitions=2, claim_idle_ms=500)
    await redis.hset(keys.room_meta("r1"), mapping={"id": "r1", "host": "h1"})
    await redis.hset(keys.room_meta("r2"), mapping={"id": "r2", "host": "h2"})
    for sale, pid, cat in (("s1", "p1", "tea"), ("s2", "p2", "toys")):
        await redis.hset(keys.sale(sale, "meta"), mapping={"product_id": pid})
        await redis.hset(keys.entity("product", pid, "meta"), mapping={"id": pid, "category": cat})
    rng = random.Random(5)
    events = _events(rng, 240, tuple(f"v{i}" for i in range(8)))

    async def append(evs: list[Any]) -> None:
        for eid, topic, t, d, ts in evs:
            await log.append(topic, str(d.get("user") or d.get("user_id")), t, d, event_id=eid, ts=ts)

    secret = settings.secret
    live = ProfilesWorker(store, redis, keys, secret=secret)

    async def catch_up() -> None:
        for t in ("orders", "gifts", "activity"):
            await run_consumer(log, t, "profiles", "p1", live, burst=True, fetch_timeout_ms=50)

    await append(events[:160])
    await catch_up()
    # retention: everything the (only) group passed goes, folded into the base first
    w = RetentionWorker(settings.replace(log_retain_s=0, database_url=store.url), redis=redis, durable=log, store=store)
    rep = await w.run_once(_now() + 10)
    assert sum(rep.trimmed.values()) == 160 and rep.folded == 160
    await append(events[160:] + rng.sample(events[:160], 20))  # new ones, and re-appended trimmed ones
    await catch_up()
    want = await _snapshot(store)
    async with store.write() as tx:  # damage, then rebuild from the base and the retained log
        await tx.conn.execute(profiles_sql.profiles.update().values(data={}))
    out = await rebuild(store, redis, keys, log, secret=secret, fetch_timeout_ms=50)
    assert out["profiles"] == len(want[0])
    assert await _snapshot(store) == want
    # its groups are gone: they do not hold back the next trim
    assert {g.name for g in await log.positions("orders", 0)} == {"profiles"}


async def test_an_erasure_moves_the_folded_base_to_the_pseudonym(store: SqlStore) -> None:
    async with store.write() as tx:
        await profiles_sql.fold_into_base(tx.conn, {"alice": {"watch_min": 5}}, now_ms=1)
    await profiles_sql.erase_user(store, "alice", "anon-x", now_ms=2)
    async with store.read() as tx:
        base = await profiles_sql.load_base(tx.conn)
    assert "alice" not in base and base["anon-x"] == {"watch_min": 5}
    assert "alice" not in json.dumps(base)


# ------------------------------------------------------------------ SQLite's WAL
def _size(path: Any) -> int:
    return os.path.getsize(path)


async def test_a_checkpoint_truncates_sqlites_wal(tmp_path: Any) -> None:
    from livecommerce import migrations

    url = f"sqlite+aiosqlite:///{tmp_path}/w.db"
    await migrations.upgrade(url)
    store = SqlStore(url)
    try:
        async with store.read():  # a reader open meanwhile does not stop the next checkpoint
            for i in range(200):
                await store.add_wallet_entry(f"u{i}", 1, "topup", f"e{i}", i)
        wal = tmp_path / "w.db-wal"
        assert _size(wal) > 100_000
        busy, _, _ = await store.checkpoint() or (1, 0, 0)
        assert busy == 0 and _size(wal) == 0
        assert await store.wallet_balance("u7") == 1
    finally:
        await store.close()


async def test_postgres_has_no_checkpoint_to_run(store: SqlStore) -> None:
    got = await store.checkpoint()
    assert (got is None) == (store.dialect != "sqlite")


async def test_the_retention_worker_round_trips_with_nothing_to_do(redis: aioredis.Redis, settings: Settings, store: SqlStore) -> None:
    w = RetentionWorker(settings.replace(database_url=store.url), redis=redis, store=store)
    try:
        rep = await asyncio.wait_for(w.run_once(), 10)
        assert rep.trimmed == {} and rep.settled == [] and rep.folded == 0
    finally:
        await w.close()


async def test_kafka_topics_are_created_with_the_logs_retention(kafka_bootstrap: str, settings: Settings,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from livecommerce.log_kafka import KafkaLog
    from livecommerce.log_open import open_log

    sent: list[Any] = []
    real = AIOKafkaAdminClient.create_topics

    async def spy(self: Any, topics: list[Any], *a: Any, **kw: Any) -> Any:
        sent.extend(topics)
        return await real(self, topics, *a, **kw)

    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", spy)
    log = open_log(settings.replace(kafka_bootstrap=kafka_bootstrap, kafka_idempotent=False, log_max_age_s=86_400))
    assert isinstance(log, KafkaLog) and log.retention_ms == 86_400_000
    try:
        await log.ensure_topic("orders")  # the broker takes the topic with its retention
    finally:
        await log.close()
    assert [t.topic_configs for t in sent] == [{"retention.ms": "86400000"}]
