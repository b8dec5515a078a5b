"""A worker process's Prometheus metrics and health, and the small HTTP server that shows them.

:func:`workers.runner.run_consumer` reports to :func:`process_metrics` (one registry per
process: a worker process runs one kind, whose loops are told apart by ``topic`` and
``group``); ``livecommerce worker NAME --metrics-port N`` (or ``LC_WORKER_METRICS_PORT``)
serves it with :func:`serve`:

* ``GET /metrics``: Prometheus text. ``lc_worker_events_total{topic,group}`` (events handled
  and acked), ``lc_worker_handler_errors_total{topic,group}`` (batches a handler failed,
  wholly or in part), ``lc_worker_batch_size{topic,group}`` (events per fetched batch, a
  histogram), ``lc_worker_consumer_lag{topic,group,partition}`` (events the group has not
  acked, polled every :data:`LAG_EVERY_S` s; every member of a group reports the same figure,
  so take ``max`` over instances), ``lc_worker_assigned_partitions{topic,group}``,
  ``lc_worker_last_commit_age_seconds{topic,group}`` (since the loop last acked a batch or
  found the log drained: while caught up it stays near 0), ``lc_worker_loop_up{topic,group}``
  (1 while the loop runs), and the process collector's ``process_*`` (RSS, CPU seconds, open
  fds, start time).
* ``GET /healthz``: 200 while every consumer loop of the process runs and has committed (or
  found its log drained) within ``LC_WORKER_HEALTH_STALL_S`` seconds; 503 otherwise. The body
  is JSON naming each loop's state. A worker without consumer loops (``inventory``,
  ``retention``) is healthy while it answers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: how often a running consumer loop asks the log for its group's lag
LAG_EVERY_S = 5.0


@dataclass(slots=True)
class LoopState:
    """One consumer loop's liveness, as :func:`~workers.runner.run_consumer` reports it."""

    topic: str
    group: str
    name: str
    progress_at: float = field(default_factory=time.monotonic)  # last ack, or last empty fetch
    committed_at: float | None = None  # wall clock of the last ack
    failed: str = ""  # the error that ended the loop ("" while it runs)
    lag_at: float = 0.0  # monotonic time of the last lag poll
    partitions: set[int] = field(default_factory=set)  # the partitions of the last lag poll

    def progressed(self, *, committed: bool) -> None:
        self.progress_at = time.monotonic()
        if committed:
            self.committed_at = time.time()


@dataclass(frozen=True, slots=True)
class LoopCounters:
    """One loop's label children of :class:`WorkerMetrics`' counters (a lookup each saved)."""

    events: Counter
    errors: Counter
    batch_size: Histogram
    last_commit: Gauge

    def committed(self, state: LoopState | None, events: int) -> None:
        """``events`` were acked (by a long-running loop, ``state``, or a burst, None)."""
        self.events.inc(events)
        self.last_commit.set(time.time())
        if state is not None:
            state.progressed(committed=True)


