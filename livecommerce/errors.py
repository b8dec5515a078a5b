"""The error tree and the one table that maps errors to wire codes.

::

    LiveCommerceError
    ├── ConfigError        bad LC_* setting (CLI exits with a message)
    ├── BadFrame           undecodable, unknown or invalid command  -> error frame
    │   └── FrameTooBig    over LC_MAX_FRAME_BYTES                  -> error frame
    ├── Unauthorized       bad, expired or missing token            -> close 4401 / HTTP 401
    ├── Forbidden          role or room does not allow the command  -> error frame / HTTP 403
    │   └── Refused        moderation: muted, banned, followers_only ... -> error frame / HTTP 403
    │       ├── SlowMode   slow mode: retry_after_s                   -> error frame / HTTP 429
    │       └── JoinRefused  banned or kicked at the welcome, or kicked live -> close 4403
    ├── NotFound           unknown room, sale, order ...            -> error frame / HTTP 404
    ├── Conflict           illegal state transition                 -> error frame / HTTP 409
    │   ├── IdempotencyConflict  a key reused for another request   -> HTTP 422
    │   └── RoomEnded      the room's show has ended                -> error frame / HTTP 409
    ├── RateLimited        token bucket empty                       -> error frame / HTTP 429
    │   └── Flooding       kept flooding                            -> close 4429
    └── Unavailable        Redis, SQL or Kafka unreachable          -> error frame / HTTP 503

Expected business outcomes (``sold_out``, ``limit_reached``...) are *values*, not exceptions:
see :mod:`livecommerce.flash_sale`. Only the gateway's dispatch catches these exceptions;
anything else is ``internal``, logged with its traceback and never echoed to the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


class LiveCommerceError(Exception):
    """Base class. ``code`` is the wire error code sent to the client."""

    code = "internal"
    #: fields an error frame (and an HTTP error body) carries beyond code and message
    #: (``until_ms``, ``retry_after_s``, the refused line's ``product_id`` and ``sku`` ...):
    #: every error may carry them, the renderers put them beside code and message
    details: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, message: str = "", *, code: str | None = None, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if code is not None:
            self.code = code
        if details:
            if {"code", "message"} & set(details):
                raise ValueError("details may not replace an error's code or message")
            self.details = MappingProxyType(dict(details))

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(LiveCommerceError):
    code = "config"


class BadFrame(LiveCommerceError):
    code = "bad_frame"


class FrameTooBig(BadFrame):
    code = "frame_too_big"


class Unauthorized(LiveCommerceError):
    code = "unauthorized"


class Forbidden(LiveCommerceError):
    code = "forbidden"


class Refused(Forbidden):
    """Moderation refused a comment or a join (``muted``, ``banned``, ``kicked``,
    ``followers_only``, ``fanclub_only``: :mod:`livecommerce.moderation`); ``details`` says
    until when (``until_ms``, None for good)."""

    code = "refused"

    def __init__(self, message: str, *, code: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, code=code, details=details)


class SlowMode(Refused):
    """Slow mode: the viewer commented less than the room's ``slow_mode_s`` ago
    (``details``: ``retry_after_s``)."""

    code = "slow_mode"


class JoinRefused(Refused):
    """A banned or kicked user at the welcome, or a connection a kick or ban closes: an
    error frame, then close 4403 with the code as the reason. Clients do not reconnect
    before ``until_ms``."""

    code = "banned"


class NotFound(LiveCommerceError):
    code = "not_found"


class Conflict(LiveCommerceError):
    code = "conflict"


class IdempotencyConflict(Conflict):
    """An idempotency key (``Idempotency-Key``, ``request_id``, a campaign id) was used
    before for a different request: another route, target or body. Nothing changed."""

    code = "idempotency_conflict"


class RoomEnded(Conflict):
    """A buy, claim, lottery entry, comment (or a new lottery or coupon drop) in a room
    whose show has ended; ending the show closed what belonged to it."""

    code = "room_ended"


class RateLimited(LiveCommerceError):
    code = "rate_limited"


class Flooding(RateLimited):
    code = "rate_limited"


class Unavailable(LiveCommerceError):
    code = "unavailable"


@dataclass(frozen=True, slots=True)
class WireError:
    """How one error is shown: the error-frame code, a close code (or None to keep the
    connection), the HTTP status, and whether the message may be echoed."""

    code: str
    close: int | None
    http: int
    echo: bool = True


# Close codes: 4401 bad token, 4403 refused by moderation (banned, kicked), 4429 flooding, 1013 try again later (slow consumer),
# 1012 service restart (graceful shutdown), 1009 too big (only for frames beyond the
# transport's hard limit; frames over LC_MAX_FRAME_BYTES get an error frame).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FLOODING = 4429
CLOSE_SLOW = 1013
CLOSE_RESTART = 1012
CLOSE_FORBIDDEN = 4403

_TABLE: dict[type[LiveCommerceError], WireError] = {
    Flooding: WireError("rate_limited", CLOSE_FLOODING, 429),
    FrameTooBig: WireError("frame_too_big", None, 413),
    BadFrame: WireError("bad_frame", None, 400),
    Unauthorized: WireError("unauthorized", CLOSE_UNAUTHORIZED, 401),
    JoinRefused: WireError("banned", CLOSE_FORBIDDEN, 403),
    SlowMode: WireError("slow_mode", None, 429),
    Refused: WireError("refused", None, 403),
    Forbidden: WireError("forbidden", None, 403),
    NotFound: WireError("not_found", None, 404),
    IdempotencyConflict: WireError("idempotency_conflict", None, 422),
    RoomEnded: WireError("room_ended", None, 409),
    Conflict: WireError("conflict", None, 409),
    RateLimited: WireError("rate_limited", None, 429),
    Unavailable: WireError("unavailable", None, 503),
    ConfigError: WireError("config", None, 500),
}

INTERNAL = WireError("internal", None, 500, echo=False)


def wire_error(exc: BaseException) -> WireError:
    """Map any exception to how it is shown on the wire (most specific class first)."""
    for cls in type(exc).__mro__:
        hit = _TABLE.get(cls)
        if hit is not None:
            # an explicit per-instance code (e.g. BadFrame(code="unknown_type")) wins
            code = getattr(exc, "code", hit.code)
            return WireError(code, hit.close, hit.http, hit.echo)
    return INTERNAL


def error_fields(exc: LiveCommerceError) -> dict[str, Any]:
    """What the HTTP error body's ``error`` (and the error frame's ``d``) holds: ``code``,
    ``message`` and the error's ``details`` beside them; an error whose message may not be
    echoed shows neither message nor details."""
    we = wire_error(exc)
    if not we.echo:
        return {"code": we.code, "message": "internal error"}
    return {"code": we.code, "message": exc.message, **exc.details}

