"""What a bullet comment shows about its author: viewer level, fan badge, buyer mark.

A comment carries ``level`` (the author's viewer level, as the points worker caches it),
``fan {host, level}`` when the author is a member of the room host's fan club, and
``buyer: true`` when the author paid an order in the room lately (hot rooms keep those
comments first: :mod:`livecommerce.hot_room`). The three facts live in three places (the
user's points, the host's club, the room's payers), so one read per comment fetches the ones
this node does not hold fresh, in one round trip (:class:`BadgeReader`, adapter
:mod:`livecommerce.badges_redis`).

Freshness (the rule :class:`Badges` applies, clock passed in):

* level: held ``LEVEL_CACHE_S`` per author;
* fan level: held ``FAN_CACHE_S`` per (author, host); a host's own comments carry no badge;
* buyer: only a *yes* is held (``BUYER_CACHE_S``), so a payer's next comment carries the mark at
  once while a non-buyer's is asked again (a payer stays one for the room's retention).

When the read fails (Redis unreachable) the comment goes out with what is held, else level 0
and no badge: decoration never fails a comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .errors import LiveCommerceError

LEVEL_CACHE_S = 5.0
FAN_CACHE_S = 10.0
BUYER_CACHE_S = 30.0
MAX_ENTRIES = 100_000


def fan_badge(host: str, level: int) -> dict[str, Any]:
    """What a member's comments carry in the host's rooms (field ``fan``)."""
    return {"host": host, "level": level}


@dataclass(frozen=True, slots=True)
class Wanted:
    """Which facts a read must fetch (the others are held fresh)."""

    level: bool
    fan: bool
    buyer: bool


@dataclass(frozen=True, slots=True)
class Read:
    """A read's answers; None for a fact not asked (or, for ``fan``, not a member)."""

    level: int | None = None
    fan: int | None = None
    buyer: bool | None = None


class BadgeReader(Protocol):
    async def read(self, room: str, host: str, user: str, wanted: Wanted) -> Read:
        """The wanted facts in one round trip.

        Raises:
            Unavailable: the engine is unreachable.
        """
        ...


class _Held:
    """A bounded map of values valid until a monotonic time; stale entries go in sweeps."""

    __slots__ = ("_d", "_sweep_at")

    def __init__(self) -> None:
        self._d: dict[Any, tuple[Any, float]] = {}
        self._sweep_at = 0.0

    def get(self, key: Any, now: float) -> tuple[bool, Any]:
        hit = self._d.get(key)
        if hit is None or hit[1] <= now:
            return False, None if hit is None else hit[0]
        return True, hit[0]

    def put(self, key: Any, value: Any, until: float, now: float) -> None:
        d = self._d
        if len(d) > MAX_ENTRIES:
            d.clear()
        elif len(d) >= 256 and now >= self._sweep_at:  # churned authors' entries go once stale
            self._d = d = {k: v for k, v in d.items() if v[1] > now}
            self._sweep_at = now + 60
        d[key] = (value, until)

    def __len__(self) -> int:
        return len(self._d)


class Badges:
    """The node's view of authors' badges and the rule that decorates a comment."""

    def __init__(self, reader: BadgeReader) -> None:
        self.reader = reader
        self._level = _Held()
        self._fan = _Held()
        self._buyer = _Held()

    async def decorate(self, d: dict[str, Any], *, room: str, host: str, user: str, now: float) -> None:
        """Set ``level`` and, where they apply, ``buyer`` and ``fan`` on the comment ``d``.

        ``host`` is the room's host (the owner key for a room without one); ``now`` is a
        monotonic clock reading in seconds.
        """
        own_room = host == user
        level_ok, level = self._level.get(user, now)
        fan_ok, fan = (True, None) if own_room else self._fan.get((user, host), now)
        buyer_ok, _ = self._buyer.get((room, user), now)
        wanted = Wanted(level=not level_ok, fan=not fan_ok, buyer=not buyer_ok)
        buyer = buyer_ok
        if wanted.level or wanted.fan or wanted.buyer:
            try:
                got = await self.reader.read(room, host, user, wanted)
            except LiveCommerceError:
                got = None  # the comment goes out with what is held
            if got is not None:
                if wanted.level:
                    level = got.level or 0
                    self._level.put(user, level, now + LEVEL_CACHE_S, now)
                if wanted.fan:
                    fan = got.fan
                    self._fan.put((user, host), fan, now + FAN_CACHE_S, now)
                if wanted.buyer and got.buyer:
                    buyer = True
                    self._buyer.put((room, user), True, now + BUYER_CACHE_S, now)
        d["level"] = level or 0
        if buyer:
            d["buyer"] = True
        if fan is not None and not own_room:
            d["fan"] = fan_badge(host, fan)


class MemoryBadgeReader:
    """The in-memory twin of the reader (tests, and the contract both adapters pass)."""

    def __init__(self) -> None:
        self.levels: dict[str, int] = {}
        self.fans: dict[tuple[str, str], int] = {}  # (host, user) -> fan level
        self.payers: set[tuple[str, str]] = set()  # (room, user)
        self.reads = 0

    async def read(self, room: str, host: str, user: str, wanted: Wanted) -> Read:
        self.reads += 1
        return Read(
            level=self.levels.get(user, 0) if wanted.level else None,
            fan=self.fans.get((host, user)) if wanted.fan else None,
            buyer=(room, user) in self.payers if wanted.buyer else None,
        )
