"""SQL implementation of the :class:`~livecommerce.store.Store` port (SQLAlchemy 2 Core,
async): SQLite through aiosqlite (the embedded default) and PostgreSQL through asyncpg.

The tables are declared in :mod:`livecommerce.schema` and created only by
:func:`livecommerce.migrations.upgrade` (``livecommerce db upgrade``); engines, SQLite's
write transactions and the driver-error guard are :mod:`livecommerce.sql_conn`'s. Importing
this module creates nothing.

How each backend keeps the contract:

* SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (:func:`writer`), so
  writers queue instead of failing with "database is locked". The WAL is truncated by
  :meth:`SqlStore.checkpoint` (the retention worker, every minute) and capped at
  ``SQLITE_WAL_LIMIT_BYTES`` after each checkpoint that resets it.
* PostgreSQL: ``applied_events`` and order rows are claimed with ``INSERT .. ON CONFLICT DO
  NOTHING`` and ``SELECT .. FOR UPDATE``; a concurrent duplicate waits for the first
  transaction and then sees its row.

Batches (the workers' ``apply_batch``, ``settle``, ``add_*_entries``) write each table with one
statement whatever the number of rows: on PostgreSQL ``INSERT .. SELECT unnest(:column_array)
..`` (one array parameter per column, so the statement is prepared once) and ``UPDATE .. FROM
(SELECT unnest(..))``; on SQLite an ``executemany`` (the driver loops in C). Points balances
are kept in ``points_balances``, updated in the same statement group as the ledger rows they
sum (one upsert per user and role of the batch).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Column, Table, any_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import BadFrame, ConfigError, Conflict, NotFound
from .flash_sale import Sale, SaleState
from .migrations import LATEST, current_version
from .orders import (
    SOLD_STATES,
    Order,
    OrderEvent,
    OrderState,
    OrderStep,
    StepOutcome,
    TransitionResult,
    apply_transition,
    settle,
)

# the tables and the engine helpers, re-exported for the adapters and callers that reach them here
from .schema import ID as ID
from .schema import BigId as BigId
from .schema import applied_events as applied_events
from .schema import coupon_claims as coupon_claims
from .schema import coupon_drops as coupon_drops
from .schema import lotteries as lotteries
from .schema import metadata as metadata
from .schema import order_events as order_events
from .schema import orders as orders
from .schema import points_balances as points_balances
from .schema import points_ledger as points_ledger
from .schema import products as products
from .schema import refunds as refunds
from .schema import rooms as rooms
from .schema import sales as sales
from .schema import wallet_ledger as wallet_ledger
from .sql_conn import SQLITE_BUSY_TIMEOUT_MS as SQLITE_BUSY_TIMEOUT_MS
from .sql_conn import SQLITE_WAL_LIMIT_BYTES as SQLITE_WAL_LIMIT_BYTES
from .sql_conn import guarded as guarded
from .sql_conn import make_engine as make_engine
from .sql_conn import split_url as split_url
from .sql_conn import writer as writer
from .store import OrderTotals, PointsEntry, PointsRole, SaleRecord, Store, WalletEntry

# ---------------------------------------------------------------------------------- rows


def _order(r: Any) -> Order:
    return Order(
        id=r.id,
        sale_id=r.sale_id,
        room_id=r.room_id,
        user_id=r.user_id,
        qty=r.qty,
        unit_price=r.unit_price,
        amount=r.amount,
        state=cast(OrderState, r.state),
        pay_by_ms=r.pay_by_ms,
        created_ms=r.created_ms,
        updated_ms=r.updated_ms,
        coupon_id=r.coupon_id,
        discount=r.discount,
        refunded_qty=r.refunded_qty,
        refunded_amount=r.refunded_amount,
        request_id=r.request_id,
    )


def _order_values(o: Order) -> dict[str, Any]:
    return {
        "id": o.id,
        "sale_id": o.sale_id,
        "room_id": o.room_id,
        "user_id": o.user_id,
        "qty": o.qty,
        "unit_price": o.unit_price,
        "amount": o.amount,
        "discount": o.discount,
        "coupon_id": o.coupon_id,
        "state": o.state,
        "pay_by_ms": o.pay_by_ms,
        "refunded_qty": o.refunded_qty,
        "refunded_amount": o.refunded_amount,
        "request_id": o.request_id,
        "created_ms": o.created_ms,
        "updated_ms": o.updated_ms,
    }


def _sale_record(r: Any) -> SaleRecord:
    return SaleRecord(
        sale=Sale(
            id=r.id,
            room=r.room_id,
            product_id=r.product_id,
            price=r.price,
            stock=r.stock,
            per_user_limit=r.per_user_limit,
            starts_ms=r.starts_ms,
            ends_ms=r.ends_ms,
            payment_window_s=r.payment_window_s,
            restock_on_refund=bool(r.restock_on_refund),
        ),
        state=cast(SaleState, r.state),
        product_name=r.product_name,
        created_ms=r.created_ms,
        updated_ms=r.updated_ms,
    )


# ---------------------------------------------------------------------------------- tx


class SqlTx:
    """The :class:`~livecommerce.store.Tx` operations on one open transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._pg = conn.dialect.name == "postgresql"

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self._pg else sqlite.insert)(table)

    def _unnest(self, table: Table, cols: Sequence[str]) -> Any:
        """PostgreSQL: ``SELECT unnest(:u_<col>), ..`` over one typed array per column."""
        return select(*[func.unnest(bindparam(f"u_{c}", type_=postgresql.ARRAY(table.c[c].type))).label(c) for c in cols])

    async def _insert_many(
        self,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        *,
        conflict: Sequence[str] | None = None,
        returning: Sequence[Column[Any]] = (),
    ) -> list[Any]:
        """Insert ``rows`` (same keys each) in one statement; ``conflict``: skip rows that
        collide on those columns (``ON CONFLICT DO NOTHING``); return the ``returning``
        columns of the rows inserted."""
        if not rows:
            return []
        cols = list(rows[0])
        stmt: Any
        params: Any
        if self._pg:
            stmt = postgresql.insert(table).from_select(cols, self._unnest(table, cols))
            params = {f"u_{c}": [r[c] for r in rows] for c in cols}
        else:
            stmt, params = sqlite.insert(table), list(rows)
        if conflict is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict))
        if returning:
            stmt = stmt.returning(*returning)
        res = await self.conn.execute(stmt, params)
        return list(res) if returning else []

    async def _add_balances(self, deltas: Iterable[tuple[str, str, int]]) -> None:
        """Add each ``(user_id, role, delta)`` to ``points_balances``: one upsert per user
        and role, in key order (concurrent batches lock the rows in the same order)."""
        total: dict[tuple[str, str], int] = defaultdict(int)
        for user, role, delta in deltas:
            total[(user, role)] += int(delta)
        if not total:
            return
        keys = sorted(total)
        if self._pg:
            stmt = postgresql.insert(points_balances).from_select(
                ["user_id", "role", "balance"], self._unnest(points_balances, ["user_id", "role", "balance"]))
            stmt = stmt.on_conflict_do_update(index_elements=["user_id", "role"],
                                              set_={"balance": points_balances.c.balance + stmt.excluded.balance})
            await self.conn.execute(stmt, {"u_user_id": [u for u, _ in keys], "u_role": [r for _, r in keys],
                                           "u_balance": [total[k] for k in keys]})
            return
        lite = sqlite.insert(points_balances)
        lite = lite.on_conflict_do_update(index_elements=["user_id", "role"],
                                          set_={"balance": points_balances.c.balance + lite.excluded.balance})
        await self.conn.execute(lite, [{"user_id": u, "role": r, "balance": total[(u, r)]} for u, r in keys])

    async def _orders_by_id(self, ids: Sequence[str], *, lock: bool) -> dict[str, Order]:
        """The orders with these ids (locked for update on PostgreSQL, in id order)."""
        out: dict[str, Order] = {}
        if not ids:
            return out
        if self._pg:
            q = select(orders).where(orders.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(orders.c.id.type))))
            q = q.order_by(orders.c.id)
            if lock:
                q = q.with_for_update()
            out.update((r.id, _order(r)) for r in await self.conn.execute(q, {"ids": list(ids)}))
            return out
        for i in range(0, len(ids), 500):
            out.update((r.id, _order(r)) for r in await self.conn.execute(select(orders).where(orders.c.id.in_(ids[i : i + 500]))))
        return out

    async def _event_owners(self, event_ids: Sequence[str]) -> dict[str, str]:
        """For each of these event ids recorded in ``order_events``: its order."""
        out: dict[str, str] = {}
        if not event_ids:
            return out
        c = order_events.c
        if self._pg:
            q = select(c.event_id, c.order_id).where(c.event_id == any_(bindparam("ids", type_=postgresql.ARRAY(c.event_id.type))))
            out.update((r.event_id, r.order_id) for r in await self.conn.execute(q, {"ids": list(event_ids)}))
            return out
        for i in range(0, len(event_ids), 500):
            q = select(c.event_id, c.order_id).where(c.event_id.in_(event_ids[i : i + 500]))
            out.update((r.event_id, r.order_id) for r in await self.conn.execute(q))
        return out

    async def settle(self, steps: Sequence[OrderStep]) -> list[StepOutcome]:
        """See :meth:`livecommerce.store.Tx.settle`."""
        if not steps:
            return []
        known = await self._orders_by_id(sorted({s.order_id for s in steps}), lock=True)
        ids = {s.event_id for s in steps} | {f"{s.order_id}:reserved" for s in steps if s.to != "reserved" and s.order is not None}
        plan = settle(steps, known, await self._event_owners(sorted(ids)))
        if plan.new:
            got = await self._insert_many(orders, [_order_values(o) for o in plan.new.values()], conflict=["id"],
                                          returning=[orders.c.id])
            if len(got) != len(plan.new):  # another transaction inserted one since we read: try the batch again
                raise Conflict("an order of the batch was inserted concurrently", code="conflict")
        if plan.changed:
            await self._update_orders(plan.changed)
        await self._insert_many(order_events, [
            {"event_id": h.event_id, "order_id": h.order_id, "from_state": h.from_state, "to_state": h.to_state,
             "refund_qty": h.refund_qty, "refund_amount": h.refund_amount, "reason": h.reason, "ts_ms": h.ts_ms}
            for h in plan.history])
        return plan.outcomes

    async def _update_orders(self, changed: Mapping[str, tuple[OrderState, Order]]) -> None:
        """Write the orders' new values, each only if it is still in the state it was read in."""
        cols = ("state", "updated_ms", "refunded_qty", "refunded_amount", "amount", "discount", "coupon_id")
        rows = [{"id": oid, "was": was, **{c: getattr(o, c) for c in cols}} for oid, (was, o) in sorted(changed.items())]
        if self._pg:
            v = select(*[func.unnest(bindparam(f"u_{k}", type_=postgresql.ARRAY(orders.c["state" if k == "was" else k].type))).label(k)
                         for k in ("id", "was", *cols)]).subquery("v")
            stmt = update(orders).where(orders.c.id == v.c.id, orders.c.state == v.c.was).values({orders.c[c]: v.c[c] for c in cols})
            res = await self.conn.execute(stmt, {f"u_{k}": [r[k] for r in rows] for k in ("id", "was", *cols)})
            n = int(res.rowcount)
        else:
            stmt = (update(orders).where(orders.c.id == bindparam("b_id"), orders.c.state == bindparam("b_was"))
                    .values({orders.c[c]: bindparam(f"b_{c}") for c in cols}))
            res = await self.conn.execute(stmt, [{f"b_{k}": v for k, v in r.items()} for r in rows])
            n = int(res.rowcount) if res.rowcount is not None and res.rowcount >= 0 else len(rows)
        if n != len(rows):  # cannot happen under the row locks / the single writer
            raise Conflict("an order of the batch changed concurrently", code="conflict")

    async def _claim(self, consumer: str, event_id: str, now_ms: int | None) -> bool:
        stmt = (
            self._insert(applied_events)
            .values(consumer=consumer, event_id=event_id, applied_ms=now_ms)
            .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        )
        return (await self.conn.execute(stmt)).rowcount == 1

    async def get_order(self, order_id: str, *, lock: bool = False) -> Order | None:
        q = select(orders).where(orders.c.id == order_id)
        if lock and self._pg:
            q = q.with_for_update()
        row = (await self.conn.execute(q)).first()
        return None if row is None else _order(row)

    async def record_payment(self, order_id: str, *, amount: int, discount: int, coupon_id: str | None) -> bool:
        """See :meth:`livecommerce.store.Tx.record_payment`."""
        res = await self.conn.execute(
            update(orders)
            .where(orders.c.id == order_id, orders.c.refunded_amount == 0)
            .values(amount=max(0, amount), discount=max(0, discount), coupon_id=coupon_id)
        )
        return bool(res.rowcount)

    async def insert_reserved(self, order: Order, event_id: str) -> bool:
        if order.state != "reserved":
            raise BadFrame(
                f"insert_reserved needs a reserved order, not {order.state}", code="invalid"
            )
        stmt = (
            self._insert(orders)
            .values(**_order_values(order))
            .on_conflict_do_nothing(index_elements=["id"])
        )
        if (await self.conn.execute(stmt)).rowcount != 1:
            return False
        await self._event(order.id, event_id, None, "reserved", order.created_ms)
        return True

    async def _event(
        self,
        order_id: str,
        event_id: str,
        frm: OrderState | None,
        to: OrderState,
        ts_ms: int,
        refund_qty: int = 0,
        refund_amount: int = 0,
        reason: str | None = None,
    ) -> None:
        stmt = (
            self._insert(order_events)
            .values(
                event_id=event_id,
                order_id=order_id,
                from_state=frm,
                to_state=to,
                refund_qty=refund_qty,
                refund_amount=refund_amount,
                reason=reason,
                ts_ms=ts_ms,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
        if (await self.conn.execute(stmt)).rowcount != 1:
            raise Conflict(
                f"event {event_id} is already recorded for another change", code="duplicate_event"
            )

    async def transition(
        self,
        order_id: str,
        to_state: OrderState,
        event_id: str,
        *,
        now_ms: int,
        refund_qty: int = 0,
        refund_amount: int = 0,
        reason: str | None = None,
    ) -> TransitionResult:
        order = await self.get_order(order_id, lock=True)
        if order is None:
            raise NotFound(f"no order {order_id}", code="not_found")
        seen = (
            await self.conn.execute(
                select(order_events.c.order_id).where(order_events.c.event_id == event_id)
            )
        ).first()
        if seen is not None:
            if seen.order_id != order_id:
                raise Conflict(
                    f"event {event_id} belongs to order {seen.order_id}", code="duplicate_event"
                )
            return TransitionResult(order, False)
        result = apply_transition(
            order, to_state, now_ms=now_ms, refund_qty=refund_qty, refund_amount=refund_amount
        )
        if not result.changed:
            return result
        new = result.order
        res = await self.conn.execute(
            update(orders)
            .where(orders.c.id == order_id, orders.c.state == order.state)
            .values(
                state=new.state,
                updated_ms=new.updated_ms,
                refunded_qty=new.refunded_qty,
                refunded_amount=new.refunded_amount,
            )
        )
        if res.rowcount != 1:  # cannot happen under the row lock / single writer
            raise Conflict(f"order {order_id} changed concurrently", code="conflict")
        await self._event(
            order_id,
            event_id,
            order.state,
            new.state,
            now_ms,
            new.refunded_qty - order.refunded_qty,
            new.refunded_amount - order.refunded_amount,
            reason,
        )
        return result

    async def add_wallet_entry(
        self, user_id: str, delta: int, reason: str, ref_event_id: str, ts_ms: int
    ) -> bool:
        stmt = (
            self._insert(wallet_ledger)
            .values(
                user_id=user_id, delta=delta, reason=reason, ref_event_id=ref_event_id, ts_ms=ts_ms
            )
            .on_conflict_do_nothing(index_elements=["ref_event_id"])
        )
        return (await self.conn.execute(stmt)).rowcount == 1

    async def wallet_balance(self, user_id: str) -> int:
        q = select(func.coalesce(func.sum(wallet_ledger.c.delta), 0)).where(
            wallet_ledger.c.user_id == user_id
        )
        return int((await self.conn.execute(q)).scalar_one())

    async def add_points_entry(
        self,
        user_id: str,
        role: PointsRole,
        delta: int,
        reason: str,
        ref_event_id: str,
        ts_ms: int,
    ) -> bool:
        if role not in ("viewer", "host"):
            raise BadFrame(f"points role must be viewer or host, not {role!r}", code="invalid")
        stmt = (
            self._insert(points_ledger)
            .values(
                user_id=user_id,
                role=role,
                delta=delta,
                reason=reason,
                ref_event_id=ref_event_id,
                ts_ms=ts_ms,
            )
            .on_conflict_do_nothing(index_elements=["ref_event_id", "user_id", "reason"])
        )
        if (await self.conn.execute(stmt)).rowcount != 1:
            return False
        await self._add_balances([(user_id, role, delta)])
        return True

    async def points_balance(self, user_id: str, role: PointsRole | None = None) -> int:
        q = select(func.coalesce(func.sum(points_balances.c.balance), 0)).where(points_balances.c.user_id == user_id)
        if role is not None:
            q = q.where(points_balances.c.role == role)
        return int((await self.conn.execute(q)).scalar_one())

    async def add_wallet_entries(self, rows: Sequence[tuple[str, int, str, str, int]]) -> int:
        """Append ``(user_id, delta, reason, ref_event_id, ts_ms)`` rows in one statement;
        return how many were new (duplicates of a recorded ``ref_event_id`` are skipped)."""
        new = await self._insert_many(
            wallet_ledger,
            [{"user_id": u, "delta": d, "reason": r, "ref_event_id": e, "ts_ms": t} for u, d, r, e, t in rows],
            conflict=["ref_event_id"],
            returning=[wallet_ledger.c.id],
        )
        return len(new)

    async def add_points_entries(self, rows: Sequence[tuple[str, PointsRole, int, str, str, int]]) -> int:
        """Append ``(user_id, role, delta, reason, ref_event_id, ts_ms)`` rows in one
        statement; return how many were new (recorded ``(ref_event_id, user_id, reason)``
        are skipped).

        Raises:
            BadFrame: a role is not viewer or host.
        """
        if not rows:
            return 0
        if any(r[1] not in ("viewer", "host") for r in rows):
            raise BadFrame("points role must be viewer or host", code="invalid")
        c = points_ledger.c
        if self._pg:  # one statement: the rows, then their sums added to the kept balances, nothing sent back but a count
            cols = ["user_id", "role", "delta", "reason", "ref_event_id", "ts_ms"]
            ins = (postgresql.insert(points_ledger).from_select(cols, self._unnest(points_ledger, cols))
                   .on_conflict_do_nothing(index_elements=["ref_event_id", "user_id", "reason"])
                   .returning(c.user_id, c.role, c.delta).cte("ins"))
            sums = (select(ins.c.user_id, ins.c.role, func.sum(ins.c.delta))
                    .group_by(ins.c.user_id, ins.c.role).order_by(ins.c.user_id, ins.c.role))  # rows locked in key order
            up = postgresql.insert(points_balances).from_select(["user_id", "role", "balance"], sums)
            up = up.on_conflict_do_update(index_elements=["user_id", "role"],
                                          set_={"balance": points_balances.c.balance + up.excluded.balance})
            stmt = select(func.count()).select_from(ins).add_cte(up.cte("up"))
            params = {f"u_{k}": [r[i] for r in rows] for i, k in enumerate(cols)}
            return int((await self.conn.execute(stmt, params)).scalar_one())
        new = await self._insert_many(
            points_ledger,
            [{"user_id": u, "role": ro, "delta": d, "reason": r, "ref_event_id": e, "ts_ms": t} for u, ro, d, r, e, t in rows],
            conflict=["ref_event_id", "user_id", "reason"],
            returning=[c.user_id, c.role, c.delta],
        )
        await self._add_balances((r[0], r[1], r[2]) for r in new)
        return len(new)


# ---------------------------------------------------------------------------------- store


class SqlStore:
    """:class:`~livecommerce.store.Store` on SQLite or PostgreSQL. The schema must have been
    created by :func:`livecommerce.migrations.upgrade`; :meth:`check_schema` says so.

    Raises (constructor):
        ConfigError: bad URL (see :func:`split_url`).
    """

    def __init__(self, url: str, **engine_kw: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kw)
        self._writer = writer(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    async def checkpoint(self) -> tuple[int, int, int] | None:
        """SQLite: ``PRAGMA wal_checkpoint(TRUNCATE)``: copy the WAL into the database and
        truncate it to zero bytes, so it does not grow while readers keep the automatic
        (passive) checkpoints from finishing. Waits for readers up to the busy timeout.
        Returns SQLite's ``(busy, wal pages, pages checkpointed)`` (busy 1: readers held it
        back, try later); None on PostgreSQL, which manages its own WAL.

        Raises:
            Unavailable: the database is unreachable.
        """
        if self.dialect != "sqlite":
            return None
        async with guarded(), self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection  # aiosqlite: outside any transaction, as the pragma needs
            assert driver is not None
            cur = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            row = await cur.fetchone()
            await cur.close()
        return (int(row[0]), int(row[1]), int(row[2])) if row else None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[SqlTx]:
        async with guarded(), self._writer.begin() as conn:
            yield SqlTx(conn)

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[SqlTx]:
        async with guarded(), self.engine.connect() as conn:
            yield SqlTx(conn)

    def write(self) -> contextlib.AbstractAsyncContextManager[SqlTx]:
        """One write transaction (committed when the block ends, rolled back if it raises),
        for capability adapters with tables of their own (``refunds_sql``, ``profiles_sql``
        ...). Driver errors become ``Unavailable``."""
        return self._write()

    def read(self) -> contextlib.AbstractAsyncContextManager[SqlTx]:
        """One read-only connection (committed data only); see :meth:`write`."""
        return self._read()

    # -------------------------------------------------------------- exactly once

    @contextlib.asynccontextmanager
    async def apply(
        self, consumer: str, event_id: str, *, now_ms: int | None = None
    ) -> AsyncIterator[SqlTx | None]:
        """See :meth:`livecommerce.store.Store.apply`. ``now_ms`` is stored with the record."""
        async with self._write() as tx:
            if not await tx._claim(consumer, event_id, now_ms):
                yield None
                return
            yield tx

    @contextlib.asynccontextmanager
    async def apply_batch(
        self, consumer: str, event_ids: Sequence[str], *, now_ms: int | None = None
    ) -> AsyncIterator[tuple[SqlTx, set[str]]]:
        """See :meth:`livecommerce.store.Store.apply_batch`."""
        async with self._write() as tx:
            ids = sorted(set(event_ids))  # claimed in order: overlapping batches wait, never deadlock
            claimed = await tx._insert_many(
                applied_events,
                [{"consumer": consumer, "event_id": e, "applied_ms": now_ms} for e in ids],
                conflict=["consumer", "event_id"],
                returning=[applied_events.c.event_id],
            )
            yield tx, {r[0] for r in claimed}

    async def points_balances(self, user_ids: Sequence[str]) -> dict[str, dict[PointsRole, int]]:
        out: dict[str, dict[PointsRole, int]] = {u: {"viewer": 0, "host": 0} for u in user_ids}
        if not out:
            return out
        b = points_balances.c
        users = list(out)
        async with self._read() as tx:
            if tx._pg:  # one array parameter for the whole batch of users
                q = select(b.user_id, b.role, b.balance).where(b.user_id == any_(bindparam("users", type_=postgresql.ARRAY(b.user_id.type))))
                for user, role, total in await tx.conn.execute(q, {"users": users}):
                    out[user][cast(PointsRole, role)] = int(total or 0)
                return out
            for i in range(0, len(users), 500):
                for user, role, total in await tx.conn.execute(select(b.user_id, b.role, b.balance).where(b.user_id.in_(users[i : i + 500]))):
                    out[user][cast(PointsRole, role)] = int(total or 0)
        return out

    async def was_applied(self, consumer: str, event_id: str) -> bool:
        async with self._read() as tx:
            q = select(applied_events.c.event_id).where(
                applied_events.c.consumer == consumer, applied_events.c.event_id == event_id
            )
            return (await tx.conn.execute(q)).first() is not None

    # -------------------------------------------------------------- Tx methods, alone

    async def insert_reserved(self, order: Order, event_id: str) -> bool:
        async with self._write() as tx:
            return await tx.insert_reserved(order, event_id)

    async def transition(
        self,
        order_id: str,
        to_state: OrderState,
        event_id: str,
        *,
        now_ms: int,
        refund_qty: int = 0,
        refund_amount: int = 0,
        reason: str | None = None,
    ) -> TransitionResult:
        async with self._write() as tx:
            return await tx.transition(
                order_id,
                to_state,
                event_id,
                now_ms=now_ms,
                refund_qty=refund_qty,
                refund_amount=refund_amount,
                reason=reason,
            )

    async def settle(self, steps: Sequence[OrderStep]) -> list[StepOutcome]:
        async with self._write() as tx:
            return await tx.settle(steps)

    async def add_wallet_entry(
        self, user_id: str, delta: int, reason: str, ref_event_id: str, ts_ms: int
    ) -> bool:
        async with self._write() as tx:
            return await tx.add_wallet_entry(user_id, delta, reason, ref_event_id, ts_ms)

    async def add_points_entry(
        self,
        user_id: str,
        role: PointsRole,
        delta: int,
        reason: str,
        ref_event_id: str,
        ts_ms: int,
    ) -> bool:
        async with self._write() as tx:
            return await tx.add_points_entry(user_id, role, delta, reason, ref_event_id, ts_ms)

    async def add_wallet_entries(self, rows: Sequence[tuple[str, int, str, str, int]]) -> int:
        async with self._write() as tx:
            return await tx.add_wallet_entries(rows)

    async def add_points_entries(self, rows: Sequence[tuple[str, PointsRole, int, str, str, int]]) -> int:
        async with self._write() as tx:
            return await tx.add_points_entries(rows)

    async def get_order(self, order_id: str) -> Order | None:
        async with self._read() as tx:
            return await tx.get_order(order_id)

    async def record_payment(self, order_id: str, *, amount: int, discount: int, coupon_id: str | None) -> bool:
        async with self._write() as tx:
            return await tx.record_payment(order_id, amount=amount, discount=discount, coupon_id=coupon_id)

    async def wallet_balance(self, user_id: str) -> int:
        async with self._read() as tx:
            return await tx.wallet_balance(user_id)

    async def points_balance(self, user_id: str, role: PointsRole | None = None) -> int:
        async with self._read() as tx:
            return await tx.points_balance(user_id, role)

    # -------------------------------------------------------------- reads

    async def list_orders(
        self,
        *,
        user_id: str | None = None,
        sale_id: str | None = None,
        room_id: str | None = None,
        state: OrderState | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Order]:
        q = select(orders)
        for col, val in (
            (orders.c.user_id, user_id),
            (orders.c.sale_id, sale_id),
            (orders.c.room_id, room_id),
            (orders.c.state, state),
        ):
            if val is not None:
                q = q.where(col == val)
        q = q.order_by(orders.c.created_ms.desc(), orders.c.id.desc()).limit(limit).offset(offset)
        async with self._read() as tx:
            return [_order(r) for r in await tx.conn.execute(q)]

    async def order_history(self, order_id: str) -> list[OrderEvent]:
        q = (
            select(order_events)
            .where(order_events.c.order_id == order_id)
            .order_by(order_events.c.id)
        )
        async with self._read() as tx:
            return [
                OrderEvent(
                    order_id=r.order_id,
                    event_id=r.event_id,
                    from_state=cast("OrderState | None", r.from_state),
                    to_state=cast(OrderState, r.to_state),
                    ts_ms=r.ts_ms,
                    refund_qty=r.refund_qty,
                    refund_amount=r.refund_amount,
                    reason=r.reason,
                )
                for r in await tx.conn.execute(q)
            ]

    async def due_orders(self, now_ms: int, limit: int = 100) -> list[Order]:
        q = (
            select(orders)
            .where(orders.c.state == "reserved", orders.c.pay_by_ms <= now_ms)
            .order_by(orders.c.pay_by_ms, orders.c.id)
            .limit(limit)
        )
        async with self._read() as tx:
            return [_order(r) for r in await tx.conn.execute(q)]

    async def sale_stats(self, sale_id: str) -> OrderTotals:
        by_state = (
            select(
                orders.c.state,
                func.count(),
                func.coalesce(func.sum(orders.c.qty), 0),
                func.coalesce(func.sum(orders.c.amount - orders.c.refunded_amount), 0),
                func.coalesce(func.sum(orders.c.refunded_amount), 0),
            )
            .where(orders.c.sale_id == sale_id)
            .group_by(orders.c.state)
        )
        buyers = select(func.count(func.distinct(orders.c.user_id))).where(
            orders.c.sale_id == sale_id, orders.c.state != "cancelled"
        )
        async with self._read() as tx:
            rows: Sequence[Any] = (await tx.conn.execute(by_state)).all()
            n_buyers = int((await tx.conn.execute(buyers)).scalar_one())
        sold = SOLD_STATES
        return OrderTotals(
            sale_id=sale_id,
            orders={r[0]: int(r[1]) for r in rows},
            units={r[0]: int(r[2]) for r in rows},
            gmv=sum(int(r[3]) for r in rows if r[0] in sold),
            refunded=sum(int(r[4]) for r in rows),
            buyers=n_buyers,
        )

    async def wallet_ledger(
        self, user_id: str, *, limit: int = 100, offset: int = 0
    ) -> list[WalletEntry]:
        q = (
            select(wallet_ledger)
            .where(wallet_ledger.c.user_id == user_id)
            .order_by(wallet_ledger.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self._read() as tx:
            return [
                WalletEntry(r.id, r.user_id, r.delta, r.reason, r.ref_event_id, r.ts_ms)
                for r in await tx.conn.execute(q)
            ]

    async def points_ledger(
        self, user_id: str, *, role: PointsRole | None = None, limit: int = 100, offset: int = 0
    ) -> list[PointsEntry]:
        q = select(points_ledger).where(points_ledger.c.user_id == user_id)
        if role is not None:
            q = q.where(points_ledger.c.role == role)
        q = q.order_by(points_ledger.c.id.desc()).limit(limit).offset(offset)
        async with self._read() as tx:
            return [
                PointsEntry(
                    r.id,
                    r.user_id,
                    cast(PointsRole, r.role),
                    r.delta,
                    r.reason,
                    r.ref_event_id,
                    r.ts_ms,
                )
                for r in await tx.conn.execute(q)
            ]

    async def points_entry(self, ref_event_id: str, user_id: str, reason: str) -> PointsEntry | None:
        """The points entry an event made for ``user_id`` with ``reason``, or None."""
        q = select(points_ledger).where(
            points_ledger.c.ref_event_id == ref_event_id,
            points_ledger.c.user_id == user_id,
            points_ledger.c.reason == reason,
        )
        async with self._read() as tx:
            r = (await tx.conn.execute(q)).first()
        if r is None:
            return None
        return PointsEntry(
            r.id, r.user_id, cast(PointsRole, r.role), r.delta, r.reason, r.ref_event_id, r.ts_ms
        )

    # -------------------------------------------------------------- campaigns

    async def put_sale(
        self, sale: Sale, *, state: SaleState, now_ms: int, product_name: str | None = None
    ) -> None:
        values = {
            "room_id": sale.room,
            "product_id": sale.product_id,
            "price": sale.price,
            "stock": sale.stock,
            "per_user_limit": sale.per_user_limit,
            "starts_ms": sale.starts_ms,
            "ends_ms": sale.ends_ms,
            "payment_window_s": sale.payment_window_s,
            "restock_on_refund": sale.restock_on_refund,
            "state": state,
            "updated_ms": now_ms,
        }
        if product_name is not None:
            values["product_name"] = product_name
        async with self._write() as tx:
            stmt = tx._insert(sales).values(id=sale.id, created_ms=now_ms, **values)
            await tx.conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=values))

    async def get_sale(self, sale_id: str) -> SaleRecord | None:
        async with self._read() as tx:
            row = (await tx.conn.execute(select(sales).where(sales.c.id == sale_id))).first()
        return None if row is None else _sale_record(row)

    async def list_sales(
        self, *, room_id: str | None = None, state: SaleState | None = None, limit: int = 100
    ) -> list[SaleRecord]:
        q = select(sales)
        if room_id is not None:
            q = q.where(sales.c.room_id == room_id)
        if state is not None:
            q = q.where(sales.c.state == state)
        q = q.order_by(sales.c.starts_ms.desc(), sales.c.id).limit(limit)
        async with self._read() as tx:
            return [_sale_record(r) for r in await tx.conn.execute(q)]

    # -------------------------------------------------------------- schema

    async def check_schema(self) -> int:
        """The schema version, when it is the one this code needs.

        Raises:
            ConfigError: the database is at another version (run ``livecommerce db upgrade``).
            Unavailable: the database is unreachable.
        """
        async with self._read() as tx:
            version = await tx.conn.run_sync(current_version)
        if version != LATEST:
            raise ConfigError(
                f"database schema is at version {version}, this code needs {LATEST}: "
                "run `livecommerce db upgrade`"
            )
        return version


def _implements_store(s: SqlStore) -> Store:  # mypy checks SqlStore against the port
    return s
