"""Follower reach: ``host.live`` notices, the notification inbox, schedules and reminders. No I/O.

What following a host does (docs/reach.md):

* **A host goes live** (``room.live``): the gateway that made the step appends one
  ``host.live {host, room, title, live_ms}`` event to the durable log (topic :data:`TOPIC`,
  id :func:`live_event_id`: the same show always gives the same id, so a retried
  ``go_live`` re-appends it harmlessly). The reach worker fans it out to the host's
  followers (``fan_members.following``) in pages of :data:`PAGE` users: one SQL
  transaction writes the page's inbox rows and moves the fan-out's cursor; then the users
  whose row is *new* get a private ``host.live`` notice through their nodes' inboxes (one
  presence read and one publish per page). A redelivered or resumed fan-out finds the rows
  it wrote (primary key ``(user, id)``) and the cursor past them: exactly one row per
  follower, and no second notice.
* **A schedule (预告)**: a host publishes ``{title, start_ms, products?, room?}``; viewers
  subscribe (预约). When ``start_ms`` is reached, the sweep (one worker at a time, under a
  lease) appends ``schedule.due`` (id :func:`due_event_id`) and marks the schedule
  ``reminded``; the same fan-out writes a ``schedule.reminder`` row per subscriber. A host
  going live up to :data:`EARLY_MS` early reminds them with the go-live
  (:func:`starts_with_show`): the same fan-out, the same id, so never twice.
* **The inbox**: rows ``(user, id, kind, host, room, schedule, title, start_ms, created_ms,
  read_ms)``; a user lists theirs (newest first, ``unread`` filter) and marks them read (some
  ids, or all). The welcome frame carries the unread count.

The schedule's life cycle is :data:`SCHEDULE_TRANSITIONS`: ``scheduled -> reminded`` (the
sweep) or ``scheduled -> cancelled`` (the host); both end states are final.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import BadFrame, Conflict

TOPIC = "reach"
HOST_LIVE = "host.live"
SCHEDULE_DUE = "schedule.due"
EVENT_TYPES = frozenset({HOST_LIVE, SCHEDULE_DUE})

#: the notice kinds a user's inbox holds (the private frame's ``t`` is the same)
NoticeKind = Literal["host.live", "schedule.reminder"]
NOTICE_KINDS: tuple[str, ...] = ("host.live", "schedule.reminder")

PAGE = 1000  # followers per fan-out page: one transaction, one presence read, one publish
MAX_TITLE = 100
MAX_PRODUCTS = 20
MAX_AHEAD_MS = 30 * 24 * 3600 * 1000  # a schedule starts within 30 days
PAST_GRACE_MS = 60_000  # ... and at most a minute ago (clock skew of the host's device)
MAX_LIST = 100  # inbox rows per page
MAX_READ_IDS = 200
UPCOMING_HORIZON_MS = 7 * 24 * 3600 * 1000  # the feed lists schedules starting within a week
EARLY_MS = 30 * 60 * 1000  # a go-live this long before a schedule's start reminds its subscribers at once
KEEP_MS = 30 * 24 * 3600 * 1000  # inbox rows and finished fan-out cursors are kept 30 days

ScheduleState = Literal["scheduled", "reminded", "cancelled"]
ScheduleStep = Literal["remind", "cancel"]
SCHEDULE_TRANSITIONS: dict[tuple[ScheduleState, ScheduleStep], ScheduleState] = {
    ("scheduled", "remind"): "reminded",
    ("scheduled", "cancel"): "cancelled",
}

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def valid_id(v: Any) -> bool:
    return isinstance(v, str) and bool(_ID.match(v))


def schedule_step(state: ScheduleState, step: ScheduleStep) -> ScheduleState:
    """The state after ``step``.

    Raises:
        Conflict: (``schedule_<state>``) the step is not allowed from ``state``.
    """
    nxt = SCHEDULE_TRANSITIONS.get((state, step))
    if nxt is None:
        raise Conflict(f"the schedule is {state}: it cannot be {step}ed", code=f"schedule_{state}")
    return nxt


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    host: str
    title: str
    start_ms: int
    products: tuple[str, ...] = ()
    room: str | None = None
    state: ScheduleState = "scheduled"
    created_ms: int = 0
    subscribers: int = 0

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "title": self.title, "start_ms": self.start_ms,
                "products": list(self.products), "room": self.room, "state": self.state,
                "created_ms": self.created_ms, "subscribers": self.subscribers}


@dataclass(frozen=True, slots=True)
class ScheduleInput:
    title: str
    start_ms: int
    products: tuple[str, ...] = ()
    room: str | None = None


def check_schedule(body: Any, *, now_ms: int) -> ScheduleInput:
    """A host's schedule body ``{title, start_ms, products?, room?}``.

    Raises:
        BadFrame: (``invalid``) naming the field and what it must be.
    """
    if not isinstance(body, Mapping):
        raise BadFrame('body must be {"title", "start_ms", "products"?, "room"?}', code="invalid")
    title = body.get("title")
    if not isinstance(title, str) or not 0 < len(title.strip()) <= MAX_TITLE:
        raise BadFrame(f"'title' must be 1..{MAX_TITLE} characters", code="invalid")
    start = body.get("start_ms")
    if isinstance(start, bool) or not isinstance(start, int):
        raise BadFrame("'start_ms' must be an integer (epoch milliseconds)", code="invalid")
    if start < now_ms - PAST_GRACE_MS:
        raise BadFrame("'start_ms' is in the past: a schedule announces a show to come", code="invalid")
    if start > now_ms + MAX_AHEAD_MS:
        raise BadFrame("'start_ms' is more than 30 days ahead", code="invalid")
    products = body.get("products", [])
    if not isinstance(products, list) or len(products) > MAX_PRODUCTS or not all(valid_id(p) for p in products):
        raise BadFrame(f"'products' must be a list of at most {MAX_PRODUCTS} product ids", code="invalid")
    room = body.get("room")
    if room is not None and not valid_id(room):
        raise BadFrame("'room' must be a room id", code="invalid")
    return ScheduleInput(title.strip(), int(start), tuple(dict.fromkeys(products)), room)


def schedule_id(host: str, start_ms: int, nonce: str) -> str:
    """A schedule's id: the host, the start and a short random part (``nonce``, given)."""
    return f"{host}.{start_ms}.{nonce}"[:64]


