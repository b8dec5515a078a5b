"""``livecommerce cluster up|down|status``: a local multi-node topology in one command.

See :mod:`livecommerce.devcluster.topology` for what runs. ``up`` prints the URLs (load balancer, each
gateway, HAProxy stats), tokens, and the ``LC_*`` environment that points a tool at the
topology; ``status`` shows what still runs; ``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..clock import now_s
from ..config import Settings
from ..errors import ConfigError
from .topology import DEFAULT_DATABASE_URL, DEFAULT_STATE_DIR, Options, State, Topology


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cluster`` (with ``up``, ``down``, ``status``) to the main parser."""
    c: argparse.ArgumentParser = subparsers.add_parser(
        "cluster",
        help="start, inspect or stop a local multi-node topology",
        description=(
            "A local scale-out topology: a 3-master + 3-replica Redis Cluster, a Kafka-protocol "
            "broker (Tansu), a PostgreSQL schema, N gateways behind HAProxy and M processes of "
            "each worker kind. Needs redis-server, redis-cli, haproxy and a PostgreSQL server."
        ),
    )
    sub = c.add_subparsers(dest="cluster_command", metavar="{up,down,status}")
    sub.required = True

    def state_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR),
                       help=f"where PIDs, configuration and logs live (default {DEFAULT_STATE_DIR})")

    up = sub.add_parser("up", help="start the topology and print its URLs",
                        description="Start every component, wait until each is ready, print the URLs and tokens. "
                        "Progress lines go to stderr, the summary to stdout.")
    state_dir(up)
    up.add_argument("--base-port", type=int, default=17000,
                    help="redis BASE..BASE+5, kafka BASE+10, gateways BASE+20.., load balancer BASE+30 "
                    "(stats BASE+31); 0 picks free ports (default 17000)")
    up.add_argument("--gateways", type=int, default=3, help="gateway processes (default 3)")
    up.add_argument("--workers", type=int, default=2, metavar="N", help="processes of each worker kind (default 2)")
    up.add_argument("--worker-kinds", default=None, metavar="K1,K2",
                    help="worker kinds to run (default: every kind of `livecommerce worker list`)")
    up.add_argument("--database-url", default=None, metavar="URL",
                    help="PostgreSQL server URL; a schema of its own is created in it "
                    f"(default LC_DATABASE_URL if PostgreSQL, else {DEFAULT_DATABASE_URL})")
    up.add_argument("--schema", default=None, help="schema name (default lc_cluster_<random>)")
    up.add_argument("--log", choices=["kafka", "redis"], default="kafka",
                    help="durable log backend: kafka (Tansu, default) or redis (Streams on the cluster)")
    up.add_argument("--node-timeout-ms", type=int, default=2000,
                    help="Redis cluster-node-timeout: how long before a silent master is failed over (default 2000)")
    up.add_argument("--room", default="demo", help="room the printed URLs and host token use (default demo)")
    up.add_argument("--json", action="store_true", help="print the state as JSON instead of the summary")
    up.set_defaults(func=cmd_up)

    st = sub.add_parser("status", help="show what runs", description="One line per process the topology started, "
                        "with a health probe; exit code 0 when everything runs, 1 when something is down, 3 when "
                        "no topology was started from this state dir.")
    state_dir(st)
    st.set_defaults(func=cmd_status)

    dn = sub.add_parser("down", help="stop exactly what `up` started",
                        description="SIGTERM every recorded process (SIGKILL after a grace period), load balancer and "
                        "gateways first; drop the PostgreSQL schema unless --keep-data.")
    state_dir(dn)
    dn.add_argument("--keep-data", action="store_true", help="keep the PostgreSQL schema and Redis node files")
    dn.set_defaults(func=cmd_down)
    return c


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_up(args: argparse.Namespace, settings: Settings | None = None) -> int:
    db = args.database_url
    if db is None:
        env_db = (settings.database_url if settings else os.environ.get("LC_DATABASE_URL", ""))
        db = env_db if env_db.startswith("postgresql") else DEFAULT_DATABASE_URL
    kinds = [k.strip() for k in args.worker_kinds.split(",") if k.strip()] if args.worker_kinds else None
    options = Options(
        state_dir=args.state_dir,
        base_port=args.base_port,
        gateways=args.gateways,
        workers_per_kind=args.workers,
        database_url=db,
        schema=args.schema,
        log=args.log,
        node_timeout_ms=args.node_timeout_ms,
        worker_kinds=kinds,
    )
    try:
        state = Topology(options, progress=_progress).up()
    except ConfigError as exc:
        print(f"cluster up: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        import dataclasses
        import json

        print(json.dumps(dataclasses.asdict(state), indent=2))
        return 0
    print(summary(state, room=args.room))
    return 0


def summary(state: State, *, room: str = "demo") -> str:
    from ..auth import issue_token

    now = now_s()
    toks = {
        role: issue_token(state.secret, user=user, role=role, rooms=(room,) if role == "host" else (), now_s=now, ttl_s=7 * 86400)
        for role, user in (("viewer", "viewer1"), ("host", "host1"), ("ops", "ops1"))
    }
    lb = state.lb_url
    lines = [
        "",
        f"livecommerce cluster is up (state: {state.state_dir})",
        f"  load balancer: {lb}   (HAProxy stats: http://127.0.0.1:{state.ports['lb_stats']}/)",
        f"  websocket:     {lb.replace('http', 'ws', 1)}/ws?room={room}&format=json&token={toks['viewer']}",
    ]
    lines += [f"  gateway {name}:  {url}" for name, url in state.gateway_urls.items()]
    workers = state.by_kind("worker")
    lines += [
        f"  workers:       {', '.join(p.name for p in workers)}",
        f"  redis:         {state.redis_url}",
        f"  kafka:         {state.kafka_bootstrap or '(none: Redis Streams log)'}",
        f"  database:      {state.database_url}",
        "",
        "  tokens (valid 7 days):",
        f"    viewer: {toks['viewer']}",
        f"    host:   {toks['host']}   (room {room})",
        f"    ops:    {toks['ops']}",
        "",
        "  point a tool at it:",
        *(f"    export {k}={v}" for k, v in state.env.items() if k != "LC_DATA_DIR"),
        "",
        f"  livecommerce cluster status --state-dir {state.state_dir}",
        f"  livecommerce cluster down --state-dir {state.state_dir}",
    ]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, settings: Settings | None = None) -> int:
    topo = Topology(Options(state_dir=args.state_dir), progress=_progress)
    rows = topo.status()
    if topo.state is None:
        print(f"no topology started from {args.state_dir.resolve()}")
        return 3
    print(f"topology in {topo.state.state_dir}: load balancer {topo.state.lb_url}")
    print(f"{'name':<12} {'kind':<8} {'pid':>7} {'port':>6}  {'state':<7} health")
    for r in rows:
        print(f"{r['name']:<12} {r['kind']:<8} {r['pid']:>7} {r['port'] or '':>6}  {'up' if r['alive'] else 'DOWN':<7} {r['health']}")
    down = [r["name"] for r in rows if not r["alive"]]
    print(f"{len(rows) - len(down)}/{len(rows)} processes running" + (f"; down: {', '.join(down)}" if down else ""))
    return 1 if down else 0


def cmd_down(args: argparse.Namespace, settings: Settings | None = None) -> int:
    topo = Topology(Options(state_dir=args.state_dir), progress=_progress)
    if topo.state is None:
        print(f"no topology started from {args.state_dir.resolve()}: nothing to stop")
        return 0
    n = topo.down(purge=not args.keep_data)
    print(f"stopped {n} process(es)")
    return 0
