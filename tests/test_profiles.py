"""Viewer profiles: the fold is order-free (hypothesis), the documented lifecycle and RFM rules,
and the live worker's profiles equal a rebuild from the log, on SQLite and PostgreSQL, with
two consumers, redelivered events and a profile damaged on purpose."""

from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce import profiles_sql
from livecommerce.fanclub import fan_level, intimacy
from livecommerce.keys import Keys
from livecommerce.log_redis import RedisLog
from livecommerce.profiles import DAY_MS, Context, contributions, fold, merge, rfm, stage, view
from livecommerce.store_sql import SqlStore
from workers.profiles import ProfilesWorker, rebuild
from workers.profiles import drain as profiles_drain
from workers.runner import run_consumer

NOW = 1_700_000_000_000
CTX = Context(lambda room: {"r1": "h1", "r2": "h2"}.get(room), lambda sale: {"s1": "tea", "s2": "toys"}.get(sale))


def _events(rng: random.Random, n: int, users: tuple[str, ...] = ("a", "b", "c")) -> list[tuple[str, str, str, dict[str, Any], int]]:
    """``(id, topic, type, data, ts)`` of a random but plausible day of a few viewers."""
    out = []
    v = {u: 0 for u in users}
    for i in range(n):
        u, ts = rng.choice(users), NOW - rng.randrange(40) * DAY_MS + rng.randrange(DAY_MS)
        room, sale = rng.choice(("r1", "r2", "r3")), rng.choice(("s1", "s2", "s9"))
        k = rng.randrange(9)
        if k == 0:
            e = ("activity", "activity.watch", {"user": u, "room": room, "minutes": rng.randrange(1, 30)})
        elif k == 1:
            e = ("activity", "activity.comment", {"user": u, "room": room, "day": ts // DAY_MS, "n": 1})
        elif k == 2:
            e = ("gifts", "gift.sent", {"user": u, "room": room, "host": None, "value": rng.randrange(1, 5000)})
        elif k == 3:
            e = ("gifts", "wallet.topup", {"user": u, "amount": 500, "by": rng.choice((u, "ops1"))})
        elif k == 4:
            e = ("orders", "order.paid", {"user_id": u, "room_id": room, "sale_id": sale, "amount": rng.randrange(0, 90000),
                                          "discount": 100, "coupon_id": rng.choice((None, "d1:" + u))})
        elif k == 5:
            e = ("orders", "order.refunded", {"user_id": u, "room_id": room, "sale_id": sale, "amount": rng.randrange(1, 900),
                                              "full": rng.random() < 0.5, "host": None})
        elif k == 6:
            e = ("orders", rng.choice(("order.reserved", "order.cancelled", "refund.requested")),
                 {"user_id": u, "reason": rng.choice(("buyer", "timeout"))})
        else:
            v[u] += 1
            e = ("activity", rng.choice(("fan.follow", "fan.club")), {"user": u, "host": rng.choice(("h1", "h2")),
                                                                     "on": rng.random() < 0.6, "v": v[u]})
        out.append((f"e{i}", e[0], e[1], e[2], ts))
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 60))
def test_a_profile_is_the_same_whatever_order_and_grouping_its_events_come_in(seed: int, n: int) -> None:
    rng = random.Random(seed)
    evs = _events(rng, n)
    parts = [(u, p) for _, _, t, d, ts in evs for u, p in contributions(t, d, ts, CTX)]
    by_user: dict[str, dict[str, Any]] = {}
    for u, p in parts:
        by_user[u] = merge(by_user.get(u, {}), p)
    rng.shuffle(parts)
    cut = rng.randrange(len(parts) + 1)
    halves: list[dict[str, dict[str, Any]]] = [{}, {}]
    for i, (u, p) in enumerate(parts):
        h = halves[i >= cut]
        h[u] = merge(h.get(u, {}), p)
    again = {u: merge(halves[1].get(u, {}), halves[0].get(u, {})) for u in set(halves[0]) | set(halves[1])}
    assert again == by_user
    assert all(merge(p, {}) == p for p in by_user.values())