def live_event_id(room: str, live_ms: int) -> str:
    """One show, one id: a repeated go-live of the same show appends the same event."""
    return f"host.live:{room}:{live_ms}"


def due_event_id(schedule: str) -> str:
    return f"schedule.due:{schedule}"


def live_event(host: str, room: str, title: str, live_ms: int) -> dict[str, Any]:
    return {"host": host, "room": room, "title": title, "live_ms": live_ms}


def due_event(s: Schedule) -> dict[str, Any]:
    return {"schedule": s.id, "host": s.host, "title": s.title, "start_ms": s.start_ms, "room": s.room,
            "products": list(s.products)}


@dataclass(frozen=True, slots=True)
class Fanout:
    """One fan-out: whom (``audience``: a host's followers or a schedule's subscribers) and
    what each of them gets (the notice, the same for all)."""

    event_id: str
    audience: Literal["followers", "subscribers"]
    of: str  # the host (followers) or the schedule (subscribers)
    notice: dict[str, Any] = field(default_factory=dict)


def fanout_of(event_type: str, event_id: str, data: Mapping[str, Any]) -> Fanout | None:
    """What a log event fans out to, or None (not a reach event, or malformed: skipped).

    The notice's ``id`` is the row's id in every recipient's inbox, so a client shows a
    notice once whether it came pushed, listed, or both."""
    if event_type == HOST_LIVE:
        host, room = data.get("host"), data.get("room")
        if not valid_id(host) or not valid_id(room):
            return None
        live_ms = int(data.get("live_ms") or 0)
        notice = {"id": event_id, "kind": "host.live", "host": host, "room": room,
                  "title": str(data.get("title") or "")[:200], "start_ms": live_ms}
        return Fanout(event_id, "followers", str(host), notice)
    if event_type == SCHEDULE_DUE:
        sched, host = data.get("schedule"), data.get("host")
        if not valid_id(sched) or not valid_id(host):
            return None
        room = data.get("room")
        notice = {"id": event_id, "kind": "schedule.reminder", "host": host, "room": room if valid_id(room) else None,
                  "schedule": sched, "title": str(data.get("title") or "")[:200],
                  "start_ms": int(data.get("start_ms") or 0)}
        return Fanout(event_id, "subscribers", str(sched), notice)
    return None


def push_frame(notice: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The private frame a connected recipient gets: ``(t, d)``."""
    return str(notice["kind"]), {k: v for k, v in notice.items() if k != "kind"}


def due(schedules: Sequence[Schedule], now_ms: int) -> list[Schedule]:
    """The schedules whose reminder is due at ``now_ms`` (start reached, still scheduled),
    earliest first."""
    return sorted((s for s in schedules if s.state == "scheduled" and s.start_ms <= now_ms),
                  key=lambda s: (s.start_ms, s.id))


def starts_with_show(s: Schedule, *, host: str, room: str, live_ms: int) -> bool:
    """Does the host's go-live start this schedule's show? Its host, still scheduled, for this
    room or none, starting at most :data:`EARLY_MS` after the go-live (or already due): its
    subscribers are reminded with the go-live rather than at ``start_ms``."""
    return (s.state == "scheduled" and s.host == host and s.room in (None, room)
            and s.start_ms <= live_ms + EARLY_MS)


def check_read(body: Any) -> list[str] | None:
    """``POST /api/v1/me/notifications/read`` body: ``{"ids": [...]}`` (those) or
    ``{"all": true}`` (None: every unread row).

    Raises:
        BadFrame: (``invalid``) neither form.
    """
    if isinstance(body, Mapping):
        if body.get("all") is True and "ids" not in body:
            return None
        ids = body.get("ids")
        if "all" not in body and isinstance(ids, list) and 0 < len(ids) <= MAX_READ_IDS and all(isinstance(i, str) and 0 < len(i) <= 200 for i in ids):
            return list(dict.fromkeys(ids))
    raise BadFrame(f'body must be {{"ids": [1..{MAX_READ_IDS} notification ids]}} or {{"all": true}}', code="invalid")


def upcoming(schedules: Sequence[Schedule], *, now_ms: int, following: frozenset[str] = frozenset(),
             limit: int = 10) -> list[dict[str, Any]]:
    """The feed's ``upcoming`` shows: still scheduled, starting within
    :data:`UPCOMING_HORIZON_MS` (or started less than :data:`PAST_GRACE_MS` ago), hosts the
    viewer follows first, then by start time."""
    keep = [s for s in schedules if s.state == "scheduled"
            and now_ms - PAST_GRACE_MS <= s.start_ms <= now_ms + UPCOMING_HORIZON_MS]
    keep.sort(key=lambda s: (s.host not in following, s.start_ms, s.id))
    return [{**s.public(), "following": s.host in following} for s in keep[:limit]]
