"""SQL side of the show report: a room's orders placed during a show (:mod:`livecommerce.showreport`).

Reads ``orders`` (``ix_orders_room``: room, created_ms) joined to ``sales`` for the product
(its name from the sale, else the catalogue),
and the gifts through :func:`livecommerce.earnings_sql.room_gifts`.
"""

from __future__ import annotations

from sqlalchemy import and_, func, select

from .earnings_sql import room_gifts
from .schema import catalog_products, orders, sales
from .schema import products as legacy_products
from .showreport import GiftFigures, OrderFigures, ProductLine
from .store_sql import SqlStore

SOLD = ("paid", "refund_requested", "refunded")


async def show_orders(store: SqlStore, room: str, from_ms: int, to_ms: int, *, top: int = 5) -> tuple[OrderFigures, list[ProductLine]]:
    """The paid orders of ``room`` placed within ``[from_ms, to_ms]`` and the top products by
    GMV (net of refunds).

    Raises:
        Unavailable: the database is unreachable.
    """
    o = orders.c
    win = and_(o.room_id == room, o.created_ms >= from_ms, o.created_ms <= to_ms, o.state.in_(SOLD))
    q = select(func.count(), func.coalesce(func.sum(o.amount), 0), func.coalesce(func.sum(o.refunded_amount), 0),
               func.count(func.distinct(o.user_id)), func.count().filter(o.refunded_qty > 0)).where(win)
    s = sales.c
    gmv = func.sum(o.amount - o.refunded_amount)
    name = func.max(func.coalesce(s.product_name, catalog_products.c.name, legacy_products.c.name))  # the sale's, else the catalogue's
    tq = (select(s.product_id, name, func.sum(o.qty - o.refunded_qty), gmv)
          .select_from(orders.join(sales, s.id == o.sale_id)
                       .outerjoin(catalog_products, catalog_products.c.id == s.product_id)
                       .outerjoin(legacy_products, legacy_products.c.id == s.product_id)).where(win)
          .group_by(s.product_id).order_by(gmv.desc(), s.product_id).limit(top))
    async with store.read() as tx:
        n, paid, back, buyers, refunded = (await tx.conn.execute(q)).one()
        products = [ProductLine(str(pid), str(name or pid), int(units or 0), int(g or 0)) for pid, name, units, g in await tx.conn.execute(tq)]
    return OrderFigures(int(n), int(paid), int(back), int(buyers), int(refunded)), products


async def show_funnel(store: SqlStore, room: str, from_ms: int, to_ms: int) -> tuple[int, int]:
    """Distinct users of ``room`` with an order placed within ``[from_ms, to_ms]`` (any state:
    they tried to buy) and with a paid one: the funnel's buyers and payers, counted as
    distinct users like the show's viewers.

    Raises:
        Unavailable: the database is unreachable.
    """
    o = orders.c
    win = and_(o.room_id == room, o.created_ms >= from_ms, o.created_ms <= to_ms)
    q = select(func.count(func.distinct(o.user_id)),
               func.count(func.distinct(o.user_id)).filter(o.state.in_(SOLD))).where(win)
    async with store.read() as tx:
        buyers, payers = (await tx.conn.execute(q)).one()
    return int(buyers), int(payers)


async def show_gifts(store: SqlStore, room: str, from_ms: int, to_ms: int, *, top: int = 5) -> GiftFigures:
    """The room's gifts sent within ``[from_ms, to_ms]`` as the earnings ledger has them."""
    value, n, reversed_, tops = await room_gifts(store, room, from_ms, to_ms, top=top)
    return GiftFigures(value, n, reversed_, tops)
