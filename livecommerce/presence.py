"""The ``Presence`` port: who is online, on which gateway node; and its in-memory twin.

Two facts are shared by every gateway node (centrifuge's ``presence.go``, in two parts):

* **Room online counts.** Each node reports, about once a second, how many connections it
  holds in each of its rooms. A room's count is the sum over the nodes whose report is at
  most :data:`FRESH_MS` old, so a node that died stops counting within seconds.
* **User nodes.** For each user, the nodes holding their open connections and how many:
  a private event (``Notifier.to_user``, pushes) goes to the inbox of each of those nodes.

Contract (both implementations, checked by ``tests/test_presence_contract.py``):

* ``report(node, counts, now_ms)`` records ``node``'s count for each room of ``counts`` and
  returns each of those rooms' totals over fresh reports, this one included; reports found
  stale are forgotten. One round trip, whatever the number of rooms.
* ``forget(node, room)`` takes ``node`` out of ``room`` at once (its last viewer left).
* ``online(rooms, now_ms)`` reads the totals of ``rooms`` (0 for a room nobody reported).
* ``user_connected(user, node, delta)`` adds ``delta`` (+1 on connect, -1 on close) to the
  user's connections on ``node``; a node at zero (or below) is no longer one of theirs.
* ``users_connected(node, deltas)`` is ``user_connected`` for many users at once, in one
  round trip (a join storm adds thousands of viewers a second: the gateway sums the
  deltas of its connections and writes them as they come, one batch at a time).
* ``user_nodes(users)`` maps each of ``users`` to the nodes holding at least one of their
  connections (an empty list: offline).
* Engine errors surface as :class:`~livecommerce.errors.Unavailable`.

:func:`tally` is the counting rule; the Redis adapter is ``presence_redis.RedisPresence``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

#: a node's report counts for this long (ms); nodes report about once a second, so a node
#: killed without a drain stops counting within 3 s (its viewers, reconnected elsewhere, are
#: counted twice until then); a draining node withdraws its reports at once
#: (``Hub.withdraw_presence``). Lower would drop a live node whose loop a storm delays.
FRESH_MS = 3000


class Presence(Protocol):
    async def report(self, node: str, counts: Mapping[str, int], *, now_ms: int) -> dict[str, int]:
        """Record ``node``'s connections per room; return those rooms' totals over nodes."""
        ...

    async def forget(self, node: str, room: str) -> None: ...

    async def online(self, rooms: Sequence[str], *, now_ms: int) -> dict[str, int]: ...

    async def user_connected(self, user: str, node: str, delta: int) -> None: ...

    async def users_connected(self, node: str, deltas: Mapping[str, int]) -> None: ...

    async def user_nodes(self, users: Sequence[str]) -> dict[str, list[str]]: ...


def tally(reports: Mapping[str, tuple[int, int]], now_ms: int, *, fresh_ms: int = FRESH_MS) -> tuple[int, list[str]]:
    """A room's online count from its nodes' reports (node -> ``(count, reported_ms)``):
    ``(total over fresh reports, nodes whose report is stale)``."""
    total = 0
    stale: list[str] = []
    for node, (count, ts) in reports.items():
        if now_ms - ts > fresh_ms:
            stale.append(node)
        else:
            total += count
    return total, stale


class MemoryPresence:
    """In-process twin of :class:`~livecommerce.presence_redis.RedisPresence`.

    Several objects built with the same ``shared`` dict see each other's reports, so two
    gateway nodes can be simulated in one process.
    """

    def __init__(self, shared: dict[str, Any] | None = None) -> None:
        self._shared = shared if shared is not None else {}
        self._rooms: dict[str, dict[str, tuple[int, int]]] = self._shared.setdefault("rooms", {})
        self._users: dict[str, dict[str, int]] = self._shared.setdefault("users", {})

    async def report(self, node: str, counts: Mapping[str, int], *, now_ms: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for room, count in counts.items():
            reports = self._rooms.setdefault(room, {})
            reports[node] = (count, now_ms)
            total, stale = tally(reports, now_ms)
            for n in stale:
                del reports[n]
            out[room] = total
        return out

    async def forget(self, node: str, room: str) -> None:
        reports = self._rooms.get(room)
        if reports is not None:
            reports.pop(node, None)
            if not reports:
                del self._rooms[room]

    async def online(self, rooms: Sequence[str], *, now_ms: int) -> dict[str, int]:
        return {room: tally(self._rooms.get(room, {}), now_ms)[0] for room in rooms}

    async def user_connected(self, user: str, node: str, delta: int) -> None:
        nodes = self._users.setdefault(user, {})
        n = nodes[node] = nodes.get(node, 0) + delta
        if n <= 0:
            del nodes[node]
            if not nodes:
                del self._users[user]

    async def users_connected(self, node: str, deltas: Mapping[str, int]) -> None:
        for user, delta in deltas.items():
            await self.user_connected(user, node, delta)

    async def user_nodes(self, users: Sequence[str]) -> dict[str, list[str]]:
        return {u: [n for n, c in self._users.get(u, {}).items() if c > 0] for u in users}
