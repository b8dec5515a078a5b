"""Fan clubs at the edge: follow, join, badges on comments, fan leaderboards.

The rules are :mod:`livecommerce.fanclub`. Follows and memberships are events on the log
(``fan.follow`` / ``fan.club``, topic ``activity``, each with a per-user version so the last
change wins); the profiles worker applies them with the intimacy, and refreshes the Redis
cache this module reads.

HTTP (signed in; the caller follows / joins for themself):

* ``POST /api/v1/hosts/{host}/follow``, ``DELETE`` the same: follow / unfollow -> 202
  ``{host, following, v}``.
* ``POST /api/v1/hosts/{host}/fanclub``, ``DELETE`` the same: join / leave the host's fan
  club (joining also follows) -> 202 ``{host, member, v}``.
* ``GET /api/v1/hosts/{host}/fans?n=`` (public): the fan leaderboard, members by intimacy
  ``[{rank, user, name, intimacy, level}]``, with ``members`` and ``followers`` counts.
* ``GET /api/v1/me/fanclubs``: the caller's follows and memberships with intimacy and level.

Badge: a comment carries ``fan {host, level}`` when its author is a member of the room host's
club; the comments capability reads it with the author's other badges
(:mod:`livecommerce.badges`).
"""

from __future__ import annotations

import logging

from aiohttp import web

from livecommerce import profiles_sql
from livecommerce.auth import Identity
from livecommerce.errors import Forbidden
from livecommerce.fanclub import (
    CLUB,
    FOLLOW,
    MAX_LEADERBOARD,
    check_host,
    fan_event,
    fan_event_id,
    fan_level,
    leaderboard_entry,
)
from livecommerce.fanclub_redis import FanclubRedis
from livecommerce.log import Log
from livecommerce.store_sql import SqlStore

from .core import Gateway

log = logging.getLogger("livecommerce.gateway.fanclub")

ACTIVITY = "activity"


class Fanclub:
    """Follows, memberships and fan boards."""

    def __init__(self, gw: Gateway, fans: FanclubRedis, store: SqlStore, log: Log) -> None:
        self.gw = gw
        self.fans = fans
        self.store = store
        self.log = log

    async def change(self, user: str, host: str, kind: str, on: bool) -> int:
        """Append a follow / membership change; return its version.

        Raises:
            Unavailable: Redis or the log unreachable.
        """
        v = await self.fans.next_version(user)
        await self.log.append(ACTIVITY, user, kind, fan_event(user, host, on=on, v=v), event_id=fan_event_id(user, v))
        return v

    # ---- handlers (gateway.routes)
    def _viewer_of(self, request: web.Request) -> tuple[Identity, str]:
        ident = self.gw.identify_request(request)
        host = check_host(request.match_info["host"])
        if host == ident.user:
            raise Forbidden("hosts do not follow or join their own club")
        return ident, host

    async def follow(self, request: web.Request) -> web.Response:
        """``POST`` follows, ``DELETE`` unfollows."""
        ident, host = self._viewer_of(request)
        on = request.method == "POST"
        v = await self.change(ident.user, host, FOLLOW, on)
        return web.json_response({"host": host, "following": on, "v": v}, status=202)

    async def club(self, request: web.Request) -> web.Response:
        """``POST`` joins (and follows), ``DELETE`` leaves."""
        ident, host = self._viewer_of(request)
        on = request.method == "POST"
        if on:
            await self.change(ident.user, host, FOLLOW, True)
            if ident.name:
                await profiles_sql.set_display_name(self.store, ident.user, ident.name, now_ms=self.gw.now_ms())
        v = await self.change(ident.user, host, CLUB, on)
        return web.json_response({"host": host, "member": on, "v": v}, status=202)

    async def fans_board(self, request: web.Request) -> web.Response:
        host = check_host(request.match_info["host"])
        try:
            n = max(1, min(MAX_LEADERBOARD, int(request.query.get("n", "20"))))
        except ValueError:
            n = 20
        top = await self.fans.top(host, n)
        names: dict[str, str | None] = {}
        if top:
            names = {u: name for u, _, name in await profiles_sql.fan_board(self.store, host, n)}
        board = [leaderboard_entry(i + 1, u, pts, names.get(u)) for i, (u, pts) in enumerate(top)]
        return web.json_response({"host": host, **await profiles_sql.fan_counts(self.store, host), "top": board})

    async def mine(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        rows = await profiles_sql.memberships(self.store, ident.user)
        return web.json_response({"user": ident.user, "fanclubs": [
            {**r, "level": fan_level(r["intimacy"]) if r["member"] else None} for r in rows]})
