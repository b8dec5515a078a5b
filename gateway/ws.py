"""``GET /ws?room=&token=&format=&since=``: the WebSocket endpoint and command dispatch.

Dispatch is the one place that catches :mod:`livecommerce.errors` exceptions and turns them
into error frames or close codes (``errors.wire_error``); anything else is ``internal``,
logged with its traceback and never echoed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from livecommerce.auth import Identity
from livecommerce.comments import FloodGuard, TokenBucket
from livecommerce.errors import (
    BadFrame,
    Flooding,
    Forbidden,
    LiveCommerceError,
    RateLimited,
    Unauthorized,
    wire_error,
)
from livecommerce.protocol.codec import Format, decode_frame, encode_bytes
from livecommerce.protocol.commands import PIPELINED, ROLES, parse_command
from livecommerce.protocol.events import error_frame, recovery_plan, reply

from .conn import Conn, Link
from .core import GW_KEY, Gateway
from .hooks import Json
from .wsframe import OP_BINARY, OP_PONG, OP_TEXT, ws_frame

log = logging.getLogger("livecommerce.gateway.ws")


def _valid_room(room: str) -> bool:
    return 0 < len(room) <= 64 and all(c.isalnum() or c in "-_." for c in room)


@dataclass(frozen=True, slots=True)
class Ask:
    """A checked ``/ws`` request: what the connection asks for."""

    room: str
    fmt: Format
    since: int | None
    token: str | None


@dataclass(frozen=True, slots=True)
class Refuse:
    """A ``/ws`` request answered with an HTTP error before the upgrade."""

    status: int
    text: str


def check_request(gw: Gateway, query: Mapping[str, str], origin: str, ip: str) -> Ask | Refuse:
    """The checks both transports make before the upgrade (origin, draining, the query, the
    per-address limit). On :class:`Ask` the caller has taken the address's slot
    (:func:`take_ip`) and must :func:`release_ip` it when the connection ends."""
    origins = gw.s.origins
    if origins and origin not in origins:
        return Refuse(403, "origin not allowed")
    if gw.draining:
        return Refuse(503, "gateway is draining; connect to another node")
    room_id = query.get("room", "")
    fmt_raw = query.get("format", "msgpack")
    since_raw = query.get("since")
    if not _valid_room(room_id):
        return Refuse(400, "room must be 1..64 characters of letters, digits, - _ .")
    if fmt_raw not in ("msgpack", "json"):
        return Refuse(400, "format must be msgpack or json")
    fmt: Format = fmt_raw  # type: ignore[assignment]
    since: int | None = None
    if since_raw is not None:
        try:
            since = int(since_raw)
            if since < 0:
                raise ValueError
        except ValueError:
            return Refuse(400, "since must be a non-negative integer seq")
    if gw.hub.by_ip.get(ip, 0) >= gw.s.max_conns_per_ip:
        return Refuse(429, "too many connections from this address")
    # the slot is taken before the first await, so handshakes racing each other all count
    take_ip(gw, ip)
    return Ask(room_id, fmt, since, query.get("token"))


def take_ip(gw: Gateway, ip: str) -> None:
    gw.hub.by_ip[ip] = gw.hub.by_ip.get(ip, 0) + 1


def release_ip(gw: Gateway, ip: str) -> None:
    gw.hub.by_ip[ip] -= 1
    if not gw.hub.by_ip[ip]:
        del gw.hub.by_ip[ip]


_REFUSALS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    403: web.HTTPForbidden,
    429: web.HTTPTooManyRequests,
    503: web.HTTPServiceUnavailable,
}


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """``/ws`` on aiohttp's transport (``LC_WS_TRANSPORT=aiohttp``): a ``WebSocketResponse``
    and a receive task per connection."""
    gw = request.app[GW_KEY]
    ip = request.remote or "?"
    ask = check_request(gw, request.query, request.headers.get("Origin", ""), ip)
    if isinstance(ask, Refuse):
        raise _REFUSALS[ask.status](text=ask.text)
    try:
        return await _accept(gw, request, ask, ip)
    finally:
        release_ip(gw, ip)


def max_message_bytes(gw: Gateway) -> int:
    """The transport's message limit: past it the connection is closed with 1009."""
    return max(gw.s.max_frame_bytes * 4, 64 * 1024)


