"""Redis side of fulfilment: each order's fulfilment record, the atomic gate of every step.

Key ``{order:ID}:ship`` (hash, in the order's slot beside its refund records
``{order:ID}:refunds``; fields in ``fulfilment_step.lua``), one script per step:

* ``ship``: a compare-and-set on the record's version (two hosts shipping at once: one wins,
  the other reads again), refused when receipt is confirmed, and, for an outbound parcel,
  when a refund of the order is open: refund-only-before-shipping is decided against the
  refund gate in one step (the refund request's script checks this record the other way);
* ``deliver``: ``shipped -> delivered`` once; the order is delivered when nothing is owed and
  every outbound parcel is delivered (judged in the script, so two deliveries at once
  cannot both miss it);
* ``confirm``: ``delivered -> completed`` once (the buyer, or the auto-confirm sweep),
  refused while a return is open.

The record lives :data:`RECORD_LIFETIME_S` after its last change (past every after-sales
window). The sweep's lease is ``lc:fulfilment:sweep`` (``fulfilment_lease.lua``).
Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from .errors import Conflict, NotFound
from .fulfilment import (
    COMPLETED,
    Shipment,
    completed_event_id,
    decide_after_sale,
    order_of_shipment,
    progress_of,
    shipment_from,
)
from .keys import Keys
from .log import Log
from .redis_conn import guarded

STEP = (files("livecommerce") / "fulfilment_step.lua").read_text()
LEASE = (files("livecommerce") / "fulfilment_lease.lua").read_text()
RECORD_LIFETIME_S = 120 * 86400


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True, slots=True)
class ShipRecord:
    """An order's fulfilment record (an unknown order: version 0, nothing shipped)."""

    order_id: str
    v: int = 0
    st: str = ""
    owe: int = 0
    shipments: list[Shipment] = field(default_factory=list)
    completed_ms: int | None = None
    completed_by: str | None = None


class FulfilmentRedis:
    def __init__(self, redis: Any, keys: Keys, *, lifetime_s: int = RECORD_LIFETIME_S) -> None:
        self._r = redis
        self.keys = keys
        self.lifetime_ms = lifetime_s * 1000
        self._step = redis.register_script(STEP)
        self._lease = redis.register_script(LEASE)

    def _keys(self, order_id: str) -> list[str]:
        return [self.keys.entity("order", order_id, "ship"), self.keys.entity("order", order_id, "refunds")]

    async def record(self, order_id: str) -> ShipRecord:
        async with guarded():
            raw = await self._r.hgetall(self._keys(order_id)[0])
        h = {_s(k): _s(v) for k, v in raw.items()}
        ships = sorted((shipment_from(json.loads(v)) for k, v in h.items() if k.startswith("s") and k[1:].isdigit()),
                       key=lambda s: s.n)
        return ShipRecord(order_id, int(h.get("v") or 0), h.get("st", ""), int(h.get("owe") or 0), ships,
                          int(h["c"]) if h.get("c") else None, h.get("cby") or None)

    async def records(self, order_ids: list[str]) -> dict[str, ShipRecord]:
        return {oid: await self.record(oid) for oid in order_ids}

    async def ship(self, s: Shipment, *, v: int, owe: int) -> str:
        """Record shipment ``s`` if the record is still at version ``v``; returns the order's
        progress after it (``shipped``, or unchanged for a return parcel).

        Raises:
            Conflict: ``shipment_changed`` (another shipment won: read again),
                ``receipt_confirmed``, ``refund_open``.
            Unavailable: Redis unreachable.
        """
        async with guarded():
            res = await self._step(keys=self._keys(s.order_id),
                                   args=["ship", self.lifetime_ms, s.n, json.dumps(s.data()), v, owe, s.kind])
        code = _s(res[0])
        if code == "changed":
            raise Conflict(f"order {s.order_id}'s shipments changed meanwhile: try again", code="shipment_changed")
        if code == "completed":
            decide_after_sale("refund", progress_of("completed"))
        if code == "refund_open":
            raise Conflict(f"refund {s.order_id}.r{_s(res[1])} of this order is being handled: approve or reject it before "
                           "shipping", code="refund_open")
        return _s(res[1])

    async def deliver(self, sid: str, *, now_ms: int, by: str) -> tuple[bool, str, Shipment]:
        """Mark shipment ``sid`` delivered: ``(changed, order progress, shipment)``.

        Raises:
            NotFound: no such shipment. BadFrame: not a shipment id. Unavailable.
        """
        oid, n = order_of_shipment(sid)
        async with guarded():
            res = await self._step(keys=self._keys(oid), args=["deliver", self.lifetime_ms, n, now_ms, by])
        code = _s(res[0])
        if code == "unknown":
            raise NotFound(f"no shipment {sid}")
        return code == "ok", _s(res[1]), shipment_from(json.loads(_s(res[2])))

    async def confirm(self, order_id: str, *, now_ms: int, by: str) -> bool:
        """Confirm receipt once: True now, False when it was confirmed before.

        Raises:
            Conflict: ``not_delivered``, ``return_open``. Unavailable.
        """
        async with guarded():
            res = await self._step(keys=self._keys(order_id), args=["confirm", self.lifetime_ms, now_ms, by])
        code = _s(res[0])
        if code == "not_delivered":
            raise Conflict(f"order {order_id} is not delivered: receipt is confirmed once every parcel arrived",
                           code="not_delivered")
        if code == "return_open":
            raise Conflict(f"a return of order {order_id} is open ({order_id}.r{_s(res[1])}): settle it first",
                           code="return_open")
        return code == "ok"

    async def confirm_and_log(self, durable: Log, order_id: str, *, user: str, room: str, by: str, now_ms: int) -> bool:
        """Confirm receipt (:meth:`confirm`) and append ``order.completed`` under its one id,
        also when it was confirmed before: a process killed between the two steps leaves an
        order the next call (a retry, the next sweep) completes, and the orders worker
        applies the id once. True when this call confirmed it.

        Raises:
            Conflict: ``not_delivered``, ``return_open``. Unavailable: Redis or the log down.
        """
        changed = await self.confirm(order_id, now_ms=now_ms, by=by)
        rec = await self.record(order_id)
        ts = rec.completed_ms or now_ms
        await durable.append("orders", order_id, COMPLETED, {"order_id": order_id, "user_id": user, "room_id": room,
                                                             "by": rec.completed_by or by, "completed_ms": ts},
                             event_id=completed_event_id(order_id), ts=ts)
        return changed

    async def forget(self, order_ids: list[str], alias: str) -> int:
        """Erasure: every parcel of these orders loses its ship-to address and carries
        ``alias`` instead of the buyer's id. Returns the parcels changed."""
        n = 0
        async with guarded():
            for oid in order_ids:
                res = await self._step(keys=self._keys(oid), args=["forget", self.lifetime_ms, alias])
                n += int(res[1])
        return n

    async def take_lease(self, name: str, *, owner: str, lease_ms: int) -> bool:
        """The named lease: True when ``owner`` holds it for the next ``lease_ms``."""
        async with guarded():
            return bool(await self._lease(keys=[self.keys.global_key(f"lease:{name}")], args=[owner, lease_ms]))
