"""``livecommerce worker inventory``: reconcile Redis stock with SQL orders; report or repair.

Redis holds the truth about stock and holds (every reserve, pay and release is one Lua
call); SQL learns of them through the log. Drift therefore means SQL is missing events (a
lost append, a worker that has not caught up). For each active sale the check compares every
Redis hold with its SQL order:

* a hold SQL does not know, or knows in an older state, is *drift*;
* with ``repair``, the missing events are appended again with their deterministic ids
  (``<order>:reserved|paid|cancelled``): the orders worker applies each exactly once, so
  repairing twice, or repairing what was only late, is harmless.

Stock conservation in Redis (``initial == remaining + reserved + paid``) is checked too;
a breach there is a bug, reported loudly, never "repaired".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from livecommerce.checkout import Checkout
from livecommerce.clock import now_ms
from livecommerce.config import Settings
from livecommerce.store_sql import SqlStore

from .wiring import Engines

log = logging.getLogger("livecommerce.workers.inventory")

RANK = {"reserved": 0, "paid": 1, "cancelled": 1, "refund_requested": 2, "refunded": 3, "shipped": 2, "delivered": 2,
        "return_requested": 2, "completed": 2}


@dataclass
class SaleReport:
    sale_id: str
    conserved: bool
    redis: dict[str, int]
    sql: dict[str, int]
    drift: list[dict[str, Any]] = field(default_factory=list)
    repaired: int = 0


async def reconcile(checkout: Checkout, store: SqlStore, sale_id: str, *, repair: bool, now_ms: int) -> SaleReport:
    st = await checkout.sales.stats(sale_id)
    sql = await store.sale_stats(sale_id)
    holds = await checkout.sales.holds(sale_id)
    sql_orders = {o.id: o for o in await store.list_orders(sale_id=sale_id, limit=1_000_000)}
    sale = await checkout.sale(sale_id)
    report = SaleReport(
        sale_id,
        conserved=st.conserved,
        redis={"initial": st.initial, "remaining": st.remaining, "reserved": st.reserved, "paid": st.paid},
        sql={k: int(v) for k, v in sql.units.items()},
    )
    for h in holds:
        oid, state = h.order_id, h.state
        o = sql_orders.get(oid)
        sql_state = o.state if o is not None else None
        if sql_state is not None and RANK.get(sql_state, 0) >= RANK[state]:
            continue
        report.drift.append({"order_id": oid, "redis": state, "sql": sql_state})
        if not repair:
            continue
        base = {
            "order_id": oid, "sale_id": sale_id, "room_id": sale.room, "user_id": h.user, "qty": h.qty,
            "unit_price": sale.price, "pay_by_ms": h.pay_by_ms, "payment_window_s": sale.payment_window_s,
            "request_id": h.request_id or None,
        }
        if sql_state is None:
            await checkout.log.append("orders", oid, "order.reserved", base, event_id=f"{oid}:reserved", ts=now_ms)
        if state == "paid":
            data = {**base, "amount": h.qty * sale.price, "discount": 0, "paid_ms": now_ms}
            await checkout.log.append("orders", oid, "order.paid", data, event_id=f"{oid}:paid", ts=now_ms)
        elif state == "cancelled":
            await checkout.log.append("orders", oid, "order.cancelled", {**base, "reason": "reconciled"}, event_id=f"{oid}:cancelled", ts=now_ms)
        report.repaired += 1
    level = logging.ERROR if not report.conserved else (logging.WARNING if report.drift else logging.INFO)
    log.log(level, "inventory.checked", extra={"sale": sale_id, "conserved": report.conserved, "drift": len(report.drift), "repaired": report.repaired})
    return report


async def check_all(settings: Settings, *, repair: bool, redis: Any = None) -> list[SaleReport]:
    """Reconcile every active sale and the latest 1000 in SQL (see the module docstring)."""
    async with Engines(settings, redis=redis) as e:
        checkout = Checkout(e.redis, e.keys, e.log)
        ids = await checkout.active_sales()
        ids += [r.sale.id for r in await e.store.list_sales(limit=1000) if r.sale.id not in ids]
        out = []
        for sid in ids:
            with contextlib.suppress(Exception):
                out.append(await reconcile(checkout, e.store, sid, repair=repair, now_ms=now_ms()))
        return out


async def run(settings: Settings, stop: asyncio.Event, *, interval_s: float = 30.0) -> None:
    """Check (and repair) every ``interval_s`` until stopped."""
    while not stop.is_set():
        try:
            await check_all(settings, repair=True)
        except Exception:
            log.exception("inventory.failed")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
