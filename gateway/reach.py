"""Follower reach at the edge: ``host.live`` on the log, the inbox, schedules and subscriptions.

The rules are :mod:`livecommerce.reach`; the fan-out and the reminder sweep run in
``workers/reach.py`` (docs/reach.md).

* A show going live (``RoomsService.go_live``, a ``live`` hook) appends one ``host.live``
  event to the log, nothing per follower: the request's cost does not grow with the host's
  audience. Called on every go-live, also a repeated one, with the show's id: a go-live
  whose append failed is repaired by pressing it again.
* A joiner with unread notifications gets a private ``notifications {unread}`` frame right
  after its ``welcome`` (none when the count is 0: the client's bell starts at 0):
  the joiners of a short window (:data:`UNREAD_WINDOW_S`) are read in one pipelined round
  trip, so a join storm costs one read per window, not one per welcome (the welcome itself
  reads nothing for a room the node serves).
* Followers connected anywhere get a private ``host.live {id, host, room, title,
  start_ms}`` frame; at a schedule's start its subscribers get ``schedule.reminder {id,
  host, room, schedule, title, start_ms}``. ``id`` is the inbox row's.

HTTP (JSON):

* ``GET /api/v1/me/notifications?unread=1&limit=&before_ms=``: the caller's inbox, newest
  first, with the unread count.
* ``POST /api/v1/me/notifications/read {ids: [...]} | {all: true}``: mark read.
* ``POST /api/v1/hosts/{host}/schedule {title, start_ms, products?, room?}`` (the host
  themself, token role ``host``, or ops) -> 201 the schedule. ``GET`` the same path
  (public): the host's schedules from a day ago on, with ``subscribed`` for a signed-in caller.
* ``GET /api/v1/schedules/{schedule}`` (public); ``DELETE`` it (its host or ops): cancelled.
* ``POST /api/v1/schedules/{schedule}/subscribe`` (signed in), ``DELETE`` the same:
  subscribe (预约) / unsubscribe.
* The feed (``GET /api/v1/feed``) lists ``upcoming`` schedules (:meth:`Reach.upcoming`),
  hosts the viewer follows first; read from a node-local copy refreshed every
  :data:`UPCOMING_S` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from aiohttp import web

from livecommerce import reach_sql
from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, Forbidden, LiveCommerceError, NotFound, Unauthorized
from livecommerce.fanclub import check_host
from livecommerce.log import Log
from livecommerce.protocol.events import envelope
from livecommerce.reach import (
    HOST_LIVE,
    MAX_LIST,
    PAST_GRACE_MS,
    TOPIC,
    UPCOMING_HORIZON_MS,
    Schedule,
    check_read,
    check_schedule,
    live_event,
    live_event_id,
    schedule_id,
    upcoming,
    valid_id,
)
from livecommerce.reach_redis import RedisReach
from livecommerce.store_sql import SqlStore

from .core import Gateway
from .openapi import ANYONE_SIGNED, BOOL, INT, MS, STR, USER, J, arr, nullable, obj, op, ref
from .validation import read_json

log = logging.getLogger("livecommerce.gateway.reach")

#: joiners whose unread counts are read together (one round trip per window)
UNREAD_WINDOW_S = 0.05
#: windows a joiner's count waits for its connection to be attached before it is dropped
UNREAD_TRIES = 3

UPCOMING_S = 5.0
DAY_MS = 24 * 3600 * 1000


class Reach:
    """``host.live`` events, the inbox, schedules and subscriptions (module docstring)."""

    def __init__(self, gw: Gateway, store: SqlStore, redis: RedisReach, durable: Log) -> None:
        self.gw = gw
        self.store = store
        self.redis = redis
        self.log = durable
        self._upcoming: list[Schedule] = []
        self._upcoming_at = 0.0
        self._joined: dict[str, set[str]] = {}  # user -> rooms joined in the current window
        self._late: dict[str, int] = {}  # user -> windows its connection was not attached yet
        self._flush: asyncio.Task[None] | None = None

    # ---- hooks
    async def on_live(self, room: str, pub: dict[str, Any]) -> None:
        """``live`` hook: the show's ``host.live`` event (idempotent on the show's id).

        Raises:
            Unavailable: the log unreachable (the go-live answers 503; pressing it again
                appends the event).
        """
        host, live_ms = str(pub.get("host") or ""), int(pub.get("live_ms") or 0)
        if not valid_id(host) or not live_ms:
            return
        await self.log.append(TOPIC, host, HOST_LIVE, live_event(host, room, str(pub.get("title") or ""), live_ms),
                              event_id=live_event_id(room, live_ms))

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        """Welcome hook: nothing in the welcome; the joiner's unread count follows it as a
        private ``notifications {unread}`` frame, read with the window's other joiners."""
        self._joined.setdefault(ident.user, set()).add(room)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self._push_unread(), name="reach.unread")
        return {}

    async def _push_unread(self) -> None:
        """After :data:`UNREAD_WINDOW_S`: one read of every joiner's unread count, then the
        frame to each of their connections in the rooms they joined (a lossy push: the bell
        shows the count of the next join or the inbox)."""
        try:
            await asyncio.sleep(UNREAD_WINDOW_S)
            joined, self._joined = self._joined, {}
            self._flush = None
            try:
                counts = await self.redis.unread_many(list(joined))
            except LiveCommerceError as exc:
                log.warning("reach.unread_failed", extra={"users": len(joined), "err": exc.message})
                return
            now = self.gw.now_ms()
            for user, rooms in joined.items():
                unread = counts.get(user, 0)
                if not unread:
                    continue  # the bell starts at 0: no frame (a join storm's viewers mostly have none)
                env = envelope("notifications", None, {"unread": unread}, ts=now)
                sent = False
                for conn in list(self.gw.hub.by_user.get(user, ())):
                    if conn.room in rooms:
                        conn.send(env)
                        sent = True
                tries = self._late.pop(user, 0)
                if not sent and tries < UNREAD_TRIES:  # its welcome not attached yet (a loaded node)
                    self._late[user] = tries + 1
                    self._joined.setdefault(user, set()).update(rooms)
            if self._joined and self._flush is None:
                self._flush = asyncio.get_running_loop().create_task(self._push_unread(), name="reach.unread")
        finally:
            if self._flush is asyncio.current_task():
                self._flush = None

    async def stop(self) -> None:
        if self._flush is not None:
            self._flush.cancel()

    async def upcoming(self, user: str, following: frozenset[str], *, limit: int = 10) -> list[dict[str, Any]]:
        """The feed's upcoming shows for a viewer following ``following``."""
        now = time.monotonic()
        ms = self.gw.now_ms()
        if now >= self._upcoming_at:
            self._upcoming_at = now + UPCOMING_S
            try:
                self._upcoming = await reach_sql.scheduled_between(self.store, ms - PAST_GRACE_MS, ms + UPCOMING_HORIZON_MS)
            except LiveCommerceError as exc:  # the feed without its schedules beats no feed
                log.warning("reach.upcoming_failed", extra={"err": exc.message})
        return upcoming(self._upcoming, now_ms=ms, following=following, limit=limit)

    # ---- the inbox
    async def http_inbox(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        limit = _int(request, "limit", 20, 1, MAX_LIST)
        before = _int(request, "before_ms", 0, 0, 2**53) or None
        unread_only = request.query.get("unread", "") in ("1", "true")
        items, unread = await reach_sql.inbox(self.store, ident.user, unread_only=unread_only, limit=limit, before_ms=before)
        await self._set_unread(ident.user, unread)
        return web.json_response({"user": ident.user, "unread": unread, "items": items})

    async def http_read(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        ids = check_read(await read_json(request))
        marked, unread = await reach_sql.mark_read(self.store, ident.user, ids, now_ms=self.gw.now_ms())
        await self._set_unread(ident.user, unread)
        return web.json_response({"marked": marked, "unread": unread})

    async def _set_unread(self, user: str, n: int) -> None:
        try:
            await self.redis.set_unread(user, n)
        except LiveCommerceError as exc:
            log.warning("reach.unread_failed", extra={"user": user, "err": exc.message})

    # ---- schedules
    def _host_or_ops(self, ident: Identity, host: str) -> None:
        if not (ident.is_ops or (ident.role == "host" and ident.user == host)):
            raise Forbidden(f"only host {host!r} themself or ops may change this schedule")

    async def http_schedule_create(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        host = check_host(request.match_info["host"])
        self._host_or_ops(ident, host)
        now = self.gw.now_ms()
        got = check_schedule(await read_json(request), now_ms=now)
        if got.room is not None and not ident.is_ops and got.room not in ident.rooms:
            raise Forbidden(f"room {got.room!r} is not one of this host's rooms")
        s = Schedule(id=schedule_id(host, got.start_ms, secrets.token_hex(4)), host=host, title=got.title,
                     start_ms=got.start_ms, products=got.products, room=got.room, created_ms=now)
        await reach_sql.create_schedule(self.store, s, now_ms=now)
        self._upcoming_at = 0.0  # this node's feed shows it at once
        log.info("reach.scheduled", extra={"schedule": s.id, "host": host, "start_ms": s.start_ms, "by": ident.user})
        return web.json_response(s.public(), status=201)

    async def http_schedule_list(self, request: web.Request) -> web.Response:
        host = check_host(request.match_info["host"])
        rows = await reach_sql.host_schedules(self.store, host, from_ms=self.gw.now_ms() - DAY_MS)
        mine: set[str] = set()
        caller = self._maybe_identity(request)
        if caller is not None:
            mine = await reach_sql.subscribed(self.store, caller.user, [s.id for s in rows])
        return web.json_response({"host": host, "schedules": [{**s.public(), "subscribed": s.id in mine} for s in rows]})

    def _maybe_identity(self, request: web.Request) -> Identity | None:
        try:
            return self.gw.identify_request(request)
        except Unauthorized:
            return None

    async def _schedule(self, request: web.Request) -> Schedule:
        sid = request.match_info["schedule"]
        if not valid_id(sid):
            raise BadFrame("bad schedule id", code="invalid")
        s = await reach_sql.get_schedule(self.store, sid)
        if s is None:
            raise NotFound(f"schedule {sid!r} does not exist")
        return s

    async def http_schedule_get(self, request: web.Request) -> web.Response:
        s = await self._schedule(request)
        out = s.public()
        caller = self._maybe_identity(request)
        if caller is not None:
            out["subscribed"] = bool(await reach_sql.subscribed(self.store, caller.user, [s.id]))
        return web.json_response(out)

    async def http_schedule_cancel(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        s = await self._schedule(request)
        self._host_or_ops(ident, s.host)
        s = await reach_sql.step_schedule(self.store, s.id, "cancel", now_ms=self.gw.now_ms())
        self._upcoming_at = 0.0
        log.info("reach.schedule_cancelled", extra={"schedule": s.id, "by": ident.user})
        return web.json_response(s.public())

    async def http_subscribe(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        s = await self._schedule(request)
        on = request.method == "POST"
        if on and s.state != "scheduled":
            raise BadFrame(f"the schedule is {s.state}: nothing to subscribe to", code="invalid")
        changed = await reach_sql.subscribe(self.store, s.id, ident.user, on=on, now_ms=self.gw.now_ms())
        return web.json_response({"schedule": s.id, "subscribed": on, "changed": changed})


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    try:
        v = int(request.query.get(name, str(default)))
    except ValueError:
        raise BadFrame(f"'{name}' must be an integer", code="invalid") from None
    if not lo <= v <= hi:
        raise BadFrame(f"'{name}' must be {lo}..{hi}", code="invalid")
    return v


_SID: J = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}
P_SCHEDULE: J = {"name": "schedule", "in": "path", "required": True, "schema": _SID}
P_HOST: J = {"name": "host", "in": "path", "required": True, "schema": USER}
_NOTICE_KIND: J = {"enum": ["host.live", "schedule.reminder"]}
OPENAPI_SCHEMAS: dict[str, J] = {
    "Notification": obj({
        "id": STR, "kind": _NOTICE_KIND, "host": STR, "room": nullable(STR), "schedule": nullable(STR), "title": STR,
        "start_ms": nullable(MS), "created_ms": MS, "read": BOOL, "read_ms": nullable(MS),
    }, ["id", "kind", "host", "title", "created_ms", "read"], desc="one inbox row (the pushed frame's `id` is the same)"),
    "Schedule": obj({
        "id": STR, "host": STR, "title": STR, "start_ms": MS, "products": arr(STR), "room": nullable(STR),
        "state": {"enum": ["scheduled", "reminded", "cancelled"]}, "created_ms": MS, "subscribers": INT,
        "subscribed": BOOL, "following": BOOL,
    }, ["id", "host", "title", "start_ms", "products", "state"], desc="a host's announced show (预告)"),
}
_SCHEDULE_BODY: J = obj({
    "title": {"type": "string", "minLength": 1, "maxLength": 100},
    "start_ms": {"type": "integer", "description": "epoch ms: from a minute ago to 30 days ahead"},
    "products": {"type": "array", "maxItems": 20, "items": _SID, "description": "products to expect"},
    "room": _SID,
}, ["title", "start_ms"])
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/me/notifications": {"get": op(
        "My notification inbox, newest first, with the unread count", tag="reach", auth=ANYONE_SIGNED,
        params=[{"name": "unread", "in": "query", "schema": {"enum": ["0", "1", "true", "false"]}, "description": "unread only"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST}},
                {"name": "before_ms", "in": "query", "schema": {"type": "integer", "minimum": 0},
                 "description": "older than this (the last item's created_ms: the next page)"}],
        ok=("200", obj({"user": STR, "unread": INT, "items": arr(ref("Notification"))}, ["user", "unread", "items"]), "the inbox"),
        desc="`host.live` when a host I follow goes live, `schedule.reminder` when a show I subscribed to starts.")},
    "/api/v1/me/notifications/read": {"post": op(
        "Mark notifications read (some ids, or all)", tag="reach", auth=ANYONE_SIGNED,
        body={"oneOf": [obj({"ids": {"type": "array", "minItems": 1, "maxItems": 200, "items": {"type": "string", "maxLength": 200}}},
                            ["ids"], extra=False),
                        obj({"all": {"const": True}}, ["all"], extra=False)]},
        ok=("200", obj({"marked": INT, "unread": INT}, ["marked", "unread"]), "marked"))},
    "/api/v1/hosts/{host}/schedule": {
        "post": op("Publish a schedule (预告): title, start time, products to expect", tag="reach",
                   auth="the host themself (token role `host`) or ops", params=[P_HOST], body=_SCHEDULE_BODY,
                   ok=("201", ref("Schedule"), "scheduled"),
                   desc="Subscribers get `schedule.reminder` at `start_ms` (once each), in their inbox and pushed."),
        "get": op("A host's schedules from a day ago on, soonest first", tag="reach", auth=None, params=[P_HOST],
                  ok=("200", obj({"host": STR, "schedules": arr(ref("Schedule"))}, ["host", "schedules"]), "schedules"),
                  desc="With a token, each schedule says whether the caller `subscribed`."),
    },
    "/api/v1/schedules/{schedule}": {
        "get": op("One schedule", tag="reach", auth=None, params=[P_SCHEDULE], ok=("200", ref("Schedule"), "the schedule"),
                  errors=(404,)),
        "delete": op("Cancel a schedule (no reminder will go out)", tag="reach", auth="its host or ops", params=[P_SCHEDULE],
                     ok=("200", ref("Schedule"), "cancelled"), errors=(404, 409)),
    },
    "/api/v1/schedules/{schedule}/subscribe": {
        "post": op("Subscribe to a schedule (预约): a reminder at its start", tag="reach", auth=ANYONE_SIGNED,
                   params=[P_SCHEDULE], ok=("200", obj({"schedule": STR, "subscribed": BOOL, "changed": BOOL},
                                                       ["schedule", "subscribed"]), "subscribed"), errors=(404,)),
        "delete": op("Unsubscribe from a schedule", tag="reach", auth=ANYONE_SIGNED, params=[P_SCHEDULE],
                     ok=("200", obj({"schedule": STR, "subscribed": BOOL, "changed": BOOL}, ["schedule", "subscribed"]),
                         "unsubscribed"), errors=(404,)),
    },
}