def test_lifecycle_stages_and_rfm_follow_the_documented_rules() -> None:
    day = DAY_MS

    def p(first: int, last: int, orders: int = 0, days: int = 1, spend: int = 0, last_order: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"first_ms": NOW - first * day, "last_ms": NOW - last * day, "days": list(range(days)),
                               "orders": orders, "spend": spend}
        if last_order is not None:
            out["last_order_ms"] = NOW - last_order * day
        return out

    assert stage({}, NOW) == "new"
    assert stage(p(3, 0, orders=5), NOW) == "new"  # tenure first: a week-old buyer is still new
    assert stage(p(60, 30), NOW) == "churned" and stage(p(60, 14), NOW) == "dormant"
    assert stage(p(60, 1, orders=3), NOW) == "mature" and stage(p(60, 1, orders=1, days=10), NOW) == "mature"
    assert stage(p(60, 1, orders=2), NOW) == "growing"
    assert stage({**p(60, 1, orders=3), "orders_refunded": 1}, NOW) == "growing"  # wholly refunded orders do not count
    assert rfm({}, NOW) == {"r": 1, "f": 1, "m": 1, "score": "111"}
    assert rfm(p(60, 1, orders=10, spend=200_000, last_order=2), NOW)["score"] == "555"
    assert rfm(p(60, 1, orders=2, spend=9_999, last_order=20), NOW)["score"] == "332"
    v = view("u", fold(c for t, d in [("order.paid", {"user_id": "u", "room_id": "r1", "sale_id": "s1", "amount": 30_000}),
                                      ("activity.watch", {"user": "u", "room": "r1", "minutes": 40}),
                                      ("fan.club", {"user": "u", "host": "h1", "on": True, "v": 2}),
                                      ("fan.club", {"user": "u", "host": "h1", "on": False, "v": 1})]
                  for _, c in contributions(t, d, NOW, CTX)), NOW)
    assert (v["categories"], v["top_category"], v["fan_clubs"], v["monetary"], v["aov"]) == (["tea"], "tea", ["h1"], 30_000, 30_000)
    assert v["intimacy"] == {"h1": 40 + 300} and fan_level(v["intimacy"]["h1"]) == 4


def test_the_pure_profile_modules_do_no_io() -> None:
    root = Path(__file__).resolve().parents[1] / "livecommerce"
    io = {"asyncio", "redis", "sqlalchemy", "aiohttp", "aiokafka", "websockets", "socket", "aiosqlite", "asyncpg"}
    for rel in ("profiles.py", "fanclub.py", "segments.py", "funnel.py", "refunds.py", "tickets.py"):
        tree = ast.parse((root / rel).read_text())
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        assert not mods & io, (rel, mods & io)


async def _snapshot(store: SqlStore) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    profiles = {u: (d, erased) async for u, d, _, erased in profiles_sql.iter_profiles(store, chunk=7)}
    from sqlalchemy import select

    async with store.read() as tx:
        fm = profiles_sql.fan_members
        rows = [tuple(r) for r in await tx.conn.execute(
            select(fm.c.host_id, fm.c.user_id, fm.c.following, fm.c.member, fm.c.intimacy).order_by(fm.c.host_id, fm.c.user_id))]
    return profiles, rows


