"""Ops dashboard data and alerting: what is live now, how fast, how much money, what is wrong.

Data sources, all shared by every gateway so any node answers for the whole cluster:

* **Activity counters** (per node, cumulative): comments (a ``comment_hooks`` entry) and
  gifts (an ``on_gift`` hook) counted on the node that accepted them, error frames and
  commands from ``gw.metrics``, HTTP responses and 5xx (an ``on_response_prepare`` signal).
  Once a second each node writes its totals to the hash ``lc:ops:nodes`` (field = node id)
  and marks its rooms in the sorted set ``lc:ops:rooms`` (score = last seen). A reader turns
  successive totals of each node into per-second rates, so nodes need no common clock tick.
* **Online** from the rooms' presence hashes (``gw.hub.online``), **room state** from the
  rooms' meta hashes.
* **Commerce** (every :data:`COMMERCE_EVERY_S` seconds, one node per interval by a Redis
  lock; the others read its snapshot ``lc:ops:commerce``): recent campaigns from SQL, each
  with its Redis stock figures (``checkout.sales.stats``) and SQL order totals
  (``store.sale_stats``), so orders by state, GMV, buyers, stock drift between Redis and SQL,
  and payment time-outs (orders cancelled at or after their ``pay_by_ms``) in the last
  minute.

Cost per node: one pipelined Redis write and one cluster reading (a few Redis calls) per
second; the SQL queries run on one node of the cluster per interval. So the charts have
history from the moment the gateways start, whether or not anyone has the page open.

Alerts (pure rules below, evaluated on every sample; a metric outside its normal band):

=================== ==================================================================
``online_drop``     total online fell below half of its peak of the last minute (peak >= 10)
``error_rate``      error frames + HTTP 5xx per second over the last 10 s above
                    max(1/s, 4 x the mean of the 5 minutes before)
``stock_drift``     a sale's Redis paid/reserved units differ from SQL's for 20 s (the
                    orders worker is behind or lost events), or Redis breaks conservation
``payment_timeouts`` payment time-outs in the last minute >= max(5, 3 x the mean per minute
                    of the 10 minutes before)
=================== ==================================================================

Prometheus (``gw.metrics.registry``): ``lc_alert_active{alert}`` (0/1),
``lc_alert_value{alert}``, ``lc_alert_threshold{alert}``, and ``lc_ops_*`` gauges; see
``docs/alerting-rules.yml``.

HTTP (ops role): ``GET /api/v1/ops/overview``, ``GET /api/v1/ops/series?since=<ms>``,
``GET /api/v1/ops/alerts``, ``GET /api/v1/ops/inventory/{sale}`` (per-order Redis vs SQL
report: ``workers.inventory.reconcile`` in report mode).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import statistics
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge

from livecommerce.auth import Identity
from livecommerce.errors import Forbidden, NotFound

from .conn import Conn
from .core import Gateway

log = logging.getLogger("livecommerce.gateway.ops")

COMMERCE_EVERY_S = 3.0
NODE_FRESH_MS = 5_000
ROOM_RECENT_MS = 15 * 60_000
MAX_ROOMS = 100
MAX_CAMPAIGNS = 50
FAST_KEEP = 900  # one-second samples kept (15 min)
COMMERCE_KEEP = 600  # commerce samples kept (30 min at 3 s)
TIMEOUT_SCAN = 2_000  # newest cancelled orders scanned for time-outs

ALERTS: dict[str, str] = {
    "online_drop": "Total online fell below half of its peak of the last minute.",
    "error_rate": "Error frames + HTTP 5xx per second left their normal band.",
    "stock_drift": "Redis stock figures and SQL orders disagree for longer than the orders worker's normal lag.",
    "payment_timeouts": "Payment time-outs in the last minute surged above their normal band.",
}


# =============================================================================== pure rules
@dataclass(frozen=True, slots=True)
class Sample:
    """One cluster-wide reading of the fast counters (rates per second)."""

    ts_ms: int
    online: int
    comments: float
    gifts: float
    gift_coins: float
    errors: float
    requests: float


@dataclass(frozen=True, slots=True)
class SaleCheck:
    """A sale's stock as Redis and SQL see it (units)."""

    sale_id: str
    redis_reserved: int
    redis_paid: int
    sql_reserved: int
    sql_paid: int
    conserved: bool

    @property
    def drift(self) -> int:
        return abs(self.redis_paid - self.sql_paid) + abs(self.redis_reserved - self.sql_reserved)


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's verdict: ``value`` measured against the band edge ``threshold``."""

    alert: str
    active: bool
    value: float
    threshold: float
    message: str


