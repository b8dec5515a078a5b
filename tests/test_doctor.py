"""``livecommerce doctor``: the verdicts (pure), then the real command as a subprocess against
real Redis, SQLite and PostgreSQL, a real gateway and a worker's metrics port, and the broken
cases a deployment meets: a wrong URL, a short or published secret, an old schema, a stalled
worker, a gateway whose clock is off."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from livecommerce import doctor
from livecommerce.config import Settings
from livecommerce.keys import Keys
from livecommerce.log_redis import RedisLog
from livecommerce.migrations import LATEST, upgrade
from livecommerce.ops_redis import OpsRedis
from tests.fixtures_gateway import GatewayFactory
from tests.test_worker_metrics import events
from workers.metrics import WorkerMetrics, serve

REPO = Path(__file__).resolve().parents[1]
GOOD_SECRET = secrets.token_hex(32)


# ---------------------------------------------------------------- the verdicts
@pytest.mark.parametrize(("secret", "says"), [
    ("", "not set"),
    ("dev-secret-change-me-0123456789abcdef", "published"),
    ("short-secret", "12 bytes"),
    ("a" * 48, "entropy"),
    ("password" * 5, "entropy"),
])
def test_weak_secrets_fail_with_the_way_to_make_one(secret: str, says: str) -> None:
    f = doctor.check_secret(secret)
    assert f.level == "fail" and says in f.message and "token_hex(32)" in f.fix


def test_random_secrets_pass() -> None:
    for _ in range(20):
        assert doctor.check_secret(secrets.token_hex(16)).level == "ok"  # the shortest random hex allowed
        assert doctor.check_secret(secrets.token_urlsafe(32)).level == "ok"


def test_redis_schema_cluster_and_clock_verdicts() -> None:
    assert doctor.check_redis_version("6.2.14").level == "fail"
    assert doctor.check_redis_version("7.0.15").level == "ok"
    assert doctor.check_redis_version("7.2.4-rc1").level == "ok"
    ok = {"cluster_state": "ok", "cluster_slots_assigned": "16384", "cluster_slots_fail": "0", "cluster_known_nodes": "6"}
    assert doctor.check_cluster(ok).level == "ok"
    assert doctor.check_cluster({**ok, "cluster_state": "fail", "cluster_slots_fail": "5461"}).level == "fail"
    assert doctor.check_schema(LATEST, LATEST).level == "ok"
    old = doctor.check_schema(LATEST - 2, LATEST)
    assert old.level == "fail" and "livecommerce db upgrade" in old.fix
    assert doctor.check_schema(LATEST + 1, LATEST).level == "fail"
    assert doctor.check_redis_persistence({"aof_enabled": "1", "maxmemory_policy": "noeviction"}).level == "ok"
    assert doctor.check_redis_persistence({"aof_enabled": "0", "maxmemory_policy": "noeviction"}).level == "warn"
    assert doctor.check_redis_persistence({"aof_enabled": "1", "maxmemory_policy": "allkeys-lru"}).level == "fail"
    skew, unc = doctor.skew_ms(1000.0, 1900.0, 1200.0)
    assert (skew, unc) == (800.0, 100.0)
    assert doctor.check_skew("clock.x", "x", skew, unc).level == "fail"  # 800 - 100 > 500
    assert doctor.check_skew("clock.x", "x", 550.0, 100.0).level == "ok"  # within the round trip's doubt
    assert doctor.check_group("gifts", "wallet", 0, None).level == "warn"
    assert doctor.check_group("gifts", "wallet", 20_000, 10).level == "warn"
    assert doctor.check_group("gifts", "wallet", 3, 10).level == "ok"


# ---------------------------------------------------------------- the command
def _env(tmp_path: Path, **lc: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_DATA_DIR=str(tmp_path / "data"), LC_LOG_JSON="0", **lc)
    return env


async def doctor_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``livecommerce doctor ARGS`` as a real process (asynchronously: the gateway and the
    metrics server of the test keep answering meanwhile)."""
    p = await asyncio.create_subprocess_exec("python", "-m", "livecommerce.cli", "doctor", *args, cwd=REPO, env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 60)
    assert p.returncode is not None
    return p.returncode, out.decode(), err.decode()


def line(out: str, check: str) -> str:
    found = [x for x in out.splitlines() if x[5:].startswith(check + ":")]
    assert found, f"no line for {check} in:\n{out}"
    return found[0]


