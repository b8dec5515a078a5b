"""Per-room fan-out on one gateway node.

* One broker subscription per room with local viewers (subscribe on the first, unsubscribe
  a short linger after the last leaves) plus the node's inbox.
* A room event is decoded once; CRITICAL events go out at once (after flushing what is
  pending, so order holds); BATCHED ones are coalesced into one ``batch`` frame per room:
  at once when the room is quiet, at most one per tick when it is busy (``LC_FLUSH=adaptive``;
  ``tick`` flushes every room on the node's fixed tick). Each frame is encoded once per format in use and the same bytes are written to
  every local connection; the slow-consumer policy (shed, close 1013) is ``Conn.write``'s
  answer plus the grace check of each tick.
* Rules and neighbours kept elsewhere: which comments a hot room shows is the pure
  :func:`livecommerce.hot_room.apply_budget`; missed events are read back by
  :class:`gateway.gaps.GapRepair`; online counts go through the
  :class:`livecommerce.presence.Presence` port (reported about once a second, pushed to
  local viewers when they change).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from livecommerce import clock
from livecommerce.broker import Broker, split_room_message
from livecommerce.config import Settings
from livecommerce.hot_room import FRESH, apply_budget
from livecommerce.keys import Keys
from livecommerce.presence import Presence
from livecommerce.protocol.codec import FORMATS, Format, encode_batch, encode_bytes, unpack_internal
from livecommerce.protocol.events import Priority, envelope, priority_of

from .conn import Conn
from .gaps import GapRepair
from .metrics import Metrics
from .wsframe import OP_BINARY, OP_TEXT, PING_FRAME, ws_frame

Observer = Callable[[dict[str, Any]], None]

log = logging.getLogger("livecommerce.gateway.hub")

OPCODES = {"msgpack": OP_BINARY, "json": OP_TEXT}
#: a user's connection is written to presence this long after it opened or closed, with
#: every other one of that window (one round trip per window, not per connection)
PRESENCE_WINDOW_S = 0.01


#: viewers written per slice of a room's frame before the event loop gets a turn (about
#: 2 ms of ``send()`` calls on a loopback-bound 2-core VM: ~10 µs each, mostly the kernel's)
WRITE_SLICE = 200


class _Write:
    """A room's frame(s) being written slice by slice: per format, the frame and the viewers
    it goes to (the room's viewers when the write began), the last format first."""

    __slots__ = ("critical", "handle", "jobs", "pos")

    def __init__(self, jobs: list[tuple[bytes, list[Conn]]], critical: bool) -> None:
        self.jobs = jobs
        self.critical = critical
        self.pos = 0  # viewers of jobs[-1] already written
        self.handle: asyncio.Handle | None = None


class Room:
    __slots__ = ("allowance", "conns", "flush_at", "id", "last_flush", "last_seq", "linger", "online", "pending", "recent",
                 "recovering", "subscribed", "writing")

    def __init__(self, room_id: str, ring: int) -> None:
        self.id = room_id
        self.conns: dict[Format, set[Conn]] = {f: set() for f in FORMATS}
        self.pending: list[dict[str, Any]] = []
        self.recent: deque[dict[str, Any]] = deque(maxlen=ring)  # flushed events with seq
        self.last_seq = 0
        self.online = -1
        self.linger: asyncio.TimerHandle | None = None
        self.subscribed: asyncio.Future[None] | None = None
        self.allowance = FRESH  # comment budget tokens (hot rooms: livecommerce.hot_room)
        self.recovering: set[Conn] = set()  # joined with skip_seq set: filtered until past it
        self.last_flush = 0.0  # loop time of the last batch written (adaptive flush)
        self.flush_at: asyncio.Handle | None = None  # the scheduled flush, if any
        self.writing: _Write | None = None  # a frame still being written, slice by slice

    def count(self) -> int:
        return sum(len(s) for s in self.conns.values())

    def all(self) -> list[Conn]:
        return [c for s in self.conns.values() for c in s]


class Hub:
    def __init__(self, settings: Settings, broker: Broker, presence: Presence, metrics: Metrics) -> None:
        self.s = settings
        self.keys = Keys(settings.key_prefix)
        self.broker = broker
        self.presence = presence
        self.metrics = metrics
        self.node = settings.node_id
        self.rooms: dict[str, Room] = {}
        self.by_user: dict[str, set[Conn]] = {}
        self.by_ip: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._behind: set[Conn] = set()  # connections over the soft buffer mark
        self._aux: set[asyncio.Task[Any]] = set()  # unsubscribe/cleanup tasks of dropped rooms
        self.reporting = True  # False once the node drains: its viewers count on other nodes
        self._soft = settings.send_buffer_bytes
        self._hard = settings.send_buffer_hard_bytes
        self._tick_s = settings.tick_ms / 1000
        self._adaptive = settings.flush == "adaptive"
        self._loop: asyncio.AbstractEventLoop | None = None
        self.inbox_handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None] | None]] = {}
        self.on_tick: list[Callable[[float], None]] = []
        self.on_second: list[Callable[[], Awaitable[None]]] = []
        # called with every room event this node receives (e.g. sale state for local answers)
        # room-event observers by event type: a comment or a gift calls none of the sale,
        # room or lottery watchers (``observe``); ``"*"`` hears every event (tests, tools)
        self.observers: dict[str, list[Observer]] = {}
        # node-local pushes (``send_local``) by event type: what this node shows its viewers
        # besides the room's events (likes, leaderboard: the room snapshot follows them)
        self.local_observers: dict[str, list[Observer]] = {}
        # called with the id of a room this node stops serving (unsubscribed)
        self.on_drop: list[Callable[[str], None]] = []
        # presence of users on this node: +1/-1 per connection, summed per user and written
        # as one batch while the previous one is out (a join storm is thousands a second)
        self._user_deltas: dict[str, int] = {}
        self._users_task: asyncio.Task[None] | None = None
        self._stopping = False  # stop() has begun: no new presence batch task
        self.gaps = GapRepair(broker, self.keys, self.rooms, self._deliver, history_size=settings.history_size)
        # rooms whose missed events are being read back from the history: what arrives
        # meanwhile waits there, in arrival order (the same dict, read on every message)
        self._repairs = self.gaps.waiting
        broker.set_handler(self._on_message)
        add_listener = getattr(broker, "add_resubscribe_listener", None)
        if add_listener is not None:
            add_listener(self.gaps.on_resubscribed)

    # ---- life cycle
    async def start(self) -> None:
        await self.broker.subscribe(self.keys.node_inbox(self.node))
        loop = self._loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._tick_loop()), loop.create_task(self._second_loop())]

    async def stop(self) -> None:
        self._stopping = True
        for room in self.rooms.values():
            if room.linger is not None:
                room.linger.cancel()
                room.linger = None
        if self._aux:  # let dropped rooms finish unsubscribing (bounded)
            await asyncio.wait(list(self._aux), timeout=2.0)
        await self.gaps.stop()
        if self._users_task is not None:  # the last presence batch (bounded, best effort)
            await asyncio.wait([self._users_task], timeout=2.0)
        if self._user_deltas:
            try:
                await asyncio.wait_for(self.presence.users_connected(self.node, self._user_deltas), 2.0)
            except Exception as exc:
                log.warning("hub.presence_not_written", extra={"users": len(self._user_deltas), "err": repr(exc)})
            self._user_deltas = {}
        for t in [*self._tasks, *self._aux, *([self._users_task] if self._users_task else [])]:
            t.cancel()
        for t in [*self._tasks, *self._aux, *([self._users_task] if self._users_task else [])]:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._users_task = None
        self._tasks = []
        self._aux.clear()

    # ---- membership
    async def join(self, conn: Conn) -> Room:
        """Make sure this node receives the room; the conn is attached by ``attach``."""
        room = self.rooms.get(conn.room)
        if room is None:
            room = self.rooms[conn.room] = Room(conn.room, self.s.recent_ring)
            self.metrics.rooms.set(len(self.rooms))
        if room.linger is not None:
            room.linger.cancel()
            room.linger = None
        if room.subscribed is None:
            room.subscribed = asyncio.get_running_loop().create_future()
            try:
                await self.broker.subscribe(self.keys.room_channel(room.id))
            except BaseException as exc:
                fut, room.subscribed = room.subscribed, None
                fut.set_exception(exc)
                fut.exception()
                raise
            room.subscribed.set_result(None)
        elif not room.subscribed.done():
            await asyncio.shield(room.subscribed)
        else:
            room.subscribed.result()  # (a failed subscription is never left in place)
        return room

    def attach(self, conn: Conn, room: Room) -> None:
        room.conns[conn.fmt].add(conn)
        if conn.skip_seq:
            room.recovering.add(conn)
        self.by_user.setdefault(conn.user, set()).add(conn)
        self.metrics.connections.inc()
        self._user_delta(conn.user, +1)

    def leave(self, conn: Conn) -> None:
        self._behind.discard(conn)
        room = self.rooms.get(conn.room)
        if room is not None and conn in room.conns[conn.fmt]:
            room.conns[conn.fmt].discard(conn)
            room.recovering.discard(conn)
            self.metrics.connections.dec()
            if room.count() == 0 and room.linger is None:
                room.linger = asyncio.get_running_loop().call_later(2.0, self._drop_room, room.id)
        mine = self.by_user.get(conn.user)
        if mine is not None and conn in mine:
            mine.discard(conn)
            if not mine:
                del self.by_user[conn.user]
            self._user_delta(conn.user, -1)

    # ---- presence of users (which nodes hold their connections)
    def _add_delta(self, user: str, delta: int) -> None:
        n = self._user_deltas.get(user, 0) + delta
        if n:
            self._user_deltas[user] = n
        else:  # opened and closed within one batch: nothing to write
            self._user_deltas.pop(user, None)

    def _user_delta(self, user: str, delta: int) -> None:
        self._add_delta(user, delta)
        if self._users_task is None and self._user_deltas and not self._stopping:
            self._users_task = asyncio.get_running_loop().create_task(self._write_users(), name="hub.presence")

    async def _write_users(self) -> None:
        """Write the summed deltas, one batch at a time, until none is left: each batch
        gathers what came within :data:`PRESENCE_WINDOW_S` (and while the previous one was
        out); a failed batch is kept (added back) and tried again half a second later."""
        try:
            while self._user_deltas:
                await asyncio.sleep(PRESENCE_WINDOW_S)
                deltas, self._user_deltas = self._user_deltas, {}
                try:
                    await self.presence.users_connected(self.node, deltas)
                except Exception as exc:
                    for user, d in deltas.items():
                        self._add_delta(user, d)
                    log.warning("hub.presence_write_failed", extra={"users": len(deltas), "err": repr(exc)})
                    if self._stopping:
                        return  # stop() writes what is left once, bounded
                    await asyncio.sleep(0.5)
        finally:
            self._users_task = None

    def _drop_room(self, room_id: str) -> None:
        room = self.rooms.get(room_id)
        if room is None or room.count():
            return
        del self.rooms[room_id]
        if room.flush_at is not None:
            room.flush_at.cancel()
            room.flush_at = None
        self.metrics.rooms.set(len(self.rooms))
        for cb in self.on_drop:
            cb(room_id)
        loop = asyncio.get_running_loop()
        for coro in (self.broker.unsubscribe(self.keys.room_channel(room_id)), self._clear_online(room_id)):
            task = loop.create_task(coro)
            self._aux.add(task)
            task.add_done_callback(self._aux.discard)

    async def _clear_online(self, room_id: str) -> None:
        try:
            await self.presence.forget(self.node, room_id)
        except Exception:
            pass

    # ---- receiving from the broker
    def _on_message(self, channel: str, data: bytes) -> None:
        if channel.endswith(":inbox"):
            self._on_inbox(data)
            return
        try:
            seq, env = split_room_message(data)
        except Exception:
            log.error("hub.bad_broker_message", extra={"channel": channel})
            return
        room = self.rooms.get(env.get("room") or "")
        if room is None:
            return
        self.metrics.events_in.inc()
        if seq:
            waiting = self._repairs.get(room.id)
            if waiting is not None:
                waiting.append((seq, env))
                return
            if seq <= room.last_seq:
                return  # duplicate after a resubscribe
            if room.last_seq and seq > room.last_seq + 1:
                # pub/sub lost events (a failover, a dropped connection): the history has them
                self.gaps.start(room, [(seq, env)])
                return
        self._deliver(room, seq, env)

    def observe(self, types: Iterable[str], fn: Observer) -> None:
        """Call ``fn(env)`` for every room event of one of ``types`` this node hears."""
        for t in types:
            self.observers.setdefault(t, []).append(fn)

    def observe_local(self, types: Iterable[str], fn: Observer) -> None:
        """Call ``fn(env)`` for every node-local event of one of ``types`` (``send_local``)."""
        for t in types:
            self.local_observers.setdefault(t, []).append(fn)

    def _deliver(self, room: Room, seq: int, env: dict[str, Any]) -> None:
        watchers = self.observers.get(env["t"], ())
        every = self.observers.get("*", ())
        for observe in (*watchers, *every) if every else watchers:
            try:
                observe(env)
            except Exception:
                log.exception("hub.observer_failed", extra={"t": env.get("t")})
        if seq:
            room.last_seq = seq
        if priority_of(env["t"]) is Priority.CRITICAL:
            self.flush(room)
            self._send_now(room, env)
            if seq:
                room.recent.append(env)
        else:
            room.pending.append(env)
            if self._adaptive and room.flush_at is None:
                self._schedule_flush(room)

    def _on_inbox(self, data: bytes) -> None:
        try:
            msg = unpack_internal(data)
        except Exception:
            log.error("hub.bad_inbox_message")
            return
        kind = msg.get("kind", "user")
        if kind == "user":
            env = msg["env"]
            skip = msg.get("skip")
            for conn in list(self.by_user.get(msg["user"], ())):
                if msg.get("room") in (None, conn.room) and skip != f"{self.node}/{conn.id}":
                    conn.send(env)
        else:
            handler = self.inbox_handlers.get(kind)
            if handler is not None:
                res = handler(msg)
                if asyncio.iscoroutine(res):
                    asyncio.get_running_loop().create_task(res)

    # ---- writing
    def _write_all(self, room: Room, build: Callable[[Format], bytes], *, critical: bool) -> None:
        """Write one frame (built once per format in use) to every viewer of the room, in
        slices of :data:`WRITE_SLICE` viewers with the event loop free between them (a big
        room's batch does not hold up HTTP requests, the broker's reader or a small room for
        the whole loop). A room's frames never overtake each other: a new write to the room
        finishes the one in progress first (:meth:`finish_write`)."""
        if room.writing is not None:
            self.finish_write(room)
        jobs = [(ws_frame(build(fmt), OPCODES[fmt]), list(conns)) for fmt, conns in room.conns.items() if conns]
        if jobs:
            self._write_slices(room, _Write(jobs, critical))

    def _write_slices(self, room: Room, w: _Write, limit: int | None = None) -> None:
        """Write up to ``limit`` (:data:`WRITE_SLICE`) viewers' share of ``w`` (all of it when
        ``limit < 0``); what is left goes on at the loop's next turn."""
        room.writing = None
        left = WRITE_SLICE if limit is None else limit
        while w.jobs:
            frame, conns = w.jobs[-1]
            n = len(conns) - w.pos
            if 0 <= left < n:
                if left:
                    self._write_to(frame, conns[w.pos : w.pos + left], w.critical)
                    w.pos += left
                room.writing = w
                w.handle = (self._loop or asyncio.get_running_loop()).call_soon(self._write_next, room, w)
                return
            self._write_to(frame, conns[w.pos :] if w.pos else conns, w.critical)
            if left > 0:
                left -= n
            w.jobs.pop()
            w.pos = 0

    def _write_next(self, room: Room, w: _Write) -> None:
        if room.writing is w:
            try:
                self._write_slices(room, w)
            except Exception:
                room.writing = None
                log.exception("hub.write_failed", extra={"room": room.id})

    def finish_write(self, room: Room) -> None:
        """Write the rest of the room's frame in progress now (before anything else goes to
        the room, and before a drain closes its viewers)."""
        w = room.writing
        if w is None:
            return
        if w.handle is not None:
            w.handle.cancel()
        self._write_slices(room, w, limit=-1)

    def finish_writes(self) -> None:
        for room in list(self.rooms.values()):
            self.finish_write(room)

    def _write_to(self, frame: bytes, conns: list[Conn], critical: bool) -> None:
        now = time.monotonic()
        soft = self._soft
        slow: list[Conn] = []
        n = 0
        for conn in conns:
            # the fast path, inlined (it runs once per viewer per frame): an open connection
            # that is not behind gets the frame; anything else goes through ``Conn.write``'s
            # full slow-consumer policy below
            t = conn.transport
            if conn.closed or conn.behind_since or t.get_write_buffer_size() > soft or t.is_closing():
                slow.append(conn)
                continue
            t.write(frame)
            conn.frames_out += 1
            n += 1
        for conn in slow:
            r = conn.write(frame, critical=critical, soft=soft, hard=self._hard, now=now)
            if conn.behind_since:
                self._behind.add(conn)
            if r > 0:
                n += 1
            elif r == 0:
                if not conn.closed:
                    self.metrics.drops.inc()
            else:
                self.metrics.slow_closed.inc()
                conn.close_slow()
        if n:
            self.metrics.frames_out.inc(n)
            self.metrics.bytes_out.inc(n * len(frame))

    def _send_now(self, room: Room, env: dict[str, Any]) -> None:
        self._observe([env])
        self._write_all(room, lambda fmt: encode_bytes(env, fmt), critical=True)

    def send_local(self, room_id: str, env: dict[str, Any], *, critical: bool = False) -> None:
        """Deliver an event to this node's viewers of a room only (counters, presence)."""
        room = self.rooms.get(room_id)
        if room is None:
            return
        for observe in self.local_observers.get(env["t"], ()):
            try:
                observe(env)
            except Exception:
                log.exception("hub.observer_failed", extra={"t": env.get("t")})
        if critical:
            self.flush(room)
            self._send_now(room, env)
        else:
            room.pending.append(env)
            if self._adaptive and room.flush_at is None:
                self._schedule_flush(room)

    # ---- when a room's batch goes out
    def _schedule_flush(self, room: Room) -> None:
        """Adaptive flush: a room that wrote no batch for a tick is quiet, and its event goes
        out at once (``call_soon``: what arrived in the same read of the broker joins it); a
        busy room's next batch goes out one tick after its last, so a viewer gets at most
        one batch frame per tick (the CPU per delivery of the fixed tick at high rates, and
        none of its up-to-a-tick wait at low ones)."""
        loop = self._loop or asyncio.get_running_loop()
        due = room.last_flush + self._tick_s
        if due <= loop.time():
            room.flush_at = loop.call_soon(self._flush_due, room)
        else:
            room.flush_at = loop.call_at(due, self._flush_due, room)

    def _flush_due(self, room: Room) -> None:
        room.flush_at = None
        try:
            self.flush(room)
        except Exception:
            log.exception("hub.flush_failed", extra={"room": room.id})

    def flush(self, room: Room) -> None:
        if not room.pending:
            return
        items, room.pending = room.pending, []
        room.recent.extend(e for e in items if "seq" in e)
        # the bucket refills for the time since the last batch (a tick, on the fixed tick)
        t = (self._loop or asyncio.get_running_loop()).time()
        since = min(1.0, t - room.last_flush) if self._adaptive and room.last_flush else self._tick_s
        room.last_flush = t
        # hot rooms: past the comment budget, the best-ranked comments (the rest stay in the history)
        items, room.allowance, shed = apply_budget(items, room.allowance, rate=self.s.room_comment_budget, tick_s=since)
        if shed:
            self.metrics.comments_shed.inc(shed)
        if not items:
            return
        self._observe(items)
        seqs = [e["seq"] for e in items if "seq" in e]
        min_seq = seqs[0] if seqs else 0
        # connections still recovering must not see events they were already sent
        special: list[Conn] = []
        if room.recovering and min_seq:
            for c in list(room.recovering):
                if c.skip_seq >= min_seq:
                    special.append(c)
                else:  # everything from now on is new to it
                    c.skip_seq = 0
                    room.recovering.discard(c)
        for c in special:
            room.conns[c.fmt].discard(c)
        try:
            self._write_all(room, lambda fmt: encode_batch(room.id, items, fmt), critical=False)
        finally:
            for c in special:
                room.conns[c.fmt].add(c)
        now = time.monotonic()
        for c in special:
            mine = [e for e in items if e.get("seq", c.skip_seq + 1) > c.skip_seq]
            c.skip_seq = 0
            room.recovering.discard(c)
            if mine:
                frame = ws_frame(encode_batch(room.id, mine, c.fmt), c.opcode)
                if c.write(frame, critical=False, soft=self._soft, hard=self._hard, now=now) == 0:
                    self.metrics.drops.inc()

    def _observe(self, items: list[dict[str, Any]]) -> None:
        now_ms = time.time() * 1000
        for e in items[:: max(1, len(items) // 8)]:  # sample: a few per flush is enough
            ts = e.get("ts")
            if isinstance(ts, (int, float)):
                self.metrics.fanout_latency.observe(max(0.0, (now_ms - ts) / 1000))

    async def _tick_loop(self) -> None:
        """The node's tick (with ``LC_FLUSH=tick`` it also flushes every room): slow consumers'
        grace and the ``on_tick`` callbacks, on a fixed schedule: the next deadline is set from
        the previous one, not from the end of the work, so a busy flush does not stretch the
        tick (profiling showed 2.5-6 ticks/s instead of 20 with sleep-after-work)."""
        interval = self.s.tick_ms / 1000
        grace = self.s.slow_grace_s
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += interval
            delay = deadline - loop.time()
            if delay < 0:  # fell behind by more than a tick: skip ahead, never burst
                deadline = loop.time()
                delay = 0
            await asyncio.sleep(delay)
            now = time.monotonic()
            try:
                for room in list(self.rooms.values()):
                    if not self._adaptive:
                        self.flush(room)
                    if self._behind:
                        for conn in [c for c in self._behind if c.room == room.id]:
                            if conn.closed:
                                self._behind.discard(conn)
                            elif conn.buffered() <= self._soft:
                                conn.behind_since = 0.0
                                self._behind.discard(conn)
                            elif now - conn.behind_since > grace:
                                self.metrics.slow_closed.inc()
                                conn.close_slow()
                                self._behind.discard(conn)
                for cb in self.on_tick:
                    cb(now)
            except Exception:
                log.exception("hub.tick_failed")

    # ---- heartbeat (one sweep for the node instead of a timer per connection)
    def sweep_heartbeats(self, now: float) -> None:
        """Ping each connection heard from nothing for ``heartbeat_s`` (one shared frame);
        close one that has not answered (any frame counts) within half that. What aiohttp's
        per-connection heartbeat did, without a timer and a task per connection."""
        hb = self.s.heartbeat_s
        if hb <= 0:
            return
        for room in self.rooms.values():
            for conns in room.conns.values():
                for c in conns:
                    if c.closed or now - c.last_seen < hb:
                        continue
                    if c.pinged_at <= c.last_seen:  # not pinged since it was last heard
                        if not c.transport.is_closing():
                            c.transport.write(PING_FRAME)
                        c.pinged_at = now
                    elif now - c.pinged_at >= hb / 2:  # no answer: the peer is gone (as aiohttp: close, 1006)
                        c.closed = True
                        c.transport.close()  # its handler's receive loop ends and cleans up
                        log.info("conn.heartbeat_timeout", extra={"conn": c.id, "room": c.room})

    # ---- presence (online counts across nodes)
    async def _second_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.sweep_heartbeats(time.monotonic())
            except Exception:
                log.exception("hub.heartbeat_failed")
            try:
                await self.sync_online()
            except Exception as exc:
                log.warning("hub.second_loop_failed", extra={"err": repr(exc)})
            for cb in self.on_second:  # each on its own: one failing hook (a capability's
                try:  # Redis blip, a bug) must not stop the others, e.g. the show's peak online
                    await cb()
                except Exception as exc:
                    log.warning("hub.second_hook_failed", extra={"hook": getattr(cb, "__qualname__", repr(cb)), "err": repr(exc)})

    async def sync_online(self) -> None:
        """Report this node's connections per room; push ``online`` where the total changed."""
        rooms = list(self.rooms.values())
        if not rooms or not self.reporting:
            return
        now_ms = clock.now_ms()
        totals = await self.presence.report(self.node, {room.id: room.count() for room in rooms}, now_ms=now_ms)
        for room in rooms:
            total = totals.get(room.id, 0)
            if total != room.online:
                room.online = total
                self.send_local(room.id, envelope("online", room.id, {"count": total}, ts=now_ms))

    async def withdraw_presence(self) -> None:
        """The node drains: stop reporting and take its counts out of every room at once, so
        its viewers, reconnecting to other nodes, are not counted twice until its reports
        go stale (:data:`~livecommerce.presence.FRESH_MS`)."""
        self.reporting = False
        await asyncio.gather(*(self.presence.forget(self.node, room) for room in list(self.rooms)), return_exceptions=True)

    async def online(self, room_id: str) -> int:
        """The room's online count over every node."""
        return (await self.presence.online([room_id], now_ms=clock.now_ms()))[room_id]
