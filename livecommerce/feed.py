"""The live-room feed: signals, rankers, diversity and explanations. No I/O.

``GET /api/v1/feed`` (``gateway/feed.py``) and the offline evaluation
(``scripts/feed_eval.py``) run this same code: the gateway feeds it rooms read from Redis
and the viewer's profile from SQL, the evaluation feeds it a replayed synthetic log.

**Signals** (:class:`LiveRoom`): online viewers, comments, likes and GMV per minute, and
minutes since the show started. Rates come from :class:`SignalWindow`: each gateway
samples every live room's show counters (comments and likes since ``go_live``, GMV of
the show) every couple of seconds, and a rate is the counter's growth over the last
:data:`WINDOW_MS` (the show's average until the window spans :data:`MIN_SPAN_MS`), so a
ranking follows what happens in the rooms within seconds.

**Rankers** (:data:`RANKERS`), both total orders (ties broken by room id):

* ``popularity``: :func:`popularity_score`, a sum of log-scaled live signals
  (``1.0 log1p(online) + 0.6 log1p(comments/min) + 0.3 log1p(likes/min) + 0.8
  log1p(GMV/min in currency units)``) plus a fresh-show bonus ``0.5 exp(-minutes / 20)``.
* ``personalised``: popularity normalised to [0, 1] over the candidates, plus the viewer's
  affinity for the room (:func:`affinity_score`): the share of their net spend in the
  room's category (weight :data:`W_CATEGORY`), following the host (:data:`W_FOLLOW`),
  membership of the host's fan club (:data:`W_CLUB`), and intimacy with the host
  (:data:`W_INTIMACY` times ``log1p(intimacy) / log1p(max intimacy)``). A *cold-start*
  viewer (no spend, follows, clubs or intimacy) gets exactly the popularity order.

**Diversity** (:func:`arrange`): pages are filled greedily in score order under two rules:
a host appears at most once per page, and a category at most :func:`category_cap` times
per page while rooms of other categories remain (then the page is filled with what is
left, hosts still unique). Rooms that are not live are dropped before anything else, so a
page never lists an ended room.

**Explanations**: every item carries reason codes, strongest first, and one short
sentence (``why``) for the strongest.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

RankerName = Literal["popularity", "personalised"]
RANKERS: tuple[RankerName, ...] = ("popularity", "personalised")

WINDOW_MS = 60_000
MIN_SPAN_MS = 10_000
MAX_SAMPLES = 64

W_ONLINE, W_COMMENTS, W_LIKES, W_GMV, W_FRESH, FRESH_MIN = 1.0, 0.6, 0.3, 0.8, 0.5, 20.0
W_CATEGORY, W_FOLLOW, W_CLUB, W_INTIMACY = 1.2, 0.6, 0.4, 1.0

DEFAULT_PAGE = 10
MAX_PAGE = 50


@dataclass(frozen=True, slots=True)
class LiveRoom:
    """A candidate room and its live signals (rates per minute; GMV in cents)."""

    id: str
    host: str
    state: str = "live"
    title: str = ""
    category: str | None = None
    live_ms: int = 0
    online: int = 0
    comments_pm: float = 0.0
    likes_pm: float = 0.0
    gmv_pm: float = 0.0

    def minutes_live(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.live_ms) / 60_000) if self.live_ms else 0.0


@dataclass(frozen=True, slots=True)
class Affinity:
    """What the viewer's profile says about their tastes (see
    :func:`affinity_from_profile`)."""

    categories: Mapping[str, float] = field(default_factory=dict)  # share of net spend, sums to 1
    followed: frozenset[str] = frozenset()
    clubs: frozenset[str] = frozenset()
    intimacy: Mapping[str, int] = field(default_factory=dict)

    @property
    def cold(self) -> bool:
        return not (self.categories or self.followed or self.clubs or self.intimacy)


COLD = Affinity()


def affinity_from_profile(view: Mapping[str, Any] | None) -> Affinity:
    """The affinity of a profile as :func:`livecommerce.profiles.view` shows it
    (``category_spend``, ``hosts_followed``, ``fan_clubs``, ``intimacy``); None or an
    empty profile is cold."""
    if not view:
        return COLD
    spend = {str(c): float(v) for c, v in (view.get("category_spend") or {}).items() if float(v) > 0}
    total = sum(spend.values())
    return Affinity(
        categories={c: v / total for c, v in spend.items()} if total > 0 else {},
        followed=frozenset(view.get("hosts_followed") or ()),
        clubs=frozenset(view.get("fan_clubs") or ()),
        intimacy={str(h): int(v) for h, v in (view.get("intimacy") or {}).items() if int(v) > 0},
    )


# ---------------------------------------------------------------- signals


def online_total(values: Mapping[Any, Any], now_ms: int, *, fresh_ms: int = 5000) -> int:
    """A room's online count from its presence hash (node -> ``"count:ts"``), counting
    nodes that reported within ``fresh_ms`` (as ``Hub.online``)."""
    total = 0
    for v in values.values():
        s = v.decode() if isinstance(v, bytes) else str(v)
        cnt, _, ts = s.partition(":")
        try:
            if now_ms - int(ts) <= fresh_ms:
                total += int(cnt)
        except ValueError:
            continue
    return total


class SignalWindow:
    """Per-room samples of cumulative show counters, turned into per-minute rates.

    ``observe`` records ``(ts, comments, likes, gmv)`` for a show (identified by its
    ``live_ms``; a new show starts a new window). ``rates`` is the growth over the
    samples of the last :data:`WINDOW_MS`, or the show's average while they span less
    than :data:`MIN_SPAN_MS` (a node that just started, a show that just began).
    """

    def __init__(self) -> None:
        self._rooms: dict[str, tuple[int, deque[tuple[int, float, float, float]]]] = {}

    def observe(self, room: str, *, live_ms: int, now_ms: int, comments: float, likes: float, gmv: float) -> None:
        got = self._rooms.get(room)
        if got is None or got[0] != live_ms:
            got = self._rooms[room] = (live_ms, deque(maxlen=MAX_SAMPLES))
        samples = got[1]
        samples.append((now_ms, comments, likes, gmv))
        while len(samples) > 2 and samples[1][0] <= now_ms - WINDOW_MS:
            samples.popleft()

    def rates(self, room: str, *, now_ms: int) -> tuple[float, float, float]:
        """``(comments, likes, gmv)`` per minute (zeros for a room never observed)."""
        got = self._rooms.get(room)
        if got is None or not got[1]:
            return 0.0, 0.0, 0.0
        live_ms, samples = got
        last = samples[-1]
        first = next((s for s in samples if s[0] >= now_ms - WINDOW_MS), samples[0])
        span = last[0] - first[0]
        if span >= MIN_SPAN_MS:
            m = span / 60_000
            return tuple(max(0.0, (b - a) / m) for a, b in zip(first[1:], last[1:], strict=True))  # type: ignore[return-value]
        m = max(1.0, (last[0] - live_ms) / 60_000) if live_ms else 1.0
        return tuple(max(0.0, x / m) for x in last[1:])  # type: ignore[return-value]

    def keep_only(self, rooms: Iterable[str]) -> None:
        keep = set(rooms)
        for r in [r for r in self._rooms if r not in keep]:
            del self._rooms[r]


# ---------------------------------------------------------------- scores


def popularity_score(r: LiveRoom, now_ms: int) -> float:
    """The popularity of a live room (see the module docstring)."""
    return (
        W_ONLINE * math.log1p(max(0, r.online))
        + W_COMMENTS * math.log1p(max(0.0, r.comments_pm))
        + W_LIKES * math.log1p(max(0.0, r.likes_pm))
        + W_GMV * math.log1p(max(0.0, r.gmv_pm) / 100.0)
        + W_FRESH * math.exp(-r.minutes_live(now_ms) / FRESH_MIN)
    )


def affinity_score(r: LiveRoom, a: Affinity, *, max_intimacy: int | None = None) -> tuple[float, list[tuple[str, float]]]:
    """The viewer's affinity for the room and its parts ``(reason, contribution)``."""
    parts: list[tuple[str, float]] = []
    share = a.categories.get(r.category or "", 0.0)
    if share > 0:
        parts.append(("category", W_CATEGORY * share))
    if r.host in a.followed:
        parts.append(("followed", W_FOLLOW))
    if r.host in a.clubs:
        parts.append(("fan_club", W_CLUB))
    intim = a.intimacy.get(r.host, 0)
    if intim > 0:
        top = max_intimacy if max_intimacy is not None else max(a.intimacy.values())
        parts.append(("intimacy", W_INTIMACY * math.log1p(intim) / math.log1p(max(top, intim))))
    return sum(v for _, v in parts), parts


