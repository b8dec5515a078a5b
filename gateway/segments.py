"""Segments at the edge (ops): define, preview, and target with coupons and pushes.

The rule language is :mod:`livecommerce.segments`. Membership is evaluated over the stored
profiles (:func:`livecommerce.profiles.view` at the time of the call), page by page; erased
profiles never match.

* ``POST /api/v1/segments {id?, name, rule}`` -> 201 ``{segment, size}``; ``PUT
  /api/v1/segments/{id}`` replaces the name and rule. A bad rule is 400 ``{"error": {"code":
  "invalid_rule", "message": "at /and/1/field: unknown field 'spnd' (did you mean
  'spend'?)", "pointer": "/and/1/field"}}``.
* ``GET /api/v1/segments``; ``GET /api/v1/segments/{id}``: the segment and its targets with
  their counts.
* ``POST /api/v1/segments/preview {rule}`` and ``GET /api/v1/segments/{id}/preview``:
  ``{size, sample}`` (up to 10 member ids).
* ``POST /api/v1/segments/{id}/coupons {kind, value, threshold?, quantity?, expires_in_s?,
  drop_id?, text?}``: a coupon drop only the segment's members (at this moment) can claim
  (anyone else: 409 ``not_eligible``; ``quantity`` defaults to the member count), announced
  to the online members with a private ``notice`` frame ``{text, segment, target, drop_id}``
  through their gateways' inboxes. -> 201 ``{target_id, drop_id, members, delivered}``.
* ``POST /api/v1/segments/{id}/push {text, drop_id?, sale_id?}``: a ``notice`` to the online
  members. -> 201 ``{target_id, members, delivered}``.
* ``GET /api/v1/segments/{id}/targets``: each target with ``members``, ``delivered`` (members
  online when it went out, reached on at least one gateway) and ``redeemed``: for a coupon
  drop, members who used a coupon of it on a paid order (``claimed`` too); for a push, the
  pushed users who used a coupon of its ``drop_id`` or paid an order of its ``sale_id``
  (None without either).

Each target is also appended to the log (``segment.targeted``, topic ``activity``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from livecommerce import segments_sql
from livecommerce.auth import Identity
from livecommerce.coupons import CouponDrop, coupon_id, new_drop
from livecommerce.coupons_redis import CouponsRedis
from livecommerce.errors import BadFrame, Conflict, NotFound
from livecommerce.log import Log
from livecommerce.presence import Presence
from livecommerce.profiles import view
from livecommerce.profiles_sql import iter_profiles
from livecommerce.protocol.codec import pack_internal
from livecommerce.protocol.events import envelope
from livecommerce.segments import RuleError, evaluate, parse_rule, parse_segment
from livecommerce.segments_redis import SegmentsRedis
from livecommerce.store_sql import SqlStore

from .core import Gateway
from .validation import read_object

SAMPLE = 10
CHUNK = 500


class Segments:
    """Segment definitions, their members now, and targeting them; the ops HTTP API."""

    def __init__(self, gw: Gateway, redis: SegmentsRedis, presence: Presence, sql: SqlStore, durable: Log,
                 coupons: CouponsRedis) -> None:
        self.gw = gw  # the clock, the broker (node inboxes), the callers' identities
        self.redis = redis
        self.presence = presence  # the nodes each member is connected to
        self.sql = sql
        self.durable = durable  # segment.targeted
        self.coupons = coupons

    async def members(self, rule_json: Any) -> list[str]:
        """Users whose profile satisfies the rule now (erased profiles excluded).

        Raises:
            RuleError: the rule is invalid.
        """
        rule = parse_rule(rule_json)
        now = self.gw.now_ms()
        out = []
        async for user, data, name, erased in iter_profiles(self.sql):
            if not erased and evaluate(rule, view(user, data, now, display_name=name)):
                out.append(user)
        return out

    async def segment(self, sid: str) -> dict[str, Any]:
        seg = await segments_sql.get_segment(self.sql, sid)
        if seg is None:
            raise NotFound(f"no segment {sid!r}")
        return seg

    async def push(self, users: list[str], env: dict[str, Any], target: str) -> int:
        """Send ``env`` to the online ``users`` through their nodes' inboxes; remember who
        was reached; return how many were."""
        reached: list[str] = []
        for i in range(0, len(users), CHUNK):
            part = users[i : i + CHUNK]
            for u, live in (await self.presence.user_nodes(part)).items():
                if not live:
                    continue
                body = pack_internal({"kind": "user", "user": u, "room": None, "env": env})
                for node in live:
                    await self.gw.broker.publish_node(node, body)
                reached.append(u)
        await self.redis.remember_pushed(target, reached)
        return len(reached)

    async def target(self, sid: str, kind: str, body: dict[str, Any], by: str) -> dict[str, Any]:
        seg = await self.segment(sid)
        members = await self.members(seg["rule"])
        now = self.gw.now_ms()
        tid = f"tg{secrets.token_hex(6)}"
        text = body.get("text")
        if text is not None and (not isinstance(text, str) or not 0 < len(text) <= 500):
            raise BadFrame("'text' must be 1..500 characters", code="invalid")
        drop_id, sale_id = body.get("drop_id"), body.get("sale_id")
        if kind == "coupon":
            spec = {k: v for k, v in body.items() if k not in ("text", "sale_id")}
            spec.setdefault("quantity", max(1, len(members)))
            drop = new_drop(spec, room="", by=by, now_ms=now, default_id=f"sd{secrets.token_hex(6)}")
            if not await self.coupons.create_drop(drop, segment=sid, members=members):
                raise Conflict(f"coupon drop {drop.id!r} already exists")
            drop_id, text = drop.id, text or _offer(drop)
        else:
            if not text:
                raise BadFrame("'text' is required", code="invalid")
            for name, v in (("drop_id", drop_id), ("sale_id", sale_id)):
                if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 64):
                    raise BadFrame(f"'{name}' must be an id", code="invalid")
        env = envelope("notice", None, {"text": text, "segment": sid, "target": tid, "drop_id": drop_id, "sale_id": sale_id}, ts=now)
        delivered = await self.push(members, env, tid)
        row = {"id": tid, "segment_id": sid, "kind": kind, "drop_id": drop_id, "sale_id": sale_id, "text": text,
               "members": len(members), "delivered": delivered, "created_by": by, "created_ms": now}
        await segments_sql.add_target(self.sql, **row)
        await self.durable.append("activity", sid, "segment.targeted", {"target_id": tid, "segment_id": sid, "kind": kind,
                                  "drop_id": drop_id, "sale_id": sale_id, "members": len(members), "delivered": delivered},
                                  event_id=f"target:{tid}", ts=now)
        return {"target_id": tid, "segment_id": sid, "kind": kind, "drop_id": drop_id, "sale_id": sale_id,
                "members": len(members), "delivered": delivered}

    async def counts(self, t: dict[str, Any]) -> dict[str, Any]:
        """A target with its redeemed (and, for a drop, claimed) counts."""
        out = {k: t[k] for k in ("id", "segment_id", "kind", "drop_id", "sale_id", "text", "members", "delivered", "created_ms")}
        coupons = self.coupons
        if t["kind"] == "coupon" and t["drop_id"]:
            got = await coupons.get_drop(t["drop_id"])
            out["claimed"] = got[1]["claimed"] if got else 0
            out["redeemed"] = got[1]["used"] if got else 0
            return out
        pushed = await self.redis.pushed(t["id"])
        if t["drop_id"]:
            n = 0
            for u in pushed:
                c = await coupons.coupon(u, coupon_id(t["drop_id"], u), now_ms=self.gw.now_ms())
                n += bool(c and c["state"] == "used")
            out["redeemed"] = n
        elif t["sale_id"]:
            out["redeemed"] = len(await segments_sql.payers(self.sql, t["sale_id"]) & set(pushed))
        else:
            out["redeemed"] = None
        return out

    # ---- HTTP (gateway.routes)
    def _ops(self, request: web.Request) -> Identity:
        ident = self.gw.identify_request(request)
        ident.require_ops()
        return ident

    async def put(self, request: web.Request) -> web.Response:
        """``POST /api/v1/segments`` creates, ``PUT /api/v1/segments/{segment}`` replaces."""
        ident = self._ops(request)
        body = await read_object(request)
        replace = request.method == "PUT"
        if replace:
            body = {**body, "id": request.match_info["segment"]}
        try:
            seg = parse_segment(body, default_id=f"sg{secrets.token_hex(5)}")
            members = await self.members(seg.rule)
        except RuleError as exc:
            return rule_error(exc)
        row = await segments_sql.put_segment(self.sql, seg, by=ident.user, now_ms=self.gw.now_ms(), replace=replace)
        return web.json_response({"segment": row, "size": len(members)}, status=200 if replace else 201)

    async def listing(self, request: web.Request) -> web.Response:
        self._ops(request)
        return web.json_response({"segments": await segments_sql.list_segments(self.sql)})

    async def get(self, request: web.Request) -> web.Response:
        self._ops(request)
        seg = await self.segment(request.match_info["segment"])
        ts = [await self.counts(t) for t in await segments_sql.targets(self.sql, seg["id"])]
        return web.json_response({"segment": seg, "targets": ts})

    async def preview(self, request: web.Request) -> web.Response:
        """``POST /api/v1/segments/preview {rule}`` or ``GET .../{segment}/preview``."""
        self._ops(request)
        if request.method == "POST":
            body = await read_object(request)
            if "rule" not in body:
                return rule_error(RuleError("", "missing 'rule'"))
            rule = body["rule"]
        else:
            rule = (await self.segment(request.match_info["segment"]))["rule"]
        try:
            members = await self.members(rule)
        except RuleError as exc:
            return rule_error(exc)
        return web.json_response({"size": len(members), "sample": members[:SAMPLE], "rule": json.loads(json.dumps(rule))})

    async def coupon(self, request: web.Request) -> web.Response:
        ident = self._ops(request)
        return web.json_response(await self.target(request.match_info["segment"], "coupon", await read_object(request), ident.user), status=201)

    async def push_notice(self, request: web.Request) -> web.Response:
        ident = self._ops(request)
        return web.json_response(await self.target(request.match_info["segment"], "push", await read_object(request), ident.user), status=201)

    async def get_targets(self, request: web.Request) -> web.Response:
        self._ops(request)
        sid = (await self.segment(request.match_info["segment"]))["id"]
        return web.json_response({"segment_id": sid, "targets": [await self.counts(t) for t in await segments_sql.targets(self.sql, sid)]})


def _offer(d: CouponDrop) -> str:
    if d.kind == "percent":
        return f"A coupon for you: {d.value}% off orders from {d.threshold / 100:.2f}"
    return f"A coupon for you: {d.value / 100:.2f} off" + (f" orders from {d.threshold / 100:.2f}" if d.threshold else "")


def rule_error(exc: RuleError) -> web.Response:
    return web.json_response({"error": {"code": exc.code, "message": exc.message, "pointer": exc.pointer}}, status=400)