class _Ages(Collector):
    """``lc_worker_last_commit_age_seconds`` and ``lc_worker_loop_up``, computed at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> list[GaugeMetricFamily]:
        age = GaugeMetricFamily("lc_worker_last_commit_age_seconds",
                                "Seconds since the consumer loop last acked a batch or found its log drained",
                                labels=["topic", "group"])
        up = GaugeMetricFamily("lc_worker_loop_up", "1 while the consumer loop runs, 0 after it failed", labels=["topic", "group"])
        now = time.monotonic()
        for s in self.metrics.loops.values():
            age.add_metric([s.topic, s.group], max(0.0, now - s.progress_at))
            up.add_metric([s.topic, s.group], 0.0 if s.failed else 1.0)
        return [age, up]


class WorkerMetrics:
    """The registry of one worker process and the state of its consumer loops."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        labels = ["topic", "group"]
        self.events = Counter("lc_worker_events_total", "Events handled and acked", labels, registry=r)
        self.errors = Counter("lc_worker_handler_errors_total", "Batches whose handler failed (wholly or in part)", labels, registry=r)
        self.batch_size = Histogram("lc_worker_batch_size", "Events per fetched batch", labels,
                                    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500), registry=r)
        self.lag = Gauge("lc_worker_consumer_lag", "Events the group has not acked yet, per partition (the same on every member)",
                         ["topic", "group", "partition"], registry=r)
        self.assigned = Gauge("lc_worker_assigned_partitions", "Partitions this member reads now", labels, registry=r)
        self.last_commit = Gauge("lc_worker_last_commit_timestamp_seconds", "Wall clock of the last batch acked", labels, registry=r)
        r.register(_Ages(self))
        self.loops: dict[tuple[str, str, str], LoopState] = {}

    def loop(self, topic: str, group: str, name: str) -> LoopState:
        """Register a running consumer loop (a second one with the same key replaces it)."""
        s = self.loops[(topic, group, name)] = LoopState(topic, group, name)
        self.events.labels(topic, group).inc(0)
        self.errors.labels(topic, group).inc(0)
        return s

    def ended(self, state: LoopState, error: BaseException | None) -> None:
        """The loop returned: forget it (stopped), or keep it as failed (``error``)."""
        if error is None:
            self.loops.pop((state.topic, state.group, state.name), None)
            self.set_lag(state, {})
        else:
            state.failed = repr(error)[:200] or type(error).__name__

    def counters(self, topic: str, group: str) -> LoopCounters:
        """The counters of one consumer loop, their label children looked up once."""
        return LoopCounters(self.events.labels(topic, group), self.errors.labels(topic, group),
                            self.batch_size.labels(topic, group), self.last_commit.labels(topic, group))

    def set_lag(self, state: LoopState, lag: dict[int, int]) -> None:
        state.lag_at = time.monotonic()
        self.assigned.labels(state.topic, state.group).set(len(lag))
        for p in state.partitions - set(lag):  # revoked (Kafka) or stopped: no stale figure stays
            self.lag.remove(state.topic, state.group, str(p))
        state.partitions = set(lag)
        for p, n in lag.items():
            self.lag.labels(state.topic, state.group, str(p)).set(n)

    def health(self, stall_s: float) -> tuple[bool, list[dict[str, object]]]:
        """Whether every loop runs and progressed within ``stall_s``; each loop's state."""
        now = time.monotonic()
        out: list[dict[str, object]] = []
        ok = True
        for s in self.loops.values():
            age = now - s.progress_at
            state = "failed" if s.failed else ("stalled" if age > stall_s else "ok")
            ok = ok and state == "ok"
            item: dict[str, object] = {"topic": s.topic, "group": s.group, "name": s.name, "state": state,
                                       "last_commit_age_s": round(age, 3)}
            if s.failed:
                item["error"] = s.failed
            out.append(item)
        return ok, out


_PROCESS: WorkerMetrics | None = None


def process_metrics() -> WorkerMetrics:
    """This process's worker metrics (made on first use)."""
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = WorkerMetrics()
    return _PROCESS


def app(metrics: WorkerMetrics, *, stall_s: float) -> web.Application:
    """The aiohttp application answering ``/metrics`` and ``/healthz``."""

    async def get_metrics(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_health(request: web.Request) -> web.Response:
        ok, loops = metrics.health(stall_s)
        body = {"ok": ok, "stall_s": stall_s, "loops": loops}
        return web.Response(status=200 if ok else 503, text=json.dumps(body), content_type="application/json")

    a = web.Application()
    a.router.add_get("/metrics", get_metrics)
    a.router.add_get("/healthz", get_health)
    return a


async def serve(metrics: WorkerMetrics, host: str, port: int, *, stall_s: float) -> web.AppRunner:
    """Start the metrics server on ``host:port``; ``await runner.cleanup()`` stops it.

    Raises:
        OSError: the port cannot be bound (in use, or not allowed).
    """
    runner = web.AppRunner(app(metrics, stall_s=stall_s), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