@dataclass(frozen=True, slots=True)
class Scored:
    room: LiveRoom
    score: float
    reasons: tuple[str, ...]
    why: str


def _live_reasons(r: LiveRoom, now_ms: int) -> list[tuple[str, float]]:
    parts = [
        ("trending", W_ONLINE * math.log1p(max(0, r.online))),
        ("chatty", W_COMMENTS * math.log1p(max(0.0, r.comments_pm))),
        ("loved", W_LIKES * math.log1p(max(0.0, r.likes_pm))),
        ("selling", W_GMV * math.log1p(max(0.0, r.gmv_pm) / 100.0)),
        ("new", W_FRESH * math.exp(-r.minutes_live(now_ms) / FRESH_MIN)),
    ]
    return [p for p in parts if p[1] > 0.05]


def explain(code: str, r: LiveRoom, now_ms: int) -> str:
    """One short sentence for a reason code."""
    texts = {
        "followed": f"You follow {r.host}",
        "fan_club": f"You are in {r.host}'s fan club",
        "intimacy": f"You often watch {r.host}",
        "category": f"Because you shop {r.category}",
        "trending": f"{r.online} watching now",
        "chatty": f"{r.comments_pm:.0f} comments a minute",
        "loved": f"{r.likes_pm:.0f} likes a minute",
        "selling": "Selling fast right now",
        "new": f"Went live {int(r.minutes_live(now_ms))} min ago",
    }
    return texts.get(code, "Live now")


