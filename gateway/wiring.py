"""Every capability of a gateway node, built once, in one visible order.

:func:`build` is the only place that constructs capability objects: each gets the engines
and the other capabilities it needs as constructor arguments, so the order below is the
dependency order and a reader sees it top to bottom. What every capability may hook into
(comments, gifts, welcome, start and stop) are the typed lists of :class:`~gateway.hooks.Hooks`.
``gateway.routes`` maps every HTTP route and WebSocket command to a method of these objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from .chat import Chat
from .core import Gateway
from .likes import Likes
from .rooms import RoomGate


@dataclass
class Services:
    """The capability objects of one node (typed: no string-keyed lookups)."""

    likes: Likes
    chat: Chat


def build(gw: Gateway) -> Services:
    """Construct the node's capabilities in dependency order and register their hooks."""
    legacy: dict[str, Any] = gw.services  # capabilities not yet moved here (gateway.app.LEGACY)
    gate = cast(RoomGate, legacy["room_gate"])

    likes = Likes(gw)
    gw.hub.on_second.append(likes.on_second)
    gw.hooks.welcome.append(likes.welcome)
    legacy["likes"] = likes

    chat = Chat(gw, gate, gw.hooks.comment)

    return Services(likes=likes, chat=chat)
