"""SQL side of the catalogue: each product's definition at its latest version, its SKUs,
and the ledger of stock moves (``catalog_products``, ``catalog_skus``,
``catalog_stock_moves``; migration step 6).

Redis decides (:mod:`livecommerce.catalog_redis`); these functions remember. Both writes
are idempotent, so a write repeated by a retry or by ``livecommerce catalog reconcile
--repair`` changes nothing the second time:

* :func:`save_product` writes a definition only over an older version (a late write never
  brings back an older definition);
* :func:`record_moves` inserts each move once (keyed by its event id
  ``<product>/<sku>/<seq>``) and adds its delta to the SKU's ``stocked`` in the same
  transaction, so ``sum(delta) == stocked`` per SKU at every commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .catalog import Product, ProductState, product_from_dict
from .catalog_redis import Move
from .schema import catalog_products, catalog_skus, catalog_stock_moves
from .store_sql import SqlStore, SqlTx


@dataclass(frozen=True, slots=True)
class SqlProduct:
    """A product as SQL remembers it, with each SKU's ``stocked`` units and the event ids
    of the stock moves it has."""

    product: Product
    stocked: dict[str, int]


def _insert(tx: SqlTx, table: Any) -> Any:
    return (postgresql.insert if tx.conn.dialect.name == "postgresql" else sqlite.insert)(table)


async def save_product(store: SqlStore, product: Product) -> bool:
    """Write ``product`` (its row and one row per SKU) if SQL holds no newer version.
    Returns whether it was written. SKUs are never deleted (a definition only archives
    them), so each SKU row is inserted or updated; ``stocked`` is :func:`record_moves`'."""
    async with store.write() as tx:
        q = select(catalog_products.c.v).where(catalog_products.c.id == product.id)
        if tx.conn.dialect.name == "postgresql":
            q = q.with_for_update()
        have = (await tx.conn.execute(q)).scalar()
        if have is not None and int(have) >= product.v:
            return False
        row = {
            "owner_id": product.owner, "name": product.name, "category": product.category, "state": product.state,
            "v": product.v, "definition": product.definition(), "created_ms": product.created_ms,
            "updated_ms": product.updated_ms,
        }
        if have is None:
            await tx.conn.execute(catalog_products.insert().values(id=product.id, **row))
        else:
            await tx.conn.execute(update(catalog_products).where(catalog_products.c.id == product.id).values(**row))
        for s in product.skus:
            values = {"attrs": dict(s.attrs), "price": s.price, "image": s.image, "state": s.state}
            stmt = _insert(tx, catalog_skus).values(product_id=product.id, sku_id=s.id, stocked=0, **values)
            await tx.conn.execute(stmt.on_conflict_do_update(index_elements=["product_id", "sku_id"], set_=values))
        return True


async def record_moves(store: SqlStore, moves: Sequence[Move]) -> int:
    """Insert the moves SQL does not have yet and add each one's delta to its SKU's
    ``stocked`` (the SKU row must exist: :func:`save_product` first). Returns how many were
    new."""
    if not moves:
        return 0
    added = 0
    async with store.write() as tx:
        for m in moves:
            stmt = _insert(tx, catalog_stock_moves).values(
                event_id=m.event_id, product_id=m.product_id, sku_id=m.sku, seq=m.seq, delta=m.delta, reason=m.reason[:32],
                by_user=m.by, ts_ms=m.ts_ms,
            ).on_conflict_do_nothing(index_elements=["event_id"]).returning(catalog_stock_moves.c.event_id)
            if (await tx.conn.execute(stmt)).first() is None:
                continue
            added += 1
            await tx.conn.execute(
                update(catalog_skus)
                .where(catalog_skus.c.product_id == m.product_id, catalog_skus.c.sku_id == m.sku)
                .values(stocked=catalog_skus.c.stocked + m.delta)
            )
    return added


async def get_product(store: SqlStore, product_id: str) -> SqlProduct | None:
    async with store.read() as tx:
        row = (await tx.conn.execute(select(catalog_products).where(catalog_products.c.id == product_id))).first()
        if row is None:
            return None
        skus = (await tx.conn.execute(
            select(catalog_skus.c.sku_id, catalog_skus.c.stocked).where(catalog_skus.c.product_id == product_id))).all()
    return SqlProduct(_product(row), {r.sku_id: int(r.stocked) for r in skus})


async def move_ids(store: SqlStore, product_id: str) -> set[str]:
    """The event ids of the product's stock moves SQL has."""
    async with store.read() as tx:
        rows = (await tx.conn.execute(
            select(catalog_stock_moves.c.event_id).where(catalog_stock_moves.c.product_id == product_id))).all()
    return {r.event_id for r in rows}


async def moves_sum(store: SqlStore, product_id: str) -> dict[str, int]:
    """Per SKU, the sum of its moves' deltas (equals ``stocked``: the ledger's check)."""
    async with store.read() as tx:
        rows = (await tx.conn.execute(
            select(catalog_stock_moves.c.sku_id, func.sum(catalog_stock_moves.c.delta))
            .where(catalog_stock_moves.c.product_id == product_id).group_by(catalog_stock_moves.c.sku_id))).all()
    return {r[0]: int(r[1]) for r in rows}


async def list_products(store: SqlStore, *, owner: str | None = None, state: ProductState | None = None,
                        limit: int = 100, offset: int = 0) -> list[Product]:
    """Products newest first, of one owner and in one state when given."""
    q = select(catalog_products)
    if owner is not None:
        q = q.where(catalog_products.c.owner_id == owner)
    if state is not None:
        q = q.where(catalog_products.c.state == state)
    q = q.order_by(catalog_products.c.created_ms.desc(), catalog_products.c.id).limit(limit).offset(offset)
    async with store.read() as tx:
        return [_product(r) for r in (await tx.conn.execute(q)).all()]


async def product_ids(store: SqlStore) -> list[str]:
    async with store.read() as tx:
        return sorted(r.id for r in (await tx.conn.execute(select(catalog_products.c.id))).all())


def _product(row: Any) -> Product:
    return product_from_dict({**row.definition, "v": row.v, "created_ms": row.created_ms, "updated_ms": row.updated_ms})
