"""Host and viewer points: which log events award what, levels, and the activity rules.

No I/O. ``workers/points.py`` turns each consumed event into ledger rows with
:func:`awards_for` and writes them in ``store.apply("points", event.id)``: every row's
``ref_event_id`` is the event id, so an event is applied once however often it is
delivered, and a refund (issue 11) can find and reverse exactly the rows an order made.

Awards (rates are module constants, documented here; thresholds and activity rates come
from :class:`~livecommerce.config.Settings`):

=====================  ======================  ========  ==================================
event (topic)          who                     role      points (reason)
=====================  ======================  ========  ==================================
``gift.sent`` (gifts)  the sender              viewer    ``value`` coins (``gift.sent``)
                       the room's host         host      ``value`` coins (``gift.received``)
``order.paid``         the buyer               viewer    ``amount // 100`` (``order.paid``)
(orders)               the room's host         host      ``amount // 100`` (``order.sold``)
``activity.comment``   the commenter           viewer    ``comment_points`` (``comment``),
(activity)                                               the first ``comment_points_daily_cap``
                                                         comments of a UTC day only
``activity.watch``     the viewer              viewer    ``minutes * watch_points_per_min``
(activity)                                               (``watch``)
``points.redeem``      the redeemer            viewer    ``-value * points_per_coupon_coin``
(points)                                                 (``coupon.redeem``), only if covered
``gift.reversed``      the gift's sender       viewer    ``-value`` (``gift.reversed``)
(gifts)                the host it credited    host      ``-value`` (``gift.unreceived``)
=====================  ======================  ========  ==================================

A reversed gift (ops: refunded or charged back, :mod:`livecommerce.earnings`) takes back
what its ``gift.sent`` awarded, written even when the balance no longer covers it (so a
gift and its refund cannot farm points).

The host of a room is the ``host`` its creator set (``{room:ID}:meta``); ``gift.sent``
carries it from the gateway. When a room has no known host, host points go to the owner
key ``room:<id>`` (:func:`room_owner`), so nothing is lost and ops can reassign them.

Levels: the level of a balance is the index of the highest threshold of
``Settings.levels`` it reaches (``0,100,500,...``: 0 points is level 0, 100 is level 1).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadFrame
from .store import PointsRole

GIFT_SENT = "gift.sent"
GIFT_REVERSED = "gift.reversed"
ORDER_PAID = "order.paid"
COMMENT = "activity.comment"
WATCH = "activity.watch"
REDEEM = "points.redeem"

POINTS_PER_COIN = 1  # gift value in coins -> points, sender and host alike
CENTS_PER_POINT = 100  # paid amount in cents -> points, buyer and host alike
MAX_REDEEM_VALUE = 100_000  # cents of coupon value per redemption


@dataclass(frozen=True, slots=True)
class Rules:
    """The configurable part of the awards (from Settings)."""

    levels: tuple[int, ...] = (0, 100, 500, 2000, 10000, 50000)
    comment_points: int = 1
    comment_daily_cap: int = 20
    watch_points_per_min: int = 1
    points_per_coupon_coin: int = 10

    @classmethod
    def from_settings(cls, s: Any) -> Rules:
        return cls(
            levels=tuple(s.levels),
            comment_points=s.comment_points,
            comment_daily_cap=s.comment_points_daily_cap,
            watch_points_per_min=s.watch_points_per_min,
            points_per_coupon_coin=s.points_per_coupon_coin,
        )


@dataclass(frozen=True, slots=True)
class Award:
    """One ledger row to write for an event."""

    user: str
    role: PointsRole
    delta: int
    reason: str


def level_for(points: int, thresholds: Sequence[int]) -> int:
    """Index of the highest threshold ``points`` reaches (0 below the first)."""
    return max(0, bisect.bisect_right(list(thresholds), points) - 1)


def room_owner(room: str) -> str:
    """The owner key that collects host points of a room without a known host."""
    return f"room:{room}"


def awards_for(event_type: str, data: Mapping[str, Any], *, host: str | None, rules: Rules) -> list[Award]:
    """The rows an event awards (redemptions excepted: see :func:`redeem_cost`).

    ``host`` is the room's host as known now (used when the event carries none).
    Unknown event types award nothing.
    """
    if event_type == GIFT_SENT:
        value = int(data["value"]) * POINTS_PER_COIN
        h = data.get("host") or host or room_owner(str(data["room"]))
        return _nonzero([Award(str(data["user"]), "viewer", value, "gift.sent"), Award(h, "host", value, "gift.received")])
    if event_type == ORDER_PAID:
        pts = int(data["amount"]) // CENTS_PER_POINT
        h = data.get("host") or host or room_owner(str(data["room_id"]))
        return _nonzero([Award(str(data["user_id"]), "viewer", pts, "order.paid"), Award(h, "host", pts, "order.sold")])
    if event_type == GIFT_REVERSED:  # the event names the host the accrual credited
        back = int(data["value"]) * POINTS_PER_COIN
        h = str(data.get("host") or room_owner(str(data["room"])))
        return [Award(str(data["user"]), "viewer", -back, "gift.reversed"), Award(h, "host", -back, "gift.unreceived")] if back > 0 else []
    if event_type == COMMENT:
        if int(data.get("n", 1)) > rules.comment_daily_cap:
            return []
        return _nonzero([Award(str(data["user"]), "viewer", rules.comment_points, "comment")])
    if event_type == WATCH:
        return _nonzero([Award(str(data["user"]), "viewer", int(data["minutes"]) * rules.watch_points_per_min, "watch")])
    return []


def _nonzero(awards: list[Award]) -> list[Award]:
    return [a for a in awards if a.delta > 0]


def room_of(event_type: str, data: Mapping[str, Any]) -> str | None:
    """The room whose host an event's awards need (None when none is needed)."""
    if event_type == ORDER_PAID and not data.get("host"):
        return str(data["room_id"])
    if event_type == GIFT_SENT and not data.get("host"):
        return str(data["room"])
    return None


