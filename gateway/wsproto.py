"""The WebSocket wire of the gateway's own transport, sans I/O: bytes in, values out.

Two parts, neither imports asyncio or a socket (``tests/test_architecture.py`` keeps it so);
``gateway/wsserver.py`` feeds them and writes what they return:

* the opening handshake (RFC 6455 section 4): :func:`head_end` finds the end of the request
  head in what has arrived (bounded by :data:`MAX_HEAD`), :func:`parse_head` reads it into a
  :class:`Request` (method, path, query, headers), :func:`accept` checks the WebSocket headers
  and answers ``101`` with ``Sec-WebSocket-Accept``, :func:`refusal` builds any other answer
  (400, 403, 429, 503) with the gateway's JSON error body;
* client frames (section 5): :class:`FrameReader` takes bytes as they arrive and returns the
  :class:`Message`, :class:`Ping`, :class:`Pong` and :class:`Close` events they complete. A
  peer that breaks the protocol ends the reader with one :class:`Failed` event carrying the
  close code to answer with: the errors below carry it, and :meth:`FrameReader.feed` is the one
  place that turns them into a code (as ``websockets``' ``Protocol.parse`` does).

Errors (raised inside, returned as :class:`Failed` at the boundary)::

    WsError (close_code)
     +-- ProtocolViolation  1002  unmasked frame, reserved bits, unknown opcode, bad
     |                            fragmentation, a control frame fragmented or over 125 bytes,
     |                            a bad close code
     +-- InvalidText        1007  a text message or close reason that is not UTF-8
     +-- MessageTooBig      1009  a message (all its fragments) over ``max_size``

    HandshakeError (status)   a request head that cannot be answered 101: 400
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qsl

#: the longest request head read before the answer is 400 (aiohttp allows 8190 per line)
MAX_HEAD: Final = 16 * 1024
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_REASONS: Final = {101: "Switching Protocols", 400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests",
                   503: "Service Unavailable"}

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_PROTOCOL: Final = 1002
CLOSE_INVALID_TEXT: Final = 1007
CLOSE_TOO_BIG: Final = 1009


# ====================================================================== errors
class WsError(Exception):
    """A peer broke the WebSocket protocol; ``close_code`` is the answer."""

    close_code = CLOSE_PROTOCOL


class ProtocolViolation(WsError):
    close_code = CLOSE_PROTOCOL


class InvalidText(WsError):
    close_code = CLOSE_INVALID_TEXT


class MessageTooBig(WsError):
    close_code = CLOSE_TOO_BIG


class HandshakeError(Exception):
    """A request head that cannot be upgraded; ``status`` is the HTTP answer's status."""

    def __init__(self, text: str, status: int = 400) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


# ====================================================================== the handshake
@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head. Header names are lower case, in arrival order."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def params(self) -> dict[str, str]:
        """The query's parameters; the first of a repeated name wins (as aiohttp's
        ``request.query.get``)."""
        out: dict[str, str] = {}
        for k, v in parse_qsl(self.query, keep_blank_values=True):
            out.setdefault(k, v)
        return out

    def wants_websocket(self) -> bool:
        """An upgrade to WebSocket was asked for (``Upgrade: websocket``)."""
        up = self.header("upgrade")
        return up is not None and "websocket" in _tokens(up)


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",")]


def head_end(buf: bytes | bytearray) -> int:
    """The length of the request head in ``buf`` (up to and including the blank line), or -1
    while it has not all arrived.

    Raises:
        HandshakeError: no end within :data:`MAX_HEAD` bytes.
    """
    i = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if i >= 0:
        return i + 4
    if len(buf) > MAX_HEAD:
        raise HandshakeError(f"request head over {MAX_HEAD} bytes")
    return -1


