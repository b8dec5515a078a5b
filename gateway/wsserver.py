"""``/ws`` on the gateway's own transport (``LC_WS_TRANSPORT=own``): one small
``asyncio.Protocol`` per TCP connection, no task while a viewer is idle.

The listening socket serves both planes on one port. Each connection starts as a
:class:`WsLink` that reads the first request head (within :data:`HEAD_TIMEOUT_S`): a ``GET /ws`` asking for a WebSocket
upgrade stays here; anything else (the HTTP API, pages, ``/metrics``, a ``/ws`` without
``Upgrade``) is handed to aiohttp unchanged: aiohttp's protocol is made from the runner's
``web.Server``, given the transport and the bytes read so far, and the transport is switched
to it (``transport.set_protocol``).

On the WebSocket path (the wire is :mod:`gateway.wsproto`'s, sans I/O):

* the checks before the upgrade are :func:`gateway.ws.check_request`'s (403, 503, 400, 429,
  answered with the JSON error body and the code aiohttp's error middleware gives them, the
  reason as its message); then ``101``;
* opening (token, per-user limit, join, welcome hooks, replay, attach) is
  :func:`gateway.ws.admit`, shared with the aiohttp transport, in one task that ends after
  attach;
* afterwards frames are parsed in ``data_received``; data messages are queued and a dispatch
  task runs :func:`gateway.ws.handle_frame` (with the connection's ``Lane``) only while the
  queue is not empty; past :data:`gateway.ws.PIPELINE_DEPTH` queued messages the socket stops
  being read until the queue halves;
* pings are answered at once; the hub's heartbeat sweep pings idle connections through the
  transport and closes dead ones; a protocol error closes with its code (1002, 1007, 1009);
  ``close`` (drain 1012, errors, 4401/4429) sends the close frame and closes the socket once
  it is written; the slow-consumer close (1013) is ``Conn.close_now``'s, as on aiohttp.

What an idle connection holds: the transport, this object, its :class:`~gateway.wsproto.FrameReader`
and the :class:`~gateway.conn.Conn` (docs/performance.md, "M2 4/7 lean connections").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, cast

from aiohttp import web

from livecommerce.config import WS_TRANSPORTS, Settings
from livecommerce.errors import ConfigError

from . import wsproto
from .conn import Conn
from .core import GW_KEY, Gateway
from .http import http_code
from .ws import (
    PIPELINE_DEPTH,
    Ask,
    Lane,
    Refuse,
    admit,
    check_request,
    handle_frame,
    max_message_bytes,
    release,
    release_ip,
)
from .wsframe import OP_PONG, close_frame, ws_frame

log = logging.getLogger("livecommerce.gateway.wsserver")

#: how long a closed socket may take to write what it buffered before it is dropped (as
#: ``Conn.close_now``)
CLOSE_TIMEOUT_S = 30.0
_WS_PREFIX = b"GET /ws"
#: a connection that has not sent its whole request head by then is dropped (slow-header
#: clients would otherwise hold a socket and a slot forever)
HEAD_TIMEOUT_S = 10.0

Phase = Literal["head", "opening", "open", "closing", "gone"]


class WsService:
    """What the connections of one listening socket share: the node, aiohttp's protocol
    factory for everything that is not ``/ws``, and the open links (aborted at shutdown)."""

    __slots__ = ("gw", "http", "links", "max_size")

    def __init__(self, gw: Gateway, http: Callable[[], asyncio.BaseProtocol]) -> None:
        self.gw = gw
        self.http = http
        self.max_size = max_message_bytes(gw)
        self.links: set[WsLink] = set()

    def __call__(self) -> WsLink:
        return WsLink(self)

    async def abort_all(self) -> None:
        """The node stops: drop what is still open (drain closed the viewers with 1012)."""
        for link in list(self.links):
            link.transport.abort()


class WsLink(asyncio.Protocol):
    """One TCP connection: a request head until it is known, then a WebSocket. Implements
    :class:`gateway.conn.Link`."""

    __slots__ = ("buf", "close_code", "conn", "deadline", "inbox", "ip", "lane", "paused", "phase", "pump", "reader",
                 "svc", "transport")

    def __init__(self, svc: WsService) -> None:
        self.svc = svc
        self.phase: Phase = "head"
        self.buf = b""
        self.ip = ""  # set while this connection holds a slot of its address (by_ip)
        self.reader: wsproto.FrameReader | None = None
        self.conn: Conn | None = None
        self.inbox: deque[str | bytes] | None = None  # data messages not yet dispatched
        self.lane: Lane | None = None
        self.pump: asyncio.Task[None] | None = None  # the opening task, then the dispatch task
        self.paused = False
        self.close_code: int | None = None
        self.deadline: asyncio.TimerHandle | None = None  # only while the request head is read

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.svc.links.add(self)
        self.deadline = asyncio.get_running_loop().call_later(HEAD_TIMEOUT_S, self._head_timeout)

    def data_received(self, data: bytes) -> None:
        if self.phase == "head":
            self._head(data)
        elif self.reader is not None:
            self._frames(data)

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost cleans up

    def connection_lost(self, exc: Exception | None) -> None:
        self._no_deadline()
        self.phase = "gone"
        self.svc.links.discard(self)
        if self.ip:
            release_ip(self.svc.gw, self.ip)
            self.ip = ""
        if self.pump is None:
            self._finish()

    # ---- Link
    @property
    def closed(self) -> bool:
        return self.phase in ("closing", "gone")

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Send a close frame with ``code`` and close the socket once what is buffered is
        written (what aiohttp's ``close`` does while a receive loop runs); a peer that does
        not read is dropped after :data:`CLOSE_TIMEOUT_S`."""
        if self.phase in ("closing", "gone") or self.transport.is_closing():
            return False
        self.phase = "closing"
        self.close_code = code
        self.transport.write(close_frame(code, message.decode("utf-8", "replace")))
        self.transport.close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.transport.abort)
        return True

    # ---- the request head
    def _no_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _head_timeout(self) -> None:
        self.deadline = None
        if self.phase == "head":
            log.info("conn.head_timeout", extra={"bytes": len(self.buf)})
            self.phase = "gone"
            self.transport.abort()

    def _head(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        k = min(len(buf), len(_WS_PREFIX))
        if buf[:k] != _WS_PREFIX[:k] or (len(buf) > k and buf[k : k + 1] not in (b" ", b"?")):
            self._hand_off(buf)  # not ours: aiohttp serves it
            return
        try:
            end = wsproto.head_end(buf)
            if end < 0:
                self.buf = buf
                return
            req = wsproto.parse_head(buf[:end])
        except wsproto.HandshakeError as exc:
            self._refuse(exc.status, exc.text)
            return
        if not req.wants_websocket():
            self._hand_off(buf)
            return
        self._no_deadline()
        self.buf = b""
        peer = self.transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else "?"
        gw = self.svc.gw
        ask = check_request(gw, req.params(), req.header("origin") or "", ip)
        if isinstance(ask, Refuse):
            self._refuse(ask.status, ask.text)
            return
        self.ip = ip  # check_request took the slot
        try:
            answer = wsproto.accept(req)
        except wsproto.HandshakeError as exc:
            self._refuse(exc.status, exc.text)
            return
        self.transport.write(answer)
        self.phase = "opening"
        self.reader = wsproto.FrameReader(self.svc.max_size)
        self.pump = asyncio.get_running_loop().create_task(self._open(ask, ip))
        rest = buf[end:]
        if rest:
            self._frames(rest)

    def _hand_off(self, buf: bytes) -> None:
        self._no_deadline()  # aiohttp's own timeouts apply from here
        proto = self.svc.http()
        self.svc.links.discard(self)
        self.phase = "gone"
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        cast(asyncio.Protocol, proto).data_received(buf)

    def _refuse(self, status: int, text: str) -> None:
        self._no_deadline()
        self.phase = "gone"
        self.buf = b""
        self.transport.write(wsproto.refusal(status, http_code(status), text))
        self.transport.close()

    # ---- opening
    async def _open(self, ask: Ask, ip: str) -> None:
        gw = self.svc.gw
        try:
            conn = await admit(gw, self, self.transport, ask, ip)
        except Exception:
            log.exception("conn.open_failed", extra={"room": ask.room})
            self.pump = None
            await self.close(code=1011, message=b"internal error")
            return
        self.pump = None
        if conn is None:
            return
        self.conn = conn
        if self.phase == "opening":
            self.phase = "open"
            if self.inbox:
                self._start_pump()
        elif self.phase == "gone":
            self._finish()

    # ---- frames
    def _frames(self, data: bytes) -> None:
        assert self.reader is not None
        conn = self.conn
        gw = self.svc.gw
        now = time.monotonic()
        for ev in self.reader.feed(data):
            if conn is not None:
                conn.last_seen = now
            if isinstance(ev, wsproto.Message):
                gw.metrics.frames_in.inc()
                if self.phase not in ("opening", "open") or (conn is not None and conn.closed):
                    continue
                inbox = self.inbox
                if inbox is None:
                    inbox = self.inbox = deque()
                inbox.append(ev.data)
                if self.phase == "open" and self.pump is None:
                    self._start_pump()
                if len(inbox) >= PIPELINE_DEPTH and not self.paused:
                    self.paused = True
                    self.transport.pause_reading()
            elif isinstance(ev, wsproto.Ping):
                if self.phase in ("opening", "open") and not self.transport.is_closing():
                    self.transport.write(ws_frame(ev.payload, OP_PONG))
            elif isinstance(ev, wsproto.Close):
                if self.phase != "closing":  # the peer began: answer with its code
                    self.close_code = ev.code if ev.code is not None else 1005
                    self.phase = "closing"
                    self.transport.write(close_frame(ev.code) if ev.code is not None else close_frame_empty())
                self.transport.close()
            elif isinstance(ev, wsproto.Failed):
                log.info("conn.protocol_error", extra={"conn": conn.id if conn else None, "code": ev.code, "err": ev.reason})
                self.close_code = ev.code
                if conn is not None:
                    conn.closed = True
                if self.phase != "closing":
                    self.phase = "closing"
                    self.transport.write(close_frame(ev.code, ev.reason))
                self.transport.close()

    def _start_pump(self) -> None:
        self.pump = asyncio.get_running_loop().create_task(self._dispatch())

    async def _dispatch(self) -> None:
        """Run the queued messages in order; end when the queue is empty."""
        gw = self.svc.gw
        conn, inbox = self.conn, self.inbox
        assert conn is not None and inbox is not None
        lane = self.lane
        if lane is None:
            lane = self.lane = Lane()
        try:
            while inbox:
                data = inbox.popleft()
                if self.paused and len(inbox) <= PIPELINE_DEPTH // 2 and self.phase != "gone":
                    self.paused = False
                    self.transport.resume_reading()
                if conn.closed:
                    continue
                try:
                    await handle_frame(gw, conn, data, lane)
                except Exception:  # a reply that cannot be sent: close with a code, never drop silently
                    log.exception("dispatch.internal", extra={"conn": conn.id, "room": conn.room})
                    conn.closed = True
                    inbox.clear()
                    await self.close(code=1011, message=b"internal error")
        finally:
            self.pump = None
            self.inbox = None  # an idle connection keeps no queue
            if not lane.items and lane.writer is None:
                self.lane = None
            if self.paused and self.phase != "gone":
                self.paused = False
                self.transport.resume_reading()
            if self.phase == "gone":
                self._finish()

    def _finish(self) -> None:
        """The socket is gone and no task of this connection runs: release it once."""
        conn, self.conn = self.conn, None
        if conn is not None:
            release(self.svc.gw, conn, self.close_code)


def close_frame_empty() -> bytes:
    """A close frame with no status (the answer to one)."""
    return bytes((0x88, 0))


# ====================================================================== sites
class GatewaySite(web.BaseSite):
    """A listening socket served by :class:`WsService` (``/ws`` here, the rest by the
    runner's aiohttp server). ``sock`` serves an already bound socket (``livecommerce dev``)."""

    __slots__ = ("_host", "_port", "_sock", "service")

    def __init__(self, runner: web.AppRunner, host: str | None = None, port: int = 0, *,
                 sock: socket.socket | None = None, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._sock = sock
        self.service: WsService | None = None

    @property
    def name(self) -> str:
        server: Any = self._server
        if server is not None and server.sockets:
            host, port = server.sockets[0].getsockname()[:2]
            return f"http://{host}:{port}"
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert isinstance(runner, web.AppRunner) and runner.server is not None
        gw = runner.app[GW_KEY]
        service = self.service = WsService(gw, runner.server)
        gw.hooks.stop.append(service.abort_all)
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(service, sock=self._sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(service, self._host, self._port, backlog=self._backlog, reuse_address=True)


def make_site(runner: web.AppRunner, settings: Settings, host: str | None = None, port: int = 0, *,
              sock: socket.socket | None = None, backlog: int = 128) -> web.BaseSite:
    """The listening site of a gateway on the transport ``settings.ws_transport`` names.

    Raises:
        ConfigError: an unknown transport.
    """
    if settings.ws_transport == "own":
        return GatewaySite(runner, host, port, sock=sock, backlog=backlog)
    if settings.ws_transport == "aiohttp":
        if sock is not None:
            return web.SockSite(runner, sock, backlog=backlog)
        return web.TCPSite(runner, host, port, backlog=backlog)
    raise ConfigError(f"LC_WS_TRANSPORT={settings.ws_transport!r}: choose one of {', '.join(WS_TRANSPORTS)}")


def bound_port(site: web.BaseSite) -> int:
    """The port a started site listens on (port 0 asked for any)."""
    server: Any = getattr(site, "_server", None)
    assert server is not None and server.sockets
    return int(server.sockets[0].getsockname()[1])
