"""Rooms: the host's show life-cycle and its summary. No I/O: clock and counters are arguments.

Life-cycle (all transition logic lives in :data:`ROOM_TRANSITIONS`)::

    created --go_live--> live --end--> ended
                          ^              |
                          +---go_live----+   (a new show in the same room)

Re-applying a step whose effect holds (``go_live`` on a live room, ``end`` on an ended one)
is a no-op; any other missing pair is illegal and raises :class:`~livecommerce.errors.Conflict`.

Ending a show closes the room's commerce with it (``gateway/rooms.py`` drives the steps):
open sales end, pending lotteries draw at once or are cancelled (:func:`end_options`),
coupon drops close. Each closed item is stamped with the show's :func:`close_marker` in its
own hash slot, so the item's own script answers ``room_ended`` (a node that missed the
broadcast still refuses), and the first complete list of what closed is stored in the meta
hash (``closed``), so ending twice answers the same.

Show statistics are kept in the room's meta hash by the Redis adapter
(:mod:`livecommerce.rooms_redis`): at ``go_live`` the likes counter's value is remembered
(``likes_base``) and the comment count, peak online, the online readings and the show's
distinct viewers are reset; gateways add their comments and online counts about once a
second (the readings' mean is the average online); at ``end`` the likes counter is read again.
:func:`summarize` turns those fields into the ``room.ended`` summary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from .errors import BadFrame, Conflict

RoomState = Literal["created", "live", "ended"]
RoomStep = Literal["go_live", "end"]
LotteryAction = Literal["draw", "cancel"]
LOTTERY_ACTIONS: frozenset[str] = frozenset(get_args(LotteryAction))

ROOM_TRANSITIONS: dict[tuple[RoomState, RoomStep], RoomState] = {
    ("created", "go_live"): "live",
    ("live", "end"): "ended",
    ("ended", "go_live"): "live",
}

_ALREADY: dict[tuple[RoomState, RoomStep], RoomState] = {
    ("live", "go_live"): "live",
    ("ended", "end"): "ended",
}

MAX_TITLE = 200


def step(state: RoomState, s: RoomStep) -> tuple[RoomState, bool]:
    """Apply one step: ``(new state, changed)``.

    Raises:
        Conflict: illegal from ``state`` (``end`` before the room ever went live).
    """
    nxt = ROOM_TRANSITIONS.get((state, s))
    if nxt is not None:
        return nxt, True
    same = _ALREADY.get((state, s))
    if same is not None:
        return same, False
    raise Conflict(f"room is {state}; cannot {s.replace('_', ' ')}", code="conflict")


def valid_room_id(room: str) -> bool:
    """Same rule as the WebSocket endpoint: 1..64 letters, digits, ``-``, ``_``, ``.``."""
    return isinstance(room, str) and 0 < len(room) <= 64 and all(c.isalnum() or c in "-_." for c in room)


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room as created: ``host`` is the user who runs it."""

    id: str
    title: str
    host: str
    created_ms: int


