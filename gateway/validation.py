"""Request input: the one JSON body reader and validation against the OpenAPI document.

* :func:`read_json` is the only way a handler reads a body: at most ``MAX_BODY_BYTES``,
  at most ``MAX_DEPTH`` nested arrays/objects (checked on the bytes before parsing, so a
  3,000-deep array never reaches the recursive parser), UTF-8 JSON; the parsed value is
  cached on the request, so the validator and the handler parse once.
* :func:`page` reads a listing's ``?limit=&offset=``.
* :func:`validation_middleware` checks path parameters, query parameters, headers and the
  JSON body of every documented operation against the schemas of
  :func:`gateway.openapi.document`, the same data ``GET /api/v1/openapi.json`` serves, so
  the document and what the server accepts cannot drift. A violation is a 400 ``invalid``
  naming the parameter; nothing runs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, Forbidden, FrameTooBig
from livecommerce.protocol.codec import json_int

MAX_BODY_BYTES = 64 * 1024  # the application's client_max_size
MAX_DEPTH = 32  # nested arrays/objects in a body
_KEY: Any = web.RequestKey("lc_json", object) if hasattr(web, "RequestKey") else "lc_json"
_ABSENT = object()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Identify = Callable[[web.Request], Identity]

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in ``raw`` (brackets inside strings ignored)."""
    depth = deepest = 0
    for b in _STRINGS.sub(b'""', raw).translate(None, _NOT_BRACKETS):
        if b in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(raw: bytes) -> Any:
    """Parse a request body: bounded size and depth, UTF-8, standard JSON (no NaN).

    Raises:
        FrameTooBig: over ``MAX_BODY_BYTES``.
        BadFrame: ``bad_request`` (too deep), ``bad_json`` (not JSON or not UTF-8).
    """
    if len(raw) > MAX_BODY_BYTES:
        raise FrameTooBig(f"request body of {len(raw)} bytes is over the {MAX_BODY_BYTES} byte limit")
    if json_depth(raw) > MAX_DEPTH:
        raise BadFrame(f"request body nests arrays/objects deeper than {MAX_DEPTH} levels", code="bad_request")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_constant=_no_constant, parse_int=json_int)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError):
        raise BadFrame("request body is not valid UTF-8 JSON", code="bad_json") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request, *, default: Any = _ABSENT) -> Any:
    """The request's JSON body, parsed once. ``default`` is returned for an empty body
    (absent: an empty body is a 400).

    Raises:
        BadFrame / FrameTooBig: see :func:`parse_json`.
    """
    cached = request.get(_KEY, _ABSENT)
    if cached is _ABSENT:
        raw = await request.read() if request.can_read_body else b""
        cached = None if not raw.strip() else parse_json(raw)
        request[_KEY] = cached
    if cached is None:
        if default is _ABSENT:
            raise BadFrame("a JSON body is required", code="bad_json")
        return default
    return cached


async def read_object(request: web.Request, *, required: bool = False) -> dict[str, Any]:
    """The body as a JSON object (``{}`` for an empty body unless ``required``).

    Raises:
        BadFrame: not an object (``invalid``), or see :func:`parse_json`.
    """
    body = await read_json(request) if required else await read_json(request, default={})
    if not isinstance(body, dict):
        raise BadFrame("body must be a JSON object", code="invalid")
    return body


def page(request: web.Request) -> tuple[int, int]:
    """``?limit=`` (1..500, default 100) and ``?offset=`` (>= 0) of a listing.

    Raises:
        BadFrame: not integers (``invalid``).
    """
    try:
        limit = max(1, min(500, int(request.query.get("limit", "100"))))
        offset = max(0, int(request.query.get("offset", "0")))
    except ValueError:
        raise BadFrame("limit and offset must be integers", code="invalid") from None
    return limit, offset


# ------------------------------------------------------------------- OpenAPI-derived rules
def _validator(schema: dict[str, Any], components: dict[str, Any]) -> Draft202012Validator:
    # refs are "#/components/schemas/X": resolve them against the document's components
    return Draft202012Validator({**schema, "components": components})


@dataclass
class Param:
    name: str
    where: str  # path | query | header
    required: bool
    schema: dict[str, Any]
    validator: Draft202012Validator


