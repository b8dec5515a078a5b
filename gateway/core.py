"""The node object every capability receives: settings, the Redis client its adapters
are built on, broker, hub, metrics, token checks, typed hook lists and the command table.

Capabilities are classes built by ``gateway.wiring`` and served from ``gateway.routes``; this
object holds what every one of them shares, nothing capability-specific.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from livecommerce import clock
from livecommerce.auth import Identity, TokenVerifier
from livecommerce.broker import Broker
from livecommerce.comments import Moderator
from livecommerce.config import Settings
from livecommerce.errors import Unauthorized
from livecommerce.idempotency import IdempotencyStore
from livecommerce.idempotency_redis import RedisIdempotency
from livecommerce.keys import Keys
from livecommerce.notify import Notifier
from livecommerce.presence import Presence
from livecommerce.presence_redis import RedisPresence
from livecommerce.protocol.commands import Command
from livecommerce.protocol.events import envelope, reply

from .hooks import CommandHandler, Hooks
from .hub import Hub
from .metrics import Metrics

log = logging.getLogger("livecommerce.gateway")

BG_PRUNE_AT = 256  # background tasks kept before the finished ones are dropped



class Gateway:
    def __init__(self, settings: Settings, redis: Any, broker: Broker) -> None:
        self.s = settings
        self.redis = redis
        self.broker = broker
        self.keys = Keys(settings.key_prefix)
        self.metrics = Metrics()
        self.presence: Presence = RedisPresence(redis, self.keys)
        self.hub = Hub(settings, broker, self.presence, self.metrics)
        self.notifier = Notifier(redis, broker, self.keys, presence=self.presence)
        # connections per user on this node, counted from authentication to close (not from
        # the hub's attach), so that connections racing through the welcome all count
        self.user_slots: Counter[str] = Counter()
        self.idempotency: IdempotencyStore = RedisIdempotency(redis, self.keys)
        self.moderator = Moderator.from_file(settings.moderation_words)
        self.commands: dict[str, CommandHandler] = {}
        self.hooks = Hooks()
        self.draining = False
        self._tokens = TokenVerifier(settings.secret)
        self._token_cache: dict[str, tuple[int, Identity]] = {}
        self._token_purge_s = 0
        self.bg: list[asyncio.Task[Any]] = []

    @staticmethod
    def now_ms() -> int:
        return clock.now_ms()

    def identify(self, token: str | None) -> Identity:
        """Verify a token (once: the verifier returns its ``exp`` too), with a small cache of
        verified tokens (HS256 verification showed up at 2-3 % of gateway CPU in profiles);
        a cached entry still honours ``exp``."""
        now = int(time.time())
        if token:
            hit = self._token_cache.get(token)
            if hit is not None and hit[0] > now:
                return hit[1]
        ident, exp = self._tokens.verify(token, now_s=now)
        if token:
            if len(self._token_cache) >= 10_000:
                self._token_cache.clear()
            elif len(self._token_cache) >= 256 and now >= self._token_purge_s:
                # churned users' tokens go once stale, so an idle node does not hold them
                self._token_cache = {k: v for k, v in self._token_cache.items() if v[0] > now}
                self._token_purge_s = now + 60
            self._token_cache[token] = (min(exp, now + 300), ident)
        return ident

    def identify_request(self, request: web.Request) -> Identity:
        """Identity of an HTTP request from ``Authorization: Bearer`` (or ``?token=``).

        Raises:
            Unauthorized: no or bad token.
        """
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.query.get("token")
        if not token:
            raise Unauthorized("missing token: send Authorization: Bearer <jwt>")
        return self.identify(token)

    async def publish(self, room: str, t: str, d: dict[str, Any], *, history: bool = True) -> int:
        """Publish a room event through the broker (every node's viewers get it)."""
        now = self.now_ms()
        return await self.broker.publish_room(room, envelope(t, room, d, ts=now), history=history, now_ms=now)

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        async def guard() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway.task_failed", extra={"task": name})

        if len(self.bg) >= BG_PRUNE_AT:  # a task per buy / stock broadcast: forget the finished ones
            self.bg = [t for t in self.bg if not t.done()]
        self.bg.append(asyncio.get_running_loop().create_task(guard(), name=name))

    def reply_for(self, cmd: Command) -> dict[str, Any]:
        return reply("ack", cmd.id, ts=self.now_ms())


#: the node object on its aiohttp application
GW_KEY = web.AppKey("gw", Gateway)
