"""Gap repair: a room's events this node missed on pub/sub, read back from the history.

Pub/sub delivery is at most once (a failover, a dropped connection, a resubscribe), but
every room event is also in the room's capped history with its seq. The hub notices a gap
when a seq arrives more than one past the room's last (or when the broker resubscribed its
channel) and hands the room here: the events after the room's last seq are read from the
history and delivered in seq order, followed by those that arrived meanwhile (they wait in
:attr:`GapRepair.waiting`, in arrival order). While Redis is unreachable the read is retried
every 0.5 s for about 10 s; after that the gap is left and clients resync with ``since=``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livecommerce.broker import Broker
from livecommerce.keys import Keys

if TYPE_CHECKING:
    from .hub import Room

log = logging.getLogger("livecommerce.gateway.gaps")

Deliver = Callable[["Room", int, dict[str, Any]], None]


class GapRepair:
    """Reads missed room events back from the history and delivers them in order."""

    def __init__(self, broker: Broker, keys: Keys, rooms: dict[str, Room], deliver: Deliver, *, history_size: int) -> None:
        self._broker = broker
        self._keys = keys
        self._rooms = rooms  # the hub's rooms: a room dropped meanwhile is not delivered to
        self._deliver = deliver
        self._history_size = history_size
        #: rooms under repair -> the ``(seq, env)`` that arrived meanwhile, in arrival order
        self.waiting: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def on_resubscribed(self, channels: set[str]) -> None:
        """The broker subscribed ``channels`` again: what was published meanwhile is lost."""
        for room in list(self._rooms.values()):
            if room.last_seq and room.id not in self.waiting and self._keys.room_channel(room.id) in channels:
                self.start(room, [])

    def start(self, room: Room, waiting: list[tuple[int, dict[str, Any]]]) -> None:
        """Repair ``room`` from its last seq; ``waiting`` holds what arrived past the gap."""
        self.waiting[room.id] = waiting
        task = asyncio.get_running_loop().create_task(self._repair(room))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass

    async def _repair(self, room: Room) -> None:
        """Deliver, in seq order, the events after ``room.last_seq`` that this node missed
        (from the history), then those that arrived meanwhile; Redis being unreachable is
        retried for about 10 s, after which the gap is left (clients resync with since=)."""
        events: list[tuple[int, dict[str, Any]]] = []
        try:
            for attempt in range(20):
                try:
                    hist = await self._broker.history(room.id, room.last_seq, limit=self._history_size)
                except Exception as exc:
                    if attempt == 19 or len(self.waiting.get(room.id, ())) > 10 * self._history_size:
                        log.warning("hub.gap_not_repaired", extra={"room": room.id, "err": repr(exc)})
                        break
                    await asyncio.sleep(0.5)
                    continue
                events = [(e["seq"], e) for e in hist.events]
                if not hist.recovered:
                    log.warning("hub.gap_beyond_history", extra={"room": room.id, "since": room.last_seq})
                break
        finally:
            waiting = self.waiting.pop(room.id, [])
        if self._rooms.get(room.id) is not room:
            return
        repaired = 0
        for seq, env in sorted(events + waiting, key=lambda p: p[0]):
            if seq > room.last_seq:
                repaired += seq <= (events[-1][0] if events else 0)
                self._deliver(room, seq, env)
        log.info("hub.gap_repaired", extra={"room": room.id, "events": repaired, "upto": room.last_seq})
