#!/usr/bin/env python
"""Scale-out benchmark: the figures behind docs/scaling.md's capacity model.

Three parts, on the local topology of ``livecommerce cluster up`` (a 3-master + 3-replica
Redis Cluster, gateways, HAProxy; ``livecommerce.devcluster.topology``):

* ``fanout``: one room, ``--clients`` WebSocket viewers connected **through HAProxy**, with
  1, 2 and 3 gateways behind it (one HAProxy per step, listing the first N gateways).
  Published through the broker's publish script on the cluster (no HTTP), at each
  ``--rates``. Reports aggregate deliveries/s, p50/p99 latency, loss, and the CPU of the
  gateways, HAProxy, the Redis masters and the load generator. Clients and steps are
  ``bench_fanout.py``'s (raw asyncio protocols in ``--procs`` processes).
* ``buys``: the flash-sale reserve script (``RedisFlashSale.reserve``: one slot, one
  shard) driven by ``--buy-procs`` processes of ``--buy-concurrency`` coroutines for
  ``--buy-seconds``; reports buys/s and the CPU of the one master that owns the sale, so
  buys/s per shard core can be read off.
* ``workers``: ``--events`` order events appended to the durable log (Redis Streams on the
  cluster, 6 partitions, and Kafka/Tansu when available), then drained by 1 and by 2
  ``livecommerce worker orders`` processes into SQL; reports events/s and CPU per event.

Everything runs on this one machine: on 2 cores the load generator, HAProxy and the gateways
compete for the same cores, which is itself a result (the doc says what limits what).

Example: ``python scripts/bench_scaling.py --out docs/img/bench_scaling.json`` (about 5
minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _wsload
from bench_fanout import Clients, LcRedisPublisher, Progress, fmt_row, machine, pad_for, run_step

import livecommerce.devcluster.topology as _topology
from livecommerce.devcluster.topology import (
    Options,
    Proc,
    State,
    Topology,
    find_haproxy,
    free_ports,
    haproxy_config,
    http_status,
    spawn,
    stop_procs,
)

REPO = Path(__file__).resolve().parent.parent
_topology.DIE_WITH_PARENT = True  # a killed benchmark leaves no Redis, gateway or HAProxy behind


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Group:
    """Processes measured together (the gateways of a step): what ``run_step`` calls a server."""

    def __init__(self, procs: list[Proc], ports: list[int]) -> None:
        self.ports = ports
        self.ps = [psutil.Process(p.pid) for p in procs]
        self.port = ports[0]

    def cpu(self) -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in self.ps))

    def cpu_split(self) -> tuple[float, float]:
        ts = [p.cpu_times() for p in self.ps]
        return sum(t.user for t in ts), sum(t.system for t in ts)

    def rss(self) -> int:
        return sum(int(p.memory_info().rss) for p in self.ps)


def _client_process(pidx: int, spec: dict[str, Any], pipe: Any, progress: Any) -> None:
    """``_wsload.client_process`` with the pipe written in blocking mode: a step's latency
    histogram (0.1 ms buckets) outgrows the pipe's buffer when latencies spread over seconds,
    and the load process' event loop made the descriptor non-blocking (BlockingIOError)."""
    send = pipe.send

    def blocking_send(obj: Any) -> None:
        was = os.get_blocking(pipe.fileno())
        os.set_blocking(pipe.fileno(), True)
        try:
            send(obj)
        finally:
            os.set_blocking(pipe.fileno(), was)

    pipe.send = blocking_send
    _wsload.client_process(pidx, spec, pipe, progress)


