"""``Idempotency-Key`` (and body-level request ids) for HTTP routes.

:func:`idempotent` runs a handler's effect once per (caller, key) and binds the key to the
request it was first used for (:mod:`livecommerce.idempotency`): the same request again gets
the first answer (status and body, with ``Idempotent-Replayed: true``); the key reused for
another route, target or body is 422 ``idempotency_conflict`` and nothing runs; a retry
while the first is still running is 409 ``idempotency_in_flight``. Refusals (4xx) are
answers too and replay as such; "try again" answers (5xx, 429) release the key.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.errors import (
    Conflict,
    IdempotencyConflict,
    LiveCommerceError,
    error_fields,
    wire_error,
)
from livecommerce.idempotency import Stored, check_key, fingerprint, storable

from .core import Gateway

REPLAYED = "Idempotent-Replayed"
A = TypeVar("A")


def header_key(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key`` header, checked (None when absent)."""
    key = request.headers.get("Idempotency-Key")
    return None if key is None else check_key(key)


async def idempotent(
    gw: Gateway,
    request: web.Request,
    ident: Identity,
    *,
    key: str | None,
    target: str,
    body: Any,
    run: Callable[[], Awaitable[web.Response]],
    namespace: str = "http",
    rerun: bool = False,
) -> web.Response:
    """``run()`` once per ``(ident.user, namespace, key)``; see the module docstring.
    Without a key, ``run()`` runs as is. ``rerun``: the operation is idempotent by itself
    (a top-up's own record): a matching retry runs it again, so it answers in its own words
    (``duplicate: true``) instead of the stored first answer; the binding still holds."""
    if key is None:
        return await run()
    route = request.match_info.route.resource
    fp = fingerprint(request.method, route.canonical if route is not None else request.path, target, body)
    return await run_once(gw, ident.user, key=key, fp=fp, run=run, namespace=namespace,
                          keep=lambda resp: None if resp.text is None else Stored(resp.status, resp.text),
                          replay=None if rerun else _replayed)


def _replayed(answer: Stored) -> web.Response:
    return web.Response(status=answer.status, text=answer.body, content_type="application/json", headers={REPLAYED: "true"})


async def run_once(
    gw: Gateway,
    user: str,
    *,
    key: str,
    fp: str,
    run: Callable[[], Awaitable[A]],
    keep: Callable[[A], Stored | None],
    replay: Callable[[Stored], A] | None,
    namespace: str = "http",
) -> A:
    """The transport-agnostic core of :func:`idempotent` (a WebSocket command's
    ``request_id`` binds through it too): ``run()`` once per ``(user, namespace, key)``
    bound to the request fingerprint ``fp``. ``keep`` says how an answer is stored (as the
    HTTP status and body, so either transport can replay the other's); ``replay`` builds the
    answer to a matching retry from the stored one, or None: the retry runs ``run()`` again
    (an operation idempotent by itself, which answers ``duplicate: true``).

    Raises:
        IdempotencyConflict: the key was used for another request (nothing runs).
        Conflict: ``idempotency_in_flight``, the first request is still running.
    """
    scope = f"{user}:{namespace}:{key}"
    begun = await gw.idempotency.begin(scope, fp)
    if begun.outcome == "conflict":
        raise IdempotencyConflict(
            f"the key {key!r} was used for a different request (route, target or body): use a new key for a new request"
        )
    if begun.outcome == "in_flight":
        raise Conflict(f"a request with the key {key!r} is still running: retry in a moment", code="idempotency_in_flight")
    if begun.outcome == "replay" and replay is None:
        return await run()
    if begun.outcome == "replay" and begun.answer is not None:
        assert replay is not None
        return replay(begun.answer)
    try:
        out = await run()
    except LiveCommerceError as exc:
        we = wire_error(exc)
        if storable(we.http):
            await gw.idempotency.finish(scope, fp, Stored(we.http, json.dumps({"error": error_fields(exc)})))
        else:
            await gw.idempotency.release(scope, fp)
        raise
    except BaseException:
        await gw.idempotency.release(scope, fp)
        raise
    stored = keep(out)
    if stored is not None and storable(stored.status):
        await gw.idempotency.finish(scope, fp, stored)
    else:
        await gw.idempotency.release(scope, fp)
    return out
