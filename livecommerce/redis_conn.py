"""Connecting to Redis: one server (``redis://``) or a cluster (``redis+cluster://``).

``LC_REDIS_URL`` forms:

* ``redis://127.0.0.1:6379/0``: one server (pub/sub with PUBLISH/SUBSCRIBE)
* ``redis+cluster://127.0.0.1:7000,127.0.0.1:7001``: Redis Cluster through redis-py's
  asyncio ``RedisCluster`` (room broadcast with sharded SPUBLISH/SSUBSCRIBE)

Driver errors are turned into :class:`~livecommerce.errors.Unavailable` by the adapters,
with :func:`unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript

from .errors import Unavailable

T = TypeVar("T")

DRIVER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def is_cluster_url(url: str) -> bool:
    return url.startswith(("redis+cluster://", "rediss+cluster://"))


class _FailoverSafeScript(AsyncScript):
    """A Lua script that keeps working across a Redis Cluster failover.

    The promoted replica starts with an empty script cache, and redis-py's reload on NOSCRIPT
    (SCRIPT LOAD to the primaries of its slot map) can reach the old primaries while its
    retried EVALSHA goes to the new one, failing again. EVAL with the source goes to the
    owner of the keys and caches the script there.
    """

    async def __call__(
        self, keys: Sequence[Any] | None = None, args: Iterable[Any] | None = None, client: Any = None
    ) -> Any:
        keys, argv = list(keys or []), list(args or [])
        try:
            return await super().__call__(keys, argv, client)
        except redis.exceptions.NoScriptError:
            source = self.script if isinstance(self.script, str) else bytes(self.script).decode()
            return await (client or self.registered_client).eval(source, len(keys), *keys, *argv)


class LcRedisCluster(RedisCluster):
    """``RedisCluster`` whose registered scripts survive failovers (see ``_FailoverSafeScript``)."""

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        return _FailoverSafeScript(self, script)


def is_cluster_client(client: Any) -> bool:
    """True for a ``RedisCluster`` (no multi-slot scripts, no EVALSHA in pipelines)."""
    return isinstance(client, RedisCluster)


def connect(url: str, *, max_connections: int = 128, **kw: Any) -> Any:
    """Return a ``redis.asyncio.Redis`` or ``RedisCluster`` client for ``url``.

    A single server gets a *blocking* pool: past ``max_connections`` concurrent commands
    a caller waits (up to 30 s) for a free connection instead of failing, which is the
    backpressure a rush needs (30 s: a rush answers late rather than ``unavailable``).
    """
    if is_cluster_url(url):
        rest = url.split("://", 1)[1].split("/", 1)[0]
        nodes = []
        for part in rest.split(","):
            host, _, port = part.rpartition(":")
            nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
        return LcRedisCluster(startup_nodes=nodes, max_connections=max_connections, **kw)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30, **kw)
    return aioredis.Redis(connection_pool=pool)


async def run_script_calls(client: Any, script: AsyncScript, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Run ``script`` once per ``(keys, args)`` of ``calls``; the replies in order.

    One call goes alone; several go in one pipeline of EVALSHA (one round trip; on NOSCRIPT,
    none ran: the script is loaded and the pipeline sent again), or concurrently on a
    cluster (redis-py refuses EVALSHA in a cluster pipeline). Unlike passing ``client=pipe``
    to the script, no SCRIPT EXISTS round trip precedes each pipeline.

    Raises:
        the driver's errors (connection errors, a script's error reply).
    """
    if len(calls) == 1:
        keys, args = calls[0]
        return [await script(keys=keys, args=args)]
    if isinstance(client, RedisCluster):
        return list(await asyncio.gather(*(script(keys=k, args=a) for k, a in calls)))
    replies: list[Any] = []
    for _ in range(2):
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
        if not any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            break
        await client.script_load(script.script)
    for r in replies:
        if isinstance(r, Exception):
            raise r
    return replies


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
