"""After-sales at the edge: refund requests and decisions, order history.

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

Built by ``gateway.wiring`` (routes in ``gateway.routes``), given the refund records in
Redis, the SQL store, the log and the room-host lookup. Complaint tickets are
``gateway/tickets.py``.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from aiohttp import web

from livecommerce import profiles_sql, refunds_sql
from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, Conflict, Forbidden, NotFound
from livecommerce.fulfilment import may_approve, progress_of
from livecommerce.fulfilment_redis import FulfilmentRedis
from livecommerce.log import Log
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
from livecommerce.store_sql import SqlStore

from .core import Gateway
from .hooks import HostOf
from .idempotency import header_key, idempotent
from .validation import page, read_object

log = logging.getLogger("livecommerce.gateway.refunds")


class AfterSales:
    """Refund requests and decisions, an order's refunds and history."""

    def __init__(self, gw: Gateway, records: RefundsRedis, store: SqlStore, log: Log, host_of: HostOf,
                 shipping: FulfilmentRedis) -> None:
        self.gw = gw
        self.records = records
        self.shipping = shipping  # the order's fulfilment record: what after-sales its progress allows
        self.store = store
        self.log = log
        self.host_of = host_of

    async def ask(self, ident: Identity, order_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """A refund request; ``(refund, duplicate)``.

        Raises:
            NotFound: no such order of the caller. Conflict / BadFrame: see the module docstring.
        """
        ask = parse_request(body)
        store = self.store
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
        progress = progress_of((await self.shipping.record(order_id)).st)
        refund = plan_refund(facts, prior, ask, user=ident.user, host=await self.host_of(order.room_id), now_ms=self.gw.now_ms(),
                             progress=progress)
        await self.records.request(refund)
        await self._append_request(refund.event_data())
        if ident.name:
            await profiles_sql.set_display_name(store, ident.user, ident.name, now_ms=self.gw.now_ms())
        return self._public(refund.event_data(with_note=False), "requested"), False

    async def _append_request(self, data: dict[str, Any]) -> None:
        rid = str(data["refund_id"])
        await self.log.append(TOPIC, str(data["order_id"]), REQUESTED, data, event_id=event_id(rid, "requested"),
                              ts=int(data["requested_ms"]))

    @staticmethod
    def _public(data: dict[str, Any], state: str) -> dict[str, Any]:
        keys = ("refund_id", "order_id", "qty", "amount", "reason", "requested_ms", "room_id", "sale_id")
        return {**{k: data[k] for k in keys}, "kind": data.get("kind") or "refund", "state": state}

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
        oid, _ = order_of(rid)
        if approve and rec["s"] == "requested":  # a return is paid once its goods are back
            ship = await self.shipping.record(oid)
            may_approve(str(rec.get("k") or rec["data"].get("kind") or "refund"),
                        any(s.refund_id == rid and s.state == "delivered" for s in ship.shipments))
        state: Literal["approved", "rejected"] = "approved" if approve else "rejected"
        changed = await self.records.decide(rid, state, by=ident.user, now_ms=self.gw.now_ms())
        rec = await self.records.record(rid)
        assert rec is not None
        data = {**rec["data"], "decided_by": rec.get("by"), "decided_ms": rec.get("dts"), "decision_note": note}
        await self.log.append(TOPIC, oid, APPROVED if approve else REJECTED, data, event_id=event_id(rid, state),
                              ts=int(rec.get("dts") or self.gw.now_ms()))
        return {**self._public(rec["data"], str(rec["s"])), "decided_by": rec.get("by"), "changed": changed}

    async def authorize_order(self, ident: Identity, order_id: str) -> Any:
        """The SQL order, if the caller is its buyer, ops or the host of its room.

        Raises:
            NotFound: no such order (or not theirs).
        """
        o = await self.store.get_order(order_id)
        if o is None or not (ident.is_ops or o.user_id == ident.user or ident.may_host(o.room_id)):
            raise NotFound(f"no order {order_id}")
        return o

    async def history(self, ident: Identity, order_id: str) -> dict[str, Any]:
        store = self.store
        o = await self.authorize_order(ident, order_id)
        out: list[dict[str, Any]] = []
        for h in await store.order_history(order_id):
            out.append(history_entry("order", h.ts_ms, event_id=h.event_id, **{"from": h.from_state}, to=h.to_state,
                                     refund_qty=h.refund_qty or None, refund_amount=h.refund_amount or None, reason=h.reason))
        known = set()
        for r in await refunds_sql.list_refunds(store, order_ids=[order_id], limit=1000):
            known.add(r["refund_id"])
            out.append(history_entry("refund.requested", r["requested_ms"], refund_id=r["refund_id"], qty=r["qty"], amount=r["amount"],
                                     reason=r["reason"], note=r["note"] if ident.user == o.user_id or ident.is_ops else None))
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

    # ---- handlers (gateway.routes)
    async def post_refund(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        oid = request.match_info["order"]
        body = await read_object(request)

        async def run() -> web.Response:
            refund, dup = await self.ask(ident, oid, body)
            return web.json_response({**refund, "duplicate": dup}, status=200 if dup else 202)

        return await idempotent(self.gw, request, ident, key=header_key(request), target=oid, body=body, run=run)

    async def approve(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        return web.json_response(await self.decide(ident, request.match_info["refund"], True, await read_object(request)))

    async def reject(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        return web.json_response(await self.decide(ident, request.match_info["refund"], False, await read_object(request)))

    async def list_refunds(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        q = request.query
        room, user = q.get("room"), q.get("user")
        if not ident.is_ops:
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
        rows = await refunds_sql.list_refunds(self.store, user_id=user, room_id=room, state=state, limit=limit, offset=offset)
        return web.json_response({"refunds": rows})

    async def order_refunds(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        oid = request.match_info["order"]
        await self.authorize_order(ident, oid)
        return web.json_response({"order_id": oid, "refunds": await refunds_sql.list_refunds(self.store, order_ids=[oid], limit=1000)})

    async def order_history(self, request: web.Request) -> web.Response:
        return web.json_response(await self.history(self.gw.identify_request(request), request.match_info["order"]))
