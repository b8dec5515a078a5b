"""Invite codes and referral status over HTTP (:mod:`livecommerce.referrals`).

* ``POST /api/v1/invites`` (any signed-in user): the caller's invite code (created once,
  the same code afterwards) and what an invite earns: ``{code, user, referrer_points,
  invitee_points}``. ``referrer_points`` is the caller's ``referral.referrer_points`` flag
  (this read records the exposure when an experiment varies it).
* ``GET /api/v1/referrals/{user}`` (the user or ops): their code, the viewers they invited
  with each one's progress (activated, paid, rewarded) and the points their referrals
  earned them (from the points ledger).

Newcomers use a code with ``POST /api/v1/growth/acquire {invite_code}``
(``gateway/growth.py``); the growth worker awards both sides once the invitee's first
paid order is applied.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from livecommerce import growth_sql
from livecommerce.referrals import (
    INVITEE_POINTS,
    REASON_REFERRER,
    REFERRER_FLAG,
    REFERRER_POINTS,
    referrer_points,
)
from livecommerce.referrals_redis import ReferralsRedis
from livecommerce.store_sql import SqlStore

from .core import Gateway
from .experiments import Experiments
from .openapi import ANYONE_SIGNED, BOOL, INT, MS, P_USER, SELF, STR, J, arr, nullable, obj, op

OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/invites": {"post": op("My invite code and what an invite earns", tag="growth", auth=ANYONE_SIGNED,
                                   ok=("200", obj({"code": STR, "user": STR, "referrer_points": INT, "invitee_points": INT},
                                                  ["code", "user", "referrer_points", "invitee_points"]), "the code"))},
    "/api/v1/referrals/{user}": {"get": op(
        "A user's invitees, their progress and the referral points earned", tag="growth", auth=SELF, params=[P_USER],
        ok=("200", obj({"user": STR, "code": nullable(STR), "invited": INT, "activated": INT, "paid": INT, "rewarded": INT,
                        "points_earned": INT, "invitees": arr(obj({"user": STR, "invite_code": nullable(STR), "acquired_ms": nullable(MS),
                                                                   "activated": BOOL, "paid": BOOL, "rewarded": BOOL}, ["user", "rewarded"]))},
                       ["user", "invited", "rewarded", "points_earned", "invitees"]), "status"))},
}


class Referrals:
    """Invite codes and referral status."""

    def __init__(self, gw: Gateway, refs: ReferralsRedis, store: SqlStore, experiments: Experiments | None) -> None:
        self.gw = gw
        self.refs = refs
        self.store = store
        self.experiments = experiments  # None when this node runs no experiments

    def points_for(self, user: str) -> int:
        """What inviting earns ``user`` (their ``referral.referrer_points`` flag)."""
        exps = self.experiments
        return referrer_points(exps.flag(user, REFERRER_FLAG, REFERRER_POINTS) if exps is not None else REFERRER_POINTS)

    # ---- handlers (gateway.routes)
    async def invite(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        code = await self.refs.ensure_code(ident.user, secrets.token_bytes)
        return web.json_response({"code": code, "user": ident.user, "referrer_points": self.points_for(ident.user),
                                  "invitee_points": INVITEE_POINTS})

    async def status(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        user = request.match_info["user"]
        ident.require_self_or_ops(user)
        invitees = await growth_sql.referrals_of(self.store, user)
        earned = await growth_sql.points_by_reason(self.store, user, REASON_REFERRER)
        return web.json_response({
            "user": user,
            "code": await self.refs.code_of(user),
            "invited": len(invitees),
            "activated": sum(1 for i in invitees if i["activated"]),
            "paid": sum(1 for i in invitees if i["paid"]),
            "rewarded": sum(1 for i in invitees if i["rewarded"]),
            "points_earned": earned,
            "invitees": invitees,
        })