class LbClients(Clients):
    """bench_fanout's load processes, all pointed at the load balancer's port."""

    def __init__(self, name: str, port: int, ctx: dict[str, Any]) -> None:
        import multiprocessing as mp

        self.name = name
        n, procs = ctx["clients"], max(1, min(ctx["procs"], ctx["clients"]))
        mpc = mp.get_context("spawn")
        self.progress = mpc.RawArray("q", procs * _wsload.PROGRESS_SLOTS)
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        ips = _wsload.local_ips(ctx["source_ips"])
        first = 0
        for p in range(procs):
            count = n // procs + (1 if p < n % procs else 0)
            spec = {"kind": "lc", "host": "127.0.0.1", "port": port, "room": ctx["room"], "first": first,
                    "count": count, "local_ips": ips, "secret": ctx["secret"],
                    "concurrency": ctx["connect_concurrency"], "decode_frac": ctx["decode_frac"]}
            first += count
            parent, child = mpc.Pipe()
            proc = mpc.Process(target=_client_process, args=(p, spec, child, self.progress), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.ps = [psutil.Process(p.pid) for p in self.procs]


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


# ====================================================================== fan-out
async def fanout(state: State, args: argparse.Namespace, prog: Progress) -> list[dict[str, Any]]:
    haproxy = find_haproxy()
    assert haproxy
    gws = state.by_kind("gateway")
    masters = [p.pid for p in state.by_kind("redis")]
    rates = [float(r) for r in args.rates.split(",")]
    results = []
    logs = Path(state.state_dir) / "logs"
    for n in [int(x) for x in args.gateways.split(",")]:
        room = f"scale{n}-{secrets.token_hex(2)}"
        lb_port, stats_port = free_ports(2)
        cfg = Path(state.state_dir) / f"haproxy-{n}.cfg"
        cfg.write_text(haproxy_config([(p.name, p.port or 0) for p in gws[:n]], lb_port, stats_port,
                                      max_conns_per_ip=10 * args.clients))
        lb = spawn(f"lb-{n}", "lb", [haproxy, "-db", "-f", str(cfg)], log_dir=logs, port=lb_port)
        deadline = time.monotonic() + 20
        while http_status(f"http://127.0.0.1:{lb_port}/readyz") != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy for {n} gateways did not come up")
            await asyncio.sleep(0.2)
        ctx: dict[str, Any] = {
            "clients": args.clients, "procs": args.procs, "source_ips": args.source_ips, "room": room,
            "secret": state.secret, "connect_concurrency": 64, "decode_frac": args.decode_frac,
            "duration": args.duration, "drain": 3.0, "publishers": 8, "pad": pad_for(args.payload, room),
        }
        name = f"{n}gw"
        group = Group(gws[:n], [lb_port])
        log(f"== {n} gateway(s) behind HAProxy :{lb_port}: connecting {args.clients:,} clients")
        clients = LbClients(name, lb_port, ctx)
        pub = LcRedisPublisher(state.redis_url, "lc", room)
        try:
            def connecting(name: str = name, clients: LbClients = clients) -> None:
                prog.show(f"[{name}] connecting {clients.connected():,}")

            ready = await clients.wait_ready(180, connecting)
            prog.done()
            log(f"   connected {ready['ready']:,} in {ready['seconds']:.1f}s (failed {ready['failed']})")
            await pub.start()
            for i in range(5):  # warm-up: subscriptions and scripts
                await pub.publish({"text": ctx["pad"], "bs": -1, "bi": i, "bt": time.time()})
            await asyncio.sleep(0.5)
            await clients.collect(-1)
            per_gw = {p.name: 0 for p in gws[:n]}
            for p in gws[:n]:
                per_gw[p.name] = _connections(p.port or 0)
            for si, rate in enumerate(rates):
                lb_cpu0, redis_cpu0 = cpu_of([lb.pid]), cpu_of(masters)
                t0 = time.time()
                row = await run_step(name, si, rate, ctx, group, clients, pub, prog, len(rates))  # type: ignore[arg-type]
                wall = max(1e-6, time.time() - t0)
                prog.done()
                row.update(gateways=n, connections_per_gateway=per_gw,
                           haproxy_cpu_pct=round((cpu_of([lb.pid]) - lb_cpu0) / wall * 100, 1),
                           redis_cpu_pct=round((cpu_of(masters) - redis_cpu0) / wall * 100, 1),
                           connected=ready["ready"])
                log(fmt_row(row) + f"  haproxy {row['haproxy_cpu_pct']:.0f}% redis {row['redis_cpu_pct']:.0f}%")
                results.append(row)
                if row["p99_ms"] is None or row["p99_ms"] > args.stop_p99_ms or row["loss_frac"] > 0.01:
                    log(f"   {n} gateway(s): saturated at {rate:g} msg/s; next configuration")
                    break
        finally:
            await pub.close()
            await clients.stop()
            stop_procs([lb], timeout_s=5)
    return results


def _connections(port: int) -> int:
    """The gateway's lc_connections gauge (how the balancer spread the clients)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("lc_connections "):
                    return int(float(line.split()[1]))
    except OSError:
        pass
    return -1


# ====================================================================== buys per shard
def _buy_proc(url: str, sale: str, start_at: float, seconds: float, concurrency: int, idx: int, out: Any) -> None:
    import uvloop

    from livecommerce.flash_sale_redis import RedisFlashSale
    from livecommerce.keys import Keys
    from livecommerce.redis_conn import connect

    async def main() -> None:
        r = connect(url, max_connections=concurrency + 8)
        sales = RedisFlashSale(r, Keys("lc"))
        done = 0
        rejected = 0
        await sales.stats(sale)  # connections and scripts ready before the window opens
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop = time.monotonic() + seconds

        async def worker(w: int) -> None:
            nonlocal done, rejected
            i = 0
            while time.monotonic() < stop:  # one reserve per user: every call is a real buy
                user = f"p{idx}w{w}u{i}"
                try:
                    res = await sales.reserve(sale, user, 1, f"rq{i}", int(time.time() * 1000), f"{sale}.{idx}-{w}-{i}")
                except Exception:  # see workers(): a fresh cluster client's connection burst
                    rejected += 1
                    i += 1
                    continue
                if isinstance(res, str):
                    rejected += 1
                else:
                    done += 1
                i += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        out.put((done, rejected))
        await r.aclose()

    uvloop.install()
    asyncio.run(main())


async def buys(state: State, args: argparse.Namespace) -> dict[str, Any]:
    import multiprocessing as mp

    from livecommerce.flash_sale import Sale
    from livecommerce.flash_sale_redis import RedisFlashSale
    from livecommerce.keys import Keys
    from livecommerce.redis_conn import connect

    sale_id = f"bench{secrets.token_hex(3)}"
    now = int(time.time() * 1000)
    r = connect(state.redis_url)
    try:
        sales = RedisFlashSale(r, Keys("lc"))
        await sales.create(Sale(id=sale_id, room="bench", product_id="p", price=100, stock=10_000_000, per_user_limit=1,
                                starts_ms=now - 1000, ends_ms=now + 3_600_000, payment_window_s=900))
        await sales.start(sale_id, now)
        await r.initialize()
        owner = r.get_node_from_key(Keys("lc").sale(sale_id, "stock"))
    finally:
        await r.aclose()
    master = next(p for p in state.by_kind("redis") if p.port == int(owner.port))
    log(f"== buys: reserve script on sale {sale_id} (master :{master.port}), {args.buy_procs} procs x "
        f"{args.buy_concurrency} in flight, {args.buy_seconds:g}s")
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    start_at = time.time() + 6.0  # after the interpreters started
    procs = [ctx.Process(target=_buy_proc, args=(state.redis_url, sale_id, start_at, args.buy_seconds,
                                                 args.buy_concurrency, i, q)) for i in range(args.buy_procs)]
    for p in procs:
        p.start()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0, gen0, busy0, t0 = cpu_of([master.pid]), cpu_of([p.pid for p in procs if p.pid]), psutil.cpu_times(), time.time()
    await asyncio.sleep(args.buy_seconds)
    wall = time.time() - t0
    redis_cpu = cpu_of([master.pid]) - cpu0
    gen_cpu = cpu_of([p.pid for p in procs if p.pid]) - gen0
    busy1 = psutil.cpu_times()
    results = [await asyncio.to_thread(q.get, True, 60) for _ in procs]
    for p in procs:
        p.join(10)
    done = sum(d for d, _ in results)
    row = {
        "buys": done, "rejected": sum(rj for _, rj in results), "seconds": args.buy_seconds,
        "buys_s": round(done / args.buy_seconds, 1),
        "redis_master_cpu_pct": round(redis_cpu / wall * 100, 1),
        "redis_us_per_buy": round(redis_cpu / done * 1e6, 2) if done else None,
        "loadgen_cpu_pct": round(gen_cpu / wall * 100, 1),
        "machine_busy_pct": round(((sum(busy1) - busy1.idle) - (sum(busy0) - busy0.idle)) / wall * 100, 1),
    }
    if row["redis_us_per_buy"]:
        row["buys_s_per_shard_core"] = round(1e6 / row["redis_us_per_buy"])
    log(f"   {row['buys_s']:,.0f} buys/s; master CPU {row['redis_master_cpu_pct']:.0f}% "
        f"({row['redis_us_per_buy']} us/buy -> ~{row.get('buys_s_per_shard_core', 0):,} buys/s per shard core); "
        f"load generator {row['loadgen_cpu_pct']:.0f}%")
    return row


# ====================================================================== events per worker
async def workers(state: State, args: argparse.Namespace, kafka: str | None) -> list[dict[str, Any]]:
    from sqlalchemy import text

    from livecommerce.config import Settings
    from livecommerce.log_open import open_log
    from livecommerce.store_sql import make_engine

    rows = []
    backends = [("redis-streams", "")] + ([("kafka-tansu", kafka)] if kafka else [])
    for backend, bootstrap in backends:
        for n in (1, 2):
            prefix = f"wb{secrets.token_hex(3)}"
            env = {**os.environ, **state.env, "LC_KEY_PREFIX": prefix, "LC_KAFKA_BOOTSTRAP": bootstrap,
                   "LC_LOG_LEVEL": "WARNING", "LC_KAFKA_SESSION_TIMEOUT_MS": "2000", "LC_LOG_PARTITIONS": "6"}
            settings = Settings.from_env(env)
            durable = open_log(settings, partitions=6)
            sale = f"ws{secrets.token_hex(3)}"
            log(f"== workers: {args.events:,} events on {backend}, {n} 'livecommerce worker orders' process(es)")
            t_app = time.monotonic()
            # a fresh redis-py RedisCluster client fails a few commands (AttributeError, closed
            # connection) when it opens dozens of connections at once: few in flight, retried
            sem = asyncio.Semaphore(8)

            async def one(i: int, durable: Any = durable, sale: str = sale, sem: asyncio.Semaphore = sem) -> None:
                oid = f"{sale}.o{i}"
                d = {"order_id": oid, "sale_id": sale, "room_id": "bench", "user_id": f"u{i}", "qty": 1,
                     "unit_price": 100, "pay_by_ms": 4_000_000_000_000, "payment_window_s": 900,
                     "request_id": f"r{i}", "reserved_ms": 4_000_000_000_000 - 900_000}
                async with sem:
                    for attempt in range(5):
                        try:
                            await durable.append("orders", oid, "order.reserved", d, event_id=f"{oid}:reserved")
                            return
                        except Exception:
                            if attempt == 4:
                                raise
                            await asyncio.sleep(0.1)

            await asyncio.gather(*(one(i) for i in range(args.events)))
            await durable.close()
            log(f"   appended in {time.monotonic() - t_app:.1f}s")
            procs = [spawn(f"bench-orders-{backend}-{n}-{i}", "worker",
                           [sys.executable, "-m", "livecommerce.cli", "worker", "orders", "--node-id", f"{prefix}-{i}"],
                           log_dir=Path(state.state_dir) / "logs", env=env) for i in range(n)]
            engine = make_engine(settings.database_url)
            t0 = time.monotonic()
            cpu0 = 0.0
            started = None
            count = 0
            try:
                while time.monotonic() - t0 < 300:
                    async with engine.connect() as conn:
                        count = int(await conn.scalar(text(
                            "SELECT count(*) FROM applied_events WHERE consumer = 'orders' AND event_id LIKE :p"),
                            {"p": f"{sale}.%"}) or 0)
                    if count and started is None:
                        started, cpu0, first = time.monotonic(), cpu_of([p.pid for p in procs]), count
                    if count >= args.events:
                        break
                    if not any(p.alive() for p in procs):
                        log(f"   the workers exited: see {procs[0].log}")
                        break
                    await asyncio.sleep(0.1)
                end = time.monotonic()
                cpu = cpu_of([p.pid for p in procs]) - cpu0
            finally:
                await engine.dispose()
                stop_procs(procs, timeout_s=10)
            if started is None or count < args.events:
                log(f"   incomplete: {count}/{args.events} applied")
                continue
            span = max(1e-6, end - started)
            row = {"backend": backend, "workers": n, "events": args.events, "events_s": round((count - first) / span, 1),
                   "events_s_per_worker": round((count - first) / span / n, 1),
                   "worker_cpu_pct": round(cpu / span * 100, 1),
                   "cpu_us_per_event": round(cpu / max(1, count - first) * 1e6, 1),
                   "database": settings.database_url.split("://", 1)[0]}
            log(f"   {row['events_s']:,.0f} events/s ({row['events_s_per_worker']:,.0f} per worker), "
                f"worker CPU {row['worker_cpu_pct']:.0f}%, {row['cpu_us_per_event']:.0f} us/event")
            rows.append(row)
    return rows


# ====================================================================== main
async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    _wsload.raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="bench_scaling."))
    db = args.database_url or f"sqlite+aiosqlite:///{workdir}/bench.db"
    kafka_wanted = "workers" in args.parts and args.kafka
    topo = Topology(Options(state_dir=workdir / "topology", base_port=0, gateways=max(int(x) for x in args.gateways.split(",")),
                            worker_kinds=[], database_url=db, log="kafka" if kafka_wanted else "redis",
                            max_conns_per_ip=10 * args.clients,
                            extra_env={"LC_LOG_LEVEL": "WARNING", "LC_LOG_JSON": "1"}), progress=log)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine(),
                              "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                              "config": {k: v for k, v in vars(args).items() if k != "out"}}
    t0 = time.monotonic()
    state = topo.up()
    try:
        prog = Progress()
        if "fanout" in args.parts:
            report["fanout"] = await fanout(state, args, prog)
        if "buys" in args.parts:
            report["buys"] = await buys(state, args)
        if "workers" in args.parts:
            report["workers"] = await workers(state, args, state.kafka_bootstrap or None)
    finally:
        topo.down(purge=True)
        shutil.rmtree(workdir, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['machine']['cpu']} x{report['machine']['nproc']}; load average "
          f"{report['machine']['loadavg_start'][0]:.2f} -> {report['machine']['loadavg_end'][0]:.2f}")
    if report.get("fanout"):
        print("\nfan-out through HAProxy (one room)")
        print(f"{'gateways':>8} {'msg/s':>7} {'deliveries/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'loss':>6} "
              f"{'gateways cpu':>12} {'haproxy':>8} {'redis':>6} {'load gen':>8}")
        for r in report["fanout"]:
            print(f"{r['gateways']:>8} {r['rate']:>7g} {r['deliveries_s']:>13,.0f} {r['p50_ms'] or 0:>7.1f} "
                  f"{r['p99_ms'] or 0:>7.1f} {r['loss']:>6} {r['server_cpu_pct']:>11.0f}% {r['haproxy_cpu_pct']:>7.0f}% "
                  f"{r['redis_cpu_pct']:>5.0f}% {r['loadgen_cpu_pct']:>7.0f}%")
    if report.get("buys"):
        b = report["buys"]
        print(f"\nbuys: {b['buys_s']:,.0f}/s on one shard, master CPU {b['redis_master_cpu_pct']:.0f}%, "
              f"{b['redis_us_per_buy']} us/buy in Redis (~{b.get('buys_s_per_shard_core', 0):,}/s per shard core)")
    for w in report.get("workers", []):
        print(f"workers: {w['backend']}, {w['workers']} process(es): {w['events_s']:,.0f} events/s "
              f"({w['events_s_per_worker']:,.0f} per worker), {w['cpu_us_per_event']:.0f} us CPU/event ({w['database']})")
    print(f"\nelapsed {report['elapsed_s']} s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_scaling.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="fanout,buys,workers", help="which parts to run (default fanout,buys,workers)")
    p.add_argument("--gateways", default="1,2,3", help="gateway counts of the fan-out curve (default 1,2,3)")
    p.add_argument("--clients", type=int, default=2000, help="viewers in the room (default 2000)")
    p.add_argument("--procs", type=int, default=2, help="load generator processes (default 2)")
    p.add_argument("--source-ips", type=int, default=1, help="loopback source addresses for the clients (default 1)")
    p.add_argument("--decode-frac", type=float, default=0.25, help="share of clients that decode every frame (default 0.25)")
    p.add_argument("--rates", default="40,160,320,640", help="published msgs/s steps (default 40,160,320,640)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per step (default 5)")
    p.add_argument("--payload", type=int, default=100, help="bytes of one event (default 100)")
    p.add_argument("--stop-p99-ms", type=float, default=5000.0,
                   help="stop raising the rate past this p99 (default 5000: a shared 2-core machine is slow)")
    p.add_argument("--buy-procs", type=int, default=2, help="processes driving the reserve script (default 2)")
    p.add_argument("--buy-concurrency", type=int, default=32, help="reserves in flight per process (default 32)")
    p.add_argument("--buy-seconds", type=float, default=8.0, help="seconds of buying (default 8)")
    p.add_argument("--events", type=int, default=3000, help="order events per worker measurement (default 3000)")
    p.add_argument("--kafka", action="store_true", help="also measure workers on Kafka (Tansu)")
    p.add_argument("--database-url", default=None,
                   help="SQL for the workers (default: SQLite in a temp dir; PostgreSQL is the realistic one)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    return p


def main() -> int:
    args = build_parser().parse_args()
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if find_haproxy() is None:
        print("bench_scaling: haproxy is not installed (apt-get install -y haproxy)", file=sys.stderr)
        return 2
    report = asyncio.run(main_async(args))
    print_report(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
