"""One client of the gateway, for the CLI, the scripts and the load tests.

* :class:`Client` (:mod:`.http`): the HTTP API, one method per operation named after its
  OpenAPI ``operationId`` (``salesBuy`` -> ``sales_buy``), :meth:`Client.invoke` for the rest;
  errors raise :mod:`.errors` classes carrying ``code``, ``message`` and ``status``; safe
  calls are retried per docs/deploy.md's contract (:mod:`.retry`).
* :class:`LiveSocket` (:mod:`.ws`): ``/ws``, JSON or msgpack: ``welcome`` or the close code at
  once, commands with ids and their replies, events (``batch`` items one by one), ``seq`` gaps.
* :mod:`.wire` and :mod:`.operations`: the same contract without I/O, for other transports
  (locust's gevent users in ``loadtests/lcws.py``).
"""

from __future__ import annotations

from .errors import (
    ApiError,
    BadRequest,
    ClientError,
    Closed,
    CommandError,
    Conflict,
    ConnectRefused,
    Forbidden,
    IdempotencyConflict,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
)
from .http import Answer, Client
from .operations import OPERATIONS, Call, call
from .retry import CONTRACT, NO_RETRY, RetryPolicy
from .ws import LiveSocket, connect

__all__ = [
    "CONTRACT",
    "NO_RETRY",
    "OPERATIONS",
    "Answer",
    "ApiError",
    "BadRequest",
    "Call",
    "Client",
    "ClientError",
    "Closed",
    "CommandError",
    "Conflict",
    "ConnectRefused",
    "Forbidden",
    "IdempotencyConflict",
    "LiveSocket",
    "NotFound",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "call",
    "connect",
]
