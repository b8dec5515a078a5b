"""Ops alerting: each alert is a metric outside its normal band, judged from readings.

No I/O: readings come in as values (a cluster-wide :class:`Sample` a second, the sales'
:class:`SaleCheck` and the payment time-outs of the last minute every commerce reading),
the clock is an argument, and the verdicts come back as :class:`Finding` values. The
gateway's sampler (``gateway.ops``) takes the readings, feeds :class:`Alerts` and writes
what it returns to Prometheus and the log.

=================== ==================================================================
``online_drop``     total online fell below half of its peak of the last minute (peak >= 10)
``error_rate``      error frames + HTTP 5xx per second over the last 10 s above
                    max(1/s, 4 x the mean of the 5 minutes before)
``stock_drift``     a sale's Redis paid/reserved units differ from SQL's for 20 s (the
                    orders worker is behind or lost events), or Redis breaks conservation
``payment_timeouts`` payment time-outs in the last minute >= max(5, 3 x the mean per minute
                    of the 10 minutes before)
``sale_in_ended_room`` a flash sale still live (or sold out) for 10 s in a room whose show
                    has ended (ending a show closes its sales at once: one left open is
                    still taking or holding buyers' money in a show nobody watches)
=================== ==================================================================

Rates: every gateway node publishes cumulative totals; :class:`ClusterRates` turns each
node's successive totals into per-second rates (so nodes need no common clock tick) and
sums the fresh nodes.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ALERTS: dict[str, str] = {
    "online_drop": "Total online fell below half of its peak of the last minute.",
    "error_rate": "Error frames + HTTP 5xx per second left their normal band.",
    "stock_drift": "Redis stock figures and SQL orders disagree for longer than the orders worker's normal lag.",
    "payment_timeouts": "Payment time-outs in the last minute surged above their normal band.",
    "sale_in_ended_room": "A flash sale is still live in a room whose show has ended.",
}
#: how long a sale may stay open after its room's show ended (the end closes it at once)
ENDED_ROOM_GRACE_S = 10.0

#: the orders worker's normal lag, at most: Redis and SQL may differ this long
DRIFT_GRACE_S = 20.0
#: a node whose last totals are older than this is left out (and forgotten)
NODE_FRESH_MS = 5_000
#: minutes of payment time-out counts remembered (the baseline is 10 of them)
TIMEOUT_MINUTES_KEPT = 30


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
class SaleRoom:
    """A sale's state and its room's show state, as one commerce reading saw them."""

    sale_id: str
    state: str  # the sale's: scheduled, live, sold_out, ended
    room: str
    room_state: str  # the show's: created, live, ended, or '' (no such room)


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's verdict: ``value`` measured against the band edge ``threshold``."""

    alert: str
    active: bool
    value: float
    threshold: float
    message: str


# ------------------------------------------------------------------------------- the rules
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
                grace_s: float = DRIFT_GRACE_S) -> tuple[Finding, dict[str, int]]:
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


def sale_in_ended_room(sales: Iterable[SaleRoom], open_since: dict[str, int], *, now_ms: int,
                       grace_s: float = ENDED_ROOM_GRACE_S) -> tuple[Finding, dict[str, int]]:
    """Active when a sale has been live or sold out for ``grace_s`` while its room's show
    has ended. Returns the finding and the updated ``sale -> first ms seen so`` map."""
    since: dict[str, int] = {}
    late: list[str] = []
    for s in sales:
        if s.state in ("live", "sold_out") and s.room_state == "ended":
            since[s.sale_id] = open_since.get(s.sale_id, now_ms)
            if now_ms - since[s.sale_id] >= grace_s * 1000:
                late.append(f"{s.sale_id} in {s.room}")
    msg = (f"{len(late)} sale(s) open in an ended show: {', '.join(late[:5])}" if late
           else "no sale open in an ended show")
    return Finding("sale_in_ended_room", bool(late), float(len(late)), 0.0, msg), since


def payment_timeouts(last_minute: int, previous_per_minute: Sequence[int], *, factor: float = 3.0,
                     floor: int = 5) -> Finding:
    """Active when this minute's time-outs reach max(``floor``, ``factor`` x the mean per
    minute of ``previous_per_minute``)."""
    baseline = statistics.fmean(previous_per_minute) if previous_per_minute else 0.0
    threshold = max(float(floor), factor * baseline)
    active = last_minute >= threshold
    return Finding("payment_timeouts", active, float(last_minute), threshold,
                   f"{last_minute} payment time-outs in the last minute (normal below {threshold:.0f})")


# ------------------------------------------------------------------------------- the state
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


