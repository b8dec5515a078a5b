"""Hot rooms: how many comments a room shows per second, and which ones.

No I/O. Past a room comment budget (``LC_ROOM_COMMENT_BUDGET`` comments/s, more than a
person can read) a gateway node stops showing every comment to its viewers: it keeps the
host's and ops' comments first, then paying buyers', then the highest levels, each class in
the order they were sent, and sheds the rest for this node's viewers (they stay in the
room's history, so a reload or ``since=`` still has them). Every other event passes.

The budget is a token bucket per room: it holds at most ``rate`` comments (one second's
worth, the burst), gains ``rate * tick_s`` per tick, and each shown comment takes one.
:func:`apply_budget` is called once per room per tick with the tick's batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

E = TypeVar("E", bound=Mapping[str, Any])

#: ``allowance`` of a room that has not had a batch yet: it starts with a full bucket
FRESH = -1.0


def comment_rank(env: Mapping[str, Any]) -> tuple[int, int, int]:
    """Sort key of a ``comment`` envelope in a hot room (smaller is kept first): staff
    (host, ops), then buyers, then higher levels."""
    d = env.get("d") or {}
    staff = 0 if d.get("role") in ("host", "ops") else 1
    paid = 0 if d.get("buyer") else 1
    return (staff, paid, -int(d.get("level") or 0))


def apply_budget(items: list[E], allowance: float, *, rate: float, tick_s: float) -> tuple[list[E], float, int]:
    """Refill the room's bucket for one tick and spend it on the tick's comments.

    Args:
        items: the tick's events of one room, in delivery order.
        allowance: the room's bucket after the previous tick (:data:`FRESH` at first).
        rate: the budget in comments per second (``<= 0``: no budget, everything passes).
        tick_s: the tick's length in seconds.

    Returns:
        ``(shown, allowance, shed)``: the events to show, in their order (``items`` itself
        when nothing is shed), the bucket for the next tick, and how many comments were shed.
        Under the budget every comment is shown; over it, ``int(bucket)`` comments are, the
        best ranked by :func:`comment_rank` (earlier first among equals).
    """
    if rate <= 0:
        return items, allowance, 0
    cap = float(rate)
    if allowance < 0:
        allowance = cap
    ncomments = sum(1 for e in items if e["t"] == "comment")
    allowance = min(cap, allowance + rate * tick_s)
    if ncomments <= allowance:
        return items, allowance - ncomments, 0
    keep = int(allowance)
    comments = [(i, e) for i, e in enumerate(items) if e["t"] == "comment"]
    kept = {i for i, _ in sorted(comments, key=lambda pair: comment_rank(pair[1]))[:keep]}
    shown = [e for i, e in enumerate(items) if e["t"] != "comment" or i in kept]
    return shown, allowance - keep, len(comments) - len(kept)