def _window(samples: Sequence[Sample], lo_ms: int, hi_ms: int) -> list[Sample]:
    return [s for s in samples if lo_ms <= s.ts_ms < hi_ms]


def online_drop(samples: Sequence[Sample], *, now_ms: int, window_s: float = 60, recent_s: float = 10,
                ratio: float = 0.5, min_peak: int = 10) -> Finding:
    """Active when the latest total online is below ``ratio`` x the peak of the window
    before the last ``recent_s`` seconds, and that peak was at least ``min_peak``."""
    before = _window(samples, now_ms - int(window_s * 1000), now_ms - int(recent_s * 1000))
    peak = max((s.online for s in before), default=0)
    cur = samples[-1].online if samples else 0
    threshold = peak * ratio
    active = peak >= min_peak and cur < threshold
    msg = f"online {cur} vs peak {peak} in the last {int(window_s)} s" if active else f"online {cur} (peak {peak})"
    return Finding("online_drop", active, float(cur), threshold, msg)


def error_rate(samples: Sequence[Sample], *, now_ms: int, recent_s: float = 10, baseline_s: float = 300,
               factor: float = 4.0, floor: float = 1.0) -> Finding:
    """Active when errors/s over the last ``recent_s`` exceed max(``floor``, ``factor`` x
    the mean of the ``baseline_s`` before)."""
    cut = now_ms - int(recent_s * 1000)
    recent = _window(samples, cut + 1, now_ms + 1)  # (cut, now]
    base = _window(samples, cut - int(baseline_s * 1000) + 1, cut + 1)
    cur = statistics.fmean(s.errors for s in recent) if recent else 0.0
    baseline = statistics.fmean(s.errors for s in base) if base else 0.0
    threshold = max(floor, factor * baseline)
    active = cur > threshold
    return Finding("error_rate", active, round(cur, 3), round(threshold, 3),
                   f"{cur:.1f} errors/s (normal up to {threshold:.1f}/s)")


def stock_drift(checks: Iterable[SaleCheck], drifting_since: dict[str, int], *, now_ms: int,
                grace_s: float = 20) -> tuple[Finding, dict[str, int]]:
    """Active when a sale breaks conservation in Redis, or its Redis and SQL units have
    differed for ``grace_s`` (SQL learns through the log, so a short lag is normal).
    Returns the finding and the updated ``sale -> first ms seen drifting`` map."""
    since: dict[str, int] = {}
    broken: list[str] = []
    late: list[str] = []
    units = 0
    for c in checks:
        if not c.conserved:
            broken.append(c.sale_id)
        if c.drift:
            since[c.sale_id] = drifting_since.get(c.sale_id, now_ms)
            if now_ms - since[c.sale_id] >= grace_s * 1000:
                late.append(c.sale_id)
                units += c.drift
    active = bool(broken or late)
    if broken:
        msg = f"Redis stock not conserved in {', '.join(broken[:5])}"
    elif late:
        msg = f"{units} units differ between Redis and SQL for > {int(grace_s)} s in {', '.join(late[:5])}"
    else:
        msg = f"Redis and SQL agree ({len(since)} sale(s) catching up)" if since else "Redis and SQL agree"
    return Finding("stock_drift", active, float(units), 0.0, msg), since


