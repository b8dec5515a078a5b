"""Rooms for hosts: create, go live, end (with the show's summary), products and the pin.

HTTP (JSON; host of the room or ops unless noted):

* ``POST /api/v1/rooms {id, title?, host?}``: create (host or ops; a host's token must list
  the room) -> 201 room; 409 when the id is taken.
* ``GET /api/v1/rooms/{room}``: the room, its state and, once ended, the summary (public).
* ``POST /api/v1/rooms/{room}/live``, ``POST /api/v1/rooms/{room}/end``: the life-cycle
  steps; the WebSocket twins are the host actions ``room.live`` and ``room.end``.
  Viewers get ``room.live`` and ``room.ended {duration_s, peak_online, comments, likes, ...}``.
* ``POST /api/v1/products {id?, name, price, image?}`` (host or ops), ``GET
  /api/v1/products/{id}`` (public): the minimal catalogue pins show.
* ``POST /api/v1/rooms/{room}/pin {product_id}`` (WebSocket: ``pin {product_id}``):
  broadcast ``product.pinned``; ``DELETE`` the same path unpins (``product.unpinned``).

``welcome`` carries ``show`` (the room, when it was created) and ``pin`` (the current pin or
None), so late joiners see both. Show statistics: this module counts comments (a
``comment_hooks`` entry) and, once a second, adds them and the room's online count to live
shows (``rooms_tick.lua``).

Hooks used: ``gw.services["sale_for_product"]`` (optional, from the flash-sale code):
``async (room, product_id) -> dict | None``, the active sale with ``remaining`` stock.
Services provided: ``gw.services["rooms"]`` (:class:`RoomsService`).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, Conflict, Forbidden, NotFound
from livecommerce.pins import new_product, pin_payload, with_sale
from livecommerce.pins_redis import RedisPins
from livecommerce.protocol.commands import HostAction, Pin
from livecommerce.rooms import (
    RoomState,
    RoomStep,
    new_room,
    public_room,
    step,
    summarize,
    valid_room_id,
)
from livecommerce.rooms_redis import RedisRooms

from .conn import Conn
from .core import Gateway
from .validation import read_object

log = logging.getLogger("livecommerce.gateway.rooms")

CAS_RETRIES = 5


class RoomsService:
    """The room operations shared by the HTTP and WebSocket handlers."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.rooms = RedisRooms(gw.redis, gw.keys)
        self.pins = RedisPins(gw.redis, gw.keys)
        self.comments: dict[str, int] = {}  # room -> comments since the last tick (this node)

    async def _step(self, room: str, s: RoomStep) -> tuple[dict[str, str], bool]:
        """Apply ``s`` with a compare-and-set, retrying on a concurrent change.

        Raises:
            NotFound: the room was never created. Conflict: illegal step, or contention.
        """
        for _ in range(CAS_RETRIES):
            meta = await self.rooms.get(room)
            if meta is None:
                raise NotFound(f"room {room!r} does not exist: create it with POST /api/v1/rooms")
            state: RoomState = meta["state"]  # type: ignore[assignment]
            new, changed = step(state, s)
            if not changed:
                return meta, False
            online = await self.gw.hub.online(room)
            ok, _ = await self.rooms.transition(room, state, new, now_ms=self.gw.now_ms(), online=online)
            if ok:
                meta = await self.rooms.get(room)
                assert meta is not None
                return meta, True
        raise Conflict(f"room {room!r} is changing state; try again")

    async def go_live(self, room: str, ident: Identity) -> dict[str, Any]:
        """``created|ended -> live`` and broadcast ``room.live`` (once, even when two
        hosts press at the same time).

        Raises:
            Forbidden, NotFound, Conflict.
        """
        ident.require_host(room)
        meta, changed = await self._step(room, "go_live")
        pub = public_room(meta)
        if changed:
            await self.gw.publish(room, "room.live", {"title": pub["title"], "host": pub["host"], "live_ms": pub["live_ms"], "by": ident.user})
            log.info("room.live", extra={"room": room, "by": ident.user})
        return pub

    async def end(self, room: str, ident: Identity) -> dict[str, Any]:
        """``live -> ended``; broadcast ``room.ended`` with the summary (stored in the room's
        meta hash; ``GET /api/v1/rooms/{room}`` shows it).

        Raises:
            Forbidden, NotFound, Conflict (the room is not live).
        """
        ident.require_host(room)
        await self.tick(only=room)  # this node's last comments count too
        likes = self.gw.services.get("likes")
        if likes is not None:
            await likes.flush()
        meta, changed = await self._step(room, "end")
        pub = public_room(meta)
        if changed:
            summary = summarize(meta).to_dict()
            await self.gw.publish(room, "room.ended", {"title": pub["title"], "host": pub["host"], "by": ident.user, **summary})
            log.info("room.ended", extra={"room": room, **summary})
        return pub

    async def pin(self, room: str, product_id: str, ident: Identity) -> dict[str, Any]:
        """Broadcast ``product.pinned`` and remember it for late joiners.

        Raises:
            Forbidden, NotFound (unknown product).
        """
        ident.require_host(room)
        product = await self.pins.get_product(product_id)
        if product is None:
            raise NotFound(f"product {product_id!r} does not exist: create it with POST /api/v1/products")
        sale = await self._sale(room, product_id)
        payload = pin_payload(product, by=ident.user, now_ms=self.gw.now_ms(), sale=sale)
        await self.pins.set_pin(room, payload)
        seq = await self.gw.publish(room, "product.pinned", payload)
        return {**payload, "seq": seq}

    async def unpin(self, room: str, ident: Identity) -> bool:
        ident.require_host(room)
        removed = await self.pins.clear_pin(room)
        if removed:
            await self.gw.publish(room, "product.unpinned", {"by": ident.user})
        return removed

    async def _sale(self, room: str, product_id: str) -> dict[str, Any] | None:
        hook = self.gw.services.get("sale_for_product")
        if hook is None:
            return None
        sale = await hook(room, product_id)
        return dict(sale) if sale else None

    async def tick(self, only: str | None = None) -> None:
        """Add this node's comment counts and the online counts to live shows."""
        hub = self.gw.hub
        rooms = [only] if only is not None else list(self.comments.keys() | hub.rooms.keys())
        rows = []
        for room in rooms:
            r = hub.rooms.get(room)
            rows.append((room, max(0, r.online) if r is not None else 0, self.comments.pop(room, 0)))
        try:
            await self.rooms.tick(rows)
        except BaseException:
            for room, _, n in rows:
                if n:
                    self.comments[room] = self.comments.get(room, 0) + n
            raise

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        meta = await self.rooms.get(room)
        pin = await self.pins.get_pin(room)
        if pin is not None and self.gw.services.get("sale_for_product") is not None:
            pin = with_sale(pin, await self._sale(room, pin["product_id"]))
        out: dict[str, Any] = {"pin": pin}
        if meta is not None:
            out["show"] = public_room(meta)
        return out


