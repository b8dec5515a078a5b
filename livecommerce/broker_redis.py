"""Redis implementation of the :class:`~livecommerce.broker.Broker` port.

One server: PUBLISH/SUBSCRIBE. Redis Cluster: sharded SPUBLISH/SSUBSCRIBE, with the room's
channel, seq counter and history stream in the room's slot (``{room:ID}``), so the publish
script touches one slot only (Redis 7.0 accepts SPUBLISH inside a script when the channel
is one of its KEYS, in the slot of the other keys). The seq counter and the history expire
together ``history_ttl_s`` after the room's last event (``LC_HISTORY_TTL_S``).

Subscriber side, one server: one pub/sub connection per node, read by one task. When the
connection drops (Redis restart) the task reconnects with backoff and resubscribes every
channel.

Subscriber side, cluster: one pub/sub connection per cluster node that owns subscribed
channels, each read by its own task (a shared round-robin reader would make a busy shard
wait for an idle shard's read timeout). A watch task checks the slot owners every
``topology_check_s`` (CLUSTER SLOTS on one of its own connections) and after any reader error
or server-side ``sunsubscribe``; when a channel's slot owner changed (failover: a replica
promoted, or a slot migrated) it refreshes redis-py's slot map and subscribes the channel again
on its new owner, without a restart. (The slot map is not refreshed on a timer: each refresh
makes redis-py reconnect every connection of the shared client.)

After channels were subscribed again, the listeners registered with
:meth:`RedisBroker.add_resubscribe_listener` are called with those channels, so the gateway
hub reads what it missed from the room history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any

import redis.exceptions
from redis.crc import key_slot

from .broker import Handler, History
from .errors import Unavailable
from .keys import Keys
from .protocol.codec import pack_internal, unpack_internal
from .redis_conn import DRIVER_ERRORS, is_cluster_client, is_cluster_url

log = logging.getLogger("livecommerce.broker")

PUBLISH = (files("livecommerce") / "broker_publish.lua").read_text()
HISTORY = (files("livecommerce") / "broker_history.lua").read_text()

# what a cluster throws while a master fails over (no owner yet, stale slot map, ...)
_CLUSTER_ERRORS = (
    *DRIVER_ERRORS,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.ResponseError,
)

# a failing-over cluster answers with these until a replica is promoted and the map refreshed
_UNAVAILABLE = (
    *DRIVER_ERRORS,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.SlotNotCoveredError,
)

ResubscribeListener = Callable[[set[str]], None]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class _Shard:
    """One pub/sub connection to one cluster node, and the task reading it."""

    __slots__ = ("broken", "client", "name", "pubsub", "task")

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self.client = client
        self.pubsub = client.pubsub()
        self.task: asyncio.Task[None] | None = None
        self.broken = False

    async def close(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()


class RedisBroker:
    def __init__(
        self,
        redis: Any,
        keys: Keys,
        *,
        sharded: bool | None = None,
        history_size: int = 1000,
        history_ttl_s: int = 3600,
        topology_check_s: float = 1.0,
    ) -> None:
        self.keys = keys
        self._redis = redis
        self._sharded = sharded if sharded is not None else is_cluster_client(redis)
        self._publish = redis.register_script(PUBLISH)
        self._history = redis.register_script(HISTORY)
        self._size = history_size
        self._ttl = history_ttl_s
        self._handler: Handler | None = None
        self._channels: set[str] = set()
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._listeners: list[ResubscribeListener] = []
        self.reconnects = 0
        self.connected = asyncio.Event()
        # cluster: node name -> shard connection; channel -> node it is subscribed on
        self._shards: dict[str, _Shard] = {}
        self._where: dict[str, str] = {}
        self._check_s = topology_check_s
        self._dirty = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, keys: Keys, **kw: Any) -> RedisBroker:
        from .redis_conn import connect

        return cls(connect(url), keys, sharded=is_cluster_url(url), **kw)

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    def add_resubscribe_listener(self, listener: ResubscribeListener) -> None:
        """Call ``listener(channels)`` after ``channels`` were subscribed again (reconnect,
        failover): messages published meanwhile were not delivered."""
        self._listeners.append(listener)

    def _resubscribed(self, channels: set[str]) -> None:
        self.reconnects += 1
        for listener in self._listeners:
            try:
                listener(channels)
            except Exception:
                log.exception("broker.resubscribe_listener_failed")

    # ---- subscriber side
    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._sharded:
            await self._subscribe_sharded(channel)
            return
        if self._pubsub is None:
            self._pubsub = self._new_pubsub()
        try:
            await self._pubsub.subscribe(channel)
        except DRIVER_ERRORS as exc:
            # the reader task reconnects and resubscribes everything in self._channels
            log.warning("broker.subscribe_failed", extra={"channel": channel, "err": repr(exc)})
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._sharded:
            name = self._where.pop(channel, None)
            shard = self._shards.get(name) if name else None
            if shard is not None and not shard.broken:
                with contextlib.suppress(*_CLUSTER_ERRORS):
                    await shard.pubsub.sunsubscribe(channel)
            return
        if self._pubsub is None:
            return
        with contextlib.suppress(*DRIVER_ERRORS):
            await self._pubsub.unsubscribe(channel)

    # ---- one server
    def _new_pubsub(self) -> Any:
        return self._redis.pubsub(ignore_subscribe_messages=True)

    async def _read_loop(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
                delay = 0.05
                self.connected.set()
                if msg is None:
                    if not self._channels:
                        await asyncio.sleep(0.05)
                    continue
                if msg["type"] == "message" and self._handler is not None:
                    self._handler(_text(msg["channel"]), msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                self.connected.clear()
                log.warning("broker.reader_reconnect", extra={"err": repr(exc), "delay_s": delay})
                await asyncio.sleep(delay + random.random() * delay)
                delay = min(delay * 2, 2.0)
                await self._reconnect()

    async def _reconnect(self) -> None:
        old = self._pubsub
        self._pubsub = self._new_pubsub()
        with contextlib.suppress(Exception):
            await old.aclose()
        try:
            channels = sorted(self._channels)
            if channels:
                await self._pubsub.subscribe(*channels)
            # the pool's idle command connections died with the old server too: drop them now,
            # or each fails one command (Unavailable) before it reconnects
            with contextlib.suppress(Exception):
                await self._redis.connection_pool.disconnect(inuse_connections=False)
            log.info("broker.resubscribed", extra={"channels": len(channels)})
            self._resubscribed(set(channels))
        except Exception as exc:
            log.warning("broker.resubscribe_failed", extra={"err": repr(exc)})

    # ---- cluster: one connection per shard, re-routed on failover
    async def _subscribe_sharded(self, channel: str) -> None:
        try:
            await self._redis.initialize()  # the slot map (no-op once known)
            node = self._redis.get_node_from_key(channel)
            shard = self._shard(node)
            self._where[channel] = node.name
            await shard.pubsub.ssubscribe(channel)
        except _CLUSTER_ERRORS as exc:
            # the watch task subscribes it on whoever owns its slot once the cluster answers
            self._where.pop(channel, None)
            self._dirty.set()
            log.warning("broker.subscribe_failed", extra={"channel": channel, "err": repr(exc)})
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    def _shard(self, node: Any) -> _Shard:
        shard = self._shards.get(node.name)
        if shard is None or shard.broken:
            import redis.asyncio as aioredis

            pool = aioredis.ConnectionPool(connection_class=node.connection_class, max_connections=4, **node.connection_kwargs)
            shard = self._shards[node.name] = _Shard(node.name, aioredis.Redis(connection_pool=pool))
            shard.task = asyncio.get_running_loop().create_task(self._read_shard(shard))
        return shard

    async def _read_shard(self, shard: _Shard) -> None:
        while not self._closed:
            try:
                if not shard.pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                msg = await shard.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                shard.broken = True
                self.connected.clear()
                log.warning("broker.shard_lost", extra={"node": shard.name, "err": repr(exc)})
                self._dirty.set()
                return
            self.connected.set()
            if msg is None:
                continue
            kind = msg["type"]
            if kind == "smessage":
                if self._handler is not None:
                    self._handler(_text(msg["channel"]), msg["data"])
            elif kind == "sunsubscribe":
                ch = _text(msg["channel"])
                if ch in self._channels and self._where.get(ch) == shard.name:
                    # the server dropped it (its slot moved away): subscribe on the new owner
                    self._where.pop(ch, None)
                    self._dirty.set()

    async def _watch_loop(self) -> None:
        delay = 0.05
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._check_s)
            if self._closed:
                return
            try:
                if not self._dirty.is_set():
                    await self._drop_idle_shards()
                    if not self._channels or await self._routes_current():
                        continue
                await self._sync_shards()
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the cluster is failing over: try again soon
                log.warning("broker.resync_failed", extra={"err": repr(exc), "delay_s": delay})
                self._dirty.set()
                await asyncio.sleep(delay + random.random() * delay)
                delay = min(delay * 2, 1.0)

    async def _routes_current(self) -> bool:
        """Whether every channel is subscribed on its slot's master now.

        Asks CLUSTER SLOTS on one of the broker's own shard connections: refreshing redis-py's
        slot map instead (``nodes_manager.initialize``) would mark every connection of the
        shared client for reconnect, each time.
        """
        raw = None
        for shard in list(self._shards.values()):
            if shard.broken:
                continue
            try:
                raw = await shard.client.execute_command("CLUSTER", "SLOTS")
                break
            except Exception:
                continue
        if raw is None:
            return False
        remap = self._redis.nodes_manager.remap_host_port
        ranges = []
        for row in raw:
            host, port = _text(row[2][0]), int(row[2][1])
            if not host:
                return False  # a node that does not know its address: let redis-py sort it out
            host, port = remap(host, port)
            ranges.append((int(row[0]), int(row[1]), f"{host}:{port}"))
        for ch in self._channels:
            slot = key_slot(ch.encode())
            owner = next((name for lo, hi, name in ranges if lo <= slot <= hi), None)
            if owner is None or self._where.get(ch) != owner or owner not in self._shards:
                return False
        return True

    async def _drop_idle_shards(self) -> None:
        used = set(self._where.values())
        for name, shard in list(self._shards.items()):
            if name not in used and not shard.pubsub.subscribed:
                del self._shards[name]
                await shard.close()

    async def _sync_shards(self) -> None:
        """Refresh the slot map; subscribe every channel not subscribed on its slot's owner."""
        async with self._sync_lock:
            self._dirty.clear()
            await self._redis.nodes_manager.initialize()
            owners = {ch: self._redis.get_node_from_key(ch) for ch in sorted(self._channels)}
            live = {n.name for n in owners.values()}
            for name, shard in list(self._shards.items()):
                if shard.broken or name not in live:
                    del self._shards[name]
                    await shard.close()
            moved: set[str] = set()
            for ch, node in owners.items():
                if self._where.get(ch) == node.name and node.name in self._shards:
                    continue
                old = self._shards.get(self._where.get(ch, ""))
                if old is not None:
                    with contextlib.suppress(*_CLUSTER_ERRORS):
                        await old.pubsub.sunsubscribe(ch)
                shard = self._shard(node)
                await shard.pubsub.ssubscribe(ch)
                self._where[ch] = node.name
                moved.add(ch)
            for ch in set(self._where) - set(owners):
                del self._where[ch]
        if moved:
            log.info("broker.resubscribed", extra={"channels": len(moved), "shards": sorted(self._shards)})
            self._resubscribed(moved)

    # ---- publisher side
    async def publish_room(self, room: str, env: dict[str, Any], *, history: bool = True, now_ms: int) -> int:
        body = pack_internal({k: v for k, v in env.items() if k != "seq"})
        ch = self.keys.room_channel(room)
        try:
            if not history:
                if self._sharded:
                    await self._redis.spublish(ch, b"0:" + body)
                else:
                    await self._redis.publish(ch, b"0:" + body)
                return 0
            seq = await self._publish(
                keys=[self.keys.room_seq(room), self.keys.room_hist(room), ch],
                args=[body, self._size, self._ttl, now_ms, "SPUBLISH" if self._sharded else "PUBLISH"],
            )
        except _UNAVAILABLE as exc:
            raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc
        return int(seq)

    async def publish_node(self, node: str, body: bytes) -> None:
        ch = self.keys.node_inbox(node)
        try:
            if self._sharded:
                await self._redis.spublish(ch, body)
            else:
                await self._redis.publish(ch, body)
        except _UNAVAILABLE as exc:
            raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc

    async def publish_nodes(self, items: Sequence[tuple[str, bytes]]) -> None:
        """One pipeline of PUBLISH (a worker's pushes to many users); on a cluster one
        SPUBLISH each, as :meth:`publish_node`.

        Raises:
            Unavailable: Redis unreachable (some may have been sent).
        """
        if self._sharded or len(items) < 2:
            for node, body in items:
                await self.publish_node(node, body)
            return
        pipe = self._redis.pipeline(transaction=False)
        for node, body in items:
            pipe.publish(self.keys.node_inbox(node), body)
        try:
            await pipe.execute()
        except _UNAVAILABLE as exc:
            raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc

    async def history(self, room: str, since: int | None, *, limit: int = 1000) -> History:
        try:
            if since is None:
                return History([], await self.top_seq(room), True)
            raw = await self._history(
                keys=[self.keys.room_seq(room), self.keys.room_hist(room)], args=[since, limit + 1]
            )
        except _UNAVAILABLE as exc:
            raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc
        top, first = int(raw[0]), int(raw[1])
        events = []
        for i in range(2, len(raw), 2):
            rid = _text(raw[i])
            env = unpack_internal(raw[i + 1])
            env["seq"] = int(rid.split("-", 1)[0])
            events.append(env)
        # recovered: the history still starts at or before since+1, since is not from the
        # future (a counter reset), and the gap fits in one read
        start_ok = (first and first <= since + 1) or (not first and since == top)
        recovered = bool(start_ok) and since <= top and len(events) <= limit
        return History(events[:limit], top, recovered)

    async def top_seq(self, room: str) -> int:
        try:
            v = await self._redis.get(self.keys.room_seq(room))
        except _UNAVAILABLE as exc:
            raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc
        return int(v or 0)

    async def close(self) -> None:
        self._closed = True
        for task in (self._reader, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        for shard in list(self._shards.values()):
            await shard.close()
        self._shards.clear()