def parse_head(head: bytes) -> Request:
    """Parse ``METHOD TARGET HTTP/1.1`` and its header lines.

    Raises:
        HandshakeError: not a well-formed HTTP/1.1 request head (400).
    """
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HandshakeError("request head is not text") from None
    lines = text.split("\r\n")
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise HandshakeError("empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1] or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HandshakeError("request line must be METHOD TARGET HTTP/1.1")
    method, target, _version = parts
    if not target.startswith("/"):
        raise HandshakeError("request target must be a path")
    path, _, query = target.partition("?")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t\"(),/;<=>?@[\\]{}"):
            raise HandshakeError("malformed header line")
        if any(ord(c) < 32 and c != "\t" for c in value):
            raise HandshakeError("control character in a header value")
        headers.append((name.lower(), value.strip(" \t")))
    return Request(method, path, query, tuple(headers))


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def accept(req: Request) -> bytes:
    """The ``101 Switching Protocols`` answer to a WebSocket upgrade request.

    Raises:
        HandshakeError: not a GET, no ``Connection: upgrade``, no valid 16-byte
            ``Sec-WebSocket-Key``, or a ``Sec-WebSocket-Version`` other than 13 (400, with
            the reason aiohttp gave for the same requests).
    """
    if req.method != "GET":
        raise HandshakeError("WebSocket upgrade needs GET")
    if not req.wants_websocket():
        raise HandshakeError("No WebSocket UPGRADE hdr")
    conn = req.header("connection")
    if conn is None or "upgrade" not in _tokens(conn):
        raise HandshakeError("No CONNECTION upgrade hdr")
    version = req.header("sec-websocket-version")
    if version != "13":
        raise HandshakeError(f"Unsupported version: {version}")
    key = req.header("sec-websocket-key") or ""
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(f"Handshake error: {key!r}")
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


def refusal(status: int, code: str, message: str) -> bytes:
    """An answer other than 101: ``status`` with the gateway's documented error body
    (``{"error": {"code", "message"}}``, as ``gateway/http.py`` answers on aiohttp); the
    connection closes after it."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


# ====================================================================== client frames
@dataclass(frozen=True, slots=True)
class Message:
    """A whole data message: ``str`` for a text message, ``bytes`` for a binary one."""

    data: str | bytes


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's close frame: ``code`` None when it carried no status."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The peer broke the protocol: close with ``code``; the reader reads nothing more."""

    code: int
    reason: str


Event = Message | Ping | Pong | Close | Failed

#: where a connection's message stream is: between messages, or inside a fragmented one
MsgState = Literal["idle", "fragmented", "closed"]
#: what a data frame does to it: starts a message (whole or first fragment), or continues one
FrameKind = Literal["whole", "first", "middle", "last"]

#: the one table of legal data frames; a missing pair is a protocol violation
MESSAGE_TRANSITIONS: Final[dict[tuple[MsgState, FrameKind], MsgState]] = {
    ("idle", "whole"): "idle",
    ("idle", "first"): "fragmented",
    ("fragmented", "middle"): "fragmented",
    ("fragmented", "last"): "idle",
}

_DATA_OPCODES: Final = frozenset({OP_CONT, OP_TEXT, OP_BINARY})
_CONTROL_OPCODES: Final = frozenset({OP_CLOSE, OP_PING, OP_PONG})


