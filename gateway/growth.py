"""Growth at the edge: visits and acquisitions to the log, analytics for ops.

* Visits: ``welcome`` of a viewer appends ``growth.visit {user, room, day}`` (topic
  ``growth``, id ``visit:<user>:<day>``) once per user and day on this node, in the
  background, many at a time (one ``append_many`` while the previous is out): a lost visit
  is a lost analytics point, never a lost connection.
* ``POST /api/v1/growth/acquire {channel?, invite_code?}`` (the signed-in viewer, once,
  e.g. on the app's first start): how they came. With an ``invite_code`` the channel is
  ``invite`` and the code's owner is the referrer (404 ``unknown_code``, 409 ``own_code``);
  else ``channel`` (default ``organic``). The first report wins: 201 the acquisition, or
  200 with ``first: false`` and the one recorded before. Appends ``growth.acquired``
  (id ``acq:<user>``).

Ops (JSON the dashboard charts; ``?days=N&until=YYYY-MM-DD``, default the last 30 days):

* ``GET /api/v1/growth/daily``: per day ``{day, active, new, returning, revenue, paying}``.
* ``GET /api/v1/growth/retention``: per first-active cohort ``{cohort, size, d1, d1_rate,
  d7, d7_rate}`` (rates None until the day has come) and the size-weighted means.
* ``GET /api/v1/growth/funnel?by=channel|invite``: per channel (or invite code)
  acquired -> activated -> retained day 1 -> retained day 7 -> paying -> referring, with
  rates over acquired, revenue and invitees.
* ``GET /api/v1/growth/users/{user}``: one viewer's growth row (first seen, channel,
  referral state).

Definitions: :mod:`livecommerce.growth`; tables: :mod:`livecommerce.growth_sql`, filled by
``livecommerce worker growth``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from livecommerce import growth_sql
from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, NotFound
from livecommerce.growth import (
    ACQUIRED,
    INVITE,
    ORGANIC,
    TOPIC,
    VISIT,
    acquired_event_id,
    check_channel,
    daily_json,
    day_of,
    funnel_json,
    retention_json,
    visit_event_id,
    window,
)
from livecommerce.log import Log, LogEvent, new_event
from livecommerce.referrals import check_code, check_referral
from livecommerce.referrals_redis import ReferralsRedis
from livecommerce.store_sql import SqlStore

from .core import Gateway
from .openapi import (
    ANYONE_SIGNED,
    BOOL,
    INT,
    NUM,
    OPS,
    P_USER,
    SELF,
    STR,
    J,
    arr,
    nullable,
    obj,
    op,
)
from .validation import read_object

log = logging.getLogger("livecommerce.gateway.growth")

MAX_BATCH = 500  # visits per log call
VISITS_WINDOW_S = 0.05  # visits gathered per log call

SEEN_MAX = 200_000


class Growth:
    """Visits and acquisitions to the log; the growth analytics routes."""

    def __init__(self, gw: Gateway, referrals: ReferralsRedis, store: SqlStore, log: Log) -> None:
        self.gw = gw
        self.referrals = referrals
        self.store = store
        self.log = log
        self._visited: set[tuple[str, int]] = set()
        self._day = -1
        self._queue: list[LogEvent] = []  # visits not yet handed to the log
        self._writer: asyncio.Task[None] | None = None

    def _append(self, key: str, type_: str, data: dict[str, Any], event_id: str, ts: int) -> None:
        """Queue one event for the log; the queue goes out as one ``append_many`` while the
        previous batch is out (a join storm brings thousands of first visits a second)."""
        self._queue.append(new_event(TOPIC, key, type_, data, event_id, ts))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write(), name="growth.visits")

    async def _write(self) -> None:
        try:
            while self._queue:
                await asyncio.sleep(VISITS_WINDOW_S)  # a batch is what came meanwhile
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    await self.log.append_many(batch)
                except Exception as exc:
                    log.warning("growth.events_dropped", extra={"events": len(batch), "first": batch[0].id, "err": repr(exc)})
        finally:
            self._writer = None

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        if ident.role != "viewer":
            return {}
        now = self.gw.now_ms()
        day = day_of(now)
        if day != self._day:
            self._visited, self._day = set(), day
        if (ident.user, day) not in self._visited:
            if len(self._visited) >= SEEN_MAX:
                self._visited.clear()  # repeats are the same log event (id per user and day)
            self._visited.add((ident.user, day))
            self._append(ident.user, VISIT, {"user": ident.user, "room": room, "day": day}, visit_event_id(ident.user, day), now)
        return {}

    async def acquire(self, user: str, body: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Record how ``user`` came (see the module docstring): ``(first, acquisition)``.

        Raises:
            BadFrame: bad channel or code. Conflict: unknown or own code.
        """
        code = body.get("invite_code")
        record: dict[str, Any]
        if code is not None:
            code = check_code(code)
            referrer = check_referral(user, await self.referrals.owner(code))
            record = {"user": user, "channel": INVITE, "invite_code": code, "referrer": referrer}
        else:
            record = {"user": user, "channel": check_channel(body.get("channel", ORGANIC))}
        now = self.gw.now_ms()
        record["ts"] = now
        first, held = await self.referrals.acquire(user, record)
        # appended on every report: a crash after the Redis write must not lose the event,
        # and the log event id is the user's, so repeats are the same event
        data = {k: v for k, v in held.items() if k != "ts"}
        await self.log.append(TOPIC, user, ACQUIRED, data, event_id=acquired_event_id(user), ts=int(held.get("ts", now)))
        return first, held

    async def stop(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    # ---- handlers (gateway.routes)
    def _today(self) -> int:
        return day_of(self.gw.now_ms())

    async def post_acquire(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        body = await read_object(request)
        first, held = await self.acquire(ident.user, body)
        return web.json_response({**held, "first": first}, status=201 if first else 200)

    async def daily(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        first, last = window(request.query, today=self._today())
        active, money = await growth_sql.daily(self.store, first, last)
        return web.json_response(daily_json(first, last, active, money))

    async def retention(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        first, last = window(request.query, today=self._today())
        return web.json_response(retention_json(first, last, self._today(), await growth_sql.retention(self.store, first, last)))

    async def funnel(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        by = request.query.get("by", "channel")
        if by not in ("channel", "invite"):
            raise BadFrame("'by' must be channel or invite", code="invalid")
        first, last = window(request.query, today=self._today())
        return web.json_response(funnel_json(first, last, by, await growth_sql.funnel(self.store, first, last, by=by)))

    async def user(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        uid = request.match_info["user"]
        ident.require_self_or_ops(uid)
        row = await growth_sql.user_row(self.store, uid)
        if row is None:
            raise NotFound(f"no growth record for {uid!r} yet")
        return web.json_response(row)


_WINDOW: list[J] = [{"name": "days", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 400}},
                    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date"}}]
_STEP: J = obj({"step": STR, "count": INT, "rate": NUM}, ["step", "count", "rate"])
_ACQUIRED: J = obj({"user": STR, "channel": STR, "invite_code": STR, "referrer": STR, "ts": INT, "first": BOOL}, ["user", "channel", "first"])
_ACQUIRE: J = op("Report how I came (channel or invite code); the first report wins", tag="growth", auth=ANYONE_SIGNED,
                 body=obj({"channel": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}, "invite_code": STR}),
                 ok=("201", _ACQUIRED, "recorded"), errors=(404, 409), desc="404 `unknown_code`, 409 `own_code`.")
_ACQUIRE["responses"]["200"] = {"description": "already recorded: `first` is false and the earlier acquisition holds",
                                "content": {"application/json": {"schema": _ACQUIRED}}}
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/growth/acquire": {"post": _ACQUIRE},
    "/api/v1/growth/daily": {"get": op("Daily active viewers, new and returning, revenue", tag="growth", auth=OPS, params=_WINDOW,
                                       ok=("200", obj({"from": STR, "to": STR, "days": arr(obj(
                                           {"day": STR, "active": INT, "new": INT, "returning": INT, "revenue": INT, "paying": INT},
                                           ["day", "active", "new", "returning", "revenue", "paying"]))}, ["from", "to", "days"]), "series"))},
    "/api/v1/growth/retention": {"get": op("Day-1 and day-7 retention by first-active cohort", tag="growth", auth=OPS, params=_WINDOW,
                                           ok=("200", obj({"from": STR, "to": STR, "d1_rate": nullable(NUM), "d7_rate": nullable(NUM),
                                                           "cohorts": arr(obj({"cohort": STR, "size": INT, "d1": nullable(INT), "d1_rate": nullable(NUM),
                                                                               "d7": nullable(INT), "d7_rate": nullable(NUM)}, ["cohort", "size"]))},
                                                          ["from", "to", "cohorts"]), "cohorts"))},
    "/api/v1/growth/funnel": {"get": op(
        "Acquisition funnel per channel or invite code: acquired, activated, retained, paying, referring", tag="growth", auth=OPS,
        params=[*_WINDOW, {"name": "by", "in": "query", "schema": {"enum": ["channel", "invite"]}}],
        ok=("200", obj({"from": STR, "to": STR, "by": STR, "steps": arr(STR), "total": {"type": "object", "additionalProperties": INT},
                        "rows": arr(obj({"steps": arr(_STEP), "counts": {"type": "object", "additionalProperties": INT}, "revenue": INT,
                                         "revenue_per_user": NUM, "invitees": INT}, ["steps", "counts", "revenue"]))},
                       ["from", "to", "by", "steps", "total", "rows"]), "funnels"))},
    "/api/v1/growth/users/{user}": {"get": op("One viewer's growth record", tag="growth", auth=SELF, params=[P_USER],
                                              ok=("200", {"type": "object"}, "record"), errors=(404,))},
}
