"""The catalogue's writes over its two engines, and the check that keeps them in step.

Redis decides (:class:`~livecommerce.catalog_redis.RedisCatalog`: a definition is stored with
a compare-and-set on its version, stock moves in one script each), then SQL remembers
(:mod:`livecommerce.catalog_sql`: the definition at its version, every stock move once).
The gateway's HTTP handlers and ``livecommerce catalog load`` both write through
:class:`Catalogue`, so a product made either way is the same.

Failure order and why it is safe (as the money path's, ``docs/design.md``):

* Redis changed, the SQL write failed (the caller hears 503): SQL is behind, never ahead.
  Each stock move stays in the product's Redis ``moves`` hash until SQL has it, and the
  definition carries its version, so :meth:`Catalogue.reconcile` (``livecommerce catalog
  reconcile --repair``) writes what SQL missed with the same ids: a write that was only late
  and the repair insert the same rows once.
* A retry of the same request finds its own change in place (an equal definition, the same
  ``Idempotency-Key`` answer) and writes SQL again, which is harmless.

Stock conservation in Redis (``stocked == available + reserved + sold``) is checked too; a
breach is a bug, reported, never "repaired".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import catalog_sql
from .catalog import Change, Draft, Product, SkuStock, plan_change
from .catalog_redis import Move, RedisCatalog, StockChange
from .errors import Conflict, NotFound
from .store_sql import SqlStore

log = logging.getLogger("livecommerce.catalog")

CAS_RETRIES = 8
HOLD_RETENTION_MS = 30 * 86400 * 1000  # settled holds are forgotten after this (the orders keep them)


@dataclass
class ProductReport:
    """One product's check: versions, each SKU's units in Redis beside SQL's ``stocked``,
    what differed (``drift``: one line each), what was repaired and pruned."""

    product_id: str
    redis_v: int | None
    sql_v: int | None
    conserved: bool
    skus: dict[str, dict[str, int | None]] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    repaired: int = 0
    pruned_holds: int = 0
    pruned_moves: int = 0
    overdue_holds: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id, "redis_v": self.redis_v, "sql_v": self.sql_v, "conserved": self.conserved,
            "skus": self.skus, "drift": self.drift, "repaired": self.repaired, "pruned_holds": self.pruned_holds,
            "pruned_moves": self.pruned_moves, "overdue_holds": self.overdue_holds,
        }


class Catalogue:
    """Writes and reads of the catalogue (module docstring). Authorisation is the
    caller's: the gateway checks :func:`~livecommerce.catalog.may_manage` first."""

    def __init__(self, redis: RedisCatalog, store: SqlStore) -> None:
        self.redis = redis
        self.store = store

    async def get(self, product_id: str) -> tuple[Product, dict[str, SkuStock]] | None:
        """The product and its SKUs' units, from Redis (None: unknown)."""
        return await self.redis.read(product_id)

    async def product(self, product_id: str) -> Product:
        """Raises:
        NotFound: no such product.
        """
        got = await self.redis.read(product_id)
        if got is None:
            raise NotFound(f"no product {product_id!r}")
        return got[0]

    async def remember(self, product: Product, moves: Sequence[Move] = ()) -> None:
        """Write the definition and the moves into SQL, then drop the moves from Redis (SQL
        has them). Idempotent."""
        await catalog_sql.save_product(self.store, product)
        if moves:
            await catalog_sql.record_moves(self.store, moves)
            await self.redis.prune(product.id, settled_before_ms=-1, moves=moves)

    async def create(self, draft: Draft, *, now_ms: int, by: str = "") -> tuple[Product, bool]:
        """Store a new product with its SKUs' initial stock. A product with the same id and
        the same definition answers as it is (``False``: not created now; SQL is written
        again, which heals a create whose SQL write failed).

        Raises:
            Conflict: (``product_exists``) the id holds another definition.
        """
        for _ in range(CAS_RETRIES):
            got = await self.redis.read(draft.product.id)
            if got is not None:
                have = got[0]
                if have.definition() != draft.product.definition():
                    raise Conflict(f"product {have.id!r} exists with another definition: change it with "
                                   f"PATCH /api/v1/products/{have.id}, or pick another id", code="product_exists")
                await self.remember(have, await self.redis.moves(have.id))
                return have, False
            stored = await self.redis.put(draft.product, expected_v=0, initial_stock=draft.stock, now_ms=now_ms, by=by)
            if stored.ok:
                product = replace(draft.product, v=stored.v, created_ms=now_ms, updated_ms=now_ms)
                await self.remember(product, stored.moves)
                log.info("catalog.created", extra={"product": product.id, "by": by, "skus": len(product.skus)})
                return product, True
        raise Conflict(f"product {draft.product.id!r} is changing; try again")

    async def update(self, product_id: str, change: Callable[[Product], Product], *, now_ms: int, by: str = "",
                     initial_stock: dict[str, int] | None = None) -> tuple[Product, Product]:
        """Apply ``change`` to the stored definition with a compare-and-set (retried when
        another change came first); returns ``(before, after)``. New SKUs start with
        ``initial_stock``. A change that changes nothing stores nothing.

        Raises:
            NotFound: no such product. Whatever ``change`` raises (bad input, Conflict).
            Conflict: still contended after several tries.
        """
        for _ in range(CAS_RETRIES):
            before = await self.product(product_id)
            after = change(before)
            if after.definition() == before.definition():
                return before, before
            stored = await self.redis.put(after, expected_v=before.v, initial_stock=initial_stock or {}, now_ms=now_ms, by=by)
            if stored.ok:
                after = replace(after, v=stored.v, updated_ms=now_ms, created_ms=before.created_ms or now_ms)
                await self.remember(after, stored.moves)
                log.info("catalog.updated", extra={"product": product_id, "by": by, "v": stored.v})
                return before, after
        raise Conflict(f"product {product_id!r} is changing; try again")

    async def change_stock(self, product_id: str, sku: str, *, set_to: int | None = None, add: int | None = None,
                           now_ms: int, by: str = "", reason: str | None = None) -> StockChange:
        """Set or change one SKU's available units (one script), then record the move.

        Raises:
            NotFound: no such product or SKU.
            Conflict: (``stock_out_of_range``) it would leave fewer than 0 units available
                (or more than the maximum); nothing changed.
        """
        done = await self.redis.change_stock(product_id, sku, set_to=set_to, add=add, now_ms=now_ms, by=by, reason=reason)
        if done.outcome == "out_of_range":
            raise Conflict(f"SKU {sku!r} has {done.stock.available} available: that change would leave it outside "
                           f"0..10000000 (units reserved or sold are not available)", code="stock_out_of_range")
        if done.move is not None:
            await self.remember(await self.product(product_id), [done.move])
        return done

    # ------------------------------------------------------------------ files
    async def plan(self, drafts: Sequence[Draft], *, set_stock: bool = False) -> list[tuple[Draft, Product, Change]]:
        """What loading ``drafts`` would do, product by product (nothing written)."""
        out = []
        for d in drafts:
            got = await self.redis.read(d.product.id)
            old, units = (got[0], got[1]) if got is not None else (None, {})
            product, ch = plan_change(old, d, available={k: u.available for k, u in units.items()}, set_stock=set_stock)
            out.append((d, product, ch))
        return out

    async def load(self, drafts: Sequence[Draft], *, now_ms: int, by: str = "", set_stock: bool = False) -> list[Change]:
        """Load a file's drafts: create the new products, update the others to match
        (:func:`~livecommerce.catalog.plan_change`), set stock where the plan says. Loading
        the same file again changes nothing."""
        out = []
        for d, _, ch in await self.plan(drafts, set_stock=set_stock):
            if ch.created:
                _, created = await self.create(d, now_ms=now_ms, by=by)
                if not created:  # made meanwhile by someone else: plan it again next time
                    out.append(Change(d.product.id, False, ("unchanged: created meanwhile",)))
                    continue
            else:
                if ch.lines:
                    await self.update(d.product.id, _loader(d), now_ms=now_ms, by=by, initial_stock=d.stock)
                for sku, before, after in ch.stock:
                    if before is not None:  # an existing SKU whose stock the load sets
                        await self.change_stock(d.product.id, sku, set_to=after, now_ms=now_ms, by=by, reason="load")
            out.append(ch)
        return out

    # ------------------------------------------------------------------ reconcile
    async def reconcile(self, product_id: str, *, repair: bool, now_ms: int,
                        hold_retention_ms: int = HOLD_RETENTION_MS) -> ProductReport:
        """Compare one product in Redis with SQL (module docstring); with ``repair``, write
        what SQL missed and forget settled holds older than ``hold_retention_ms``."""
        got = await self.redis.read(product_id)
        sql = await catalog_sql.get_product(self.store, product_id)
        if got is None:
            report = ProductReport(product_id, None, sql.product.v if sql else None, True)
            if sql is not None:
                report.drift.append("in SQL but not in Redis: Redis lost it (restore Redis; SQL has the definition)")
            return report
        product, units = got
        report = ProductReport(product_id, product.v, sql.product.v if sql else None,
                               all(u.conserved for u in units.values()))
        if sql is None or sql.product.v < product.v:
            report.drift.append(f"definition: SQL has {'nothing' if sql is None else f'v{sql.product.v}'}, Redis v{product.v}")
            if repair and product.v > 0:
                await catalog_sql.save_product(self.store, product)
                report.repaired += 1
        elif sql.product.v > product.v:
            report.drift.append(f"definition: SQL v{sql.product.v} is ahead of Redis v{product.v} (Redis lost writes)")
        have = await catalog_sql.move_ids(self.store, product_id)
        moves = await self.redis.moves(product_id)
        missing = [m for m in moves if m.event_id not in have]
        for m in missing:
            report.drift.append(f"stock move {m.event_id} ({m.delta:+d}, {m.reason}) not in SQL")
        if repair and missing and product.v > 0:
            report.repaired += await catalog_sql.record_moves(self.store, missing)
        sql = await catalog_sql.get_product(self.store, product_id) if repair else sql
        ledger = await catalog_sql.moves_sum(self.store, product_id)
        pending: dict[str, int] = {}  # unrepaired moves SQL has not counted yet
        for m in missing if not repair else ():
            pending[m.sku] = pending.get(m.sku, 0) + m.delta
        for sku, u in units.items():
            sql_stocked = sql.stocked.get(sku) if sql is not None else None
            report.skus[sku] = {**u.to_dict(), "sql_stocked": sql_stocked}
            if not u.conserved:
                report.drift.append(f"sku {sku}: Redis units not conserved: stocked {u.stocked} != available {u.available} "
                                    f"+ reserved {u.reserved} + sold {u.sold} (a bug: not repaired)")
            expected = u.stocked - pending.get(sku, 0)
            if sql_stocked is not None and sql_stocked != expected:
                report.drift.append(f"sku {sku}: SQL stocked {sql_stocked}, Redis {u.stocked}")
            if sql_stocked is not None and ledger.get(sku, 0) != sql_stocked:
                report.drift.append(f"sku {sku}: SQL stocked {sql_stocked} != its moves' sum {ledger.get(sku, 0)}")
        report.overdue_holds = len(await self.redis.due(product_id, now_ms))
        if repair:
            report.pruned_holds, report.pruned_moves = await self.redis.prune(  # SQL has every move now
                product_id, settled_before_ms=now_ms - hold_retention_ms, moves=moves if product.v > 0 else ())
        level = logging.ERROR if not report.conserved else (logging.WARNING if report.drift else logging.INFO)
        log.log(level, "catalog.checked", extra={"product": product_id, "conserved": report.conserved,
                                                 "drift": len(report.drift), "repaired": report.repaired})
        return report

    async def reconcile_all(self, *, repair: bool, now_ms: int) -> list[ProductReport]:
        """:meth:`reconcile` every product Redis or SQL knows."""
        ids = sorted(set(await self.redis.ids()) | set(await catalog_sql.product_ids(self.store)))
        return [await self.reconcile(pid, repair=repair, now_ms=now_ms) for pid in ids]


def _loader(draft: Draft) -> Callable[[Product], Product]:
    """The change a file's draft makes to the stored product (:func:`plan_change`)."""
    return lambda old: plan_change(old, draft)[0]
