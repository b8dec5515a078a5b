"""Connecting to Redis: one server (``redis://``) or a cluster (``redis+cluster://``).

``LC_REDIS_URL`` forms:

* ``redis://127.0.0.1:6379/0``: one server (pub/sub with PUBLISH/SUBSCRIBE)
* ``redis+cluster://127.0.0.1:7000,127.0.0.1:7001``: Redis Cluster through redis-py's
  asyncio ``RedisCluster`` (room broadcast with sharded SPUBLISH/SSUBSCRIBE)

Driver errors are turned into :class:`~livecommerce.errors.Unavailable` by the adapters,
with :func:`unavailable`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster

from .errors import Unavailable

T = TypeVar("T")

DRIVER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def is_cluster_url(url: str) -> bool:
    return url.startswith(("redis+cluster://", "rediss+cluster://"))


def is_cluster_client(client: Any) -> bool:
    """True for a ``RedisCluster`` (no multi-slot scripts, no EVALSHA in pipelines)."""
    return isinstance(client, RedisCluster)


def connect(url: str, *, max_connections: int = 128, **kw: Any) -> Any:
    """Return a ``redis.asyncio.Redis`` or ``RedisCluster`` client for ``url``.

    A single server gets a *blocking* pool: past ``max_connections`` concurrent commands
    a caller waits (up to 10 s) for a free connection instead of failing, which is the
    backpressure a rush needs.
    """
    if is_cluster_url(url):
        rest = url.split("://", 1)[1].split("/", 1)[0]
        nodes = []
        for part in rest.split(","):
            host, _, port = part.rpartition(":")
            nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
        return RedisCluster(startup_nodes=nodes, max_connections=max_connections, **kw)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10, **kw)
    return aioredis.Redis(connection_pool=pool)


async def unavailable(aw: Awaitable[T]) -> T:
    """Await a driver call, turning connection errors into ``Unavailable``."""
    try:
        return await aw
    except DRIVER_ERRORS as exc:
        raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc


@contextlib.asynccontextmanager
async def guarded() -> AsyncIterator[None]:
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc
