"""``livecommerce doctor``: check a deployment's settings and reachability, print what to fix.

Reads the same ``LC_*`` settings every process reads and takes the readings the verdicts of
:mod:`livecommerce.doctor` need: the secret; Redis (``PING``, ``INFO``, ``CLUSTER INFO``,
``TIME`` against this host's clock); the database's schema version against the code's
latest migration; the durable log (Redis Streams: each topic's consumer groups, their lag and
their freshest member; Kafka: each topic and its partitions); and, for each ``--gateway URL``
and ``--worker URL`` given, its health, clock (a gateway's ``/healthz`` carries ``now_ms``)
and a worker's consumer lag (its ``/metrics``). The gateways' own clocks are also compared
through the per-node readings they write to Redis once a second.

One line per finding (``ok``, ``WARN``, ``FAIL`` with ``-> the fix``), or ``--json``; exit 1
when anything fails, 0 otherwise (warnings included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import doctor, migrations
from .config import Settings
from .doctor import Finding
from .errors import LiveCommerceError
from .keys import Keys
from .log import TOPICS

_DESCRIPTION = """\
Check a deployment's settings and reachability, and print what to fix, one line each:

  secret             LC_SECRET set, >= 32 bytes, enough entropy, not the published dev secret
  redis.*            reachable, version >= 7.0, persistence (AOF, noeviction), cluster state
  clock.redis        this host's clock against Redis TIME (NTP off by more than 500 ms fails)
  clock.node.*       each gateway's clock, from the readings it writes to Redis every second
  database.schema    reachable, schema version against the code's latest migration
  log.*              Redis Streams: each topic's consumer groups, lag and freshest member;
                     Kafka: each topic exists with LC_KAFKA_PARTITIONS partitions
  gateway.* worker.* with --gateway / --worker: health, clock skew, a worker's lag

Exit code 1 when a check fails (FAIL), else 0 (WARN lines are worth a look). It reads the
same LC_* variables as the processes: run it with the deployment's environment.
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "doctor", help="check a deployment's settings and reachability, print what to fix",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", action="append", default=[], metavar="URL",
                   help="a gateway's base URL (http://host:8080) to check: /healthz, /readyz and its clock (repeatable)")
    p.add_argument("--worker", action="append", default=[], metavar="URL",
                   help="a worker's metrics URL (http://host:9100) to check: /healthz and its consumer lag (repeatable)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON ({ok, findings: [{check, level, message, fix}]})")
    p.add_argument("--timeout", type=float, default=3.0, metavar="S", help="seconds each probe may take (default 3)")
    p.set_defaults(func=cmd_doctor)
    return p


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    findings = asyncio.run(run_checks(settings, gateways=args.gateway, workers=args.worker, timeout_s=args.timeout))
    if args.json:
        print(json.dumps({"ok": not doctor.failed(findings), "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        for f in findings:
            print(f.line())
        bad = sum(f.level == "fail" for f in findings)
        warn = sum(f.level == "warn" for f in findings)
        print(f"{len(findings)} checks: {bad} failed, {warn} warnings" if bad or warn else f"{len(findings)} checks: all ok")
    return 1 if doctor.failed(findings) else 0


def _err(exc: BaseException) -> str:
    if isinstance(exc, LiveCommerceError):
        return " ".join(exc.message.split())
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    cause = exc.__cause__ or exc
    return " ".join(f"{type(cause).__name__}: {cause}".split())[:200]


async def run_checks(settings: Settings, *, gateways: list[str] = (), workers: list[str] = (),  # type: ignore[assignment]
                     timeout_s: float = 3.0) -> list[Finding]:
    """Every check, in the order they are printed."""
    out = [doctor.check_secret(settings.secret)]
    out += await _redis_checks(settings, timeout_s)
    out += await _database_checks(settings, timeout_s)
    if settings.kafka_bootstrap:
        out += await _kafka_checks(settings, timeout_s)
    for url in gateways:
        out += await _gateway_checks(url.rstrip("/"), timeout_s)
    for url in workers:
        out += await _worker_checks(url.rstrip("/"), timeout_s)
    return out


async def _within(timeout_s: float, step: Callable[[], Awaitable[Any]]) -> Any:
    return await asyncio.wait_for(step(), timeout_s)


def _now_ms() -> float:
    return time.time() * 1000


# ---------------------------------------------------------------- Redis and the Streams log
async def _redis_checks(settings: Settings, timeout_s: float) -> list[Finding]:
    from .redis_conn import connect, is_cluster_url

    if not settings.redis_url:
        return [Finding("redis", "fail", "LC_REDIS_URL is not set", "set it to the deployment's Redis (redis://host:6379/0 or "
                        "redis+cluster://h1:7000,h2:7001)")]
    shown = settings.redis_url.split("@")[-1]
    try:
        client = connect(settings.redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    except Exception as exc:  # a URL redis-py cannot parse
        return [Finding("redis", "fail", f"LC_REDIS_URL does not parse: {_err(exc)}", "fix LC_REDIS_URL")]
    out: list[Finding] = []
    try:
        try:
            await _within(timeout_s, client.ping)
            info = await _within(timeout_s, client.info)
        except Exception as exc:
            return [Finding("redis", "fail", f"{shown} does not answer: {_err(exc)}",
                            "start Redis or fix LC_REDIS_URL (host, port, password, TLS)")]
        if info and all(isinstance(v, dict) for v in info.values()):  # a cluster client: one dict per node
            info = next(iter(info.values()))
        out.append(Finding("redis", "ok", f"{shown} answers"))
        out.append(doctor.check_redis_version(str(info.get("redis_version", "0"))))
        flat = {k: str(v) for k, v in info.items()}
        try:
            cfg = await _within(timeout_s, lambda: client.config_get("maxmemory-policy"))
            flat["maxmemory_policy"] = str(cfg.get("maxmemory-policy", ""))
        except Exception:  # managed Redis often disables CONFIG
            pass
        flat["aof_enabled"] = str(info.get("aof_enabled", ""))
        out.append(doctor.check_redis_persistence(flat))
        if is_cluster_url(settings.redis_url):
            try:
                ci = await _within(timeout_s, client.cluster_info)
                out.append(doctor.check_cluster({k: str(v) for k, v in ci.items()}))
            except Exception as exc:
                out.append(Finding("redis.cluster", "fail", f"CLUSTER INFO failed: {_err(exc)}", "check the cluster's nodes"))
        elif str(info.get("cluster_enabled", "0")) == "1":
            out.append(Finding("redis.cluster", "fail", "the server is a cluster node but LC_REDIS_URL is a plain redis:// URL",
                               "use redis+cluster://host:port,host:port"))
        before = _now_ms()
        secs, micros = await _within(timeout_s, client.time)
        after = _now_ms()
        skew, unc = doctor.skew_ms(before, secs * 1000 + micros / 1000, after)
        out.append(doctor.check_skew("clock.redis", "Redis's clock", skew, unc))
        out += await _node_clocks(client, settings, timeout_s, secs * 1000 + micros / 1000)
        if not settings.kafka_bootstrap:
            out += await _streams_checks(client, settings, timeout_s)
    except Exception as exc:
        out.append(Finding("redis", "fail", f"{shown} failed mid-check: {_err(exc)}", "check Redis's health and retry"))
    finally:
        await client.aclose()
    return out


async def _node_clocks(client: Any, settings: Settings, timeout_s: float, redis_now_ms: float) -> list[Finding]:
    """Each gateway writes its totals with its clock's ``ts`` once a second; a fresh reading
    ahead of Redis's clock, or one behind by more than its age can explain, is skew."""
    from .ops_redis import OpsRedis

    try:
        nodes = await _within(timeout_s, OpsRedis(client, Keys(settings.key_prefix)).nodes)
    except Exception:
        return []
    out = []
    for node, totals in sorted(nodes.items()):
        ts = totals.get("ts")
        if not isinstance(ts, int | float):
            continue
        age = redis_now_ms - ts
        if age > 10_000:  # a stopped node's last reading
            continue
        # written within the last ~1.2 s, so the node's clock minus Redis's is -age + [0, 1200]
        skew = 600 - age
        out.append(doctor.check_skew(f"clock.node.{node}", f"gateway {node}'s clock (from its readings in Redis)", skew, 600))
    return out


async def _streams_checks(client: Any, settings: Settings, timeout_s: float) -> list[Finding]:
    from .log_redis import RedisLog

    log = RedisLog(client, Keys(settings.key_prefix), partitions=settings.log_partitions)
    try:
        streams = await _within(timeout_s * 3, log.streams)
    except Exception as exc:
        return [Finding("log", "fail", f"cannot list the Redis Streams log: {_err(exc)}", "check Redis")]
    if not streams:
        return [Finding("log", "fail", "Redis Streams log: no topic stream exists under prefix "
                        f"{settings.key_prefix!r}: no worker or gateway has used this Redis yet",
                        "start the workers (`livecommerce worker NAME`); check LC_KEY_PREFIX")]
    groups: dict[tuple[str, str], list[int | None]] = {}  # (topic, group) -> [lag, freshest idle ms]
    topics = sorted({t for t, _ in streams})
    for topic, part in streams:
        stream = log.stream(topic, part)
        for g in await _within(timeout_s, lambda s=stream: client.xinfo_groups(s)):  # type: ignore[misc]
            name = g["name"].decode() if isinstance(g["name"], bytes) else str(g["name"])
            entry = groups.setdefault((topic, name), [0, None])
            lag = g.get("lag")
            entry[0] = None if lag is None or entry[0] is None else entry[0] + int(lag) + int(g["pending"])
            if int(g.get("consumers", 0)):
                cons = await _within(timeout_s, lambda s=stream, n=name: client.xinfo_consumers(s, n))  # type: ignore[misc]
                idle = min(int(c["idle"]) for c in cons) if cons else None
                if idle is not None and (entry[1] is None or idle < entry[1]):
                    entry[1] = idle
    out = [Finding("log", "ok", f"Redis Streams, {len(topics)} topics ({', '.join(topics)}), "
                   f"{settings.log_partitions} partition(s) each, {len(groups)} consumer groups")]
    for topic in topics:
        if not any(t == topic for t, _ in groups):
            out.append(Finding(f"log.topic.{topic}", "warn", "no consumer group reads it", "start the workers that consume it"))
    for (topic, group), (lag, idle) in sorted(groups.items()):
        out.append(doctor.check_group(topic, group, lag, idle))
    return out


# ---------------------------------------------------------------- SQL
async def _database_checks(settings: Settings, timeout_s: float) -> list[Finding]:
    from .cli import sqlite_file

    url = settings.database_url
    path = sqlite_file(url)
    if path is not None and not await asyncio.to_thread(lambda: Path(path).expanduser().exists()):
        return [Finding("database", "fail", f"no SQLite database at {path}", "run `livecommerce db upgrade` (or fix LC_DATABASE_URL)")]
    try:
        st = await _within(timeout_s * 2, lambda: migrations.status(url))
    except Exception as exc:
        return [Finding("database", "fail", f"unreachable: {_err(exc)}",
                        "start the database or fix LC_DATABASE_URL (host, port, user, password, database)")]
    return [Finding("database", "ok", "reachable"), doctor.check_schema(st.current, st.latest)]


# ---------------------------------------------------------------- Kafka
async def _kafka_checks(settings: Settings, timeout_s: float) -> list[Finding]:
    from aiokafka import AIOKafkaConsumer

    from .log_kafka import KafkaLog

    naming = KafkaLog(settings.kafka_bootstrap, prefix=settings.key_prefix, partitions=settings.kafka_partitions)
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout_s * 1000),
                         client_id="livecommerce-doctor")
    try:
        try:
            await _within(timeout_s * 2, c.start)
            present = await _within(timeout_s, c.topics)
        except Exception as exc:
            return [Finding("log", "fail", f"Kafka at {settings.kafka_bootstrap} does not answer: {_err(exc)}",
                            "start the brokers or fix LC_KAFKA_BOOTSTRAP")]
        out = [Finding("log", "ok", f"Kafka at {settings.kafka_bootstrap} answers")]
        for topic in TOPICS:
            name = naming.topic_name(topic)
            parts = c.partitions_for_topic(name) if name in present else None
            out.append(doctor.check_topic(topic, len(parts) if parts else None, settings.kafka_partitions))
        return out
    finally:
        await c.stop()


# ---------------------------------------------------------------- listed processes
async def _get(url: str, timeout_s: float) -> tuple[int, str]:
    """A worker's own port (``/healthz``, ``/metrics``): not the gateway's API."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, http.get(url) as r:
        return r.status, await r.text()


async def _gateway_checks(url: str, timeout_s: float) -> list[Finding]:
    from .client import NO_RETRY, Client, TransportError, call

    name = f"gateway.{url.split('://', 1)[-1]}"
    async with Client(url, timeout_s=timeout_s, retry=NO_RETRY) as api:
        try:
            before = _now_ms()
            health = await api.send(call("healthHealthz"), check=False)
            after = _now_ms()
            ready = (await api.send(call("healthReadyz"), check=False)).status
        except TransportError as exc:
            return [Finding(name, "fail", f"does not answer: {_err(exc.__cause__ or exc)}", "start the gateway or fix the URL")]
    status = health.status
    out = [Finding(name, "ok" if status == 200 and ready == 200 else "fail", f"/healthz {status}, /readyz {ready}",
                   "" if status == 200 and ready == 200 else "see the gateway's log (/readyz 503: Redis unreachable or draining)")]
    now_ms = health.body.get("now_ms") if isinstance(health.body, dict) else None
    if isinstance(now_ms, int | float):
        skew, unc = doctor.skew_ms(before, now_ms, after)
        out.append(doctor.check_skew(f"clock.{name}", "its clock", skew, unc))
    return out


async def _worker_checks(url: str, timeout_s: float) -> list[Finding]:
    from prometheus_client.parser import text_string_to_metric_families

    name = f"worker.{url.split('://', 1)[-1]}"
    try:
        status, body = await _get(url + "/healthz", timeout_s)
        _, text = await _get(url + "/metrics", timeout_s)
    except Exception as exc:
        return [Finding(name, "fail", f"does not answer: {_err(exc)}", "start the worker with --metrics-port, or fix the URL")]
    lag: dict[str, float] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "lc_worker_consumer_lag":
                    key = f"{s.labels.get('topic')}/{s.labels.get('group')}"
                    lag[key] = lag.get(key, 0) + s.value
    except ValueError as exc:
        return [Finding(name, "fail", f"/metrics is not Prometheus text: {exc}", "is this a livecommerce worker's metrics port?")]
    shown = ", ".join(f"{k} lag {int(v)}" for k, v in sorted(lag.items())) or "no consumer loop"
    if status != 200:
        loops = []
        try:
            loops = [f"{x.get('topic')}/{x.get('group')} {x.get('state')}" for x in json.loads(body).get("loops", [])
                     if x.get("state") != "ok"]
        except ValueError:
            pass
        return [Finding(name, "fail", f"/healthz {status} ({', '.join(loops) or 'unhealthy'}); {shown}",
                        "see the worker's log (worker.backoff, worker.handler_failed); restart it if a loop failed")]
    level: doctor.Level = "warn" if any(v > doctor.LAG_WARN for v in lag.values()) else "ok"
    return [Finding(name, level, f"/healthz 200; {shown}", "add workers of this kind" if level == "warn" else "")]


def main(argv: list[str] | None = None) -> int:  # pragma: no cover (the main CLI registers it)
    parser = argparse.ArgumentParser(prog="livecommerce")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args, Settings.from_env()))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
