"""Private events to one user, wherever they are connected.

Gateways keep, through the :class:`~livecommerce.presence.Presence` port, which nodes hold
each user's open connections; a private event is published to each of those nodes' inboxes,
and the node writes it to that user's local connections.
Workers use this to push ``order.paid`` / ``points`` to the buyer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .broker import Broker
from .keys import Keys
from .presence import Presence
from .presence_redis import RedisPresence
from .protocol.codec import pack_internal


class Notifier:
    """Sends private events through the nodes :class:`~livecommerce.presence.Presence`
    knows for a user (``presence`` defaults to the Redis adapter on ``redis``)."""

    def __init__(self, redis: Any, broker: Broker, keys: Keys, *, presence: Presence | None = None) -> None:
        self._broker = broker
        self._presence: Presence = presence if presence is not None else RedisPresence(redis, keys)

    async def to_user(self, user: str, env: dict[str, Any], *, room: str | None = None, skip: str | None = None) -> int:
        """Send ``env`` to every connection of ``user`` (only those in ``room`` if given;
        ``skip``: not to the connection ``"<node>/<conn id>"``, the one that made the change).
        Returns the number of nodes it was sent to (0: the user is offline)."""
        nodes = (await self._presence.user_nodes([user]))[user]
        msg: dict[str, Any] = {"kind": "user", "user": user, "room": room, "env": env}
        if skip is not None:
            msg["skip"] = skip
        body = pack_internal(msg)
        for node in nodes:
            await self._broker.publish_node(node, body)
        return len(nodes)

    async def to_users(self, items: Sequence[tuple[str, dict[str, Any]]]) -> int:
        """:meth:`to_user` for each ``(user, env)`` of a batch: one presence read for all the
        users, then one ``publish_nodes`` for every message to a node that holds one of them.
        Returns the number of messages sent (offline users get none).

        Raises:
            Unavailable: Redis unreachable (some messages may have been sent).
        """
        if not items:
            return 0
        where = await self._presence.user_nodes(sorted({u for u, _ in items}))
        out = [(node, pack_internal({"kind": "user", "user": user, "room": None, "env": env}))
               for user, env in items if where.get(user) for node in where[user]]
        await self._broker.publish_nodes(out)
        return len(out)
