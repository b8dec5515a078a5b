"""The node's snapshot of each room it serves: what a joiner's ``welcome`` shows, from memory.

A join storm (thousands of viewers connecting to one room within seconds) used to cost
each viewer several sequential Redis round trips (the room's seq, its meta, pin, likes,
gift board, lotteries, coupon drops). Now the first joiner of a room on this node loads
the room's :class:`~livecommerce.room_snapshot.RoomSnapshot` (one round trip; a second one
when the room lists lotteries or drops, see ``room_snapshot_redis``), every joiner after it
is answered from memory, and the snapshot is kept current by what the node hears anyway:

* the room's own events (hub observers of
  :data:`~livecommerce.room_snapshot.SNAPSHOT_EVENTS`), applied in seq order; an event at or
  below the snapshot's seq is already in it; ``room.live``/``room.ended`` reload it;
* the node's own ``likes`` and ``leaderboard`` pushes (``Hub.observe_local``);
* a change made through this node (pin, drop, lottery, show steps: :meth:`changed`) marks
  the snapshot stale before the change is answered, so the next joiner on this node reads
  it again: read-your-writes on one node, whatever the pub/sub delay;
* a resubscribed channel (pub/sub lost messages meanwhile) marks its room stale, and while
  the node's pub/sub link is down no snapshot is served at all (each joiner reads Redis);
* about once a second (:meth:`on_second`), one pipelined read of what no event carries:
  the meta of rooms not created yet, the counts of listed coupon drops; and a full reload
  in the background of snapshots older than :data:`MAX_AGE_S` (a process that crashed
  between a change and its broadcast).

Other capabilities answer from a served snapshot too (the room gate: is the show live, who
is its host; the lottery capability: does the room have open lotteries at all), so a comment
or gift in a served room reads nothing. They do not ask for it: they register a
``listeners`` callback, told ``(room, snapshot)`` when a room's snapshot becomes current and
``(room, None)`` the moment it may be behind (stale, reloading after ``room.live``/``ended``,
resubscribed, dropped), and keep the reference meanwhile.

A stale snapshot is never served: joiners wait for its reload (one per room at a time,
shared). While a reload is out, the room's events are kept and applied on top of what it
read. A room the hub drops (no viewer for a while, unsubscribed) drops its snapshot.

Contract for a joiner on node B after a change made through node A: once B has the room's
event for the change (its viewers have it), B's joiners see the change, and their
``welcome.seq`` is the seq the shown state is at (later events follow on the channel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from livecommerce import clock
from livecommerce.auth import Identity
from livecommerce.keys import Keys
from livecommerce.room_snapshot import (
    RoomSnapshot,
    apply,
    apply_local,
    claimed,
    live_coupons,
    needs_refresh,
    open_lotteries,
    open_redpackets,
    show,
)
from livecommerce.room_snapshot_redis import RedisRoomSnapshots

log = logging.getLogger("livecommerce.gateway.snapshots")

#: a snapshot older than this is read again in the background (served meanwhile)
MAX_AGE_S = 10.0
#: coupon drops a welcome lists (the first by expiry that have coupons left)
WELCOME_DROPS = 5


class ServedRooms:
    """A capability's copy of this node's current room snapshots (a ``listeners`` entry of
    :class:`RoomSnapshots`) and the rooms where it knows it has nothing to do: ``quiet`` holds
    each served room whose snapshot ``busy`` finds idle (no lottery, no red packet), for a
    :class:`~gateway.hooks.RoomCommentHook`. A room not served is never quiet."""

    def __init__(self, busy: Callable[[RoomSnapshot], bool]) -> None:
        self.busy = busy
        self.snaps: dict[str, RoomSnapshot] = {}
        self.quiet: set[str] = set()

    def serving(self, room: str, snap: RoomSnapshot | None) -> None:
        """Snapshot listener: the room's current snapshot, or None once it may be behind."""
        if snap is None:
            self.snaps.pop(room, None)
            self.quiet.discard(room)
        else:
            self.snaps[room] = snap
            self._judge(room, snap)

    def heard(self, room: str, *, started: bool) -> None:
        """The room's event about the capability was heard (after the snapshots applied it):
        something ``started`` takes the room off ``quiet`` at once; an end judges it again."""
        snap = self.snaps.get(room)
        if started or snap is None:
            self.quiet.discard(room)
        else:
            self._judge(room, snap)

    def _judge(self, room: str, snap: RoomSnapshot) -> None:
        if self.busy(snap):
            self.quiet.discard(room)
        else:
            self.quiet.add(room)


