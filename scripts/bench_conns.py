#!/usr/bin/env python
"""Idle-connection benchmark: server memory per open WebSocket and time to connect them all.

Starts a livecommerce gateway (``python -m livecommerce.cli gateway``, Redis broker) on a
free loopback port, opens C idle viewer connections into one room from several load
processes (raw asyncio clients, see ``_wsload.py``; each waits for its ``welcome``), holds
them, and reports the server's RSS (psutil) before and after, per connection in KiB, and
the time to connect all. The clients spread over loopback source addresses so the
gateway's per-address limit (LC_MAX_CONNS_PER_IP, default 2000) holds as shipped.

For comparison (``--servers``) the same clients open connections to two bare aiohttp
WebSocket servers embedded here: ``aiohttp`` (a ``WebSocketResponse`` and an
``async for msg in ws`` loop, nothing else) and ``aiohttp-hb`` (the same with the
gateway's ``heartbeat=20``, ``compress=False``, ``max_msg_size=64 KiB``), which show what
aiohttp itself costs per connection and what the gateway adds on top.

``--tracemalloc`` runs each server once more under ``_tracemalloc_run.py`` with fewer
connections (``--tracemalloc-conns``) and prints the allocation sites that grew, per
connection: where the bytes go. (RSS under tracemalloc is not reported: tracing inflates it.)

``--storm`` is the join storm: every client of a load process starts its handshake at once
(no cap on handshakes in flight), all into one room, and the figure is the time until the
last one has its ``welcome``. The report prints the M2 3/7 goal beside the figures: at
least 2,500 connections per second admitted (welcome sent) by the one gateway process, and
at least 60 % of the bare aiohttp server's rate measured in the same run; and the gateway's
CPU per connection over the connect phase. ``--py-spy FILE`` (sampling), ``--perf FILE``
(Linux perf, kernel time included) or ``--profile FILE`` (cProfile over the connect phase
only, exact call counts; ``FILE.txt`` and ``FILE.pstats``) profile the gateway while the
clients connect.

Example: ``python scripts/bench_conns.py`` (defaults: 10,000 connections, livecommerce and
the bare aiohttp server; about 1-2 minutes on 2 cores); ``python scripts/bench_conns.py
--storm --conns 10000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _wsload
import bench_fanout as bf

REPO = Path(__file__).resolve().parent.parent
SERVERS = ("livecommerce", "livecommerce-own", "aiohttp", "aiohttp-hb")
#: the gateway's /ws transport per server name (LC_WS_TRANSPORT)
LC_TRANSPORTS = {"livecommerce": "aiohttp", "livecommerce-own": "own"}
#: M2 4/7 (lean connections): KiB of RSS per idle connection at 10,000
GOAL_KIB_PER_CONN = 10.0
#: M2 3/7 (join storm): connections admitted per second by one gateway process, and its
#: rate as a share of the bare aiohttp server's in the same run
GOAL_CONNS_PER_S = 2500
GOAL_SHARE_OF_BARE = 0.60
BACKLOG = 4096  # listen backlog of every server here (a storm's SYNs must not be dropped)


# ====================================================================== bare aiohttp servers
def serve_aiohttp(port: int, heartbeat: bool) -> None:
    from aiohttp import web

    conns: set[web.WebSocketResponse] = set()

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        if heartbeat:
            ws = web.WebSocketResponse(heartbeat=20.0, compress=False, max_msg_size=64 * 1024, autoping=True)
        else:
            ws = web.WebSocketResponse()
        await ws.prepare(request)
        conns.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            conns.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=BACKLOG)


def start_perf(pid: int, out: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(pid), "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def file_exists(path: str) -> bool:
    return os.path.exists(path)


def read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ====================================================================== one measurement
def start(name: str, ctx: dict[str, Any], tm_out: str | None, profile: str | None = None) -> bf.Server:
    port = bf.free_port()
    log = Path(ctx["workdir"]) / f"{name}{'-tm' if tm_out else ''}.log"
    out = log.open("wb")
    if name in LC_TRANSPORTS:
        argv = ["-m", "livecommerce.cli", "gateway", "--port", str(port)]
        env = bf.prepare_lc(ctx)
        env["LC_LISTEN_BACKLOG"] = str(BACKLOG)
        env["LC_WS_TRANSPORT"] = LC_TRANSPORTS[name]
    else:
        argv = [str(Path(__file__).resolve()), "--serve", name, "--port", str(port)]
        env = dict(os.environ)
    here = Path(__file__).resolve().parent
    wrap = [str(here / "_tracemalloc_run.py"), tm_out] if tm_out else [str(here / "_cprofile_run.py"), profile] if profile else []
    cmd = [sys.executable, *wrap, *argv]
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    out.close()
    server = bf.Server(name, proc, port, log)
    bf.wait_port(server, 60)
    return server


async def measure(name: str, conns: int, ctx: dict[str, Any], prog: bf.Progress, tm_out: str | None = None) -> dict[str, Any]:
    profile = ctx["profile"] if ctx["profile"] and name in LC_TRANSPORTS and not tm_out else None
    server = start(name, ctx, tm_out, profile)
    res: dict[str, Any] = {"server": name, "conns": conns, "tracemalloc": bool(tm_out)}
    clients = None
    try:
        if name in LC_TRANSPORTS:
            # one connection first, so that the room's subscription and the lazily
            # imported modules are in the baseline, not in the per-connection figure
            ctx1 = dict(ctx, clients=1, procs=1)
            one = bf.Clients(name, server, ctx1, kind="lc")
            await one.wait_ready(30, lambda: None)
            await one.stop()
        await asyncio.sleep(ctx["settle"])
        if tm_out:
            server.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.5)
        before = server.ps.memory_full_info()
        res["rss_before"] = before.rss
        res["uss_before"] = before.uss
        ctxn = dict(ctx, clients=conns)
        if ctx["storm"]:  # every handshake of a load process at once
            ctxn["connect_concurrency"] = conns
        if profile:
            server.proc.send_signal(signal.SIGUSR1)  # cProfile on
            await asyncio.sleep(0.2)
        cpu0 = server.cpu()
        spy = None
        if ctx["py_spy"] and not tm_out and (name in LC_TRANSPORTS or "{server}" in ctx["py_spy"]):
            spy = bf.start_py_spy(server.proc.pid, ctx["py_spy"].replace("{server}", name))
            await asyncio.sleep(1.0)
        perf = None
        if ctx["perf"] and not tm_out and (name in LC_TRANSPORTS or "{server}" in ctx["perf"]):
            perf = start_perf(server.proc.pid, ctx["perf"].replace("{server}", name))
            await asyncio.sleep(0.5)
        t0 = time.monotonic()
        clients = bf.Clients(name, server, ctxn, kind="lc" if name in LC_TRANSPORTS else "relay")

        def show() -> None:
            n = clients.connected() if clients else 0
            el = time.monotonic() - t0
            prog.show(f"[{name}{' tracemalloc' if tm_out else ''}] connected {n:,}/{conns:,} in {el:.1f}s "
                      f"({n / max(el, 1e-9):,.0f}/s), server RSS {server.rss() / 2**20:,.1f} MiB")

        ready = await clients.wait_ready(600, show)
        took = time.monotonic() - t0
        res["connect_cpu_s"] = round(server.cpu() - cpu0, 3)
        if profile:
            server.proc.send_signal(signal.SIGUSR1)  # cProfile off: writes FILE.txt
            for _ in range(600):
                await asyncio.sleep(0.1)
                if file_exists(profile + ".txt"):
                    break
            res["profile"] = profile + ".txt"
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            await asyncio.to_thread(perf.wait, 60)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy.communicate, timeout=60)
        prog.show(f"[{name}] connected {ready['ready']:,}/{conns:,} in {took:.1f}s, failed {ready['failed']}", force=True)
        prog.done()
        res["ready"] = ready["ready"]
        res["failed"] = ready["failed"]
        res["failures"] = ready["other"]
        # connect time as the clients saw it (the slowest load process, from its first
        # connect to its last welcome), and the wall time including spawning them
        res["connect_s"] = round(ready["seconds"], 2)
        res["connect_per_s"] = round(ready["ready"] / ready["seconds"], 1) if ready["seconds"] else None
        res["connect_wall_s"] = round(took, 2)
        res["cpu_ms_per_conn"] = round(res["connect_cpu_s"] * 1000 / max(1, ready["ready"]), 3)
        # hold them idle and let the server settle
        await asyncio.sleep(ctx["settle"])
        after = server.ps.memory_full_info()
        res["rss_after"] = after.rss
        res["uss_after"] = after.uss
        res["still_open"] = clients.connected()
        n = max(1, ready["ready"])
        res["rss_per_conn_kib"] = round((after.rss - before.rss) / 1024 / n, 2)
        res["uss_per_conn_kib"] = round((after.uss - before.uss) / 1024 / n, 2)
        res["server_cpu_s"] = round(server.cpu(), 2)
        if tm_out:
            server.proc.send_signal(signal.SIGUSR1)
            tm = None
            for _ in range(3000):  # a snapshot of a big heap takes a while on a busy machine
                await asyncio.sleep(0.1)
                tm = read_json(tm_out)
                if tm is not None:
                    break
            if tm is None:
                raise RuntimeError("the tracemalloc snapshot did not arrive within 300 s")
            res["traced_per_conn_bytes"] = round((tm["traced_now"] - tm["traced_first"]) / n, 1)
            res["top_lines"] = [dict(x, per_conn=round(x["size"] / n, 1)) for x in tm["lines"][:25]]
            res["top_files"] = [dict(x, per_conn=round(x["size"] / n, 1)) for x in tm["files"][:15]]
    finally:
        if clients is not None:
            await clients.stop()
        await asyncio.to_thread(server.stop)
    return res


def print_report(report: dict[str, Any]) -> None:
    print()
    print(f"idle connections: {report['config']['conns']:,} per server, {report['config']['procs']} load processes")
    print(f"{'server':<14}{'connected':>11}{'connect s':>11}{'conns/s':>9}{'CPU ms/conn':>13}{'RSS before':>12}{'RSS after':>12}"
          f"{'KiB/conn':>10}{'USS KiB/conn':>14}")
    for r in report["results"]:
        if r.get("tracemalloc"):
            continue
        print(f"{r['server']:<14}{r['ready']:>11,}{r['connect_s']:>11.1f}{r['connect_per_s']:>9,.0f}{r['cpu_ms_per_conn']:>13.3f}"
              f"{r['rss_before'] / 2**20:>10.1f}Mi{r['rss_after'] / 2**20:>10.1f}Mi"
              f"{r['rss_per_conn_kib']:>10.1f}{r['uss_per_conn_kib']:>14.1f}")
    goal = report.get("goal")
    if goal:
        print(f"\njoin {'storm' if report['config'].get('storm') else 'rate'} goal (M2 3/7): >= {GOAL_CONNS_PER_S:,} conns/s and "
              f">= {GOAL_SHARE_OF_BARE:.0%} of bare aiohttp in the same run")
        print(f"  {goal['server']} {goal['conns_per_s']:,.0f} conns/s ({goal['verdict_rate']}); bare aiohttp {goal['bare_per_s']:,.0f} "
              f"conns/s: {goal['share']:.0%} of bare ({goal['verdict_share']}); "
              f"{goal['kib_per_conn']:.1f} KiB/conn, {goal['cpu_ms_per_conn']:.3f} ms gateway CPU per connection")
    for r in report["results"]:
        if not r.get("tracemalloc") or r.get("error"):
            continue
        print(f"\ntracemalloc, {r['server']}, {r['ready']:,} connections: {r['traced_per_conn_bytes'] / 1024:.1f} KiB "
              f"traced per connection (Python allocations only); top sites, bytes per connection:")
        for x in r["top_lines"][:18]:
            where = x["where"].replace(str(REPO) + "/", "").split("site-packages/")[-1]
            print(f"  {x['per_conn']:>8.0f} B  {x['count'] / max(1, r['ready']):>5.1f} blocks  {where}")
    for lc in (r for r in report["results"] if r["server"] in LC_TRANSPORTS and not r.get("tracemalloc")):
        verdict = "meets" if lc["rss_per_conn_kib"] <= GOAL_KIB_PER_CONN else "misses"
        print(f"\n{lc['server']} (LC_WS_TRANSPORT={LC_TRANSPORTS[lc['server']]}): {lc['rss_per_conn_kib']:.1f} KiB per idle "
              f"connection: {verdict} the M2 4/7 goal of {GOAL_KIB_PER_CONN:.0f} KiB")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in servers:
        if s not in SERVERS:
            raise SystemExit(f"unknown server {s!r}; choose from {', '.join(SERVERS)}")
    nofile = _wsload.raise_nofile()
    if args.conns + 200 > nofile:
        raise SystemExit(f"RLIMIT_NOFILE is {nofile} (hard limit); the server needs one descriptor per connection")
    workdir = tempfile.mkdtemp(prefix="bench_conns.")
    run_id = secrets.token_hex(3)
    ctx: dict[str, Any] = {
        "procs": args.procs, "redis": args.redis, "secret": secrets.token_hex(24), "prefix": f"lcbench{run_id}",
        "room": f"conns{run_id}", "tick_ms": 0, "source_ips": args.source_ips,
        "connect_concurrency": args.connect_concurrency, "decode_frac": 1.0, "workdir": workdir,
        "settle": args.settle, "channel": "unused", "py_spy": args.py_spy, "storm": args.storm,
        "profile": args.profile, "perf": args.perf,
    }
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": bf.machine(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "config": {"conns": args.conns, "procs": args.procs, "servers": servers, "settle_s": args.settle, "storm": args.storm,
                   "connect_concurrency": args.conns if args.storm else args.connect_concurrency},
        "results": [],
    }
    prog = bf.Progress()
    t0 = time.monotonic()
    try:
        for name in servers:
            report["results"].append(await measure(name, args.conns, ctx, prog))
        if args.tracemalloc:
            for name in servers:
                tm_out = str(Path(workdir) / f"{name}.tm.json")
                try:
                    report["results"].append(await measure(name, args.tracemalloc_conns, ctx, prog, tm_out))
                except RuntimeError as exc:  # keep the RSS figures already measured
                    print(f"tracemalloc run of {name} failed: {exc}", file=sys.stderr)
                    report["results"].append({"server": name, "tracemalloc": True, "error": str(exc)})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    report["machine"]["loadavg_end"] = os.getloadavg()
    plain = [r for r in report["results"] if not r.get("tracemalloc")]
    lc = next((r for r in plain if r["server"] in LC_TRANSPORTS), None)
    bare = next((r for r in plain if r["server"] == "aiohttp"), None)
    if lc and bare and lc.get("connect_per_s") and bare.get("connect_per_s"):
        share = lc["connect_per_s"] / bare["connect_per_s"]
        report["goal"] = {
            "server": lc["server"], "conns_per_s": lc["connect_per_s"], "bare_per_s": bare["connect_per_s"], "share": round(share, 3),
            "verdict_rate": "meets" if lc["connect_per_s"] >= GOAL_CONNS_PER_S else "misses",
            "verdict_share": "meets" if share >= GOAL_SHARE_OF_BARE else "misses",
            "kib_per_conn": lc["rss_per_conn_kib"], "cpu_ms_per_conn": lc["cpu_ms_per_conn"],
        }
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_conns.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--conns", type=int, default=10_000, help="idle connections to open (default 10000)")
    p.add_argument("--procs", type=int, default=4, help="client processes the connections are spread over (default 4)")
    p.add_argument("--servers", default="livecommerce,aiohttp",
                   help="servers to measure, in order: livecommerce (/ws on aiohttp, LC_WS_TRANSPORT=aiohttp), "
                        "livecommerce-own (/ws on the gateway's own transport, LC_WS_TRANSPORT=own), aiohttp (bare "
                        "WebSocketResponse), aiohttp-hb (bare, with the gateway's heartbeat/compress/max_msg_size) "
                        "(default livecommerce,aiohttp)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL for the gateway (default redis://127.0.0.1:6379/0)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to let the server settle before each RSS reading (default 2)")
    p.add_argument("--connect-concurrency", type=int, default=32, help="handshakes in flight per load process (default 32)")
    p.add_argument("--source-ips", type=int, default=32, help="loopback source addresses the clients spread over (default 32)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="also run each server under tracemalloc and print where the per-connection bytes are allocated")
    p.add_argument("--tracemalloc-conns", type=int, default=1000, help="connections for the tracemalloc runs (default 1000)")
    p.add_argument("--storm", action="store_true",
                   help="join storm: each load process starts all its handshakes at once (no cap), one room")
    p.add_argument("--profile", default="", metavar="FILE",
                   help="run the gateway under cProfile over the connect phase only; writes FILE.txt and FILE.pstats")
    p.add_argument("--perf", default="", metavar="FILE",
                   help="record the gateway with Linux perf (-g, 999 Hz; kernel time included) while the connections "
                        "open; {server} in FILE records every server")
    p.add_argument("--py-spy", default="", metavar="FILE",
                   help="record the livecommerce gateway with py-spy while the connections open (.svg, .json "
                        "speedscope or .txt collapsed stacks); {server} in FILE records every server")
    p.add_argument("--out", default="docs/img/bench_conns.json", help="JSON result file ('' to skip; default docs/img/bench_conns.json)")
    p.add_argument("--serve", choices=("aiohttp", "aiohttp-hb"), help="internal: run one bare aiohttp server and exit")
    p.add_argument("--port", type=int, default=0, help="internal, with --serve: port to listen on")
    return p


def main() -> int:
    args = build_parser().parse_args()
    if args.serve:
        _wsload.raise_nofile()
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover
            pass
        serve_aiohttp(args.port, heartbeat=args.serve == "aiohttp-hb")
        return 0
    if args.profile:
        args.profile = os.path.abspath(args.profile)  # the gateway runs in the repository
    report = asyncio.run(main_async(args))
    print_report(report)
    print(f"\nelapsed {report['elapsed_s']} s; load average {report['machine']['loadavg_start'][0]:.2f} -> "
          f"{report['machine']['loadavg_end'][0]:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
