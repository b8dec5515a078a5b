"""The catalogue over Redis and SQL (SQLite and PostgreSQL): writes land in both, a lost SQL
write is found and repaired by reconcile with the same ids, loads are idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from livecommerce import catalog_sql
from livecommerce.catalog import SkuPatch, SkuStock, patch_product, patch_sku, validate_product
from livecommerce.catalog_redis import RedisCatalog
from livecommerce.catalog_sync import Catalogue
from livecommerce.errors import Conflict, NotFound
from livecommerce.keys import Keys
from livecommerce.store_sql import SqlStore

NOW = 1_700_000_000_000
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TEE: dict[str, Any] = {"id": "tee", "name": "Tee", "category": "clothing", "skus": [
    {"attrs": {"colour": "red"}, "price": 1999, "stock": 5},
    {"attrs": {"colour": "blue"}, "price": 2099, "stock": 2},
]}


@pytest.fixture
def cat(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> Catalogue:
    return Catalogue(RedisCatalog(redis, keys), store)


async def test_a_created_product_is_in_redis_and_sql_with_its_stock_moves(cat: Catalogue, store: SqlStore) -> None:
    p, created = await cat.create(validate_product(TEE, owner="h1"), now_ms=NOW, by="h1")
    assert created and p.v == 1
    sql = await catalog_sql.get_product(store, "tee")
    assert sql is not None and sql.product.definition() == p.definition() and sql.product.v == 1
    assert sql.stocked == {"red": 5, "blue": 2} == await catalog_sql.moves_sum(store, "tee")
    assert await cat.redis.moves("tee") == []  # SQL has them: Redis forgot them
    again, created = await cat.create(validate_product(TEE, owner="h1"), now_ms=NOW + 1)
    assert not created and again.v == 1
    with pytest.raises(Conflict) as e:
        await cat.create(validate_product({**TEE, "name": "Other"}, owner="h1"), now_ms=NOW)
    assert e.value.code == "product_exists"
    assert [x.id for x in await catalog_sql.list_products(store, owner="h1")] == ["tee"]
    assert await catalog_sql.list_products(store, owner="h2") == []


async def test_updates_bump_the_version_in_both_and_stock_moves_are_ledgered(cat: Catalogue, store: SqlStore) -> None:
    await cat.create(validate_product(TEE, owner="h1"), now_ms=NOW)
    _, after = await cat.update("tee", lambda p: patch_product(p, {"name": "Tee 2"}), now_ms=NOW + 1)
    assert after.v == 2 and after.name == "Tee 2"
    same, unchanged = await cat.update("tee", lambda p: patch_product(p, {"name": "Tee 2"}), now_ms=NOW + 2)
    assert unchanged.v == 2 and same == unchanged  # nothing to store
    await cat.update("tee", lambda p: patch_sku(p, "red", SkuPatch(price=1500)), now_ms=NOW + 3)
    done = await cat.change_stock("tee", "red", add=3, now_ms=NOW + 4, by="h1")
    assert done.stock == SkuStock(8, 0, 0, 8)
    await cat.change_stock("tee", "blue", set_to=0, now_ms=NOW + 5, by="h1")
    with pytest.raises(Conflict) as e:
        await cat.change_stock("tee", "blue", add=-1, now_ms=NOW + 6)
    assert e.value.code == "stock_out_of_range"
    with pytest.raises(NotFound):
        await cat.change_stock("tee", "green", add=1, now_ms=NOW)
    sql = await catalog_sql.get_product(store, "tee")
    assert sql is not None and sql.product.v == 3 and sql.product.sku("red").price == 1500  # type: ignore[union-attr]
    assert sql.stocked == {"red": 8, "blue": 0} == await catalog_sql.moves_sum(store, "tee")
    report = await cat.reconcile("tee", repair=False, now_ms=NOW + 10)
    assert report.conserved and report.drift == [] and report.skus["red"]["sql_stocked"] == 8


async def test_reconcile_finds_what_sql_missed_and_repairs_it_once(cat: Catalogue, store: SqlStore) -> None:
    """A crash between the Redis write and the SQL write: the product and a stock move
    reach Redis only; report says so, repair writes them with the same ids, twice is once."""
    d = validate_product(TEE, owner="h1")
    stored = await cat.redis.put(d.product, expected_v=0, initial_stock=d.stock, now_ms=NOW)  # Redis only
    await cat.redis.change_stock("tee", "red", add=4, now_ms=NOW + 1, by="h1")
    report = await cat.reconcile("tee", repair=False, now_ms=NOW + 2)
    assert report.redis_v == 1 and report.sql_v is None and report.repaired == 0
    assert report.drift[0] == "definition: SQL has nothing, Redis v1"
    assert sorted(x.split(" (")[0] for x in report.drift[1:]) == ["stock move tee/blue/1", "stock move tee/red/1",
                                                                   "stock move tee/red/2"]
    fixed = await cat.reconcile("tee", repair=True, now_ms=NOW + 3)
    assert fixed.repaired == 4 and fixed.pruned_moves == 3
    sql = await catalog_sql.get_product(store, "tee")
    assert sql is not None and sql.product.v == stored.v and sql.stocked == {"red": 9, "blue": 2}
    # the late original write of a move lands after the repair: still once
    assert await catalog_sql.record_moves(store, [stored.moves[0]]) == 0
    again = await cat.reconcile("tee", repair=True, now_ms=NOW + 4)
    assert again.drift == [] and again.repaired == 0 and again.conserved


async def test_reconcile_reports_a_product_sql_has_and_redis_lost(cat: Catalogue, store: SqlStore, redis: aioredis.Redis,
                                                                  keys: Keys) -> None:
    await cat.create(validate_product(TEE, owner="h1"), now_ms=NOW)
    await redis.delete(keys.entity("product", "tee", "meta"))
    reports = await cat.reconcile_all(repair=True, now_ms=NOW)
    assert [r.product_id for r in reports] == ["tee"] and "not in Redis" in reports[0].drift[0]


async def test_loading_a_file_twice_changes_nothing_the_second_time(cat: Catalogue, store: SqlStore) -> None:
    from livecommerce.catalog import load_catalog_file

    drafts = load_catalog_file(EXAMPLES / "catalog.yaml")
    first = await cat.load(drafts, now_ms=NOW, by="ops")
    assert [c.created for c in first] == [True, True, True]
    await cat.change_stock("honey-jar", "default", add=-10, now_ms=NOW + 1)  # sold meanwhile
    second = await cat.load(drafts, now_ms=NOW + 2, by="ops")
    assert not any(c.changed for c in second)
    got = await cat.get("honey-jar")
    assert got is not None and got[1]["default"].available == 90  # a reload does not put back units
    third = await cat.load(drafts, now_ms=NOW + 3, by="ops", set_stock=True)
    assert [c.stock for c in third if c.stock] == [(("default", 90, 100),)]
    got = await cat.get("honey-jar")
    assert got is not None and got[1]["default"] == SkuStock(100, 0, 0, 100)
    assert (await catalog_sql.get_product(store, "honey-jar")).stocked == {"default": 100}  # type: ignore[union-attr]
