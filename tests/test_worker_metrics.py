"""A worker's /metrics and /healthz: the consumer loop's counters, lag, commit age and health,
read through a real Prometheus text parser, on real Redis; and the real ``livecommerce worker
--metrics-port`` process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from livecommerce.config import Settings
from livecommerce.errors import Unavailable
from livecommerce.keys import Keys
from livecommerce.log import LagReporter, LogEvent, new_event
from livecommerce.log_redis import RedisLog
from livecommerce.migrations import upgrade
from tests.waiting import wait_until
from workers.metrics import WorkerMetrics, serve
from workers.runner import run_consumer

REPO = Path(__file__).resolve().parents[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, await r.text()


def events(n: int, type_: str = "test.noop") -> list[LogEvent]:
    return [new_event("gifts", f"k{i}", type_, {"i": i}, None, None) for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_redis_consumer_reports_undelivered_plus_pending_as_lag(redis: Any, keys: Keys) -> None:
    log = RedisLog(redis, keys, partitions=2)
    await log.append_many(events(30))
    c = await log.consumer("gifts", "g", "m1")
    assert isinstance(c, LagReporter)
    before = await c.lag()
    assert set(before) == {0, 1} and sum(before.values()) == 30
    got = await c.fetch(max_events=10, timeout_ms=100)
    assert sum((await c.lag()).values()) == 30  # delivered, not acked: still lag
    await c.ack(got)
    assert sum((await c.lag()).values()) == 30 - len(got)
    other = await log.consumer("gifts", "other", "m1")  # another group has its own lag
    assert sum((await other.lag()).values()) == 30


async def test_the_loop_exports_events_batches_lag_and_health_through_http(redis: Any, keys: Keys) -> None:
    log = RedisLog(redis, keys)
    await log.append_many(events(25))
    wm = WorkerMetrics()
    gate = asyncio.Event()
    gate.set()
    seen: list[str] = []

    async def handle(batch: list[LogEvent]) -> None:
        await gate.wait()
        seen.extend(e.id for e in batch)

    stop = asyncio.Event()
    runner = await serve(wm, "127.0.0.1", 0, stall_s=0.5)
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    task = asyncio.create_task(run_consumer(log, "gifts", "g", "m1", handle, stop=stop, fetch_timeout_ms=50, metrics=wm))
    try:
        await wait_until(lambda: len(seen) == 25, what="25 events handled")

        async def scraped() -> str:
            status, text = await get(base + "/metrics")
            assert status == 200
            assert value(text, "lc_worker_events_total", topic="gifts", group="g") == 25, "events counted"
            assert value(text, "lc_worker_consumer_lag", topic="gifts", group="g", partition="0") == 0, "lag polled"
            return text

        text = await wait_until(scraped, what="the scrape showing 25 events and no lag")
        assert value(text, "lc_worker_batch_size_count", topic="gifts", group="g") == 1  # one batch of 25
        assert value(text, "lc_worker_batch_size_sum", topic="gifts", group="g") == 25
        assert value(text, "lc_worker_assigned_partitions", topic="gifts", group="g") == 1
        assert value(text, "lc_worker_loop_up", topic="gifts", group="g") == 1
        assert value(text, "lc_worker_handler_errors_total", topic="gifts", group="g") == 0
        age = value(text, "lc_worker_last_commit_age_seconds", topic="gifts", group="g")
        assert age is not None and 0 <= age < 0.5
        for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds"):
            assert value(text, name) is not None and value(text, name) > 0, name  # type: ignore[operator]
        status, body = await get(base + "/healthz")
        assert status == 200 and '"state": "ok"' in body

        # a handler stuck on a batch: no commit within the bound -> 503, naming the loop
        gate.clear()
        await log.append_many(events(3))
        status, body = await wait_until(lambda: get(base + "/healthz"), until=lambda r: r[0] == 503, what="healthz 503")
        assert '"state": "stalled"' in body and '"topic": "gifts"' in body
        gate.set()
        await wait_until(lambda: get(base + "/healthz"), until=lambda r: r[0] == 200, what="healthz 200 again")
        await wait_until(lambda: len(seen) == 28, what="the 3 later events")
    finally:
        stop.set()
        await task
        await runner.cleanup()
    assert wm.loops == {}  # a stopped loop is forgotten: it does not hold /healthz at 503


async def test_handler_errors_are_counted_and_a_loop_that_dies_makes_healthz_503(redis: Any, keys: Keys) -> None:
    log = RedisLog(redis, keys, claim_idle_ms=100)
    await log.append_many(events(2))
    wm = WorkerMetrics()
    fails = 0

    async def handle(batch: list[LogEvent]) -> None:
        nonlocal fails
        if fails < 2:
            fails += 1
            raise RuntimeError("boom")

    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(log, "gifts", "g", "m1", handle, stop=stop, fetch_timeout_ms=50,
                                            backoff_first_s=0.01, metrics=wm))
    await wait_until(lambda: wm.events.labels("gifts", "g")._value.get() == 2, what="the events handled after two failures")
    assert wm.errors.labels("gifts", "g")._value.get() == 2
    stop.set()
    await task

    class Broken(RedisLog):
        async def consumer(self, topic: str, group: str, name: str) -> Any:
            raise KeyError("not a log error")  # neither Unavailable (retried) nor a stop

    with pytest.raises(KeyError):
        await run_consumer(Broken(redis, keys), "gifts", "g", "m2", handle, stop=asyncio.Event(), metrics=wm)
    ok, loops = wm.health(60.0)
    assert not ok and loops[0]["state"] == "failed" and "not a log error" in str(loops[0]["error"])


async def test_lag_that_cannot_be_read_is_logged_and_the_loop_goes_on(redis: Any, keys: Keys) -> None:
    class NoLag(RedisLog):
        async def consumer(self, topic: str, group: str, name: str) -> Any:
            c = await super().consumer(topic, group, name)

            async def lag() -> dict[int, int]:
                raise Unavailable("redis is away")

            c.lag = lag  # type: ignore[method-assign]
            return c

    log = NoLag(redis, keys)
    await log.append_many(events(5))
    wm = WorkerMetrics()
    stop = asyncio.Event()

    async def handle(batch: list[LogEvent]) -> None:
        return None

    task = asyncio.create_task(run_consumer(log, "gifts", "g", "m1", handle, stop=stop, fetch_timeout_ms=50, metrics=wm))
    await wait_until(lambda: wm.events.labels("gifts", "g")._value.get() == 5, what="5 events")
    assert wm.health(60.0)[0]
    stop.set()
    assert await task == 5


def start_worker(name: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``livecommerce worker NAME --metrics-port PORT`` as a real process."""
    return subprocess.Popen([sys.executable, "-m", "livecommerce.cli", "worker", name, "--metrics-port", str(port)],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _env(settings: Settings, db: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=db, LC_LOG_JSON="0",
               LC_LOG_LEVEL="WARNING", LC_SECRET=settings.secret, LC_NODE_ID="w1")
    return env


async def test_the_worker_process_serves_metrics_and_healthz_on_its_port(settings: Settings, redis: Any, tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path}/w.db"
    await upgrade(db)
    log = RedisLog(redis, Keys(settings.key_prefix))
    await log.append_many(events(40))
    port = free_port()
    proc = start_worker("wallet", port, _env(settings, db))
    try:
        async def scraped() -> str:
            assert proc.poll() is None, f"the worker exited with {proc.returncode}"
            try:
                _, text = await get(f"http://127.0.0.1:{port}/metrics")
            except aiohttp.ClientConnectionError as exc:
                raise AssertionError(f"no answer on {port}: {exc}") from exc
            assert value(text, "lc_worker_events_total", topic="gifts", group="wallet") == 40, "40 events"
            return text

        text = await wait_until(scraped, timeout=30, what="the worker's /metrics with 40 events")
        assert value(text, "process_open_fds") is not None
        assert value(text, "lc_worker_consumer_lag", topic="gifts", group="wallet", partition="0") is not None
        status, body = await get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200, body
        assert '"group": "wallet"' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, proc.stderr.read().decode() if proc.stderr else ""


def test_a_metrics_port_in_use_is_a_one_line_error(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "livecommerce.cli", "worker", "wallet", "--metrics-port", str(port)],
                           env=_env(settings, f"sqlite+aiosqlite:///{tmp_path}/w.db"), cwd=REPO, capture_output=True,
                           text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: worker metrics port") and "LC_WORKER_METRICS_PORT" in lines[-1], r.stderr


def test_worker_help_explains_the_metrics_port() -> None:
    r = subprocess.run([sys.executable, "-m", "livecommerce.cli", "worker", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and "--metrics-port" in r.stdout and "/healthz" in r.stdout


def test_the_settings_read_the_metrics_port() -> None:
    s = Settings.from_env({"LC_WORKER_METRICS_PORT": "9464", "LC_WORKER_HEALTH_STALL_S": "30"})
    assert (s.worker_metrics_port, s.worker_health_stall_s) == (9464, 30.0)
