"""HTTP basics: error middleware (the HTTP side of the one error table), health, metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from livecommerce.errors import FrameTooBig, LiveCommerceError, wire_error

from .core import Gateway

log = logging.getLogger("livecommerce.gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY_BYTES = 64 * 1024  # the application's client_max_size


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise FrameTooBig(f"request body of {request.content_length} bytes is over the {MAX_BODY_BYTES} byte limit")
        return await handler(request)
    except LiveCommerceError as exc:
        we = wire_error(exc)
        return web.json_response(
            {"error": {"code": we.code, "message": exc.message if we.echo else "internal error"}}, status=we.http
        )
    except json.JSONDecodeError:
        return web.json_response({"error": {"code": "bad_json", "message": "request body is not valid JSON"}}, status=400)
    except UnicodeError:  # a body that is not UTF-8, or whose \ud800-style escape reached an encoder
        log.info("http.bad_unicode", extra={"path": request.path})
        return web.json_response(
            {"error": {"code": "bad_json", "message": "request body must be UTF-8 JSON with valid Unicode strings"}}, status=400
        )
    except ValueError as exc:  # e.g. a 5,000-digit JSON number, ?limit=abc: malformed input, not our fault
        log.warning("http.bad_value", extra={"path": request.path, "err": repr(exc)[:200]})
        return web.json_response({"error": {"code": "invalid", "message": "a value in the request is malformed"}}, status=400)
    except web.HTTPRequestEntityTooLarge:  # a body without Content-Length, cut off while read
        return web.json_response(
            {"error": {"code": "frame_too_big", "message": f"request body is over the {MAX_BODY_BYTES} byte limit"}}, status=413
        )
    except web.HTTPException:
        raise
    except Exception:
        log.exception("http.internal", extra={"path": request.path})
        return web.json_response({"error": {"code": "internal", "message": "internal error"}}, status=500)


def setup(gw: Gateway, app: web.Application) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "node": gw.s.node_id})

    async def readyz(request: web.Request) -> web.Response:
        try:
            await gw.redis.ping()
        except Exception as exc:
            return web.json_response({"ok": False, "redis": repr(exc)}, status=503)
        if gw.draining:
            return web.json_response({"ok": False, "draining": True}, status=503)
        return web.json_response({"ok": True, "redis": "up"})

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(gw.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def room_stats(request: web.Request) -> web.Response:
        room = request.match_info["room"]
        return web.json_response({"room": room, "online": await gw.hub.online(room), "seq": await gw.broker.top_seq(room)})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/rooms/{room}/online", room_stats)
