"""Explicit, versioned schema migrations (``livecommerce db upgrade``).

Nothing creates tables at import or on connect: :func:`upgrade` applies every step newer
than the version recorded in ``schema_version`` (one row per applied step), in order, in one
transaction. Concurrent upgrades are serialised (PostgreSQL: an advisory lock; SQLite:
``BEGIN IMMEDIATE``), so two processes starting together apply each step once. Re-running
is a no-op.

Adding a step: append ``(N, "what it does", function)`` to :data:`STEPS`; the function gets
a synchronous SQLAlchemy ``Connection`` inside the transaction and issues explicit DDL
(``ALTER TABLE ...``, ``op``-style), or creates the step's new tables from
:data:`livecommerce.schema.metadata` (which holds every table's *current* shape). When a
later step changes a table, the step that created it gets a frozen copy of the older shape
first, as step 1 has for ``refunds`` (:func:`_refunds_v1`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)

from .clock import now_ms
from .schema import ID, metadata, schema_version
from .sql_conn import guarded, make_engine, split_url, writer

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


V2_TABLES = ("tickets", "ticket_events", "profiles", "fan_members", "erasures", "segments", "segment_targets")
V3_TABLES = ("growth_facts", "growth_days", "growth_users", "exp_exposures")
V4_TABLES = ("profiles_base",)
V5_TABLES = ("points_balances",)
V6_TABLES = ("catalog_products", "catalog_skus", "catalog_stock_moves")
V7_TABLES = ("moderation_actions", "moderation_reports")
V9_TABLES = ("host_earnings",)
V10_TABLES = ("notifications", "schedules", "schedule_subs", "reach_fanouts")
V11_TABLES = ("addresses", "shipments")

# the columns step 2 added to ``refunds`` (the request's core columns came with step 1)
REFUNDS_V2_COLUMNS: tuple[tuple[str, str], ...] = (
    ("note", "TEXT"),
    ("room_id", "VARCHAR(128)"),
    ("sale_id", "VARCHAR(128)"),
    ("decision_note", "TEXT"),
    ("settled_ms", "BIGINT"),
    ("restocked", "BOOLEAN"),
    ("credited", "BIGINT"),
)


def _create(conn: Connection, names: tuple[str, ...]) -> None:
    metadata.create_all(conn, tables=[metadata.tables[n] for n in names], checkfirst=True)


def _refunds_v1(meta: MetaData) -> Table:
    """``refunds`` as step 1 created it (frozen: step 2 added :data:`REFUNDS_V2_COLUMNS`)."""
    return Table(
        "refunds",
        meta,
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


def _v1(conn: Connection) -> None:
    # the step's DDL only: the unchanged version-1 tables copied from the schema, and the
    # frozen refunds, on a MetaData that lives for this call
    frozen = MetaData()
    for name in V1_TABLES:
        if name != "refunds":
            metadata.tables[name].to_metadata(frozen)
    _refunds_v1(frozen)
    frozen.create_all(conn, checkfirst=True)


def _v2_aftersales(conn: Connection) -> None:
    """Issue 11: refund columns, tickets, profiles, fan clubs, erasures, segments."""
    have = {c["name"] for c in inspect(conn).get_columns("refunds")}
    for name, ddl in REFUNDS_V2_COLUMNS:
        if name not in have:
            conn.execute(text(f"ALTER TABLE refunds ADD COLUMN {name} {ddl}"))
    _create(conn, V2_TABLES)


def _v3_growth(conn: Connection) -> None:
    """Issue 12: growth facts, active days, per-viewer growth rows, experiment exposures."""
    _create(conn, V3_TABLES)


def _v4_retention(conn: Connection) -> None:
    """M2 retention: ``profiles_base``, the fold of the log entries retention trimmed."""
    _create(conn, V4_TABLES)


def _v5_points_balances(conn: Connection) -> None:
    """M2 3/7: ``points_balances``, each user's balance per role, filled from the ledger."""
    _create(conn, V5_TABLES)
    conn.execute(text(
        "INSERT INTO points_balances (user_id, role, balance) "
        "SELECT user_id, role, SUM(delta) FROM points_ledger GROUP BY user_id, role"
    ))


def _v6_catalog(conn: Connection) -> None:
    """Issue 19: the catalogue of products with SKUs and its stock moves."""
    _create(conn, V6_TABLES)


