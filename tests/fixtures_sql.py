"""SQL fixtures: one ``store_url`` per backend, isolated per test, and an upgraded ``store``.

* ``sqlite``: a fresh file under the test's ``tmp_path``.
* ``postgresql``: the server at ``LC_TEST_DATABASE_URL`` (e.g.
  ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). Unset: those cases skip with the
  reason. Set but not answering: they fail (CI sets it and must not silently skip). Each test
  gets a fresh schema ``lct_<random>`` (the URL carries ``?schema=``, which the store turns
  into the connections' ``search_path``), dropped with CASCADE afterwards.

Workers and gateway tests can pass ``store_url`` as ``Settings.database_url``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from livecommerce import migrations
from livecommerce.store_sql import SqlStore

PG_ENV = "LC_TEST_DATABASE_URL"


def _asyncpg_dsn(url: str) -> str:
    u = make_url(url).set(drivername="postgresql").difference_update_query(["schema"])
    return u.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store_url(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> AsyncIterator[str]:
    """A database URL with an empty database (no schema yet): SQLite file or PG schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/lc.db"
        return
    base = os.environ.get(PG_ENV, "")
    if not base:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL cases skipped")
    dsn = _asyncpg_dsn(base)
    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(f"{PG_ENV}={base} is set but PostgreSQL does not answer: {exc!r}")
    schema = f"lct_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}schema={schema}"
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    """An ``SqlStore`` on an upgraded schema, closed after the test."""
    await migrations.upgrade(store_url)
    s = SqlStore(store_url)
    yield s
    await s.close()