def _close_code_ok(code: int) -> bool:
    """Codes a peer may send (RFC 6455 7.4.1; 1004-1006 and 1015 are never sent)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or 3000 <= code <= 4999


def unmask(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (as one big integer: fast in CPython)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class FrameReader:
    """Client frames to events. Server side: every client frame must be masked.

    ``max_size`` bounds a message (all its fragments): past it the reader fails with 1009
    as soon as the header that crosses it arrives, before the payload is buffered.
    """

    __slots__ = ("_buf", "_frag_op", "_parts", "_size", "max_size", "state")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.state: MsgState = "idle"
        self._buf: bytes = b""
        self._frag_op = 0  # the opcode of the fragmented message in progress
        self._parts: list[bytes] | None = None
        self._size = 0

    @property
    def done(self) -> bool:
        """A close frame or a protocol error ended the stream."""
        return self.state == "closed"

    def feed(self, data: bytes) -> list[Event]:
        """Take what arrived; return the events it completes, in order. After a
        :class:`Failed` or a :class:`Close`, further bytes are ignored."""
        if self.done:
            return []
        buf = self._buf + data if self._buf else data
        out: list[Event] = []
        pos = 0
        try:
            while True:
                used = self._one(buf, pos, out)
                if not used:
                    break
                pos += used
                if self.done:
                    break
        except WsError as exc:
            self.state = "closed"
            self._parts = None
            out.append(Failed(exc.close_code, str(exc)))
        self._buf = b"" if self.done or pos >= len(buf) else bytes(buf[pos:])
        return out

    def _one(self, buf: bytes, pos: int, out: list[Event]) -> int:
        """Parse one frame at ``buf[pos:]``: its length, or 0 if it has not all arrived.

        Raises:
            ProtocolViolation, InvalidText, MessageTooBig: see the module docstring.
        """
        avail = len(buf) - pos
        if avail < 2:
            return 0
        b0, b1 = buf[pos], buf[pos + 1]
        fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
        if b0 & 0x70:
            raise ProtocolViolation("reserved bits set (no extension was agreed)")
        if not b1 & 0x80:
            raise ProtocolViolation("client frames must be masked")
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
            raise ProtocolViolation(f"unknown opcode {opcode:#x}")
        head = 2
        if n == 126:
            if avail < 4:
                return 0
            n = struct.unpack_from("!H", buf, pos + 2)[0]
            head = 4
        elif n == 127:
            if avail < 10:
                return 0
            n = struct.unpack_from("!Q", buf, pos + 2)[0]
            if n >> 63:
                raise ProtocolViolation("payload length with the high bit set")
            head = 10
        if opcode in _CONTROL_OPCODES:
            if not fin:
                raise ProtocolViolation("fragmented control frame")
            if n > 125:
                raise ProtocolViolation("control frame over 125 bytes")
        elif self._size + n > self.max_size:
            raise MessageTooBig(f"message over {self.max_size} bytes")
        end = pos + head + 4 + n
        if len(buf) < end:
            return 0
        mask = bytes(buf[pos + head : pos + head + 4])
        payload = unmask(memoryview(buf)[pos + head + 4 : end], mask)
        if opcode in _CONTROL_OPCODES:
            out.append(self._control(opcode, payload))
        else:
            self._data(opcode, bool(fin), payload, out)
        return end - pos

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        self.state = "closed"
        self._parts = None
        if not payload:
            return Close(None, "")
        if len(payload) == 1:
            raise ProtocolViolation("close frame with a 1-byte payload")
        code = struct.unpack_from("!H", payload)[0]
        if not _close_code_ok(code):
            raise ProtocolViolation(f"invalid close code {code}")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidText("close reason is not UTF-8") from None
        return Close(code, reason)

    def _data(self, opcode: int, fin: bool, payload: bytes, out: list[Event]) -> None:
        kind: FrameKind
        if opcode == OP_CONT:
            kind = "last" if fin else "middle"
        else:
            kind = "whole" if fin else "first"
        nxt = MESSAGE_TRANSITIONS.get((self.state, kind))
        if nxt is None:
            if kind in ("middle", "last"):
                raise ProtocolViolation("continuation frame with no message to continue")
            raise ProtocolViolation("new message before the fragmented one ended")
        self.state = nxt
        if kind == "whole":
            out.append(_message(opcode, payload))
            return
        if kind == "first":
            self._frag_op, self._parts, self._size = opcode, [payload], len(payload)
            return
        assert self._parts is not None
        self._parts.append(payload)
        self._size += len(payload)
        if kind == "last":
            whole = b"".join(self._parts)
            self._parts, self._size = None, 0
            out.append(_message(self._frag_op, whole))


def _message(opcode: int, payload: bytes) -> Message:
    if opcode == OP_TEXT:
        try:
            return Message(payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidText("text message is not UTF-8") from None
    return Message(payload)
