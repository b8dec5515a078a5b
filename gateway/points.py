"""Points at the edge: activity events, points over HTTP.

* The level shown on comments is the one the points worker caches in ``{user:ID}:points``
  (field ``level``); the comments capability reads it with the author's other badges
  (:mod:`livecommerce.badges`).
* Comments: a comment hook (:meth:`Points.on_comment`) counts the user's comments of the UTC day in Redis
  (``{user:ID}:cmt:<day>``); only the first ``comment_points_daily_cap`` produce an
  ``activity.comment {user, room, day, n}`` event (id ``comment:<user>:<day>:<n>``, so a
  retry is one event); past the cap this node stops asking Redis for that user and day.
* Watch time: a viewer's session in a room on this node starts at ``welcome`` and ends
  when their last connection to the room here closes; ``activity.watch {user, room,
  session, minutes, total_min}`` is appended for the whole minutes watched every
  :data:`WATCH_FLUSH_S` seconds and at the end (ids ``watch:<session>:<n>``). Only the
  ``viewer`` role earns watch points.
* Activity appends run in the background (topic ``activity``, key the user): they never
  slow a comment down; a failed append is logged and dropped (activity points are not
  money).

HTTP (the user or ops):

* ``GET /api/v1/points/{user}``: ``{user, viewer, host, level, host_level}`` from the
  SQL ledger (the truth; the worker applies events within moments).
* ``GET /api/v1/points/{user}/ledger?role=&limit=&offset=``: the entries, newest first.
* ``POST /api/v1/points/{user}/redeem {value, request_id}``: ask for a coupon worth
  ``value`` cents for ``value * points_per_coupon_coin`` points. 202 ``{event_id,
  coupon_id, cost}``; the points worker decides against the ledger (409
  ``insufficient_points`` here when the ledger already says no), grants the coupon and
  pushes ``coupon.claimed`` to the user. Repeating ``request_id`` is one redemption.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, cast

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.coupons import coupon_id
from livecommerce.errors import BadFrame, Conflict, Forbidden, LiveCommerceError
from livecommerce.log import Log
from livecommerce.points import (
    COMMENT,
    REDEEM,
    WATCH,
    Rules,
    WatchSession,
    comment_event_id,
    level_for,
    parse_redeem,
    redeem_cost,
    redeem_drop_id,
    redeem_event_id,
    utc_day,
)
from livecommerce.points_redis import PointsRedis
from livecommerce.store import PointsRole
from livecommerce.store_sql import SqlStore

from .conn import Conn
from .core import Gateway
from .idempotency import idempotent
from .validation import page, read_json

log = logging.getLogger("livecommerce.gateway.points")

WATCH_FLUSH_S = 180.0
WATCH_CHECK_S = 5.0
ACTIVITY = "activity"


class Points:
    def __init__(self, gw: Gateway, cache: PointsRedis, log: Log, store: SqlStore) -> None:
        self.gw = gw
        self.cache = cache
        self.log = log
        self.store = store
        self.rules = Rules.from_settings(gw.s)
        self._capped: set[tuple[str, int]] = set()  # (user, day) past the comment cap
        self._capped_day = -1
        self.sessions: dict[tuple[str, str], WatchSession] = {}
        self._next_check = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- levels
    # ---- activity
    def _append(self, key: str, type_: str, data: dict[str, Any], event_id: str) -> None:
        async def go() -> None:
            try:
                await self.log.append(ACTIVITY, key, type_, data, event_id=event_id)
            except Exception as exc:
                log.warning("points.activity_dropped", extra={"event": event_id, "err": repr(exc)})

        task = asyncio.get_running_loop().create_task(go())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_comment(self, conn: Conn, d: dict[str, Any]) -> None:
        day = utc_day(self.gw.now_ms())
        if day != self._capped_day:
            self._capped, self._capped_day = set(), day
        user = conn.user
        if (user, day) in self._capped or self.rules.comment_points <= 0:
            return
        try:
            n = await self.cache.count_comment(user, day)
        except LiveCommerceError:
            return  # the comment goes out; its point is lost (activity is not money)
        if n > self.rules.comment_daily_cap:
            self._capped.add((user, day))
            return
        self._append(user, COMMENT, {"user": user, "room": conn.room, "day": day, "n": n}, comment_event_id(user, day, n))

    async def on_welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        if ident.role == "viewer" and (ident.user, room) not in self.sessions:
            sid = uuid.uuid4().hex  # event ids stay short: watch:<32 hex>:<n>
            now = self.gw.now_ms()
            self.sessions[(ident.user, room)] = WatchSession(sid, ident.user, room, now, last_emit_ms=now)
        return {}

    async def on_second(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + WATCH_CHECK_S
        self.check_sessions(self.gw.now_ms())

    def check_sessions(self, now_ms: int, *, final: bool = False) -> None:
        """Emit watch minutes for sessions that ended or are due (all of them if ``final``)."""
        by_user = self.gw.hub.by_user
        for key, s in list(self.sessions.items()):
            live = not final and any(c.room == s.room and not c.closed for c in by_user.get(s.user, ()))
            if live and now_ms - s.last_emit_ms < WATCH_FLUSH_S * 1000:
                continue
            got = s.take(now_ms)
            if not live:
                del self.sessions[key]
            if got is not None:
                eid, data = got
                self._append(s.user, WATCH, data, eid)

    async def stop(self) -> None:
        self.check_sessions(self.gw.now_ms(), final=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- handlers (gateway.routes)
    async def balance(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        user = request.match_info["user"]
        ident.require_self_or_ops(user)
        viewer = await self.store.points_balance(user, "viewer")
        host = await self.store.points_balance(user, "host")
        levels = self.rules.levels
        return web.json_response(
            {"user": user, "viewer": viewer, "host": host, "level": level_for(viewer, levels), "host_level": level_for(host, levels)}
        )

    async def ledger(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        user = request.match_info["user"]
        ident.require_self_or_ops(user)
        role = request.query.get("role")
        if role is not None and role not in ("viewer", "host"):
            raise BadFrame("role must be viewer or host", code="invalid")
        limit, offset = page(request)
        entries = await self.store.points_ledger(user, role=cast("PointsRole | None", role), limit=limit, offset=offset)
        return web.json_response(
            {
                "user": user,
                "entries": [
                    {"id": e.id, "role": e.role, "delta": e.delta, "reason": e.reason, "ref_event_id": e.ref_event_id, "ts": e.ts_ms}
                    for e in entries
                ],
            }
        )

    async def redeem(self, request: web.Request) -> web.Response:
        gw = self.gw
        ident = gw.identify_request(request)
        user = request.match_info["user"]
        if ident.user != user:
            raise Forbidden("users redeem their own points")
        body = await read_json(request, default={})
        r = parse_redeem(body)
        cost = redeem_cost(r.value, self.rules)

        async def run() -> web.Response:
            if await self.store.points_balance(user, "viewer") < cost:
                raise Conflict(f"a coupon worth {r.value} costs {cost} points", code="insufficient_points")
            eid = redeem_event_id(user, r.request_id)
            data = {"user": user, "value": r.value, "cost": cost, "request_id": r.request_id}
            await self.log.append("points", user, REDEEM, data, event_id=eid)
            return web.json_response(
                {"event_id": eid, "coupon_id": coupon_id(redeem_drop_id(eid), user), "cost": cost, "value": r.value}, status=202
            )

        # the request id is the redemption's event id: it binds the value (a reuse for
        # another value would otherwise answer 202 while the worker keeps the first)
        return await idempotent(gw, request, ident, key=r.request_id, target=user, body={"value": r.value}, run=run,
                                namespace="redeem")
