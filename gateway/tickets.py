"""Complaint tickets over HTTP (the rules are :mod:`livecommerce.tickets`).

* ``POST /api/v1/tickets {subject, text, kind?, priority?, order_id?, room_id?}`` (any
  signed-in user; an ``order_id`` must be theirs) -> 201 the ticket with its ``sla``.
* ``GET /api/v1/tickets?status=&breached=1&limit=&offset=``: ops see every ticket, most
  urgent SLA first (due time, breached first); a viewer sees their own.
* ``GET /api/v1/tickets/{id}`` (owner, ops): the ticket, its SLA timer and its history.
* ``POST /api/v1/tickets/{id}/status {status, note?, assignee?}``: ops move any ticket; the
  owner may close theirs or reopen a resolved one (``status: in_progress``).

Tickets live in SQL (:mod:`livecommerce.tickets_sql`); each opening and move is also
appended to the log (topic ``support``) for analytics, best effort.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web

from livecommerce import profiles_sql, tickets_sql
from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, NotFound
from livecommerce.log import Log
from livecommerce.store_sql import SqlStore
from livecommerce.tickets import TOPIC as SUPPORT
from livecommerce.tickets import Ticket, parse_ticket, ticket_view

from .core import Gateway
from .validation import page, read_object

log = logging.getLogger("livecommerce.gateway.tickets")


class Tickets:
    """Open, list, read and move complaint tickets."""

    def __init__(self, gw: Gateway, store: SqlStore, log: Log) -> None:
        self.gw = gw
        self.store = store
        self.log = log

    async def open_ticket(self, ident: Identity, body: dict[str, Any]) -> dict[str, Any]:
        """Open a ticket for ``ident``; its view with the SLA timer.

        Raises:
            BadFrame: a bad ticket. NotFound: ``order_id`` is not the caller's (ops: any).
        """
        nt = parse_ticket(body)
        room = nt.room_id
        if nt.order_id is not None:
            o = await self.store.get_order(nt.order_id)
            if o is None or (o.user_id != ident.user and not ident.is_ops):
                raise NotFound(f"no order {nt.order_id}")
            room = o.room_id
        now = self.gw.now_ms()
        t = Ticket(f"tk{secrets.token_hex(8)}", ident.user, nt.kind, nt.priority, nt.subject, nt.text, "open", now, now,
                   order_id=nt.order_id, room_id=room)
        await tickets_sql.open_ticket(self.store, t)
        await self._support("ticket.opened", t.id, {"ticket_id": t.id, "user_id": t.user_id, "kind": t.kind, "priority": t.priority,
                                                    "order_id": t.order_id, "room_id": t.room_id}, f"{t.id}:1", now)
        if ident.name and ident.role == "viewer":
            await profiles_sql.set_display_name(self.store, ident.user, ident.name, now_ms=now)
        return ticket_view(t, now)

    async def _support(self, t: str, key: str, data: dict[str, Any], eid: str, ts: int) -> None:
        try:
            await self.log.append(SUPPORT, key, t, data, event_id=eid, ts=ts)
        except Exception as exc:  # the ticket is in SQL; the log copy is for analytics
            log.warning("tickets.append_failed", extra={"ticket": key, "err": repr(exc)})

    # ---- handlers (gateway.routes)
    async def post_ticket(self, request: web.Request) -> web.Response:
        return web.json_response(await self.open_ticket(self.gw.identify_request(request), await read_object(request)), status=201)

    async def list_tickets(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        status = request.query.get("status")
        if status is not None and status not in ("open", "in_progress", "resolved", "closed"):
            raise BadFrame(f"unknown ticket status {status!r}", code="invalid")
        limit, offset = page(request)
        user = None if ident.is_ops else ident.user
        now = self.gw.now_ms()
        rows = [ticket_view(t, now)
                for t in await tickets_sql.list_tickets(self.store, user_id=user, status=status, limit=limit, offset=offset)]
        if request.query.get("breached") in ("1", "true"):
            rows = [r for r in rows if r["sla"]["breached"]]
        # the ops queue: running timers first, soonest due (most overdue) first
        rows.sort(key=lambda r: (r["sla"]["due_ms"] is None, r["sla"]["due_ms"] or 0, r["created_ms"]))
        return web.json_response({"tickets": rows, "now_ms": now})

    async def get_ticket(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        got = await tickets_sql.get(self.store, request.match_info["ticket"])
        if got is None or (not ident.is_ops and got[0].user_id != ident.user):
            raise NotFound(f"no ticket {request.match_info['ticket']}")
        t, hist = got
        return web.json_response({**ticket_view(t, self.gw.now_ms()), "history": hist})

    async def move_ticket(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        body = await read_object(request)
        tid = request.match_info["ticket"]
        got = await tickets_sql.get(self.store, tid)
        if got is None or (not ident.is_ops and got[0].user_id != ident.user):
            raise NotFound(f"no ticket {tid}")
        note, assignee = body.get("note"), body.get("assignee")
        if note is not None and (not isinstance(note, str) or len(note) > 4000):
            raise BadFrame("'note' must be text of at most 4000 characters", code="invalid")
        if assignee is not None and (not ident.is_ops or not isinstance(assignee, str) or not 0 < len(assignee) <= 64):
            raise BadFrame("'assignee' (ops only) must be a user id", code="invalid")
        now = self.gw.now_ms()
        t, changed = await tickets_sql.move(self.store, tid, body.get("status", got[0].status), by=ident.user, role=ident.role,
                                            note=note, now_ms=now, assignee=assignee)
        if changed:
            await self._support("ticket.updated", tid, {"ticket_id": tid, "from": got[0].status, "to": t.status, "by": ident.user},
                                f"{tid}:{now}", now)
        return web.json_response({**ticket_view(t, now), "changed": changed})