def new_room(body: Mapping[str, Any], *, creator: str, creator_role: str, now_ms: int) -> RoomInfo:
    """Validate ``POST /api/v1/rooms`` ``{id, title?, host?}``. A host creates rooms for
    itself; ops may name another ``host`` user.

    Raises:
        BadFrame: (``invalid``) malformed id, title or host.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object", code="invalid")
    rid = body.get("id")
    if not isinstance(rid, str) or not valid_room_id(rid):
        raise BadFrame("'id' must be 1..64 letters, digits, - _ .", code="invalid")
    title = body.get("title", "")
    if not isinstance(title, str) or len(title) > MAX_TITLE:
        raise BadFrame(f"'title' must be a string of at most {MAX_TITLE} characters", code="invalid")
    host = creator
    if creator_role == "ops" and body.get("host") is not None:
        h = body.get("host")
        if not isinstance(h, str) or not 0 < len(h) <= 64:
            raise BadFrame("'host' must be a user id", code="invalid")
        host = h
    return RoomInfo(rid, title, host, now_ms)


@dataclass(frozen=True, slots=True)
class ShowSummary:
    """``room.ended`` statistics of the show that just ended."""

    live_ms: int
    ended_ms: int
    duration_s: float
    peak_online: int
    comments: int
    likes: int
    avg_online: float = 0.0  # the mean of the per-second online readings while live

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(meta: Mapping[str, str]) -> ShowSummary:
    """The summary of an ended show from the room's meta fields (``live_ms``, ``ended_ms``,
    ``peak_online``, ``comments``, ``likes_base``, ``likes_end``, ``online_sum``,
    ``online_samples``). A pure function of stored
    fields, so every node computes the same summary.

    Raises:
        Conflict: the room has not ended.
    """
    if meta.get("state") != "ended":
        raise Conflict("the room has not ended", code="conflict")

    def n(f: str) -> int:
        return int(meta.get(f) or 0)

    live, ended = n("live_ms"), n("ended_ms")
    return ShowSummary(
        live_ms=live,
        ended_ms=ended,
        duration_s=round(max(0, ended - live) / 1000, 3),
        peak_online=n("peak_online"),
        comments=n("comments"),
        likes=max(0, n("likes_end") - n("likes_base")),
        avg_online=round(n("online_sum") / n("online_samples"), 1) if n("online_samples") > 0 else 0.0,
    )


def end_options(body: Mapping[str, Any]) -> LotteryAction:
    """Validate the ``end`` body ``{lotteries?: "draw" | "cancel"}`` (default ``draw``): what
    happens to the room's pending lotteries.

    Raises:
        BadFrame: (``invalid``) not an object, or another ``lotteries`` value.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object", code="invalid")
    action = body.get("lotteries", "draw")
    if action not in LOTTERY_ACTIONS:
        raise BadFrame("'lotteries' must be \"draw\" or \"cancel\"", code="invalid")
    return action  # type: ignore[no-any-return]


def close_marker(meta: Mapping[str, str]) -> str:
    """The stamp an ended show puts on what it closed: ``room:<ended_ms>``, one per show, so
    a repeated close recognises its own items (and not a previous show's).

    Raises:
        Conflict: the room has not ended.
    """
    if meta.get("state") != "ended" or not meta.get("ended_ms"):
        raise Conflict("the room has not ended", code="conflict")
    return f"room:{meta['ended_ms']}"


def closed_by_room(stamp: str | None) -> bool:
    """True for a :func:`close_marker` stamp (the Lua scripts test the same prefix)."""
    return bool(stamp) and str(stamp).startswith("room:")


@dataclass(frozen=True, slots=True)
class Closed:
    """What ending a show closed: sale, lottery and coupon drop ids, and what the pending
    lotteries were told (``draw`` or ``cancel``). ``room.ended`` carries it as ``closed``."""

    sales: tuple[str, ...]
    lotteries: tuple[str, ...]
    drops: tuple[str, ...]
    lottery_action: LotteryAction

    def to_dict(self) -> dict[str, Any]:
        return {"sales": list(self.sales), "lotteries": list(self.lotteries), "drops": list(self.drops), "lottery_action": self.lottery_action}


def public_room(meta: Mapping[str, str]) -> dict[str, Any]:
    """The room as the HTTP API and ``welcome`` show it."""
    out: dict[str, Any] = {
        "id": meta.get("id", ""),
        "title": meta.get("title", ""),
        "host": meta.get("host", ""),
        "state": meta.get("state", ""),
        "created_ms": int(meta.get("created_ms") or 0),
    }
    if meta.get("live_ms"):
        out["live_ms"] = int(meta["live_ms"])
    if meta.get("state") == "ended":
        out["summary"] = summarize(meta).to_dict()
        if meta.get("closed"):
            out["closed"] = json.loads(meta["closed"])
    return out