def payment_timeouts(last_minute: int, previous_per_minute: Sequence[int], *, factor: float = 3.0,
                     floor: int = 5) -> Finding:
    """Active when this minute's time-outs reach max(``floor``, ``factor`` x the mean per
    minute of ``previous_per_minute``)."""
    baseline = statistics.fmean(previous_per_minute) if previous_per_minute else 0.0
    threshold = max(float(floor), factor * baseline)
    active = last_minute >= threshold
    return Finding("payment_timeouts", active, float(last_minute), threshold,
                   f"{last_minute} payment time-outs in the last minute (normal below {threshold:.0f})")


@dataclass
class AlertState:
    """Which alerts are active and since when (ms)."""

    findings: dict[str, Finding] = field(default_factory=dict)
    since: dict[str, int] = field(default_factory=dict)

    def update(self, f: Finding, now_ms: int) -> bool:
        """Record a finding; True when the alert just fired."""
        was = self.findings.get(f.alert)
        self.findings[f.alert] = f
        if f.active and not (was and was.active):
            self.since[f.alert] = now_ms
            return True
        if not f.active:
            self.since.pop(f.alert, None)
        return False

    def as_list(self) -> list[dict[str, Any]]:
        out = []
        for name, help_ in ALERTS.items():
            f = self.findings.get(name)
            out.append({
                "alert": name,
                "help": help_,
                "active": bool(f and f.active),
                "since_ms": self.since.get(name),
                "value": f.value if f else 0.0,
                "threshold": f.threshold if f else 0.0,
                "message": f.message if f else "not evaluated yet",
            })
        return out


def rates(prev: dict[str, Any] | None, cur: dict[str, Any]) -> dict[str, Any] | None:
    """Per-second rates between two cumulative readings of one node (None for the first
    reading, a node restart, or readings less than 0.2 s apart)."""
    if prev is None or cur.get("start") != prev.get("start"):
        return None
    dt = (cur["ts"] - prev["ts"]) / 1000
    if dt < 0.2:
        return None
    out: dict[str, Any] = {k: max(0, cur[k] - prev.get(k, 0)) / dt for k in ("errors", "requests")}
    rooms: dict[str, list[float]] = {}
    for room, vals in cur.get("rooms", {}).items():
        before = prev.get("rooms", {}).get(room, [0, 0, 0])
        rooms[room] = [max(0, v - b) / dt for v, b in zip(vals, before, strict=False)]
    out["rooms"] = rooms
    return out