def _ack(cmd: Any, gw: Gateway, d: dict[str, Any]) -> dict[str, Any]:
    return {"t": "ack", "id": cmd.id, "ts": gw.now_ms(), "d": d}


def setup(gw: Gateway, app: web.Application) -> None:
    svc = RoomsService(gw)
    gw.services["rooms"] = svc
    gw.hub.on_second.append(svc.tick)
    gw.welcome_extras.append(svc.welcome)

    async def count_comment(conn: Conn, d: dict[str, Any]) -> None:
        svc.comments[conn.room] = svc.comments.get(conn.room, 0) + 1

    gw.services.setdefault("comment_hooks", []).append(count_comment)

    # ---- WebSocket host actions (dispatch already refused viewers: ROLES)
    @gw.command("room.live")
    async def ws_live(gw: Gateway, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        return _ack(cmd, gw, await svc.go_live(conn.room, conn.ident))

    @gw.command("room.end")
    async def ws_end(gw: Gateway, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        return _ack(cmd, gw, await svc.end(conn.room, conn.ident))

    @gw.command("pin")
    async def ws_pin(gw: Gateway, conn: Conn, cmd: Pin) -> dict[str, Any]:
        return _ack(cmd, gw, await svc.pin(conn.room, cmd.product_id, conn.ident))

    # ---- HTTP
    async def create_room(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        if ident.role not in ("host", "ops"):
            raise Forbidden("rooms are created by hosts and ops")
        info = new_room(await read_object(request), creator=ident.user, creator_role=ident.role, now_ms=gw.now_ms())
        ident.require_host(info.id)
        if not await svc.rooms.create(info):
            raise Conflict(f"room {info.id!r} already exists")
        meta = await svc.rooms.get(info.id)
        assert meta is not None
        log.info("room.created", extra={"room": info.id, "by": ident.user})
        return web.json_response(public_room(meta), status=201)

    async def get_room(request: web.Request) -> web.Response:
        room = request.match_info["room"]
        meta = await svc.rooms.get(room) if valid_room_id(room) else None
        if meta is None:
            raise NotFound(f"room {room!r} does not exist")
        return web.json_response(public_room(meta))

    async def live(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        return web.json_response(await svc.go_live(request.match_info["room"], ident))

    async def end(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        return web.json_response(await svc.end(request.match_info["room"], ident))

    async def create_product(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        if ident.role not in ("host", "ops"):
            raise Forbidden("products are created by hosts and ops")
        product = new_product(await read_object(request), default_id=secrets.token_hex(6))
        await svc.pins.put_product(product)
        return web.json_response(product.to_dict(), status=201)

    async def get_product(request: web.Request) -> web.Response:
        p = await svc.pins.get_product(request.match_info["product"])
        if p is None:
            raise NotFound("no such product")
        return web.json_response(p.to_dict())

    async def pin(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        room = request.match_info["room"]
        ident.require_host(room)
        pid = (await read_object(request)).get("product_id")
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = str(pid)
        if not isinstance(pid, str) or not pid:
            raise BadFrame("body must be {\"product_id\": ...}", code="invalid")
        return web.json_response(await svc.pin(room, pid, ident))

    async def unpin(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        return web.json_response({"unpinned": await svc.unpin(request.match_info["room"], ident)})

    app.router.add_post("/api/v1/rooms", create_room)
    app.router.add_get("/api/v1/rooms/{room}", get_room)
    app.router.add_post("/api/v1/rooms/{room}/live", live)
    app.router.add_post("/api/v1/rooms/{room}/end", end)
    app.router.add_post("/api/v1/products", create_product)
    app.router.add_get("/api/v1/products/{product}", get_product)
    app.router.add_post("/api/v1/rooms/{room}/pin", pin)
    app.router.add_delete("/api/v1/rooms/{room}/pin", unpin)
