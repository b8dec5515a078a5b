"""A room's state as a gateway node holds it for ``welcome``: no I/O, events in, fields out.

A node that serves a room keeps one :class:`RoomSnapshot` of it, read from Redis once
(``room_snapshot_redis``) and then kept current by the room's own events, which the node
receives anyway for its viewers. A joiner's ``welcome`` is then built from memory:

* ``seq``: the room's latest seq the snapshot has seen; the state below is the state after
  that event (a later event reaches the joiner through the room's channel as usual);
* ``show`` (:func:`~livecommerce.rooms.public_room` of the room's meta), ``pin``;
* ``lotteries`` (open ones: started, deadline ahead, not closed by the show's end),
  ``coupons`` (drops not expired, with coupons left, not closed by the show's end) and
  ``redpackets`` (red packets dropped, not expired, not ended);
* ``likes`` and ``leaderboard``: the figures this node last pushed to its viewers (both are
  node-local pushes, about once a second, not room events).

:func:`apply` is the rule for one room event: the events that carry the new state
(``product.pinned``/``unpinned``, ``lottery.started``/``ended``, ``coupon.dropped``,
``redpacket.dropped``/``ended``) update
the snapshot; ``room.live``/``room.ended`` (rare, and a summary is the adapter's to compute)
ask for a reload. An event at or below the snapshot's seq is already in it and is ignored,
so a reload followed by the events that arrived meanwhile lands on the same state.

What no event carries is read again by the node about once a second for the snapshots that
need it (:func:`needs_refresh`): the meta of a room not created yet (creating a room
publishes nothing) and the counts of listed coupon drops (claims publish nothing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .rooms import public_room

#: room events that change what a snapshot holds (the node's hub observers)
SNAPSHOT_EVENTS = (
    "room.live",
    "room.ended",
    "product.pinned",
    "product.unpinned",
    "lottery.started",
    "lottery.ended",
    "coupon.dropped",
    "redpacket.dropped",
    "redpacket.ended",
)
#: node-local pushes the snapshot follows (``Hub.send_local``)
LOCAL_EVENTS = ("likes", "leaderboard")

Applied = Literal["applied", "ignored", "reload"]


@dataclass(slots=True)
class RoomSnapshot:
    """One room's welcome state (see the module docstring). ``version`` counts changes, so
    a periodic re-read that raced with an event can tell and be dropped."""

    room: str
    seq: int
    meta: dict[str, str] | None  # the room's meta hash; None: never created
    pin: dict[str, Any] | None
    likes: int
    leaderboard: list[dict[str, Any]]  # ranked: [{rank, id, score}]
    lotteries: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> Lottery.public()
    coupons: dict[str, dict[str, Any]] = field(default_factory=dict)  # drop id -> public + counts
    redpackets: dict[str, dict[str, Any]] = field(default_factory=dict)  # packet id -> RedPacket.public()
    version: int = 0


def coupon_entry(public: Mapping[str, Any], remaining: int, claimed: int, used: int) -> dict[str, Any]:
    """A coupon drop as ``welcome`` lists it: its public fields and its counts."""
    return {**public, "remaining": remaining, "claimed": claimed, "used": used}


def apply(snap: RoomSnapshot, env: Mapping[str, Any]) -> Applied:
    """Apply one room event (an envelope with ``seq``) to ``snap`` in place."""
    seq = env.get("seq")
    if not isinstance(seq, int) or seq <= snap.seq:
        return "ignored"
    t = env.get("t")
    d = env.get("d")
    if not isinstance(d, dict):
        d = {}
    if t in ("room.live", "room.ended"):
        return "reload"
    snap.seq = seq
    if t == "product.pinned":
        snap.pin = dict(d)
    elif t == "product.unpinned":
        snap.pin = None
    elif t == "lottery.started":
        if isinstance(d.get("id"), str):
            snap.lotteries[d["id"]] = dict(d)
    elif t == "lottery.ended":
        snap.lotteries.pop(str(d.get("id")), None)
    elif t == "redpacket.dropped":
        if isinstance(d.get("id"), str):
            snap.redpackets[d["id"]] = dict(d)
    elif t == "redpacket.ended":
        snap.redpackets.pop(str(d.get("id")), None)
    elif t == "coupon.dropped":
        did = d.get("drop_id")
        if isinstance(did, str):
            remaining = int(d.get("remaining") or 0)
            quantity = int(d.get("quantity") or 0)
            public = {
                "drop_id": did,
                "room": snap.room,
                "kind": d.get("kind"),
                "threshold": d.get("threshold"),
                "value": d.get("value"),
                "quantity": quantity,
                "expires_ms": d.get("expires_ms"),
                "by": d.get("by"),
            }
            snap.coupons[did] = coupon_entry(public, remaining, quantity - remaining, 0)
    snap.version += 1
    return "applied"


def apply_local(snap: RoomSnapshot, env: Mapping[str, Any]) -> None:
    """A node-local push (``likes {total}``, ``leaderboard {top}``) this node sent its viewers."""
    d = env.get("d")
    if not isinstance(d, dict):
        return
    if env.get("t") == "likes" and isinstance(d.get("total"), int):
        snap.likes = d["total"]
        snap.version += 1
    elif env.get("t") == "leaderboard" and isinstance(d.get("top"), list):
        snap.leaderboard = list(d["top"])
        snap.version += 1


def claimed(snap: RoomSnapshot, drop_id: str, remaining: int) -> None:
    """A claim on this node answered ``remaining`` for one of the room's drops."""
    entry = snap.coupons.get(drop_id)
    if entry is not None:
        snap.coupons[drop_id] = {**entry, "remaining": remaining, "claimed": int(entry.get("quantity") or 0) - remaining}
        snap.version += 1