# =============================================================================== the sampler
class Ops:
    """Per-node counters, the cluster readings, the rings the charts draw, the alerts."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.start_ms = gw.now_ms()
        self.totals: dict[str, list[int]] = {}  # room -> [comments, gifts, gift coins]
        self.room_seen: dict[str, float] = {}
        self.http_requests = 0
        self.http_errors = 0
        self.prev: dict[str, dict[str, Any]] = {}  # node -> its last cumulative reading
        self.last_rates: dict[str, dict[str, Any]] = {}  # node -> its last rates
        self._lock = asyncio.Lock()
        self.fast: deque[dict[str, Any]] = deque(maxlen=FAST_KEEP)
        self.samples: deque[Sample] = deque(maxlen=FAST_KEEP)
        self.commerce: deque[dict[str, Any]] = deque(maxlen=COMMERCE_KEEP)
        self.latest_rooms: dict[str, dict[str, Any]] = {}
        self.alerts = AlertState()
        self.drifting: dict[str, int] = {}
        self.drift_grace_s = 20.0  # the orders worker's normal lag, at most
        self.timeouts_by_minute: deque[tuple[int, int]] = deque(maxlen=30)
        self._next_commerce = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._registered = False
        r = gw.metrics.registry
        self.g_active = Gauge("lc_alert_active", "1 while the alert's metric is outside its normal band", ["alert"], registry=r)
        self.g_value = Gauge("lc_alert_value", "The alert's measured value", ["alert"], registry=r)
        self.g_threshold = Gauge("lc_alert_threshold", "The edge of the alert's normal band", ["alert"], registry=r)
        self.g_online = Gauge("lc_ops_online", "Viewers online in the rooms the ops view tracks (cluster)", registry=r)
        self.g_cps = Gauge("lc_ops_comments_per_second", "Comments per second (cluster)", registry=r)
        self.g_gps = Gauge("lc_ops_gifts_per_second", "Gifts per second (cluster)", registry=r)
        self.g_eps = Gauge("lc_ops_errors_per_second", "Error frames + HTTP 5xx per second (cluster)", registry=r)
        self.g_gmv = Gauge("lc_ops_gmv_cents", "Paid order value of the recent campaigns (cents)", registry=r)
        self.g_orders = Gauge("lc_ops_orders", "Orders of the recent campaigns by state", ["state"], registry=r)
        self.g_drift = Gauge("lc_ops_stock_drift_units", "Units that differ between Redis and SQL", registry=r)
        self.g_timeouts = Gauge("lc_ops_payment_timeouts_last_minute", "Orders cancelled by payment time-out in the last minute", registry=r)
        self.c_http = Counter("lc_http_responses_total", "HTTP responses by status class", ["status"], registry=r)
        for name in ALERTS:
            self.g_active.labels(name).set(0)

    # ---- counting (hot paths: a dict update)
    def count(self, room: str, i: int, n: int = 1) -> None:
        t = self.totals.get(room)
        if t is None:
            t = self.totals[room] = [0, 0, 0]
        t[i] += n
        self.room_seen[room] = time.monotonic()

    async def on_comment(self, conn: Conn, d: dict[str, Any]) -> None:
        self.count(conn.room, 0)

    async def on_gift(self, room: str, user: str, value: int) -> None:
        self.count(room, 1)
        self.count(room, 2, int(value))

    async def on_response(self, request: web.Request, response: web.StreamResponse) -> None:
        self.http_requests += 1
        self.c_http.labels(f"{response.status // 100}xx").inc()
        if response.status >= 500:
            self.http_errors += 1
        room = request.match_info.get("room") if response.status < 400 else None
        if room and request.path.startswith("/api/v1/rooms/"):  # a room run over HTTP only
            self.room_seen[room] = time.monotonic()

    # ---- the loop
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="ops-sampler")

    async def stop(self) -> None:
        """Stop the sampler. A flag as well as a cancel: a driver that swallows the
        CancelledError mid-call (seen under load) must not keep the loop, and the
        gateway's shutdown, running forever."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)

    async def _loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(1.0 - (time.time() % 1.0))
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or SQL blip: the next second tries again
                log.warning("ops.sample_failed", extra={"err": repr(exc)})

    async def tick(self, *, force: bool = False) -> None:
        """Write this node's totals, take a cluster reading, and the commerce one every
        COMMERCE_EVERY_S (now with ``force``)."""
        async with self._lock:
            await self.write_node()
            await self.sample_fast()
            if force or time.monotonic() >= self._next_commerce:
                self._next_commerce = time.monotonic() + COMMERCE_EVERY_S
                await self.sample_commerce(force=force)

    def node_totals(self) -> dict[str, Any]:
        m = self.gw.metrics
        now = time.monotonic()
        for room, seen in list(self.room_seen.items()):
            if now - seen > ROOM_RECENT_MS / 1000 and room not in self.gw.hub.rooms:
                del self.room_seen[room]
                self.totals.pop(room, None)  # a reader sees the room vanish: no negative rate
        return {
            "start": self.start_ms,
            "ts": self.gw.now_ms(),
            "conns": int(_sum_samples(m.connections)),
            "errors": int(_sum_samples(m.errors) + self.http_errors),
            "requests": int(_sum_samples(m.commands) + self.http_requests),
            "rooms": {r: list(v) for r, v in self.totals.items()},
        }

    async def write_node(self) -> None:
        k = self.gw.keys
        now_ms = self.gw.now_ms()
        pipe = self.gw.redis.pipeline(transaction=False)
        pipe.hset(k.global_key("ops:nodes"), self.gw.s.node_id, json.dumps(self.node_totals()))
        pipe.expire(k.global_key("ops:nodes"), 3600)
        rooms = {r: now_ms for r in set(self.gw.hub.rooms) | set(self.room_seen)}
        if rooms:
            pipe.zadd(k.global_key("ops:rooms"), rooms)
            pipe.zremrangebyscore(k.global_key("ops:rooms"), 0, now_ms - 86_400_000)
        await pipe.execute()

    async def sample_fast(self) -> None:
        """One cluster-wide reading: rates from every fresh node, online per room."""
        k = self.gw.keys
        now_ms = self.gw.now_ms()
        raw = await self.gw.redis.hgetall(k.global_key("ops:nodes"))
        per_room: dict[str, list[float]] = {}
        errors = requests = 0.0
        stale = []
        for node_b, val in raw.items():
            node = _s(node_b)
            cur = json.loads(val)
            if now_ms - cur["ts"] > NODE_FRESH_MS:
                stale.append(node)
                self.prev.pop(node, None)
                self.last_rates.pop(node, None)
                continue
            prev = self.prev.get(node)
            if prev is not None and prev["ts"] == cur["ts"]:
                r = self.last_rates.get(node)  # not written since the last reading
            else:
                r = rates(prev, cur)
                self.prev[node] = cur
                if r is not None:
                    self.last_rates[node] = r
            if r is None:
                continue
            errors += r["errors"]
            requests += r["requests"]
            for room, vals in r["rooms"].items():
                acc = per_room.setdefault(room, [0.0, 0.0, 0.0])
                for i, v in enumerate(vals[:3]):
                    acc[i] += v
        if stale:
            await self.gw.redis.hdel(k.global_key("ops:nodes"), *stale)
        recent = await self.gw.redis.zrangebyscore(k.global_key("ops:rooms"), now_ms - ROOM_RECENT_MS, "+inf")
        room_ids = sorted({_s(x) for x in recent} | set(per_room))[:MAX_ROOMS]
        online = await self._online(room_ids, now_ms)
        zero = [0.0, 0.0, 0.0]
        rooms: dict[str, dict[str, Any]] = {
            r: {"online": online.get(r, 0), "comments_per_s": round(per_room.get(r, zero)[0], 2),
                "gifts_per_s": round(per_room.get(r, zero)[1], 2), "gift_coins_per_s": round(per_room.get(r, zero)[2], 2)}
            for r in room_ids
        }
        self.latest_rooms = rooms
        s = Sample(
            ts_ms=now_ms,
            online=int(sum(v["online"] for v in rooms.values())),
            comments=sum(v[0] for v in per_room.values()),
            gifts=sum(v[1] for v in per_room.values()),
            gift_coins=sum(v[2] for v in per_room.values()),
            errors=errors,
            requests=requests,
        )
        self.samples.append(s)
        top = sorted(rooms, key=lambda r: -rooms[r]["online"])[:8]
        self.fast.append({
            "ts": now_ms, "online": s.online, "comments_per_s": round(s.comments, 2), "gifts_per_s": round(s.gifts, 2),
            "gift_coins_per_s": round(s.gift_coins, 2), "errors_per_s": round(s.errors, 3), "requests_per_s": round(s.requests, 2),
            "nodes": len(raw) - len(stale), "rooms": {r: rooms[r] for r in top},
        })
        self.g_online.set(s.online)
        self.g_cps.set(s.comments)
        self.g_gps.set(s.gifts)
        self.g_eps.set(s.errors)
        seq = list(self.samples)
        self._record(online_drop(seq, now_ms=now_ms), now_ms)
        self._record(error_rate(seq, now_ms=now_ms), now_ms)

    async def _online(self, rooms: Sequence[str], now_ms: int) -> dict[str, int]:
        if not rooms:
            return {}
        pipe = self.gw.redis.pipeline(transaction=False)
        for r in rooms:
            pipe.hgetall(self.gw.keys.room_online(r))
        out: dict[str, int] = {}
        for room, vals in zip(rooms, await pipe.execute(), strict=True):
            total = 0
            for v in vals.values():
                cnt, _, ts = _s(v).partition(":")
                if now_ms - int(ts or 0) <= NODE_FRESH_MS:
                    total += int(cnt or 0)
            out[room] = total
        return out

    async def sample_commerce(self, *, force: bool = False) -> None:
        """Campaign figures: computed by one node per interval (a Redis lock), read by all;
        ``force`` computes them here and now."""
        k = self.gw.keys
        lock = force or await self.gw.redis.set(
            k.global_key("ops:commerce:lock"), self.gw.s.node_id, nx=True, px=int(COMMERCE_EVERY_S * 1000) - 200
        )
        if lock:
            snap = await self.compute_commerce()
            await self.gw.redis.set(k.global_key("ops:commerce"), json.dumps(snap), ex=60)
        else:
            raw = await self.gw.redis.get(k.global_key("ops:commerce"))
            if raw is None:
                return
            snap = json.loads(raw)
        if self.commerce and self.commerce[-1]["ts"] == snap["ts"]:
            return
        self.commerce.append(snap)
        now_ms = self.gw.now_ms()
        checks = [SaleCheck(c["sale_id"], c["reserved"], c["paid"], c["sql"]["reserved"], c["sql"]["paid"], c["conserved"])
                  for c in snap["campaigns"] if "sql" in c]
        f, self.drifting = stock_drift(checks, self.drifting, now_ms=now_ms, grace_s=self.drift_grace_s)
        self._record(f, now_ms)
        minute = now_ms // 60_000
        if not self.timeouts_by_minute or self.timeouts_by_minute[-1][0] != minute:
            self.timeouts_by_minute.append((minute, snap["timeouts_last_min"]))
        else:
            self.timeouts_by_minute[-1] = (minute, max(self.timeouts_by_minute[-1][1], snap["timeouts_last_min"]))
        previous = [n for m, n in self.timeouts_by_minute if minute - 11 < m < minute - 1]
        self._record(payment_timeouts(snap["timeouts_last_min"], previous), now_ms)
        self.g_gmv.set(snap["totals"]["gmv"])
        for state, n in snap["totals"]["orders"].items():
            self.g_orders.labels(state).set(n)
        self.g_drift.set(sum(c.drift for c in checks))
        self.g_timeouts.set(snap["timeouts_last_min"])

    async def compute_commerce(self) -> dict[str, Any]:
        from livecommerce.errors import LiveCommerceError

        store = self.gw.services.get("store")
        checkout = self.gw.services.get("checkout")
        now_ms = self.gw.now_ms()
        campaigns: list[dict[str, Any]] = []
        orders: dict[str, int] = {}
        gmv = 0
        if store is None or checkout is None:
            return {"ts": now_ms, "campaigns": [], "totals": {"gmv": 0, "orders": {}, "buyers": 0, "paid": 0}, "timeouts_last_min": 0, "rooms": {}}
        recs = await store.list_sales(limit=MAX_CAMPAIGNS)
        rooms: dict[str, dict[str, Any]] = {}
        for rec in recs:
            sale = rec.sale
            row: dict[str, Any] = {
                "sale_id": sale.id, "room": sale.room, "product_id": sale.product_id,
                "product_name": rec.product_name, "price": sale.price, "stock": sale.stock,
                "starts_ms": sale.starts_ms, "ends_ms": sale.ends_ms, "state": rec.state,
            }
            try:
                st = await checkout.sales.stats(sale.id)
                row.update(state=st.state, remaining=st.remaining, reserved=st.reserved, paid=st.paid,
                           conserved=st.conserved)
            except LiveCommerceError:
                row.update(remaining=None, reserved=0, paid=0, conserved=True)
            sql = await store.sale_stats(sale.id)
            row["gmv"] = sql.gmv
            row["buyers"] = sql.buyers
            row["orders"] = dict(sql.orders)
            row["sql"] = {"reserved": sql.reserved_units, "paid": sql.paid_units}
            if row["remaining"] is None:
                del row["sql"]  # Redis forgot the sale (expired keys): nothing to compare
            row["drift_units"] = (abs(row["paid"] - sql.paid_units) + abs(row["reserved"] - sql.reserved_units)) if "sql" in row else 0
            campaigns.append(row)
            gmv += sql.gmv
            for state, n in sql.orders.items():
                orders[state] = orders.get(state, 0) + n
            agg = rooms.setdefault(sale.room, {"gmv": 0, "orders": {}, "buyers": 0, "paid": 0})
            agg["gmv"] += sql.gmv
            agg["buyers"] += sql.buyers
            agg["paid"] += sum(sql.orders.get(s, 0) for s in ("paid", "refund_requested", "refunded"))
            for state, n in sql.orders.items():
                agg["orders"][state] = agg["orders"].get(state, 0) + n
        cancelled = await store.list_orders(state="cancelled", limit=TIMEOUT_SCAN)
        timeouts = sum(1 for o in cancelled if o.updated_ms >= o.pay_by_ms and now_ms - o.updated_ms <= 60_000)
        paid = sum(orders.get(s, 0) for s in ("paid", "refund_requested", "refunded"))
        buyers = sum(r["buyers"] for r in rooms.values())
        return {
            "ts": now_ms,
            "campaigns": campaigns,
            "rooms": rooms,
            "totals": {"gmv": gmv, "orders": orders, "buyers": buyers, "paid": paid},
            "timeouts_last_min": timeouts,
        }

    def _record(self, f: Finding, now_ms: int) -> None:
        if self.alerts.update(f, now_ms):
            log.warning("ops.alert", extra={"alert": f.alert, "value": f.value, "threshold": f.threshold, "detail": f.message})
        self.g_active.labels(f.alert).set(1 if f.active else 0)
        self.g_value.labels(f.alert).set(f.value)
        self.g_threshold.labels(f.alert).set(f.threshold)

    # ---- views
    async def overview(self) -> dict[str, Any]:
        last = self.fast[-1] if self.fast else None
        com = self.commerce[-1] if self.commerce else None
        rooms_meta = await self._meta(list(self.latest_rooms))
        rooms = []
        for room, live in self.latest_rooms.items():
            meta = rooms_meta.get(room) or {}
            c = (com or {}).get("rooms", {}).get(room, {"gmv": 0, "orders": {}, "buyers": 0, "paid": 0})
            viewers = max(live["online"], int(meta.get("peak_online") or 0))
            rooms.append({
                "room": room, "title": meta.get("title", ""), "host": meta.get("host", ""), "state": meta.get("state", "unknown"),
                **live, "peak_online": int(meta.get("peak_online") or 0), "gmv": c["gmv"], "orders": c["orders"],
                "funnel": {"viewers": viewers, "buyers": c["buyers"], "paid": c["paid"]},
            })
        rooms.sort(key=lambda r: (r["state"] != "live", -r["online"], r["room"]))
        totals_c = (com or {}).get("totals", {"gmv": 0, "orders": {}, "buyers": 0, "paid": 0})
        return {
            "ts": self.gw.now_ms(),
            "node": self.gw.s.node_id,
            "sampling": bool(last),
            "nodes": last["nodes"] if last else 0,
            "totals": {
                "online": last["online"] if last else 0,
                "comments_per_s": last["comments_per_s"] if last else 0,
                "gifts_per_s": last["gifts_per_s"] if last else 0,
                "gift_coins_per_s": last["gift_coins_per_s"] if last else 0,
                "errors_per_s": last["errors_per_s"] if last else 0,
                "requests_per_s": last["requests_per_s"] if last else 0,
                "gmv": totals_c["gmv"],
                "orders": totals_c["orders"],
                "funnel": {"viewers": sum(r["funnel"]["viewers"] for r in rooms), "buyers": totals_c["buyers"], "paid": totals_c["paid"]},
                "timeouts_last_min": (com or {}).get("timeouts_last_min", 0),
            },
            "rooms": rooms,
            "campaigns": (com or {}).get("campaigns", []),
            "commerce_ts": (com or {}).get("ts"),
            "alerts": self.alerts.as_list(),
        }

    async def _meta(self, rooms: Sequence[str]) -> dict[str, dict[str, str]]:
        if not rooms:
            return {}
        pipe = self.gw.redis.pipeline(transaction=False)
        for r in rooms:
            pipe.hgetall(self.gw.keys.room_meta(r))
        res = await pipe.execute()
        return {r: {_s(k): _s(v) for k, v in m.items()} for r, m in zip(rooms, res, strict=True)}

    def series(self, since_ms: int) -> dict[str, Any]:
        return {
            "fast": [x for x in self.fast if x["ts"] > since_ms],
            "commerce": [
                {"ts": c["ts"], "gmv": c["totals"]["gmv"], "orders": c["totals"]["orders"], "paid": c["totals"]["paid"],
                 "buyers": c["totals"]["buyers"], "timeouts_last_min": c["timeouts_last_min"],
                 "remaining": {x["sale_id"]: x["remaining"] for x in c["campaigns"] if x.get("remaining") is not None}}
                for c in self.commerce if c["ts"] > since_ms
            ],
        }


