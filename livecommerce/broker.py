"""The ``Broker`` port: room broadcast, room history, node inboxes; and its in-memory twin.

Contract (both implementations, checked by ``tests/test_broker_contract.py``):

* ``publish_room`` assigns the next ``seq`` of the room, appends the event to the room's
  capped history and broadcasts it to every subscriber of the room's channel, atomically
  (history order == seq order == broadcast order per room). Seqs increase strictly per room
  and survive a restart of the broker as long as the wall clock moves forward (the first
  seq of a room is seeded from the clock), so a reconnecting client's ``since`` is never
  confused with a new event.
* ``publish_room(..., history=False)`` broadcasts without seq or history (counters).
* Delivery to subscribers is at most once; recovery is the history's job.
* ``history(room, since)`` returns the events with seq > since, in order, and whether the
  history still holds everything after ``since`` (``recovered``).
* Messages come back through ``handler(channel, data)``, where data is
  ``b"<seq>:" + body`` (seq 0 for events without history) for room channels and the raw
  body for node inboxes; the body is :func:`~livecommerce.protocol.codec.pack_internal` of
  the envelope without its seq.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .keys import Keys
from .protocol.codec import pack_internal, unpack_internal

Handler = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class History:
    events: list[dict[str, Any]]  # envelopes with seq, in seq order
    top: int  # the room's latest seq
    recovered: bool


class Broker(Protocol):
    keys: Keys

    def set_handler(self, handler: Handler) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish_room(
        self, room: str, env: dict[str, Any], *, history: bool = True, now_ms: int
    ) -> int:
        """Returns the seq given to the event (0 when history=False)."""
        ...

    async def publish_node(self, node: str, body: bytes) -> None: ...

    async def publish_nodes(self, items: Sequence[tuple[str, bytes]]) -> None:
        """``publish_node`` for each ``(node, body)``, in order, in as few round trips as the
        backend allows (Redis: one pipeline; on a cluster, one call each)."""
        ...

    async def history(self, room: str, since: int | None, *, limit: int = 1000) -> History: ...

    async def top_seq(self, room: str) -> int: ...

    async def close(self) -> None: ...


def split_room_message(data: bytes) -> tuple[int, dict[str, Any]]:
    """Inverse of the room message framing: ``(seq, envelope with seq set)``."""
    head, _, body = data.partition(b":")
    seq = int(head)
    env = unpack_internal(body)
    if seq:
        env["seq"] = seq
    return seq, env


class MemoryBroker:
    """In-process twin of the Redis broker for unit tests and single-process runs.

    Several ``MemoryBroker`` objects built with the same ``hub`` dict share channels, so two
    gateway nodes can be simulated in one process.
    """

    def __init__(self, keys: Keys | None = None, *, history_size: int = 1000, shared: dict[str, Any] | None = None) -> None:
        self.keys = keys or Keys()
        self._handler: Handler | None = None
        self._shared: dict[str, Any] = shared if shared is not None else {"subs": defaultdict(set), "hist": defaultdict(list), "seq": {}}
        self._size = history_size
        self._mine: set[str] = set()

    def set_handler(self, handler: Handler) -> None:
        self._handler = handler

    async def subscribe(self, channel: str) -> None:
        self._shared["subs"][channel].add(self)
        self._mine.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._shared["subs"][channel].discard(self)
        self._mine.discard(channel)

    def _deliver(self, channel: str, data: bytes) -> None:
        for b in list(self._shared["subs"][channel]):
            if b._handler is not None:
                asyncio.get_running_loop().call_soon(b._handler, channel, data)

    async def publish_room(self, room: str, env: dict[str, Any], *, history: bool = True, now_ms: int) -> int:
        body = pack_internal({k: v for k, v in env.items() if k != "seq"})
        seq = 0
        if history:
            seqs = self._shared["seq"]
            seq = seqs.get(room, now_ms * 1000) + 1
            seqs[room] = seq
            hist = self._shared["hist"][room]
            hist.append((seq, body))
            del hist[: max(0, len(hist) - self._size)]
        self._deliver(self.keys.room_channel(room), b"%d:%s" % (seq, body))
        return seq

    async def publish_node(self, node: str, body: bytes) -> None:
        self._deliver(self.keys.node_inbox(node), body)

    async def publish_nodes(self, items: Sequence[tuple[str, bytes]]) -> None:
        for node, body in items:
            self._deliver(self.keys.node_inbox(node), body)

    async def history(self, room: str, since: int | None, *, limit: int = 1000) -> History:
        hist = self._shared["hist"][room]
        top = self._shared["seq"].get(room, 0)
        if since is None:
            return History([], top, True)
        first = hist[0][0] if hist else top + 1
        recovered = first <= since + 1 and since <= top
        out = []
        for seq, body in hist:
            if seq > since:
                env = unpack_internal(body)
                env["seq"] = seq
                out.append(env)
        return History(out[-limit:], top, recovered and len(out) <= limit)

    async def top_seq(self, room: str) -> int:
        return int(self._shared["seq"].get(room, 0))

    async def close(self) -> None:
        for ch in list(self._mine):
            await self.unsubscribe(ch)
