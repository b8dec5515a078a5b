"""SQL side of campaign funnels: the order steps (reserved, paid, refunded) and the money of
a flash sale or a coupon drop, read from ``orders`` (:mod:`livecommerce.funnel` says what
each step means). Reads only; every query is bounded by the sale id or the drop's coupon
ids (``<drop_id>:<user>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from .orders import SOLD_STATES
from .store_sql import SqlStore, orders

#: order states whose money was taken (a refund keeps the order in these states)
SOLD = SOLD_STATES


@dataclass(frozen=True, slots=True)
class SalePeople:
    """Distinct users of one sale's orders: who reserved (any order), paid, got a refund."""

    reserved: int
    paid: int
    refunded: int


@dataclass(frozen=True, slots=True)
class DropOrders:
    """The orders paid with a coupon of one drop: distinct payers and refunded users, net
    amount paid (``gmv``, cents, minus refunds), the amount refunded and the paid orders."""

    paid: int
    refunded: int
    gmv: int
    refunded_amount: int
    orders: int


async def sale_people(store: SqlStore, sale_id: str) -> SalePeople:
    """Raises:
    Unavailable: the database is unreachable.
    """
    o = orders
    q = select(
        func.count(func.distinct(o.c.user_id)),
        func.count(func.distinct(o.c.user_id)).filter(o.c.state.in_(SOLD)),
        func.count(func.distinct(o.c.user_id)).filter(o.c.refunded_qty > 0),
    ).where(o.c.sale_id == sale_id)
    async with store.read() as tx:
        reserved, paid, refunded = (await tx.conn.execute(q)).one()
    return SalePeople(int(reserved), int(paid), int(refunded))


async def drop_orders(store: SqlStore, drop_id: str) -> DropOrders:
    """Raises:
    Unavailable: the database is unreachable.
    """
    o = orders
    sold = o.c.state.in_(SOLD)
    q = select(
        func.count(func.distinct(o.c.user_id)).filter(sold),
        func.count(func.distinct(o.c.user_id)).filter(o.c.refunded_qty > 0),
        func.coalesce(func.sum(o.c.amount - o.c.refunded_amount).filter(sold), 0),
        func.coalesce(func.sum(o.c.refunded_amount), 0),
        func.count().filter(sold),
    ).where(o.c.coupon_id.like(f"{drop_id}:%"))
    async with store.read() as tx:
        paid, refunded, gmv, back, n = (await tx.conn.execute(q)).one()
    return DropOrders(int(paid), int(refunded), int(gmv), int(back), int(n))
