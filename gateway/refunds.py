"""After-sales at the edge: refund requests and decisions, order history, complaint tickets.

Refunds (the rules are :mod:`livecommerce.refunds`; every step is an event on the log and the
refunds worker applies it):

* ``POST /api/v1/orders/{order}/refunds {qty?, reason, note?}`` (the buyer): 202 with the
  refund (``refund_id``, ``qty``, ``amount``, ``state: requested``). The order's refund
  record in Redis admits one open refund at a time (409 ``refund_pending``); repeating the
  same request while it is open answers 200 with it again (``duplicate: true``) and
  re-appends its event (same id), which repairs a lost append. Other 409s:
  ``not_paid``, ``refund_window_closed``, ``nothing_to_refund``, ``too_many_units``,
  ``whole_order_only``.
* ``POST /api/v1/refunds/{refund}/approve`` and ``/reject {note?}`` (ops, or the host of
  the order's room): the decision is taken once in Redis (a concurrent approve and reject:
  one wins, the other gets 409 ``illegal_transition``), then ``refund.approved`` /
  ``refund.rejected`` is appended. Repeating it re-appends the same event.
* ``GET /api/v1/refunds?state=&room=&user=&limit=&offset=``: ops (all), a host (``room=``
  one of theirs), a viewer (their own).
* ``GET /api/v1/orders/{order}/refunds`` and ``GET /api/v1/orders/{order}/history`` (the
  buyer, ops, the room's host): the order's refunds, and its whole history: every state
  change (``order_events``) merged with each refund's request, decision and settlement,
  oldest first; a refund the worker has not applied yet shows from its Redis record.

Tickets (the rules are :mod:`livecommerce.tickets`):

* ``POST /api/v1/tickets {subject, text, kind?, priority?, order_id?, room_id?}`` (any
  signed-in user; an ``order_id`` must be theirs) -> 201 the ticket with its ``sla``.
* ``GET /api/v1/tickets?status=&breached=1&limit=&offset=``: ops see every ticket, most
  urgent SLA first (due time, breached first); a viewer sees their own.
* ``GET /api/v1/tickets/{id}`` (owner, ops): the ticket, its SLA timer and its history.
* ``POST /api/v1/tickets/{id}/status {status, note?, assignee?}``: ops move any ticket; the
  owner may close theirs or reopen a resolved one (``status: in_progress``).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Literal

from aiohttp import web

from livecommerce import profiles_sql, refunds_sql, tickets_sql
from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, Conflict, Forbidden, NotFound
from livecommerce.points import room_owner
from livecommerce.redis_conn import guarded
from livecommerce.refunds import (
    APPROVED,
    MAX_NOTE,
    REJECTED,
    REQUESTED,
    TOPIC,
    OrderFacts,
    PriorRefund,
    event_id,
    history_entry,
    order_of,
    parse_request,
    plan_refund,
)
from livecommerce.refunds_redis import RefundsRedis
from livecommerce.tickets import TOPIC as SUPPORT
from livecommerce.tickets import Ticket, parse_ticket, ticket_view

from .core import Gateway
from .idempotency import header_key, idempotent
from .validation import read_object
from .wallet import durable_log, page, sql_store

log = logging.getLogger("livecommerce.gateway.refunds")


async def host_of(gw: Gateway, room: str) -> str:
    """The room's host (the gifts capability's cache when present), ``room:<id>`` when
    unknown: the same rule the points worker used to credit the sale."""
    gifts = gw.services.get("gifts")
    if gifts is not None:
        return str(await gifts.host_of(room))
    async with guarded():
        v = await gw.redis.hget(gw.keys.room_meta(room), "host")
    return (v.decode() if isinstance(v, bytes) else str(v)) if v else room_owner(room)


class AfterSales:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.records = RefundsRedis(gw.redis, gw.keys)

    async def ask(self, ident: Identity, order_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """A refund request; ``(refund, duplicate)``.

        Raises:
            NotFound: no such order of the caller. Conflict / BadFrame: see the module docstring.
        """
        ask = parse_request(body)
        store = sql_store(self.gw)
        order = await store.get_order(order_id)
        if order is None or order.user_id != ident.user:
            raise NotFound(f"no order {order_id}")
        records = await self.records.records(order_id)
        for rec in records.values():
            if rec["s"] == "requested" and not int(rec.get("d", 0)):
                data = rec["data"]
                if ask.reason != data["reason"] or (ask.qty is not None and ask.qty != data["qty"]):
                    raise Conflict(f"refund {data['refund_id']} of this order is still being handled", code="refund_pending")
                await self._append_request({**data, "note": ask.note})
                return self._public(data, "requested"), True
        paid_ms = next((h.ts_ms for h in await store.order_history(order_id) if h.to_state == "paid"), None)
        facts = OrderFacts(order.id, order.user_id, order.room_id, order.sale_id, order.state, order.qty, order.amount, paid_ms)
        prior = [PriorRefund(n, int(r["q"]), int(r["a"]), r["s"], bool(int(r.get("d", 0)))) for n, r in sorted(records.items())]
        refund = plan_refund(facts, prior, ask, user=ident.user, host=await host_of(self.gw, order.room_id), now_ms=self.gw.now_ms())
        await self.records.request(refund)
        await self._append_request(refund.event_data())
        if ident.name:
            await profiles_sql.set_display_name(store, ident.user, ident.name, now_ms=self.gw.now_ms())
        return self._public(refund.event_data(with_note=False), "requested"), False

    async def _append_request(self, data: dict[str, Any]) -> None:
        rid = str(data["refund_id"])
        await durable_log(self.gw).append(TOPIC, str(data["order_id"]), REQUESTED, data, event_id=event_id(rid, "requested"),
                                          ts=int(data["requested_ms"]))

    @staticmethod
    def _public(data: dict[str, Any], state: str) -> dict[str, Any]:
        keys = ("refund_id", "order_id", "qty", "amount", "reason", "requested_ms", "room_id", "sale_id")
        return {**{k: data[k] for k in keys}, "state": state}

    async def decide(self, ident: Identity, rid: str, approve: bool, body: dict[str, Any]) -> dict[str, Any]:
        """Approve or reject a refund, once.

        Raises:
            NotFound: no such refund. Forbidden: not ops nor the room's host.
            Conflict: decided otherwise already.
        """
        note = body.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise BadFrame(f"'note' must be text of at most {MAX_NOTE} characters", code="invalid")
        rec = await self.records.record(rid)
        if rec is None:
            raise NotFound(f"no refund {rid}")
        ident.require_host(str(rec["room"]))
        state: Literal["approved", "rejected"] = "approved" if approve else "rejected"
        changed = await self.records.decide(rid, state, by=ident.user, now_ms=self.gw.now_ms())
        rec = await self.records.record(rid)
        assert rec is not None
        data = {**rec["data"], "decided_by": rec.get("by"), "decided_ms": rec.get("dts"), "decision_note": note}
        oid, _ = order_of(rid)
        await durable_log(self.gw).append(TOPIC, oid, APPROVED if approve else REJECTED, data, event_id=event_id(rid, state),
                                          ts=int(rec.get("dts") or self.gw.now_ms()))
        return {**self._public(rec["data"], str(rec["s"])), "decided_by": rec.get("by"), "changed": changed}

    async def authorize_order(self, ident: Identity, order_id: str) -> Any:
        """The SQL order, if the caller is its buyer, ops or the host of its room.

        Raises:
            NotFound: no such order (or not theirs).
        """
        o = await sql_store(self.gw).get_order(order_id)
        if o is None or not (ident.role == "ops" or o.user_id == ident.user or ident.may_host(o.room_id)):
            raise NotFound(f"no order {order_id}")
        return o

    async def history(self, ident: Identity, order_id: str) -> dict[str, Any]:
        store = sql_store(self.gw)
        o = await self.authorize_order(ident, order_id)
        out: list[dict[str, Any]] = []
        for h in await store.order_history(order_id):
            out.append(history_entry("order", h.ts_ms, event_id=h.event_id, **{"from": h.from_state}, to=h.to_state,
                                     refund_qty=h.refund_qty or None, refund_amount=h.refund_amount or None, reason=h.reason))
        known = set()
        for r in await refunds_sql.list_refunds(store, order_ids=[order_id], limit=1000):
            known.add(r["refund_id"])
            out.append(history_entry("refund.requested", r["requested_ms"], refund_id=r["refund_id"], qty=r["qty"], amount=r["amount"],
                                     reason=r["reason"], note=r["note"] if ident.user == o.user_id or ident.role == "ops" else None))
            if r["decided_ms"] is not None:
                kind = "refund.rejected" if r["state"] == "rejected" else "refund.approved"
                out.append(history_entry(kind, r["decided_ms"], refund_id=r["refund_id"], by=r["decided_by"], note=r["decision_note"]))
            if r["settled_ms"] is not None:
                out.append(history_entry("refund.settled", r["settled_ms"], refund_id=r["refund_id"], credited=r["credited"],
                                         restocked=r["restocked"]))
        for _n, rec in sorted((await self.records.records(order_id)).items()):
            rid = rec["data"]["refund_id"]
            if rid not in known:  # not applied by the worker yet
                out.append(history_entry("refund.requested", int(rec["ts"]), refund_id=rid, qty=rec["q"], amount=rec["a"],
                                         reason=rec["data"].get("reason"), pending=True))
                if rec.get("dts"):
                    out.append(history_entry(f"refund.{rec['s'] if rec['s'] != 'refunded' else 'approved'}", int(rec["dts"]),
                                             refund_id=rid, by=rec.get("by"), pending=True))
        order_rank = {"order": 0, "refund.requested": 1, "refund.approved": 2, "refund.rejected": 2, "refund.settled": 3}
        out.sort(key=lambda e: (e["ts"], order_rank.get(e["kind"], 9)))
        return {"order_id": order_id, "state": o.state, "refunded_qty": o.refunded_qty, "refunded_amount": o.refunded_amount,
                "history": out}

    # ---------------------------------------------------------------- tickets
    async def open_ticket(self, ident: Identity, body: dict[str, Any]) -> dict[str, Any]:
        nt = parse_ticket(body)
        store = sql_store(self.gw)
        room = nt.room_id
        if nt.order_id is not None:
            o = await store.get_order(nt.order_id)
            if o is None or (o.user_id != ident.user and ident.role != "ops"):
                raise NotFound(f"no order {nt.order_id}")
            room = o.room_id
        now = self.gw.now_ms()
        t = Ticket(f"tk{secrets.token_hex(8)}", ident.user, nt.kind, nt.priority, nt.subject, nt.text, "open", now, now,
                   order_id=nt.order_id, room_id=room)
        await tickets_sql.open_ticket(store, t)
        await self._support("ticket.opened", t.id, {"ticket_id": t.id, "user_id": t.user_id, "kind": t.kind, "priority": t.priority,
                                                    "order_id": t.order_id, "room_id": t.room_id}, f"{t.id}:1", now)
        if ident.name and ident.role == "viewer":
            await profiles_sql.set_display_name(store, ident.user, ident.name, now_ms=now)
        return ticket_view(t, now)

    async def _support(self, t: str, key: str, data: dict[str, Any], eid: str, ts: int) -> None:
        try:
            await durable_log(self.gw).append(SUPPORT, key, t, data, event_id=eid, ts=ts)
        except Exception as exc:  # the ticket is in SQL; the log copy is for analytics
            log.warning("tickets.append_failed", extra={"ticket": key, "err": repr(exc)})


def setup(gw: Gateway, app: web.Application) -> None:
    svc = AfterSales(gw)
    gw.services["aftersales"] = svc

    async def ask(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        oid = request.match_info["order"]
        body = await read_object(request)

        async def run() -> web.Response:
            refund, dup = await svc.ask(ident, oid, body)
            return web.json_response({**refund, "duplicate": dup}, status=200 if dup else 202)

        return await idempotent(gw, request, ident, key=header_key(request), target=oid, body=body, run=run)

    async def approve(request: web.Request) -> web.Response:
        return web.json_response(await svc.decide(gw.identify_request(request), request.match_info["refund"], True, await read_object(request)))

    async def reject(request: web.Request) -> web.Response:
        return web.json_response(await svc.decide(gw.identify_request(request), request.match_info["refund"], False, await read_object(request)))

    async def list_refunds(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        q = request.query
        room, user = q.get("room"), q.get("user")
        if ident.role != "ops":
            if room is not None and ident.may_host(room):
                pass
            elif user in (None, ident.user) and room is None:
                user = ident.user
            else:
                raise Forbidden("ops list every refund; a host lists a room of theirs (?room=); a viewer their own")
        state = q.get("state")
        if state is not None and state not in ("requested", "approved", "rejected", "refunded"):
            raise BadFrame(f"unknown refund state {state!r}", code="invalid")
        limit, offset = page(request)
        rows = await refunds_sql.list_refunds(sql_store(gw), user_id=user, room_id=room, state=state, limit=limit, offset=offset)
        return web.json_response({"refunds": rows})

    async def order_refunds(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        oid = request.match_info["order"]
        await svc.authorize_order(ident, oid)
        return web.json_response({"order_id": oid, "refunds": await refunds_sql.list_refunds(sql_store(gw), order_ids=[oid], limit=1000)})

    async def history(request: web.Request) -> web.Response:
        return web.json_response(await svc.history(gw.identify_request(request), request.match_info["order"]))

    async def open_ticket(request: web.Request) -> web.Response:
        return web.json_response(await svc.open_ticket(gw.identify_request(request), await read_object(request)), status=201)

    async def list_tickets(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        status = request.query.get("status")
        if status is not None and status not in ("open", "in_progress", "resolved", "closed"):
            raise BadFrame(f"unknown ticket status {status!r}", code="invalid")
        limit, offset = page(request)
        user = None if ident.role == "ops" else ident.user
        now = gw.now_ms()
        rows = [ticket_view(t, now) for t in await tickets_sql.list_tickets(sql_store(gw), user_id=user, status=status, limit=limit, offset=offset)]
        if request.query.get("breached") in ("1", "true"):
            rows = [r for r in rows if r["sla"]["breached"]]
        # the ops queue: running timers first, soonest due (most overdue) first
        rows.sort(key=lambda r: (r["sla"]["due_ms"] is None, r["sla"]["due_ms"] or 0, r["created_ms"]))
        return web.json_response({"tickets": rows, "now_ms": now})

    async def get_ticket(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        got = await tickets_sql.get(sql_store(gw), request.match_info["ticket"])
        if got is None or (ident.role != "ops" and got[0].user_id != ident.user):
            raise NotFound(f"no ticket {request.match_info['ticket']}")
        t, hist = got
        return web.json_response({**ticket_view(t, gw.now_ms()), "history": hist})

    async def move_ticket(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        body = await read_object(request)
        tid = request.match_info["ticket"]
        got = await tickets_sql.get(sql_store(gw), tid)
        if got is None or (ident.role != "ops" and got[0].user_id != ident.user):
            raise NotFound(f"no ticket {tid}")
        note, assignee = body.get("note"), body.get("assignee")
        if note is not None and (not isinstance(note, str) or len(note) > 4000):
            raise BadFrame("'note' must be text of at most 4000 characters", code="invalid")
        if assignee is not None and (ident.role != "ops" or not isinstance(assignee, str) or not 0 < len(assignee) <= 64):
            raise BadFrame("'assignee' (ops only) must be a user id", code="invalid")
        now = gw.now_ms()
        t, changed = await tickets_sql.move(sql_store(gw), tid, body.get("status", got[0].status), by=ident.user, role=ident.role,
                                            note=note, now_ms=now, assignee=assignee)
        if changed:
            await svc._support("ticket.updated", tid, {"ticket_id": tid, "from": got[0].status, "to": t.status, "by": ident.user},
                               f"{tid}:{now}", now)
        return web.json_response({**ticket_view(t, now), "changed": changed})

    r = app.router
    r.add_post("/api/v1/orders/{order}/refunds", ask)
    r.add_get("/api/v1/orders/{order}/refunds", order_refunds)
    r.add_get("/api/v1/orders/{order}/history", history)
    r.add_get("/api/v1/refunds", list_refunds)
    r.add_post("/api/v1/refunds/{refund}/approve", approve)
    r.add_post("/api/v1/refunds/{refund}/reject", reject)
    r.add_post("/api/v1/tickets", open_ticket)
    r.add_get("/api/v1/tickets", list_tickets)
    r.add_get("/api/v1/tickets/{ticket}", get_ticket)
    r.add_post("/api/v1/tickets/{ticket}/status", move_ticket)
