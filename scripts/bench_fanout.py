#!/usr/bin/env python
"""Fan-out benchmark: one room, N WebSocket clients, one publisher at a target rate.

Runs three servers in the same run, with the same clients, rates and payloads, and prints
them side by side. They run interleaved: all are started and connected first, then each rate
runs on each server in turn (after every server has gone quiet), so that noise from other
work on the machine hits them alike (``--sequential``: one server after the other).

* ``livecommerce``: ``python -m livecommerce.cli gateway`` (a subprocess, Redis broker,
  tick batching); published through ``POST /api/v1/rooms/{room}/announce`` (one aiohttp
  keep-alive session, ``--publishers`` requests in flight) or, with ``--lc-publish redis``,
  straight through the broker's publish script (no HTTP);
* ``socketio``: python-socketio 5 + AsyncRedisManager on aiohttp + uvloop (embedded below),
  published by a write-only AsyncRedisManager, the way an external process emits;
* ``relay``: the "minimal aiohttp + redis-py relay, one frame per message, encoded once"
  baseline of shared/PEER-FIGURES.md (embedded below, about 50 lines), published with
  redis-py PUBLISH.

A message is a ~100-byte event whose ``d`` carries the publish time (``bt``), the step
(``bs``) and its index (``bi``). Clients are raw asyncio WebSocket protocols spread over
``--procs`` processes (see ``_wsload.py``); livecommerce clients decode msgpack frames and
count the items inside ``batch`` frames. A delivery is one message received by one client.

Per step it reports delivered messages/s, p50/p95/p99/max publish-to-receive latency,
loss (expected = published x connected clients, minus received by the end of the drain),
the server's CPU seconds (psutil on the server process) and CPU us per delivery, and the
load generator's CPU. A server stops stepping up once p99 passes ``--stop-p99-ms`` or loss
passes ``--stop-loss``. Results go to a JSON file and a PNG plot (latency against load).

Example: ``python scripts/bench_fanout.py`` (defaults: 2,000 clients, rates 2,10,40,160,320
msgs/s, 5 s each, all three servers: about 1.5 to 2 minutes on a quiet 2-core machine).
Each step row also shows the load generator's, the publisher's and the rest of the machine's
CPU ("other", Redis included), to tell a slow server from a busy machine. Results:
docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _wsload

REPO = Path(__file__).resolve().parent.parent
SERVERS = ("livecommerce", "socketio", "relay", "nchan")


def base(name: str) -> str:
    """Variants: ``livecommerce@100`` runs with LC_TICK_MS=100; ``livecommerce*2`` runs two
    gateway nodes (processes) with the clients split between them; ``livecommerce-json``
    has its clients ask for JSON frames (``format=json``) instead of msgpack;
    ``livecommerce-tick`` runs the gateway with ``LC_FLUSH=tick`` (every room flushed on the
    node's fixed tick, the flush before M2 4/7) instead of the adaptive flush;
    ``livecommerce-broker`` publishes through the gateway's broker publish script from this
    process (no HTTP request per message in the gateway: the fan-out's own ceiling, in the
    same run as the HTTP path); they combine
    (``livecommerce-json-tick*2@100``)."""
    b = name.split("@", 1)[0].split("*", 1)[0]
    for flag in FLAGS:
        b = b.replace(flag, "")
    return b


FLAGS = ("-json", "-tick", "-broker")


def kind_of(name: str) -> str:
    """The load clients' kind for a server name (see ``_wsload``)."""
    if base(name) == "livecommerce" and "-json" in name:
        return "lcj"
    return KIND[base(name)]


def variant(name: str) -> tuple[int, int]:
    """(nodes, tick_ms) of a server name; tick 0 means the gateway's default."""
    for flag in FLAGS:
        name = name.replace(flag, "")
    rest = name[len(base(name)):]
    tick = int(rest.split("@", 1)[1]) if "@" in rest else 0
    nodes = int(rest.split("@", 1)[0][1:]) if rest.startswith("*") else 1
    return nodes, tick
KIND = {"livecommerce": "lc", "socketio": "sio", "relay": "relay", "nchan": "nchan"}


# ====================================================================== embedded peers
def serve_socketio(port: int, redis_url: str, channel: str) -> None:
    """python-socketio peer: AsyncServer + AsyncRedisManager on aiohttp; ``?room=`` joins."""
    from urllib.parse import parse_qs

    import socketio
    from aiohttp import web

    mgr = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=mgr, cors_allowed_origins="*")

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        room = parse_qs(environ.get("QUERY_STRING", "")).get("room", ["bench"])[0]
        await sio.enter_room(sid, room)

    app = web.Application()
    sio.attach(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_relay(port: int, redis_url: str, channel: str) -> None:
    """The minimal relay: aiohttp WebSockets + one redis-py pub/sub connection; each
    message is forwarded as one frame to every client of its room (bytes encoded once,
    by the publisher)."""
    import redis.asyncio as aioredis
    from aiohttp import WSMsgType, web

    rooms: dict[str, set[web.WebSocketResponse]] = {}
    r = aioredis.from_url(redis_url)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    prefix = channel + ":"

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        room = request.query.get("room", "bench")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conns = rooms.setdefault(room, set())
        if not conns:
            await pubsub.subscribe(prefix + room)
        conns.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            conns.discard(ws)
        return ws

    async def reader(app: web.Application) -> None:
        while True:
            if not pubsub.subscribed:
                await asyncio.sleep(0.05)
                continue
            msg = await pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            room = msg["channel"].decode()[len(prefix) :]
            data = msg["data"]
            for ws in list(rooms.get(room, ())):
                if not ws.closed:
                    await ws.send_bytes(data)

    async def start(app: web.Application) -> None:
        app["reader"] = asyncio.get_running_loop().create_task(reader(app))

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.on_startup.append(start)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve(kind: str, port: int, redis_url: str, channel: str) -> None:
    _wsload.raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    {"socketio": serve_socketio, "relay": serve_relay}[kind](port, redis_url, channel)


# ====================================================================== servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.log = log
        self.ps = psutil.Process(proc.pid)
        self.extra: list[Server] = []  # more nodes of a multi-node variant
        self.kids: list[psutil.Process] = []  # worker processes (nginx)

    @property
    def ports(self) -> list[int]:
        return [self.port] + [s.port for s in self.extra]

    def cpu(self) -> float:
        u, s_ = self.cpu_split()
        return u + s_

    def cpu_split(self) -> tuple[float, float]:
        t = self.ps.cpu_times()
        u, s_ = t.user, t.system
        for k in self.kids:
            with contextlib.suppress(psutil.Error):
                kt = k.cpu_times()
                u, s_ = u + kt.user, s_ + kt.system
        for s in self.extra:
            eu, es = s.cpu_split()
            u, s_ = u + eu, s_ + es
        return u, s_

    def rss(self) -> int:
        kids = 0
        for k in self.kids:
            with contextlib.suppress(psutil.Error):
                kids += int(k.memory_info().rss)
        return int(self.ps.memory_info().rss) + kids + sum(s.rss() for s in self.extra)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        for s in self.extra:
            s.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT if self.kids else signal.SIGINT)  # nginx: graceful stop
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_port(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not listen on {server.port} within {timeout}s:\n{server.tail()}")


def lc_env(ctx: dict[str, Any], tick_ms: int = 0, node: int = 0, flush: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LC_REDIS_URL=ctx["redis"],
        LC_SECRET=ctx["secret"],
        LC_KEY_PREFIX=ctx["prefix"],
        LC_NODE_ID=f"bench{os.getpid()}-{node}",
        LC_LOG_LEVEL="WARNING",
        LC_HOST="127.0.0.1",
    )
    env["LC_DATABASE_URL"] = f"sqlite+aiosqlite:///{Path(ctx['workdir']) / 'bench.db'}"
    if tick_ms or ctx["tick_ms"]:
        env["LC_TICK_MS"] = str(tick_ms or ctx["tick_ms"])
    if flush:
        env["LC_FLUSH"] = flush
    return env


def prepare_lc(ctx: dict[str, Any], tick_ms: int = 0, node: int = 0, flush: str = "") -> dict[str, str]:
    """The gateway's environment, with its (throw-away SQLite) schema in place."""
    env = lc_env(ctx, tick_ms, node, flush)
    if not ctx.get("db_ready"):
        res = subprocess.run([sys.executable, "-m", "livecommerce.cli", "db", "upgrade"], env=env,
                             cwd=str(REPO), capture_output=True, text=True, timeout=120)
        if res.returncode not in (0,) and "invalid choice" not in res.stderr:
            raise RuntimeError(f"livecommerce db upgrade failed: {res.stdout}{res.stderr}")
        ctx["db_ready"] = True
    return env


def start_server(name: str, ctx: dict[str, Any], node: int = 0) -> Server:
    nodes, tick = variant(name)
    if node == 0 and nodes > 1:
        first = start_server(name, ctx, node=-1)
        first.extra = [start_server(name, ctx, node=i) for i in range(1, nodes)]
        return first
    node = max(node, 0)
    port = free_port()
    log = Path(ctx["workdir"]) / f"{name}-{node}.log"
    if base(name) == "nchan":
        return start_nchan(name, ctx, port, log)
    out = log.open("wb")
    if base(name) == "livecommerce":
        cmd = [sys.executable, "-m", "livecommerce.cli", "gateway", "--port", str(port)]
        env = prepare_lc(ctx, tick, node, "tick" if "-tick" in name else "")
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", name, "--port", str(port),
               "--redis", ctx["redis"], "--channel", ctx["channel"]]
        env = dict(os.environ)
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    out.close()
    server = Server(name, proc, port, log)
    wait_port(server)
    return server


