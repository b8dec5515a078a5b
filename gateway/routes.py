"""Every HTTP route and WebSocket command of the gateway, in one table.

Each entry names the capability method that serves it (``gateway.wiring`` builds the
objects). ``tests/test_openapi.py`` holds the HTTP table to the OpenAPI document.
"""

from __future__ import annotations

from .hooks import CommandHandler, Route
from .wiring import Services


def http_routes(s: Services) -> list[Route]:
    return [
        # rooms: chat and likes
        Route("POST", "/api/v1/rooms/{room}/announce", s.chat.announce),
        Route("GET", "/api/v1/rooms/{room}/likes", s.likes.get_likes),
    ]


def ws_commands(s: Services) -> dict[str, CommandHandler]:
    return {
        "ping": s.chat.ping,
        "comment": s.chat.comment,
        "like": s.likes.like,
    }
