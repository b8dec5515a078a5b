"""Builds the aiohttp application of one gateway node and runs it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from livecommerce.broker_redis import RedisBroker
from livecommerce.config import Settings
from livecommerce.errors import CLOSE_RESTART
from livecommerce.redis_conn import connect, is_cluster_url

from . import routes, wiring
from .capabilities import CAPABILITIES as CAPABILITIES  # every module that serves part of the API
from .core import GW_KEY, Gateway
from .gc_policy import GcPolicy
from .http import error_middleware
from .validation import MAX_BODY_BYTES, RequestRules, validation_middleware
from .ws import ws_handler

log = logging.getLogger("livecommerce.gateway.app")

# SIGTERM drains in two steps (``drain_on_sigterm``): first the balancer takes the node out
# (``Settings.drain_deregister_s``), then its viewers move (``Settings.drain_grace_s``).

def build_app(settings: Settings, *, redis: Any = None) -> web.Application:
    """The gateway application. ``redis`` may be given (tests); else LC_REDIS_URL is used."""
    own_redis = redis is None
    if redis is None:
        redis = connect(settings.redis_url)
    broker = RedisBroker(
        redis,
        _keys(settings),
        sharded=is_cluster_url(settings.redis_url),
        history_size=settings.history_size,
        history_ttl_s=settings.history_ttl_s,
    )
    gw = Gateway(settings, redis, broker)
    rules: list[RequestRules] = []

    def request_rules() -> RequestRules:  # the served OpenAPI document, compiled on first use
        if not rules:
            from .openapi import document

            rules.append(RequestRules(document()))
        return rules[0]

    app = web.Application(middlewares=[error_middleware, validation_middleware(request_rules, gw.identify_request)], client_max_size=MAX_BODY_BYTES)
    app[GW_KEY] = gw
    app.router.add_get("/ws", ws_handler)
    services = wiring.build(gw)
    app[wiring.SERVICES_KEY] = services
    for route in routes.http_routes(services):
        app.router.add_route(route.method, route.path, route.handler)
    for static in routes.static_routes():
        app.router.add_static(static.prefix, static.directory, name=static.name, append_version=False)
    for hook in gw.hooks.response:
        app.on_response_prepare.append(hook)
    commands = routes.ws_commands(services)
    for t, handler in commands.items():
        gw.commands[t] = handler

    async def on_startup(app: web.Application) -> None:
        await gw.hub.start()
        for start in gw.hooks.start:
            await start()
        log.info("gateway.started", extra={"node": settings.node_id})

    async def on_shutdown(app: web.Application) -> None:
        # graceful: stop accepting, tell clients to reconnect elsewhere (1012), drain
        closed = await _bounded(close_clients(gw), "close_clients")
        log.info("gateway.drained", extra={"node": settings.node_id, "closed": closed})

    async def on_cleanup(app: web.Application) -> None:
        # every step bounded: a step stuck on a peer or an engine is logged by name and the
        # shutdown goes on, so a stopping gateway always exits (its supervisor's grace is 30 s)
        for stop in gw.hooks.stop:
            try:
                await _bounded(stop(), getattr(stop, "__qualname__", repr(stop)))
            except Exception:
                log.exception("gateway.shutdown_hook_failed")
        for t in gw.bg:
            t.cancel()
        await _bounded(gw.hub.stop(), "hub.stop")
        await _bounded(broker.close(), "broker.close")
        if own_redis:
            await _bounded(redis.aclose(), "redis.aclose")

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


T = TypeVar("T")

#: how long one shutdown step may take before it is given up (logged) and the next one runs
SHUTDOWN_STEP_S = 5.0


async def _bounded(step: Awaitable[T], name: str) -> T | None:
    """``step``, or None when it did not finish within :data:`SHUTDOWN_STEP_S` (logged)."""
    try:
        return await asyncio.wait_for(step, SHUTDOWN_STEP_S)
    except TimeoutError:
        log.warning("gateway.shutdown_step_timeout", extra={"step": name, "timeout_s": SHUTDOWN_STEP_S})
        return None


async def close_clients(gw: Gateway) -> int:
    """Mark the node draining, flush what is pending, take the node out of the rooms' online
    counts and close every client with 1012."""
    gw.draining = True
    await gw.hub.withdraw_presence()
    conns = [c for room in gw.hub.rooms.values() for c in room.all() if not c.link.closed]
    for room in list(gw.hub.rooms.values()):
        gw.hub.flush(room)
    gw.hub.finish_writes()  # every frame whole in the sockets before the close frames
    await asyncio.gather(
        *(c.link.close(code=CLOSE_RESTART, message=b"gateway restarting: reconnect with since=") for c in conns),
        return_exceptions=True,
    )
    return len(conns)


def drain_on_sigterm(deregister_s: float, grace_s: float) -> Any:
    """An ``on_startup`` hook replacing aiohttp's SIGTERM handler (immediate exit) with a
    drain that stops accepting before it moves anyone:

    1. at once: ``/readyz`` answers 503 and a new ``/ws`` is refused with 503 (a balancer
       retries that handshake on another node: ``retry-on 503`` in the generated HAProxy
       config); the node's viewers keep being served, HTTP requests too;
    2. after ``deregister_s`` (longer than the balancer's checks need to mark the node down):
       its viewers are closed with 1012 and reconnect, through the balancer, to the others;
    3. ``grace_s`` later the listener closes and the shutdown hooks run.

    Closing the viewers at once instead (as before) sent their reconnects back to this node,
    which the balancer still listed and, with ``leastconn``, preferred once it was empty: 2 s
    of refused handshakes. A second SIGTERM exits at once."""

    async def install(app: web.Application) -> None:
        gw = app[GW_KEY]
        loop = asyncio.get_running_loop()

        def exit_now() -> None:
            raise web.GracefulExit()

        def move_viewers() -> None:
            gw.spawn(close_clients(gw), "drain")

        def on_term() -> None:
            if gw.draining:
                exit_now()
            gw.draining = True
            log.info("gateway.draining", extra={"node": gw.s.node_id, "deregister_s": deregister_s, "grace_s": grace_s})
            loop.call_later(deregister_s, move_viewers)
            loop.call_later(deregister_s + grace_s, exit_now)

        loop.add_signal_handler(signal.SIGTERM, on_term)

    return install


def _keys(settings: Settings) -> Any:
    from livecommerce.keys import Keys

    return Keys(settings.key_prefix)


def run(settings: Settings, *, port: int | None = None) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    app = build_app(settings)
    app.on_startup.append(drain_on_sigterm(settings.drain_deregister_s, settings.drain_grace_s))  # after aiohttp's own
    if settings.gc_freeze:
        policy = GcPolicy(unfreeze_s=settings.gc_unfreeze_s)
        app[GW_KEY].hub.on_second.append(policy.on_second)

        async def freeze_after_start(app: web.Application) -> None:
            policy.install()

        app.on_startup.append(freeze_after_start)
    _run_until_exit(app, settings, port or settings.port)


async def serve(app: web.Application, settings: Settings, port: int) -> None:
    """Start the node on ``settings.host:port`` (the transport ``settings.ws_transport``
    names serves ``/ws``) and serve until cancelled; then shut it down gracefully."""
    from .wsserver import make_site

    runner = web.AppRunner(app, handle_signals=True, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    try:
        site = make_site(runner, settings, settings.host, port, backlog=settings.listen_backlog)
        await site.start()
        log.info("gateway.listening", extra={"node": settings.node_id, "port": port, "ws_transport": settings.ws_transport})
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _run_until_exit(app: web.Application, settings: Settings, port: int) -> None:
    """What ``web.run_app`` does (a fresh loop, SIGINT/SIGTERM raise ``GracefulExit``, a
    clean shutdown, exit status 0), on a site of the chosen transport."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(serve(app, settings, port))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        finally:
            rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in rest:
                t.cancel()
            if rest:
                loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)
