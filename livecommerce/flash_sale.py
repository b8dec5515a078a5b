"""Flash sales: the sale value, its lifecycle, the reserve rule and campaign definitions.

No I/O here (no asyncio, Redis or SQL): clock and ids are arguments. The Redis adapter
(:mod:`livecommerce.flash_sale_redis`) runs the same rule atomically in Lua, and the gateway
runs :func:`decide_reserve` first on what it knows from the broadcast state, so late buyers
never reach Redis.

Lifecycle (all transition logic lives in :data:`SALE_TRANSITIONS`)::

    scheduled --start--> live --sell_out--> sold_out --end--> ended
        |                 |  <--restock----     (a release/time-out returned stock)
        +------end--------+-------end-------> ended

Re-applying a step that already happened (``start`` on a live sale, ``end`` on an ended one)
is a no-op; any other missing pair is illegal and raises :class:`~livecommerce.errors.Conflict`.

Expected business outcomes are values: a :data:`Reject` string is the wire error code.

Campaign definitions (HTTP body, or one item of a YAML/JSON campaign file)::

    id: s1                       # optional; the caller mints one when absent
    room: r1
    product_id: p1
    product_name: Tea set        # optional, for the product row
    price: 1999                  # integer cents
    stock: 100
    per_user_limit: 2            # default 1
    starts_at: 2025-06-01T20:00:00+08:00   # or starts_ms (epoch ms); naive times are UTC
    ends_at: 2025-06-01T20:30:00+08:00     # or ends_ms, or duration_s
    payment_window_s: 900        # default: the caller's default (LC_PAYMENT_WINDOW_S)
    restock_on_refund: false     # default false

:func:`validate_campaign` checks one definition and returns the normalised dict;
:func:`sale_from_campaign` turns it into a :class:`Sale`; :func:`load_campaign_file` reads a
file of them (a list, a mapping with ``campaigns: [...]``, or one mapping).
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from .errors import BadFrame, Conflict

Reject = Literal["not_started", "ended", "sold_out", "limit_reached", "room_ended"]
REJECTS: frozenset[str] = frozenset(get_args(Reject))

SaleState = Literal["scheduled", "live", "sold_out", "ended"]
SaleStep = Literal["start", "sell_out", "restock", "end"]

SALE_TRANSITIONS: dict[tuple[SaleState, SaleStep], SaleState] = {
    ("scheduled", "start"): "live",
    ("scheduled", "end"): "ended",  # cancelled before it opened
    ("live", "sell_out"): "sold_out",
    ("live", "end"): "ended",
    ("sold_out", "restock"): "live",  # a released reservation returned stock
    ("sold_out", "end"): "ended",
}

# A step whose effect already holds: re-applying it changes nothing.
_ALREADY: dict[tuple[SaleState, SaleStep], SaleState] = {
    ("live", "start"): "live",
    ("sold_out", "start"): "sold_out",
    ("ended", "end"): "ended",
    ("live", "restock"): "live",
}

_ID_CHARS = frozenset("-_.:")
MAX_ID_LEN = 64


@dataclass(frozen=True, slots=True)
class Sale:
    """One flash-sale campaign. ``price`` is in integer cents; times are epoch ms and the
    window is ``[starts_ms, ends_ms)``; ``stock`` is the initial stock."""

    id: str
    room: str
    product_id: str
    price: int
    stock: int
    per_user_limit: int
    starts_ms: int
    ends_ms: int
    payment_window_s: int = 900
    restock_on_refund: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Reserved:
    """A successful (or repeated) reservation.

    ``duplicate`` is True when ``request_id`` had been seen before: ``order_id``, ``qty`` and
    ``pay_by_ms`` are then the first order's, and no stock moved. ``last_unit`` is True when
    this reservation took the last unit (broadcast the final ``sale.stock``).
    """

    sale_id: str
    order_id: str
    user: str
    qty: int
    unit_price: int
    remaining: int
    bought: int
    pay_by_ms: int
    duplicate: bool = False
    last_unit: bool = False

    @property
    def amount(self) -> int:
        return self.qty * self.unit_price


@dataclass(frozen=True, slots=True)
class SaleStats:
    """A consistent snapshot of one sale's stock, in units.

    Conservation: ``initial == remaining + reserved + paid + refunded_kept`` at every
    moment (refunded units leave ``paid``: back to ``remaining`` when the campaign restocks
    on refund, else into ``refunded_kept``; ``restocked`` counts the former).
    ``buyers`` counts users holding at least one reserved or paid unit.
    """

    sale_id: str
    state: SaleState
    initial: int
    remaining: int
    reserved: int
    paid: int
    buyers: int
    reserved_orders: int
    paid_orders: int
    cancelled_orders: int
    refunded_kept: int = 0
    restocked: int = 0

    @property
    def conserved(self) -> bool:
        return self.initial == self.remaining + self.reserved + self.paid + self.refunded_kept


ReleaseOutcome = Literal["released", "already_released", "already_paid"]
"""``release``: stock returned now / returned before (no-op) / the order was paid first."""

PayOutcome = Literal["paid", "already_paid", "already_cancelled", "expired"]
"""``mark_paid``: paid now / paid before (no-op) / released first (refund the payment) /
the deadline passed (nothing changed; the time-out will release it)."""

HoldState = Literal["reserved", "paid", "cancelled"]


@dataclass(frozen=True, slots=True)
class Hold:
    """What the sale's atomic store knows of one order: who holds how many units, in which
    state, until when (``pay_by_ms``) and under which ``request_id``."""

    sale_id: str
    order_id: str
    user: str
    qty: int
    state: HoldState
    pay_by_ms: int
    request_id: str


def early_window(starts_ms: int, ends_ms: int, now_ms: int) -> tuple[int, int]:
    """The window of a sale the host opens at ``now_ms``: before its start, the window moves
    to start now and keeps its length (a sale announced as 10 minutes runs 10 minutes);
    at or after its start it is unchanged. ``flash_sale_state.lua`` does the same."""
    if now_ms < starts_ms:
        return now_ms, ends_ms - (starts_ms - now_ms)
    return starts_ms, ends_ms


def sale_step(state: SaleState, step: SaleStep) -> SaleState | None:
    """The state after ``step``, or None when the step already happened (a no-op).

    Raises:
        Conflict: the step is illegal from ``state`` (e.g. ``start`` on an ended sale).
    """
    nxt = SALE_TRANSITIONS.get((state, step))
    if nxt is not None:
        return nxt
    if (state, step) in _ALREADY:
        return None
    raise Conflict(f"sale cannot {step} when {state}", code="illegal_transition")


def decide_reserve(
    sale: Sale,
    *,
    now_ms: int,
    remaining: int,
    bought: int,
    qty: int,
    state: SaleState = "live",
    room_closed: bool = False,
) -> Reject | None:
    """None means reserve. Time and state are judged before stock, so a late buyer hears
    ``ended`` (the answer gateways give from broadcast state); stock is judged before the
    user's limit. ``bought`` is what the user holds (reserved + paid) in this sale.
    ``room_closed``: the sale was ended by its room's show ending (``room_ended``).

    The Lua twin in ``flash_sale_reserve.lua`` applies the same order of checks.
    """
    if state == "ended" and room_closed:
        return "room_ended"
    if state == "scheduled" or now_ms < sale.starts_ms:
        return "not_started"
    if state == "ended" or now_ms >= sale.ends_ms:
        return "ended"
    if qty > remaining:
        return "sold_out"
    if bought + qty > sale.per_user_limit:
        return "limit_reached"
    return None


BatchCode = Literal["ok", "dup", "order_exists", "not_started", "ended", "sold_out", "limit_reached", "room_ended"]
"""One buy's answer in a batch: reserved now, a repeated request (its first order), an order
id already taken, or a :data:`Reject`."""


@dataclass(frozen=True, slots=True)
class BatchBuy:
    """One buy of a batch, as the gateway received it: ``request_key`` is the user-scoped
    request id (:func:`request_key`), ``order_id`` the id minted for it, ``now_ms`` the time
    it is judged at."""

    user: str
    qty: int
    request_key: str
    now_ms: int
    order_id: str


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """What :func:`decide_reserve_batch` says of one buy: ``order_id`` is the new order
    (``ok``), the first order of the request (``dup``) or None; ``remaining`` the sale's units
    and ``bought`` the user's held units right after this buy was decided."""

    code: BatchCode
    order_id: str | None
    remaining: int
    bought: int


