"""Likes: per-node aggregation of ``like {count}`` and when to push ``likes {total}``.

No I/O. Clients may like at a high rate; each gateway node adds counts in memory
(:class:`LikeTally`), and about once a second adds them to the room's Redis counter
(INCRBY, which returns the exact total over all nodes) and pushes one ``likes {total}`` to
its own viewers of each room whose total changed (:class:`PushGate`). A room of N viewers
thus costs one Redis call and one frame per viewer per second, whatever the like rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class LikeTally:
    """Likes received by this node and not yet added to Redis, per room."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[str, int] = {}

    def add(self, room: str, count: int) -> None:
        """Count ``count`` (>= 1) likes for ``room``.

        Raises:
            ValueError: ``count`` < 1.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        self._pending[room] = self._pending.get(room, 0) + count

    def take(self) -> dict[str, int]:
        """Hand over every pending count (and forget them)."""
        out, self._pending = self._pending, {}
        return out

    def restore(self, deltas: Mapping[str, int]) -> None:
        """Put back counts whose flush failed, so no like is lost."""
        for room, n in deltas.items():
            self._pending[room] = self._pending.get(room, 0) + n

    def pending(self, room: str) -> int:
        return self._pending.get(room, 0)


class PushGate:
    """Remembers the last total pushed to this node's viewers of each room, so a room
    gets ``likes`` only when its total changed."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def changed(self, room: str, total: int) -> bool:
        """True (and remember ``total``) when it differs from the last pushed total."""
        if self._last.get(room) == total:
            return False
        self._last[room] = total
        return True

    def keep_only(self, rooms: Iterable[str]) -> None:
        """Forget rooms this node no longer serves."""
        keep = set(rooms)
        for r in [r for r in self._last if r not in keep]:
            del self._last[r]
