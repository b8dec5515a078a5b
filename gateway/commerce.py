"""Flash sales and orders at the edge: ``buy`` over WebSocket and HTTP, campaigns, orders.

Sale-aware answers: the node follows ``sale.started`` / ``sale.stock`` / ``sale.soldout`` /
``sale.ended`` from the broadcast. Once a sale is sold out or ended, a ``buy`` from a user
who holds nothing in it is answered here (``sold_out`` / ``ended``) without reaching Redis;
the sale's buyers are fetched once per node at that moment so that their retries still go
to Redis and get their first order back.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from aiohttp import web

from livecommerce.checkout import Checkout, sale_of, sale_started_data
from livecommerce.errors import BadFrame, Conflict, Forbidden, IdempotencyConflict, NotFound
from livecommerce.flash_sale import Reserved, sale_from_campaign, validate_campaign
from livecommerce.log import open_log
from livecommerce.protocol.commands import Buy, HostAction
from livecommerce.store_sql import SqlStore

from .conn import Conn
from .core import Gateway
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


class SaleView:
    """What this node knows of a sale from the broadcast."""

    __slots__ = ("buyers", "closed_at", "remaining", "state")

    def __init__(self) -> None:
        self.state = "unknown"
        self.remaining = -1
        self.buyers: set[str] | None = None  # fetched when the sale closes
        self.closed_at = 0.0  # monotonic time it ended (views of ended sales go VIEW_KEEP_S later)


VIEW_KEEP_S = 600.0  # an ended sale's view, buyer set included, is kept this long on each node


def setup(gw: Gateway, app: web.Application) -> None:
    durable = open_log(gw.s, gw.redis)
    checkout = Checkout(gw.redis, gw.keys, durable, sale_retention_s=gw.s.sale_retention_s, room_retention_s=gw.s.room_retention_s)
    store = SqlStore(gw.s.database_url)
    gw.services["checkout"] = checkout
    gw.services["store"] = store
    views: dict[str, SaleView] = {}
    last_stock_pub: dict[str, float] = {}

    async def on_start() -> None:
        await store.check_schema()  # ConfigError tells the operator to run `livecommerce db upgrade`
        coupons = gw.services.get("coupons")
        if coupons is not None:
            checkout.coupons = coupons

    async def on_stop() -> None:
        await durable.close()
        await store.close()

    gw.services.setdefault("startup", []).append(on_start)
    gw.services.setdefault("shutdown", []).append(on_stop)

    # ---- the broadcast tells every node the sale's state
    async def fetch_buyers(sale_id: str, view: SaleView) -> None:
        raw = await gw.redis.hkeys(gw.keys.sale(sale_id, "buyers"))
        view.buyers = {b.decode() if isinstance(b, bytes) else b for b in raw}

    purge_at = [0.0]

    def forget_ended(now: float) -> None:
        """Views of sales ended VIEW_KEEP_S ago and old throttle marks go (late buyers then
        hear it from Redis), so a node does not keep every sale's buyers forever."""
        purge_at[0] = now + 60
        for sid in [sid for sid, v in views.items() if v.closed_at and now - v.closed_at > VIEW_KEEP_S]:
            del views[sid]
        for sid in [sid for sid, at in last_stock_pub.items() if now - at > 60]:
            del last_stock_pub[sid]

    def observe(env: dict[str, Any]) -> None:
        t = env.get("t", "")
        if not t.startswith("sale."):
            return
        d = env.get("d") or {}
        sid = d.get("sale_id")
        if not isinstance(sid, str):
            return
        now = time.monotonic()
        if now >= purge_at[0]:
            forget_ended(now)
        view = views.setdefault(sid, SaleView())
        if t == "sale.started":
            view.state, view.remaining, view.buyers = "live", int(d.get("remaining", -1)), None
        elif t == "sale.stock":
            view.remaining = int(d.get("remaining", -1))
            if view.remaining > 0 and view.state == "sold_out":
                view.state, view.buyers = "live", None
        elif t in ("sale.soldout", "sale.ended"):
            view.state = "sold_out" if t == "sale.soldout" else "room_ended" if d.get("reason") == "room_ended" else "ended"
            view.closed_at = 0.0 if view.state == "sold_out" else now
            view.buyers = None
            gw.spawn(fetch_buyers(sid, view), f"buyers-{sid}")

    gw.hub.observers.append(observe)

    async def mark_buyer(conn: Conn, d: dict[str, Any]) -> None:
        if await gw.redis.sismember(gw.keys.room(conn.room, "payers"), conn.user):
            d["buyer"] = True

    gw.services.setdefault("comment_hooks", []).append(mark_buyer)

    def local_answer(sale_id: str, user: str) -> str | None:
        view = views.get(sale_id)
        if view is None or view.buyers is None or user in view.buyers:
            return None
        return view.state if view.state in ("sold_out", "ended", "room_ended") else None

    async def publish_stock(sale_id: str, remaining: int, *, final: bool) -> None:
        now = time.monotonic()
        if not final:
            if now - last_stock_pub.get(sale_id, 0.0) < gw.s.stock_broadcast_ms / 1000:
                return
            # one node per window broadcasts the figure
            ok = await gw.redis.set(gw.keys.sale(sale_id, "stockpub"), "1", nx=True, px=gw.s.stock_broadcast_ms)
            if not ok:
                return
        last_stock_pub[sale_id] = now
        sale = await checkout.sale(sale_id)
        await gw.publish(sale.room, "sale.stock", {"sale_id": sale_id, "remaining": remaining}, history=True)
        if final:
            await gw.publish(sale.room, "sale.soldout", {"sale_id": sale_id})

    async def do_buy(user: str, sale_id: str, qty: int, request_id: str) -> Reserved | str:
        early = local_answer(sale_id, user)
        if early is not None:
            return early
        r = await checkout.buy(user=user, sale_id=sale_id, qty=qty, request_id=request_id, now_ms=gw.now_ms())
        if isinstance(r, Reserved) and not r.duplicate:
            if r.last_unit:
                gw.spawn(publish_stock(sale_id, 0, final=True), "stock-final")
            else:
                gw.spawn(publish_stock(sale_id, r.remaining, final=False), "stock")
        return r

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

    @gw.command("buy")
    async def buy(gw: Gateway, conn: Conn, cmd: Buy) -> dict[str, Any]:
        r = await do_buy(conn.user, cmd.sale_id, cmd.qty, cmd.request_id)
        if isinstance(r, str):
            return {"t": "error", "id": cmd.id, "d": {"code": r, "message": REJECT_MESSAGES.get(r, r), "sale_id": cmd.sale_id}}
        check_same_buy(r, cmd.qty)
        return {"t": "order.reserved", "id": cmd.id, "room": conn.room, "ts": gw.now_ms(), "d": reserved_body(r)}

    async def start_sale(sale_id: str, ident: Any) -> dict[str, Any]:
        sale = await checkout.sale(sale_id)
        ident.require_host(sale.room)
        state = await checkout.sales.start(sale_id, gw.now_ms())
        st = await checkout.sales.stats(sale_id)
        sale = await checkout.sales.get(sale_id)  # the window may have moved
        checkout._sale_cache[sale_id] = sale
        await checkout.unschedule(sale_id, "start")
        await gw.redis.zadd(gw.keys.global_key("sched:end"), {sale_id: sale.ends_ms})
        if await checkout.claim_announcement(sale_id, "started"):
            await gw.publish(sale.room, "sale.started", sale_started_data(sale, st.remaining))
        await store.put_sale(sale, state=state, now_ms=gw.now_ms())
        return {"sale_id": sale_id, "state": state}

    async def stop_sale(sale_id: str, ident: Any) -> dict[str, Any]:
        sale = await checkout.sale(sale_id)
        ident.require_host(sale.room)
        state = await checkout.sales.end(sale_id, gw.now_ms())
        await checkout.unschedule(sale_id, "end")
        await checkout.unschedule(sale_id, "start")
        if await checkout.claim_announcement(sale_id, "ended"):
            await gw.publish(sale.room, "sale.ended", {"sale_id": sale_id})
        await store.put_sale(sale, state=state, now_ms=gw.now_ms())
        return {"sale_id": sale_id, "state": state}

    async def host_sale_start(gw: Gateway, conn: Conn, cmd: HostAction) -> dict[str, Any]:
        sale_id = cmd.d.get("sale_id")
        if not isinstance(sale_id, str):
            raise BadFrame("'sale_id' is required", code="invalid")
        res = await start_sale(sale_id, conn.ident)
        return {"t": "ack", "id": cmd.id, "d": res}

    gw.command("sale.start")(host_sale_start)

    # ---- HTTP
    async def create_campaigns(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        data = await read_json(request)
        items = data if isinstance(data, list) else (data.get("campaigns") if isinstance(data, dict) and "campaigns" in data else [data])
        if not isinstance(items, list) or not items:
            raise BadFrame("body must be a campaign object or a list of them", code="invalid_campaign")

        async def run() -> web.Response:
            now = gw.now_ms()
            plans: list[tuple[dict[str, Any], Any, Any]] = []
            for i, item in enumerate(items):  # every check before any change: all or nothing
                camp = validate_campaign(item, default_payment_window_s=gw.s.payment_window_s, now_ms=now)
                if ident.role != "ops":
                    ident.require_host(camp["room"])
                sale = sale_from_campaign(camp, sale_id=camp.get("id") or f"s{now:x}{i}")
                try:
                    existing = await checkout.sales.get(sale.id)
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
                    st = await checkout.sales.stats(sale.id)
                    out.append({"sale_id": sale.id, "created": False, "state": st.state, **dataclasses.asdict(existing)})
                    continue
                created = await checkout.create_sale(sale)
                await store.put_sale(sale, state="scheduled", now_ms=now, product_name=camp.get("product_name"))
                state = "scheduled"
                if sale.starts_ms <= now < sale.ends_ms:  # already due: open it now
                    state = (await start_sale(sale.id, ident))["state"]
                out.append({"sale_id": sale.id, "created": created, "state": state, **dataclasses.asdict(sale)})
            return web.json_response({"campaigns": out}, status=201)

        return await idempotent(gw, request, ident, key=header_key(request), target="", body=data, run=run)

    async def list_campaigns(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        room = request.query.get("room")
        if ident.role != "ops":
            if not room:
                raise Forbidden("hosts list the campaigns of one of their rooms: ?room=")
            ident.require_host(room)
        recs = await store.list_sales(room_id=room, limit=int(request.query.get("limit", "100")))
        out = []
        for rec in recs:
            try:
                st = await checkout.sales.stats(rec.sale.id)
                live = {"state": st.state, "remaining": st.remaining, "reserved": st.reserved, "paid": st.paid}
            except NotFound:
                live = {"state": rec.state}
            out.append({**dataclasses.asdict(rec.sale), "product_name": rec.product_name, **live})
        return web.json_response({"campaigns": out})

    async def sale_start(request: web.Request) -> web.Response:
        return web.json_response(await start_sale(request.match_info["sale"], gw.identify_request(request)))

    async def sale_stop(request: web.Request) -> web.Response:
        return web.json_response(await stop_sale(request.match_info["sale"], gw.identify_request(request)))

    async def sale_stats(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        sale_id = request.match_info["sale"]
        sale = await checkout.sale(sale_id)
        if ident.role != "ops":
            ident.require_host(sale.room)
        st = await checkout.sales.stats(sale_id)
        sql = await store.sale_stats(sale_id)
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

    async def http_buy(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        data = await read_json(request)
        if not isinstance(data, dict):
            raise BadFrame("body must be {\"qty\", \"request_id\"}", code="invalid")
        from livecommerce.protocol.commands import parse_command

        cmd = parse_command({"t": "buy", "d": {**data, "sale_id": request.match_info["sale"]}})
        assert isinstance(cmd, Buy)
        r = await do_buy(ident.user, cmd.sale_id, cmd.qty, cmd.request_id)
        if isinstance(r, str):
            return web.json_response({"error": {"code": r, "message": REJECT_MESSAGES.get(r, r)}}, status=409)
        check_same_buy(r, cmd.qty)
        return web.json_response(reserved_body(r), status=200 if r.duplicate else 201)

    def order_json(o: Any) -> dict[str, Any]:
        return dataclasses.asdict(o)

    async def list_orders(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        q = request.query
        user = q.get("user")
        if ident.role != "ops":
            if user not in (None, ident.user):
                raise Forbidden("you may list only your own orders")
            user = ident.user
        try:
            limit = min(500, int(q.get("limit", "100")))
            offset = int(q.get("offset", "0"))
        except ValueError:
            raise BadFrame("limit and offset must be integers", code="invalid") from None
        state = q.get("state")
        if state is not None and state not in ("reserved", "paid", "cancelled", "refund_requested", "refunded"):
            raise BadFrame(f"unknown state {state!r}", code="invalid")
        orders = await store.list_orders(user_id=user, sale_id=q.get("sale"), room_id=q.get("room"), state=state, limit=limit, offset=offset)  # type: ignore[arg-type]
        return web.json_response({"orders": [order_json(o) for o in orders]})

    async def get_order(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        oid = request.match_info["order"]
        o = await store.get_order(oid)
        hold = None
        try:
            hold = await checkout.sales.hold(sale_of(oid), oid)
        except (NotFound, BadFrame):
            hold = None
        owner = o.user_id if o is not None else (hold.user if hold is not None else None)
        if owner is None or (ident.role != "ops" and owner != ident.user):
            raise NotFound(f"no order {oid}")
        hist = await store.order_history(oid)
        return web.json_response(
            {
                "order": order_json(o) if o is not None else None,
                "hold": dataclasses.asdict(hold) if hold is not None else None,
                "history": [dataclasses.asdict(h) for h in hist],
            }
        )

    async def pay_order(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        oid = request.match_info["order"]
        data = await read_object(request)
        coupon = data.get("coupon_id")
        if coupon is not None and not isinstance(coupon, str):
            raise BadFrame("'coupon_id' must be a string", code="invalid")

        async def run() -> web.Response:
            res = await checkout.pay(order_id=oid, user=None if ident.role == "ops" else ident.user, now_ms=gw.now_ms(), coupon_id=coupon)
            if res.outcome in ("already_cancelled", "expired"):  # a refusal: replayed as one for its key
                raise Conflict(f"order {oid} is {res.outcome.replace('already_', '')}: no payment taken", code=res.outcome)
            return web.json_response({"order_id": oid, "outcome": res.outcome, "amount": res.amount, "discount": res.discount})

        # the simulated payment provider: one answer per key, bound to this order and body
        return await idempotent(gw, request, ident, key=header_key(request), target=oid, body=data, run=run)

    async def cancel_order(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        oid = request.match_info["order"]
        outcome = await checkout.cancel(order_id=oid, user=None if ident.role == "ops" else ident.user, now_ms=gw.now_ms(), reason="buyer" if ident.role != "ops" else "ops")
        sale = await checkout.sale(sale_of(oid))
        if outcome == "released":
            st = await checkout.sales.stats(sale.id)
            gw.spawn(publish_stock(sale.id, st.remaining, final=False), "stock")
        return web.json_response({"order_id": oid, "outcome": outcome})

    r = app.router
    r.add_post("/api/v1/campaigns", create_campaigns)
    r.add_get("/api/v1/campaigns", list_campaigns)
    r.add_post("/api/v1/sales/{sale}/start", sale_start)
    r.add_post("/api/v1/sales/{sale}/stop", sale_stop)
    r.add_get("/api/v1/sales/{sale}/stats", sale_stats)
    r.add_post("/api/v1/sales/{sale}/buy", http_buy)
    r.add_get("/api/v1/orders", list_orders)
    r.add_get("/api/v1/orders/{order}", get_order)
    r.add_post("/api/v1/orders/{order}/pay", pay_order)
    r.add_post("/api/v1/orders/{order}/cancel", cancel_order)