NCHAN_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {log} warn;
load_module {module};
worker_rlimit_nofile 65535;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /pub {{ nchan_publisher; nchan_channel_id $arg_id; }}
        location = /sub {{ nchan_subscriber websocket; nchan_channel_id $arg_id; }}
    }}
}}
"""
NCHAN_MODULES = ("/usr/lib/nginx/modules/ngx_nchan_module.so", "/usr/share/nginx/modules/ngx_nchan_module.so")


def start_nchan(name: str, ctx: dict[str, Any], port: int, log: Path) -> Server:
    """Nginx with the Nchan module (Debian's ``nginx-light`` + ``libnginx-mod-nchan``), one
    worker, memory storage: subscribers on ``/sub?id=ROOM`` (WebSocket), messages POSTed to
    ``/pub?id=ROOM`` (its own publish path)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    module = next((m for m in NCHAN_MODULES if Path(m).exists()), None)
    if not Path(nginx).exists() or module is None:
        raise SystemExit("nchan needs nginx and its Nchan module: apt-get install -y nginx-light libnginx-mod-nchan")
    d = Path(ctx["workdir"]) / f"{name}-nginx"
    d.mkdir(exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(NCHAN_CONF.format(dir=d, log=log, module=module, port=port))
    out = (d / "stdout.log").open("wb")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(d), "-e", str(log)], stdout=out, stderr=subprocess.STDOUT)
    out.close()
    server = Server(name, proc, port, log)
    wait_port(server)
    server.kids = server.ps.children()  # the worker does the work; the master is counted too
    return server


# ====================================================================== publishers
class Publisher:
    """``publish(d)`` sends one message whose payload dict is ``d``."""

    errors = 0
    last_error = ""

    async def start(self) -> None: ...

    async def publish(self, d: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


class HttpPublisher(Publisher):
    """One aiohttp keep-alive session, ``inflight`` requests at once; an answer outside
    ``ok`` counts as a publish error."""

    inflight = 64
    ok: tuple[int, ...] = (200,)

    async def start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.inflight))

    async def post(self, url: str, body: str, headers: dict[str, str]) -> None:
        async with self.session.post(url, data=body, headers=headers) as resp:
            if resp.status not in self.ok:
                self.errors += 1
                self.last_error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            else:
                await resp.read()

    async def close(self) -> None:
        await self.session.close()


class LcHttpPublisher(HttpPublisher):
    def __init__(self, port: int, room: str, token: str, inflight: int) -> None:
        self.url = f"http://127.0.0.1:{port}/api/v1/rooms/{room}/announce"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.inflight = inflight

    async def publish(self, d: dict[str, Any]) -> None:
        text = d.pop("text")
        await self.post(self.url, json.dumps({"text": text, "data": d}, separators=(",", ":")), self.headers)


