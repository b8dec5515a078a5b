"""Connecting to SQL: the async engine for a database URL, SQLite's write transactions, and
the one place driver errors become :class:`~livecommerce.errors.Unavailable` or
:class:`~livecommerce.errors.Conflict` (:func:`guarded`), as :mod:`livecommerce.redis_conn`
is for Redis. Every SQL adapter (``store_sql``, ``migrations``, the ``*_sql`` modules) opens
its engine here.

URLs: ``sqlite+aiosqlite:///path/to/file.db`` or ``postgresql+asyncpg://user@host/db``.
A ``?schema=NAME`` query parameter on a PostgreSQL URL puts every table in that schema
(through the connections' ``search_path``): tenants and tests share one database that way.

* SQLite runs in WAL mode with a busy timeout (readers never block the writer); every write
  transaction started through :func:`writer` begins with ``BEGIN IMMEDIATE``, so writers
  queue instead of failing with "database is locked" when a read transaction tries to
  upgrade. The WAL is capped at ``SQLITE_WAL_LIMIT_BYTES`` after each checkpoint that
  resets it.
* PostgreSQL: a pool of 10 (+20 overflow) with pre-ping, a 10 s connect timeout.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy.exc as sa_exc
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .errors import ConfigError, Conflict, Unavailable

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
