"""Viewer profiles at the edge: ops read them; a viewer exports or erases their own data.

* ``GET /api/v1/users/{user}/profile`` (ops): the profile view
  (:func:`livecommerce.profiles.view`: RFM, lifecycle stage, watch time, gifts, categories,
  hosts followed, fan clubs, intimacy, coupon use ...). ``GET /api/v1/me/profile``: one's own.
* ``GET /api/v1/me/data``: everything kept about the caller, as JSON: profile (with the
  display name), orders with their history, refunds (with the notes written), tickets with
  their history, wallet (balance and ledger), points (balances and ledger), coupons, fan
  clubs, shipping addresses and parcels (with the address each went to). Not exported: the comment texts in rooms' recovery history (see below).
* ``DELETE /api/v1/me/data``: erase the caller's personal data, keeping every ledger
  balanced. 409 ``erasure_busy`` while a wallet movement of theirs is still on its way to
  the ledger or an order of theirs is reserved or has a refund open (retry shortly).

Erasure rules (what stays, what goes):

* The user id is replaced by a pseudonym (:func:`livecommerce.profiles.pseudonym`, keyed by
  the deployment secret) in the wallet and points ledgers, orders, coupon claims, refunds
  and tickets; ledger references embedding the user id are re-keyed the same way. The Redis
  wallet balance moves to the pseudonym, so each key's balance still equals the sum of its
  ledger rows; points balances are sums of the ledger by definition.
* Removed: the display name, shipping addresses and the address snapshot of every parcel
  (carrier and tracking number stay, under the pseudonym), refund notes and decision notes,
  ticket subjects, texts and notes (``[erased]``), the points cache, coupon list and fan badges / leaderboard entries.
* The profile's aggregates stay under the pseudonym (marked ``erased``); events of the user
  still in the log are folded under the pseudonym from then on (``erasures``), including by
  a rebuild.
* Not rewritten, documented: the durable log itself (append-only; events hold user ids,
  amounts and refund notes, never display names, and leave with the log's retention);
  ``applied_events`` (exactly-once claims whose ids embed the user id for top-ups, comments
  and redemptions; rewriting them would re-apply redelivered events); comment texts and
  display names in rooms' recovery history (``{room:ID}:hist``, capped at
  ``LC_HISTORY_SIZE`` events per room and expiring after ``LC_HISTORY_TTL_S``); lottery
  records (their entrant lists are published proofs).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from livecommerce import fulfilment_sql, order_lines_sql, profiles_sql, refunds_sql, tickets_sql
from livecommerce.coupons_redis import CouponsRedis
from livecommerce.errors import Conflict, NotFound
from livecommerce.fulfilment_redis import FulfilmentRedis
from livecommerce.log import Log
from livecommerce.orders import OrderState
from livecommerce.points import level_for, utc_day
from livecommerce.profiles import pseudonym, view
from livecommerce.profiles_redis import ErasureRedis
from livecommerce.store_sql import SqlStore

from .core import Gateway

EXPORT_LIMIT = 10_000


class Profiles:
    """Profile views, a user's data export and erasure."""

    def __init__(self, gw: Gateway, erasure: ErasureRedis, store: SqlStore, log: Log, coupons: CouponsRedis | None,
                 parcels: FulfilmentRedis) -> None:
        self.gw = gw
        self.parcels = parcels  # the orders' fulfilment records hold ship-to addresses too
        self.erasure = erasure
        self.store = store
        self.log = log
        self.coupons = coupons  # None when this node serves no coupons

    async def view_of(self, user: str) -> dict[str, Any] | None:
        got = await profiles_sql.get_profile(self.store, user)
        if got is None:
            return None
        data, name, erased = got
        return view(user, data, self.gw.now_ms(), display_name=name, erased=erased)

    async def export(self, user: str) -> dict[str, Any]:
        store = self.store
        now = self.gw.now_ms()
        orders = await store.list_orders(user_id=user, limit=EXPORT_LIMIT)
        order_rows = []
        coupons_of = await order_lines_sql.coupons_of(store, [o.id for o in orders])  # a cart order's (one platform + one shop)
        for o in orders:
            hist = await store.order_history(o.id)
            order_rows.append({**dataclasses.asdict(o), "coupons": coupons_of.get(o.id, []),
                               "history": [dataclasses.asdict(h) for h in hist]})
        tickets = []
        for t in await tickets_sql.list_tickets(store, user_id=user, limit=EXPORT_LIMIT):
            got = await tickets_sql.get(store, t.id)
            tickets.append({**dataclasses.asdict(t), "history": got[1] if got else []})
        wallet = [dataclasses.asdict(e) for e in await store.wallet_ledger(user, limit=EXPORT_LIMIT)]
        points = [dataclasses.asdict(e) for e in await store.points_ledger(user, limit=EXPORT_LIMIT)]
        viewer, host = await store.points_balance(user, "viewer"), await store.points_balance(user, "host")
        coupons = await self.coupons.user_coupons(user, now_ms=now) if self.coupons is not None else []
        return {
            "user": user,
            "exported_ms": now,
            "profile": await self.view_of(user),
            "orders": order_rows,
            "refunds": await refunds_sql.list_refunds(store, user_id=user, limit=EXPORT_LIMIT),
            "tickets": tickets,
            "wallet": {"balance": await self.erasure.balance(user), "ledger_balance": await store.wallet_balance(user), "entries": wallet},
            "points": {"viewer": viewer, "host": host, "level": level_for(viewer, self.gw.s.levels), "entries": points},
            "coupons": coupons,
            "fanclubs": await profiles_sql.memberships(store, user),
            "addresses": await fulfilment_sql.list_addresses(store, user),
            "shipments": await fulfilment_sql.user_shipments(store, user, limit=EXPORT_LIMIT),
            "not_exported": {
                "comments": "comment texts are kept only in rooms' recovery history (the last "
                f"{self.gw.s.history_size} events of each room, expiring after {self.gw.s.history_ttl_s} s)",
            },
        }

    async def erase(self, user: str) -> dict[str, Any]:
        """Erase (see the module docstring).

        Raises:
            Conflict: (``erasure_busy``) wallet or orders still moving.
        """
        store = self.store
        if await self.erasure.outbox_pending(user) or await self.erasure.balance(user) != await store.wallet_balance(user):
            raise Conflict("a wallet movement of yours is still being recorded: retry in a few seconds", code="erasure_busy")
        states: tuple[OrderState, ...] = ("reserved", "refund_requested", "return_requested")
        for state in states:
            if await store.list_orders(user_id=user, state=state, limit=1):
                raise Conflict(f"an order of yours is {state.replace('_', ' ')}: retry once it is settled", code="erasure_busy")
        alias = pseudonym(self.gw.s.secret, user)
        now = self.gw.now_ms()
        hosts = [m["host"] for m in await profiles_sql.memberships(store, user)]
        mine = [o.id for o in await store.list_orders(user_id=user, limit=EXPORT_LIMIT)]
        moved = await self.erasure.move_wallet(user, alias, now_ms=now)
        tables = await profiles_sql.erase_user(store, user, alias, now_ms=now)
        await self.erasure.forget(user, hosts, day=utc_day(now))
        await self.parcels.forget(mine, alias)
        await self.log.append("activity", alias, "user.erased", {"pseudonym": alias}, event_id=f"erased:{alias}:{now}", ts=now)
        return {"erased": True, "pseudonym": alias, "wallet_moved": moved, "rows": tables}

    # ---- handlers (gateway.routes)
    async def profile(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        user = request.match_info["user"]
        v = await self.view_of(user)
        if v is None:
            raise NotFound(f"no profile for {user!r} (no event of theirs has been applied)")
        return web.json_response(v)

    async def my_profile(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        v = await self.view_of(ident.user)
        if v is None:
            raise NotFound("no profile yet")
        return web.json_response(v)

    async def my_data(self, request: web.Request) -> web.Response:
        """``GET`` exports, ``DELETE`` erases."""
        ident = self.gw.identify_request(request)
        if request.method == "DELETE":
            return web.json_response(await self.erase(ident.user))
        return web.json_response(await self.export(ident.user))
