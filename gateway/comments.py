"""Bullet comments and ping over WebSocket; announcements over HTTP.

Comments: length limit, per-user token bucket shared by the user's connections on this
node (``rate_limited``; close 4429 when flooding persists), moderation (``moderated``, or
masked with ``LC_MODERATION_MODE=mask``), broadcast as ``comment`` with user id, display
name, level and the author's badges (``fan``, ``buyer``: :mod:`livecommerce.badges`, at most
one Redis round trip, none while the node holds them fresh), then the comment hooks (lottery
keywords, points, counters). In a room whose show has ended comments answer ``room_ended``;
the room's moderation (``gateway.moderation``, the guard) answers ``muted``, ``banned``,
``kicked``, ``slow_mode``, ``followers_only`` or ``fanclub_only``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.badges import Badges
from livecommerce.comments import TokenBucket, judge_comment
from livecommerce.errors import BadFrame, RateLimited
from livecommerce.protocol.commands import Comment, Ping
from livecommerce.protocol.events import reply

from .conn import Conn
from .core import Gateway
from .hooks import CommentGuard, CommentHook, RoomCommentHook
from .rooms import RoomGate
from .validation import read_json

REJECT_MESSAGES = {
    "too_long": "comment is longer than the limit",
    "empty": "comment is empty",
    "moderated": "comment contains blocked words",
}


class Comments:
    """``ping`` and ``comment`` over WebSocket, ``announce`` over HTTP."""

    def __init__(self, gw: Gateway, gate: RoomGate, badges: Badges, hooks: list[CommentHook | RoomCommentHook],
                 guard: CommentGuard | None = None) -> None:
        self.gw = gw
        self.gate = gate
        self.guard = guard  # room moderation (gateway.moderation): muted, banned, slow mode, followers only
        self.badges = badges  # the author's level, fan badge and buyer mark
        self.hooks = hooks  # the comment hooks (lottery keywords, points, counters)
        self.buckets: dict[str, TokenBucket] = {}
        self._purge_at = 0.0

    async def ping(self, conn: Conn, cmd: Ping) -> dict[str, Any]:
        return reply("pong", cmd.id, ts=self.gw.now_ms())

    async def comment(self, conn: Conn, cmd: Comment) -> dict[str, Any] | None:
        gw = self.gw
        await self.gate.check(conn.room)  # RoomEnded: the show is over
        if self.guard is not None:
            await self.guard(conn)  # Refused / SlowMode
        bucket = self.buckets.get(conn.user)
        if bucket is None:
            now = time.monotonic()
            if len(self.buckets) > 100_000:
                self.buckets.clear()
            elif len(self.buckets) >= 256 and now >= self._purge_at:
                # a refilled bucket is a new one: churned users' buckets go (an idle node holds none)
                self.buckets = {u: b for u, b in self.buckets.items() if not b.full(now)}
                self._purge_at = now + 60
            bucket = self.buckets[conn.user] = TokenBucket(gw.s.comment_rate, gw.s.comment_burst)
        verdict, text = judge_comment(
            cmd.text, max_len=gw.s.comment_max_len, moderator=gw.moderator, mode=gw.s.moderation_mode
        )
        if verdict != "ok":
            code = "moderated" if verdict == "moderated" else "invalid"
            raise BadFrame(REJECT_MESSAGES[verdict], code=code)
        if not bucket.take(time.monotonic()):
            raise RateLimited(f"comment rate limit: {gw.s.comment_rate:g}/s, burst {gw.s.comment_burst}")
        d: dict[str, Any] = {"user": conn.user, "name": conn.ident.name, "level": 0, "role": conn.ident.role, "text": text}
        host = await self.gate.host(conn.room)
        await self.badges.decorate(d, room=conn.room, host=host, user=conn.user, now=time.monotonic())
        room = conn.room
        for hook in self.hooks:
            if isinstance(hook, RoomCommentHook):
                if room not in hook.quiet:  # a room where it may have something to do
                    await hook.fn(conn, d)
            else:
                await hook(conn, d)
        seq = await gw.publish(conn.room, "comment", d)
        return reply("ack", cmd.id, {"seq": seq}, ts=gw.now_ms())

    async def announce(self, request: web.Request) -> web.Response:
        """``{"text", "data"?}`` publishes one ``notice``; ``{"items": [...]}`` (up to 100)
        publishes several in order with one request (benchmarks and bulk tools)."""
        gw = self.gw
        ident = gw.identify_request(request)
        room = request.match_info["room"]
        ident.require_host(room)
        body = await read_json(request)
        if isinstance(body, dict) and "items" in body:
            items = body["items"]
            if not isinstance(items, list) or not 0 < len(items) <= 100:
                raise BadFrame("'items' must be a list of 1..100 notices", code="invalid")
            ds = [notice(it, ident, f"items[{i}]") for i, it in enumerate(items)]
            seqs = [await gw.publish(room, "notice", d) for d in ds]
            return web.json_response({"seqs": seqs})
        seq = await gw.publish(room, "notice", notice(body, ident, "body"))
        return web.json_response({"seq": seq})


def notice(body: Any, ident: Identity, where: str) -> dict[str, Any]:
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not 0 < len(text) <= 1000:
        raise BadFrame(f"{where} must be {{\"text\": \"1..1000 characters\"}}", code="invalid")
    extra = body.get("data") if isinstance(body.get("data"), dict) else {}
    return {"text": text, "by": ident.user, **extra}
