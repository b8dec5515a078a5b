"""Red packets (红包) at the edge: drop (host or viewer), grab (viewers), the public record.

* ``POST /api/v1/rooms/{room}/redpackets`` (any signed-in user): body ``{amount, count,
  request_id, duration_s?, password?, followers_only?, greeting?}``
  (:func:`livecommerce.redpackets.parse_drop`). Debits the dropper's wallet by ``amount``
  and broadcasts ``redpacket.dropped`` (the packet with its ``seed_hash``). A retry with the
  same ``request_id`` answers the first packet (``duplicate: true``) and debits nothing.
* ``redpacket.grab {packet_id, password?}`` (WebSocket) and ``POST
  /api/v1/redpackets/{id}/grab {password?}``: take the next share; the reply (and a private
  ``redpacket.grabbed`` to the grabber's connections) carries ``{packet_id, amount, index,
  left, balance, duplicate}``. Errors: ``not_found``, ``expired``, ``ended``, ``empty``,
  ``own_packet``, ``followers_only``, ``password_required``. A second grab answers the first
  share with ``duplicate: true``.
* Password packets (口令红包): a viewer's comment containing the password grabs (a comment
  hook, :meth:`RedPackets.on_comment`; the comment goes out either way, and the commenting
  connection gets a private ``redpacket.grabbed``).
* ``GET /api/v1/redpackets/{id}`` (public): the record: the packet, its grabs in order and,
  once ended, the seed, the shares and the refund (``livecommerce redpacket verify`` checks
  it). ``GET /api/v1/rooms/{room}/redpackets``: the room's open packets.
* ``welcome`` carries ``redpackets`` (the node's room snapshot, ``gateway.snapshots``).

The end (expiry or every share taken), the refund of what nobody grabbed and
``redpacket.ended`` are the keeper's (``workers/redpackets.py``). Built by
``gateway.wiring`` with the packets adapter, the wallet outbox (the ledger events reach the
log through it), the room gate and the fan-club cache (followers-only packets); routes in
``gateway.routes``.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, Conflict, IdempotencyConflict, NotFound, Unavailable
from livecommerce.fanclub_redis import FanclubRedis
from livecommerce.protocol.commands import RedPacketGrab
from livecommerce.protocol.events import envelope, reply
from livecommerce.redpackets import (
    GRAB_MESSAGES,
    MAX_AMOUNT,
    MAX_COUNT,
    MAX_DURATION_S,
    MAX_GREETING_LEN,
    MAX_PASSWORD_LEN,
    MIN_DURATION_S,
    RedPacket,
    drop_fingerprint,
    grab_reject,
    new_packet,
    new_seed,
    packet_id,
    parse_drop,
    shard_of_packet,
    split,
)
from livecommerce.redpackets_redis import Dropped, DropReplayed, RedisRedPackets
from livecommerce.wallet import InsufficientFunds, shard_of

from .conn import Conn
from .core import Gateway
from .openapi import BOOL, ID, INT, MS, STR, J, arr, nullable, obj, op, ref
from .rooms import RoomGate
from .snapshots import RoomSnapshots, ServedRooms
from .validation import read_object
from .wallet import Outbox

log = logging.getLogger("livecommerce.gateway.redpackets")

CACHE_S = 5.0  # a room's password packets, for rooms this node holds no snapshot of
MAX_CACHED = 10_000


def _refused(code: str) -> Exception:
    msg = GRAB_MESSAGES.get(code, code)
    return NotFound(msg) if code == "not_found" else Conflict(msg, code=code)


class RedPackets:
    def __init__(self, gw: Gateway, store: RedisRedPackets, outbox: Outbox, gate: RoomGate, fans: FanclubRedis,
                 views: RoomSnapshots | None = None) -> None:
        self.gw = gw
        self.store = store
        self.outbox = outbox  # the wallet outbox: ledger events to the log, cleared on tick
        self.gate = gate
        self.fans = fans
        self.views = views
        self._defs: dict[str, RedPacket] = {}  # packet id -> definition (never changes)
        self._rooms: dict[str, tuple[float, list[RedPacket]]] = {}  # room -> (until, packets), unserved rooms
        #: this node's current room snapshots; ``served.quiet``: the rooms whose snapshot lists
        #: no packet, where the comment hook is not called (a dropped packet takes its room off
        #: at once: ``observe``)
        self.served = ServedRooms(lambda snap: bool(snap.redpackets))
        self.serving = self.served.serving  # the snapshot listener (gateway.wiring)
        self.quiet = self.served.quiet

    # ---- reading packets
    async def packet(self, pid: str) -> RedPacket | None:
        """A packet's definition (read once per node: it never changes)."""
        hit = self._defs.get(pid)
        if hit is not None:
            return hit
        st = await self.store.get(pid)
        if st is None:
            return None
        if len(self._defs) > MAX_CACHED:
            self._defs.clear()
        self._defs[pid] = st.packet
        return st.packet

    async def open_in(self, room: str) -> list[RedPacket]:
        """The room's packets whose expiry is ahead: from the node's snapshot of the room when
        it has one (no read), else the room's index (cached :data:`CACHE_S`)."""
        now = self.gw.now_ms()
        snap = self.served.snaps.get(room)
        if snap is not None:
            out = []
            for pid, pub in snap.redpackets.items():
                if int(pub.get("expires_ms") or 0) > now:
                    p = await self.packet(pid)
                    if p is not None:
                        out.append(p)
            return out
        mono = time.monotonic()
        hit = self._rooms.get(room)
        if hit is None or hit[0] <= mono:
            packets = [p for pid in await self.store.room_packet_ids(room, now_ms=now) if (p := await self.packet(pid)) is not None]
            if len(self._rooms) > MAX_CACHED:
                self._rooms.clear()
            hit = self._rooms[room] = (mono + CACHE_S, packets)
        return [p for p in hit[1] if p.expires_ms > now]

    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer: a packet dropped or ended in a room; read its packets again. (It runs
        after the room snapshots' observer, so a served snapshot has the event.)"""
        room = env.get("room") or ""
        self._rooms.pop(room, None)
        self.served.heard(room, started=env.get("t") == "redpacket.dropped")

    # ---- the drop
    async def drop(self, room: str, ident: Identity, body: dict[str, Any]) -> dict[str, Any]:
        """Debit the dropper, store and announce a packet; its public view with the balance.

        Raises:
            BadFrame: invalid body. NotFound: no such room. RoomEnded: the show has ended.
            InsufficientFunds: the wallet holds less than ``amount``.
            IdempotencyConflict: ``request_id`` was used for another drop.
        """
        req = parse_drop(body)
        state = await self.gate.state(room)
        if state == "":
            raise NotFound(f"no room {room!r}")
        await self.gate.check(room)  # RoomEnded
        host = await self.gate.host(room)
        seed = new_seed(secrets.token_bytes(32))
        pid = packet_id(shard_of(ident.user), secrets.token_hex(6))
        p = new_packet(req, id=pid, room=room, by=ident.user, host=host, now_ms=self.gw.now_ms(), seed=seed)
        res = await self.store.drop(p, seed=seed, shares=split(seed, pid, p.amount, p.count), request_id=req.request_id,
                                    fingerprint=drop_fingerprint(room, req))
        if isinstance(res, DropReplayed):
            st = await self.store.get(res.packet_id)
            if st is None:
                raise NotFound("the first drop of this request_id is gone")
            if st.state == "open":  # its first gateway may have died before listing it in the room
                await self.store.index_room(st.packet)
            return {**st.packet.public(), "state": st.state, "duplicate": True}
        if not isinstance(res, Dropped):
            if res.code == "idempotency_conflict":
                raise IdempotencyConflict(f"request_id {req.request_id!r} was used for another drop: use a new one")
            raise InsufficientFunds(f"the wallet holds {res.balance} coins; this red packet needs {p.amount}")
        await self.outbox.emit(res.event)  # the debit to the log (else the wallet sweeper appends it)
        self._defs[pid] = p
        await self.store.index_room(p)
        if self.views is not None:
            self.views.changed(room)
        seq = await self.gw.publish(room, "redpacket.dropped", p.public())
        log.info("redpacket.dropped", extra={"packet": pid, "room": room, "user": ident.user, "amount": p.amount, "count": p.count})
        return {**p.public(), "state": "open", "seq": seq, "balance": res.balance, "duplicate": False}

    # ---- grabbing
    async def grab(self, pid: str, user: str, *, room: str | None = None, password: str | None = None,
                   text: str | None = None, notify: bool = True) -> dict[str, Any]:
        """Take a share for ``user``; the grab's answer (module docstring). With ``notify``
        a new share is also pushed as ``redpacket.grabbed`` to the user's connections in the
        room (an HTTP grab; a WebSocket grab's reply is that event, a comment's grab is sent
        on the commenting connection).

        Raises:
            NotFound: no such packet (in ``room``, when given). Conflict: with the refusal's code.
        """
        p = await self.packet(pid) if shard_of_packet(pid) is not None else None
        if p is None or (room is not None and p.room != room):
            raise _refused("not_found")
        following = False
        if p.followers_only and user != p.by:
            following, _ = await self.fans.relation(p.host, user)
        now = self.gw.now_ms()
        rej = grab_reject(p, user=user, now_ms=now, following=following, password=password, text=text)
        if rej is not None:
            raise _refused(rej)
        g = await self.store.grab(pid, user, now_ms=now)
        if g.code not in ("ok", "already_grabbed"):
            raise _refused(g.code)
        balance: int | None = None
        if g.pending is not None:
            try:
                credited, balance, ev = await self.store.credit(g.pending)
                if credited:
                    await self.outbox.emit(ev)
                await self.store.clear_pending(g.pending)
            except Unavailable as exc:  # the share is taken: the keeper applies the pending credit
                log.warning("redpacket.credit_deferred", extra={"packet": pid, "user": user, "err": exc.message})
        d = {"packet_id": pid, "room": p.room, "amount": g.amount, "index": g.index, "left": g.left, "balance": balance,
             "duplicate": g.code == "already_grabbed"}
        if g.code == "ok":
            log.info("redpacket.grabbed", extra={"packet": pid, "user": user, "amount": g.amount, "left": g.left})
            if notify:
                await self.gw.notifier.to_user(user, envelope("redpacket.grabbed", p.room, d, ts=now), room=p.room)
        return d

    async def on_comment(self, conn: Conn, d: dict[str, Any]) -> None:
        """Comment hook: a comment containing an open password packet's password grabs it
        (the grabber hears ``redpacket.grabbed``). Never fails the comment."""
        text = d.get("text")
        snap = self.served.snaps.get(conn.room)
        if not isinstance(text, str) or (snap is not None and not snap.redpackets):
            return  # the common case: a room without packets, known from the node's snapshot
        try:
            for p in await self.open_in(conn.room):
                if p.password and p.by != conn.user and p.password.casefold() in text.casefold():
                    try:
                        got = await self.grab(p.id, conn.user, room=conn.room, text=text, notify=False)
                    except (Conflict, NotFound):
                        continue  # already grabbed, empty, followers only ...: the comment is just a comment
                    if not got["duplicate"]:
                        conn.send(envelope("redpacket.grabbed", conn.room, got, ts=self.gw.now_ms()))
        except Exception:
            log.exception("redpacket.on_comment_failed", extra={"room": conn.room, "user": conn.user})

    # ---- WebSocket (gateway.routes)
    async def ws_grab(self, conn: Conn, cmd: RedPacketGrab) -> dict[str, Any]:
        d = await self.grab(cmd.packet_id, conn.user, room=conn.room, password=cmd.password, notify=False)
        return reply("redpacket.grabbed", cmd.id, d, ts=self.gw.now_ms(), room=conn.room)

    # ---- HTTP (gateway.routes)
    async def http_drop(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        out = await self.drop(request.match_info["room"], ident, await read_object(request, required=True))
        return web.json_response(out, status=200 if out["duplicate"] else 201)

    async def http_grab(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        body = await read_object(request)
        pw = body.get("password")
        if pw is not None and not isinstance(pw, str):
            raise BadFrame("'password' must be a string", code="invalid")
        out = await self.grab(request.match_info["id"], ident.user, password=pw)
        return web.json_response(out, status=200 if out["duplicate"] else 201)

    async def http_get(self, request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        rec = await self.store.record(pid) if shard_of_packet(pid) is not None else None
        if rec is None:
            raise NotFound("no such red packet")
        return web.json_response(rec)

    async def http_room(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        now = self.gw.now_ms()
        out = []
        for pid in await self.store.room_packet_ids(room, now_ms=now):
            st = await self.store.get(pid)
            if st is not None and st.state == "open":
                out.append({**st.packet.public(), "grabbed": st.grabbed})
        return web.json_response({"room": room, "redpackets": out})


# ------------------------------------------------------------------------------ OpenAPI
P_PACKET = {"name": "id", "in": "path", "required": True, "schema": ID, "description": "`<shard>-<token>`, e.g. `37-4f0c9a1b2e3d`"}
P_ROOM_ = {"name": "room", "in": "path", "required": True, "schema": ID}
_GRAB = obj({"user": STR, "amount": INT, "index": INT, "at_ms": MS}, ["user", "amount", "index", "at_ms"])
OPENAPI_SCHEMAS: dict[str, J] = {
    "RedPacketDrop": obj({
        "amount": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT, "description": "coins, at least `count`"},
        "count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "description": "shares"},
        "request_id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,48}$",
                       "description": "a retry with it answers the first packet and debits nothing"},
        "duration_s": {"type": "integer", "minimum": MIN_DURATION_S, "maximum": MAX_DURATION_S, "description": "default 300"},
        "password": {"type": "string", "minLength": 1, "maxLength": MAX_PASSWORD_LEN,
                     "description": "口令: a comment containing it grabs"},
        "followers_only": {**BOOL, "description": "only the room host's followers may grab"},
        "greeting": {"type": "string", "maxLength": MAX_GREETING_LEN},
    }, ["amount", "count", "request_id"]),
    "RedPacket": obj({
        "id": STR, "room": ID, "by": STR, "amount": INT, "count": INT, "created_ms": MS, "expires_ms": MS,
        "password": nullable(STR), "followers_only": BOOL, "greeting": STR, "seed_hash": STR,
        "algorithm": {"const": "lc-redpacket-v1"}, "state": STR, "seq": INT, "balance": INT, "duplicate": BOOL,
        "grabbed": INT,
    }, ["id", "room", "by", "amount", "count", "expires_ms", "seed_hash", "algorithm"],
        desc="A red packet as announced by `redpacket.dropped` (the seed stays secret until the end)."),
    "RedPacketGrabbed": obj({
        "packet_id": STR, "room": ID, "amount": INT, "index": INT, "left": INT, "balance": nullable(INT), "duplicate": BOOL,
    }, ["packet_id", "room", "amount", "index", "left", "duplicate"],
        desc="The share taken (`index`: 0-based grab order; `left`: shares left then); `balance` after the credit, "
             "null when the credit was left to the keeper; `duplicate`: this user's first grab, answered again."),
    "RedPacketRecord": {
        "allOf": [ref("RedPacket")], "type": "object",
        "properties": {"grabs": arr(_GRAB), "grabbed_amount": INT, "best": nullable(_GRAB), "record_url": STR,
                       "seed": STR, "shares": arr(INT), "refunded": INT, "ended_ms": MS},
        "required": ["state", "grabs", "grabbed", "grabbed_amount", "best"],
        "description": "The verifiable record: once ended, `seed` (sha256 = `seed_hash`), `shares` "
                       "(= lc-redpacket-v1(seed, id, amount, count); grab i got share i) and `refunded`.",
    },
}
_E = (404, 409)
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/rooms/{room}/redpackets": {
        "post": op("Drop a red packet (`redpacket.dropped` with the seed hash)", tag="redpackets",
                   auth="any signed-in user (the dropper pays from their wallet)", params=[P_ROOM_], body=ref("RedPacketDrop"),
                   ok=("201", ref("RedPacket"), "dropped (200 with duplicate=true for a repeated request_id)"),
                   errors=(404, 409, 422),
                   desc="Debits `amount` coins from the dropper's wallet (409 `insufficient_funds`, 409 `room_ended`). The "
                        "shares are fixed at the drop from a secret seed; coins nobody grabbed return to the dropper at expiry."),
        "get": op("The room's open red packets", tag="redpackets", auth=None, params=[P_ROOM_],
                  ok=("200", obj({"room": ID, "redpackets": arr(ref("RedPacket"))}, ["room", "redpackets"]), "open packets")),
    },
    "/api/v1/redpackets/{id}/grab": {"post": {
        **op("Grab a share", tag="redpackets", auth="any signed-in user but the dropper", params=[P_PACKET],
             ok=("201", ref("RedPacketGrabbed"), "grabbed (200 with duplicate=true: the caller's first share)"), errors=_E,
             desc="409 codes: `expired`, `ended`, `empty`, `own_packet`, `followers_only`, `password_required` "
                  "(body `{\"password\": ...}`, or comment it in the room)."),
        "requestBody": {"required": False, "content": {"application/json": {"schema": obj(
            {"password": {"type": "string", "maxLength": 64, "description": "a password packet's password"}}, extra=False)}}},
    }},
    "/api/v1/redpackets/{id}": {"get": op("A red packet's public, verifiable record", tag="redpackets", auth=None,
                                          params=[P_PACKET], ok=("200", ref("RedPacketRecord"), "record"), errors=(404,))},
}