def request_key(user: str, request_id: str) -> str:
    """A request id scoped to its user (another user's equal id is another request)."""
    return f"{len(user)}:{user}:{request_id}"


def decide_reserve_batch(
    sale: Sale,
    buys: Sequence[BatchBuy],
    *,
    state: SaleState,
    remaining: int,
    bought: Mapping[str, int],
    requests: Mapping[str, str],
    taken: Container[str] = frozenset(),
    room_closed: bool = False,
    room_ended: bool = False,
) -> tuple[list[BatchDecision], int, SaleState]:
    """Decide a batch of buys of one sale in arrival order, each as :func:`decide_reserve`
    would decide it alone right after the ones before it (a group commit must not change
    any answer). Returns the decisions, the units left and the sale's state after the batch.

    ``bought``: units each user holds; ``requests``: request keys already reserved -> their
    order id; ``taken``: order ids already used. Per buy, in this order: a known request
    (also one made earlier in this batch) answers ``dup`` with its first order whatever the
    sale's state; ``room_ended`` (the node's gate says the room's show ended) refuses every
    other buy; then :func:`decide_reserve`; then an order id already taken is
    ``order_exists``. A reservation takes ``qty`` units, and the last unit moves the sale
    ``live --sell_out--> sold_out``.

    The Lua twin is ``flash_sale_reserve_batch.lua`` (``tests/test_rule_parity.py``).
    """
    held = dict(bought)
    known = dict(requests)
    new_orders: set[str] = set()
    out: list[BatchDecision] = []
    for b in buys:
        have = held.get(b.user, 0)
        first = known.get(b.request_key)
        if first is not None:
            out.append(BatchDecision("dup", first, remaining, have))
            continue
        code: BatchCode | None = "room_ended" if room_ended else decide_reserve(
            sale, now_ms=b.now_ms, remaining=remaining, bought=have, qty=b.qty, state=state, room_closed=room_closed)
        if code is None and (b.order_id in taken or b.order_id in new_orders):
            code = "order_exists"
        if code is not None:
            out.append(BatchDecision(code, None, remaining, have))
            continue
        remaining -= b.qty
        held[b.user] = have + b.qty
        known[b.request_key] = b.order_id
        new_orders.add(b.order_id)
        if remaining == 0 and state == "live":
            state = sale_step(state, "sell_out") or state
        out.append(BatchDecision("ok", b.order_id, remaining, have + b.qty))
    return out, remaining, state


