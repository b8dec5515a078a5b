"""One client connection: its identity, format, send-buffer policy and counters.

Writes go straight to the transport as pre-built frames (see ``wsframe``). The buffer policy:

* a BATCHED frame is shed (counted in ``drops``) while the transport's write buffer holds
  more than ``soft`` bytes;
* a CRITICAL frame is always queued unless the buffer holds more than ``hard`` bytes, in
  which case the client cannot be kept consistent and is closed with 1013 (reconnect and
  resync with ``since=``);
* a client that stays above ``soft`` for longer than the grace period is closed with 1013
  by the hub's tick, so a stalled reader never slows the room.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Protocol

from livecommerce.auth import Identity
from livecommerce.comments import FloodGuard, TokenBucket
from livecommerce.errors import CLOSE_SLOW
from livecommerce.protocol.codec import Format, encode_bytes

from .wsframe import OP_BINARY, OP_TEXT, close_frame, ws_frame

_ids = itertools.count(1)
log = logging.getLogger("livecommerce.gateway.conn")


class Link(Protocol):
    """The transport's side of a connection: how the gateway closes it with a code.

    Two transports carry connections (``LC_WS_TRANSPORT``): aiohttp's
    ``web.WebSocketResponse`` fits as it is; the gateway's own is ``wsserver.WsLink``.
    ``close`` sends the close frame, waits (bounded) for the peer's, and closes the socket;
    it returns False if the connection was already closing.
    """

    @property
    def closed(self) -> bool: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class Conn:
    __slots__ = (
        "__weakref__",
        "behind_since",
        "closed",
        "cmd_bucket",
        "drops",
        "flood",
        "fmt",
        "frames_out",
        "id",
        "ident",
        "ip",
        "joined_ms",
        "last_seen",
        "link",
        "opcode",
        "pinged_at",
        "room",
        "skip_seq",
        "transport",
    )

    def __init__(
        self,
        link: Link,
        transport: asyncio.Transport,
        ident: Identity,
        room: str,
        fmt: Format,
        *,
        ip: str,
        cmd_bucket: TokenBucket,
        flood: FloodGuard | None = None,
        now: float,
    ) -> None:
        self.id = next(_ids)
        self.link = link
        self.transport = transport
        self.ident = ident
        self.room = room
        self.fmt: Format = fmt
        self.opcode = OP_BINARY if fmt == "msgpack" else OP_TEXT
        self.ip = ip
        self.cmd_bucket = cmd_bucket
        self.flood = flood  # made at the first rate_limited (an empty deque is 760 bytes)
        self.drops = 0
        self.frames_out = 0
        self.behind_since = 0.0
        self.skip_seq = 0  # batch items with seq <= this were already sent (recovery)
        self.closed = False
        self.joined_ms = int(now * 1000)
        self.last_seen = now  # the last frame from the client (any: data, ping, pong)
        self.pinged_at = 0.0  # the node's last heartbeat ping to it (Hub.sweep_heartbeats)

    @property
    def user(self) -> str:
        return self.ident.user

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def write(self, frame: bytes, *, critical: bool, soft: int, hard: int, now: float) -> int:
        """Queue one pre-built frame. Returns 1 if written, 0 if shed, -1 if the client
        must be closed (a critical frame cannot be queued)."""
        if self.closed:
            return 0
        if self.transport.is_closing():  # the peer is gone; the handler cleans up soon
            self.closed = True
            return 0
        size = self.transport.get_write_buffer_size()
        if size > soft:
            if not self.behind_since:
                self.behind_since = now
            if not critical:
                self.drops += 1
                return 0
            if size > hard:
                return -1
        elif self.behind_since:
            self.behind_since = 0.0
        self.transport.write(frame)
        self.frames_out += 1
        return 1

    def send(self, obj: dict[str, Any]) -> None:
        """Encode and write one private frame (replies, welcome). Never shed."""
        if self.closed or self.transport.is_closing():
            return
        self.transport.write(ws_frame(encode_bytes(obj, self.fmt), self.opcode))
        self.frames_out += 1

    def close_now(self, code: int, reason: str = "") -> None:
        """Send a close frame and close; used from synchronous fan-out code.

        The kernel still delivers what is buffered; a peer that never reads is aborted
        after 30 s.
        """
        if self.closed:
            return
        self.closed = True
        try:
            self.transport.write(close_frame(code, reason))
            self.transport.close()
            loop = asyncio.get_running_loop()
            loop.call_later(30.0, self.transport.abort)
        except Exception:  # transport already gone
            pass
        log.info("conn.closed", extra={"conn": self.id, "code": code, "reason": reason, "drops": self.drops})

    def close_slow(self) -> None:
        self.close_now(CLOSE_SLOW, "slow consumer: reconnect with since=")