async def test_a_profile_equals_its_rebuild_from_the_log(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    log = RedisLog(redis, keys, partitions=2, claim_idle_ms=500)
    await redis.hset(keys.room_meta("r1"), mapping={"id": "r1", "host": "h1"})
    await redis.hset(keys.room_meta("r2"), mapping={"id": "r2", "host": "h2"})
    for sale, pid, cat in (("s1", "p1", "tea"), ("s2", "p2", "toys")):
        await redis.hset(keys.sale(sale, "meta"), mapping={"product_id": pid})
        await redis.hset(keys.entity("product", pid, "meta"), mapping={"id": pid, "category": cat})
    rng = random.Random(11)
    users = tuple(f"v{i}" for i in range(12))
    events = _events(rng, 400, users)

    async def append(evs: list[Any]) -> None:
        for eid, topic, t, d, ts in evs:
            key = str(d.get("user") or d.get("user_id"))
            await log.append(topic, key, t, d, event_id=eid, ts=ts)

    await append(events[:300])
    await append(rng.sample(events[:300], 60))  # redelivered: the same ids again
    secret = "s3cret"
    a, b = ProfilesWorker(store, redis, keys, secret=secret), ProfilesWorker(store, redis, keys, secret=secret)

    async def both() -> None:
        import asyncio

        await asyncio.gather(*(run_consumer(log, t, "profiles", name, w, burst=True, fetch_timeout_ms=50, batch=17)
                               for t in ("orders", "gifts", "activity") for name, w in (("pa", a), ("pb", b))))

    await both()
    assert a.applied + b.applied == 300
    live = await _snapshot(store)
    assert len(live[0]) == len(users) and live[1]
    # a fan's badge cache follows the projection
    member = next(r for r in live[1] if r[3])
    assert int(await redis.hget(keys.entity("fan", member[0], "badges"), member[1])) == fan_level(member[4])

    # damage one profile and one fan row, then rebuild from the log
    async with store.write() as tx:
        await tx.conn.execute(profiles_sql.profiles.update().where(profiles_sql.profiles.c.user_id == "v3").values(data={}))
        await tx.conn.execute(profiles_sql.fan_members.delete().where(profiles_sql.fan_members.c.user_id == "v5"))
    assert (await _snapshot(store)) != live
    out = await rebuild(store, redis, keys, log, secret=secret, fetch_timeout_ms=50)
    assert out == {"events": 300, "profiles": len(users)}
    assert await _snapshot(store) == live
    v3 = live[0]["v3"][0]
    assert {h: intimacy(s) for h, s in v3.get("hosts", {}).items()} == {r[0]: r[4] for r in live[1] if r[1] == "v3"}

    # the live worker goes on after a rebuild without counting anything twice
    await append(events[300:])
    await profiles_drain(log, a, fetch_timeout_ms=50)
    after = await _snapshot(store)
    assert after != live and a.applied + b.applied == 400
    await rebuild(store, redis, keys, log, secret=secret, fetch_timeout_ms=50)
    assert await _snapshot(store) == after


def test_the_cli_rebuilds_every_profile_and_shows_one(settings: Any, monkeypatch: Any, capsys: Any) -> None:
    import asyncio
    import json

    from livecommerce.cli import main
    from livecommerce.migrations import upgrade

    for k, v in {"LC_REDIS_URL": settings.redis_url, "LC_DATABASE_URL": settings.database_url, "LC_KEY_PREFIX": settings.key_prefix,
                 "LC_SECRET": "cli-secret-0123456789abcdef0123456789"}.items():
        monkeypatch.setenv(k, v)

    async def seed() -> None:
        await upgrade(settings.database_url)
        r = aioredis.Redis.from_url(settings.redis_url)
        log = RedisLog(r, Keys(settings.key_prefix))
        await log.append("activity", "v1", "activity.watch", {"user": "v1", "room": "r", "minutes": 12}, event_id="watch:cli:1")
        await r.aclose()

    async def cleanup() -> None:
        r = aioredis.Redis.from_url(settings.redis_url)
        async for key in r.scan_iter(match=f"{settings.key_prefix}:*"):
            await r.delete(key)
        await r.aclose()

    asyncio.run(seed())
    try:
        assert main(["profiles", "rebuild"]) == 0
        assert json.loads(capsys.readouterr().out) == {"events": 1, "profiles": 1}
        assert main(["profiles", "show", "v1"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["user_id"], shown["watch_min"], shown["stage"]) == ("v1", 12, "new")
        assert main(["profiles", "show", "nobody"]) == 1
    finally:
        asyncio.run(cleanup())
