"""Rooms for hosts: create, go live, end (with the show's summary), products and the pin.

HTTP (JSON; host of the room or ops unless noted):

* ``POST /api/v1/rooms {id, title?, host?}``: create (host or ops; a host's token must list
  the room) -> 201 room; 409 when the id is taken.
* ``GET /api/v1/rooms/{room}``: the room, its state and, once ended, the summary (public).
* ``POST /api/v1/rooms/{room}/live``, ``POST /api/v1/rooms/{room}/end {lotteries?}``: the
  life-cycle steps; the WebSocket twins are the host actions ``room.live`` and ``room.end``.
  Viewers get ``room.live`` and ``room.ended {duration_s, peak_online, comments, likes, ...,
  closed}``.
* Ending a show closes its commerce in the same call (:meth:`RoomsService.end`): open sales
  end (``sale.ended {sale_id, reason: "room_ended"}``; holds keep their pay window), pending
  lotteries draw at once (``lotteries: "draw"``, the default: the draw worker draws them from
  the entrants they have) or are cancelled (``"cancel"``), coupon drops close. ``closed
  {sales, lotteries, drops, lottery_action}`` says what; repeating ``end`` answers the same.
* Then buys, claims, lottery entries and comments in the room answer ``room_ended``
  (:class:`RoomGate`: a node-local cache kept by ``room.ended`` / ``room.live`` on the
  room's channel, at most :data:`GATE_TTL_S` old, else the room's state in Redis; and the
  sale, drop and lottery scripts refuse what the end stamped, for a node that missed both).
* Products are the catalogue's (``gateway/catalog.py``, ``/api/v1/products``): a pin shows
  a product's name, lowest price and image from its ``{product:ID}:meta`` hash.
* ``POST /api/v1/rooms/{room}/pin {product_id}`` (WebSocket: ``pin {product_id}``):
  broadcast ``product.pinned``; ``DELETE`` the same path unpins (``product.unpinned``).

``welcome`` carries ``show`` (the room, when it was created) and ``pin`` (the current pin or
None), so late joiners see both. Show statistics: this module counts comments (a
``comment_hooks`` entry) and, once a second, adds them and the room's online count to live
shows (``rooms_tick.lua``).

Built by ``gateway.wiring`` (routes in ``gateway.routes``): :class:`RoomGate` first, since
comments, buys (``checkout.room_gate``), coupons and lotteries take it as a constructor argument;
then :class:`RoomsService`, given the engines it closes when a show ends (the room's sales
through ``checkout`` and ``store``, the lotteries and coupon drops adapters) and the likes
capability (flushed before the summary is taken). :attr:`RoomsService.sale_for_product`
(optional, from the flash-sale code): ``async (room, product_id) -> dict | None``, the
active sale with ``remaining`` stock, shown with the pin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.errors import (
    BadFrame,
    Conflict,
    Forbidden,
    LiveCommerceError,
    NotFound,
    RoomEnded,
)
from livecommerce.pins import pin_payload, with_sale
from livecommerce.pins_redis import RedisPins
from livecommerce.points import room_owner
from livecommerce.protocol.commands import HostAction, Pin
from livecommerce.protocol.events import reply
from livecommerce.room_snapshot import RoomSnapshot
from livecommerce.rooms import (
    Closed,
    LotteryAction,
    RoomState,
    RoomStep,
    close_marker,
    end_options,
    new_room,
    public_room,
    step,
    summarize,
    valid_room_id,
)
from livecommerce.rooms_redis import RedisRooms

from .conn import Conn
from .core import Gateway
from .openapi import HOST, ID, P_ROOM, J, arr, obj, op, ref
from .validation import read_object

if TYPE_CHECKING:
    from livecommerce.checkout import Checkout
    from livecommerce.coupons_redis import CouponsRedis
    from livecommerce.lottery_redis import RedisLotteries
    from livecommerce.store import Store

    from .likes import Likes
    from .snapshots import RoomSnapshots

log = logging.getLogger("livecommerce.gateway.rooms")

#: ``(room, product_id)`` -> the product's active sale in the room (with ``remaining``) or None
SaleForProduct = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]

CAS_RETRIES = 5
GATE_TTL_S = 1.0  # how old this node's idea of a room's state may be
MAX_ROOM_SALES = 1000  # sales of one room looked at when its show ends


class RoomGate:
    """Which rooms' shows have ended, as this node knows it: the answer to "may this buy,
    claim, entry or comment go ahead?".

    A node-local cache, updated at once by ``room.ended`` / ``room.live`` on the room's
    channel (a hub observer) and otherwise at most ``ttl_s`` old: past that the room's state
    is read from Redis again (one read per room at a time). A node that missed the event
    therefore refuses within ``ttl_s``; the sales, drops and lotteries the end closed are
    refused by their own scripts at once. Rooms never created are open.

    A room this node serves needs no read at all: the node's room snapshots
    (``gateway.snapshots``) hand the gate each room's current snapshot (:meth:`serving`),
    whose meta is the room's state as of the last event heard, and take it back the moment
    it may be behind (a ``room.live``/``room.ended`` reload, a change made here, a lost
    pub/sub link), so the gate reads Redis then as before.
    """

    def __init__(self, rooms: RedisRooms, *, ttl_s: float = GATE_TTL_S) -> None:
        self.rooms = rooms
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[float, str]] = {}  # room -> (valid until, state)
        self._hosts: dict[str, str] = {}  # created room -> its host or owner key (never changes)
        self._reads: dict[str, asyncio.Future[str]] = {}
        self._served: dict[str, RoomSnapshot] = {}  # room -> its current snapshot on this node

    def serving(self, room: str, snap: RoomSnapshot | None) -> None:
        """Snapshot listener: the room's current snapshot, or None once it may be behind."""
        if snap is None:
            self._served.pop(room, None)
        else:
            self._served[room] = snap

    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer: the room's own channel says the show ended or went live."""
        t = env.get("t")
        room = env.get("room")
        if t in ("room.ended", "room.live") and isinstance(room, str):
            self.remember(room, "ended" if t == "room.ended" else "live")

    def remember(self, room: str, state: str) -> None:
        if len(self._known) > 10_000:
            self._known.clear()
            self._hosts.clear()
        self._known[room] = (time.monotonic() + self.ttl_s, state)

    def forget(self, room: str) -> None:
        self._known.pop(room, None)
        self._hosts.pop(room, None)

    async def state(self, room: str) -> str:
        """``created``, ``live``, ``ended`` or ``''`` (never created).

        Raises:
            Unavailable: Redis unreachable (and nothing fresh is known).
        """
        hit = self._known.get(room)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        st = self._from_served(room)
        if st is not None:
            return st
        pending = self._reads.get(room)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reads[room] = fut
        try:
            st, host = await self.rooms.state_and_host(room)
            self._held(room, st, host)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            self._reads.pop(room, None)
        fut.set_result(st)
        self.remember(room, st)
        return st

    async def host(self, room: str) -> str:
        """The account the room credits: its host, or the owner key ``room:<id>`` for a room
        without one (:func:`~livecommerce.points.room_owner`). Read with the room's state and
        held: a created room's host never changes, a room not yet created is asked again once
        its state is older than ``ttl_s``.

        Raises:
            Unavailable: Redis unreachable (and the host not yet known).
        """
        held = self._hosts.get(room)
        if held is not None:
            return held
        if self._from_served(room) is not None:
            return self._hosts.get(room) or room_owner(room)
        hit = self._known.get(room)
        if hit is not None and hit[1] == "" and hit[0] > time.monotonic():
            return room_owner(room)
        st, host = await self.rooms.state_and_host(room)
        self._held(room, st, host)
        self.remember(room, st)
        return host or room_owner(room)

    def _from_served(self, room: str) -> str | None:
        """The room's state from its served snapshot (its host held as a read would), or
        None when the node serves no current snapshot of it."""
        snap = self._served.get(room)
        if snap is None:
            return None
        meta = snap.meta or {}
        st = meta.get("state", "")
        self._held(room, st, meta.get("host") or None)
        return st

    def _held(self, room: str, state: str, host: str | None) -> None:
        if state:  # created: its host (or owner key) is for good
            self._hosts[room] = host or room_owner(room)

    async def ended(self, room: str) -> bool:
        return await self.state(room) == "ended"

    async def check(self, room: str) -> None:
        """Raises:
        RoomEnded: the room's show has ended.
        """
        if await self.ended(room):
            raise RoomEnded(f"the show in room {room!r} has ended")


