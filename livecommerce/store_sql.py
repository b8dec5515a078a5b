"""SQL implementation of the :class:`~livecommerce.store.Store` port (SQLAlchemy 2 Core,
async): SQLite through aiosqlite (the embedded default) and PostgreSQL through asyncpg.

The tables are declared here (``metadata``) and created only by
:func:`livecommerce.migrations.upgrade` (``livecommerce db upgrade``); importing this module
creates nothing.

URLs: ``sqlite+aiosqlite:///path/to/file.db`` or ``postgresql+asyncpg://user@host/db``.
A ``?schema=NAME`` query parameter on a PostgreSQL URL puts every table in that schema
(through the connections' ``search_path``): tenants and tests share one database that way.

How each backend keeps the contract:

* SQLite runs in WAL mode with a busy timeout (readers never block the writer); every write
  transaction starts with ``BEGIN IMMEDIATE``, so writers queue instead of failing with
  "database is locked" when a read transaction tries to upgrade. The WAL is truncated by
  :meth:`SqlStore.checkpoint` (the retention worker, every minute) and capped at
  ``SQLITE_WAL_LIMIT_BYTES`` after each checkpoint that resets it.
* PostgreSQL: ``applied_events`` and order rows are claimed with ``INSERT .. ON CONFLICT DO
  NOTHING`` and ``SELECT .. FOR UPDATE``; a concurrent duplicate waits for the first
  transaction and then sees its row.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import sqlalchemy.exc as sa_exc
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .errors import BadFrame, ConfigError, Conflict, NotFound, Unavailable
from .flash_sale import Sale, SaleState
from .orders import Order, OrderEvent, OrderState, TransitionResult, apply_transition
from .store import OrderTotals, PointsEntry, PointsRole, SaleRecord, Store, WalletEntry

# ---------------------------------------------------------------------------------- schema

metadata = MetaData()

# An auto-increment 64-bit key: SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
ID = 128  # length of ids: ours are at most 64, external ones (payment ids) may be longer

rooms = Table(
    "rooms",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("host_id", String(ID), nullable=False, index=True),
    Column("title", String(200), nullable=False, default=""),
    Column("state", String(16), nullable=False, default="created"),  # created | live | ended
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("price", BigInteger, nullable=False),  # list price, cents
    Column("room_id", String(ID), nullable=True, index=True),
    Column("data", JSON, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

sales = Table(
    "sales",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("room_id", String(ID), nullable=False, index=True),
    Column("product_id", String(ID), nullable=False, index=True),
    Column("product_name", String(200), nullable=True),
    Column("price", BigInteger, nullable=False),
    Column("stock", Integer, nullable=False),  # initial stock
    Column("per_user_limit", Integer, nullable=False),
    Column("starts_ms", BigInteger, nullable=False),
    Column("ends_ms", BigInteger, nullable=False),
    Column("payment_window_s", Integer, nullable=False),
    Column("restock_on_refund", Boolean, nullable=False, default=False),
    Column("state", String(16), nullable=False),  # flash_sale.SaleState
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("sale_id", String(ID), nullable=False),
    Column("room_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("qty", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),  # qty * unit_price - discount
    Column("discount", BigInteger, nullable=False, default=0),
    Column("coupon_id", String(ID), nullable=True),
    Column("state", String(24), nullable=False),  # orders.OrderState
    Column("pay_by_ms", BigInteger, nullable=False),
    Column("refunded_qty", Integer, nullable=False, default=0),
    Column("refunded_amount", BigInteger, nullable=False, default=0),
    Column("request_id", String(ID), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_orders_user", "user_id", "created_ms"),
    Index("ix_orders_sale_state", "sale_id", "state"),
    Index("ix_orders_room", "room_id", "created_ms"),
    Index("ix_orders_state_pay_by", "state", "pay_by_ms"),
)

order_events = Table(
    "order_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False, unique=True),  # the log event id
    Column("order_id", String(ID), ForeignKey("orders.id"), nullable=False, index=True),
    Column("from_state", String(24), nullable=True),
    Column("to_state", String(24), nullable=False),
    Column("refund_qty", Integer, nullable=False, default=0),
    Column("refund_amount", BigInteger, nullable=False, default=0),
    Column("reason", Text, nullable=True),
    Column("ts_ms", BigInteger, nullable=False),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("order_id", String(ID), ForeignKey("orders.id"), nullable=False, index=True),
    Column("user_id", String(ID), nullable=False, index=True),
    Column("qty", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", Text, nullable=True),
    Column("state", String(16), nullable=False),  # requested | approved | rejected
    Column("decided_by", String(ID), nullable=True),
    Column("requested_ms", BigInteger, nullable=False),
    Column("decided_ms", BigInteger, nullable=True),
)

wallet_ledger = Table(
    "wallet_ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", String(ID), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("ref_event_id", String(ID), nullable=False, unique=True),
    Column("ts_ms", BigInteger, nullable=False),
    Index("ix_wallet_user", "user_id", "id"),
)

points_ledger = Table(
    "points_ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", String(ID), nullable=False),
    Column("role", String(8), nullable=False),  # viewer | host
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("ref_event_id", String(ID), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    UniqueConstraint("ref_event_id", "user_id", "reason", name="uq_points_ref_user_reason"),
    Index("ix_points_user", "user_id", "role", "id"),
)

applied_events = Table(
    "applied_events",
    metadata,
    Column("consumer", String(64), nullable=False),
    Column("event_id", String(ID), nullable=False),
    Column("applied_ms", BigInteger, nullable=True),
    PrimaryKeyConstraint("consumer", "event_id", name="pk_applied_events"),
)

coupon_drops = Table(
    "coupon_drops",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("room_id", String(ID), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # full_reduction | percent
    Column("threshold", BigInteger, nullable=False, default=0),  # spend X (cents)
    Column("value", BigInteger, nullable=False),  # save Y (cents) or percent off
    Column("quantity", Integer, nullable=False),
    Column("per_user", Integer, nullable=False, default=1),
    Column("expires_ms", BigInteger, nullable=False),
    Column("segment_id", String(ID), nullable=True),  # targeted drops (issue 11)
    Column("created_by", String(ID), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

coupon_claims = Table(
    "coupon_claims",
    metadata,
    Column("id", String(ID), primary_key=True),  # the coupon id
    Column("drop_id", String(ID), ForeignKey("coupon_drops.id"), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("state", String(16), nullable=False),  # claimed | used | expired
    Column("order_id", String(ID), nullable=True),
    Column("claimed_ms", BigInteger, nullable=False),
    Column("used_ms", BigInteger, nullable=True),
    Index("ix_coupon_claims_drop_user", "drop_id", "user_id"),
    Index("ix_coupon_claims_user", "user_id", "state"),
)

lotteries = Table(
    "lotteries",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("room_id", String(ID), nullable=False, index=True),
    Column("prize", String(200), nullable=False),
    Column("winners_count", Integer, nullable=False),
    Column("rule", JSON, nullable=True),  # entry rule: keyword | gift | follow
    Column("state", String(16), nullable=False),  # open | drawn
    Column("seed_hash", String(128), nullable=False),  # published when it opens
    Column("seed", String(128), nullable=True),  # revealed with the draw
    Column("entrants", JSON, nullable=True),
    Column("winners", JSON, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("drawn_ms", BigInteger, nullable=True),
)

# ---------------------------------------------------------------------------------- engine

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def split_url(url: str) -> tuple[URL, str | None]:
    """Parse a database URL; return it without our ``schema`` parameter, and that schema.

    Raises:
        ConfigError: unparsable URL, an unsupported driver, or a bad schema name.
    """
    try:
        u = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise ConfigError(f"bad database URL: {exc}") from exc
    if u.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(
            f"database URL driver {u.drivername!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    schema = u.query.get("schema")
    if isinstance(schema, tuple):
        schema = schema[-1]
    if schema is not None:
        if u.get_backend_name() != "postgresql":
            raise ConfigError("the ?schema= URL parameter is for PostgreSQL only")
        if not _SCHEMA_NAME.match(schema):
            raise ConfigError(f"bad schema name {schema!r}: lower-case letters, digits, _")
        u = u.difference_update_query(["schema"])
    return u, schema


def make_engine(url: str, **kw: Any) -> AsyncEngine:
    """An async engine set up as the module docstring says (SQLite pragmas and
    ``BEGIN IMMEDIATE`` for writes, PostgreSQL ``search_path``). Creates the directory of a
    SQLite file, nothing else.

    Raises:
        ConfigError: see :func:`split_url`.
    """
    u, schema = split_url(url)
    if u.get_backend_name() == "sqlite":
        db = u.database or ""
        if db and db != ":memory:" and not db.startswith("file:"):
            # best effort: if it cannot be made, connecting fails with Unavailable
            with contextlib.suppress(OSError):
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(u, **kw)
        _sqlite_setup(engine)
        return engine
    connect_args: dict[str, Any] = dict(kw.pop("connect_args", {}))
    if schema is not None:
        settings = dict(connect_args.get("server_settings", {}))
        settings["search_path"] = schema
        connect_args["server_settings"] = settings
    connect_args.setdefault("timeout", 10)
    kw.setdefault("pool_size", 10)
    kw.setdefault("max_overflow", 20)
    kw.setdefault("pool_pre_ping", True)
    return create_async_engine(u, connect_args=connect_args, **kw)


SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_WAL_LIMIT_BYTES = 16 * 1024 * 1024


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # we emit BEGIN ourselves (below): pysqlite's implicit BEGIN is always DEFERRED
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        # a checkpoint that resets the WAL truncates the file to this (docs/retention.md)
        cur.execute(f"PRAGMA journal_size_limit = {SQLITE_WAL_LIMIT_BYTES}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("lc_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) whose transactions are SQLite write transactions
    (``BEGIN IMMEDIATE``); on PostgreSQL the engine itself."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(lc_begin="IMMEDIATE")
    return engine


def _missing_schema(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        "no such table" in text
        or "undefinedtable" in text
        or ("relation" in text and "does not exist" in text)
    )


@contextlib.asynccontextmanager
async def guarded() -> AsyncIterator[None]:
    """Turn driver failures into ``Unavailable`` and unexpected duplicates into
    ``Conflict``. Our own errors pass through."""
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise Conflict(
            f"conflicting write: {exc.orig.__class__.__name__}", code="conflict"
        ) from exc
    except (sa_exc.OperationalError, sa_exc.ProgrammingError) as exc:
        if _missing_schema(exc):
            raise Unavailable("database schema missing: run `livecommerce db upgrade`") from exc
        if isinstance(exc, sa_exc.ProgrammingError):
            raise
        raise Unavailable(f"database unavailable: {exc.orig.__class__.__name__}") from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError):
            raise Unavailable(f"database unavailable: {exc.orig.__class__.__name__}") from exc
        raise
    except (sa_exc.TimeoutError, OSError, TimeoutError, ConnectionError) as exc:
        raise Unavailable(f"database unavailable: {exc.__class__.__name__}") from exc


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
        return (await self.conn.execute(stmt)).rowcount == 1

    async def points_balance(self, user_id: str, role: PointsRole | None = None) -> int:
        q = select(func.coalesce(func.sum(points_ledger.c.delta), 0)).where(
            points_ledger.c.user_id == user_id
        )
        if role is not None:
            q = q.where(points_ledger.c.role == role)
        return int((await self.conn.execute(q)).scalar_one())

    async def add_wallet_entries(self, rows: Sequence[tuple[str, int, str, str, int]]) -> int:
        """Append ``(user_id, delta, reason, ref_event_id, ts_ms)`` rows in one statement;
        return how many were new (duplicates of a recorded ``ref_event_id`` are skipped)."""
        if not rows:
            return 0
        stmt = (
            self._insert(wallet_ledger)
            .values([{"user_id": u, "delta": d, "reason": r, "ref_event_id": e, "ts_ms": t} for u, d, r, e, t in rows])
            .on_conflict_do_nothing(index_elements=["ref_event_id"])
        )
        return int((await self.conn.execute(stmt)).rowcount)

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
        stmt = (
            self._insert(points_ledger)
            .values([
                {"user_id": u, "role": ro, "delta": d, "reason": r, "ref_event_id": e, "ts_ms": t}
                for u, ro, d, r, e, t in rows
            ])
            .on_conflict_do_nothing(index_elements=["ref_event_id", "user_id", "reason"])
        )
        return int((await self.conn.execute(stmt)).rowcount)


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
            fresh: set[str] = set()
            ids = sorted(set(event_ids))
            for i in range(0, len(ids), 500):  # one statement per 500 ids, claimed in order
                stmt = (
                    tx._insert(applied_events)
                    .values([{"consumer": consumer, "event_id": e, "applied_ms": now_ms} for e in ids[i : i + 500]])
                    .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
                    .returning(applied_events.c.event_id)
                )
                fresh.update(r[0] for r in await tx.conn.execute(stmt))
            yield tx, fresh

    async def points_balances(self, user_ids: Sequence[str]) -> dict[str, dict[PointsRole, int]]:
        out: dict[str, dict[PointsRole, int]] = {u: {"viewer": 0, "host": 0} for u in user_ids}
        if not out:
            return out
        q = (
            select(points_ledger.c.user_id, points_ledger.c.role, func.sum(points_ledger.c.delta))
            .where(points_ledger.c.user_id.in_(list(out)))
            .group_by(points_ledger.c.user_id, points_ledger.c.role)
        )
        async with self._read() as tx:
            for user, role, total in await tx.conn.execute(q):
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
        sold = ("paid", "refund_requested", "refunded")
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
        from .migrations import LATEST, current_version

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