def ident_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable id, or None when it is: 1-64 ASCII letters, digits and
    ``- _ . :`` (the wire's id charset). Ids go into Redis hash tags (``{sale:ID}``), so
    braces are never allowed."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_ID_LEN:
        return f"must be at most {MAX_ID_LEN} characters"
    if not value.isascii() or not all(c.isalnum() or c in _ID_CHARS for c in value):
        return "may hold letters, digits and - _ . : only"
    return None


def check_ident(value: Any, name: str) -> str:
    """Return ``value`` if it is a usable id (see :func:`ident_problem`).

    Raises:
        BadFrame: (code ``invalid``) it is not; the message names ``name``.
    """
    problem = ident_problem(value)
    if problem is not None:
        raise BadFrame(f"'{name}' {problem}", code="invalid")
    return str(value)


# ---------------------------------------------------------------- campaign definitions


class InvalidCampaign(BadFrame, ValueError):
    """A campaign definition is invalid. ``field`` names the bad field (with its position
    in a file, e.g. ``campaigns[2].stock``); the message says what is wrong."""

    code = "invalid_campaign"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


CAMPAIGN_FIELDS = frozenset(
    {
        "id",
        "room",
        "product_id",
        "product_name",
        "price",
        "stock",
        "per_user_limit",
        "starts_ms",
        "starts_at",
        "ends_ms",
        "ends_at",
        "duration_s",
        "payment_window_s",
        "restock_on_refund",
    }
)

MAX_STOCK = 10_000_000
MAX_PRICE = 10**12  # cents


def validate_campaign(
    data: Mapping[str, Any],
    *,
    default_payment_window_s: int = 900,
    where: str = "",
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Check one campaign definition; return it normalised.

    With ``now_ms``, a definition without a start time starts at ``now_ms`` ("open it now").

    The result has exactly these keys: ``id`` (str or None), ``room``, ``product_id``,
    ``product_name`` (str or None), ``price``, ``stock``, ``per_user_limit``, ``starts_ms``,
    ``ends_ms``, ``payment_window_s``, ``restock_on_refund``. Times may be given as epoch ms
    (``starts_ms``), as ISO-8601 strings or YAML timestamps (``starts_at``; naive means UTC),
    and the end also as ``duration_s`` after the start. Booleans are never taken for numbers.

    Args:
        where: a prefix for field names in messages (``campaigns[3].``).

    Raises:
        InvalidCampaign: (a ``BadFrame`` and a ``ValueError``) naming the first bad field:
            unknown fields, missing or mistyped values, out-of-range numbers, an end not
            after the start, or more than one way to give the same time.
    """
    if not isinstance(data, Mapping):
        raise InvalidCampaign(where.rstrip(".") or "campaign", "must be a mapping of fields")
    unknown = sorted(str(k) for k in data if k not in CAMPAIGN_FIELDS)
    if unknown:
        raise InvalidCampaign(
            where + unknown[0], f"unknown field (known: {', '.join(sorted(CAMPAIGN_FIELDS))})"
        )

    def f(name: str) -> str:
        return where + name

    def required(name: str) -> Any:
        if data.get(name) is None:
            raise InvalidCampaign(f(name), "is required")
        return data[name]

    sale_id = None if data.get("id") is None else _campaign_ident(data["id"], f("id"))
    room = _campaign_ident(required("room"), f("room"))
    product_id = _campaign_ident(required("product_id"), f("product_id"))
    product_name = data.get("product_name")
    if product_name is not None and (
        not isinstance(product_name, str) or not product_name.strip() or len(product_name) > 200
    ):
        raise InvalidCampaign(f("product_name"), "must be a string of 1-200 characters")
    price = _int_field(required("price"), f("price"), lo=0, hi=MAX_PRICE, unit="cents")
    stock = _int_field(required("stock"), f("stock"), lo=1, hi=MAX_STOCK)
    limit = _int_field(data.get("per_user_limit", 1), f("per_user_limit"), lo=1, hi=MAX_STOCK)
    window = _int_field(
        data.get("payment_window_s", default_payment_window_s),
        f("payment_window_s"),
        lo=1,
        hi=7 * 24 * 3600,
    )
    restock = data.get("restock_on_refund", False)
    if not isinstance(restock, bool):
        raise InvalidCampaign(f("restock_on_refund"), "must be true or false")

    starts_ms = _time_field(data, "starts_ms", "starts_at", where)
    if starts_ms is None and now_ms is not None:
        starts_ms = now_ms
    if starts_ms is None:
        raise InvalidCampaign(f("starts_at"), "is required (or starts_ms)")
    ends_ms = _time_field(data, "ends_ms", "ends_at", where)
    if data.get("duration_s") is not None:
        if ends_ms is not None:
            raise InvalidCampaign(
                f("duration_s"), "give either an end time or duration_s, not both"
            )
        dur = _int_field(data["duration_s"], f("duration_s"), lo=1, hi=366 * 24 * 3600)
        ends_ms = starts_ms + dur * 1000
    if ends_ms is None:
        raise InvalidCampaign(f("ends_at"), "is required (or ends_ms, or duration_s)")
    if ends_ms <= starts_ms:
        end_name = "ends_ms" if data.get("ends_ms") is not None else "ends_at"
        raise InvalidCampaign(f(end_name), "must be after the start")
    return {
        "id": sale_id,
        "room": room,
        "product_id": product_id,
        "product_name": product_name.strip() if isinstance(product_name, str) else None,
        "price": price,
        "stock": stock,
        "per_user_limit": limit,
        "starts_ms": starts_ms,
        "ends_ms": ends_ms,
        "payment_window_s": window,
        "restock_on_refund": restock,
    }


def sale_from_campaign(campaign: Mapping[str, Any], *, sale_id: str | None = None) -> Sale:
    """Build a :class:`Sale` from a definition (validated here, so raw input is fine).

    ``sale_id`` is used when the definition has no ``id``.

    Raises:
        InvalidCampaign: the definition is invalid, or it has no id and none was given.
    """
    c = validate_campaign(campaign)
    sid = c["id"] or (_campaign_ident(sale_id, "id") if sale_id is not None else None)
    if sid is None:
        raise InvalidCampaign("id", "is required (none given and none minted)")
    return Sale(
        id=sid,
        room=c["room"],
        product_id=c["product_id"],
        price=c["price"],
        stock=c["stock"],
        per_user_limit=c["per_user_limit"],
        starts_ms=c["starts_ms"],
        ends_ms=c["ends_ms"],
        payment_window_s=c["payment_window_s"],
        restock_on_refund=c["restock_on_refund"],
    )


def parse_campaigns(
    text: str,
    *,
    fmt: Literal["yaml", "json"] = "yaml",
    default_payment_window_s: int = 900,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    """Parse and validate a campaign document (YAML is a superset of JSON).

    The document is a list of definitions, a mapping ``{campaigns: [...]}``, or a single
    definition. Duplicate ids within the document are rejected.

    Raises:
        InvalidCampaign: the document does not parse (field ``file``), has the wrong shape
            (``campaigns``), or a definition is invalid (``campaigns[i].<field>``).
    """
    try:
        doc = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidCampaign("file", f"does not parse as {fmt}: {exc}") from exc
    if isinstance(doc, Mapping) and "campaigns" in doc:
        extra = sorted(str(k) for k in doc if k != "campaigns")
        if extra:
            raise InvalidCampaign(extra[0], "unknown top-level field (expected only campaigns)")
        items = doc["campaigns"]
    elif isinstance(doc, Mapping):
        items = [doc]
    else:
        items = doc
    if not isinstance(items, list) or not items:
        raise InvalidCampaign("campaigns", "must be a non-empty list of campaign definitions")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"campaigns[{i}]."
        c = validate_campaign(item, default_payment_window_s=default_payment_window_s, where=where, now_ms=now_ms)
        if c["id"] is not None:
            if c["id"] in seen:
                raise InvalidCampaign(where + "id", f"duplicate id {c['id']!r} in this file")
            seen.add(c["id"])
        out.append(c)
    return out


def load_campaign_file(
    path: str | Path, *, default_payment_window_s: int = 900, now_ms: int | None = None
) -> list[dict[str, Any]]:
    """Read a ``.yaml``/``.yml``/``.json`` campaign file; return its validated definitions
    (see :func:`validate_campaign` for each dict's keys).

    Raises:
        InvalidCampaign: the file cannot be read or a definition is invalid; the field name
            says where (``file``, ``campaigns[2].stock``...).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidCampaign("file", f"cannot read {str(p)!r}: {exc}") from exc
    fmt: Literal["yaml", "json"] = "json" if p.suffix.lower() == ".json" else "yaml"
    return parse_campaigns(text, fmt=fmt, default_payment_window_s=default_payment_window_s, now_ms=now_ms)


def _campaign_ident(v: Any, name: str) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)  # YAML reads `room: 42` as a number
    problem = ident_problem(v)
    if problem is not None:
        raise InvalidCampaign(name, problem)
    return str(v)


def _int_field(v: Any, name: str, *, lo: int, hi: int, unit: str = "") -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            what = f"an integer ({unit})" if unit else "an integer"
            raise InvalidCampaign(name, f"must be {what}, got {v!r}")
    if not lo <= v <= hi:
        raise InvalidCampaign(name, f"must be between {lo} and {hi}, got {v}")
    return int(v)


def _time_field(data: Mapping[str, Any], ms_name: str, at_name: str, where: str) -> int | None:
    ms, at = data.get(ms_name), data.get(at_name)
    if ms is not None and at is not None:
        raise InvalidCampaign(where + at_name, f"give either {ms_name} or {at_name}, not both")
    if ms is not None:
        return _int_field(ms, where + ms_name, lo=0, hi=10**14, unit="epoch ms")
    if at is None:
        return None
    if isinstance(at, datetime):
        dt = at
    elif isinstance(at, date):
        dt = datetime(at.year, at.month, at.day)
    elif isinstance(at, str):
        try:
            dt = datetime.fromisoformat(at.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise InvalidCampaign(
                where + at_name,
                f"must be an ISO-8601 time like 2025-06-01T20:00:00+08:00, got {at!r}",
            ) from exc
    else:
        raise InvalidCampaign(where + at_name, f"must be an ISO-8601 time string, got {at!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
