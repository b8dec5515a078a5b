"""Flash sales and orders at the edge: ``buy`` over WebSocket and HTTP, campaigns, orders.

Two capabilities, built by ``gateway.wiring`` and served from ``gateway.routes``:

* :class:`FlashSales`: campaigns (create, list, start, stop, stats), ``buy`` (WebSocket and
  ``POST /api/v1/sales/{sale}/buy``), the ``sale.start`` host action, the stock broadcast,
  and this node's view of every sale;
* :class:`Orders`: list, get, pay (the simulated payment provider) and cancel.

Sale-aware answers: the node follows ``sale.started`` / ``sale.stock`` / ``sale.soldout`` /
``sale.ended`` from the broadcast into a :class:`SaleView` per sale, whose lifecycle steps
are :func:`~livecommerce.flash_sale.sale_step`'s. Once a sale is sold out or ended, a
``buy`` from a user who holds nothing in it is answered here by
:func:`~livecommerce.flash_sale.decide_reserve` on that view (``sold_out`` / ``ended`` /
``room_ended``) without reaching Redis; the sale's buyers are fetched once per node at that
moment so that their retries still go to Redis and get their first order back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.cart import is_cart_order
from livecommerce.checkout import Checkout, sale_of, sale_started_data
from livecommerce.errors import BadFrame, Conflict, Forbidden, IdempotencyConflict, NotFound
from livecommerce.flash_sale import (
    SALE_TRANSITIONS,
    Reject,
    Reserved,
    Sale,
    SaleState,
    SaleStep,
    decide_reserve,
    sale_from_campaign,
    sale_step,
    validate_campaign,
)
from livecommerce.order_lines_sql import lines_of
from livecommerce.orders import ORDER_STATES
from livecommerce.protocol.commands import Buy, HostAction, parse_command
from livecommerce.protocol.events import error_frame, reply
from livecommerce.store_sql import SqlStore

from .conn import Conn
from .core import Gateway
from .fulfilment import Fulfilment
from .hooks import TriedHook
from .idempotency import header_key, idempotent
from .validation import read_json, read_object

log = logging.getLogger("livecommerce.gateway.commerce")

# what a campaign id binds: a repeated definition must agree on these (and on the window
# when the repeat gives one; a definition without a start time means "now")
_CAMPAIGN_BOUND = ("room", "product_id", "price", "stock", "per_user_limit", "payment_window_s", "restock_on_refund")


def campaign_differs(existing: Any, new: Any, item: Any) -> bool:
    """Whether a campaign posted again under an existing id defines another sale."""
    fields = list(_CAMPAIGN_BOUND)
    if isinstance(item, dict) and any(k in item for k in ("starts_ms", "starts_at", "ends_ms", "ends_at")):
        fields += ["starts_ms", "ends_ms"]
    return any(getattr(existing, f) != getattr(new, f) for f in fields)


def check_same_buy(r: Reserved, qty: int) -> None:
    """A repeated ``request_id`` answers its first order, so it must ask for the same.

    Raises:
        IdempotencyConflict: the first order of this request id was for another quantity.
    """
    if r.duplicate and r.qty != qty:
        raise IdempotencyConflict(
            f"request_id was used for an order of {r.qty} unit(s), not {qty}: use a new request_id for a new order"
        )

REJECT_MESSAGES = {
    "sold_out": "sold out",
    "limit_reached": "per-user limit reached for this sale",
    "not_started": "the sale has not started",
    "ended": "the sale has ended",
    "room_ended": "the show this sale belongs to has ended",
}

# the state a step leads to, whatever the state before: a node that heard nothing of a sale
# before (it joined later) takes the broadcast's word
_AFTER: dict[SaleStep, SaleState] = {step: after for (_, step), after in SALE_TRANSITIONS.items()}
# the local answers: what the reserve script would say to a user holding nothing
_LOCAL: frozenset[Reject] = frozenset({"sold_out", "ended", "room_ended"})
#: what the node's view of a sale follows (FlashSales.observe)
SALE_EVENTS = ("sale.started", "sale.stock", "sale.soldout", "sale.ended")
VIEW_KEEP_S = 600.0  # an ended sale's view, buyer set included, is kept this long on each node
RUSH_STOCK_S = 2.0  # the stock figure's window while buys queue behind each commit (a rush)


class SaleView:
    """What this node knows of one sale from the broadcast (no I/O).

    ``state`` moves by :func:`~livecommerce.flash_sale.sale_step` (None until a sale event
    was heard); a step that is illegal from what the node knows is a stale event and changes
    nothing. ``sale`` is the sale as ``sale.started`` announced it (its window), ``buyers``
    who held units when it last closed (None until fetched).
    """

    __slots__ = ("buyers", "closed_at", "epoch", "remaining", "room_closed", "sale", "state")

    def __init__(self) -> None:
        self.state: SaleState | None = None
        self.sale: Sale | None = None
        self.remaining = -1
        self.room_closed = False
        self.buyers: set[str] | None = None  # fetched when the sale closes
        self.closed_at = 0.0  # monotonic time it ended (views of ended sales go VIEW_KEEP_S later)
        self.epoch = 0  # counts the state's moves: a commit's snapshot older than the last is stale

    def step(self, step: SaleStep) -> bool:
        """Apply a lifecycle step heard from the broadcast; True when the state moved."""
        if self.state is None:
            after: SaleState | None = _AFTER[step]
        else:
            try:
                after = sale_step(self.state, step)
            except Conflict:  # e.g. sell_out after end: an older event arriving late
                return False
        if after is None:  # it happened already
            return False
        self.state = after
        self.epoch += 1
        return True

    def sold_out_seen(self, buyers: set[str], epoch: int) -> bool:
        """This node's own commit left the sale without stock, and ``buyers`` held units at
        that moment (one atomic snapshot): the view closes at once, as the ``sale.soldout``
        this node is about to broadcast will close it, unless the state moved since the
        commit was sent (``epoch``: a restock or an end heard meanwhile is newer) or the
        buyers are already known. True when it closed."""
        if epoch != self.epoch or self.state == "ended" or (self.state == "sold_out" and self.buyers is not None):
            return False
        if self.state != "sold_out" and not self.step("sell_out"):
            return False
        self.remaining, self.buyers = 0, buyers
        return True

    @property
    def closed(self) -> bool:
        return self.state in ("sold_out", "ended")

    def answer(self, sale: Sale, user: str, qty: int, now_ms: int) -> Reject | None:
        """The answer this node gives without Redis, or None (ask Redis): only once the sale
        closed and its buyers are known, to a user who holds nothing in it, and only what
        :func:`~livecommerce.flash_sale.decide_reserve` says of a closed sale."""
        if self.state is None or not self.closed or self.buyers is None or user in self.buyers:
            return None
        got = decide_reserve(sale, now_ms=now_ms, remaining=max(self.remaining, 0), bought=0, qty=qty,
                             state=self.state, room_closed=self.room_closed)
        return got if got in _LOCAL else None


def announced_sale(room: str, d: dict[str, Any]) -> Sale | None:
    """The sale a ``sale.started`` event describes (None when it does not say enough)."""
    try:
        return Sale(id=str(d["sale_id"]), room=room, product_id=str(d["product_id"]), price=int(d["price"]),
                    stock=int(d["stock"]), per_user_limit=int(d["per_user_limit"]), starts_ms=int(d["starts_ms"]),
                    ends_ms=int(d["ends_ms"]), payment_window_s=int(d.get("payment_window_s") or 900))
    except (KeyError, TypeError, ValueError):
        return None


def reserved_body(r: Reserved) -> dict[str, Any]:
    return {
        "order_id": r.order_id,
        "sale_id": r.sale_id,
        "qty": r.qty,
        "unit_price": r.unit_price,
        "amount": r.amount,
        "pay_by_ms": r.pay_by_ms,
        "duplicate": r.duplicate,
    }


class FlashSales:
    """Campaigns, the sale lifecycle, ``buy`` and the node's view of every sale.

    ``tried`` (the typed hook list ``gw.hooks.tried``) is called with ``("sale", sale_id,
    user)`` by the WebSocket ``buy`` before it answers.
    """

    def __init__(self, gw: Gateway, checkout: Checkout, store: SqlStore, tried: list[TriedHook]) -> None:
        self.gw = gw
        self.checkout = checkout
        self.store = store
        self.tried = tried
        self.views: dict[str, SaleView] = {}
        self._fetches: dict[str, asyncio.Future[None]] = {}  # sale -> its buyers' fetch in flight
        self.last_stock_pub: dict[str, float] = {}
        self._purge_at = 0.0
        self._room_sales: dict[str, tuple[float, asyncio.Future[list[Sale]]]] = {}  # room -> its live sales (SQL)

    async def sale_for_product(self, room: str, product_id: str) -> dict[str, Any] | None:
        """The live (or sold-out) flash sale of ``product_id`` in ``room``, as ``sale.started``
        describes it, with ``remaining`` and ``state``: what a pin shows a late joiner.

        From this node's view of the sale when it heard the sale's events (memory; its
        ``remaining`` follows ``sale.stock``/``sale.soldout``); else from SQL's live sales of
        the room (one read per room per second, shared by every joiner) and the sale's stock
        in Redis. None: no such sale.
        """
        for view in self.views.values():
            s = view.sale
            if s is not None and s.room == room and s.product_id == product_id and view.state in ("live", "sold_out"):
                return {**sale_started_data(s, view.remaining), "state": view.state}
        for s in await self._live_sales(room):
            if s.product_id == product_id:
                try:
                    st = await self.checkout.sales.stats(s.id)
                except NotFound:
                    continue
                if st.state in ("live", "sold_out"):
                    return {**sale_started_data(s, st.remaining), "state": st.state}
        return None

    async def _live_sales(self, room: str) -> list[Sale]:
        now = time.monotonic()
        hit = self._room_sales.get(room)
        if hit is None or hit[0] < now or (hit[1].done() and hit[1].exception() is not None):
            if len(self._room_sales) > 10_000:
                self._room_sales.clear()
            hit = (now + 1.0, asyncio.ensure_future(self._read_live_sales(room)))
            self._room_sales[room] = hit
        return await asyncio.shield(hit[1])

    async def _read_live_sales(self, room: str) -> list[Sale]:
        return [r.sale for r in await self.store.list_sales(room_id=room, limit=20) if r.state in ("live", "sold_out")]

    async def check_schema(self) -> None:
        """Start hook: a ConfigError tells the operator to run ``livecommerce db upgrade``."""
        await self.store.check_schema()

    # ---- the broadcast tells every node the sale's state
    def observe(self, env: dict[str, Any]) -> None:
        """Hub observer: keep the view of each sale the node's rooms hear of."""
        t = env.get("t", "")
        if not t.startswith("sale."):
            return
        d = env.get("d") or {}
        sid = d.get("sale_id")
        if not isinstance(sid, str):
            return
        now = time.monotonic()
        if now >= self._purge_at:
            self._forget_ended(now)
        view = self.views.setdefault(sid, SaleView())
        if t == "sale.started":
            view.sale = announced_sale(str(env.get("room") or ""), d) or view.sale
            if view.step("start"):
                view.remaining, view.buyers = int(d.get("remaining", -1)), None
        elif t == "sale.stock":
            view.remaining = int(d.get("remaining", -1))
            if view.remaining > 0 and view.step("restock"):
                view.buyers = None
        elif t in ("sale.soldout", "sale.ended"):
            if t == "sale.soldout":
                view.step("sell_out")
                view.remaining = 0
            else:
                view.step("end")
                view.room_closed = d.get("reason") == "room_ended"
            view.closed_at = now if view.state == "ended" else 0.0
            view.buyers = None  # who holds units now: fetched once (buys wait for it: _local_answer)
            fetch = asyncio.get_running_loop().create_future()
            self._fetches[sid] = fetch
            self.gw.spawn(self._fetch_buyers(sid, view, fetch), f"buyers-{sid}")

    def _forget_ended(self, now: float) -> None:
        """Views of sales ended VIEW_KEEP_S ago and old throttle marks go (late buyers then
        hear it from Redis), so a node does not keep every sale's buyers forever."""
        self._purge_at = now + 60
        for sid in [sid for sid, v in self.views.items() if v.closed_at and now - v.closed_at > VIEW_KEEP_S]:
            del self.views[sid]
        for sid in [sid for sid, at in self.last_stock_pub.items() if now - at > 60]:
            del self.last_stock_pub[sid]

    async def _fetch_buyers(self, sale_id: str, view: SaleView, fetch: asyncio.Future[None]) -> None:
        try:
            buyers = await self.checkout.sales.buyers(sale_id)
            if self._fetches.get(sale_id) is fetch:  # else a newer close asked again
                view.buyers = buyers
        finally:
            if self._fetches.get(sale_id) is fetch:
                del self._fetches[sale_id]
            fetch.set_result(None)

    async def _local_answer(self, sale_id: str, user: str, qty: int) -> Reject | None:
        view = self.views.get(sale_id)
        if view is not None and view.closed and view.buyers is None:
            fetch = self._fetches.get(sale_id)
            if fetch is not None:  # the sale just closed: its buyers are on their way, wait for them
                await asyncio.shield(fetch)
        if view is None or not view.closed or view.buyers is None or user in view.buyers:
            return None  # no answer without Redis: spare the sale's read too
        sale = view.sale or await self.checkout.sale(sale_id)
        return view.answer(sale, user, qty, self.gw.now_ms())

    def _stock_due(self, sale_id: str, *, rush: bool = False) -> bool:
        """Whether this node's window for the sale's stock figure is open; it closes now
        (marked before any await, so a commit's many reservations ask Redis once). In a
        ``rush`` (buys queued behind the commit that took the figure) the window is at least
        :data:`RUSH_STOCK_S`, counted from the rush's first commit: each figure costs a frame
        to every viewer of the room (with nothing else in the room's tick, a fan-out of its
        own), and the next commit's figure supersedes it within milliseconds; a sale that
        sells out within it shows ``sale.started`` then the final zero and ``sale.soldout``,
        which always go."""
        now = time.monotonic()
        window = self.gw.s.stock_broadcast_ms / 1000
        last = self.last_stock_pub.get(sale_id)
        if rush and last is None:  # the rush's first commit opens its window
            self.last_stock_pub[sale_id] = now
            return False
        if now - (last or 0.0) < (max(window, RUSH_STOCK_S) if rush else window):
            return False
        self.last_stock_pub[sale_id] = now
        return True

    async def publish_stock(self, sale_id: str, remaining: int, *, final: bool) -> None:
        """Broadcast the sale's stock (one node per window of ``LC_STOCK_BROADCAST_MS``),
        and ``sale.soldout`` after the last unit (always)."""
        if final or self._stock_due(sale_id):
            await self._broadcast_stock(sale_id, remaining, final=final)

    async def _broadcast_stock(self, sale_id: str, remaining: int, *, final: bool) -> None:
        if final:
            self.last_stock_pub[sale_id] = time.monotonic()
        elif not await self.checkout.sales.claim_stock_broadcast(sale_id, self.gw.s.stock_broadcast_ms):
            return  # another node has this window
        sale = await self.checkout.sale(sale_id)
        await self.gw.publish(sale.room, "sale.stock", {"sale_id": sale_id, "remaining": remaining}, history=True)
        if final:
            await self.gw.publish(sale.room, "sale.soldout", {"sale_id": sale_id})

    async def reserve(self, user: str, sale_id: str, qty: int, request_id: str) -> Reserved | Reject:
        """The node's answer first (a closed sale), else the sale's next group commit
        (:meth:`Checkout.place`). A commit that leaves no stock closes this node's view at
        once with the buyers it returns, so the buyers behind it are answered here."""
        early = await self._local_answer(sale_id, user, qty)
        if early is not None:
            return early
        view = self.views.get(sale_id)
        # a commit's sell-out closes only a view the broadcast keeps current: the node must
        # hear the sale's room (a restock reopens the view from there)
        follows = view is not None and view.sale is not None and view.sale.room in self.gw.hub.rooms
        epoch = view.epoch if view is not None else 0
        placed = await self.checkout.place(user=user, sale_id=sale_id, qty=qty, request_id=request_id,
                                           now_ms=self.gw.now_ms(), want_buyers=follows and view is not None and view.buyers is None)
        if placed.buyers is not None and follows and view is not None:
            view.sold_out_seen(placed.buyers, epoch)
        r = placed.result
        if isinstance(r, Reserved) and not r.duplicate:
            if r.last_unit:
                self.gw.spawn(self.publish_stock(sale_id, 0, final=True), "stock-final")
            elif self._stock_due(sale_id, rush=placed.behind > 0):
                self.gw.spawn(self._broadcast_stock(sale_id, r.remaining, final=False), "stock")
        return r

    async def start(self, sale_id: str, ident: Identity) -> dict[str, Any]:
        """Raises:
        Forbidden: not the sale's host. NotFound, Conflict: see :meth:`Checkout.start`.
        """
        sale = await self.checkout.sale(sale_id)
        ident.require_host(sale.room)
        opened = await self.checkout.start(sale_id, self.gw.now_ms())
        if await self.checkout.claim_announcement(sale_id, "started"):
            await self.gw.publish(opened.sale.room, "sale.started", sale_started_data(opened.sale, opened.remaining))
        await self.store.put_sale(opened.sale, state=opened.state, now_ms=self.gw.now_ms())
        return {"sale_id": sale_id, "state": opened.state}

    async def stop(self, sale_id: str, ident: Identity) -> dict[str, Any]:
        """Raises:
        Forbidden: not the sale's host. NotFound: no such sale.
        """
        sale = await self.checkout.sale(sale_id)
        ident.require_host(sale.room)
        state = await self.checkout.sales.end(sale_id, self.gw.now_ms())
        await self.checkout.unschedule(sale_id, "end")
        await self.checkout.unschedule(sale_id, "start")
        if await self.checkout.claim_announcement(sale_id, "ended"):
            await self.gw.publish(sale.room, "sale.ended", {"sale_id": sale_id})
        await self.store.put_sale(sale, state=state, now_ms=self.gw.now_ms())
        return {"sale_id": sale_id, "state": state}

    # ---- WebSocket (gateway.routes)
    async def buy(self, conn: Conn, cmd: Buy) -> dict[str, Any]:
        for hook in self.tried:
            hook("sale", cmd.sale_id, conn.user)
        r = await self.reserve(conn.user, cmd.sale_id, cmd.qty, cmd.request_id)
        if isinstance(r, str):
            return error_frame(r, REJECT_MESSAGES.get(r, r), cmd_id=cmd.id, sale_id=cmd.sale_id)
        check_same_buy(r, cmd.qty)
        return reply("order.reserved", cmd.id, reserved_body(r), ts=self.gw.now_ms(), room=conn.room)

    async def host_start(self, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        """``sale.start {sale_id}`` (host action)."""
        sale_id = cmd.d.get("sale_id")
        if not isinstance(sale_id, str):
            raise BadFrame("'sale_id' is required", code="invalid")
        return reply("ack", cmd.id, await self.start(sale_id, conn.ident))

    # ---- HTTP (gateway.routes)
    async def create_campaigns(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        data = await read_json(request)
        items = data if isinstance(data, list) else (data.get("campaigns") if isinstance(data, dict) and "campaigns" in data else [data])
        if not isinstance(items, list) or not items:
            raise BadFrame("body must be a campaign object or a list of them", code="invalid_campaign")
        run = functools.partial(self._create_campaigns, ident, items)
        return await idempotent(self.gw, request, ident, key=header_key(request), target="", body=data, run=run)

    async def _create_campaigns(self, ident: Identity, items: list[Any]) -> web.Response:
        now = self.gw.now_ms()
        plans: list[tuple[dict[str, Any], Sale, Sale | None]] = []
        for i, item in enumerate(items):  # every check before any change: all or nothing
            camp = validate_campaign(item, default_payment_window_s=self.gw.s.payment_window_s, now_ms=now)
            if not ident.is_ops:
                ident.require_host(camp["room"])
            sale = sale_from_campaign(camp, sale_id=camp.get("id") or f"s{now:x}{i}")
            try:
                existing: Sale | None = await self.checkout.sales.get(sale.id)
            except NotFound:
                existing = None
            if existing is not None and campaign_differs(existing, sale, item):
                raise IdempotencyConflict(
                    f"campaign {sale.id!r} exists with another definition: give the new campaign a new id"
                )
            plans.append((camp, sale, existing))
        out = []
        for camp, sale, existing in plans:
            if existing is not None:  # a repeated definition: the stored sale, unchanged
                st = await self.checkout.sales.stats(sale.id)
                out.append({"sale_id": sale.id, "created": False, "state": st.state, **dataclasses.asdict(existing)})
                continue
            created = await self.checkout.create_sale(sale)
            await self.store.put_sale(sale, state="scheduled", now_ms=now, product_name=camp.get("product_name"))
            state = "scheduled"
            if sale.starts_ms <= now < sale.ends_ms:  # already due: open it now
                state = (await self.start(sale.id, ident))["state"]
            out.append({"sale_id": sale.id, "created": created, "state": state, **dataclasses.asdict(sale)})
        return web.json_response({"campaigns": out}, status=201)

    async def list_campaigns(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        room = request.query.get("room")
        if not ident.is_ops:
            if not room:
                raise Forbidden("hosts list the campaigns of one of their rooms: ?room=")
            ident.require_host(room)
        recs = await self.store.list_sales(room_id=room, limit=int(request.query.get("limit", "100")))
        out = []
        for rec in recs:
            live: dict[str, Any]
            try:
                st = await self.checkout.sales.stats(rec.sale.id)
                live = {"state": st.state, "remaining": st.remaining, "reserved": st.reserved, "paid": st.paid}
            except NotFound:
                live = {"state": rec.state}
            out.append({**dataclasses.asdict(rec.sale), "product_name": rec.product_name, **live})
        return web.json_response({"campaigns": out})

    async def sale_start(self, request: web.Request) -> web.Response:
        return web.json_response(await self.start(request.match_info["sale"], self.gw.identify_request(request)))

    async def sale_stop(self, request: web.Request) -> web.Response:
        return web.json_response(await self.stop(request.match_info["sale"], self.gw.identify_request(request)))

    async def sale_stats(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        sale_id = request.match_info["sale"]
        sale = await self.checkout.sale(sale_id)
        if not ident.is_ops:
            ident.require_host(sale.room)
        st = await self.checkout.sales.stats(sale_id)
        sql = await self.store.sale_stats(sale_id)
        return web.json_response(
            {
                "sale_id": sale_id,
                "room": sale.room,
                "state": st.state,
                "stock": st.initial,
                "remaining": st.remaining,
                "reserved": st.reserved,
                "paid": st.paid,
                "buyers": st.buyers,
                "conserved": st.conserved,
                "refunded_kept": st.refunded_kept,
                "gmv": sql.gmv,
                "sql": {"orders": sql.orders, "units": sql.units, "buyers": sql.buyers, "refunded": sql.refunded},
            }
        )

    async def http_buy(self, request: web.Request) -> web.Response:
        """``POST /api/v1/sales/{sale}/buy``; the funnel counts it from the response
        (``Funnel.on_response``), whatever the answer."""
        ident = self.gw.identify_request(request)
        data = await read_json(request)
        if not isinstance(data, dict):
            raise BadFrame("body must be {\"qty\", \"request_id\"}", code="invalid")
        cmd = parse_command({"t": "buy", "d": {**data, "sale_id": request.match_info["sale"]}})
        assert isinstance(cmd, Buy)
        r = await self.reserve(ident.user, cmd.sale_id, cmd.qty, cmd.request_id)
        if isinstance(r, str):
            return web.json_response({"error": {"code": r, "message": REJECT_MESSAGES.get(r, r)}}, status=409)
        check_same_buy(r, cmd.qty)
        return web.json_response(reserved_body(r), status=200 if r.duplicate else 201)




class Orders:
    """Orders over HTTP: list, get, pay (the simulated payment provider), cancel."""

    def __init__(self, gw: Gateway, checkout: Checkout, store: SqlStore, sales: FlashSales, fulfilment: Fulfilment) -> None:
        self.gw = gw
        self.checkout = checkout
        self.store = store
        self.sales = sales  # a cancelled order's units go back on sale: the stock broadcast
        self.fulfilment = fulfilment  # the order's parcels and progress

    async def list_orders(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        q = request.query
        user = q.get("user")
        if not ident.is_ops:
            if user not in (None, ident.user):
                raise Forbidden("you may list only your own orders")
            user = ident.user
        try:
            limit = min(500, int(q.get("limit", "100")))
            offset = int(q.get("offset", "0"))
        except ValueError:
            raise BadFrame("limit and offset must be integers", code="invalid") from None
        state = q.get("state")
        if state is not None and state not in ORDER_STATES:
            raise BadFrame(f"unknown state {state!r}", code="invalid")
        orders = await self.store.list_orders(user_id=user, sale_id=q.get("sale"), room_id=q.get("room"),
                                              state=state, limit=limit, offset=offset)
        return web.json_response({"orders": [dataclasses.asdict(o) for o in orders]})

    async def get_order(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        oid = request.match_info["order"]
        o = await self.store.get_order(oid)
        if is_cart_order(oid):
            return await self._cart_order(ident, oid, o)
        try:
            hold = await self.checkout.sales.hold(sale_of(oid), oid)
        except (NotFound, BadFrame):
            hold = None
        owner = o.user_id if o is not None else (hold.user if hold is not None else None)
        if owner is None or (not ident.is_ops and owner != ident.user):
            raise NotFound(f"no order {oid}")
        hist = await self.store.order_history(oid)
        return web.json_response(
            {
                "order": dataclasses.asdict(o) if o is not None else None,
                "hold": dataclasses.asdict(hold) if hold is not None else None,
                "history": [dataclasses.asdict(h) for h in hist],
                "shipments": await self.fulfilment.shipments_of(oid),
                "fulfilment": await self.fulfilment.progress(oid),
            }
        )

    async def _cart_order(self, ident: Identity, oid: str, o: Any) -> web.Response:
        rec = await self.checkout.cart.carts.order(oid)
        owner = o.user_id if o is not None else (rec.user if rec is not None and rec.state != "refused" else None)
        if owner is None or (not ident.is_ops and owner != ident.user):
            raise NotFound(f"no order {oid}")
        lines = [ln.to_dict() for ln in (rec.lines if rec is not None else (await lines_of(self.store, [oid])).get(oid, []))]
        hist = await self.store.order_history(oid)
        return web.json_response({
            "order": dataclasses.asdict(o) if o is not None else None, "hold": None, "lines": lines,
            "cart": rec.view() if rec is not None else None, "history": [dataclasses.asdict(h) for h in hist],
            "shipments": await self.fulfilment.shipments_of(oid), "fulfilment": await self.fulfilment.progress(oid)})

    async def pay_order(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        if not self.gw.s.dev_pay:
            raise Forbidden("POST /orders/{id}/pay is the provider-less dev payment, off unless LC_DEV_PAY=1 (on in "
                            "`livecommerce dev`): pay with POST /api/v1/orders/{id}/payments", code="dev_pay_disabled")
        oid = request.match_info["order"]
        data = await read_object(request)
        coupon = data.get("coupon_id")
        if coupon is not None and not isinstance(coupon, str):
            raise BadFrame("'coupon_id' must be a string", code="invalid")
        # the simulated payment provider: one answer per key, bound to this order and body
        run = functools.partial(self._pay, ident, oid, coupon)
        return await idempotent(self.gw, request, ident, key=header_key(request), target=oid, body=data, run=run)

    async def _pay(self, ident: Identity, oid: str, coupon: str | None) -> web.Response:
        res = await self.checkout.pay(order_id=oid, user=None if ident.is_ops else ident.user, now_ms=self.gw.now_ms(), coupon_id=coupon)
        if res.outcome in ("already_cancelled", "expired"):  # a refusal: replayed as one for its key
            raise Conflict(f"order {oid} is {res.outcome.replace('already_', '')}: no payment taken", code=res.outcome)
        return web.json_response({"order_id": oid, "outcome": res.outcome, "amount": res.amount, "discount": res.discount})

    async def cancel_order(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        oid = request.match_info["order"]
        outcome = await self.checkout.cancel(order_id=oid, user=None if ident.is_ops else ident.user, now_ms=self.gw.now_ms(),
                                             reason="buyer" if not ident.is_ops else "ops")
        if is_cart_order(oid):
            return web.json_response({"order_id": oid, "outcome": outcome})
        sale = await self.checkout.sale(sale_of(oid))
        if outcome == "released":
            st = await self.checkout.sales.stats(sale.id)
            self.gw.spawn(self.sales.publish_stock(sale.id, st.remaining, final=False), "stock")
        return web.json_response({"order_id": oid, "outcome": outcome})
