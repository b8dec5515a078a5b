"""Redis Cluster and multi-node topology fixtures (``@pytest.mark.cluster`` tests use them).

* ``redis_cluster_url`` (session): 3 masters, no replicas, of local ``redis-server``
  processes; ``LC_TEST_REDIS_CLUSTER_URL`` (``redis+cluster://host:port,...``) uses a running
  cluster instead. Tests share it through their key prefix.
* ``ha_cluster`` (per test): 3 masters + 3 replicas with a 1 s ``cluster-node-timeout``, for
  tests that kill a master (:class:`~livecommerce.devcluster.topology.RedisClusterNodes` has ``kill9``,
  ``master_of`` and ``wait_owner_change``).
* ``cluster_redis``, ``cluster_settings``: a ``RedisCluster`` client and ``Settings`` on the
  shared cluster with the test's key prefix (the test's keys are deleted afterwards).
* ``topology`` (module): the whole local topology of ``livecommerce cluster up`` (Redis
  Cluster 3+3, Tansu, a PostgreSQL schema, 3 gateways behind HAProxy, 2 workers of the kinds
  the tests need), stopped at the end of the module. Skipped, with the reason, when haproxy
  is not installed or ``LC_TEST_DATABASE_URL`` (PostgreSQL) is not set; CI sets both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from livecommerce.config import Settings
from livecommerce.devcluster import topology as _topology
from livecommerce.devcluster.topology import (
    Options,
    RedisClusterNodes,
    State,
    Topology,
    find_haproxy,
    free_cluster_ports,
)
from livecommerce.redis_conn import connect
from workers.registry import WORKERS

# a test session killed with SIGKILL must not leave Redis nodes, gateways or HAProxy behind
_topology.DIE_WITH_PARENT = True

# worker kinds the topology tests run (2 processes each, when registered); every kind would
# only cost start-up time
TOPOLOGY_WORKER_KINDS = ("orders", "points")


def _need_redis_binaries() -> None:
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} for a local Redis Cluster")


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("LC_TEST_REDIS_CLUSTER_URL")
    if external:
        yield external
        return
    _need_redis_binaries()
    nodes = RedisClusterNodes(free_cluster_ports(3), tmp_path_factory.mktemp("cluster"), replicas=0)
    try:
        nodes.start()
        yield nodes.url
    finally:
        nodes.stop()


@pytest.fixture
def ha_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    _need_redis_binaries()
    nodes = RedisClusterNodes(free_cluster_ports(6), tmp_path / "ha", replicas=1, node_timeout_ms=1000)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
async def cluster_redis(redis_cluster_url: str, prefix: str) -> AsyncIterator[RedisCluster]:
    client = connect(redis_cluster_url)
    assert isinstance(client, RedisCluster)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for k in keys:
        await client.delete(k)
    await client.aclose()


@pytest.fixture
def cluster_settings(settings: Settings, redis_cluster_url: str) -> Settings:
    return settings.replace(redis_url=redis_cluster_url)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    if find_haproxy() is None:
        pytest.skip("haproxy is not installed (apt-get install -y haproxy): topology tests skipped")
    db = os.environ.get("LC_TEST_DATABASE_URL", "")
    if not db.startswith("postgresql"):
        pytest.skip("LC_TEST_DATABASE_URL (PostgreSQL) is not set: topology tests skipped")
    _need_redis_binaries()
    lines: list[str] = []
    topo = Topology(
        Options(
            state_dir=tmp_path_factory.mktemp("topology"),
            base_port=0,
            database_url=db,
            node_timeout_ms=1000,
            kafka_session_timeout_ms=2000,
            worker_kinds=[k for k in TOPOLOGY_WORKER_KINDS if k in WORKERS],
            extra_env={"LC_LOG_JSON": "1", "LC_ROOM_COMMENT_BUDGET": "0"},
        ),
        progress=lines.append,
    )
    try:
        state = topo.up()
    except Exception as exc:
        pytest.fail(f"the local topology did not start: {exc}\n" + "\n".join(lines), pytrace=False)
    try:
        yield state
    finally:
        topo.down(purge=True)