async def test_a_healthy_deployment_passes_every_check(
    store_url: str, settings: Settings, redis: Any, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    await upgrade(store_url)
    log = RedisLog(redis, Keys(settings.key_prefix))
    await log.append_many(events(4))
    c = await log.consumer("gifts", "wallet", "w1")
    await c.ack(await c.fetch(max_events=10, timeout_ms=100))  # a group with a live member and no lag
    node = await gateway_factory()
    wm = WorkerMetrics()
    wm.loop("gifts", "wallet", "w1")
    runner = await serve(wm, "127.0.0.1", 0, stall_s=60)
    worker = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        env = _env(tmp_path, LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=store_url,
                   LC_SECRET=GOOD_SECRET)
        rc, out, err = await doctor_cli(env, "--gateway", node.url, "--worker", worker)
        assert rc == 0, out + err
        for check in ("secret", "redis", "redis.version", "clock.redis", "log", "log.group.gifts.wallet", "database",
                      "database.schema", f"gateway.{node.url[7:]}", f"clock.gateway.{node.url[7:]}", f"worker.{worker[7:]}"):
            assert line(out, check).startswith(("ok ", "WARN")), line(out, check)
        assert "lag 0" in line(out, "log.group.gifts.wallet")
        assert f"schema version {LATEST} (latest)" in line(out, "database.schema")
        assert "FAIL" not in out

        rc, out, _ = await doctor_cli(env, "--json", "--gateway", node.url)
        report = json.loads(out)
        assert rc == 0 and report["ok"] is True
        assert {f["check"] for f in report["findings"]} >= {"secret", "database.schema", f"gateway.{node.url[7:]}"}
        assert all(set(f) == {"check", "level", "message", "fix"} for f in report["findings"])

        # the worker's loop stalls: listed, it fails the run with what to look at
        wm.loops[("gifts", "wallet", "w1")].progress_at -= 120
        rc, out, _ = await doctor_cli(env, "--worker", worker)
        assert rc == 1
        assert line(out, f"worker.{worker[7:]}").startswith("FAIL") and "gifts/wallet stalled" in out
    finally:
        await runner.cleanup()


async def test_a_wrong_redis_url_and_a_short_secret_fail_with_their_fixes(tmp_path: Path, store_url: str) -> None:
    await upgrade(store_url)
    env = _env(tmp_path, LC_REDIS_URL="redis://127.0.0.1:1/0", LC_DATABASE_URL=store_url, LC_SECRET="too-short")
    rc, out, err = await doctor_cli(env)
    assert rc == 1, out + err
    assert line(out, "secret").startswith("FAIL") and "9 bytes" in out and "token_hex(32)" in line(out, "secret")
    redis_line = line(out, "redis")
    assert redis_line.startswith("FAIL") and "does not answer" in redis_line and "-> start Redis or fix LC_REDIS_URL" in redis_line
    assert line(out, "database.schema").startswith("ok")  # the rest is still checked
    assert err == "" and "Traceback" not in out


async def test_the_published_dev_secret_and_an_unset_redis_fail(tmp_path: Path) -> None:
    env = _env(tmp_path, LC_SECRET="dev-secret-change-me-0123456789abcdef",
               LC_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/none.db")
    rc, out, _ = await doctor_cli(env)
    assert rc == 1
    assert "published" in line(out, "secret")
    assert "LC_REDIS_URL is not set" in line(out, "redis")
    assert line(out, "database").startswith("FAIL") and "livecommerce db upgrade" in line(out, "database")


@pytest.mark.postgres
async def test_an_old_schema_and_an_unreachable_database_fail(settings: Settings, store_url: str, tmp_path: Path) -> None:
    await upgrade(store_url, target=LATEST - 2)
    env = _env(tmp_path, LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=store_url,
               LC_SECRET=GOOD_SECRET)
    rc, out, _ = await doctor_cli(env)
    assert rc == 1
    schema = line(out, "database.schema")
    assert schema.startswith("FAIL") and f"schema version {LATEST - 2}, the code's latest is {LATEST}" in schema
    assert "-> run `livecommerce db upgrade`" in schema

    wrong = "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    rc, out, _ = await doctor_cli({**env, "LC_DATABASE_URL": wrong})
    assert rc == 1
    db = line(out, "database")
    assert db.startswith("FAIL") and "unreachable" in db and "fix LC_DATABASE_URL" in db


async def test_a_gateway_whose_clock_is_ahead_fails_the_clock_check(settings: Settings, redis: Any, tmp_path: Path,
                                                                   store_url: str) -> None:
    await upgrade(store_url)
    ops = OpsRedis(redis, Keys(settings.key_prefix))
    now = int(time.time() * 1000)
    await ops.write_node("gw-fast", {"ts": now + 5_000}, [], now)  # its clock runs 5 s ahead
    await ops.write_node("gw-good", {"ts": now - 300}, [], now)
    env = _env(tmp_path, LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=store_url,
               LC_SECRET=GOOD_SECRET)
    rc, out, _ = await doctor_cli(env)
    assert rc == 1
    fast = line(out, "clock.node.gw-fast")
    assert fast.startswith("FAIL") and "ahead of" in fast and "NTP" in fast
    assert line(out, "clock.node.gw-good").startswith("ok")


async def test_a_gateway_that_does_not_answer_fails(settings: Settings, tmp_path: Path, store_url: str) -> None:
    await upgrade(store_url)
    env = _env(tmp_path, LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=store_url,
               LC_SECRET=GOOD_SECRET)
    rc, out, _ = await doctor_cli(env, "--gateway", "http://127.0.0.1:1", "--timeout", "1")
    assert rc == 1
    assert line(out, "gateway.127.0.0.1:1").startswith("FAIL") and "does not answer" in out


async def test_help_explains_each_check(tmp_path: Path) -> None:
    p = await asyncio.create_subprocess_exec("python", "-m", "livecommerce.cli", "doctor", "--help", cwd=REPO,
                                             env=_env(tmp_path), stdout=asyncio.subprocess.PIPE)
    out = (await p.communicate())[0].decode()
    assert p.returncode == 0
    for word in ("LC_SECRET", "Redis TIME", "schema version", "Kafka", "--gateway", "--worker", "--json", "Exit code 1"):
        assert word in out, word


@pytest.mark.kafka
async def test_kafka_topics_are_checked_against_the_partitions_the_settings_expect(
    kafka_bootstrap: str, settings: Settings, store_url: str, tmp_path: Path
) -> None:
    from livecommerce.log_kafka import KafkaLog

    await upgrade(store_url)
    log = KafkaLog(kafka_bootstrap, prefix=settings.key_prefix, partitions=4, idempotent=False)
    try:
        await log.ensure_topic("orders")
    finally:
        await log.close()
    env = _env(tmp_path, LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=store_url,
               LC_SECRET=GOOD_SECRET, LC_KAFKA_BOOTSTRAP=kafka_bootstrap, LC_KAFKA_PARTITIONS="4")
    rc, out, _ = await doctor_cli(env)
    assert rc == 0, out
    assert line(out, "log").startswith("ok") and "Kafka" in line(out, "log")
    assert line(out, "log.topic.orders") == "ok   log.topic.orders: 4 partitions"
    assert line(out, "log.topic.gifts").startswith("WARN") and "does not exist yet" in out
    rc, out, _ = await doctor_cli({**env, "LC_KAFKA_PARTITIONS": "8"})
    assert rc == 1 and line(out, "log.topic.orders").startswith("FAIL") and "fewer than LC_KAFKA_PARTITIONS=8" in out
    rc, out, _ = await doctor_cli({**env, "LC_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "--timeout", "1")
    assert rc == 1 and line(out, "log").startswith("FAIL") and "fix LC_KAFKA_BOOTSTRAP" in line(out, "log")


@pytest.mark.cluster
async def test_a_redis_cluster_is_checked_and_a_plain_url_to_a_cluster_node_fails(
    redis_cluster_url: str, settings: Settings, tmp_path: Path, store_url: str
) -> None:
    await upgrade(store_url)
    env = _env(tmp_path, LC_REDIS_URL=redis_cluster_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=store_url,
               LC_SECRET=GOOD_SECRET)
    rc, out, err = await doctor_cli(env)
    assert line(out, "redis").startswith("ok"), out + err
    assert line(out, "redis.cluster").startswith("ok") and "16384 slots" in line(out, "redis.cluster")
    assert line(out, "clock.redis").startswith("ok")
    first = redis_cluster_url.split("://", 1)[1].split(",")[0]
    rc, out, _ = await doctor_cli({**env, "LC_REDIS_URL": f"redis://{first}/0"})
    assert rc == 1 and "use redis+cluster://" in line(out, "redis.cluster")
