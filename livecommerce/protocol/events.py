"""Server events: the envelope shape and each event type's delivery class.

Every frame is one envelope ``{"t", "room", "seq"?, "ts", "d"}`` or a batch
``{"t": "batch", "room", "items": [...]}``. ``seq`` is set on room events that go through the
room history; counters and private replies carry none.
"""

from __future__ import annotations

import enum
from typing import Any


class Priority(enum.IntEnum):
    """CRITICAL: sent at once, never shed for a slow client (if it cannot be queued the
    client is told to resync). BATCHED: coalesced into one frame per room per tick; shed
    first when a client falls behind."""

    CRITICAL = 0
    BATCHED = 1


CRITICAL_TYPES = frozenset(
    {
        "welcome",
        "error",
        "ack",
        "pong",
        "sale.started",
        "sale.ended",
        "sale.soldout",
        "order.reserved",
        "order.paid",
        "order.cancelled",
        "order.refunded",
        "lottery.started",
        "lottery.ended",
        "coupon.dropped",
        "coupon.claimed",
        "redpacket.dropped",
        "redpacket.grabbed",
        "redpacket.ended",
        "room.live",
        "room.ended",
        "product.pinned",
        "bag.changed",
        "comment.deleted",
        "moderation",
        "points",
        "resync",
    }
)

# Counters (gauges): a later value supersedes an earlier one, so they are BATCHED (shed
# first for a slow client) and recovery sends only the latest value of each, per sale for
# ``sale.stock``. A sale's state changes (started, soldout, ended) are CRITICAL.
COUNTER_TYPES = frozenset({"likes", "online", "sale.stock", "leaderboard"})

# Events a reconnecting client may miss without harm when the gap is large.
SKIPPABLE_TYPES = frozenset({"comment", "gift"})


def priority_of(event_type: str) -> Priority:
    return Priority.CRITICAL if event_type in CRITICAL_TYPES else Priority.BATCHED


def envelope(
    t: str, room: str | None, d: dict[str, Any], *, ts: int, seq: int | None = None
) -> dict[str, Any]:
    """One server event, the way every event is built: ``{"t", "room", "ts", "d"}``.

    ``room=None`` makes an event that belongs to no room (``points``, ``points.redeem``: a
    private push to a user wherever they are), which carries no ``room`` key. ``seq`` is set
    only by what numbers room events (the broker, on publish); a caller leaves it out.
    """
    env: dict[str, Any] = {"t": t, "room": room, "ts": ts, "d": d} if room is not None else {"t": t, "ts": ts, "d": d}
    if seq is not None:
        env["seq"] = seq
    return env


def reply(t: str, cmd_id: Any, d: dict[str, Any] | None = None, *, ts: int | None = None,
          room: str | None = None) -> dict[str, Any]:
    """A command's answer to its sender: ``{"t", "id", "ts"?, "room"?, "d"?}`` (``ack``,
    ``pong``, ``order.reserved``, ``coupon.claimed`` ...), ``id`` echoing the command's."""
    out: dict[str, Any] = {"t": t, "id": cmd_id}
    if room is not None:
        out["room"] = room
    if ts is not None:
        out["ts"] = ts
    if d is not None:
        out["d"] = d
    return out


_NO_ID: Any = object()


def error_frame(code: str, message: str, *, cmd_id: Any = _NO_ID, **extra: Any) -> dict[str, Any]:
    """An error frame: ``{"t": "error", "id"?, "d": {"code", "message", ...extra}}``; ``id``
    (the command's, possibly null) only when it answers a command."""
    d = {"code": code, "message": message, **extra}
    return {"t": "error", "d": d} if cmd_id is _NO_ID else {"t": "error", "id": cmd_id, "d": d}


def recovery_plan(events: list[dict[str, Any]], *, max_skippable: int = 200) -> list[dict[str, Any]]:
    """Choose what a reconnecting client gets from the events it missed (in seq order).

    Critical and ordinary events are replayed in full and in order; each counter is sent
    once, as its latest value (one per type, and per sale for ``sale.stock``); when the gap
    holds more than ``max_skippable`` skippable events (comments, gifts) only the newest
    ``max_skippable`` are kept.
    """
    latest_counter: dict[tuple[str, Any], int] = {}
    for i, e in enumerate(events):
        if e["t"] in COUNTER_TYPES:
            latest_counter[_counter_key(e)] = i
    skippable = [i for i, e in enumerate(events) if e["t"] in SKIPPABLE_TYPES]
    drop = set(skippable[:-max_skippable]) if len(skippable) > max_skippable else set()
    out = []
    for i, e in enumerate(events):
        if i in drop:
            continue
        if e["t"] in COUNTER_TYPES and latest_counter[_counter_key(e)] != i:
            continue
        out.append(e)
    return out


def _counter_key(e: dict[str, Any]) -> tuple[str, Any]:
    """Which gauge a counter event sets: its type, and its sale for ``sale.stock``."""
    d = e.get("d")
    sid = d.get("sale_id") if isinstance(d, dict) else None
    return e["t"], sid if isinstance(sid, str) else None