# ---------------------------------------------------------------- redemption


@dataclass(frozen=True, slots=True)
class Redeem:
    value: int  # coupon value, cents
    request_id: str


def parse_redeem(body: Mapping[str, Any]) -> Redeem:
    """Validate ``POST /api/v1/points/{user}/redeem {value, request_id}``.

    Raises:
        BadFrame: (``invalid``) value not in 1..MAX_REDEEM_VALUE or a bad request id.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object", code="invalid")
    value, rid = body.get("value"), body.get("request_id")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REDEEM_VALUE:
        raise BadFrame(f"'value' must be the coupon value in cents, 1..{MAX_REDEEM_VALUE}", code="invalid")
    if not isinstance(rid, str) or not 0 < len(rid) <= 48 or not all(c.isalnum() or c in "-_." for c in rid):
        raise BadFrame("'request_id' must be 1..48 letters, digits, - _ .", code="invalid")
    return Redeem(value, rid)


def redeem_cost(value: int, rules: Rules) -> int:
    """Points a coupon worth ``value`` cents costs: one coupon coin (a cent of discount)
    for every ``points_per_coupon_coin`` points."""
    return value * rules.points_per_coupon_coin


def redeem_event_id(user: str, request_id: str) -> str:
    return f"redeem:{user}:{request_id}"


def redeem_drop_id(event_id: str) -> str:
    """The one-coupon drop a redemption creates (a stable id from the event id)."""
    return "pts-" + hashlib.sha1(event_id.encode()).hexdigest()[:20]


# ---------------------------------------------------------------- activity at the edge


def utc_day(now_ms: int) -> int:
    """Days since the epoch (UTC): the comment cap's period."""
    return now_ms // 86_400_000


def comment_event_id(user: str, day: int, n: int) -> str:
    """Comment ``n`` of ``user`` on ``day``: a stable id, so a retried append is one event."""
    return f"comment:{user}:{day}:{n}"


@dataclass(slots=True)
class WatchSession:
    """Watch time of one viewer in one room on one node. Minutes are emitted as whole
    minutes since the session began, minus what was emitted, so no second is counted twice
    and partial minutes carry over."""

    id: str
    user: str
    room: str
    started_ms: int
    emitted_min: int = 0
    seq: int = 0
    last_emit_ms: int = 0

    def take(self, now_ms: int) -> tuple[str, dict[str, Any]] | None:
        """The ``activity.watch`` event (id, data) for the whole minutes not yet
        emitted, or None when there is none."""
        total = max(0, now_ms - self.started_ms) // 60_000
        minutes = total - self.emitted_min
        self.last_emit_ms = now_ms
        if minutes <= 0:
            return None
        self.emitted_min = total
        self.seq += 1
        data = {"user": self.user, "room": self.room, "session": self.id, "minutes": minutes, "total_min": total}
        return f"watch:{self.id}:{self.seq}", data