class _Entry:
    __slots__ = ("buffered", "changes", "loaded_at", "loading", "snap", "stale")

    def __init__(self) -> None:
        self.snap: RoomSnapshot | None = None
        self.stale = True  # nothing servable yet
        self.loading: asyncio.Future[RoomSnapshot] | None = None
        self.buffered: list[tuple[bool, dict[str, Any]]] = []  # (local push?, env) during a load
        self.changes = 0  # changes made through this node (a load that overlapped one reads again)
        self.loaded_at = 0.0


class RoomSnapshots:
    """Node-local room snapshots (module docstring); ``welcome`` is a welcome hook."""

    def __init__(self, store: RedisRoomSnapshots, keys: Keys, *, pending_likes: Callable[[str], int] | None = None,
                 hearing: Callable[[], bool] | None = None, max_age_s: float = MAX_AGE_S) -> None:
        self.store = store
        self.keys = keys
        self.pending_likes = pending_likes  # this node's likes not yet added to Redis
        # whether the node's pub/sub link is up: while it is down no event arrives, so no
        # snapshot is served (every joiner reads Redis, and hears "unavailable" if it is down)
        self.hearing = hearing
        self.max_age_s = max_age_s
        self._rooms: dict[str, _Entry] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshing = False
        #: told (room, snapshot) when a room's snapshot becomes current, (room, None) when not
        self.listeners: list[Callable[[str, RoomSnapshot | None], None]] = []
        self.loads = 0  # snapshots read from Redis (tests, metrics)

    # ---- reading
    async def get(self, room: str) -> RoomSnapshot:
        """The room's current snapshot (memory, or one shared load).

        Raises:
            Unavailable: Redis unreachable while the snapshot had to be read.
        """
        e = self._rooms.get(room)
        if self.hearing is not None and not self.hearing():
            if e is not None:
                e.stale = True  # events are being lost: read again once the link is back
                e.changes += 1
                self._serve(room, None)
            return await self.store.load(room, now_ms=clock.now_ms())
        if e is not None and not e.stale and e.snap is not None:
            if e.loading is None and time.monotonic() - e.loaded_at > self.max_age_s:
                self._start_load(room, e)  # in the background: this one is served
            return e.snap
        if e is None:
            e = self._rooms[room] = _Entry()
        fut = e.loading if e.loading is not None else self._start_load(room, e)
        return await asyncio.shield(fut)

    async def seq(self, room: str) -> int:
        """The seq the room's snapshot is at (loading it first when needed)."""
        return (await self.get(room)).seq

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        """Welcome hook: the room's likes, gift board, open lotteries, coupon drops and red packets.
        (``show`` and ``pin`` come from the rooms capability's hook, from the same snapshot.)"""
        snap = await self.get(room)
        now = clock.now_ms()
        likes = snap.likes + (self.pending_likes(room) if self.pending_likes is not None else 0)
        return {
            "likes": likes,
            "lotteries": open_lotteries(snap, now),
            "coupons": live_coupons(snap, now, WELCOME_DROPS),
            "redpackets": open_redpackets(snap, now),
            "leaderboard": snap.leaderboard,
        }

    async def show_and_pin(self, room: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The room as shown (None: never created) and its pin."""
        snap = await self.get(room)
        return show(snap), snap.pin

    def _serve(self, room: str, snap: RoomSnapshot | None) -> None:
        for fn in self.listeners:
            fn(room, snap)

    # ---- loading
    def _start_load(self, room: str, e: _Entry) -> asyncio.Future[RoomSnapshot]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[RoomSnapshot] = loop.create_future()
        e.loading = fut
        e.buffered = []
        task = loop.create_task(self._load(room, e, fut), name=f"snapshot.load:{room}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fut

    async def _load(self, room: str, e: _Entry, fut: asyncio.Future[RoomSnapshot]) -> None:
        try:
            for _ in range(3):  # a change meanwhile asks again (bounded: then served as read)
                started, changes = time.monotonic(), e.changes
                snap = await self.store.load(room, now_ms=clock.now_ms())
                self.loads += 1
                buffered, e.buffered = e.buffered, []
                again = e.changes != changes
                for local, env in sorted(buffered, key=lambda p: (p[0], p[1].get("seq") or 0)):
                    if local:
                        apply_local(snap, env)
                    elif apply(snap, env) == "reload":
                        again = True
                if not again:
                    break
        except BaseException as exc:
            e.loading = None
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters re-raise it
            if not isinstance(exc, Exception):
                raise
            return
        e.loading = None
        if self._rooms.get(room) is e:
            e.snap, e.stale, e.loaded_at = snap, again, started
            self._serve(room, None if again else snap)
        if not fut.done():
            fut.set_result(snap)

    # ---- keeping current
    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer of the snapshot events (room events, with seq, in seq order)."""
        e = self._rooms.get(env.get("room") or "")
        if e is None:
            return
        if e.loading is not None:
            e.buffered.append((False, env))
        if e.snap is not None and not e.stale and apply(e.snap, env) == "reload":
            e.stale = True
            self._serve(env["room"], None)

    def observe_local(self, env: dict[str, Any]) -> None:
        """Hub local observer: the node's ``likes``/``leaderboard`` push to its viewers."""
        e = self._rooms.get(env.get("room") or "")
        if e is None:
            return
        if e.loading is not None:
            e.buffered.append((True, env))
        if e.snap is not None:
            apply_local(e.snap, env)

    def changed(self, room: str) -> None:
        """A change to the room's state was made through this node (before it is
        answered): the next joiner here reads the room again."""
        e = self._rooms.get(room)
        if e is not None:
            e.stale = True
            e.changes += 1  # a load already out may have read before the change
            self._serve(room, None)

    def coupon_claimed(self, drop_id: str, remaining: int) -> None:
        """A claim on this node answered ``remaining`` (claims are not broadcast)."""
        for e in self._rooms.values():
            if e.snap is not None and drop_id in e.snap.coupons:
                claimed(e.snap, drop_id, remaining)

    def on_resubscribed(self, channels: set[str]) -> None:
        """Broker listener: those channels were subscribed again; events may be lost."""
        for room in list(self._rooms):
            if self.keys.room_channel(room) in channels:
                self.changed(room)

    def forget(self, room: str) -> None:
        """The hub dropped the room (unsubscribed): its snapshot would go stale."""
        if self._rooms.pop(room, None) is not None:
            self._serve(room, None)

    async def on_second(self) -> None:
        """Re-read what no event carries (module docstring), one round trip for every room;
        reload in the background the snapshots older than ``max_age_s``."""
        now = time.monotonic()
        for room, e in list(self._rooms.items()):  # the bound on an event lost unnoticed
            if e.snap is not None and not e.stale and e.loading is None and now - e.loaded_at > self.max_age_s:
                self._start_load(room, e)  # in the background: served meanwhile
        if self._refreshing:
            return
        todo = {room: (e, e.snap, e.snap.version) for room, e in self._rooms.items()
                if e.snap is not None and not e.stale and e.loading is None and needs_refresh(e.snap)}
        if not todo:
            return
        self._refreshing = True
        try:
            got = await self.store.refresh([snap for _, snap, _ in todo.values()])
        finally:
            self._refreshing = False
        for room, (meta, counts) in got.items():
            e, snap, version = todo[room]
            if self._rooms.get(room) is not e or e.snap is not snap or snap.version != version or e.stale:
                continue  # changed meanwhile: the next second reads again
            if snap.meta is None and meta is not None:
                e.stale = True  # created since: read the whole room again
                self._serve(room, None)
                continue
            for did, (remaining, claimed_n, used) in counts.items():
                entry = snap.coupons.get(did)
                if entry is not None and (entry["remaining"], entry["claimed"], entry["used"]) != (remaining, claimed_n, used):
                    snap.coupons[did] = {**entry, "remaining": remaining, "claimed": claimed_n, "used": used}
                    snap.version += 1

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
