"""Explicit, versioned schema migrations (``livecommerce db upgrade``).

Nothing creates tables at import or on connect: :func:`upgrade` applies every step newer
than the version recorded in ``schema_version`` (one row per applied step), in order, in one
transaction. Concurrent upgrades are serialised (PostgreSQL: an advisory lock; SQLite:
``BEGIN IMMEDIATE``), so two processes starting together apply each step once. Re-running
is a no-op.

Adding a step: append ``(N, "what it does", function)`` to :data:`STEPS`; the function gets
a synchronous SQLAlchemy ``Connection`` inside the transaction and issues explicit DDL
(``ALTER TABLE ...``, ``op``-style). Step 1 creates the tables from
:data:`livecommerce.store_sql.metadata`; when a later step changes a table, freeze step 1 by
giving it a copy of that table's version-1 definition first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    inspect,
    select,
    text,
)

from . import store_sql
from .store_sql import guarded, make_engine, split_url, writer

_meta = MetaData()
schema_version = Table(
    "schema_version",
    _meta,
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_ms", BigInteger, nullable=False),
)

Step = Callable[[Connection], None]

V1_TABLES = (
    "rooms",
    "products",
    "sales",
    "orders",
    "order_events",
    "refunds",
    "wallet_ledger",
    "points_ledger",
    "applied_events",
    "coupon_drops",
    "coupon_claims",
    "lotteries",
)


def _v1(conn: Connection) -> None:
    tables = [store_sql.metadata.tables[name] for name in V1_TABLES]
    store_sql.metadata.create_all(conn, tables=tables, checkfirst=True)


def _v2_aftersales(conn: Connection) -> None:
    """Issue 11: refund columns, tickets, profiles, fan clubs, erasures, segments."""
    from . import profiles_sql, refunds_sql, segments_sql, tickets_sql

    have = {c["name"] for c in inspect(conn).get_columns("refunds")}
    for name, ddl in refunds_sql.V2_COLUMNS:
        if name not in have:
            conn.execute(text(f"ALTER TABLE refunds ADD COLUMN {name} {ddl}"))
    for meta in (tickets_sql.meta, profiles_sql.meta, segments_sql.meta):
        meta.create_all(conn, checkfirst=True)


def _v3_growth(conn: Connection) -> None:
    """Issue 12: growth facts, active days, per-viewer growth rows, experiment exposures."""
    from . import growth_sql

    growth_sql.meta.create_all(conn, checkfirst=True)


def _v4_retention(conn: Connection) -> None:
    """M2 retention: ``profiles_base``, the fold of the log entries retention trimmed."""
    from . import profiles_sql

    profiles_sql.base_meta.create_all(conn, checkfirst=True)


STEPS: list[tuple[int, str, Step]] = [
    (
        1,
        "rooms, products, sales, orders + history, refunds, ledgers, applied events, coupons, lotteries",
        _v1,
    ),
    (2, "after-sales: refund columns, tickets, profiles, fan clubs, erasures, segments", _v2_aftersales),
    (3, "growth: facts, active days, viewers' growth rows, experiment exposures", _v3_growth),
    (4, "retention: profiles_base (the fold of the log entries retention trimmed)", _v4_retention),
]
LATEST = STEPS[-1][0]

_PG_LOCK = 0x6C63_6462  # "lcdb": one upgrade at a time per database


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: int
    latest: int
    pending: list[tuple[int, str]]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest


def current_version(conn: Connection) -> int:
    """The schema version of the database behind ``conn`` (0 when empty)."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    v = conn.execute(
        select(schema_version.c.version).order_by(schema_version.c.version.desc()).limit(1)
    ).scalar()
    return int(v or 0)


def _upgrade(conn: Connection, target: int) -> int:
    _meta.create_all(conn, checkfirst=True)
    current = current_version(conn)
    for version, description, step in STEPS:
        if current < version <= target:
            step(conn)
            conn.execute(
                schema_version.insert().values(
                    version=version, description=description, applied_ms=int(time.time() * 1000)
                )
            )
            current = version
    return current


async def upgrade(url: str, *, target: int | None = None) -> int:
    """Bring the database at ``url`` to ``target`` (default: :data:`LATEST`); return the
    version it is at afterwards. Creates the SQLite file's directory, and the PostgreSQL
    schema named by ``?schema=`` if missing. Idempotent.

    Raises:
        ConfigError: bad URL, or ``target`` unknown / below the current version (no
            downgrades).
        Unavailable: the database cannot be reached.
    """
    from .errors import ConfigError

    if target is None:
        target = LATEST
    if target not in {v for v, _, _ in STEPS}:
        raise ConfigError(f"unknown schema version {target} (latest is {LATEST})")
    _, schema = split_url(url)
    engine = make_engine(url)
    try:
        async with guarded():
            if schema is not None:
                async with engine.begin() as conn:
                    await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            async with writer(engine).begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
                current = await conn.run_sync(current_version)
                if current > target:
                    raise ConfigError(
                        f"database is at version {current}, above {target}: no downgrades"
                    )
                return await conn.run_sync(_upgrade, target)
    finally:
        await engine.dispose()


async def status(url: str) -> SchemaStatus:
    """The database's version and the steps :func:`upgrade` would apply.

    Raises:
        ConfigError: bad URL.
        Unavailable: the database cannot be reached.
    """
    engine = make_engine(url)
    try:
        async with guarded(), engine.connect() as conn:
            current = await conn.run_sync(current_version)
    finally:
        await engine.dispose()
    return SchemaStatus(current, LATEST, [(v, d) for v, d, _ in STEPS if v > current])
