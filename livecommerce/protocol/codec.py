"""Encoding and decoding of frames, msgpack (binary, default) or JSON (text).

Decoding is the one receive boundary: any malformed input becomes :class:`BadFrame` here.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import msgpack

from ..errors import BadFrame, FrameTooBig

Format = Literal["msgpack", "json"]
FORMATS: tuple[Format, ...] = ("msgpack", "json")

_packb = msgpack.Packer(use_bin_type=True).pack
_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode(obj: Any, fmt: Format) -> bytes | str:
    """msgpack gives bytes (a binary frame), JSON gives str (a text frame)."""
    if fmt == "msgpack":
        packed: bytes = _packb(obj)
        return packed
    return _json_dumps(obj)


def encode_bytes(obj: Any, fmt: Format) -> bytes:
    if fmt == "msgpack":
        packed: bytes = _packb(obj)  # no copy: the Packer gives bytes
        return packed
    return _json_dumps(obj).encode()


def encode_batch(room: str, items: list[dict[str, Any]], fmt: Format) -> bytes:
    """One batch frame payload for a tick's coalesced events, as bytes."""
    return encode_bytes({"t": "batch", "room": room, "items": items}, fmt)


INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what msgpack (and so every broadcast) can carry


def json_int(text: str) -> int:
    """``parse_int`` for ``json.loads``: an integer the wire can carry, else ValueError."""
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError("integer outside the 64-bit range")
    return value


def decode_frame(data: bytes | str, fmt: Format, *, max_bytes: int) -> dict[str, Any]:
    """Decode one client frame into a dict with a string ``t``.

    Raises:
        FrameTooBig: the frame is larger than ``max_bytes``.
        BadFrame: not decodable in ``fmt``, not a map, or no string ``t``.
    """
    size = len(data)
    if size > max_bytes:
        raise FrameTooBig(f"frame of {size} bytes is over the {max_bytes} byte limit")
    try:
        if isinstance(data, str):
            obj = json.loads(data, parse_int=json_int)
        elif fmt == "msgpack":
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            obj = json.loads(data.decode("utf-8"), parse_int=json_int)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, UnicodeDecodeError) as exc:
        raise BadFrame(f"cannot decode {fmt} frame: {exc.__class__.__name__}", code="bad_frame") from exc
    except Exception as exc:  # msgpack may raise others on hostile input
        raise BadFrame(f"cannot decode {fmt} frame", code="bad_frame") from exc
    if not isinstance(obj, dict):
        raise BadFrame("a frame must be a map with a 't' field", code="bad_frame")
    t = obj.get("t")
    if not isinstance(t, str) or not t:
        raise BadFrame("missing or non-string 't'", code="bad_frame")
    return obj


def pack_internal(obj: Any) -> bytes:
    """Encoding used between our own processes (pub/sub payloads, history entries)."""
    packed: bytes = _packb(obj)
    return packed


def unpack_internal(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
