"""The gateway's typed seams: hook lists, HTTP routes and WebSocket command handlers.

Capabilities do not look each other up by name. ``gateway.wiring`` builds every capability
object in one visible order and passes each its dependencies; what one capability offers to
all the others goes through these typed hook lists, and ``gateway.routes`` lists every HTTP
route and WebSocket command in one table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.funnel import Kind

if TYPE_CHECKING:
    from .conn import Conn

Json = dict[str, Any]

#: ``(conn, d)`` before a comment is published: may add fields to ``d`` (level, badges)
CommentHook = Callable[["Conn", Json], Awaitable[None]]
#: ``conn`` first thing in a comment: raises to refuse it (moderation: muted, banned, slow mode)
CommentGuard = Callable[["Conn"], Awaitable[None]]
#: ``(room, user, value)`` after a gift was debited (lottery gift entries, ops counters)
GiftHook = Callable[[str, str, int], Awaitable[None]]
#: ``(room, identity)`` -> fields merged into the ``welcome`` frame
WelcomeHook = Callable[[str, Identity], Awaitable[Json]]
#: ``(kind, campaign id, user)`` as a user tries to take a campaign's offer, whatever the
#: answer: ``buy`` in a sale, ``coupon.claim`` of a drop (the funnel's "tried" step)
TriedHook = Callable[[Kind, str, str], None]
#: ``(room, public room)`` after a go-live (also a repeated one: the show's ``live_ms`` is the
#: same), e.g. follower reach's ``host.live`` on the log; raising fails the go-live's answer
LiveHook = Callable[[str, Json], Awaitable[None]]
#: start-up and shutdown tasks of a capability
Task = Callable[[], Awaitable[None]]
#: an HTTP handler
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: a WebSocket command handler: ``(conn, parsed command)`` -> the reply frame or None
CommandHandler = Callable[["Conn", Any], Awaitable[Json | None]]
#: ``room`` -> the room's host (``room:<id>`` when it has none): whom a gift or a sale in
#: the room credits (``Gifts.host_of``, cached; refunds and fan badges ask it too)
HostOf = Callable[[str], Awaitable[str]]
#: ``room`` -> the seq this node's view of the room is at, loading the view first when the
#: node does not hold it (``gateway.snapshots``): the ``welcome``'s seq without a Redis read
RoomSeq = Callable[[str], Awaitable[int]]
#: ``(request, response)`` as a response is prepared (aiohttp's ``on_response_prepare``):
#: counters, indexes and headers that follow what the node served
ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RoomCommentHook:
    """A comment hook that has nothing to do in most rooms (keyword lotteries, password red
    packets): ``quiet`` is the set of rooms where its capability knows it has nothing to do
    (kept current by the capability, e.g. from its room snapshots and the room's events), and
    a comment there does not call it. Unknown rooms are not quiet: the hook runs."""

    fn: CommentHook
    quiet: AbstractSet[str]


@dataclass
class Hooks:
    """Hook lists, filled by ``gateway.wiring`` in the order the capabilities are built."""

    comment: list[CommentHook | RoomCommentHook] = field(default_factory=list)
    gift: list[GiftHook] = field(default_factory=list)
    welcome: list[WelcomeHook] = field(default_factory=list)
    #: after every go-live of a room (``RoomsService.go_live``)
    live: list[LiveHook] = field(default_factory=list)
    #: once per show, on the node whose end recorded it, before ``room.ended`` is published
    #: (``RoomsService.end``; the room as ``GET /api/v1/rooms/{room}`` shows it); a hook's
    #: failure is logged and does not stop the end
    ended: list[LiveHook] = field(default_factory=list)
    start: list[Task] = field(default_factory=list)
    #: run in order at shutdown (flushes first, then the engines they write to)
    stop: list[Task] = field(default_factory=list)
    #: called by the ``buy`` and ``coupon.claim`` handlers before they answer
    tried: list[TriedHook] = field(default_factory=list)
    #: every HTTP response this node prepares, in order
    response: list[ResponseHook] = field(default_factory=list)
    #: the seq of the node's view of a room (``welcome``); None: read the room's seq from Redis
    room_seq: RoomSeq | None = None


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler


@dataclass(frozen=True, slots=True)
class StaticRoute:
    """Files of ``directory`` served under ``prefix`` (aiohttp's ``add_static``)."""

    prefix: str
    directory: Path
    name: str
