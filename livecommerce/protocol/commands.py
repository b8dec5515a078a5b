"""Client commands: one frozen dataclass per wire ``t``, validated on creation.

:func:`parse_command` turns a decoded frame into a command or raises :class:`BadFrame`
(``unknown_type`` or ``invalid``). Which roles may send each command is in ``ROLES``; the
gateway checks it before any effect.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import BadFrame

VIEWER, HOST, OPS = "viewer", "host", "ops"
ANY = frozenset({VIEWER, HOST, OPS})
HOST_OPS = frozenset({HOST, OPS})


@dataclass(frozen=True, slots=True)
class Command:
    t: ClassVar[str] = ""
    roles: ClassVar[frozenset[str]] = ANY
    id: Any = None  # client id echoed in the reply


def _text(v: Any, name: str, *, max_len: int = 10_000, min_len: int = 0) -> str:
    if not isinstance(v, str):
        raise BadFrame(f"'{name}' must be a string", code="invalid")
    if not (min_len <= len(v) <= max_len):
        raise BadFrame(f"'{name}' must be {min_len}..{max_len} characters", code="invalid")
    return v


def _int(v: Any, name: str, *, lo: int = 1, hi: int = 1_000_000) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadFrame(f"'{name}' must be an integer", code="invalid")
    if not (lo <= v <= hi):
        raise BadFrame(f"'{name}' must be in {lo}..{hi}", code="invalid")
    return v


def _ident(v: Any, name: str) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    s = _text(v, name, max_len=64, min_len=1)
    if not all(c.isalnum() or c in "-_.:" for c in s):
        raise BadFrame(f"'{name}' may hold letters, digits and - _ . : only", code="invalid")
    return s


@dataclass(frozen=True, slots=True)
class Ping(Command):
    t: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class Comment(Command):
    t: ClassVar[str] = "comment"
    text: str = ""


@dataclass(frozen=True, slots=True)
class Like(Command):
    t: ClassVar[str] = "like"
    count: int = 1


@dataclass(frozen=True, slots=True)
class Gift(Command):
    t: ClassVar[str] = "gift"
    gift_id: str = ""
    count: int = 1
    combo_id: str | None = None
    request_id: str | None = None  # optional: a retry with the same id answers the first outcome


@dataclass(frozen=True, slots=True)
class Buy(Command):
    t: ClassVar[str] = "buy"
    sale_id: str = ""
    qty: int = 1
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class LotteryEnter(Command):
    t: ClassVar[str] = "lottery.enter"
    lottery_id: str = ""


@dataclass(frozen=True, slots=True)
class CouponClaim(Command):
    t: ClassVar[str] = "coupon.claim"
    drop_id: str = ""


@dataclass(frozen=True, slots=True)
class RedPacketGrab(Command):
    """Grab a share of a red packet; ``password`` for a password packet (commenting it grabs too)."""

    t: ClassVar[str] = "redpacket.grab"
    packet_id: str = ""
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Pin(Command):
    t: ClassVar[str] = "pin"
    roles: ClassVar[frozenset[str]] = HOST_OPS
    product_id: str = ""


@dataclass(frozen=True, slots=True)
class HostAction(Command):
    """``sale.start``, ``lottery.start``, ``coupon.drop``, ``room.live``, ``room.end`` and the
    room's list (``bag.set``, ``bag.add``, ``bag.remove``, ``bag.order``, ``bag.explain``):
    the WebSocket twins of host HTTP endpoints; ``d`` is validated by the same code as the
    HTTP body."""

    t: ClassVar[str] = "host"
    roles: ClassVar[frozenset[str]] = HOST_OPS
    action: str = ""
    d: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CartAction(Command):
    """``cart.get``, ``cart.add``, ``cart.set``, ``cart.remove``, ``cart.clear``,
    ``cart.checkout``: the sender's cart in the connection's room, the WebSocket twins of
    the cart's HTTP routes; ``d`` is validated by the same code as the HTTP body
    (``gateway/cart.py``: unknown fields, ids, quantities; ``request_id`` for a checkout)."""

    t: ClassVar[str] = "cart"
    action: str = ""
    d: dict[str, Any] = dataclasses.field(default_factory=dict)


CART_ACTIONS = frozenset({"cart.get", "cart.add", "cart.set", "cart.remove", "cart.clear", "cart.checkout"})

HOST_ACTIONS = frozenset({"sale.start", "lottery.start", "coupon.drop", "room.live", "room.end",
                          "bag.set", "bag.add", "bag.remove", "bag.order", "bag.explain"})


def _parse_ping(d: dict[str, Any], cid: Any) -> Command:
    return Ping(id=cid)


def _parse_comment(d: dict[str, Any], cid: Any) -> Command:
    return Comment(id=cid, text=_text(d.get("text"), "text", max_len=10_000, min_len=1))


def _parse_like(d: dict[str, Any], cid: Any) -> Command:
    return Like(id=cid, count=_int(d.get("count", 1), "count", hi=1000))


def _parse_gift(d: dict[str, Any], cid: Any) -> Command:
    combo = d.get("combo_id")
    rid = d.get("request_id")
    return Gift(
        id=cid,
        gift_id=_ident(d.get("gift_id"), "gift_id"),
        count=_int(d.get("count", 1), "count", hi=9999),
        combo_id=None if combo is None else _ident(combo, "combo_id"),
        request_id=None if rid is None else _ident(rid, "request_id"),
    )


def _parse_buy(d: dict[str, Any], cid: Any) -> Command:
    return Buy(
        id=cid,
        sale_id=_ident(d.get("sale_id"), "sale_id"),
        qty=_int(d.get("qty", 1), "qty", hi=1000),
        request_id=_ident(d.get("request_id"), "request_id"),
    )


def _parse_lottery_enter(d: dict[str, Any], cid: Any) -> Command:
    return LotteryEnter(id=cid, lottery_id=_ident(d.get("lottery_id"), "lottery_id"))


def _parse_coupon_claim(d: dict[str, Any], cid: Any) -> Command:
    return CouponClaim(id=cid, drop_id=_ident(d.get("drop_id"), "drop_id"))


def _parse_redpacket_grab(d: dict[str, Any], cid: Any) -> Command:
    pw = d.get("password")
    return RedPacketGrab(id=cid, packet_id=_ident(d.get("packet_id"), "packet_id"),
                         password=None if pw is None else _text(pw, "password", max_len=64))


def _parse_pin(d: dict[str, Any], cid: Any) -> Command:
    return Pin(id=cid, product_id=_ident(d.get("product_id"), "product_id"))


_PARSERS = {
    "ping": _parse_ping,
    "comment": _parse_comment,
    "like": _parse_like,
    "gift": _parse_gift,
    "buy": _parse_buy,
    "lottery.enter": _parse_lottery_enter,
    "coupon.claim": _parse_coupon_claim,
    "redpacket.grab": _parse_redpacket_grab,
    "pin": _parse_pin,
}

COMMANDS: frozenset[str] = frozenset(_PARSERS) | HOST_ACTIONS | CART_ACTIONS

ROLES: dict[str, frozenset[str]] = {
    "ping": ANY,
    "comment": ANY,
    "like": ANY,
    "gift": ANY,
    "buy": ANY,
    "lottery.enter": ANY,
    "coupon.claim": ANY,
    "redpacket.grab": ANY,
    "pin": HOST_OPS,
    **{a: HOST_OPS for a in HOST_ACTIONS},
    **{a: ANY for a in CART_ACTIONS},
}


#: Commands a connection may pipeline: the gateway reads the connection's next frames while
#: one of these is in progress, and still writes every answer in the order of the frames. A
#: command belongs here only when its handler does what orders its effects when it is
#: called, before returning the awaitable of its answer (``gift``: submitted to the group
#: commit, which decides in arrival order); any other command waits until the pipelined
#: ones before it are answered.
PIPELINED: frozenset[str] = frozenset({"gift"})


def parse_command(frame: dict[str, Any]) -> Command:
    """Build the command for a decoded frame.

    The command's fields may sit in ``d`` (the envelope form) or at the top level.

    Raises:
        BadFrame: ``unknown_type`` for an unknown ``t``, ``invalid`` for bad fields.
    """
    t = frame["t"]
    cid = frame.get("id")
    if cid is not None and not isinstance(cid, (int, str)):
        raise BadFrame("'id' must be a string or an integer", code="invalid")
    if isinstance(cid, str) and len(cid) > 64:
        raise BadFrame("'id' is longer than 64 characters", code="invalid")
    d = frame.get("d", frame)
    if not isinstance(d, dict):
        raise BadFrame("'d' must be a map", code="invalid")
    if t in HOST_ACTIONS:
        return HostAction(id=cid, action=t, d={k: v for k, v in d.items() if k not in ("t", "id")})
    if t in CART_ACTIONS:
        return CartAction(id=cid, action=t, d={k: v for k, v in d.items() if k not in ("t", "id")})
    parser = _PARSERS.get(t)
    if parser is None:
        raise BadFrame(f"unknown command type {t[:40]!r}", code="unknown_type")
    return parser(d, cid)