async def _accept(gw: Gateway, request: web.Request, ask: Ask, ip: str) -> web.StreamResponse:
    # no heartbeat timer per connection: the hub pings the idle ones from its own sweep
    # (Hub.sweep_heartbeats); pings and pongs come through the receive loop (autoping off)
    ws = web.WebSocketResponse(heartbeat=None, compress=False, max_msg_size=max_message_bytes(gw), autoping=False)
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    conn = await admit(gw, ws, transport, ask, ip)
    if conn is None:
        return ws
    try:
        await _receive_loop(gw, conn, ws)
    except LiveCommerceError as exc:
        await refuse_open(gw, conn, exc)
    finally:
        release(gw, conn, ws.close_code)
    return ws


async def admit(gw: Gateway, link: Link, transport: asyncio.Transport, ask: Ask, ip: str) -> Conn | None:
    """Everything between the upgrade and the first frame read, shared by both transports:
    the token (4401), the per-user limit (4429), join, welcome hooks, the replay, attach.

    Returns the attached connection (the caller calls :func:`release` when it ends), or None
    when it was refused: then the close frame is sent and nothing is left to release.
    """
    # authenticate after the upgrade so that browsers see the close code and reason
    try:
        ident = gw.identify(ask.token)
    except Unauthorized as exc:
        gw.metrics.errors.labels("unauthorized").inc()
        opcode = OP_TEXT if ask.fmt == "json" else OP_BINARY
        transport.write(ws_frame(encode_bytes(error_frame("unauthorized", exc.message), ask.fmt), opcode))
        await link.close(code=4401, message=b"unauthorized")
        return None
    slots = gw.user_slots
    if slots[ident.user] >= gw.s.max_conns_per_user:
        await link.close(code=4429, message=b"too many connections for this user")
        return None
    slots[ident.user] += 1

    room_id, since = ask.room, ask.since
    conn = Conn(
        link,
        transport,
        ident,
        room_id,
        ask.fmt,
        ip=ip,
        cmd_bucket=TokenBucket(gw.s.command_rate, gw.s.command_burst),
        now=time.monotonic(),
    )
    try:
        room = await gw.hub.join(conn)
        # the room's seq and state: the node's snapshot of the room (memory once the node
        # serves it, gateway.snapshots); only a recovery (since=) reads the history
        room_seq = gw.hooks.room_seq
        top = await room_seq(room_id) if room_seq is not None else 0
        replay: list[dict[str, Any]] = []
        recovered = False
        if since is not None:
            hist = await gw.broker.history(room_id, since, limit=gw.s.history_size)
            top, recovered, replay = max(top, hist.top), hist.recovered, list(hist.events)
        elif room_seq is None:
            top = await gw.broker.top_seq(room_id)
        extras: dict[str, Any] = {}
        for extra in gw.hooks.welcome:
            extras.update(await extra(room_id, ident))
    except LiveCommerceError as exc:
        await refuse_open(gw, conn, exc)
        release(gw, conn, None)
        return None
    except BaseException:
        release(gw, conn, None)
        raise
    # from here to attach nothing awaits, so no broadcast can slip between
    gw.hub.flush(room)
    top = max(top, room.last_seq)
    if since is not None:
        last = replay[-1]["seq"] if replay else since
        replay.extend(e for e in room.recent if e["seq"] > last)

    conn.send(
        {
            "t": "welcome",
            "room": room_id,
            "ts": gw.now_ms(),
            "d": {
                "node": gw.s.node_id,
                "seq": top,
                "recovered": recovered,
                "user": ident.user,
                "role": ident.role,
                "conn": conn.id,
                **extras,
            },
        }
    )
    if replay:
        conn.send({"t": "batch", "room": room_id, "items": recovery_plan(replay)})
        conn.skip_seq = replay[-1]["seq"]
    else:
        conn.skip_seq = top
    gw.hub.attach(conn, room)  # counts the user's connection on this node (batched presence)
    log.info("conn.open", extra={"conn": conn.id, "room": room_id, "user": ident.user, "fmt": ask.fmt, "since": since})
    return conn