class LcRedisPublisher(Publisher):
    """The gateway's own publish path (seq, history, PUBLISH in one script), without HTTP."""

    def __init__(self, redis_url: str, prefix: str, room: str) -> None:
        self.redis_url, self.prefix, self.room = redis_url, prefix, room

    async def start(self) -> None:
        from livecommerce.broker_redis import RedisBroker
        from livecommerce.keys import Keys
        from livecommerce.redis_conn import connect

        self.redis = connect(self.redis_url)
        self.broker = RedisBroker(self.redis, Keys(self.prefix))

    async def publish(self, d: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        env = {"t": "notice", "room": self.room, "ts": now, "d": {"by": "bench-host", **d}}
        await self.broker.publish_room(self.room, env, now_ms=now)

    async def close(self) -> None:
        await self.broker.close()
        await self.redis.aclose()


class SioPublisher(Publisher):
    def __init__(self, redis_url: str, channel: str, room: str) -> None:
        self.redis_url, self.channel, self.room = redis_url, channel, room

    async def start(self) -> None:
        import socketio

        self.mgr = socketio.AsyncRedisManager(self.redis_url, channel=self.channel, write_only=True)

    async def publish(self, d: dict[str, Any]) -> None:
        await self.mgr.emit("notice", {"by": "bench-host", **d}, room=self.room, namespace="/")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.mgr.redis is not None:
                await self.mgr.redis.aclose()


class RelayPublisher(Publisher):
    def __init__(self, redis_url: str, channel: str, room: str) -> None:
        self.redis_url, self.channel, self.room = redis_url, channel, room

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(self.redis_url)
        self.ch = f"{self.channel}:{self.room}"

    async def publish(self, d: dict[str, Any]) -> None:
        env = {"t": "notice", "room": self.room, "ts": int(time.time() * 1000), "d": {"by": "bench-host", **d}}
        await self.redis.publish(self.ch, msgpack.packb(env))

    async def close(self) -> None:
        await self.redis.aclose()


class NchanPublisher(HttpPublisher):
    """Nchan's own publish path: ``POST /pub?id=ROOM`` (keep-alive, ``inflight`` at once)."""

    ok = (200, 201, 202)

    def __init__(self, port: int, room: str, inflight: int) -> None:
        self.url = f"http://127.0.0.1:{port}/pub?id={room}"
        self.room = room
        self.inflight = inflight

    async def publish(self, d: dict[str, Any]) -> None:
        env = {"t": "notice", "room": self.room, "ts": int(time.time() * 1000), "d": {"by": "bench-host", **d}}
        await self.post(self.url, json.dumps(env, separators=(",", ":")), {"Content-Type": "application/json"})


def make_publisher(name: str, server: Server, ctx: dict[str, Any]) -> Publisher:
    room = ctx["room"]
    if base(name) == "nchan":
        return NchanPublisher(server.port, room, ctx["publishers"])
    if base(name) == "livecommerce":
        if ctx["lc_publish"] == "redis" or "-broker" in name:
            return LcRedisPublisher(ctx["redis"], ctx["prefix"], room)
        from livecommerce.auth import issue_token

        tok = issue_token(ctx["secret"], user="bench-host", role="host", rooms=(room,), now_s=int(time.time()), ttl_s=3600)
        return LcHttpPublisher(server.port, room, tok, ctx["publishers"])
    if name == "socketio":
        return SioPublisher(ctx["redis"], ctx["channel"], room)
    return RelayPublisher(ctx["redis"], ctx["channel"], room)


def pad_for(size: int, room: str) -> str:
    """Text padding so that the event (envelope with seq, msgpack) is about ``size`` bytes."""
    env = {"t": "notice", "room": room, "ts": 1_790_000_000_000, "seq": 1_790_000_000_000_001,
           "d": {"text": "", "by": "bench-host", "bs": 1, "bi": 1000, "bt": time.time()}}
    return "x" * max(1, size - len(msgpack.packb(env)) - 1)


# ====================================================================== clients
class Clients:
    def __init__(self, name: str, server: Server, ctx: dict[str, Any], kind: str | None = None) -> None:
        self.name = name
        n, procs = ctx["clients"], max(1, min(ctx["procs"], ctx["clients"]))
        ports = server.ports
        procs = max(procs, len(ports))  # every node gets its own load processes
        mpc = mp.get_context("spawn")
        self.progress = mpc.RawArray("q", procs * _wsload.PROGRESS_SLOTS)
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        ips = _wsload.local_ips(ctx["source_ips"])
        first = 0
        for p in range(procs):
            count = n // procs + (1 if p < n % procs else 0)
            spec = {
                "kind": kind or kind_of(name), "host": "127.0.0.1", "port": ports[p % len(ports)], "room": ctx["room"],
                "first": first, "count": count, "local_ips": ips, "secret": ctx["secret"],
                "concurrency": ctx["connect_concurrency"], "decode_frac": ctx["decode_frac"],
            }
            first += count
            parent, child = mpc.Pipe()
            proc = mpc.Process(target=_wsload.client_process, args=(p, spec, child, self.progress), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def slot(self, k: int) -> int:
        return sum(self.progress[i * _wsload.PROGRESS_SLOTS + k] for i in range(len(self.procs)))

    def connected(self) -> int:
        return self.slot(0)

    def items(self) -> int:
        return self.slot(1)

    def frames(self) -> int:
        return self.slot(2)

    def cpu(self) -> float:
        total = 0.0
        for p in self.ps:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    async def recv(self, pipe: Any, limit_s: float) -> Any:
        deadline = time.monotonic() + limit_s
        while not pipe.poll():
            if time.monotonic() > deadline:
                raise TimeoutError("client process did not answer")
            await asyncio.sleep(0.02)
        return pipe.recv()

    async def wait_ready(self, limit_s: float, progress: Any) -> dict[str, Any]:
        out = {"ready": 0, "failed": 0, "seconds": 0.0, "other": {}}
        for pipe in self.pipes:
            deadline = time.monotonic() + limit_s
            while not pipe.poll():
                if time.monotonic() > deadline:
                    raise TimeoutError("clients did not connect in time")
                progress()
                await asyncio.sleep(0.1)
            kind, info = pipe.recv()
            assert kind == "ready", kind
            out["ready"] += info["ready"]
            out["failed"] += info["failed"]
            out["seconds"] = max(out["seconds"], info["seconds"])
            for k, v in info["other"].items():
                out["other"][k] = out["other"].get(k, 0) + v
        return out

    def begin(self, step: int) -> None:
        for pipe in self.pipes:
            pipe.send(("step", step))

    async def collect(self, step: int) -> list[dict[str, Any]]:
        for pipe in self.pipes:
            pipe.send(("collect", step))
        res = []
        for pipe in self.pipes:
            msg = await self.recv(pipe, 20)
            if msg[2] is not None:
                res.append(msg[2])
        return res

    async def stop(self) -> dict[str, Any]:
        info: dict[str, Any] = {"closed": 0, "other": {}}
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                msg = await self.recv(pipe, 10)
                if msg[0] == "bye":
                    info["closed"] += msg[1]["closed"]
                    for k, v in msg[1]["other"].items():
                        info["other"][k] = info["other"].get(k, 0) + v
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        return info


def percentiles(hist: dict[int, int], qs: tuple[float, ...]) -> list[float | None]:
    total = sum(hist.values())
    if not total:
        return [None for _ in qs]
    keys = sorted(hist)
    out = []
    for q in qs:
        want = q * total
        acc = 0
        val = keys[-1]
        for k in keys:
            acc += hist[k]
            if acc >= want:
                val = k
                break
        out.append((val + 0.5) / _wsload.HIST_RES * 1000)  # ms, bucket middle
    return out


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def own_cpu() -> float:
    """CPU seconds of this process (the publisher and the orchestration)."""
    t = os.times()
    return t.user + t.system


# ====================================================================== a run
class Progress:
    def __init__(self) -> None:
        self.line = ""
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 1.0:
            return
        self.last = now
        if self.tty:
            sys.stderr.write("\r" + text.ljust(len(self.line)))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
        self.line = text

    def done(self) -> None:
        if self.tty and self.line:
            sys.stderr.write("\n")
        self.line = ""


async def run_step(name: str, si: int, rate: float, ctx: dict[str, Any], server: Server,
                   clients: Clients, pub: Publisher, prog: Progress, nsteps: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    n = max(1, round(rate * ctx["duration"]))
    conns = clients.connected()
    items0, frames0 = clients.items(), clients.frames()
    cpu0, ccpu0 = server.cpu(), clients.cpu()
    (u0, s0), busy0, me0 = server.cpu_split(), machine_busy(), own_cpu()
    sem = asyncio.Semaphore(ctx["publishers"])
    mark = _wsload.step_marker(si)
    text = mark + ctx["pad"][len(mark):]
    sent = 0
    errors0 = pub.errors
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        try:
            await pub.publish({"text": text, "bs": si, "bi": i, "bt": time.time()})
        except Exception as exc:
            pub.errors += 1
            pub.last_error = repr(exc)
        finally:
            sem.release()

    def show(phase: str, force: bool = False) -> None:
        el = max(1e-6, time.time() - t0)
        got = clients.items() - items0
        prog.show(
            f"[{name}] step {si + 1}/{nsteps} {rate:g} msg/s {phase}: published {sent}/{n}, "
            f"delivered {got:,} ({got / el:,.0f}/s), conns {clients.connected():,}, "
            f"server cpu {(server.cpu() - cpu0) / el * 100:.0f}%, load-gen cpu {(clients.cpu() - ccpu0) / el * 100:.0f}%",
            force,
        )

    clients.begin(si)
    await asyncio.sleep(0.05)
    t0 = time.time()
    start = loop.time() + 0.02
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await sem.acquire()
        tasks.append(loop.create_task(one(i)))
        sent += 1
        show("publishing")
    await asyncio.gather(*tasks)
    t_pub = time.time()
    published = n - (pub.errors - errors0)
    expected = published * conns
    # drain: until everything arrived, nothing moved for 1 s, or --drain seconds passed
    last_items, last_move = clients.items(), time.monotonic()
    deadline = time.monotonic() + ctx["drain"]
    while time.monotonic() < deadline:
        got = clients.items()
        if got - items0 >= expected:
            break
        if got != last_items:
            last_items, last_move = got, time.monotonic()
        elif time.monotonic() - last_move > 1.0:
            break
        show("draining")
        await asyncio.sleep(0.05)
    t1 = time.time()
    cpu = server.cpu() - cpu0
    ccpu = clients.cpu() - ccpu0
    (u1, s1), busy1, me1 = server.cpu_split(), machine_busy(), own_cpu()
    other = (busy1 - busy0) - cpu - ccpu - (me1 - me0)
    frames = clients.frames() - frames0
    show("done", force=True)
    parts = await clients.collect(si)
    hist: dict[int, int] = {}
    received = 0
    last = t0
    for p in parts:
        received += p["count"]
        last = max(last, p["last"])
        for k, v in p["hist"].items():
            hist[int(k)] = hist.get(int(k), 0) + v
    p50, p95, p99, pmax = percentiles(hist, (0.5, 0.95, 0.99, 1.0))
    window = max(last, t_pub) - t0
    row = {
        "server": name,
        "step": si,
        "rate": rate,
        "published": published,
        "publish_errors": pub.errors - errors0,
        "achieved_rate": round(n / max(1e-9, t_pub - t0), 1),
        "clients": conns,
        "expected": expected,
        "received": received,
        "loss": expected - received,
        "loss_frac": (expected - received) / expected if expected else 0.0,
        "deliveries_s": received / window if window > 0 else 0.0,
        "frames_s": frames / window if window > 0 else 0.0,
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": pmax,
        "server_cpu_s": round(cpu, 3),
        "server_cpu_pct": round(cpu / (t1 - t0) * 100, 1),
        "cpu_us_per_delivery": cpu / received * 1e6 if received else None,
        "server_user_s": round(u1 - u0, 3),
        "server_sys_s": round(s1 - s0, 3),
        "loadgen_cpu_pct": round(ccpu / (t1 - t0) * 100, 1),
        "publisher_cpu_pct": round((me1 - me0) / (t1 - t0) * 100, 1),
        "other_cpu_pct": round(max(0.0, other) / (t1 - t0) * 100, 1),
        "window_s": round(window, 3),
        "wall_s": round(t1 - t0, 3),
    }
    if pub.errors - errors0:
        row["publish_last_error"] = pub.last_error
    return row


class Run:
    """One server under test: its process, clients, publisher, results."""

    def __init__(self, name: str, room: str) -> None:
        self.name = name
        self.room = room
        self.out: dict[str, Any] = {"server": name, "steps": [], "room": room}
        self.server: Server | None = None
        self.clients: Clients | None = None
        self.pub: Publisher | None = None
        self.py_spy: subprocess.Popen[bytes] | None = None
        self.active = False


async def setup_run(run: Run, ctx: dict[str, Any], prog: Progress) -> None:
    name, out = run.name, run.out
    ctx = dict(ctx, room=run.room)  # a room (and so a channel) of its own: servers are up together
    print(f"== {name}: starting server", file=sys.stderr)
    server = run.server = start_server(name, ctx)
    await asyncio.sleep(0.5)
    out["rss_idle_bytes"] = server.rss()
    clients = run.clients = Clients(name, server, ctx)
    t0 = time.monotonic()

    def connecting() -> None:
        prog.show(f"[{name}] connecting: {clients.connected():,}/{ctx['clients']:,} "
                  f"({time.monotonic() - t0:.1f}s)")

    ready = await clients.wait_ready(180, connecting)
    prog.show(f"[{name}] connected {ready['ready']:,}/{ctx['clients']:,} in {ready['seconds']:.1f}s, "
              f"failed {ready['failed']}", force=True)
    prog.done()
    out["connect"] = ready
    await asyncio.sleep(0.5)
    out["rss_connected_bytes"] = server.rss()
    if not ready["ready"]:
        raise RuntimeError(f"no client connected to {name}: {ready['other']}\n{server.tail()}")
    run.pub = make_publisher(name, server, ctx)
    await run.pub.start()
    # warm-up: a few messages to open the publish path and the subscriptions
    for i in range(5):
        await run.pub.publish({"text": ctx["pad"], "bs": -1, "bi": i, "bt": time.time()})
    await asyncio.sleep(0.5)
    await clients.collect(-1)
    if ctx["py_spy"] and (base(name) == "livecommerce" or "{server}" in ctx["py_spy"]):
        run.py_spy = start_py_spy(server.proc.pid, ctx["py_spy"].replace("{server}", name))
    run.active = True


def start_py_spy(pid: int, target: str) -> subprocess.Popen[bytes]:
    fmt = {".json": "speedscope", ".txt": "raw"}.get(Path(target).suffix, "flamegraph")
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "-o", target, "--format", fmt],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


async def teardown_run(run: Run) -> None:
    if run.server is None:
        return
    run.active = False
    out = run.out
    with contextlib.suppress(Exception):
        out["rss_end_bytes"] = run.server.rss()
    if run.py_spy is not None:
        run.py_spy.send_signal(signal.SIGINT)
        try:
            _, err = await asyncio.to_thread(run.py_spy.communicate, timeout=60)
            if run.py_spy.returncode:
                print(f"py-spy: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        except subprocess.TimeoutExpired:
            run.py_spy.kill()
        run.py_spy = None
    if run.pub is not None:
        with contextlib.suppress(Exception):
            await run.pub.close()
        run.pub = None
    if run.clients is not None:
        info = await run.clients.stop()
        out["client_closed_by_server"] = info["closed"]
        out["client_other_frames"] = info["other"]
        run.clients = None
    await asyncio.to_thread(run.server.stop)
    run.server = None


async def settle(runs: list[Run], limit: float = 5.0) -> None:
    """Wait until every server still up is quiet (< 10% of a core), at most ``limit`` s,
    so that one server's backlog does not eat the next one's step."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        servers = [r.server for r in runs if r.server is not None]
        before = [s.cpu() for s in servers]
        await asyncio.sleep(0.25)
        if all((s.cpu() - b) / 0.25 < 0.10 for s, b in zip(servers, before, strict=True)):
            return


async def step_run(run: Run, si: int, rate: float, ctx: dict[str, Any], prog: Progress, nsteps: int) -> None:
    assert run.server and run.clients and run.pub
    row = await run_step(run.name, si, rate, ctx, run.server, run.clients, run.pub, prog, nsteps)
    prog.done()
    run.out["steps"].append(row)
    print(fmt_row(row), file=sys.stderr)
    reason = None
    if row["p99_ms"] is None or row["p99_ms"] > ctx["stop_p99_ms"]:
        reason = f"p99 over {ctx['stop_p99_ms']:g} ms"
    elif row["loss_frac"] > ctx["stop_loss"]:
        reason = f"loss over {ctx['stop_loss']:.0%}"
    if reason and si + 1 < nsteps:
        run.out["stopped"] = f"after {rate:g} msg/s: {reason}"
        print(f"   {run.name}: saturated ({reason}); skipping higher rates", file=sys.stderr)
        await teardown_run(run)


def fmt_row(r: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    cpu = r["cpu_us_per_delivery"]
    return (
        f"   {r['server']:<12} {r['rate']:>6g}/s -> {r['deliveries_s']:>10,.0f} deliv/s  "
        f"p50 {ms(r['p50_ms'])} p95 {ms(r['p95_ms'])} p99 {ms(r['p99_ms'])} max {ms(r['max_ms'])} ms  "
        f"loss {r['loss']:,}  srv cpu {r['server_cpu_pct']:.0f}% "
        f"({'-' if cpu is None else f'{cpu:.2f}'} us/deliv, sys {r['server_sys_s'] / max(1e-9, r['server_cpu_s']):.0%})  "
        f"gen {r['loadgen_cpu_pct']:.0f}% pub {r['publisher_cpu_pct']:.0f}% other {r['other_cpu_pct']:.0f}%"
        + (f"  PUBLISHER-BOUND: {r['achieved_rate']:g} msg/s published" if r["achieved_rate"] < 0.9 * r["rate"] else "")
    )


# ====================================================================== summary
def summarize(res: dict[str, Any]) -> dict[str, Any]:
    steps = [s for s in res["steps"] if s["received"]]
    ok = [s for s in steps if s["loss"] == 0 and s["p99_ms"] is not None and s["p99_ms"] < 100]
    best = max(ok, key=lambda s: s["rate"]) if ok else None
    top = max(steps, key=lambda s: s["deliveries_s"]) if steps else None
    return {
        "best_rate_p99_lt_100ms": best["rate"] if best else None,
        "deliveries_s_at_best": best["deliveries_s"] if best else None,
        "p99_ms_at_best": best["p99_ms"] if best else None,
        "max_deliveries_s": top["deliveries_s"] if top else None,
        "rate_at_max": top["rate"] if top else None,
        "p50_ms_at_max": top["p50_ms"] if top else None,
        "p99_ms_at_max": top["p99_ms"] if top else None,
        "cpu_us_per_delivery_at_max": top["cpu_us_per_delivery"] if top else None,
        "achieved_rate_at_max": top["achieved_rate"] if top else None,
        "min_cpu_us_per_delivery": min((s["cpu_us_per_delivery"] for s in steps), default=None),
        "rss_per_conn_kib": (
            (res["rss_connected_bytes"] - res["rss_idle_bytes"]) / 1024 / res["connect"]["ready"]
            if res.get("connect", {}).get("ready") else None
        ),
    }


def ratios(lc: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    ls, ps = lc["summary"], peer["summary"]

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    # the issue's target: lc deliveries/s at a p99 equal to or better than the peer's
    # p99 at the peer's best throughput
    at_equal = None
    if ps["p99_ms_at_max"] is not None:
        cands = [s["deliveries_s"] for s in lc["steps"]
                 if s["received"] and s["p99_ms"] is not None and s["p99_ms"] <= ps["p99_ms_at_max"]
                 and s["loss_frac"] <= 0.001]
        at_equal = div(max(cands) if cands else None, ps["max_deliveries_s"])
    return {
        "max_deliveries": div(ls["max_deliveries_s"], ps["max_deliveries_s"]),
        "deliveries_at_equal_or_better_p99": at_equal,
        "best_rate_p99_lt_100ms": div(ls["best_rate_p99_lt_100ms"], ps["best_rate_p99_lt_100ms"]),
        "cpu_per_delivery_peer_over_lc": div(ps["cpu_us_per_delivery_at_max"], ls["cpu_us_per_delivery_at_max"]),
    }


def print_report(report: dict[str, Any]) -> None:
    results = report["results"]
    print()
    print(f"fan-out: {report['config']['clients']:,} clients in one room, {report['config']['procs']} load processes, "
          f"{report['config']['duration']:g} s per step, ~{report['config']['payload']} B events, "
          f"livecommerce published via {report['config']['lc_publish']}")
    print()
    print("per step:")
    for res in results:
        for s in res["steps"]:
            print(fmt_row(s))
        if res.get("stopped"):
            print(f"   {res['server']:<12} stopped {res['stopped']}")
    print()
    names = [r["server"] for r in results]
    w = max([16, *(len(n) + 2 for n in names)])
    head = f"{'':34}" + "".join(f"{n:>{w}}" for n in names)
    print(head)

    def line(label: str, key: str, fmt: str) -> None:
        cells = []
        for r in results:
            v = r["summary"].get(key)
            cells.append(f"{'-' if v is None else format(v, fmt):>{w}}")
        print(f"{label:34}" + "".join(cells))

    line("best rate with p99 < 100 ms (msg/s)", "best_rate_p99_lt_100ms", "g")
    line("deliveries/s there", "deliveries_s_at_best", ",.0f")
    line("max deliveries/s", "max_deliveries_s", ",.0f")
    line("  at rate (msg/s)", "rate_at_max", "g")
    line("  p50 there (ms)", "p50_ms_at_max", ".1f")
    line("  p99 there (ms)", "p99_ms_at_max", ".1f")
    line("  server CPU us/delivery there", "cpu_us_per_delivery_at_max", ".2f")
    line("  published msg/s there", "achieved_rate_at_max", "g")
    line("lowest server CPU us/delivery", "min_cpu_us_per_delivery", ".2f")
    line("server RSS per connection (KiB)", "rss_per_conn_kib", ".1f")
    if report.get("ratios"):
        print()
        for peer, rt in report["ratios"].items():
            def f(v: float | None) -> str:
                return "-" if v is None else f"{v:.2f}x"

            print(f"livecommerce vs {peer}: max deliveries/s {f(rt['max_deliveries'])}, "
                  f"deliveries/s at equal-or-better p99 {f(rt['deliveries_at_equal_or_better_p99'])}, "
                  f"best rate with p99<100ms {f(rt['best_rate_p99_lt_100ms'])}, "
                  f"CPU/delivery {peer}/livecommerce {f(rt['cpu_per_delivery_peer_over_lc'])}")


    print_goals(results)


def goals(results: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Issue 18's fan-out goals against this run: (goal, server, measured, status). The
    same-run reference for each is the best peer (Nchan when it ran) in the same table."""
    out: list[tuple[str, str, str, str]] = []
    lcs = [r for r in results if base(r["server"]) == "livecommerce"]

    def clean(st: dict[str, Any]) -> bool:
        return st["p99_ms"] is not None and st["loss"] == 0

    for r in lcs:
        steps = [st for st in r["steps"] if st["received"]]
        hi = max((st["rate"] for st in steps), default=0)
        upto = [st for st in steps if st["rate"] <= 480]
        ok = bool(upto) and hi >= 480 and all(clean(st) and st["p99_ms"] < 100 for st in upto)
        worst = max((st["p99_ms"] or float("inf") for st in upto), default=None)
        out.append(("p99 < 100 ms for every rate up to 480 msg/s, zero loss", r["server"],
                    f"worst p99 {worst:.1f} ms up to {min(hi, 480):g} msg/s" if worst is not None else "-",
                    "met" if ok else "not met"))
        low = [st for st in steps if st["rate"] < 40]
        lw = max((st["p99_ms"] or float("inf") for st in low), default=None)
        out.append(("p99 < 50 ms below 40 msg/s", r["server"], "-" if lw is None else f"worst p99 {lw:.1f} ms",
                    "met" if low and lw is not None and lw < 50 and all(clean(st) for st in low) else "not met"))
        high = [st for st in steps if st["rate"] >= 160 and st["cpu_us_per_delivery"] is not None]
        hw = max((st["cpu_us_per_delivery"] for st in high), default=None)
        rates = ", ".join(format(st["rate"], "g") for st in high)
        out.append(("<= 0.5 us server CPU per delivery from 160 msg/s up", r["server"],
                    "-" if hw is None else f"worst {hw:.2f} us (rates {rates})",
                    "met" if high and hw is not None and hw <= 0.5 else "not met"))
    # the same-run floor of CPU per delivery with one send() per viewer per tick: the least
    # system time per frame any server spent (the kernel's share of a send on this machine),
    # over the events a tick carries at that rate
    per_frame = [st["server_sys_s"] / st["window_s"] / st["frames_s"] * 1e6 for r in results for st in r["steps"]
                 if st.get("frames_s") and st.get("window_s") and st.get("server_sys_s") is not None]
    if per_frame:
        k = min(per_frame)
        tick = 0.05
        floors = ", ".join(f"{rate:g}/s {k / max(1.0, rate * tick):.2f} us" for rate in sorted({st["rate"] for r in lcs for st in r["steps"]
                                                                                                  if st["rate"] >= 160}))
        out.append(("ceiling: kernel send() per frame (least system time per frame in this run)", "all", f"{k:.1f} us", "-"))
        if floors:
            out.append(("ceiling: that alone per delivery at one frame per 50 ms tick", "all", floors, "-"))
    js = {r["server"].replace("-json", ""): r for r in lcs if "-json" in r["server"]}
    for r in lcs:
        j = js.get(r["server"])
        if j is None or "-json" in r["server"]:
            continue
        pairs = []
        for st in r["steps"]:
            other = next((o for o in j["steps"] if o["rate"] == st["rate"]), None)
            if other and st["cpu_us_per_delivery"] and other["cpu_us_per_delivery"]:
                pairs.append((st["rate"], st["cpu_us_per_delivery"], other["cpu_us_per_delivery"]))
        if pairs:
            worse = [p for p in pairs if p[1] > p[2] * 1.05]
            txt = "; ".join(f"{rate:g}/s {m:.2f} vs {jj:.2f}" for rate, m, jj in pairs)
            out.append(("msgpack server CPU/delivery <= JSON's end to end (5 % margin; the codec alone: scripts/bench_codec.py)", r["server"], txt,
                        "met" if not worse else f"not met at {', '.join(f'{p[0]:g}' for p in worse)} msg/s"))
    return out


def print_goals(results: list[dict[str, Any]]) -> None:
    rows = goals(results)
    if not rows:
        return
    print()
    print("issue 18 goals (this run; the peers above are the same-run reference):")
    for goal, server, measured, status in rows:
        print(f"  [{status}] {server}: {goal}: {measured}")


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    fixed = {"livecommerce": "tab:blue", "socketio": "tab:red", "relay": "tab:green", "nchan": "tab:gray"}
    spare = iter(["tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"])
    colors = {res["server"]: fixed.get(res["server"]) or next(spare, "black") for res in report["results"]}
    for res in report["results"]:
        steps = [s for s in res["steps"] if s["received"]]
        if not steps:
            continue
        c = colors[res["server"]]
        x = [s["deliveries_s"] for s in steps]
        ax1.plot(x, [s["p99_ms"] for s in steps], "o-", color=c, label=f"{res['server']} p99")
        ax1.plot(x, [s["p50_ms"] for s in steps], "x--", color=c, alpha=0.6, label=f"{res['server']} p50")
        for s in steps:
            ax1.annotate(f"{s['rate']:g}/s", (s["deliveries_s"], s["p99_ms"]), fontsize=7,
                         textcoords="offset points", xytext=(3, 3))
        ax2.plot([s["rate"] for s in steps], [s["cpu_us_per_delivery"] for s in steps], "o-", color=c,
                 label=res["server"])
    from matplotlib.ticker import NullFormatter

    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax1.axhline(100, color="grey", lw=0.8, ls=":")
    ax1.set_xlabel("delivered messages/s (all clients)")
    ax1.set_ylabel("publish-to-receive latency (ms)")
    ax1.set_title(f"latency vs load, {report['config']['clients']:,} clients, one room")
    ax1.legend(fontsize=7)
    ax1.grid(True, which="both", alpha=0.3)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("published msgs/s into the room")
    ax2.set_ylabel("server CPU us per delivery")
    ax2.set_title("server CPU cost per delivery")
    ax2.legend(fontsize=7)
    ax2.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{report['machine']['cpu']} x{report['machine']['nproc']}, {report['date']}", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "loadavg_start": os.getloadavg(),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in str(args.rate).split(",") if r.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if len(set(servers)) != len(servers):
        raise SystemExit("a server is listed twice in --servers")
    for s in servers:
        try:
            nodes, _ = variant(s)
        except ValueError:
            nodes = 0
        if base(s) not in SERVERS or nodes < 1 or (s != base(s) and base(s) != "livecommerce"):
            raise SystemExit(f"unknown server {s!r}; choose from {', '.join(SERVERS)}")
    nofile = _wsload.raise_nofile()
    per_proc = args.clients / max(1, args.procs)
    if per_proc + 100 > nofile or args.clients + 100 > nofile:
        print(f"warning: RLIMIT_NOFILE is {nofile}; {args.clients} clients may not fit", file=sys.stderr)
    run_id = secrets.token_hex(3)
    workdir = tempfile.mkdtemp(prefix="bench_fanout.")
    ctx: dict[str, Any] = {
        "clients": args.clients, "procs": args.procs, "rates": rates, "duration": args.duration,
        "drain": args.drain, "publishers": args.publishers, "redis": args.redis,
        "secret": secrets.token_hex(24), "prefix": f"lcbench{run_id}", "channel": f"bench{run_id}",
        "room": f"bench{run_id}", "tick_ms": args.tick_ms, "lc_publish": args.lc_publish,
        "stop_p99_ms": args.stop_p99_ms, "stop_loss": args.stop_loss,
        "connect_concurrency": args.connect_concurrency, "source_ips": args.source_ips,
        "workdir": workdir, "pad": pad_for(args.payload, f"bench{run_id}"),
        "py_spy": args.py_spy, "decode_frac": args.decode_frac,
    }
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "config": {k: ctx[k] for k in ("clients", "procs", "rates", "duration", "drain", "publishers",
                                       "tick_ms", "lc_publish", "decode_frac")} | {"payload": args.payload},
        "results": [],
    }
    prog = Progress()
    t_start = time.monotonic()
    runs = [Run(name, f"{ctx['room']}-{i}") for i, name in enumerate(servers)]
    try:
        if args.sequential:
            for run in runs:
                await setup_run(run, ctx, prog)
                for si, rate in enumerate(rates):
                    if run.active:
                        await step_run(run, si, rate, ctx, prog, len(rates))
                await teardown_run(run)
        else:
            # interleaved: every server up at once (idle between its steps), and each rate
            # run on each server back to back, so that the machine's noise hits them alike
            for run in runs:
                await setup_run(run, ctx, prog)
            for si, rate in enumerate(rates):
                for run in runs:
                    if run.active:
                        await settle(runs)
                        await step_run(run, si, rate, ctx, prog, len(rates))
    finally:
        for run in runs:
            await teardown_run(run)
        for run in runs:
            run.out["summary"] = summarize(run.out)
            report["results"].append(run.out)
        if args.keep_logs:
            print(f"server logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["elapsed_s"] = round(time.monotonic() - t_start, 1)
    by = {r["server"]: r for r in report["results"]}
    if "livecommerce" in by:
        report["ratios"] = {p: ratios(by["livecommerce"], by[p]) for p in by if p != "livecommerce"}

    return report


def finish(report: dict[str, Any], args: argparse.Namespace) -> None:
    print_report(report)
    print(f"\nelapsed {report['elapsed_s']} s; load average {report['machine']['loadavg_start'][0]:.2f} "
          f"-> {report['machine']['loadavg_end'][0]:.2f} (other work on the machine adds noise)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.out}")
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_fanout.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clients", type=int, default=2000, help="WebSocket clients in the one room (default 2000)")
    p.add_argument("--procs", type=int, default=4, help="client (load generator) processes the clients are spread over (default 4)")
    p.add_argument("--rate", default="2,10,40,160,320",
                   help="published msgs/s into the room; a comma list runs one step per rate, lowest first "
                        "(default 2,10,40,160,320)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of publishing per step (default 5)")
    p.add_argument("--drain", type=float, default=3.0,
                   help="after a step, wait at most this long for late messages; what has not arrived "
                        "by then counts as loss (default 3)")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help="which servers to run, in order, comma separated: livecommerce, socketio, relay, nchan "
                        "(nginx + Nchan, Debian's nginx-light and libnginx-mod-nchan) (default all); "
                        "livecommerce-json asks for JSON frames, livecommerce-tick runs LC_FLUSH=tick; "
                        "livecommerce@TICK adds a livecommerce variant run with LC_TICK_MS=TICK, livecommerce*N one "
                        "with N gateway nodes (processes) sharing the clients; they combine: livecommerce*2@100 "
                        "(A/B in one run)")
    p.add_argument("--payload", type=int, default=100, help="approximate bytes of one event, msgpack-encoded (default 100)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL for every server (default redis://127.0.0.1:6379/0)")
    p.add_argument("--lc-publish", choices=("http", "redis"), default="http",
                   help="livecommerce publish path: http = POST /api/v1/rooms/{room}/announce (default); "
                        "redis = the broker's publish script straight from this process, no HTTP")
    p.add_argument("--publishers", type=int, default=64,
                   help="publish calls in flight at once (HTTP keep-alive connections for livecommerce; default 64)")
    p.add_argument("--tick-ms", type=int, default=0, help="LC_TICK_MS for the livecommerce gateway (default: its own, 50)")
    p.add_argument("--stop-p99-ms", type=float, default=1000.0,
                   help="stop raising the rate for a server once a step's p99 exceeds this (default 1000)")
    p.add_argument("--stop-loss", type=float, default=0.05,
                   help="stop raising the rate for a server once a step loses more than this fraction (default 0.05)")
    p.add_argument("--connect-concurrency", type=int, default=64, help="handshakes in flight per load process (default 64)")
    p.add_argument("--source-ips", type=int, default=16,
                   help="loopback source addresses (127.0.1.2 ...) the clients spread over (default 16)")
    p.add_argument("--out", default="docs/img/bench_fanout.json", help="JSON result file ('' to skip; default docs/img/bench_fanout.json)")
    p.add_argument("--plot", default="docs/img/bench_fanout.png", help="PNG plot of latency vs load ('' to skip; default docs/img/bench_fanout.png)")
    p.add_argument("--py-spy", default="", metavar="FILE",
                   help="record the livecommerce gateway with py-spy during its steps into FILE "
                        "(.svg flame graph, .json speedscope, .txt collapsed stacks); put {server} in FILE to record every "
                        "server; needs py-spy and ptrace rights")
    p.add_argument("--decode-frac", type=float, default=0.1,
                   help="fraction of clients that decode every frame and time every message (latency "
                        "percentiles come from them); the others count the events inside each frame with "
                        "a byte scan, without decoding, so the load generator stays light (default 0.1; "
                        "1 = every client decodes everything)")
    p.add_argument("--sequential", action="store_true",
                   help="run the servers one after another (all steps of one, then the next) instead of "
                        "interleaved (all servers connected at once, each rate run on each server in turn)")
    p.add_argument("--from-json", metavar="FILE", default="",
                   help="run nothing: print the report of an earlier JSON result and redraw its plot (--plot)")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (their temp folder is printed)")
    p.add_argument("--serve", choices=("socketio", "relay"), help="internal: run one embedded peer server and exit")
    p.add_argument("--port", type=int, default=0, help="internal, with --serve: port to listen on")
    p.add_argument("--channel", default="bench", help="internal, with --serve: Redis channel (prefix)")
    return p


def main() -> int:
    args = build_parser().parse_args()
    if args.from_json:
        finish(json.loads(Path(args.from_json).read_text()), argparse.Namespace(**dict(vars(args), out="")))
        return 0
    if args.serve:
        serve(args.serve, args.port, args.redis, args.channel)
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    finish(asyncio.run(main_async(args)), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
