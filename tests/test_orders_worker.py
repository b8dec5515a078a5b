"""The real `livecommerce worker orders` process, killed with SIGKILL mid-stream, and the
inventory check that finds and repairs drift between Redis holds and SQL orders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from livecommerce.checkout import Checkout
from livecommerce.flash_sale import Sale
from livecommerce.log_open import open_log
from livecommerce.migrations import upgrade
from livecommerce.store_sql import SqlStore
from tests.waiting import wait_until
from workers.inventory import reconcile
from workers.orders import OrdersWorker

N = 1500


def now_ms() -> int:
    return int(time.time() * 1000)


def reserved_event(i: int) -> dict:
    return {
        "order_id": f"kill.{i:05d}", "sale_id": "kill", "room_id": "room", "user_id": f"u{i}", "qty": 1,
        "unit_price": 100, "pay_by_ms": now_ms() + 600_000, "payment_window_s": 600, "request_id": f"r{i}",
    }


async def count_orders(url: str) -> int:
    store = SqlStore(url)
    try:
        return len(await store.list_orders(sale_id="kill", limit=10 * N))
    finally:
        await store.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["redis", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_orders_worker_killed_mid_stream_loses_and_duplicates_nothing(backend, settings, redis, tmp_path: Path, request):
    db = f"sqlite+aiosqlite:///{tmp_path}/kill.db"
    await upgrade(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=db, LC_LOG_JSON="0", LC_SECRET=settings.secret,
               LC_LOG_CLAIM_IDLE_MS="1000", LC_KAFKA_SESSION_TIMEOUT_MS="2000", LC_KAFKA_IDEMPOTENT="0",
               LC_KAFKA_PARTITIONS="3",
               LC_WORKER_BATCH="10")  # small batches, so the kill lands mid-stream (1,000 a batch drains it in well under a second)
    s = settings.replace(database_url=db, log_claim_idle_ms=1000, kafka_session_timeout_ms=2000, kafka_idempotent=False, kafka_partitions=3)
    if backend == "kafka":
        boot = request.getfixturevalue("kafka_bootstrap")
        env["LC_KAFKA_BOOTSTRAP"] = boot
        s = s.replace(kafka_bootstrap=boot)
    durable = open_log(s, redis)
    for i in range(N):
        await durable.append("orders", f"kill.{i:05d}", "order.reserved", reserved_event(i), event_id=f"kill.{i:05d}:reserved")
    await durable.close()
    exe = str(Path(sys.executable).with_name("livecommerce"))

    def start(node: str) -> subprocess.Popen:
        return subprocess.Popen([exe, "worker", "orders", "--node-id", node], env={**env, "LC_NODE_ID": node},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    proc = start("w1")
    try:
        seen = await wait_until(lambda: count_orders(db), until=lambda n: n >= 50, timeout=60, what="50 orders in SQL")
        assert 0 < seen < N, f"the worker must be killed mid-stream (saw {seen})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = await count_orders(db)
        proc = start("w2")  # another member of the group takes over (claim / rebalance)
        await wait_until(lambda: count_orders(db), until=lambda n: n >= N, timeout=90, interval=0.25, what=f"all {N} orders in SQL")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    store = SqlStore(db)
    try:
        orders = await store.list_orders(sale_id="kill", limit=10 * N)
        ids = [o.id for o in orders]
        assert at_kill < N
        assert len(ids) == N and len(set(ids)) == N, (len(ids), len(set(ids)))
        for oid in ids[:: N // 30]:
            assert [h.to_state for h in await store.order_history(oid)] == ["reserved"]
    finally:
        await store.close()


async def test_inventory_finds_and_repairs_orders_sql_never_heard_of(settings, redis, keys, store_url):
    s = settings.replace(database_url=store_url)
    await upgrade(store_url)
    durable = open_log(s, redis)
    checkout = Checkout(redis, keys, durable)
    t0 = now_ms()
    await checkout.create_sale(Sale("inv", "room", "p", 250, 20, 5, t0 - 1000, t0 + 600_000))
    await checkout.sales.start("inv", t0)
    # three orders through the normal path, two whose log append was "lost"
    normal = [await checkout.buy(user=f"n{i}", sale_id="inv", qty=1, request_id=f"n{i}", now_ms=now_ms()) for i in range(3)]
    lost = [await checkout.sales.reserve("inv", f"l{i}", 2, f"l{i}", now_ms(), f"inv.lost{i}") for i in range(2)]
    await checkout.sales.mark_paid("inv", lost[0].order_id, now_ms())  # paid in Redis, unknown to SQL
    await checkout.pay(order_id=normal[0].order_id, user=None, now_ms=now_ms())
    worker = OrdersWorker(s, redis=redis, durable=durable)
    try:
        await worker.drain()
        before = await reconcile(checkout, worker.store, "inv", repair=False, now_ms=now_ms())
        assert before.conserved
        assert sorted(d["order_id"] for d in before.drift) == ["inv.lost0", "inv.lost1"]
        fixed = await reconcile(checkout, worker.store, "inv", repair=True, now_ms=now_ms())
        assert fixed.repaired == 2
        await worker.drain()
        after = await reconcile(checkout, worker.store, "inv", repair=True, now_ms=now_ms())
        assert after.drift == [] and after.repaired == 0
        sql = await worker.store.sale_stats("inv")
        st = await checkout.sales.stats("inv")
        assert sql.units.get("paid", 0) == st.paid == 3 and sql.units.get("reserved", 0) == st.reserved == 4
    finally:
        await worker.close()
        await durable.close()
