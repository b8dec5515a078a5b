"""Fan clubs: follows, memberships, intimacy and fan levels. No I/O.

A viewer *follows* a host and may *join* the host's fan club. Intimacy measures the bond
of one (viewer, host) pair; it is computed from what the viewer did in the host's rooms, as
the viewer's profile records it per host (:mod:`livecommerce.profiles`, field ``hosts``):

=====================================  ==========================
activity in the host's rooms           intimacy
=====================================  ==========================
a minute watched (``activity.watch``)  1 per minute
a comment (``activity.comment``)       2 (only the comments that earn points: the first
                                       ``comment_points_daily_cap`` of a day)
gifts (``gift.sent``)                  1 per 10 coins of their total value
purchases (``order.paid``)             1 per 100 cents of net spend (refunds take it back)
=====================================  ==========================

Intimacy accrues for every pair (the personalised feed uses it), but only fan-club members
have a *fan level* and a badge: level 1 on joining, then the highest of
:data:`FAN_LEVELS` the intimacy reaches (level ``i + 1`` for threshold ``i``). The badge
``{"host", "level"}`` rides on the member's comments in that host's rooms (a comment hook
reading a Redis cache the profiles worker keeps); the host's fan leaderboard ranks members
by intimacy.

Follow and membership are last-writer-wins registers: each change carries a version ``v``
(a per-user counter taken at the gateway), and the change with the highest ``v`` wins, so
the result is the same whatever order the events are applied in (redelivery, several
consumers, a rebuild).

Events (topic ``activity``, key the viewer, id ``fan:<user>:<v>``):
``fan.follow {user, host, on, v}`` and ``fan.club {user, host, on, v}``.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from .errors import BadFrame

FOLLOW = "fan.follow"
CLUB = "fan.club"
EVENT_TYPES = frozenset({FOLLOW, CLUB})

WATCH_PER_MIN = 1
PER_COMMENT = 2
GIFT_COINS_PER_POINT = 10
SPEND_CENTS_PER_POINT = 100
FAN_LEVELS: tuple[int, ...] = (0, 20, 100, 300, 1000, 3000, 10000, 30000)
MAX_LEADERBOARD = 100


def intimacy(stats: Mapping[str, int]) -> int:
    """Intimacy of one (viewer, host) pair from the viewer's per-host stats
    ``{watch, comments, gift_value, spend}`` (see the module table)."""
    return (
        int(stats.get("watch", 0)) * WATCH_PER_MIN
        + int(stats.get("comments", 0)) * PER_COMMENT
        + max(0, int(stats.get("gift_value", 0))) // GIFT_COINS_PER_POINT
        + max(0, int(stats.get("spend", 0))) // SPEND_CENTS_PER_POINT
    )


def fan_level(points: int) -> int:
    """The fan level of a member with ``points`` intimacy (1 for a new member)."""
    return max(1, bisect.bisect_right(FAN_LEVELS, points))


def fan_event_id(user: str, v: int) -> str:
    return f"fan:{user}:{v}"


def fan_event(user: str, host: str, *, on: bool, v: int) -> dict[str, Any]:
    return {"user": user, "host": host, "on": on, "v": v}


def check_host(host: Any) -> str:
    """Raises:
    BadFrame: (``invalid``) not a usable host id.
    """
    if not isinstance(host, str) or not 0 < len(host) <= 64 or not all(c.isalnum() or c in "-_.:" for c in host):
        raise BadFrame("host must be 1..64 letters, digits or - _ . :", code="invalid")
    return host


def lww(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
    """The winner of two ``[v, on]`` registers: the higher version (ties: ``on`` wins, so
    the result never depends on the order)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if (a[0], a[1]) >= (b[0], b[1]) else b


def leaderboard_entry(rank: int, user: str, points: int, name: str | None) -> dict[str, Any]:
    return {"rank": rank, "user": user, "name": name or user, "intimacy": points, "level": fan_level(points)}