async def refuse_open(gw: Gateway, conn: Conn, exc: LiveCommerceError) -> None:
    """Answer an error of the opening (or of the aiohttp receive loop) with its frame and
    close code (1011 if it has none)."""
    we = wire_error(exc)
    conn.send(error_frame(we.code, exc.message, **exc.details))
    await conn.link.close(code=1011 if we.close is None else we.close, message=we.code.encode())


def release(gw: Gateway, conn: Conn, code: int | None) -> None:
    """The connection ended: give back the user's slot, leave the room (no-op if never
    attached). Call once per :func:`admit` that returned the connection."""
    slots = gw.user_slots
    user = conn.ident.user
    slots[user] -= 1
    if not slots[user]:
        del slots[user]
    gw.hub.leave(conn)
    conn.closed = True
    log.info("conn.close", extra={"conn": conn.id, "room": conn.room, "drops": conn.drops, "code": code})


PIPELINE_DEPTH = 32  # pipelined commands in progress per connection before it stops reading


class Lane:
    """A connection's pipelined commands in progress (``protocol.commands.PIPELINED``).

    Their handlers are called as their frames arrive, in frame order: a pipelined handler
    does what orders its effects (a gift is submitted to its group commit) before it
    returns, and returns the awaitable of its answer. One writer task per connection awaits
    those answers in frame order and writes them, so answers leave in the order of the
    frames. Any other command, and any error frame, waits until the lane is empty.
    """

    __slots__ = ("items", "writer")

    def __init__(self) -> None:
        #: (the answer's awaitable, or the error the handler raised at once; the command id)
        self.items: deque[tuple[Awaitable[Json | None] | BaseException, Any]] = deque()
        self.writer: asyncio.Task[None] | None = None

    def push(self, gw: Gateway, conn: Conn, answer: Awaitable[Json | None] | BaseException, cid: Any) -> None:
        self.items.append((answer, cid))
        if self.writer is None:
            self.writer = asyncio.ensure_future(_write_answers(gw, conn, self))

    async def drained(self) -> None:
        """Wait until every pipelined answer before now is written."""
        w = self.writer
        if w is not None and not w.done():
            await asyncio.wait((w,))


async def _write_answers(gw: Gateway, conn: Conn, lane: Lane) -> None:
    """The lane's writer: each answer in turn, until the lane is empty. Never raises."""
    items = lane.items
    try:
        while items:
            answer, cid = items[0]
            out: Json | None = None
            failure: BaseException | None = None
            if isinstance(answer, BaseException):
                failure = answer
            else:
                try:
                    out = await answer
                except Exception as exc:
                    failure = exc
            items.popleft()
            try:
                if isinstance(failure, LiveCommerceError):
                    _send_error(gw, conn, failure, cid)
                elif failure is not None:
                    gw.metrics.errors.labels("internal").inc()
                    log.error("dispatch.internal", exc_info=failure, extra={"conn": conn.id, "room": conn.room})
                    conn.send(error_frame("internal", "internal error", cmd_id=cid))
                else:
                    conn.send(out if out is not None else reply("ack", cid))
            except Exception:  # an answer that cannot be sent: close with a code, never drop silently
                log.exception("dispatch.internal", extra={"conn": conn.id, "room": conn.room})
                conn.closed = True
                asyncio.get_running_loop().create_task(conn.link.close(code=1011, message=b"internal error"))
    finally:
        lane.writer = None
        while items:  # cancelled with the connection: the answers nobody will write
            answer, _ = items.popleft()
            if inspect.iscoroutine(answer):
                answer.close()


async def _receive_loop(gw: Gateway, conn: Conn, ws: web.WebSocketResponse) -> None:
    lane = Lane()
    while True:
        msg = await ws.receive()
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            gw.metrics.frames_in.inc()
            conn.last_seen = time.monotonic()
            if conn.closed:
                continue
            try:
                await handle_frame(gw, conn, msg.data, lane)
            except Exception:  # a reply that cannot be sent: close with a code, never drop silently
                log.exception("dispatch.internal", extra={"conn": conn.id, "room": conn.room})
                conn.closed = True
                await ws.close(code=1011, message=b"internal error")
                return
        elif msg.type == WSMsgType.PING:
            conn.last_seen = time.monotonic()
            if not conn.closed and not conn.transport.is_closing():
                conn.transport.write(ws_frame(msg.data, OP_PONG))
        elif msg.type == WSMsgType.PONG:
            conn.last_seen = time.monotonic()
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
        elif msg.type == WSMsgType.ERROR:
            # aiohttp closes with 1009 for frames over max_msg_size, 1002 for protocol errors
            log.info("conn.protocol_error", extra={"conn": conn.id, "err": repr(ws.exception())})
            return


