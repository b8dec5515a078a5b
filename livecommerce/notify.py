"""Private events to one user, wherever they are connected.

Gateways keep ``lc:{user:U}:nodes`` (node -> open connections); a private event is published
to each of those nodes' inboxes, and the node writes it to that user's local connections.
Workers use this to push ``order.paid`` / ``points`` to the buyer.
"""

from __future__ import annotations

from typing import Any

from .broker import Broker
from .keys import Keys
from .protocol.codec import pack_internal
from .redis_conn import guarded


class Notifier:
    def __init__(self, redis: Any, broker: Broker, keys: Keys) -> None:
        self._redis = redis
        self._broker = broker
        self._keys = keys

    async def user_connected(self, user: str, node: str, delta: int) -> None:
        key = self._keys.user_nodes(user)
        async with guarded():
            # one round trip on the connect path (a rush connects thousands at once)
            pipe = self._redis.pipeline(transaction=False)
            pipe.hincrby(key, node, delta)
            pipe.expire(key, 24 * 3600)
            n, _ = await pipe.execute()
            if n <= 0:
                await self._redis.hdel(key, node)

    async def to_user(self, user: str, env: dict[str, Any], *, room: str | None = None) -> int:
        """Send ``env`` to every connection of ``user`` (only those in ``room`` if given).
        Returns the number of nodes it was sent to (0: the user is offline)."""
        async with guarded():
            nodes = await self._redis.hgetall(self._keys.user_nodes(user))
        body = pack_internal({"kind": "user", "user": user, "room": room, "env": env})
        sent = 0
        for node, count in nodes.items():
            if int(count) > 0:
                await self._broker.publish_node(node.decode() if isinstance(node, bytes) else node, body)
                sent += 1
        return sent
