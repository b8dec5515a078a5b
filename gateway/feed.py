"""``GET /api/v1/feed``: live rooms ranked for the viewer (:mod:`livecommerce.feed`).

HTTP (JSON):

* ``GET /api/v1/feed?limit=10&page=1`` (any signed-in user; ops may add
  ``&ranker=popularity|personalised``): ``{ranker, experiment, cold_start, page, limit,
  pages, total_live, items: [{position, room, title, host, category, online,
  comments_per_min, likes_per_min, gmv_per_min, minutes_live, score, reasons, why}],
  signals_age_ms, generated_ms}``. The ranker is the viewer's ``feed.ranker`` flag (an
  experiment may switch it; default ``popularity``), which records the exposure.
* ``PUT /api/v1/rooms/{room}/category {category}`` (host of the room or ops): the room's
  category for the feed (else the category of the product pinned last).
* ``GET /api/v1/feed/rooms`` (ops): every candidate with its signals, for the dashboard.

Freshness: every :data:`SAMPLE_S` seconds each node reads all indexed live rooms' meta,
counters, online counts and GMV in one pipeline (``livecommerce.feed_redis``) and keeps the
samples in a :class:`~livecommerce.feed.SignalWindow`, so rates follow what happens in the
rooms within seconds. The index of live rooms (``lc:{feed}:live``) is kept by every node
from what it sees: ``room.live`` / ``room.ended`` events of its rooms (a hub observer),
successful ``POST /api/v1/rooms/{room}/live|end`` it served, and its local rooms found
live at a sample.

Never an ended room: candidates are filtered by their state at the last sample, a
``room.ended`` seen by this node drops the room at once, and before answering, the page's
rooms are checked against their state in Redis *now*; a room found ended is removed and
the page is arranged again.

Profiles: ``profiles.view_of(user)`` (issue 11's profiles, any object with that
coroutine, :class:`ProfileSource`, given to :class:`Feed`), cached here
:data:`PROFILE_CACHE_S` seconds; without a source every viewer is cold-start (popularity).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from livecommerce.errors import BadFrame, Forbidden, LiveCommerceError
from livecommerce.feed import (
    DEFAULT_PAGE,
    MAX_PAGE,
    RANKERS,
    LiveRoom,
    SignalWindow,
    affinity_from_profile,
    arrange,
    item,
    rank,
)
from livecommerce.feed_redis import FeedRedis
from livecommerce.pins_redis import RedisPins
from livecommerce.rooms import valid_room_id

from .core import Gateway
from .experiments import Experiments
from .openapi import (
    ANYONE_SIGNED,
    BOOL,
    HOST,
    INT,
    MS,
    NUM,
    OPS,
    P_ROOM,
    STR,
    J,
    arr,
    nullable,
    obj,
    op,
    ref,
)
from .validation import read_json

log = logging.getLogger("livecommerce.gateway.feed")

SAMPLE_S = 2.0
PROFILE_CACHE_S = 10.0
MAX_CANDIDATES = 5000
RECHECKS = 3


class ProfileSource(Protocol):
    """Where the feed reads a viewer's profile view (None: unknown viewer)."""

    async def view_of(self, user: str) -> dict[str, Any] | None: ...


#: ``(user, hosts they follow)`` -> the feed's upcoming shows (follower reach's schedules)
Upcoming = Callable[[str, frozenset[str]], Awaitable[list[dict[str, Any]]]]


