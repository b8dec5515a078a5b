"""The real ``livecommerce worker reach`` process, killed with SIGKILL while a fan-out page's
transaction is open, then replaced by another member of the group: every follower has exactly
one inbox row, on SQLite and PostgreSQL.

As in ``tests/test_workers_killed.py``, "while a transaction is open" is observed: the test
kills the worker the moment the database says it holds its write transaction, after at least
one page was committed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from livecommerce import reach_sql
from livecommerce.config import Settings
from livecommerce.keys import Keys
from livecommerce.log_redis import RedisLog
from livecommerce.migrations import upgrade
from livecommerce.reach import HOST_LIVE, TOPIC, live_event, live_event_id
from livecommerce.schema import fan_members, notifications
from livecommerce.store_sql import SqlStore
from tests.test_workers_killed import Db, stop
from tests.waiting import wait_until

NOW = 1_700_000_000_000
FOLLOWERS = 60_000


@pytest.mark.slow
async def test_a_reach_worker_killed_inside_a_page_leaves_every_follower_exactly_one_row(
        store_url: str, settings: Settings, redis: Any) -> None:
    await upgrade(store_url)
    store = SqlStore(store_url)
    users = [f"u{i:06d}" for i in range(FOLLOWERS)]
    async with store.write() as tx:
        for i in range(0, FOLLOWERS, 5000):
            await tx.conn.execute(fan_members.insert(), [
                {"host_id": "h1", "user_id": u, "following": True, "member": False, "intimacy": 0, "updated_ms": NOW}
                for u in users[i:i + 5000]])
    eid = live_event_id("show", NOW)
    log = RedisLog(redis, Keys(settings.key_prefix))
    await log.append(TOPIC, "h1", HOST_LIVE, live_event("h1", "show", "Tea", NOW), event_id=eid)
    await log.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=store_url, LC_LOG_JSON="0",
               LC_LOG_LEVEL="WARNING", LC_SECRET=settings.secret, LC_LOG_CLAIM_IDLE_MS="1000")
    db = Db(store_url)
    await db.open()
    proc = start("reach", env, "k1")
    try:
        async def committed() -> int:
            assert proc.poll() is None, f"the worker exited with {proc.returncode}"
            st = await reach_sql.fanout_state(store, eid)
            return 0 if st is None else int(st["written"])

        async def inside_a_page() -> bool:
            assert proc.poll() is None, f"the worker exited with {proc.returncode}"
            return await db.in_transaction(proc.pid)

        await wait_until(committed, timeout=60, interval=0.005, what="the first committed page")
        await wait_until(inside_a_page, timeout=60, interval=0.001, what="the worker inside a later page's transaction")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        at_kill = await committed_rows(store, eid)
        assert 0 < at_kill < FOLLOWERS, f"the kill must land mid-fan-out ({at_kill} of {FOLLOWERS})"
        proc = start("reach", env, "k2")  # takes the event over once k1's claim is idle
        await wait_until(lambda: reach_sql.fanout_state(store, eid), until=lambda st: st is not None and st["done_ms"],
                         timeout=120, interval=0.2, what="the fan-out finished after the kill")
    finally:
        stop(proc)
        await db.close()
    try:
        assert await reach_sql.count_rows(store, eid) == (FOLLOWERS, FOLLOWERS)
        st = await reach_sql.fanout_state(store, eid)
        assert st is not None and st["written"] == FOLLOWERS and st["after_user"] == users[-1]
    finally:
        await store.close()


def start(worker: str, env: dict[str, str], node: str) -> subprocess.Popen[bytes]:
    """``livecommerce worker`` from this checkout (the installed command may import another)."""
    root = str(Path(__file__).resolve().parents[1])
    return subprocess.Popen([sys.executable, "-m", "livecommerce.cli", "worker", worker],
                            env={**env, "LC_NODE_ID": node, "PYTHONPATH": root}, cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def committed_rows(store: SqlStore, eid: str) -> int:
    async with store.read() as tx:
        return int((await tx.conn.execute(
            select(func.count()).select_from(notifications).where(notifications.c.id == eid))).scalar_one())