def _sum_samples(metric: Any) -> float:
    total = 0.0
    for fam in metric.collect():
        for s in fam.samples:
            if not s.name.endswith("_created"):
                total += s.value
    return total


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def require_ops(gw: Gateway, request: web.Request) -> Identity:
    """Raises:
    Unauthorized: no or bad token. Forbidden: not the ops role.
    """
    ident = gw.identify_request(request)
    if ident.role != "ops":
        raise Forbidden("the ops dashboard needs an ops token")
    return ident


def setup(gw: Gateway, app: web.Application) -> None:
    ops = Ops(gw)
    gw.services["ops"] = ops
    gw.services.setdefault("comment_hooks", []).append(ops.on_comment)
    gw.services.setdefault("on_gift", []).append(ops.on_gift)
    app.on_response_prepare.append(ops.on_response)

    async def on_start() -> None:
        ops.start()

    gw.services.setdefault("startup", []).append(on_start)
    gw.services.setdefault("shutdown", []).insert(0, ops.stop)

    async def wanted(request: web.Request) -> None:
        require_ops(gw, request)
        if not ops.commerce:  # a node that just started: take a reading now
            try:
                await ops.tick(force=True)
            except Exception as exc:
                log.warning("ops.sample_failed", extra={"err": repr(exc)})

    async def overview(request: web.Request) -> web.Response:
        await wanted(request)
        return web.json_response(await ops.overview())

    async def series(request: web.Request) -> web.Response:
        await wanted(request)
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            since = 0
        return web.json_response(ops.series(since))

    async def alerts(request: web.Request) -> web.Response:
        await wanted(request)
        return web.json_response({"alerts": ops.alerts.as_list()})

    async def inventory(request: web.Request) -> web.Response:
        require_ops(gw, request)
        from workers.inventory import reconcile

        store, checkout = gw.services.get("store"), gw.services.get("checkout")
        if store is None or checkout is None:
            raise NotFound("flash sales are not served by this gateway")
        report = await reconcile(checkout, store, request.match_info["sale"], repair=False, now_ms=gw.now_ms())
        return web.json_response(dataclasses.asdict(report))

    app.router.add_get("/api/v1/ops/overview", overview)
    app.router.add_get("/api/v1/ops/series", series)
    app.router.add_get("/api/v1/ops/alerts", alerts)
    app.router.add_get("/api/v1/ops/inventory/{sale}", inventory)