class Feed:
    """The viewer's feed, the index of live rooms and its samples; the feed's HTTP API."""

    def __init__(self, gw: Gateway, redis: FeedRedis, pins: RedisPins, experiments: Experiments,
                 profiles: ProfileSource | None, *, upcoming: Upcoming | None = None) -> None:
        self.gw = gw  # the clock, the callers' identities, this node's rooms
        self.redis = redis
        self.pins = pins
        self.experiments = experiments  # the viewer's ``feed.ranker`` flag
        self.profiles = profiles
        self.upcoming = upcoming  # schedules (预告) starting soon, listed beside the live rooms
        self.window = SignalWindow()
        self.rooms: dict[str, LiveRoom] = {}
        self.sampled_ms = 0
        self._next = 0.0
        self._profiles: dict[str, tuple[dict[str, Any] | None, float]] = {}
        self._profiles_purge = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sampling: asyncio.Lock = asyncio.Lock()

    # ---- the index
    def _spawn(self, coro: Any, what: str) -> None:
        async def go() -> None:
            try:
                await coro
            except LiveCommerceError as exc:
                log.warning("feed.task_failed", extra={"task": what, "err": exc.message})

        task = asyncio.get_running_loop().create_task(go())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer: index rooms going live, drop rooms that end, learn categories."""
        t, room = env.get("t"), env.get("room")
        if not room:
            return
        if t == "room.live":
            d = env.get("d") or {}
            self._spawn(self.redis.index(room, int(d.get("live_ms") or env.get("ts") or self.gw.now_ms())), "index")
        elif t == "room.ended":
            self.rooms.pop(room, None)
            self._spawn(self.redis.unindex([room]), "unindex")
        elif t == "product.pinned":
            pid = (env.get("d") or {}).get("product_id")
            if pid:
                self._spawn(self._pin_category(room, str(pid)), "pin_category")

    async def _pin_category(self, room: str, product_id: str) -> None:
        product = await self.pins.get_product(product_id)
        cat = getattr(product, "category", "") if product is not None else ""
        if cat:
            await self.redis.set_category(room, cat, field="pin_category")

    async def on_response(self, request: web.Request, response: web.StreamResponse) -> None:
        """After ``POST /api/v1/rooms/{room}/live|end`` served here: index or drop."""
        if request.method != "POST" or response.status != 200 or not request.path.startswith("/api/v1/rooms/"):
            return
        parts = request.path.split("/")
        if len(parts) == 6 and parts[5] in ("live", "end"):
            room = parts[4]
            if parts[5] == "end":
                self.rooms.pop(room, None)
            self._spawn(self._sync_room(room), "sync")

    async def _sync_room(self, room: str) -> None:
        got = await self.redis.read([room], now_ms=self.gw.now_ms())
        r = got.get(room)
        if r is not None and r.room.state == "live":
            await self.redis.index(room, r.room.live_ms)
        else:
            self.rooms.pop(room, None)
            await self.redis.unindex([room])

    # ---- sampling
    async def on_second(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + SAMPLE_S
        try:
            await self.sample()
        except LiveCommerceError as exc:
            log.warning("feed.sample_failed", extra={"err": exc.message})

    async def sample(self) -> dict[str, LiveRoom]:
        """Read every candidate once, update the rates, keep the live ones.

        Raises:
            Unavailable: Redis unreachable (the previous sample stays).
        """
        async with self._sampling:
            now = self.gw.now_ms()
            indexed = await self.redis.candidates(MAX_CANDIDATES)
            known = set(indexed)
            local = [r for r in self.gw.hub.rooms if r not in known]
            got = await self.redis.read(indexed + local, now_ms=now)
            live: dict[str, LiveRoom] = {}
            stale = [r for r in indexed if r not in got or got[r].room.state != "live"]
            for room, c in got.items():
                if c.room.state != "live":
                    continue
                if room in local:
                    await self.redis.index(room, c.room.live_ms)
                self.window.observe(room, live_ms=c.room.live_ms, now_ms=now, comments=c.comments, likes=c.likes, gmv=c.gmv)
                cm, lk, gv = self.window.rates(room, now_ms=now)
                r = c.room
                live[room] = LiveRoom(r.id, r.host, r.state, r.title, r.category, r.live_ms, r.online, cm, lk, gv)
            await self.redis.unindex(stale)
            self.window.keep_only(live)
            self.rooms, self.sampled_ms = live, now
            return live

    # ---- profiles
    async def profile(self, user: str) -> dict[str, Any] | None:
        now = time.monotonic()
        hit = self._profiles.get(user)
        if hit is not None and hit[1] > now:
            return hit[0]
        src = self.profiles
        view = None
        if src is not None:
            try:
                view = await src.view_of(user)
            except LiveCommerceError as exc:  # no profile beats no feed
                log.warning("feed.profile_failed", extra={"user": user, "err": exc.message})
                view = hit[0] if hit is not None else None
        if len(self._profiles) > 100_000:
            self._profiles.clear()
        elif len(self._profiles) >= 256 and now >= self._profiles_purge:  # churned viewers' profiles go once stale
            self._profiles = {u: hit for u, hit in self._profiles.items() if hit[1] > now}
            self._profiles_purge = now + 60
        self._profiles[user] = (view, now + PROFILE_CACHE_S)
        return view

    # ---- the feed
    async def feed(self, user: str, *, limit: int, page: int, ranker: str | None) -> dict[str, Any]:
        """A page of the viewer's feed (see the module docstring).

        Raises:
            Unavailable: Redis unreachable.
        """
        if not self.sampled_ms or self.gw.now_ms() - self.sampled_ms > 3 * SAMPLE_S * 1000:
            await self.sample()
        exps = self.experiments
        experiment = None
        if ranker is None:
            ranker = exps.flag(user, "feed.ranker", "popularity")
            arm = exps.arm(user, "feed.ranker")
            experiment = {"id": arm.exp, "arm": arm.variant} if arm is not None else None
        if ranker not in RANKERS:
            ranker = "popularity"
        affinity = affinity_from_profile(await self.profile(user))
        now = self.gw.now_ms()
        rooms = dict(self.rooms)
        for _ in range(RECHECKS):
            pages = arrange(rank(ranker, rooms.values(), affinity, now), limit)
            chosen = pages[page - 1] if page <= len(pages) else []
            states = await self.redis.states([s.room.id for s in chosen])
            ended = [r for r, st in states.items() if st != "live"]
            if not ended:
                break
            for r in ended:
                rooms.pop(r, None)
                self.rooms.pop(r, None)
            self._spawn(self.redis.unindex(ended), "unindex")
        else:
            chosen = []  # the rooms keep ending under us: an empty page is still a truthful one
        start = (page - 1) * limit
        soon = await self.upcoming(user, affinity.followed) if self.upcoming is not None and page == 1 else []
        return {
            "ranker": ranker,
            "experiment": experiment,
            "cold_start": affinity.cold,
            "page": page,
            "limit": limit,
            "pages": len(pages),
            "total_live": len(rooms),
            "items": [item(s, start + i + 1, now) for i, s in enumerate(chosen)],
            "upcoming": soon,
            "signals_age_ms": now - self.sampled_ms,
            "generated_ms": now,
        }

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- HTTP (gateway.routes)
    async def get_feed(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        limit = _int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        page = _int(request, "page", 1, 1, 1000)
        ranker = request.query.get("ranker")
        if ranker is not None:
            if not ident.is_ops:
                raise Forbidden("only ops may choose the ranker; viewers get their flag's")
            if ranker not in RANKERS:
                raise BadFrame(f"'ranker' must be one of {', '.join(RANKERS)}", code="invalid")
        return web.json_response(await self.feed(ident.user, limit=limit, page=page, ranker=ranker))

    async def put_category(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = request.match_info["room"]
        if not valid_room_id(room):
            raise BadFrame("bad room id", code="invalid")
        ident.require_host(room)
        body = await read_json(request, default={})
        cat = body.get("category") if isinstance(body, dict) else None
        if not isinstance(cat, str) or len(cat.strip()) > 64:
            raise BadFrame("body must be {\"category\": text of at most 64 characters}", code="invalid")
        cat = cat.strip().lower()
        await self.redis.set_category(room, cat)
        return web.json_response({"room": room, "category": cat or None})

    async def list_rooms(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        live = await self.sample()
        now = self.gw.now_ms()
        rows = sorted(live.values(), key=lambda r: (-r.online, r.id))
        return web.json_response({"rooms": [
            {"room": r.id, "host": r.host, "title": r.title, "category": r.category, "online": r.online,
             "comments_per_min": round(r.comments_pm, 2), "likes_per_min": round(r.likes_pm, 2),
             "gmv_per_min": round(r.gmv_pm, 2), "minutes_live": round(r.minutes_live(now), 1)} for r in rows],
            "sampled_ms": self.sampled_ms})


_ROOM_SIGNALS: J = {"room": STR, "title": STR, "host": STR, "category": nullable(STR), "online": INT, "comments_per_min": NUM,
                    "likes_per_min": NUM, "gmv_per_min": NUM, "minutes_live": NUM}
OPENAPI_SCHEMAS: dict[str, J] = {
    "FeedItem": obj({**_ROOM_SIGNALS, "position": INT, "score": NUM, "reasons": arr(STR), "why": STR},
                    ["position", "room", "host", "online", "score", "reasons", "why"]),
    "Feed": obj({
        "ranker": {"enum": ["popularity", "personalised"]}, "experiment": nullable(obj({"id": STR, "arm": STR}, ["id", "arm"])),
        "cold_start": BOOL, "page": INT, "limit": INT, "pages": INT, "total_live": INT, "items": arr(ref("FeedItem")),
        "upcoming": {**arr(ref("Schedule")), "description": "schedules starting within a week (page 1), followed hosts first"},
        "signals_age_ms": INT, "generated_ms": MS,
    }, ["ranker", "experiment", "cold_start", "page", "limit", "pages", "total_live", "items", "generated_ms"]),
}
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/feed": {"get": op(
        "Live rooms ranked for me (no host twice on a page, categories spread, never an ended room)", tag="feed", auth=ANYONE_SIGNED,
        params=[{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                {"name": "ranker", "in": "query", "schema": {"enum": list(RANKERS)}, "description": "ops only"}],
        ok=("200", ref("Feed"), "a page of the feed"),
        desc="The ranker is the viewer's `feed.ranker` flag (an experiment may switch it).")},
    "/api/v1/feed/rooms": {"get": op("Feed candidates and their live signals", tag="feed", auth=OPS,
                                     ok=("200", obj({"rooms": arr(obj(_ROOM_SIGNALS, ["room", "host", "online"])), "sampled_ms": MS},
                                                    ["rooms"]), "live rooms"))},
    "/api/v1/rooms/{room}/category": {"put": op("Set the room's category for the feed", tag="feed", auth=HOST, params=[P_ROOM],
                                                body=obj({"category": {"type": "string", "maxLength": 64}}, ["category"]),
                                                ok=("200", obj({"room": STR, "category": nullable(STR)}, ["room", "category"]), "set"))},
}


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    try:
        v = int(request.query.get(name, str(default)))
    except ValueError:
        raise BadFrame(f"'{name}' must be an integer", code="invalid") from None
    if not lo <= v <= hi:
        raise BadFrame(f"'{name}' must be {lo}..{hi}", code="invalid")
    return v