def needs_refresh(snap: RoomSnapshot) -> bool:
    """Whether the snapshot holds something no event keeps current (see the module docstring)."""
    return snap.meta is None or bool(snap.coupons)


def _closed(meta: Mapping[str, str] | None) -> dict[str, Any]:
    """What the room's (ended) show closed: those drops and lotteries are off its listings."""
    if not meta or meta.get("state") != "ended" or not meta.get("closed"):
        return {}
    try:
        got = json.loads(meta["closed"])
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def show(snap: RoomSnapshot) -> dict[str, Any] | None:
    """``welcome.show``: the room as the HTTP API shows it; None for a room never created."""
    return public_room(snap.meta) if snap.meta is not None else None


def open_lotteries(snap: RoomSnapshot, now_ms: int) -> list[dict[str, Any]]:
    """``welcome.lotteries``: deadline ahead, not closed by the show's end; by deadline."""
    closed = set(_closed(snap.meta).get("lotteries") or ())
    lots = [lot for lid, lot in snap.lotteries.items() if lid not in closed and int(lot.get("deadline_ms") or 0) > now_ms]
    return sorted(lots, key=lambda lot: (int(lot.get("deadline_ms") or 0), str(lot.get("id"))))


def open_redpackets(snap: RoomSnapshot, now_ms: int) -> list[dict[str, Any]]:
    """``welcome.redpackets``: dropped, expiry ahead, not ended; by expiry. (A packet whose
    shares are all taken stays listed until its ``redpacket.ended``, a moment later.)"""
    packets = [p for p in snap.redpackets.values() if int(p.get("expires_ms") or 0) > now_ms]
    return sorted(packets, key=lambda p: (int(p.get("expires_ms") or 0), str(p.get("id"))))


def live_coupons(snap: RoomSnapshot, now_ms: int, limit: int) -> list[dict[str, Any]]:
    """``welcome.coupons``: the first ``limit`` drops by expiry that have not expired, then
    those with coupons left; drops the show's end closed are off the list."""
    closed = set(_closed(snap.meta).get("drops") or ())
    drops = sorted(
        (c for did, c in snap.coupons.items() if did not in closed and int(c.get("expires_ms") or 0) > now_ms),
        key=lambda c: (int(c.get("expires_ms") or 0), str(c.get("drop_id"))),
    )
    return [c for c in drops[:limit] if int(c.get("remaining") or 0) > 0]
