"""Redis implementation of the :class:`~livecommerce.broker.Broker` port.

One server: PUBLISH/SUBSCRIBE. Redis Cluster: sharded SPUBLISH/SSUBSCRIBE, with the room's
channel, seq counter and history stream in the room's slot (``{room:ID}``), so the publish
script touches one slot only.

The subscriber is one pub/sub connection per node, read by one task. When the connection
drops (Redis restart, failover) the task reconnects with backoff and resubscribes every
channel; clients recover what they missed with ``since=``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from importlib.resources import files
from typing import Any

from .broker import Handler, History
from .errors import Unavailable
from .keys import Keys
from .protocol.codec import pack_internal, unpack_internal
from .redis_conn import DRIVER_ERRORS, is_cluster_url

log = logging.getLogger("livecommerce.broker")

PUBLISH = (files("livecommerce") / "broker_publish.lua").read_text()
HISTORY = (files("livecommerce") / "broker_history.lua").read_text()


class RedisBroker:
    def __init__(
        self,
        redis: Any,
        keys: Keys,
        *,
        sharded: bool | None = None,
        history_size: int = 1000,
        history_ttl_s: int = 3600,
    ) -> None:
        self.keys = keys
        self._redis = redis
        self._sharded = sharded if sharded is not None else _is_cluster_client(redis)
        self._publish = redis.register_script(PUBLISH)
        self._history = redis.register_script(HISTORY)
        self._size = history_size
        self._ttl = history_ttl_s
        self._handler: Handler | None = None
        self._channels: set[str] = set()
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.reconnects = 0
        self.connected = asyncio.Event()

    @classmethod
    def from_url(cls, url: str, keys: Keys, **kw: Any) -> RedisBroker:
        from .redis_conn import connect

        return cls(connect(url), keys, sharded=is_cluster_url(url), **kw)

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    # ---- subscriber side
    def _new_pubsub(self) -> Any:
        return self._redis.pubsub(ignore_subscribe_messages=True)

    async def _sub(self, channels: list[str]) -> None:
        if not channels:
            return
        if self._sharded:
            await self._pubsub.ssubscribe(*channels)
        else:
            await self._pubsub.subscribe(*channels)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._pubsub is None:
            self._pubsub = self._new_pubsub()
        try:
            await self._sub([channel])
        except DRIVER_ERRORS as exc:
            # the reader task reconnects and resubscribes everything in self._channels
            log.warning("broker.subscribe_failed", extra={"channel": channel, "err": repr(exc)})
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is None:
            return
        try:
            if self._sharded:
                await self._pubsub.sunsubscribe(channel)
            else:
                await self._pubsub.unsubscribe(channel)
        except DRIVER_ERRORS:
            pass

    async def _read_loop(self) -> None:
        delay = 0.05
        while not self._closed:
            try:
                if self._sharded:
                    msg = await self._pubsub.get_sharded_message(timeout=1.0)
                else:
                    msg = await self._pubsub.get_message(timeout=1.0)
                delay = 0.05
                self.connected.set()
                if msg is None:
                    if not self._channels:
                        await asyncio.sleep(0.05)
                    continue
                if msg["type"] in ("message", "smessage") and self._handler is not None:
                    ch = msg["channel"]
                    self._handler(ch.decode() if isinstance(ch, bytes) else ch, msg["data"])
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
        try:
            await old.aclose()
        except Exception:
            pass
        try:
            await self._sub(sorted(self._channels))
            self.reconnects += 1
            log.info("broker.resubscribed", extra={"channels": len(self._channels)})
        except Exception as exc:
            log.warning("broker.resubscribe_failed", extra={"err": repr(exc)})

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
        except DRIVER_ERRORS as exc:
            raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc
        return int(seq)

    async def publish_node(self, node: str, body: bytes) -> None:
        ch = self.keys.node_inbox(node)
        try:
            if self._sharded:
                await self._redis.spublish(ch, body)
            else:
                await self._redis.publish(ch, body)
        except DRIVER_ERRORS as exc:
            raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc

    async def history(self, room: str, since: int | None, *, limit: int = 1000) -> History:
        try:
            if since is None:
                return History([], await self.top_seq(room), True)
            raw = await self._history(
                keys=[self.keys.room_seq(room), self.keys.room_hist(room)], args=[since, limit + 1]
            )
        except DRIVER_ERRORS as exc:
            raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc
        top, first = int(raw[0]), int(raw[1])
        events = []
        for i in range(2, len(raw), 2):
            rid = raw[i].decode() if isinstance(raw[i], bytes) else raw[i]
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
        except DRIVER_ERRORS as exc:
            raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc
        return int(v or 0)

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except Exception:
                pass


def _is_cluster_client(redis: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(redis, RedisCluster)
