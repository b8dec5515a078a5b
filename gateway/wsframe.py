"""Server-side WebSocket frames built once and written as the same bytes to many sockets.

Server frames are never masked (RFC 6455 5.1), so one frame's bytes are valid on every
connection: the fan-out path builds a frame once per format and calls ``transport.write``
per connection, with no per-connection encoding, task or await.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def ws_frame(payload: bytes, opcode: int) -> bytes:
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


#: the node's heartbeat ping (the same bytes to every connection; ``Hub``'s sweep)
PING_FRAME = bytes((0x80 | OP_PING, 0))


def close_frame(code: int, reason: str = "") -> bytes:
    return ws_frame(struct.pack("!H", code) + reason.encode()[:120], OP_CLOSE)