class RoomsService:
    """The room operations, their HTTP and WebSocket handlers, the show statistics."""

    def __init__(
        self,
        gw: Gateway,
        rooms: RedisRooms,
        gate: RoomGate,
        pins: RedisPins,
        *,
        likes: Likes | None = None,
        lotteries: RedisLotteries | None = None,
        coupons: CouponsRedis | None = None,
        checkout: Checkout | None = None,
        store: Store | None = None,
        views: RoomSnapshots | None = None,
    ) -> None:
        self.gw = gw
        self.rooms = rooms
        self.gate = gate
        self.pins = pins
        self.views = views  # the node's room snapshots: welcome's show and pin come from there
        self.likes = likes  # flushed before the summary is taken
        # what a show's end closes (each None when this node does not serve it)
        self.lotteries = lotteries
        self.coupons = coupons
        self.checkout = checkout
        self.store = store
        self.sale_for_product: SaleForProduct | None = None
        self.comments: dict[str, int] = {}  # room -> comments since the last tick (this node)
        self._ticking = asyncio.Lock()  # one tick at a time: an end waits for the tick in flight

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
        self.gate.remember(room, "live")
        self._changed(room)
        pub = public_room(meta)
        if changed:
            await self.gw.publish(room, "room.live", {"title": pub["title"], "host": pub["host"], "live_ms": pub["live_ms"], "by": ident.user})
            log.info("room.live", extra={"room": room, "by": ident.user})
        for hook in self.gw.hooks.live:  # a repeated go-live calls them again: they are idempotent per show
            await hook(room, pub)
        return pub

    async def end(self, room: str, ident: Identity, lotteries: LotteryAction = "draw") -> dict[str, Any]:
        """``live -> ended``, closing the show's commerce (module docstring); broadcast
        ``room.ended`` with the summary and ``closed`` (both stored in the room's meta hash;
        ``GET /api/v1/rooms/{room}`` shows them). Idempotent: a repeated call changes
        nothing and answers the same; one that finds the closing unfinished (a crashed
        node) finishes it, and whoever records ``closed`` publishes ``room.ended``.

        Raises:
            Forbidden, NotFound, Conflict (the room is not live), Unavailable.
        """
        ident.require_host(room)
        await self.tick(only=room)  # this node's last comments count too
        if self.likes is not None:
            await self.likes.flush()
        meta, _ = await self._step(room, "end")
        self.gate.remember(room, "ended")
        self._changed(room)
        if meta.get("closed"):
            await self._unlist(room, json.loads(meta["closed"]))
            return public_room(meta)
        closed = await self._close_show(room, meta, lotteries)
        won, stored = await self.rooms.record_closed(room, meta["ended_ms"], json.dumps(closed.to_dict(), separators=(",", ":")))
        if won:
            pub = public_room(meta)
            summary = summarize(meta).to_dict()
            for hook in self.gw.hooks.ended:
                try:
                    await hook(room, pub)
                except LiveCommerceError as exc:  # the show's end stands; the report reads what it can
                    log.warning("room.ended_hook_failed", extra={"room": room, "err": exc.message})
                except Exception:  # our fault, not the host's: logged with its traceback, the show still ends
                    log.exception("room.ended_hook_failed", extra={"room": room})
            await self.gw.publish(
                room, "room.ended", {"title": pub["title"], "host": pub["host"], "by": ident.user, **summary, "closed": closed.to_dict()}
            )
            log.info("room.ended", extra={"room": room, **summary, "closed": closed.to_dict()})
        if stored:
            await self._unlist(room, json.loads(stored))
        self._changed(room)  # what closed is recorded now
        return public_room(await self.rooms.get(room) or meta)

    async def _close_show(self, room: str, meta: dict[str, str], lotteries: LotteryAction) -> Closed:
        """Close what belongs to the show that ended, each item stamped with the show's
        :func:`~livecommerce.rooms.close_marker` in its own slot (so repeating finds the same
        items). Open sales end, pending lotteries are closed for the draw (due now) or
        cancelled, coupon drops close."""
        marker = close_marker(meta)
        now = self.gw.now_ms()
        sales: list[str] = []
        checkout, store = self.checkout, self.store
        if checkout is not None and store is not None:
            ids = sorted({rec.sale.id for rec in await store.list_sales(room_id=room, limit=MAX_ROOM_SALES)})
            sales = await checkout.close_for_room(ids, marker=marker, now_ms=now)
            for sid in sales:
                sale = await checkout.sale(sid)
                if await checkout.claim_announcement(sid, "ended"):
                    await self.gw.publish(room, "sale.ended", {"sale_id": sid, "reason": "room_ended"})
                await store.put_sale(sale, state="ended", now_ms=now)
        lots: list[str] = []
        if self.lotteries is not None:
            for lid in await self.lotteries.room_lottery_ids(room):
                if await self.lotteries.close_for_room(lid, room, marker=marker, draw=lotteries == "draw", now_ms=now):
                    lots.append(lid)
        drops: list[str] = []
        coupons = self.coupons
        if coupons is not None:
            for did in await coupons.room_drops(room, now_ms=now):
                if await coupons.close_for_room(did, marker=marker, now_ms=now):
                    drops.append(did)
        return Closed(tuple(sales), tuple(lots), tuple(drops), lotteries)

    async def _unlist(self, room: str, closed: dict[str, Any]) -> None:
        """Take what the show's end closed off the room's listings (welcome, GET); after
        ``closed`` is recorded, so a repeated end still finds every item to report."""
        if self.lotteries is not None:
            for lid in closed.get("lotteries", []):
                await self.lotteries.unindex_room(lid, room)
        if self.coupons is not None:
            for did in closed.get("drops", []):
                await self.coupons.unlist(did, room)

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
        self._changed(room)
        return {**payload, "seq": seq}

    async def unpin(self, room: str, ident: Identity) -> bool:
        ident.require_host(room)
        removed = await self.pins.clear_pin(room)
        if removed:
            await self.gw.publish(room, "product.unpinned", {"by": ident.user})
            self._changed(room)
        return removed

    def _changed(self, room: str) -> None:
        """A change to what ``welcome`` shows, made through this node: its snapshot is read
        again by the next joiner here (whatever the broadcast's delay)."""
        if self.views is not None:
            self.views.changed(room)

    async def _sale(self, room: str, product_id: str) -> dict[str, Any] | None:
        if self.sale_for_product is None:
            return None
        sale = await self.sale_for_product(room, product_id)
        return dict(sale) if sale else None

    async def tick(self, only: str | None = None) -> None:
        """Add this node's comment counts and the online counts to live shows. Ticks run one
        at a time, so an ``end`` (``only=room``) starts after the second's tick in flight has
        written what it took: no comment counted on this node before the end is lost."""
        async with self._ticking:
            await self._tick(only)

    async def _tick(self, only: str | None) -> None:
        hub = self.gw.hub
        rooms = [only] if only is not None else list(self.comments.keys() | hub.rooms.keys())
        rows = []
        for room in rooms:
            r = hub.rooms.get(room)
            sampled = r is not None and r.online >= 0  # a node holding the room knows its total online
            rows.append((room, max(0, r.online) if r is not None else 0, self.comments.pop(room, 0), sampled))
        try:
            await self.rooms.tick(rows)
        except BaseException:
            for room, _, n, _ in rows:
                if n:
                    self.comments[room] = self.comments.get(room, 0) + n
            raise

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        """Welcome hook: ``show`` (when the room was created) and ``pin``, from the node's
        snapshot of the room (``gateway.snapshots``; Redis without one)."""
        if self.views is not None:
            show, pin = await self.views.show_and_pin(room)
        else:
            meta = await self.rooms.get(room)
            show, pin = (public_room(meta) if meta is not None else None), await self.pins.get_pin(room)
        if pin is not None and self.sale_for_product is not None:
            pin = with_sale(pin, await self._sale(room, pin["product_id"]))
        out: dict[str, Any] = {"pin": pin}
        if show is not None:
            out["show"] = show
        return out


    async def count_comment(self, conn: Conn, d: dict[str, Any]) -> None:
        """Comment hook: the comment counts toward the show's statistics."""
        self.comments[conn.room] = self.comments.get(conn.room, 0) + 1

    # ---- WebSocket host actions (gateway.routes; dispatch already refused viewers: ROLES)
    async def ws_live(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        return self._ack(cmd, await self.go_live(conn.room, conn.ident))

    async def ws_end(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        return self._ack(cmd, await self.end(conn.room, conn.ident, end_options(cmd.d)))

    async def ws_pin(self, conn: Conn, cmd: Pin) -> dict[str, Any]:
        return self._ack(cmd, await self.pin(conn.room, cmd.product_id, conn.ident))

    def _ack(self, cmd: HostAction | Pin, d: dict[str, Any]) -> dict[str, Any]:
        return reply("ack", cmd.id, d, ts=self.gw.now_ms())

    # ---- HTTP (gateway.routes)
    async def http_create(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        if ident.role not in ("host", "ops"):
            raise Forbidden("rooms are created by hosts and ops")
        info = new_room(await read_object(request), creator=ident.user, creator_role=ident.role, now_ms=self.gw.now_ms())
        ident.require_host(info.id)
        if not await self.rooms.create(info):
            raise Conflict(f"room {info.id!r} already exists")
        self._changed(info.id)  # creating publishes nothing
        meta = await self.rooms.get(info.id)
        assert meta is not None
        log.info("room.created", extra={"room": info.id, "by": ident.user})
        return web.json_response(public_room(meta), status=201)

    async def http_get(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        meta = await self.rooms.get(room) if valid_room_id(room) else None
        if meta is None:
            raise NotFound(f"room {room!r} does not exist")
        return web.json_response(public_room(meta))

    async def http_live(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        return web.json_response(await self.go_live(request.match_info["room"], ident))

    async def http_end(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        lotteries = end_options(await read_object(request))
        return web.json_response(await self.end(request.match_info["room"], ident, lotteries))

    async def http_pin(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = request.match_info["room"]
        ident.require_host(room)
        pid = (await read_object(request)).get("product_id")
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = str(pid)
        if not isinstance(pid, str) or not pid:
            raise BadFrame("body must be {\"product_id\": ...}", code="invalid")
        return web.json_response(await self.pin(room, pid, ident))

    async def http_unpin(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        return web.json_response({"unpinned": await self.unpin(request.match_info["room"], ident)})


OPENAPI_SCHEMAS: dict[str, J] = {
    "RoomClosed": obj({
        "sales": arr(ID), "lotteries": arr(ID), "drops": arr(ID), "lottery_action": {"enum": ["draw", "cancel"]},
    }, ["sales", "lotteries", "drops", "lottery_action"], desc="what ending the show closed"),
}
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/rooms/{room}/end": {"post": {
        **op("End the show (`room.ended` with the summary and what closed)", tag="rooms", auth=HOST, params=[P_ROOM],
             ok=("200", {"allOf": [ref("Room")], "type": "object", "properties": {"closed": ref("RoomClosed")}}, "ended"),
             errors=(404, 409),
             desc="Closes the show's commerce: open sales end (holds keep their pay window), pending lotteries draw at once "
                  "(`lotteries: \"draw\"`, the default) or are cancelled (`\"cancel\"`), coupon drops close; then buys, claims, "
                  "entries and comments in the room answer `room_ended`. Ending again changes nothing and answers the same."),
        "requestBody": {"required": False, "content": {"application/json": {"schema": obj(
            {"lotteries": {"enum": ["draw", "cancel"], "description": "what happens to pending lotteries (default draw)"}})}}},
    }},
}