async def handle_frame(gw: Gateway, conn: Conn, data: bytes | str, lane: Lane | None = None) -> None:
    """Decode, check and run one frame; answer it (or the error it raised). With the
    connection's ``lane``, a pipelined command is started and left to answer in its turn,
    and anything else is answered only after the pipelined commands before it."""
    cid: Any = None
    try:
        frame = decode_frame(data, conn.fmt, max_bytes=gw.s.max_frame_bytes)
        if _escapes(data) and _has_lone_surrogate(frame):
            raise BadFrame("strings must be valid Unicode (a lone surrogate escape was sent)", code="bad_frame")
        raw_id = frame.get("id")
        if isinstance(raw_id, int) and not -(2**63) <= raw_id < 2**63:  # would not encode in msgpack
            raise BadFrame("'id' must be a string or a 64-bit integer", code="invalid")
        cid = raw_id if isinstance(raw_id, (str, int)) else None
        cmd = parse_command(frame)
        t = frame["t"]
        if conn.ident.role not in ROLES[t]:
            raise Forbidden(f"{conn.ident.role} may not send {t}")
        if not conn.cmd_bucket.take(time.monotonic()):
            raise RateLimited("too many commands; slow down")
        handler = gw.commands.get(t)
        if handler is None:
            raise BadFrame(f"command {t!r} is not served by this gateway", code="unknown_type")
        gw.metrics.commands.labels(t).inc()
        if lane is not None:
            if t in PIPELINED:
                try:
                    started: Awaitable[Json | None] | BaseException = handler(conn, cmd)
                except LiveCommerceError as exc:
                    started = exc
                lane.push(gw, conn, started, cid)
                if len(lane.items) >= PIPELINE_DEPTH:
                    await lane.drained()
                return
            await lane.drained()
        answer = await handler(conn, cmd)
        conn.send(answer if answer is not None else reply("ack", cid))
    except LiveCommerceError as exc:
        if lane is not None:
            await lane.drained()
        _send_error(gw, conn, exc, cid)
    except Exception:
        if lane is not None:
            await lane.drained()
        gw.metrics.errors.labels("internal").inc()
        log.exception("dispatch.internal", extra={"conn": conn.id, "room": conn.room})
        conn.send(error_frame("internal", "internal error", cmd_id=cid))


def _send_error(gw: Gateway, conn: Conn, exc: LiveCommerceError, cid: Any) -> None:
    we = wire_error(exc)
    gw.metrics.errors.labels(we.code).inc()
    if isinstance(exc, RateLimited) and conn.flood is None:
        conn.flood = FloodGuard(gw.s.flood_strikes, gw.s.flood_window_s)
    if isinstance(exc, RateLimited) and conn.flood is not None and conn.flood.strike(time.monotonic()):
        exc = Flooding("kept flooding after rate_limited errors; closing")
        we = wire_error(exc)
    conn.send(error_frame(we.code, exc.message if we.echo else "internal error", cmd_id=cid, **exc.details))
    if we.close is not None:
        conn.closed = True
        asyncio.get_running_loop().create_task(conn.link.close(code=we.close, message=we.code.encode()))


def _escapes(data: bytes | str) -> bool:
    """Only JSON ``\\u`` escapes can smuggle lone surrogates in (msgpack strings are
    checked UTF-8): the cheap test that keeps the walk off the hot path."""
    return ("\\u" in data) if isinstance(data, str) else (b"\\u" in data)


def _has_lone_surrogate(obj: Any) -> bool:
    """True when a string (key or value) of a decoded frame cannot be encoded as UTF-8;
    such a string would fail later, when a reply or a broadcast is encoded."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


def identity_of(conn: Conn) -> Identity:
    return conn.ident