@dataclass
class Operation:
    params: list[Param] = field(default_factory=list)
    body: Draft202012Validator | None = None
    body_required: bool = False
    signed: bool = False  # the operation needs a token (its `security`)
    roles: tuple[str, ...] = ()  # `x-roles`: only these roles (empty: any signed-in user)


def _coerce(raw: str, schema: dict[str, Any]) -> Any:
    """A query/path/header string as the type its schema declares (raise ValueError)."""
    t = schema.get("type")
    if t == "integer":
        if not re.fullmatch(r"-?\d{1,18}", raw):
            raise ValueError("must be an integer")
        return int(raw)
    if t == "number":
        v = float(raw)
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v
    if t == "boolean":
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise ValueError("must be true or false")
    return raw


def _where(path: Any) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _first_error(v: Draft202012Validator, value: Any) -> str | None:
    """The most relevant violation (``best_match`` looks inside anyOf/oneOf), as
    ``field 'items[1].text': ...``; None when ``value`` is valid."""
    err = best_match(v.iter_errors(value))
    if err is None:
        return None
    where = _where(err.absolute_path)
    msg = err.message if len(err.message) <= 200 else err.message[:200] + "..."
    return f"field {where!r}: {msg}" if where else msg


class RequestRules:
    """Per (method, route template): the compiled checks of its documented operation."""

    def __init__(self, doc: dict[str, Any]) -> None:
        comps = doc.get("components", {})
        self.ops: dict[tuple[str, str], Operation] = {}
        for path, methods in doc.get("paths", {}).items():
            for method, spec in methods.items():
                op = Operation(signed=bool(spec.get("security")), roles=tuple(spec.get("x-roles", ())))
                for p in spec.get("parameters", []):
                    schema = p.get("schema", {})
                    op.params.append(Param(p["name"], p["in"], bool(p.get("required")), schema, _validator(schema, comps)))
                body = spec.get("requestBody")
                if body is not None:
                    schema = body.get("content", {}).get("application/json", {}).get("schema")
                    if schema is not None:
                        op.body = _validator(schema, comps)
                        op.body_required = bool(body.get("required"))
                self.ops[(method.upper(), path)] = op

    async def check(self, request: web.Request, identify: Identify | None = None) -> None:
        """Raise :class:`BadFrame` (``invalid``) naming the first input that breaks the
        document; undocumented routes pass. Who may call comes first, as clients expect:
        a signed operation without a valid token is 401 and one for other roles 403 before
        any input is judged (``identify`` reads the token)."""
        route = request.match_info.route.resource
        if route is None:
            return
        op = self.ops.get((request.method, route.canonical))
        if op is None:
            return
        if op.signed and identify is not None:
            ident = identify(request)  # Unauthorized: 401
            if op.roles and ident.role not in op.roles:
                raise Forbidden(f"this endpoint is for the {' or '.join(op.roles)} role")
        for p in op.params:
            if p.where == "path":
                raw = request.match_info.get(p.name)
            elif p.where == "query":
                vals = request.query.getall(p.name, [])
                if len(vals) > 1:
                    raise BadFrame(f"query parameter {p.name!r} is given {len(vals)} times", code="invalid")
                raw = vals[0] if vals else None
            elif p.where == "header":
                raw = request.headers.get(p.name)
            else:
                continue
            if raw is None:
                if p.required:
                    raise BadFrame(f"{p.where} parameter {p.name!r} is required", code="invalid")
                continue
            try:
                value = _coerce(raw, p.schema)
            except ValueError as exc:
                raise BadFrame(f"{p.where} parameter {p.name!r}: {raw[:40]!r} {exc}", code="invalid") from None
            problem = _first_error(p.validator, value)
            if problem is not None:
                raise BadFrame(f"{p.where} parameter {p.name!r}: {problem}", code="invalid")
        if op.body is not None and request.method in ("POST", "PUT", "PATCH", "DELETE"):
            body = await read_json(request, default=None)
            if body is None:
                if not op.body_required:
                    return
                body = {}  # an empty body reads as {}: the schema says what is missing
            problem = _first_error(op.body, body)
            if problem is not None:
                raise BadFrame(f"body: {problem}", code="invalid")


def validation_middleware(rules: Callable[[], RequestRules], identify: Identify | None = None) -> Any:
    """Check each request against ``rules()`` (built once, on first use) before its handler."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        await rules().check(request, identify)
        return await handler(request)

    return middleware
