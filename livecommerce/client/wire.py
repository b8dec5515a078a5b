"""The WebSocket wire contract seen from a client, without I/O: the URL, frames in and out,
replies told from events, and ``seq`` gaps.

Every transport drives these functions: the asyncio client (:mod:`livecommerce.client.ws`)
and the locust users (``loadtests/lcws.py``, websocket-client under gevent), so they agree
on what a frame, a reply and a gap are. The contract itself is README.md, "Wire contract".
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import msgpack

from ..protocol.codec import FORMATS, Format, encode

__all__ = [
    "FORMATS",
    "CommandIds",
    "Format",
    "SeqTracker",
    "command_frame",
    "decode",
    "encode",
    "event_items",
    "is_reply",
    "reply_error",
    "ws_url",
]

#: a room's first seq is ``now_ms * 1000 + 1`` (docs/design.md): a jump bigger than this is a
#: sequence seeded again after its history was lost, not events missed
RESEED_JUMP = 1_000_000

#: what the close codes of the wire contract mean (README.md, "Wire contract")
CLOSE_CODES: dict[int, str] = {
    1000: "normal closure",
    1001: "going away",
    1006: "dropped without a close frame",
    1009: "frame too big",
    1011: "server error",
    1012: "gateway restarting: reconnect elsewhere with since=",
    1013: "slow consumer: reconnect with since=",
    4401: "missing, malformed, tampered or expired token",
    4403: "banned or kicked",
    4429: "flooding: too many rate-limited commands",
}
#: closes after which a client reconnects (with ``since=``, after a back-off):
#: docs/deploy.md, "What clients retry, and how"
RECONNECT_CLOSES = frozenset({1006, 1011, 1012, 1013})


def ws_url(base: str, room: str, token: str, fmt: Format = "msgpack", *, since: int | None = None) -> str:
    """``ws(s)://HOST/ws?room=&token=&format=[&since=]`` from a gateway's ``http(s)://`` base."""
    b = base.rstrip("/")
    if b.startswith("https://"):
        b = "wss://" + b[len("https://"):]
    elif b.startswith("http://"):
        b = "ws://" + b[len("http://"):]
    if not b.endswith("/ws"):
        b += "/ws"
    query: dict[str, Any] = {"room": room, "token": token, "format": fmt}
    if since is not None:
        query["since"] = since
    return f"{b}?{urlencode(query)}"


def decode(data: bytes | str) -> dict[str, Any]:
    """One server frame: text is JSON, binary is msgpack. Raises ValueError when it is neither
    or not a map."""
    try:
        obj = json.loads(data) if isinstance(data, str) else msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ValueError(f"undecodable frame: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"a frame is a map, got {type(obj).__name__}")
    return obj


class CommandIds:
    """Ids for one connection's commands: 1, 2, 3 ... (replies echo them)."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def __call__(self) -> int:
        return next(self._next)


def command_frame(t: str, cmd_id: int, d: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"t": t, "id": cmd_id, "d": d or {}}


def event_items(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``batch`` frame's items, or the frame itself."""
    if frame.get("t") == "batch":
        items = frame.get("items")
        return [e for e in items if isinstance(e, dict)] if isinstance(items, list) else []
    return [frame]


def is_reply(item: dict[str, Any]) -> bool:
    """A reply to one of this connection's commands: it carries the command's ``id``. (Room
    events have none; a reply may arrive inside a ``batch``.)"""
    return item.get("id") is not None and item.get("t") != "welcome"


def reply_error(reply: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """``(code, message, details)`` of an ``error`` reply, else None."""
    if reply.get("t") != "error":
        return None
    d = reply.get("d") if isinstance(reply.get("d"), dict) else {}
    assert isinstance(d, dict)
    details = {k: v for k, v in d.items() if k not in ("code", "message")}
    return str(d.get("code", "error")), str(d.get("message", "")), details


@dataclass
class SeqTracker:
    """The room events a client did not receive, from the ``seq`` of those it did.

    ``welcome`` gives the room's seq when the client joined (0: no history yet); each room
    event carries the next. A seq more than one past the last is a gap of the difference
    (events shed by a hot room's comment budget, or lost: ``since=`` recovers them); a jump
    past :data:`RESEED_JUMP` is a sequence seeded again, not a gap; older seqs (a replay)
    change nothing."""

    last: int | None = None
    gaps: int = 0
    gap_log: list[tuple[int, int]] = field(default_factory=list)  # (after seq, missed), the last 100

    def welcome(self, seq: Any) -> None:
        self.last = seq if isinstance(seq, int) and seq > 0 else None

    def see(self, seq: Any) -> int:
        """Record one event's seq; returns how many events were missed before it."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            return 0
        missed = 0
        if self.last is not None and self.last + 1 < seq <= self.last + RESEED_JUMP:
            missed = seq - self.last - 1
            self.gaps += missed
            self.gap_log = [*self.gap_log[-99:], (self.last, missed)]
        if self.last is None or seq > self.last:
            self.last = seq
        return missed
