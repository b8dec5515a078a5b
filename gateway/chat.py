"""Bullet comments and ping over WebSocket; announcements over HTTP.

Comments: length limit, per-user token bucket shared by the user's connections on this
node (``rate_limited``; close 4429 when flooding persists), moderation (``moderated``, or
masked with ``LC_MODERATION_MODE=mask``), broadcast as ``comment`` with user id, display
name and level. In a room whose show has ended comments answer ``room_ended``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from livecommerce.comments import TokenBucket, judge_comment
from livecommerce.errors import BadFrame, RateLimited
from livecommerce.protocol.commands import Comment, Ping

from .conn import Conn
from .core import Gateway
from .rooms import refuse_if_ended
from .validation import read_json

REJECT_MESSAGES = {
    "too_long": "comment is longer than the limit",
    "empty": "comment is empty",
    "moderated": "comment contains blocked words",
}


def setup(gw: Gateway, app: web.Application) -> None:
    buckets: dict[str, TokenBucket] = {}

    @gw.command("ping")
    async def ping(gw: Gateway, conn: Conn, cmd: Ping) -> dict[str, Any]:
        return {"t": "pong", "id": cmd.id, "ts": gw.now_ms()}

    @gw.command("comment")
    async def comment(gw: Gateway, conn: Conn, cmd: Comment) -> dict[str, Any] | None:
        await refuse_if_ended(gw, conn.room)  # RoomEnded: the show is over
        bucket = buckets.get(conn.user)
        if bucket is None:
            if len(buckets) > 100_000:
                buckets.clear()
            bucket = buckets[conn.user] = TokenBucket(gw.s.comment_rate, gw.s.comment_burst)
        verdict, text = judge_comment(
            cmd.text, max_len=gw.s.comment_max_len, moderator=gw.moderator, mode=gw.s.moderation_mode
        )
        if verdict != "ok":
            code = "moderated" if verdict == "moderated" else "invalid"
            raise BadFrame(REJECT_MESSAGES[verdict], code=code)
        if not bucket.take(time.monotonic()):
            raise RateLimited(f"comment rate limit: {gw.s.comment_rate:g}/s, burst {gw.s.comment_burst}")
        d: dict[str, Any] = {
            "user": conn.user,
            "name": conn.ident.name,
            "level": await gw.level_of(conn.user),
            "role": conn.ident.role,
            "text": text,
        }
        for hook in gw.services.get("comment_hooks", []):
            await hook(conn, d)
        seq = await gw.publish(conn.room, "comment", d)
        return {"t": "ack", "id": cmd.id, "ts": gw.now_ms(), "d": {"seq": seq}}

    def notice(body: Any, ident: Any, where: str) -> dict[str, Any]:
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not 0 < len(text) <= 1000:
            raise BadFrame(f"{where} must be {{\"text\": \"1..1000 characters\"}}", code="invalid")
        extra = body.get("data") if isinstance(body.get("data"), dict) else {}
        return {"text": text, "by": ident.user, **extra}

    async def announce(request: web.Request) -> web.Response:
        """``{"text", "data"?}`` publishes one ``notice``; ``{"items": [...]}`` (up to 100)
        publishes several in order with one request (benchmarks and bulk tools)."""
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

    app.router.add_post("/api/v1/rooms/{room}/announce", announce)
