"""What the client raises: the gateway's answers mapped to one tree, each carrying the
wire's ``code`` and ``message``, the HTTP ``status`` (0 when there was no answer) and the
error's extra fields (``details``: ``until_ms``, ``retry_after_s`` ...)::

    ClientError (LiveCommerceError)
    ├── ApiError            an HTTP error answer: {"error": {"code", "message", ...}}
    │   ├── BadRequest      400, 413                      (also an errors.BadFrame)
    │   ├── Unauthorized    401                           (errors.Unauthorized)
    │   ├── Forbidden       403                           (errors.Forbidden)
    │   ├── NotFound        404, 405                      (errors.NotFound)
    │   ├── Conflict        409: the code says which      (errors.Conflict)
    │   │   └── IdempotencyConflict  422: a key reused for another request
    │   ├── RateLimited     429                           (errors.RateLimited)
    │   ├── Unavailable     503: retry with the same key  (errors.Unavailable)
    │   └── ServerError     any other status >= 500
    ├── TransportError      no answer at all: refused, reset, timed out
    ├── CommandError        an ``error`` reply to a WebSocket command (``sold_out`` ...)
    └── Closed              the WebSocket closed (``close_code``, ``reason``)
        └── ConnectRefused  ... before ``welcome``: the handshake's status or the close code

Each class also derives from the server's class in :mod:`livecommerce.errors` where there is
one, so ``except livecommerce.errors.Unavailable`` holds on either side. :attr:`retryable`
says what docs/deploy.md's retry contract retries ("What clients retry, and how").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import errors as server
from ..errors import LiveCommerceError
from .wire import CLOSE_CODES, RECONNECT_CLOSES

#: the one 4xx that asks to be retried: a request with the same key is still running
IN_FLIGHT = "idempotency_in_flight"


class ClientError(LiveCommerceError):
    """Base of what the client raises."""

    status = 0

    def __init__(self, message: str, *, code: str, status: int = 0, details: Mapping[str, Any] | None = None) -> None:
        LiveCommerceError.__init__(self, message or code, code=code)
        self.status = status
        self.details: Mapping[str, Any] = dict(details or {})

    @property
    def retryable(self) -> bool:
        """Whether docs/deploy.md's contract retries this answer (with the same key)."""
        return False

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status else ""
        return f"{where}{self.code}: {self.message}"


class ApiError(ClientError):
    """An HTTP error answer."""


class BadRequest(ApiError, server.BadFrame):
    pass


class Unauthorized(ApiError, server.Unauthorized):
    pass


class Forbidden(ApiError, server.Forbidden):
    pass


class NotFound(ApiError, server.NotFound):
    pass


class Conflict(ApiError, server.Conflict):
    @property
    def retryable(self) -> bool:
        return self.code == IN_FLIGHT


class IdempotencyConflict(Conflict, server.IdempotencyConflict):
    pass


class RateLimited(ApiError, server.RateLimited):
    pass


class Unavailable(ApiError, server.Unavailable):
    @property
    def retryable(self) -> bool:
        return True


class ServerError(ApiError):
    pass


class TransportError(ClientError):
    """No answer: the connection was refused, reset or timed out. A money call is retried
    with its key (the first attempt may have run: the retry gets its answer)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="transport")

    @property
    def retryable(self) -> bool:
        return True


class CommandError(ClientError):
    """An ``error`` reply to a WebSocket command; ``reply`` is the whole frame."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None,
                 reply: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, code=code, details=details)
        self.reply: Mapping[str, Any] = dict(reply or {})

    @property
    def retryable(self) -> bool:
        return self.code == "unavailable"


class Closed(ClientError):
    """The WebSocket closed; ``close_code`` 1006 when it dropped without a close frame."""

    def __init__(self, close_code: int, reason: str = "", *, code: str = "", status: int = 0, message: str = "") -> None:
        self.close_code = close_code
        self.reason = reason
        meaning = CLOSE_CODES.get(close_code, "")
        text = message or f"closed {close_code}" + (f" {reason}" if reason else "") + (f" ({meaning})" if meaning else "")
        super().__init__(text, code=code or reason or "closed", status=status)

    @property
    def retryable(self) -> bool:
        return self.close_code in RECONNECT_CLOSES or self.status == 503 or self.code in ("transport", "timeout")

    def __str__(self) -> str:
        return self.message


class ConnectRefused(Closed):
    """The connection ended before ``welcome``: the handshake answered ``status`` (400, 403,
    429, 503 with the JSON error body) or the server closed it (4401 after an
    ``unauthorized`` error frame, 4403 banned, 4429 too many connections)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 413: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: NotFound,
    409: Conflict, 422: IdempotencyConflict, 429: RateLimited, 503: Unavailable,
}


def error_body(text: str | bytes) -> tuple[str, str, dict[str, Any]] | None:
    """``(code, message, details)`` of the documented error body, or None when ``text`` is not
    one (a balancer's HTML page, an empty body)."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        return None
    details = {k: v for k, v in err.items() if k not in ("code", "message")}
    return err["code"], str(err.get("message", "")), details


def error_from(status: int, text: str | bytes) -> ApiError:
    """The exception for an HTTP error answer (status >= 400)."""
    parsed = error_body(text)
    if parsed is None:
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        code = "unavailable" if status == 503 else "internal" if status >= 500 else "bad_request"
        parsed = (code, " ".join(raw.split())[:200] or f"HTTP {status}", {})
    code, message, details = parsed
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(message, code=code, status=status, details=details)
