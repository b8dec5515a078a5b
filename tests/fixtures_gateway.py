"""Real gateway nodes on free loopback ports, and token helpers.

``gateway_factory(**overrides)`` starts one node (its own Redis client, shared Redis
server, the test's key prefix) and returns its base URL; everything it starts is stopped
at the end of the test. ``api_node`` is the HTTP tests' start-up (the catalogue's, the
cart's): one node, an :class:`Api` client of its ``/api/v1``, and ``token``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.core import GW_KEY
from gateway.wiring import SERVICES_KEY
from livecommerce.auth import issue_token
from livecommerce.config import Settings


@dataclass
class Node:
    url: str  # http://127.0.0.1:PORT
    ws: str  # ws://127.0.0.1:PORT/ws
    app: web.Application
    settings: Settings

    @property
    def gw(self) -> Any:
        return self.app[GW_KEY]

    @property
    def services(self) -> Any:
        """The node's capabilities (gateway.wiring.Services)."""
        return self.app[SERVICES_KEY]


GatewayFactory = Callable[..., Awaitable[Node]]


class Api:
    """A JSON client of a node's ``/api/v1`` (bearer token, optional headers)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def call(self, method: str, path: str, tok: str | None = None, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        h = dict(headers or {})
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        async with self.http.request(method, self.base + "/api/v1" + path, json=body, headers=h) as r:
            return r.status, await r.json()

    async def ok(self, method: str, path: str, tok: str | None = None, body: Any = None, status: int = 200,
                 headers: dict[str, str] | None = None) -> Any:
        got, data = await self.call(method, path, tok, body, headers)
        assert got == status, (method, path, got, data)
        return data


@pytest.fixture
async def gateway_factory(settings: Settings) -> AsyncIterator[GatewayFactory]:
    from gateway.app import build_app
    from gateway.wsserver import bound_port, make_site

    runners: list[web.AppRunner] = []

    async def make(**overrides: Any) -> Node:
        s = settings.replace(node_id=overrides.pop("node_id", f"node-{uuid.uuid4().hex[:6]}"), **overrides)
        from livecommerce.migrations import upgrade

        await upgrade(s.database_url)
        app = build_app(s)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = make_site(runner, s, "127.0.0.1", 0)  # LC_WS_TRANSPORT (tests.conftest) picks the /ws transport
        await site.start()
        runners.append(runner)
        port = bound_port(site)
        return Node(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", app, s)

    yield make
    for r in reversed(runners):
        await r.cleanup()


@pytest.fixture
def token(settings: Settings) -> Callable[..., str]:
    def make(user: str = "u1", role: str = "viewer", rooms: tuple[str, ...] = (), ttl: int = 3600, secret: str | None = None) -> str:
        return issue_token(secret or settings.secret, user=user, role=role, rooms=rooms, now_s=int(time.time()), ttl_s=ttl)

    return make


@pytest.fixture
async def api_node(gateway_factory: GatewayFactory, token: Callable[..., str]
                   ) -> AsyncIterator[tuple[Node, Api, Callable[..., str]]]:
    """One node, an :class:`Api` on it, and the ``token`` maker."""
    node = await gateway_factory()
    async with aiohttp.ClientSession() as http:
        yield node, Api(http, node.url), token
