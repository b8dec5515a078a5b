"""Gift leaderboards: what is ranked, how increments are batched, when boards are pushed.

No I/O. Three boards, all scored in coins of gifts:

* ``room``: the room's top gifters (member: viewer id);
* ``host``: a host's top fans over all the host's rooms (member: viewer id);
* ``hosts``: hosts ranked by the gifts they received (member: host id).

A gateway node sums its gift values per board member in :class:`BoardTally` and adds them
to Redis once per tick (one pipelined ZINCRBY per member that moved); once a second it
reads the top of each local room whose board may have moved and pushes ``leaderboard`` to
its own viewers when the top changed (:class:`BoardGate`): at most one event per room per
second per viewer, whatever the gift rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

BoardKind = Literal["room", "host", "hosts"]
DEFAULT_TOP = 10
MAX_TOP = 100

Increment = tuple[BoardKind, str, str]  # kind, board id ("" for hosts), member


class BoardTally:
    """Board increments of one node not yet added to Redis."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[Increment, int] = {}

    def add_gift(self, *, room: str, host: str, user: str, value: int) -> None:
        """Count one gift of ``value`` coins from ``user`` in ``room`` run by ``host``."""
        incs: tuple[Increment, ...] = (("room", room, user), ("host", host, user), ("hosts", "", host))
        for inc in incs:
            self._pending[inc] = self._pending.get(inc, 0) + value

    def take(self) -> dict[Increment, int]:
        out, self._pending = self._pending, {}
        return out

    def restore(self, incs: dict[Increment, int]) -> None:
        """Put back increments whose flush failed."""
        for k, v in incs.items():
            self._pending[k] = self._pending.get(k, 0) + v

    def __len__(self) -> int:
        return len(self._pending)


def ranked(pairs: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
    """``[(member, score)]`` best first -> ``[{rank, id, score}]`` (rank from 1; equal
    scores share a rank)."""
    out: list[dict[str, Any]] = []
    last: float | None = None
    rank = 0
    for i, (member, score) in enumerate(pairs):
        if score != last:
            rank, last = i + 1, score
        out.append({"rank": rank, "id": member, "score": int(score)})
    return out


def clamp_top(raw: str | None) -> int:
    """The ``?n=`` of top-N endpoints: 1..MAX_TOP, default DEFAULT_TOP."""
    try:
        n = int(raw) if raw is not None else DEFAULT_TOP
    except ValueError:
        n = DEFAULT_TOP
    return max(1, min(MAX_TOP, n))


class BoardGate:
    """The last top pushed to this node's viewers of each room, so an unchanged board is
    not pushed again."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, list[dict[str, Any]]] = {}

    def changed(self, room: str, top: list[dict[str, Any]]) -> bool:
        if self._last.get(room) == top:
            return False
        self._last[room] = top
        return True

    def keep_only(self, rooms: Iterable[str]) -> None:
        keep = set(rooms)
        for r in [r for r in self._last if r not in keep]:
            del self._last[r]