def _v7_moderation(conn: Connection) -> None:
    """Issue 20: room moderation's audit log and viewers' reports."""
    _create(conn, V7_TABLES)


def _v9_earnings(conn: Connection) -> None:
    """Issue 20 part 4: the hosts' earnings ledger (gift accruals and their reversals)."""
    _create(conn, V9_TABLES)


def _v10_reach(conn: Connection) -> None:
    """Issue 20 part 2: the notification inbox, hosts' schedules and their subscribers, fan-out cursors."""
    _create(conn, V10_TABLES)


def _v12_order_lines(conn: Connection) -> None:
    """Issue 19 part 3: the lines of cart orders."""
    _create(conn, ("order_lines",))


def _v13_order_coupons(conn: Connection) -> None:
    """Issue 19 part 3: the coupons of cart orders (one platform + one shop at most), one
    row each (``orders.coupon_id`` keeps one id for old readers)."""
    _create(conn, ("order_coupons",))


def _v11_fulfilment(conn: Connection) -> None:
    """Issue 19 part 5: shipping addresses and shipments."""
    _create(conn, V11_TABLES)


STEPS: list[tuple[int, str, Step]] = [
    (
        1,
        "rooms, products, sales, orders + history, refunds, ledgers, applied events, coupons, lotteries",
        _v1,
    ),
    (2, "after-sales: refund columns, tickets, profiles, fan clubs, erasures, segments", _v2_aftersales),
    (3, "growth: facts, active days, viewers' growth rows, experiment exposures", _v3_growth),
    (4, "retention: profiles_base (the fold of the log entries retention trimmed)", _v4_retention),
    (5, "points_balances: each user's points balance per role, kept with the ledger", _v5_points_balances),
    (6, "catalogue: products with SKUs, their stock moves", _v6_catalog),
    (7, "moderation: the audit log of moderators' actions, viewers' reports", _v7_moderation),
    (9, "host earnings: the hosts' share of gift revenue, accruals and reversals", _v9_earnings),
    (10, "follower reach: notifications, schedules, schedule subscribers, fan-out cursors", _v10_reach),
    (11, "fulfilment: shipping addresses, shipments", _v11_fulfilment),
    (12, "cart orders: order_lines", _v12_order_lines),
    (13, "cart orders: order_coupons", _v13_order_coupons),
]
LATEST = max(v for v, _, _ in STEPS)

_PG_LOCK = 0x6C63_6462  # "lcdb": one upgrade at a time per database


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: int
    latest: int
    pending: list[tuple[int, str]]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest


def applied_versions(conn: Connection) -> set[int]:
    """The steps recorded in ``schema_version`` (empty when there is no such table)."""
    if not inspect(conn).has_table("schema_version"):
        return set()
    return {int(v) for (v,) in conn.execute(select(schema_version.c.version))}


def _current(applied: set[int]) -> int:
    """The highest known step below which every known step is applied; a recorded step this
    code does not know (a newer database) counts as it is, so that newer code is asked for.
    Step numbers are handed out ahead of landing, so a step may land after a higher one
    (10 before 8): a database that applied 10 then reports 7 until 8 is applied too."""
    cur = 0
    for v in sorted(v for v, _, _ in STEPS):
        if v not in applied:
            break
        cur = v
    newer = [v for v in applied if v > LATEST]
    return max(newer) if newer else cur


def current_version(conn: Connection) -> int:
    """The schema version of the database behind ``conn`` (0 when empty): see :func:`_current`."""
    return _current(applied_versions(conn))


def _upgrade(conn: Connection, target: int) -> int:
    _create(conn, ("schema_version",))
    applied = applied_versions(conn)
    for version, description, step in sorted(STEPS, key=lambda x: x[0]):
        if version not in applied and version <= target:  # a lower step that landed late too
            step(conn)
            conn.execute(
                schema_version.insert().values(
                    version=version, description=description, applied_ms=now_ms()
                )
            )
            applied.add(version)
    return _current({v for v in applied if v <= target} | {v for v in applied if v > LATEST})


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
            applied = await conn.run_sync(applied_versions)
    finally:
        await engine.dispose()
    return SchemaStatus(_current(applied), LATEST, [(v, d) for v, d, _ in sorted(STEPS, key=lambda x: x[0]) if v not in applied])
