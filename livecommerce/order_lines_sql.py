"""SQL of cart orders' lines (``order_lines``, migration 12) and coupons (``order_coupons``,
migration 13): written by the orders worker in its batch's transaction, once per
``(order_id, n)`` / ``(order_id, coupon_id)`` whatever redelivers the events; the lines are
read by order views, fulfilment (what a parcel may carry) and refunds, the coupons by the
user's data export."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .cart import OrderLine
from .schema import order_coupons, order_lines
from .store_sql import SqlStore


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


async def put_order_lines(conn: AsyncConnection, events: Sequence[Mapping[str, Any]]) -> int:
    """Insert the lines each event's data carries (``order_id``, ``lines``) unless the
    order's line is there: one statement for the batch. Returns the rows offered."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for d in events:
        oid = str(d["order_id"])
        for ln in d.get("lines") or ():
            n = int(ln["n"])
            rows.setdefault((oid, n), {"order_id": oid, "n": n, "product_id": str(ln["product_id"]), "sku": str(ln["sku"]),
                                       "qty": int(ln["qty"]), "unit_price": int(ln["unit_price"]),
                                       "sale_id": ln.get("sale_id"), "gift": bool(ln.get("gift"))})
    if rows:
        await conn.execute(_insert(conn, order_lines).on_conflict_do_nothing(index_elements=["order_id", "n"]),
                           list(rows.values()))
    return len(rows)


async def put_order_coupons(conn: AsyncConnection, events: Sequence[Mapping[str, Any]]) -> int:
    """Insert the coupons each event's data carries (``order_id``, ``coupons``: ``[{coupon_id,
    scope, discount}]``) unless the order's coupon is there: one statement for the batch.
    Returns the rows offered."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for d in events:
        oid = str(d["order_id"])
        for c in d.get("coupons") or ():
            cid = str(c["coupon_id"])
            rows.setdefault((oid, cid), {"order_id": oid, "coupon_id": cid, "scope": str(c["scope"]),
                                         "discount": int(c["discount"])})
    if rows:
        await conn.execute(_insert(conn, order_coupons).on_conflict_do_nothing(index_elements=["order_id", "coupon_id"]),
                           list(rows.values()))
    return len(rows)


async def coupons_of(store: SqlStore, order_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Each order's coupons in SQL (``{coupon_id, scope, discount}``, shop first; absent:
    none, or not written yet)."""
    ids = list(order_ids)
    out: dict[str, list[dict[str, Any]]] = {}
    if not ids:
        return out
    c = order_coupons.c
    q = select(order_coupons).where(c.order_id.in_(ids)).order_by(c.order_id, c.scope.desc(), c.coupon_id)
    async with store.read() as tx:
        for r in await tx.conn.execute(q):
            out.setdefault(r.order_id, []).append({"coupon_id": r.coupon_id, "scope": r.scope, "discount": int(r.discount)})
    return out


async def lines_of(store: SqlStore, order_ids: Iterable[str]) -> dict[str, list[OrderLine]]:
    """Each order's lines in SQL, by line number (absent: none, or not written yet)."""
    ids = list(order_ids)
    out: dict[str, list[OrderLine]] = {}
    if not ids:
        return out
    q = select(order_lines).where(order_lines.c.order_id.in_(ids)).order_by(order_lines.c.order_id, order_lines.c.n)
    async with store.read() as tx:
        for r in await tx.conn.execute(q):
            out.setdefault(r.order_id, []).append(OrderLine(int(r.n), r.product_id, r.sku, int(r.qty), int(r.unit_price),
                                                             r.sale_id, bool(r.gift)))
    return out
