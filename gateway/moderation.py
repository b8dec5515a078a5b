"""Room moderation (房管) at the edge: moderators, mutes, kicks, bans, deleted comments, slow
mode, followers-only chat, reports and the audit log. Rules: :mod:`livecommerce.moderation`.

**Where it is enforced, without a Redis round trip per comment.** Each node holds the
moderation of every room it serves (:class:`RoomView`) and the platform's bans:

* a room's state is read once, when the node first serves the room (the first joiner's
  ``welcome``, after the node subscribed to the room's channel), and kept current by the
  room's ``moderation`` events (a hub observer); events heard while the read is in flight
  are applied over it (:class:`livecommerce.moderation.Change` lands the same either way),
  a resubscribe reads it again, and it is dropped with the room;
* platform bans are read at start-up and kept current by the platform inbox every node
  subscribes to (``moderation_redis.PLATFORM_INBOX``), read again after a resubscribe.

The comment path asks :meth:`Moderation.check_comment` first (one dict lookup and the pure
:func:`~livecommerce.moderation.judge_comment`; a viewer's relation to the host, in a
followers-only or fan-club-only room, is one read per (host, viewer) per
:data:`RELATION_TTL_S`, a refusal per :data:`NEGATIVE_TTL_S`). Joins meet
:meth:`Moderation.welcome` (the first welcome hook): a banned or kicked user gets an error
frame ``banned`` / ``kicked`` with ``until_ms`` and close 4403. A kick or ban closes the
user's connections in the room on every node that holds one (the observer), a platform ban
everywhere (the platform inbox). Gifts, likes and buys are not moderated: a muted viewer
still watches, likes, gives and buys.

HTTP (the room's staff: its moderators, its host, ops; platform bans and the audit log: ops):

* ``GET /api/v1/rooms/{room}/moderation``: moderators, mutes, kicks, bans, slow mode, chat mode.
* ``PUT|DELETE /api/v1/rooms/{room}/moderators/{user}``: appoint / remove (host, ops).
* ``POST /api/v1/rooms/{room}/mutes {user, seconds?, reason?}``, ``DELETE .../mutes/{user}``;
  ``POST /api/v1/rooms/{room}/kicks {user, seconds?, reason?}``;
  ``POST /api/v1/rooms/{room}/bans {user, seconds?, permanent?, reason?}``, ``DELETE .../bans/{user}``.
* ``PUT /api/v1/rooms/{room}/chat {slow_mode_s?, mode?, reason?}``.
* ``DELETE /api/v1/rooms/{room}/comments/{seq}?reason=``: ``comment.deleted {seq, user}``.
* ``POST /api/v1/rooms/{room}/reports {seq?, user?, reason, note?}`` (anyone signed in);
  ``GET /api/v1/rooms/{room}/reports?status=``; ``POST /api/v1/reports/{id}/resolve
  {action, seconds?, reason?}``.
* ``POST /api/v1/platform/bans {user, seconds?, permanent?, reason?}``,
  ``DELETE /api/v1/platform/bans/{user}``, ``GET /api/v1/platform/bans`` (ops).
* ``GET /api/v1/moderation/audit?room=&actor=&target=&action=&limit=&offset=`` (ops).

Every action writes Redis (one script), announces the change (the room's ``moderation`` or
``comment.deleted`` event, in the room's history like any event, so ``since=`` recovery
replays it; the platform inbox) and then records the audit entry in SQL; a failure on the
way answers 503 and the caller's retry does it again (every step is idempotent but the
audit entry, which the retry writes once more: the log shows the retry).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any, cast

from aiohttp import web
from prometheus_client import Counter

from livecommerce import moderation_sql
from livecommerce.auth import Identity
from livecommerce.comments import TokenBucket
from livecommerce.errors import (
    BadFrame,
    Conflict,
    JoinRefused,
    NotFound,
    RateLimited,
    Refused,
    SlowMode,
)
from livecommerce.fanclub_redis import FanclubRedis
from livecommerce.moderation import (
    AUDIT_ACTIONS,
    CHAT_MODES,
    CONTEXT_WINDOW,
    FOREVER,
    MAX_NOTE,
    MAX_REASON,
    MAX_SLOW_MODE_S,
    REPORT_REASONS,
    REPORT_STATES,
    RESOLUTIONS,
    AuditEntry,
    Change,
    Refusal,
    Relation,
    Report,
    Role,
    RoomRules,
    active,
    check_reason,
    check_user,
    judge_comment,
    judge_join,
    needs_relation,
    parse_chat,
    parse_report,
    parse_resolution,
    parse_user_action,
    report_context,
    require,
    role_in_room,
    target_role,
    until_ms,
    wire_until,
)
from livecommerce.moderation_redis import PLATFORM_INBOX, RedisModeration
from livecommerce.protocol.codec import pack_internal
from livecommerce.protocol.events import envelope, error_frame
from livecommerce.store_sql import SqlStore

from .conn import Conn
from .core import Gateway
from .openapi import (
    ANYONE_SIGNED,
    INT,
    MS,
    OPS,
    P_ROOM,
    P_USER,
    Q_LIMIT,
    Q_OFFSET,
    STR,
    USER,
    J,
    arr,
    nullable,
    obj,
    op,
    ref,
)
from .rooms import RoomGate
from .validation import page, read_object

log = logging.getLogger("livecommerce.gateway.moderation")

RELATION_TTL_S = 60.0  # how long a node holds that a viewer follows / is in the host's club
NEGATIVE_TTL_S = 5.0  # ... or that they do not (a new follower waits at most this long)
MAX_RELATIONS = 100_000
REPORT_RATE = 10 / 60  # reports per second per user on one node (a burst of 5)
REPORT_BURST = 5
CLOSE_REFUSED = 4403
USER_CONTEXT_EVENTS = 300  # history events read back for a report of a user


class RoomView:
    """One served room's moderation on this node: the rules, each viewer's last comment
    (slow mode), and ``quiet``: nothing to check (kept when the rules change, so a comment in
    a room without moderation costs one attribute read)."""

    __slots__ = ("last", "quiet", "rules")

    def __init__(self, rules: RoomRules) -> None:
        self.rules = rules
        self.last: dict[str, int] = {}
        self.quiet = rules.is_empty()


def _refused(r: Refusal) -> Refused:
    cls = SlowMode if r.code == "slow_mode" else Refused
    return cls(r.message, code=r.code, details=r.details())


class Moderation:
    """Moderation of the rooms this node serves; its HTTP handlers and hooks."""

    def __init__(self, gw: Gateway, store: RedisModeration, fans: FanclubRedis, sql: SqlStore, gate: RoomGate) -> None:
        self.gw = gw
        self.store = store
        self.fans = fans
        self.sql = sql
        self.gate = gate
        self.rooms: dict[str, RoomView] = {}
        self.platform: dict[str, int] = {}  # user -> until_ms of a platform ban
        self.platform_loaded = False
        self._platform_v = 0  # the version of the last read of the platform's bans
        self._platform_seen: dict[str, tuple[int, int | None]] = {}  # user -> (version, until; None: lifted) heard since
        self._loading: dict[str, asyncio.Future[RoomView]] = {}
        self._heard: dict[str, list[tuple[Change, int]]] = {}  # changes (and versions) heard while a room loads
        self._relations: dict[tuple[str, str], tuple[Relation, float]] = {}
        self._report_buckets: dict[str, TokenBucket] = {}
        self.actions = Counter("lc_moderation_actions_total", "Moderation actions taken, by action", ["action"],
                               registry=gw.metrics.registry)

    # ------------------------------------------------------------------ the node's state
    def _served(self, room: str) -> bool:
        """The node hears the room's channel (so a copy of its state stays current)."""
        hr = self.gw.hub.rooms.get(room)
        return hr is not None and hr.subscribed is not None and hr.subscribed.done() and hr.subscribed.exception() is None

    async def view(self, room: str) -> RoomView:
        """The room's moderation: the node's copy of a served room (read once), else a
        fresh read that is not kept (the node would not hear its changes).

        Raises:
            Unavailable: Redis unreachable.
        """
        v = self.rooms.get(room)
        if v is not None:
            return v
        if not self._served(room):
            return RoomView(RoomRules.from_fields(await self.store.load(room), self.gw.now_ms()))
        fut = self._loading.get(room)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = self._loading[room] = asyncio.get_running_loop().create_future()
        heard = self._heard[room] = []
        try:
            fields = await self.store.load(room)
        except BaseException as exc:
            if self._loading.get(room) is fut:
                del self._loading[room]
                self._heard.pop(room, None)
            fut.set_exception(exc)
            fut.exception()  # (waiters get it; nobody else needs to)
            raise
        v = RoomView(RoomRules.from_fields(fields, self.gw.now_ms()))
        for c, version in heard:  # what arrived meanwhile: the changes newer than the read
            v.rules.apply_versioned(c, version)
        v.quiet = v.rules.is_empty()
        if self._loading.get(room) is fut:  # not forgotten (dropped, resubscribed) meanwhile
            del self._loading[room]
            self._heard.pop(room, None)
            if self._served(room):
                self.rooms[room] = v
        fut.set_result(v)
        return v

    def _apply(self, room: str, c: Change, version: int) -> None:
        """Apply a change written at ``version`` to the node's copy (and keep it for a read
        in flight to replay): only the fields no later change wrote, so the copy lands on
        what the hash holds whatever order the events came in. A change this node made is
        applied before its own event comes back (read-your-writes); the event is then old."""
        heard = self._heard.get(room)
        if heard is not None:
            heard.append((c, version))
        v = self.rooms.get(room)
        if v is not None:
            v.rules.apply_versioned(c, version)
            v.quiet = v.rules.is_empty()

    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer of ``moderation`` events: apply the change; a kick or ban closes
        the user's connections in the room on this node."""
        d = env.get("d")
        room, c = env.get("room"), Change.of_event(d)
        version = d.get("v") if isinstance(d, dict) else None
        if not isinstance(room, str) or c is None or not isinstance(version, int):
            return
        self._apply(room, c, version)
        if c.action in ("kick", "ban"):
            code = "kicked" if c.action == "kick" else "banned"
            self._close(c.user, code, c.until_ms, room=room)

    def _close(self, user: str, code: str, until: int, *, room: str | None = None) -> int:
        """Close ``user``'s connections on this node: in ``room`` (a room's kick or ban:
        not the host's own connection there), or in every room (None: a platform ban);
        never an ops connection. An error frame, then close 4403 (the rule of
        :func:`~livecommerce.moderation.judge_join`, applied to who is already in)."""
        n = 0
        for conn in list(self.gw.hub.by_user.get(user, ())):
            ident = conn.ident
            if ident.is_ops or (room is not None and (conn.room != room or ident.may_host(room))):
                continue
            frame = error_frame(code, f"{code} ({'for good' if until == FOREVER else f'until {until}'})",
                                until_ms=wire_until(until))
            conn.send(frame)
            conn.close_now(CLOSE_REFUSED, code)
            n += 1
        if n:
            log.info("moderation.closed", extra={"user": user, "code": code, "conns": n})
        return n

    def forget(self, room: str) -> None:
        """The node stopped serving ``room`` (hub ``on_drop``)."""
        self.rooms.pop(room, None)
        self._loading.pop(room, None)
        self._heard.pop(room, None)

    def on_resubscribed(self, channels: set[str]) -> None:
        """Messages were lost while the broker resubscribed: read those rooms again (and
        the platform's bans when its inbox was among them)."""
        keys = self.gw.keys
        for room in list(self.rooms):
            if keys.room_channel(room) in channels:
                self.forget(room)
                self.gw.spawn(self.view(room), "moderation.reload")
        if keys.node_inbox(PLATFORM_INBOX) in channels:
            self.gw.spawn(self.load_platform(), "moderation.platform")

    async def load_platform(self) -> None:
        """Read every platform ban (start-up, resubscribe).

        Raises:
            Unavailable: Redis unreachable.
        """
        bans, version = await self.store.platform()
        now = self.gw.now_ms()
        fresh = {u: t for u, t in bans.items() if active(t, now)}
        for u, (seen_v, until) in self._platform_seen.items():  # heard after the read was made
            if seen_v > version:
                if until is None:
                    fresh.pop(u, None)
                else:
                    fresh[u] = until
        self.platform = fresh
        self._platform_v = max(self._platform_v, version)
        self._platform_seen = {u: x for u, x in self._platform_seen.items() if x[0] > self._platform_v}
        self.platform_loaded = True

    async def start(self) -> None:
        """Start hook: hear the platform inbox, read the platform's bans."""
        self.gw.hub.inbox_handlers["moderation"] = self.on_inbox
        await self.gw.broker.subscribe(self.gw.keys.node_inbox(PLATFORM_INBOX))
        try:
            await self.load_platform()
        except Exception as exc:  # read again each second until Redis answers
            log.warning("moderation.platform_not_loaded", extra={"err": repr(exc)})

    def on_inbox(self, msg: dict[str, Any]) -> None:
        """A platform ban or unban from any node (applied when no later one was seen)."""
        user, until, version, action = msg.get("user"), msg.get("until_ms"), msg.get("v"), msg.get("action")
        if not isinstance(user, str) or not isinstance(version, int):
            return
        if action == "platform.ban" and isinstance(until, int):
            lifted = False
        elif action == "platform.unban":
            lifted = True
        else:
            return
        seen = self._platform_seen.get(user)
        if version <= max(self._platform_v, seen[0] if seen else 0):
            return  # older than what this node holds
        self._platform_seen[user] = (version, None if lifted else until)
        if lifted:
            self.platform.pop(user, None)
        else:
            self.platform[user] = cast(int, until)
            self._close(user, "banned", cast(int, until))

    async def on_second(self) -> None:
        """Drop what ended; close any connection a ban or kick still covers (one that was
        half-way through its welcome when the change arrived); retry a platform read."""
        if not self.platform_loaded:
            try:
                await self.load_platform()
            except Exception:
                pass
        now = self.gw.now_ms()
        for u in [u for u, t in self.platform.items() if not active(t, now)]:
            del self.platform[u]
        by_user = self.gw.hub.by_user
        for u, t in self.platform.items():
            if u in by_user:
                self._close(u, "banned", t)
        for room, v in self.rooms.items():
            r = v.rules
            if r.prune(now):
                v.quiet = r.is_empty()
            r.trim_versions()
            for d, code in ((r.bans, "banned"), (r.kicks, "kicked")):
                for u, t in d.items():
                    if u in by_user:
                        self._close(u, code, t, room=room)
            if v.last:
                keep_ms = r.slow_mode_s * 1000
                v.last = {u: t for u, t in v.last.items() if now - t < keep_ms}
        if len(self._relations) > MAX_RELATIONS:
            self._relations.clear()
        elif self._relations:
            mono = time.monotonic()
            self._relations = {k: v for k, v in self._relations.items() if mono - v[1] < RELATION_TTL_S}

    # ------------------------------------------------------------- comments and joins
    def _rank(self, ident: Identity, room: str, rules: RoomRules) -> Role:
        return role_in_room(is_ops=ident.is_ops, hosts_room=ident.may_host(room), user=ident.user, moderators=rules.moderators)

    async def _relation(self, room: str, user: str, mode: str) -> Relation:
        """The viewer's relation to the room's host, as held: an answer that lets them speak
        in ``mode`` for :data:`RELATION_TTL_S`, one that does not for :data:`NEGATIVE_TTL_S`
        (a new follower or member waits at most that long)."""
        host = await self.gate.host(room)
        key = (host, user)
        now = time.monotonic()
        hit = self._relations.get(key)
        if hit is not None:
            rel, read_at = hit
            speaks = rel.member or (mode == "followers" and rel.following)
            if now - read_at < (RELATION_TTL_S if speaks else NEGATIVE_TTL_S):
                return rel
        following, member = await self.fans.relation(host, user)
        rel = Relation(following, member)
        self._relations[key] = (rel, now)
        return rel

    async def check_comment(self, conn: Conn) -> None:
        """The comment guard (first in ``Comments.comment``): refuse a comment the room's
        moderation does not allow.

        Raises:
            Refused: ``muted``, ``banned``, ``kicked``, ``followers_only``, ``fanclub_only``.
            SlowMode: ``slow_mode`` (with ``retry_after_s``).
        """
        room = conn.room
        v = self.rooms.get(room)
        if v is None:
            v = await self.view(room)
        if v.quiet and not self.platform:
            return
        rules = v.rules
        platform = self.platform.get(conn.ident.user) if self.platform else None
        ident = conn.ident
        rank = self._rank(ident, room, rules)
        rel = await self._relation(room, ident.user, rules.chat) if needs_relation(rules, rank) else None
        got = judge_comment(rules, user=ident.user, rank=rank, now_ms=self.gw.now_ms(), platform_until=platform,
                            last_ms=v.last.get(ident.user), relation=rel)
        if got is not None:
            raise _refused(got)

    async def on_comment(self, conn: Conn, d: dict[str, Any]) -> None:
        """Comment hook (the comment passed every check): slow mode counts from now."""
        v = self.rooms.get(conn.room)
        if v is not None and v.rules.slow_mode_s:
            v.last[conn.user] = self.gw.now_ms()

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        """Welcome hook (the first): refuse a banned or kicked user (error frame, close
        4403); tell the joiner what applies to them (``moderation``: their role, slow mode,
        the chat mode, their mute) when anything does.

        Raises:
            JoinRefused: ``banned`` or ``kicked``, with ``until_ms``.
        """
        v = self.rooms.get(room)
        if v is None:
            v = await self.view(room)
        rules = v.rules
        rank = self._rank(ident, room, rules)
        now = self.gw.now_ms()
        got = judge_join(rules, user=ident.user, rank=rank, now_ms=now, platform_until=self.platform.get(ident.user))
        if got is not None:
            raise JoinRefused(got.message, code=got.code, details=got.details())
        muted = rules.mutes.get(ident.user)
        if rank == "viewer" and not rules.slow_mode_s and rules.chat == "all" and not active(muted, now):
            return {}
        out: dict[str, Any] = {"role": rank, "slow_mode_s": rules.slow_mode_s, "chat": rules.chat}
        if active(muted, now):
            out["muted_until_ms"] = wire_until(cast(int, muted))
        return {"moderation": out}

    # ---------------------------------------------------------------------- actions
    async def _staff(self, request: web.Request, action: str) -> tuple[Identity, str, RoomView, Role]:
        ident = self.gw.identify_request(request)
        room = request.match_info["room"]
        v = await self.view(room)
        actor = self._rank(ident, room, v.rules)
        require(action, actor, actor_id=ident.user)
        return ident, room, v, actor

    async def _target(self, room: str, v: RoomView, user: str, claimed: str = "") -> Role:
        return target_role(user, host=await self.gate.host(room), moderators=v.rules.moderators, claimed=claimed)

    async def _audit(self, ident: Identity, actor: Role, room: str, action: str, *, target: str = "", seq: int | None = None,
                     until: int | None = None, reason: str = "", report_id: str | None = None,
                     details: dict[str, Any] | None = None) -> AuditEntry:
        now = self.gw.now_ms()
        e = AuditEntry(f"ma{now:x}{secrets.token_hex(5)}", now, room, ident.user, actor, action, target, seq, until, reason,
                       report_id, details or {})
        await moderation_sql.record(self.sql, e)
        self.actions.labels(action).inc()
        log.info("moderation.action", extra={"room": room, "actor": ident.user, "action": action, "target": target,
                                             "report": report_id})
        return e

    async def _change(self, room: str, c: Change) -> int:
        """Write the change, announce it with its version, and apply it here at once
        (read-your-writes); the event's seq."""
        version = await self.store.apply(room, c, now_ms=self.gw.now_ms())
        seq = await self.gw.publish(room, "moderation", {**c.event(), "v": version})
        self._apply(room, c, version)
        return seq

    async def act_on_user(self, ident: Identity, actor: Role, room: str, v: RoomView, action: str, user: str,
                          seconds: int | None, reason: str, report_id: str | None = None) -> dict[str, Any]:
        """Mute, unmute, kick, ban, unban, appoint or remove a moderator: check, write,
        announce, audit; the answer.

        Raises:
            Forbidden: the actor may not do it to that user. Conflict: too many moderators.
            Unavailable: Redis or SQL unreachable.
        """
        require(action, actor, actor_id=ident.user, target=await self._target(room, v, user), target_id=user)
        timed = action in ("mute", "kick", "ban")
        until = until_ms(self.gw.now_ms(), seconds) if timed else FOREVER
        seq = await self._change(room, Change(action, user=user, until_ms=until, by_role=actor))
        e = await self._audit(ident, actor, room, action, target=user, until=until if timed else None, reason=reason,
                              report_id=report_id)
        out: dict[str, Any] = {"room": room, "action": action, "user": user, "seq": seq, "audit_id": e.id}
        if timed:
            out["until_ms"] = wire_until(until)
        return out

    async def comment_at(self, room: str, seq: int) -> dict[str, Any]:
        """The room's ``comment`` event ``seq`` from the history.

        Raises:
            NotFound: no such comment in the room's history (never, or aged out).
        """
        hist = await self.gw.broker.history(room, seq - 1, limit=1)
        env = hist.events[0] if hist.events else None
        if env is None or env.get("seq") != seq or env.get("t") != "comment" or not isinstance(env.get("d"), dict):
            raise NotFound(f"no comment {seq} in room {room}'s history")
        return env

    async def delete_comment(self, ident: Identity, actor: Role, room: str, v: RoomView, seq: int, reason: str,
                             report_id: str | None = None) -> dict[str, Any]:
        """Retract comment ``seq``: ``comment.deleted {seq, user, by_role}`` to the room
        (and its history, for ``since=`` recovery).

        Raises:
            NotFound: no such comment. Forbidden: the author outranks the actor.
        """
        env = await self.comment_at(room, seq)
        author = str(env["d"].get("user") or "")
        claimed = str(env["d"].get("role") or "")
        require("comment.delete", actor, actor_id=ident.user, target=await self._target(room, v, author, claimed),
                target_id=author)
        at = await self.gw.publish(room, "comment.deleted", {"seq": seq, "user": author, "by_role": actor})
        e = await self._audit(ident, actor, room, "comment.delete", target=author, seq=seq, reason=reason, report_id=report_id,
                              details={"text": env["d"].get("text")})
        return {"room": room, "action": "comment.delete", "user": author, "deleted_seq": seq, "seq": at, "audit_id": e.id}

    # ---- handlers (gateway.routes)
    async def http_state(self, request: web.Request) -> web.Response:
        _, room, v, _ = await self._staff(request, "chat")
        return web.json_response({"room": room, **v.rules.view(self.gw.now_ms())})

    async def http_moderator_add(self, request: web.Request) -> web.Response:
        return await self._user_path(request, "moderator.add")

    async def http_moderator_remove(self, request: web.Request) -> web.Response:
        return await self._user_path(request, "moderator.remove")

    async def http_unmute(self, request: web.Request) -> web.Response:
        return await self._user_path(request, "unmute")

    async def http_unban(self, request: web.Request) -> web.Response:
        return await self._user_path(request, "unban")

    async def _user_path(self, request: web.Request, action: str) -> web.Response:
        ident, room, v, actor = await self._staff(request, action)
        user = check_user(request.match_info["user"])
        reason = check_reason(request.query.get("reason"))
        return web.json_response(await self.act_on_user(ident, actor, room, v, action, user, None, reason))

    async def http_mute(self, request: web.Request) -> web.Response:
        return await self._user_body(request, "mute")

    async def http_kick(self, request: web.Request) -> web.Response:
        return await self._user_body(request, "kick")

    async def http_ban(self, request: web.Request) -> web.Response:
        return await self._user_body(request, "ban")

    async def _user_body(self, request: web.Request, action: str) -> web.Response:
        ident, room, v, actor = await self._staff(request, action)
        ask = parse_user_action(await read_object(request, required=True), action, actor)
        out = await self.act_on_user(ident, actor, room, v, action, ask.user, ask.seconds, ask.reason)
        return web.json_response(out, status=201)

    async def http_chat(self, request: web.Request) -> web.Response:
        ident, room, v, actor = await self._staff(request, "chat")
        body = await read_object(request, required=True)
        s = parse_chat(body, v.rules.settings)
        reason = check_reason(body.get("reason"))
        seq = await self._change(room, Change("chat", slow_mode_s=s.slow_mode_s, mode=s.mode, by_role=actor))
        e = await self._audit(ident, actor, room, "chat", reason=reason, details={"slow_mode_s": s.slow_mode_s, "mode": s.mode})
        return web.json_response({"room": room, "action": "chat", "slow_mode_s": s.slow_mode_s, "mode": s.mode, "seq": seq,
                                  "audit_id": e.id})

    async def http_delete_comment(self, request: web.Request) -> web.Response:
        ident, room, v, actor = await self._staff(request, "comment.delete")
        try:
            seq = int(request.match_info["seq"])
        except ValueError:
            raise BadFrame("seq must be a comment's seq (an integer)", code="invalid") from None
        reason = check_reason(request.query.get("reason"))
        return web.json_response(await self.delete_comment(ident, actor, room, v, seq, reason))

    # ---- reports
    def _report_bucket(self, user: str) -> TokenBucket:
        b = self._report_buckets.get(user)
        if b is None:
            if len(self._report_buckets) > 10_000:
                self._report_buckets.clear()
            b = self._report_buckets[user] = TokenBucket(REPORT_RATE, REPORT_BURST)
        return b

    async def http_report(self, request: web.Request) -> web.Response:
        """A viewer reports a comment or a user: 201 the report (200: the same report
        filed before), in the room's queue with the comments around it."""
        ident = self.gw.identify_request(request)
        room = request.match_info["room"]
        ask = parse_report(await read_object(request, required=True))
        if not self._report_bucket(ident.user).take(time.monotonic()):
            raise RateLimited(f"at most {REPORT_BURST} reports at once, then one every {1 / REPORT_RATE:g} s")
        broker = self.gw.broker
        if ask.seq is not None:
            env = await self.comment_at(room, ask.seq)
            target = str(env["d"].get("user") or "")
            if ask.user is not None and ask.user != target:
                raise BadFrame(f"comment {ask.seq} is {target}'s, not {ask.user}'s", code="invalid")
            hist = await broker.history(room, max(0, ask.seq - CONTEXT_WINDOW - 1), limit=2 * CONTEXT_WINDOW + 1)
        else:
            target = cast(str, ask.user)
            top = await broker.top_seq(room)
            hist = await broker.history(room, max(0, top - USER_CONTEXT_EVENTS), limit=USER_CONTEXT_EVENTS)
        if target == ident.user:
            raise BadFrame("you cannot report yourself", code="invalid")
        now = self.gw.now_ms()
        context = report_context(hist.events, seq=ask.seq, user=target)
        rep, new = await moderation_sql.open_report(self.sql, Report(
            f"rp{now:x}{secrets.token_hex(5)}", room, ident.user, target, ask.seq or 0, ask.reason, ask.note, context, "open", now))
        if new:
            self.gw.spawn(self._tell_staff(room, rep), "moderation.report_push")
        return web.json_response(rep.view(), status=201 if new else 200)

    async def _tell_staff(self, room: str, rep: Report) -> None:
        """Push ``report.filed`` to the room's host and moderators wherever they are connected."""
        v = await self.view(room)
        staff = {await self.gate.host(room), *v.rules.moderators}
        env = envelope("report.filed", room, {"id": rep.id, "target": rep.target, "seq": rep.seq or None, "reason": rep.reason},
                       ts=self.gw.now_ms())
        await self.gw.notifier.to_users([(u, env) for u in sorted(staff)])

    async def http_reports(self, request: web.Request) -> web.Response:
        _, room, _, _ = await self._staff(request, "report.resolve")
        status = request.query.get("status", "open")
        if status not in (*REPORT_STATES, "all"):
            raise BadFrame(f"status must be one of {', '.join((*REPORT_STATES, 'all'))}", code="invalid")
        limit, offset = page(request)
        got = await moderation_sql.reports(self.sql, room, status=None if status == "all" else status, limit=limit, offset=offset)
        return web.json_response({"room": room, "status": status, "reports": [r.view() for r in got]})

    async def http_resolve(self, request: web.Request) -> web.Response:
        """Close a report with an action on what it reports (or ``dismiss``); the other open
        reports of the same comment (or user) close with it."""
        ident = self.gw.identify_request(request)
        rep = await moderation_sql.get_report(self.sql, request.match_info["report"])
        if rep is None:
            raise NotFound(f"no report {request.match_info['report']}")
        room = rep.room
        v = await self.view(room)
        actor = self._rank(ident, room, v.rules)
        require("report.resolve", actor, actor_id=ident.user)
        if rep.status != "open":
            raise Conflict(f"report {rep.id} is {rep.status} already", code="report_closed")
        res = parse_resolution(await read_object(request, required=True), actor)
        if res.action == "dismiss":
            e = await self._audit(ident, actor, room, "report.dismiss", target=rep.target, seq=rep.seq or None, reason=res.reason,
                                  report_id=rep.id)
            done: dict[str, Any] = {"audit_id": e.id}
        elif res.action == "delete":
            if not rep.seq:
                raise BadFrame("a report of a user has no comment to delete: mute, kick or ban", code="invalid")
            done = await self.delete_comment(ident, actor, room, v, rep.seq, res.reason, rep.id)
        else:
            done = await self.act_on_user(ident, actor, room, v, res.action, rep.target, res.seconds, res.reason, rep.id)
        closed, ids = await moderation_sql.resolve(
            self.sql, rep.id, status="dismissed" if res.action == "dismiss" else "resolved", by=ident.user, now_ms=self.gw.now_ms(),
            resolution={"action": res.action, "audit_id": done["audit_id"], "reason": res.reason})
        return web.json_response({"report": closed.view(), "closed": ids, "result": done})

    # ---- the platform (ops)
    async def http_platform_ban(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        ident.require_ops()
        ask = parse_user_action(await read_object(request, required=True), "platform.ban", "ops")
        if ask.user == ident.user:
            raise BadFrame("nobody may ban themself", code="invalid")
        until = until_ms(self.gw.now_ms(), ask.seconds)
        await self._platform(ask.user, until)
        e = await self._audit(ident, "ops", "", "platform.ban", target=ask.user, until=until, reason=ask.reason)
        return web.json_response({"action": "platform.ban", "user": ask.user, "until_ms": wire_until(until), "audit_id": e.id},
                                 status=201)

    async def http_platform_unban(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        ident.require_ops()
        user = check_user(request.match_info["user"])
        await self._platform(user, None)
        e = await self._audit(ident, "ops", "", "platform.unban", target=user, reason=check_reason(request.query.get("reason")))
        return web.json_response({"action": "platform.unban", "user": user, "audit_id": e.id})

    async def _platform(self, user: str, until: int | None) -> None:
        version = await self.store.platform_ban(user, until, now_ms=self.gw.now_ms())
        msg = {"kind": "moderation", "action": "platform.ban" if until is not None else "platform.unban", "user": user,
               "until_ms": until, "v": version}
        await self.gw.broker.publish_node(PLATFORM_INBOX, pack_internal(msg))
        self.on_inbox(msg)  # this node at once (the inbox brings it again: the same state)

    async def http_platform_bans(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        now = self.gw.now_ms()
        got, _ = await self.store.platform()
        bans = [{"user": u, "until_ms": wire_until(t)} for u, t in sorted(got.items()) if active(t, now)]
        return web.json_response({"bans": bans})

    async def http_audit(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        q = request.query
        action = q.get("action")
        if action is not None and action not in AUDIT_ACTIONS:
            raise BadFrame(f"action must be one of {', '.join(AUDIT_ACTIONS)}", code="invalid")
        limit, offset = page(request)
        got = await moderation_sql.audit(self.sql, room=q.get("room"), actor=q.get("actor"), target=q.get("target"),
                                         action=action, limit=limit, offset=offset)
        return web.json_response({"entries": [e.view() for e in got], "limit": limit, "offset": offset})


# ------------------------------------------------------------------------------- OpenAPI
STAFF = "the room's moderators, its host (token role `host` listing the room) or ops"
HOST_ONLY = "the room's host (token role `host` listing the room) or ops"
UNTIL = nullable({**MS, "description": "when it ends (epoch ms); null: for good"})
REASON = {"type": "string", "maxLength": MAX_REASON, "description": "why (kept in the audit log)"}
P_SEQ = {"name": "seq", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
P_REPORT = {"name": "report", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}}
Q_REASON = {"name": "reason", "in": "query", "schema": REASON}
UNTIL_IN = {"seconds": {"type": "integer", "minimum": 1, "description": "how long (default: see docs/moderation.md)"},
            "permanent": {"type": "boolean", "description": "for good (bans: host and ops only)"}}

OPENAPI_SCHEMAS: dict[str, J] = {
    "ModerationState": obj({
        "room": STR, "moderators": arr(STR),
        "mutes": arr(obj({"user": STR, "until_ms": UNTIL}, ["user", "until_ms"])),
        "kicks": arr(obj({"user": STR, "until_ms": UNTIL}, ["user", "until_ms"])),
        "bans": arr(obj({"user": STR, "until_ms": UNTIL}, ["user", "until_ms"])),
        "slow_mode_s": INT, "chat": {"enum": list(CHAT_MODES)},
    }, ["room", "moderators", "mutes", "kicks", "bans", "slow_mode_s", "chat"]),
    "UserAction": obj({"user": USER, **UNTIL_IN, "reason": REASON}, ["user"], extra=False),
    "ModerationDone": obj({
        "room": STR, "action": STR, "user": STR, "until_ms": UNTIL, "seq": {**INT, "description": "the announcing event's seq"},
        "deleted_seq": INT, "slow_mode_s": INT, "mode": STR, "audit_id": STR,
    }, ["action", "audit_id"]),
    "ChatSettings": obj({
        "slow_mode_s": {"type": "integer", "minimum": 0, "maximum": MAX_SLOW_MODE_S, "description": "0: slow mode off"},
        "mode": {"enum": list(CHAT_MODES)}, "reason": REASON,
    }, extra=False),
    "ReportCreate": obj({
        "seq": {"type": "integer", "minimum": 1, "description": "the reported comment's seq"},
        "user": {**USER, "description": "the reported user (a comment's author when seq is given)"},
        "reason": {"enum": list(REPORT_REASONS)}, "note": {"type": "string", "maxLength": MAX_NOTE},
    }, ["reason"], extra=False, desc="Report a comment (`seq`) or a user (`user`)."),
    "Report": obj({
        "id": STR, "room": STR, "reporter": STR, "target": STR, "seq": nullable(INT), "reason": STR, "note": STR,
        "context": arr(obj({"seq": INT, "ts": MS, "user": STR, "name": STR, "text": STR, "reported": {"type": "boolean"}})),
        "status": {"enum": list(REPORT_STATES)}, "created_ms": MS, "resolved_ms": nullable(MS), "resolved_by": nullable(STR),
        "resolution": nullable({"type": "object"}),
    }, ["id", "room", "reporter", "target", "reason", "context", "status", "created_ms"]),
    "ReportResolve": obj({"action": {"enum": list(RESOLUTIONS)}, **UNTIL_IN, "reason": REASON}, ["action"], extra=False),
    "AuditEntry": obj({
        "id": STR, "ts_ms": MS, "room": {**STR, "description": "empty for the platform"}, "actor": STR,
        "actor_role": {"enum": ["moderator", "host", "ops"]}, "action": {"enum": list(AUDIT_ACTIONS)}, "target": STR,
        "seq": nullable(INT), "until_ms": nullable(MS), "for_good": {"type": "boolean"}, "reason": STR,
        "report_id": nullable(STR), "details": {"type": "object"},
    }, ["id", "ts_ms", "room", "actor", "actor_role", "action", "target", "reason"]),
}

_TAG = "moderation"
_DONE = ref("ModerationDone")
_STAFF_ERR = (404, 409)
_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/rooms/{room}/moderation": {
        "get": op("The room's moderation: moderators, mutes, kicks, bans, slow mode, chat mode", tag=_TAG, auth=STAFF,
                  params=[P_ROOM], ok=("200", ref("ModerationState"), "the state")),
    },
    "/api/v1/rooms/{room}/moderators/{user}": {
        "put": op("Appoint a moderator of the room (at most 50)", tag=_TAG, auth=HOST_ONLY, params=[P_ROOM, P_USER, Q_REASON],
                  ok=("200", _DONE, "appointed (`moderation` event)"), errors=_STAFF_ERR),
        "delete": op("Remove a moderator", tag=_TAG, auth=HOST_ONLY, params=[P_ROOM, P_USER, Q_REASON],
                     ok=("200", _DONE, "removed"), errors=_STAFF_ERR),
    },
    "/api/v1/rooms/{room}/mutes": {
        "post": op("Mute a user in the room (their comments answer `muted` with `until_ms`)", tag=_TAG, auth=STAFF,
                   params=[P_ROOM], body=ref("UserAction"), ok=("201", _DONE, "muted"), errors=_STAFF_ERR,
                   desc="Moderators mute for up to 24 h, the host and ops up to 30 days; 10 minutes by default."),
    },
    "/api/v1/rooms/{room}/mutes/{user}": {
        "delete": op("Lift a mute", tag=_TAG, auth=STAFF, params=[P_ROOM, P_USER, Q_REASON], ok=("200", _DONE, "unmuted"),
                     errors=_STAFF_ERR),
    },
    "/api/v1/rooms/{room}/kicks": {
        "post": op("Kick a user: their connections in the room close (4403 `kicked`) and they may not join again for a while",
                   tag=_TAG, auth=STAFF, params=[P_ROOM], body=ref("UserAction"), ok=("201", _DONE, "kicked"), errors=_STAFF_ERR,
                   desc="Rejoining is refused for `seconds` (10 minutes by default, at most 24 h)."),
    },
    "/api/v1/rooms/{room}/bans": {
        "post": op("Ban a user from the room (connections closed, 4403 `banned`; joins and comments refused)", tag=_TAG,
                   auth=STAFF, params=[P_ROOM], body=ref("UserAction"), ok=("201", _DONE, "banned"), errors=_STAFF_ERR,
                   desc="The host and ops ban for good by default (or for `seconds`); moderators for at most 7 days (1 by default)."),
    },
    "/api/v1/rooms/{room}/bans/{user}": {
        "delete": op("Lift a room ban (and a kick)", tag=_TAG, auth=STAFF, params=[P_ROOM, P_USER, Q_REASON],
                     ok=("200", _DONE, "unbanned"), errors=_STAFF_ERR),
    },
    "/api/v1/rooms/{room}/chat": {
        "put": op("Slow mode and the chat mode (all, followers, fanclub)", tag=_TAG, auth=STAFF, params=[P_ROOM],
                  body=ref("ChatSettings"), ok=("200", _DONE, "set (`moderation` event)"), errors=_STAFF_ERR),
    },
    "/api/v1/rooms/{room}/comments/{seq}": {
        "delete": op("Delete a comment: `comment.deleted {seq, user}` to every viewer, and on `since=` recovery", tag=_TAG,
                     auth=STAFF, params=[P_ROOM, P_SEQ, Q_REASON], ok=("200", _DONE, "retracted"), errors=_STAFF_ERR,
                     desc="404 when the comment is not in the room's history (any more)."),
    },
    "/api/v1/rooms/{room}/reports": {
        "post": op("Report a comment or a user to the room's moderators", tag=_TAG, auth=ANYONE_SIGNED, params=[P_ROOM],
                   body=ref("ReportCreate"), ok=("201", ref("Report"), "filed (200 with the same report when filed before)"),
                   errors=(404,), desc="The report keeps the comment and the few around it. At most 5 at once, then 10 a minute "
                                       "(429 `rate_limited`)."),
        "get": op("The room's reports: the open queue (oldest first) or closed ones", tag=_TAG, auth=STAFF,
                  params=[P_ROOM, {"name": "status", "in": "query", "schema": {"enum": [*REPORT_STATES, "all"]}}, Q_LIMIT, Q_OFFSET],
                  ok=("200", obj({"room": STR, "status": STR, "reports": arr(ref("Report"))}, ["room", "status", "reports"]),
                      "reports")),
    },
    "/api/v1/reports/{report}/resolve": {
        "post": op("Close a report with an action (dismiss, delete, mute, kick, ban); its duplicates close too", tag=_TAG,
                   auth=STAFF, params=[P_REPORT], body=ref("ReportResolve"),
                   ok=("200", obj({"report": ref("Report"), "closed": arr(STR), "result": _DONE}, ["report", "closed", "result"]),
                       "closed"), errors=(404, 409), desc="409 `report_closed`: closed already."),
    },
    "/api/v1/platform/bans": {
        "post": op("Ban a user from the whole platform", tag=_TAG, auth=OPS, body=ref("UserAction"),
                   ok=("201", _DONE, "banned everywhere: connections closed (4403 `banned`)"), errors=(409,)),
        "get": op("Users banned from the platform", tag=_TAG, auth=OPS,
                  ok=("200", obj({"bans": arr(obj({"user": STR, "until_ms": UNTIL}, ["user", "until_ms"]))}, ["bans"]), "bans")),
    },
    "/api/v1/platform/bans/{user}": {
        "delete": op("Lift a platform ban", tag=_TAG, auth=OPS, params=[P_USER, Q_REASON], ok=("200", _DONE, "unbanned")),
    },
    "/api/v1/moderation/audit": {
        "get": op("The moderation audit log, newest first", tag=_TAG, auth=OPS,
                  params=[{"name": "room", "in": "query", "schema": STR}, {"name": "actor", "in": "query", "schema": USER},
                          {"name": "target", "in": "query", "schema": USER},
                          {"name": "action", "in": "query", "schema": {"enum": list(AUDIT_ACTIONS)}}, Q_LIMIT, Q_OFFSET],
                  ok=("200", obj({"entries": arr(ref("AuditEntry")), "limit": INT, "offset": INT}, ["entries", "limit", "offset"]),
                      "entries")),
    },
}


def _with_429(paths: dict[str, dict[str, J]]) -> dict[str, dict[str, J]]:
    """A report may answer 429 (`rate_limited`): documented here, as the shared error table
    (``gateway.openapi.ERRORS``) has no 429 row."""
    spec = paths["/api/v1/rooms/{room}/reports"]["post"]
    spec["responses"]["429"] = {"description": "too many reports (`rate_limited`)",
                                "content": {"application/json": {"schema": ref("Error")}}}
    return paths


OPENAPI_PATHS: dict[str, dict[str, J]] = _with_429(_PATHS)
