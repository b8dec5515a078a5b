"""HTTP basics: error middleware (the HTTP side of the one error table), health, metrics
(:class:`Health`, served from the ``gateway.routes`` table)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from livecommerce.errors import FrameTooBig, LiveCommerceError, error_fields, wire_error
from livecommerce.ops_redis import OpsRedis

from .core import Gateway
from .validation import MAX_BODY_BYTES

log = logging.getLogger("livecommerce.gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own refusals (no route, wrong method, body over client_max_size ...) as the
# documented error body, with a code a client can switch on
_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    408: "timeout", 411: "length_required", 413: "frame_too_big", 414: "uri_too_long", 415: "unsupported_media_type",
    429: "rate_limited", 431: "headers_too_large",
}


def http_code(status: int) -> str:
    """The error code of an HTTP refusal with no error of its own (aiohttp's, the /ws
    handshake's on both transports)."""
    return _HTTP_CODES.get(status, "internal" if status >= 500 else "bad_request")


def error_body(status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> web.Response:
    """The documented error body; ``details`` (an error's extra fields: ``until_ms``,
    ``retry_after_s``) sit beside code and message."""
    return web.json_response({"error": {"code": code, "message": message, **(details or {})}}, status=status)


def http_exception_body(exc: web.HTTPException) -> web.Response:
    """An aiohttp HTTP error (4xx/5xx) as the documented JSON error, its headers kept
    (``Allow`` of a 405)."""
    status = exc.status
    code = http_code(status)
    message = {404: "no such route: see /api/v1/openapi.json", 413: f"request body is over the {MAX_BODY_BYTES} byte limit"}.get(
        status, exc.reason or code
    )
    resp = error_body(status, code, message)
    for h in ("Allow", "Retry-After"):
        if h in exc.headers:
            resp.headers[h] = exc.headers[h]
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise FrameTooBig(f"request body of {request.content_length} bytes is over the {MAX_BODY_BYTES} byte limit")
        return await handler(request)
    except LiveCommerceError as exc:
        return web.json_response({"error": error_fields(exc)}, status=wire_error(exc).http)
    except json.JSONDecodeError:
        return error_body(400, "bad_json", "request body is not valid JSON")
    except UnicodeError:  # a body that is not UTF-8, or whose \ud800-style escape reached an encoder
        log.info("http.bad_unicode", extra={"path": request.path})
        return error_body(400, "bad_json", "request body must be UTF-8 JSON with valid Unicode strings")
    except RecursionError:  # a structure too deep for the encoder or a recursive rule
        log.warning("http.too_deep", extra={"path": request.path})
        return error_body(400, "bad_request", "a value in the request is nested too deeply")
    except ValueError as exc:  # e.g. a 5,000-digit JSON number, ?limit=abc: malformed input, not our fault
        log.warning("http.bad_value", extra={"path": request.path, "err": repr(exc)[:200]})
        return error_body(400, "invalid", "a value in the request is malformed")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_exception_body(exc)
    except Exception:
        log.exception("http.internal", extra={"path": request.path})
        return error_body(500, "internal", "internal error")


def _json_protocol_errors() -> None:
    """aiohttp answers requests it cannot parse (bad request line, bad headers) before any
    middleware runs, in text/plain: give those the documented JSON error body too."""
    from aiohttp import web_protocol

    original = web_protocol.RequestHandler.handle_error
    if getattr(original, "_lc_json", False):
        return

    def handle_error(self: Any, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return original(self, request, status, exc, message)
        # a client's malformed request: one line in the log, no traceback
        text = (str(exc) if exc is not None else (message or "")).splitlines()[0][:200] if (exc or message) else "bad request"
        log.info("http.unparsable", extra={"status": status, "err": text})
        out = error_body(status, _HTTP_CODES.get(status, "bad_request"), text or "bad request")
        out.force_close()
        return out

    handle_error._lc_json = True  # type: ignore[attr-defined]
    web_protocol.RequestHandler.handle_error = handle_error  # type: ignore[method-assign]


_json_protocol_errors()


class Health:
    """``/healthz``, ``/readyz``, ``/metrics`` and a room's online count."""

    def __init__(self, gw: Gateway, ops_redis: OpsRedis) -> None:
        self.gw = gw  # node id, the draining flag, metrics, hub and broker
        self.ops_redis = ops_redis

    async def healthz(self, request: web.Request) -> web.Response:
        # now_ms: this node's clock, so `livecommerce doctor --gateway URL` can measure skew
        return web.json_response({"ok": True, "node": self.gw.s.node_id, "now_ms": self.gw.now_ms()})

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            await self.ops_redis.ping()
        except Exception as exc:
            return web.json_response({"ok": False, "redis": repr(exc.__cause__ or exc)}, status=503)
        if self.gw.draining:
            return web.json_response({"ok": False, "draining": True}, status=503)
        return web.json_response({"ok": True, "redis": "up"})

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.gw.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def room_stats(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        return web.json_response({"room": room, "online": await self.gw.hub.online(room), "seq": await self.gw.broker.top_seq(room)})
