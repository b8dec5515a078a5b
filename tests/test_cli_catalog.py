"""``livecommerce catalog load`` and ``catalog reconcile`` as real subprocesses, on real Redis
and a SQLite file: bad rows are named one per line and nothing is written, a dry run writes
nothing, a load writes Redis and SQL and a second load changes nothing, a room's list that
shows a changed product is refreshed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from livecommerce import catalog_sql, migrations
from livecommerce.bag_redis import RedisBags
from livecommerce.catalog_redis import RedisCatalog
from livecommerce.keys import Keys
from livecommerce.store_sql import SqlStore

EXE = str(Path(sys.executable).with_name("livecommerce"))
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


async def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [EXE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def env_for(redis_url: str, prefix: str, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update({"LC_REDIS_URL": redis_url, "LC_KEY_PREFIX": prefix, "LC_DATABASE_URL": db, "LC_LOG_JSON": "0",
                "PYTHONUNBUFFERED": "1"})
    return env


async def test_help_explains_both_formats(tmp_path: Path) -> None:
    out = await cli("catalog", "load", "--help", env=env_for("", "x", ""), cwd=tmp_path)
    assert out.returncode == 0
    for words in ("--dry-run", "--set-stock", "option:<name>", "products:", "integer cents", "examples/catalog.csv"):
        assert words in out.stdout, words


async def test_bad_rows_are_named_one_per_line_and_nothing_is_written(tmp_path: Path, redis_url: str, prefix: str,
                                                                      redis: aioredis.Redis) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,name,price,stock,option:size\n"
                   "tee,Tee,1999,5,M\n"
                   "tee,,19.99,5,L\n"
                   "mug,Mug,900,-1,\n"
                   "cup,Cup,500,3,\n")
    db = f"sqlite+aiosqlite:///{tmp_path}/lc.db"
    await migrations.upgrade(db)
    out = await cli("catalog", "load", str(bad), env=env_for(redis_url, prefix, db), cwd=tmp_path)
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert lines == [
        "error: bad.csv: row 3 (tee/L): price: must be integer cents (1999 for 19.99), got '19.99'",
        "error: bad.csv: row 4 (mug/default): stock: must be between 0 and 10000000, got -1",
        "bad.csv: 2 error(s); nothing was written",
    ], out.stderr
    assert [k async for k in redis.scan_iter(match=f"{prefix}:*")] == []


async def test_a_dry_run_then_a_load_then_the_same_load_again(tmp_path: Path, redis_url: str, prefix: str,
                                                              redis: aioredis.Redis) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/lc.db"
    await migrations.upgrade(db)
    env = env_for(redis_url, prefix, db)
    keys = Keys(prefix)
    products = RedisCatalog(redis, keys)

    dry = await cli("catalog", "load", str(EXAMPLES / "catalog.csv"), "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry
    assert "tea-set: create" in dry.stdout and "  sku navy-L: colour=navy, size=L, 4200 cents" in dry.stdout
    assert "  stock honey-jar" not in dry.stdout and "  stock default: 100" in dry.stdout
    assert dry.stdout.strip().endswith("dry run: 3 of 3 product(s) would change; nothing was written")
    assert await products.ids() == []

    first = await cli("catalog", "load", str(EXAMPLES / "catalog.csv"), env=env, cwd=tmp_path)
    assert first.returncode == 0, first
    assert first.stdout.strip().endswith("3 created, 0 updated, 0 unchanged")
    assert await products.ids() == ["honey-jar", "linen-shirt", "tea-set"]
    got = await products.read("linen-shirt")
    assert got is not None and got[0].owner == "host1" and got[1]["sand-M"].available == 20

    # a room lists the tea set; the YAML file (the same catalogue) changes nothing
    bags = RedisBags(redis, keys)
    from livecommerce.bag import Bag, item_of

    tea = await products.product("tea-set")
    assert tea is not None
    await bags.put("r1", Bag((item_of(tea),), None, 1), expected_v=0)
    await products.listed_in("tea-set", "r1", True)
    same = await cli("catalog", "load", str(EXAMPLES / "catalog.yaml"), env=env, cwd=tmp_path)
    assert same.returncode == 0, same
    assert same.stdout.strip().endswith("3 product(s), nothing to change")

    # a price change reaches the room's list
    changed = tmp_path / "tea.yaml"
    changed.write_text("products:\n- id: tea-set\n  owner: host1\n  name: Porcelain tea set\n  category: home\n"
                       "  image: https://img.example/tea-set.jpg\n  skus:\n  - {attrs: {colour: white}, price: 1799}\n")
    upd = await cli("catalog", "load", str(changed), env=env, cwd=tmp_path)
    assert upd.returncode == 0, upd
    assert "  sku white: price 1999 -> 1799" in upd.stdout and "the lists of 1 room(s) refreshed" in upd.stdout
    bag = await bags.get("r1")
    assert bag.v == 2 and bag.items[0].price_min == 1799

    store = SqlStore(db)
    try:
        sql = await catalog_sql.get_product(store, "tea-set")
        assert sql is not None and sql.product.v == 2 and sql.stocked == {"white": 30, "celadon": 12}
    finally:
        await store.close()
    rec = await cli("catalog", "reconcile", env=env, cwd=tmp_path)
    assert rec.returncode == 0, rec
    assert "3 product(s) checked, 0 with differences left" in rec.stdout


async def test_reconcile_reports_and_repairs_drift(tmp_path: Path, redis_url: str, prefix: str, redis: aioredis.Redis) -> None:
    from livecommerce.catalog import validate_product

    db = f"sqlite+aiosqlite:///{tmp_path}/lc.db"
    await migrations.upgrade(db)
    env = env_for(redis_url, prefix, db)
    d = validate_product({"id": "mug", "name": "Mug", "price": 900, "stock": 4}, owner="h1")
    products = RedisCatalog(redis, Keys(prefix))
    await products.put(d.product, expected_v=0, initial_stock=d.stock, now_ms=1)  # Redis only: SQL missed it
    report = await cli("catalog", "reconcile", env=env, cwd=tmp_path)
    assert report.returncode == 1, report
    assert "mug: Redis v1, SQL vNone: DRIFT" in report.stdout and "stock move mug/default/1 (+4, create) not in SQL" in report.stdout
    fixed = await cli("catalog", "reconcile", "--repair", env=env, cwd=tmp_path)
    assert fixed.returncode == 0, fixed
    assert "REPAIRED (2 row(s) written)" in fixed.stdout
    clean = await cli("catalog", "reconcile", "--json", env=env, cwd=tmp_path)
    assert clean.returncode == 0 and "\"drift\": []" in clean.stdout and "\"left\": []" in clean.stdout
