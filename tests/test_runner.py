"""``workers.runner.run_consumer``: drain mode, failures, stop, back-off, and crash recovery.

The crash tests run a real worker process (``tests/log_worker_proc.py``), kill it with
SIGKILL after it stored a batch's effects in SQLite but before it acked, restart a consumer
and check that every event was applied exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from livecommerce.errors import Unavailable
from livecommerce.keys import Keys
from livecommerce.log import Log, LogEvent, MemoryLog
from livecommerce.log_redis import RedisLog
from tests.log_worker_proc import GROUP, TOPIC, open_db, open_test_log, store_handler
from tests.waiting import wait_until
from workers.runner import BatchFailed, apply_halving, run_consumer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["memory", "redis"])
async def log(request: pytest.FixtureRequest, redis: aioredis.Redis, prefix: str) -> AsyncIterator[Log]:
    lg: Log = MemoryLog(partitions=3, claim_idle_ms=300) if request.param == "memory" else RedisLog(
        redis, Keys(prefix), partitions=3, claim_idle_ms=300
    )
    yield lg
    await lg.close()


async def append_many(log: Log, n: int) -> list[str]:
    return [await log.append(TOPIC, f"o{i % 7}", "order.reserved", {"i": i}) for i in range(n)]


class Recorder:
    """A handler keeping what it saw; optionally failing on chosen calls."""

    def __init__(self, fail_on: set[int] | None = None, exc: Exception | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on or set()
        self.exc = exc or RuntimeError("handler bug")

    async def __call__(self, events: list[LogEvent]) -> None:
        self.calls.append([e.id for e in events])
        if len(self.calls) in self.fail_on:
            raise self.exc

    @property
    def seen(self) -> list[str]:
        return [i for call in self.calls for i in call]


async def test_burst_drains_what_is_there_and_returns_the_count(log: Log) -> None:
    appended = await append_many(log, 23)
    rec = Recorder()
    assert await run_consumer(log, TOPIC, GROUP, "w1", rec, burst=True, batch=5, fetch_timeout_ms=200) == 23
    assert sorted(rec.seen) == sorted(appended)
    assert all(len(c) <= 5 for c in rec.calls)
    assert await run_consumer(log, TOPIC, GROUP, "w1", Recorder(), burst=True, fetch_timeout_ms=200) == 0


async def test_a_handler_exception_leaves_the_batch_unacked_so_it_comes_back(log: Log) -> None:
    appended = await append_many(log, 12)
    failing = Recorder(fail_on={1})
    with pytest.raises(RuntimeError, match="handler bug"):
        await run_consumer(log, TOPIC, GROUP, "w1", failing, burst=True, batch=4, fetch_timeout_ms=200)
    rec = Recorder()  # the worker, restarted
    assert await run_consumer(log, TOPIC, GROUP, "w1", rec, burst=True, batch=4, fetch_timeout_ms=200) == 12
    assert sorted(rec.seen) == sorted(appended)
    assert set(failing.calls[0]) <= set(rec.seen)


async def test_a_long_running_loop_retries_a_failed_batch(log: Log, caplog: pytest.LogCaptureFixture) -> None:
    appended = await append_many(log, 8)
    stop = asyncio.Event()

    class StopWhenDone(Recorder):
        async def __call__(self, events: list[LogEvent]) -> None:
            await super().__call__(events)
            if set(appended) <= set(self.seen[len(self.calls[0]):]):
                stop.set()

    rec = StopWhenDone(fail_on={1})
    caplog.set_level(logging.WARNING, logger="livecommerce.workers.runner")
    handled = await asyncio.wait_for(
        run_consumer(log, TOPIC, GROUP, "w1", rec, stop=stop, batch=3, fetch_timeout_ms=200, backoff_first_s=0.01),
        10,
    )
    assert handled == 8
    assert rec.calls[1][: len(rec.calls[0])] == rec.calls[0]  # the failed batch came back first
    assert [r.msg for r in caplog.records if r.msg == "worker.handler_failed"] == ["worker.handler_failed"]


async def test_stop_finishes_the_current_batch_then_returns(log: Log) -> None:
    await append_many(log, 10)
    stop = asyncio.Event()

    async def handle(events: list[LogEvent]) -> None:
        stop.set()  # asked to stop while a batch is in hand
        await asyncio.sleep(0.05)  # the batch takes a while: the stop arrives in the middle of it

    assert await run_consumer(log, TOPIC, GROUP, "w1", handle, stop=stop, batch=4) == 4
    assert await run_consumer(log, TOPIC, GROUP, "w1", Recorder(), burst=True, fetch_timeout_ms=200) == 6


# ---------------------------------------------------------------- prefetch, halving, partial batches
async def test_with_prefetch_a_burst_drains_everything_once_in_batches(log: Log) -> None:
    appended = await append_many(log, 23)
    rec = Recorder()
    assert await run_consumer(log, TOPIC, GROUP, "w1", rec, burst=True, batch=5, prefetch=True, fetch_timeout_ms=200) == 23
    assert sorted(rec.seen) == sorted(appended) and all(len(c) <= 5 for c in rec.calls)
    assert await run_consumer(log, TOPIC, GROUP, "w1", Recorder(), burst=True, prefetch=True, fetch_timeout_ms=200) == 0


async def test_with_prefetch_a_failed_batch_comes_back_first_and_the_one_fetched_ahead_after_it(log: Log) -> None:
    appended = await append_many(log, 12)
    stop = asyncio.Event()

    class StopWhenDone(Recorder):
        async def __call__(self, events: list[LogEvent]) -> None:
            await super().__call__(events)
            if set(appended) <= set(self.seen[len(self.calls[0]):]):
                stop.set()

    rec = StopWhenDone(fail_on={1})
    handled = await asyncio.wait_for(run_consumer(log, TOPIC, GROUP, "w1", rec, stop=stop, batch=4, prefetch=True,
                                                  fetch_timeout_ms=200, backoff_first_s=0.01), 10)
    assert handled == 12
    assert rec.calls[1] == rec.calls[0]  # the failed batch came back first, whole
    assert sorted(rec.seen[4:]) == sorted(appended)  # and then the rest, each once (the one fetched ahead was given back)


@pytest.mark.kafka
async def test_with_prefetch_on_kafka_a_failed_batch_and_the_one_fetched_ahead_both_come_back(
    kafka_bootstrap: str, prefix: str
) -> None:
    """Kafka rewinds a partition to the first offset given back: the failed batch and the one
    fetched ahead go back in one nack, or the second seek would skip the first."""
    log = open_test_log("kafka", kafka_bootstrap, prefix)
    try:
        appended = await append_many(log, 40)
        stop = asyncio.Event()

        class StopWhenDone(Recorder):
            async def __call__(self, events: list[LogEvent]) -> None:
                await super().__call__(events)
                if set(appended) <= set(self.seen[len(self.calls[0]):]):
                    stop.set()

        rec = StopWhenDone(fail_on={1, 3})
        await asyncio.wait_for(run_consumer(log, TOPIC, GROUP, "w1", rec, stop=stop, batch=5, prefetch=True, fetch_timeout_ms=300,
                                            backoff_first_s=0.01), 60)
        assert set(appended) <= set(rec.seen[len(rec.calls[0]):])
        again = Recorder()  # restarted: what was acked stays acked, nothing was skipped
        await run_consumer(log, TOPIC, GROUP, "w2", again, burst=True, fetch_timeout_ms=1000)
        assert set(again.seen) <= set(appended)
    finally:
        await log.close()


async def test_with_prefetch_stop_hands_the_batch_fetched_ahead_back_to_the_group(log: Log) -> None:
    await append_many(log, 10)
    stop = asyncio.Event()

    async def handle(events: list[LogEvent]) -> None:
        stop.set()
        await asyncio.sleep(0.05)  # the next batch is fetched meanwhile

    assert await run_consumer(log, TOPIC, GROUP, "w1", handle, stop=stop, batch=4, prefetch=True) == 4
    rec = Recorder()
    assert await run_consumer(log, TOPIC, GROUP, "w1", rec, burst=True, fetch_timeout_ms=200) == 6
    assert len(set(rec.seen)) == 6


async def test_a_partly_applied_batch_acks_what_was_applied_and_gives_back_only_what_failed(log: Log) -> None:
    appended = await append_many(log, 8)
    bad = appended[2]
    calls: list[list[str]] = []

    async def handle(events: list[LogEvent]) -> None:
        calls.append([e.id for e in events])
        if bad in calls[-1]:
            raise BatchFailed({e.id for e in events if e.id != bad}, [bad], ValueError("poison"))

    with pytest.raises(ValueError, match="poison"):  # a burst re-raises the cause
        await run_consumer(log, TOPIC, GROUP, "w1", handle, burst=True, batch=8, fetch_timeout_ms=200)
    rec = Recorder()  # the worker, restarted: only the bad event comes back
    assert await run_consumer(log, TOPIC, GROUP, "w1", rec, burst=True, batch=8, fetch_timeout_ms=200) == 1
    assert rec.seen == [bad]


def _event(i: int) -> LogEvent:
    return LogEvent(f"e{i}", TOPIC, "k", "order.paid", {"i": i}, 0)


async def test_halving_applies_every_event_but_the_bad_ones_exactly_once() -> None:
    events = [_event(i) for i in range(37)]
    bad = {"e5", "e30"}
    applied: list[str] = []
    calls = 0

    async def apply(part: list[LogEvent]) -> None:  # one transaction: all or nothing
        nonlocal calls
        calls += 1
        if bad & {e.id for e in part}:
            raise ValueError("poison")
        applied.extend(e.id for e in part)

    with pytest.raises(BatchFailed) as failed:
        await apply_halving(events, apply)
    assert sorted(applied) == sorted(e.id for e in events if e.id not in bad) and len(applied) == len(set(applied))
    assert failed.value.done == set(applied) and failed.value.failed == ["e5", "e30"]
    assert isinstance(failed.value.cause, ValueError)
    assert calls <= 2 * 2 * 6 + 1  # a bad event costs about two calls per halving level


async def test_halving_stops_at_an_unavailable_store_and_reraises_a_batch_that_is_all_bad() -> None:
    async def down(part: list[LogEvent]) -> None:
        raise Unavailable("db down")

    with pytest.raises(Unavailable):
        await apply_halving([_event(i) for i in range(8)], down)

    async def bad(part: list[LogEvent]) -> None:
        raise KeyError("order_id")

    with pytest.raises(KeyError):  # nothing applied: the error itself, as an unbatched handler raises it
        await apply_halving([_event(i) for i in range(3)], bad)
    ok: list[str] = []

    async def good(part: list[LogEvent]) -> None:
        ok.extend(e.id for e in part)

    await apply_halving([_event(i) for i in range(3)], good)
    assert ok == ["e0", "e1", "e2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_log_is_retried_with_backoff_until_it_comes_back(
    prefix: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    server_bin = shutil.which("redis-server")
    if server_bin is None:
        pytest.skip("needs a redis-server binary to start late")
    port = _free_port()
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    log = RedisLog(client, Keys(prefix), owns_client=True)
    stop = asyncio.Event()
    rec = Recorder()
    caplog.set_level(logging.WARNING, logger="livecommerce.workers.runner")
    task = asyncio.create_task(
        run_consumer(log, TOPIC, GROUP, "w1", rec, stop=stop, fetch_timeout_ms=100, backoff_first_s=0.05, backoff_max_s=0.2)
    )
    await wait_until(lambda: [r for r in caplog.records if r.msg == "worker.backoff"], until=lambda backoffs: len(backoffs) >= 2,
                     what="the runner to back off twice while Redis is down")
    with pytest.raises(Unavailable):
        await log.append(TOPIC, "k", "t", {})
    server = await asyncio.create_subprocess_exec(
        server_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.DEVNULL,
    )
    try:

        async def appended() -> str | None:
            try:
                return await log.append(TOPIC, "k", "order.paid", {})
            except Unavailable:
                return None

        eid = await wait_until(appended, what="an append once redis-server is up")
        await wait_until(lambda: rec.seen, what="the runner to deliver the event")
        stop.set()
        assert await asyncio.wait_for(task, 5) == 1
        assert rec.seen == [eid]
        backoffs = [r for r in caplog.records if r.msg == "worker.backoff"]
        assert len(backoffs) >= 2 and all(r.stage == "fetch" for r in backoffs)  # type: ignore[attr-defined]
    finally:
        server.kill()
        await server.wait()


# ---------------------------------------------------------------- crash between effect and ack
async def _crash_then_recover(backend: str, url: str, prefix: str, tmp_path: Path) -> None:
    n, batch = 20, 5
    log = open_test_log(backend, url, prefix)
    db_path = str(tmp_path / "effects.db")
    db = open_db(db_path)
    try:
        appended = [await log.append(TOPIC, f"o{i % 6}", "order.paid", {"i": i}) for i in range(n)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.log_worker_proc", "--backend", backend, "--url", url,
            "--prefix", prefix, "--db", db_path, "--batch", str(batch), "--hang-from", "1",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        try:
            stored: list[list[str]] = []
            output: list[str] = []
            while len(stored) < 2:  # batch 0 stored and acked, batch 1 stored, not acked
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                assert line, "worker died:\n" + "".join(output[-40:])
                output.append(line)
                if line.startswith("stored "):
                    stored.append(line.split()[2:])
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        unacked = stored[1]
        assert db.execute("SELECT count(*) FROM applied").fetchone()[0] == 2 * batch

        handled = await run_consumer(log, TOPIC, GROUP, "survivor", store_handler(db, "survivor"),
                                     burst=True, batch=batch, fetch_timeout_ms=2000)
        assert handled == n - batch  # everything but the acked first batch, the unacked one again
        rows = db.execute("SELECT event_id FROM applied").fetchall()
        assert len(rows) == n and sorted(r[0] for r in rows) == sorted(appended)  # exactly once
        again = db.execute(
            f"SELECT event_id FROM deliveries WHERE worker = 'survivor' AND event_id IN ({','.join('?' * len(unacked))})",
            unacked,
        ).fetchall()
        assert sorted(r[0] for r in again) == sorted(unacked)  # redelivered, absorbed by the store
    finally:
        db.close()
        await log.close()


async def test_a_worker_killed_between_effect_and_ack_is_applied_once_redis(
    redis_url: str, prefix: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    await _crash_then_recover("redis", redis_url, prefix, tmp_path)


@pytest.mark.kafka
async def test_a_worker_killed_between_effect_and_ack_is_applied_once_kafka(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    await _crash_then_recover("kafka", kafka_bootstrap, prefix, tmp_path)