def _scored(r: LiveRoom, score: float, parts: list[tuple[str, float]], now_ms: int) -> Scored:
    ordered = [c for c, _ in sorted(parts, key=lambda p: -p[1])]
    return Scored(r, score, tuple(ordered), explain(ordered[0], r, now_ms) if ordered else "Live now")


def live_only(rooms: Iterable[LiveRoom]) -> list[LiveRoom]:
    """The candidates a feed may list: live rooms, each once."""
    seen: set[str] = set()
    out = []
    for r in rooms:
        if r.state == "live" and r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


def rank_popularity(rooms: Iterable[LiveRoom], now_ms: int) -> list[Scored]:
    """Live rooms by popularity, best first."""
    out = [_scored(r, popularity_score(r, now_ms), _live_reasons(r, now_ms), now_ms) for r in live_only(rooms)]
    out.sort(key=lambda s: (-s.score, s.room.id))
    return out


def rank_personalised(rooms: Iterable[LiveRoom], affinity: Affinity, now_ms: int) -> list[Scored]:
    """Live rooms by normalised popularity plus the viewer's affinity, best first;
    the popularity order for a cold-start viewer."""
    live = live_only(rooms)
    if affinity.cold:
        return rank_popularity(live, now_ms)
    pops = [popularity_score(r, now_ms) for r in live]
    top = max(pops, default=0.0) or 1.0
    max_int = max(affinity.intimacy.values(), default=0)
    out = []
    for r, pop in zip(live, pops, strict=True):
        aff, parts = affinity_score(r, affinity, max_intimacy=max_int)
        out.append(_scored(r, pop / top + aff, parts + [(c, v / top) for c, v in _live_reasons(r, now_ms)], now_ms))
    out.sort(key=lambda s: (-s.score, s.room.id))
    return out


def rank(name: str, rooms: Iterable[LiveRoom], affinity: Affinity, now_ms: int) -> list[Scored]:
    """Dispatch to a ranker by name (unknown names rank by popularity)."""
    if name == "personalised":
        return rank_personalised(rooms, affinity, now_ms)
    return rank_popularity(rooms, now_ms)


# ---------------------------------------------------------------- diversity


def category_cap(page_size: int) -> int:
    """At most this many rooms of one category on a page (while others remain)."""
    return max(2, page_size // 3)


def arrange(ranked: Sequence[Scored], page_size: int = DEFAULT_PAGE, *, max_pages: int | None = None) -> list[list[Scored]]:
    """Cut a ranking into pages under the diversity rules (module docstring). Every
    ranked room is placed once (hosts with several live rooms spill onto later pages),
    pages keep the ranking's order where the rules allow.

    Raises:
        ValueError: ``page_size < 1``.
    """
    if page_size < 1:
        raise ValueError("page_size must be >= 1")
    cap = category_cap(page_size)
    order = {id(s): i for i, s in enumerate(ranked)}
    rest = [s for s in ranked if s.room.state == "live"]
    pages: list[list[Scored]] = []
    while rest and (max_pages is None or len(pages) < max_pages):
        page: list[Scored] = []
        hosts: set[str] = set()
        cats: dict[str, int] = {}
        deferred: list[Scored] = []
        left: list[Scored] = []
        for s in rest:
            if len(page) >= page_size:
                left.append(s)
                continue
            if s.room.host in hosts:
                left.append(s)
                continue
            cat = s.room.category or ""
            if cat and cats.get(cat, 0) >= cap:
                deferred.append(s)
                continue
            page.append(s)
            hosts.add(s.room.host)
            if cat:
                cats[cat] = cats.get(cat, 0) + 1
        for s in deferred:  # no other category left to spread with: fill, hosts still unique
            if len(page) < page_size and s.room.host not in hosts:
                page.append(s)
                hosts.add(s.room.host)
            else:
                left.append(s)
        if not page:  # cannot happen (the first remaining room always fits); guard anyway
            break
        pages.append(page)
        rest = sorted(left, key=lambda s: order[id(s)])
    return pages


def item(s: Scored, position: int, now_ms: int) -> dict[str, Any]:
    """One feed item as the API returns it."""
    r = s.room
    return {
        "position": position,
        "room": r.id,
        "title": r.title,
        "host": r.host,
        "category": r.category,
        "online": r.online,
        "comments_per_min": round(r.comments_pm, 2),
        "likes_per_min": round(r.likes_pm, 2),
        "gmv_per_min": round(r.gmv_pm, 2),
        "minutes_live": round(r.minutes_live(now_ms), 1),
        "score": round(s.score, 4),
        "reasons": list(s.reasons),
        "why": s.why,
    }


def top_ids(ranked: Sequence[Scored], k: int, *, diverse: bool = True) -> list[str]:
    """The first ``k`` room ids a viewer would see (the first page when ``diverse``)."""
    if diverse:
        pages = arrange(ranked, k, max_pages=1)
        return [s.room.id for s in (pages[0] if pages else [])]
    return [s.room.id for s in ranked[:k]]