@dataclass(frozen=True, slots=True)
class Verdict:
    """A finding as recorded: ``fired`` when its alert just became active."""

    finding: Finding
    fired: bool


class Alerts:
    """Every rule over the readings of one node's sampler, and what they remember: the
    alert state, the sales seen drifting and since when, the time-outs per minute."""

    def __init__(self, *, drift_grace_s: float = DRIFT_GRACE_S, ended_room_grace_s: float = ENDED_ROOM_GRACE_S) -> None:
        self.state = AlertState()
        self.drift_grace_s = drift_grace_s
        self.ended_room_grace_s = ended_room_grace_s
        self.drifting: dict[str, int] = {}
        self.open_in_ended: dict[str, int] = {}
        self.timeouts_by_minute: deque[tuple[int, int]] = deque(maxlen=TIMEOUT_MINUTES_KEPT)

    def _record(self, f: Finding, now_ms: int) -> Verdict:
        return Verdict(f, self.state.update(f, now_ms))

    def fast(self, samples: Sequence[Sample], *, now_ms: int) -> list[Verdict]:
        """Judge the fast readings (the latest is ``samples[-1]``)."""
        return [self._record(online_drop(samples, now_ms=now_ms), now_ms),
                self._record(error_rate(samples, now_ms=now_ms), now_ms)]

    def commerce(self, checks: Sequence[SaleCheck], timeouts_last_min: int, *, now_ms: int,
                 sales: Sequence[SaleRoom] = ()) -> list[Verdict]:
        """Judge a commerce reading: the sales' stock checks, this minute's payment
        time-outs (a minute read more than once keeps its largest count) and the sales'
        states beside their rooms'."""
        drift, self.drifting = stock_drift(checks, self.drifting, now_ms=now_ms, grace_s=self.drift_grace_s)
        open_sale, self.open_in_ended = sale_in_ended_room(sales, self.open_in_ended, now_ms=now_ms,
                                                           grace_s=self.ended_room_grace_s)
        minute = now_ms // 60_000
        by_minute = self.timeouts_by_minute
        if not by_minute or by_minute[-1][0] != minute:
            by_minute.append((minute, timeouts_last_min))
        else:
            by_minute[-1] = (minute, max(by_minute[-1][1], timeouts_last_min))
        previous = [n for m, n in by_minute if minute - 11 < m < minute - 1]
        return [self._record(drift, now_ms), self._record(payment_timeouts(timeouts_last_min, previous), now_ms),
                self._record(open_sale, now_ms)]

    def as_list(self) -> list[dict[str, Any]]:
        """Every alert with its state, value, band edge and message (the API's view)."""
        return self.state.as_list()


# ------------------------------------------------------------------------------- the rates
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


@dataclass(frozen=True, slots=True)
class ClusterReading:
    """The cluster's rates at one reading: per room ``[comments, gifts, gift coins]`` per
    second, errors and requests per second, the nodes counted and those gone stale."""

    per_room: dict[str, list[float]]
    errors: float
    requests: float
    nodes: int
    stale: list[str]


class ClusterRates:
    """Each node's previous totals and last rates, to sum the cluster's rates per reading."""

    def __init__(self, *, fresh_ms: int = NODE_FRESH_MS) -> None:
        self.fresh_ms = fresh_ms
        self.prev: dict[str, dict[str, Any]] = {}  # node -> its last cumulative reading
        self.last: dict[str, dict[str, Any]] = {}  # node -> its last rates

    def read(self, totals: Mapping[str, dict[str, Any]], *, now_ms: int) -> ClusterReading:
        """Sum the rates of every node whose totals are fresh; a node that has not written
        since the last reading counts with its last rates; stale nodes are forgotten (the
        caller drops them from the store)."""
        per_room: dict[str, list[float]] = {}
        errors = requests = 0.0
        stale: list[str] = []
        for node, cur in totals.items():
            if now_ms - cur["ts"] > self.fresh_ms:
                stale.append(node)
                self.prev.pop(node, None)
                self.last.pop(node, None)
                continue
            prev = self.prev.get(node)
            if prev is not None and prev["ts"] == cur["ts"]:
                r = self.last.get(node)  # not written since the last reading
            else:
                r = rates(prev, cur)
                self.prev[node] = cur
                if r is not None:
                    self.last[node] = r
            if r is None:
                continue
            errors += r["errors"]
            requests += r["requests"]
            for room, vals in r["rooms"].items():
                acc = per_room.setdefault(room, [0.0, 0.0, 0.0])
                for i, v in enumerate(vals[:3]):
                    acc[i] += v
        return ClusterReading(per_room, errors, requests, len(totals) - len(stale), stale)
