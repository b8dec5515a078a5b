"""Coupons: limited drops in a room, claims, and a coupon's use in an order. No I/O.

A host (of the room) or ops *drops* a batch: kind ``full_reduction`` ("spend ``threshold``
save ``value``", cents) or ``percent`` (``value`` % off orders of at least ``threshold``),
``quantity`` coupons, one per user, until ``expires_ms``. Viewers *claim* one each,
atomically (:func:`decide_claim`; ``coupons_claim.lua`` is its atomic twin): answers
``sold_out``, ``already_claimed``, ``expired`` or ``not_found``.

A claimed coupon is applied when paying an order through :class:`CouponService`. Its
life-cycle (all transition logic in :data:`COUPON_TRANSITIONS`; the Redis scripts apply it)::

    claimed --lock(order)--> locked --consume(order)--> used
       ^                       |
       +----restore(order)-----+

``lock`` is idempotent per order (the same order gets the same discount back), ``consume``
and ``restore`` act only on the coupon locked by *that* order, so a late duplicate can
never unlock another order's coupon. An expired coupon cannot be locked; restoring it
after its expiry gives it back claimed, and it shows as ``expired``.

Coupon ids are ``<drop_id>:<user>`` (drop ids never contain ``:``), so the drop, the
owner and the per-user limit are all in the id. Points can be redeemed for a one-coupon
drop of kind ``full_reduction`` with no threshold (see :mod:`livecommerce.points`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from .errors import BadFrame, Conflict

CouponKind = Literal["full_reduction", "percent"]
KINDS: tuple[CouponKind, ...] = ("full_reduction", "percent")
CouponState = Literal["claimed", "locked", "used"]
CouponStep = Literal["lock", "consume", "restore"]
ClaimReject = Literal["not_found", "not_eligible", "expired", "already_claimed", "sold_out", "room_ended"]

COUPON_TRANSITIONS: dict[tuple[CouponState, CouponStep], CouponState] = {
    ("claimed", "lock"): "locked",
    ("locked", "consume"): "used",
    ("locked", "restore"): "claimed",
}

MAX_QUANTITY = 1_000_000
MAX_VALUE = 10_000_000  # cents
MAX_TTL_S = 30 * 24 * 3600
DEFAULT_TTL_S = 24 * 3600
REDEEMED_TTL_S = 30 * 24 * 3600

CLAIM_MESSAGES: dict[str, str] = {
    "not_found": "no such coupon drop",
    "not_eligible": "this coupon drop is for a segment of viewers you are not in",
    "expired": "this coupon drop has expired",
    "already_claimed": "you already claimed a coupon from this drop",
    "sold_out": "all coupons of this drop are claimed",
    "room_ended": "the show this coupon drop belongs to has ended",
}


class CouponNotUsable(Conflict):
    """A coupon cannot be applied to an order: not owned, expired, below its threshold,
    or already used by another order (HTTP 409; wire code ``coupon_not_usable``)."""

    code = "coupon_not_usable"


class CouponService(Protocol):
    """What order payment needs from coupons (the gateway's coupons adapter; workers build
    one with ``CouponsRedis(redis, keys)``)."""

    async def lock_for_order(self, user: str, coupon_id: str, order_id: str, amount: int) -> int:
        """Reserve ``user``'s coupon for ``order_id`` of ``amount`` cents; return the
        discount in cents (at most ``amount``). Idempotent per order: the same order gets
        the same discount again.

        Raises:
            CouponNotUsable: not the user's, expired, below the threshold, used, or locked
                by another order.
            Unavailable: Redis unreachable.
        """
        ...

    async def consume(self, order_id: str) -> None:
        """The order is paid: its locked coupon becomes used, exactly once. No-op for an
        order without a coupon or whose coupon is used already.

        Raises:
            Unavailable: Redis unreachable.
        """
        ...

    async def restore(self, order_id: str) -> None:
        """The order was cancelled or its payment failed: its locked coupon goes back to
        its owner, unused, exactly once. No-op for an order without a locked coupon.

        Raises:
            Unavailable: Redis unreachable.
        """
        ...


@dataclass(frozen=True, slots=True)
class CouponDrop:
    id: str
    room: str
    kind: CouponKind
    threshold: int  # cents an order must reach
    value: int  # cents off (full_reduction) or percent off (percent)
    quantity: int
    expires_ms: int
    created_by: str
    created_ms: int
    per_user: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_fields(cls, f: Mapping[str, str]) -> CouponDrop:
        """From the stored hash fields (strings)."""
        return cls(
            id=f["id"],
            room=f.get("room", ""),
            kind=f["kind"],  # type: ignore[arg-type]
            threshold=int(f["threshold"]),
            value=int(f["value"]),
            quantity=int(f["quantity"]),
            expires_ms=int(f["expires_ms"]),
            created_by=f.get("created_by", ""),
            created_ms=int(f.get("created_ms") or 0),
            per_user=int(f.get("per_user") or 1),
        )

    def fields(self) -> dict[str, str | int]:
        return {k: v for k, v in self.to_dict().items()}


def valid_drop_id(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 48 and all(c.isalnum() or c in "-_." for c in v)


def _int(body: Mapping[str, Any], name: str, lo: int, hi: int, default: int | None = None) -> int:
    v = body.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadFrame(f"'{name}' must be an integer in {lo}..{hi}", code="invalid")
    return v


def new_drop(body: Mapping[str, Any], *, room: str, by: str, now_ms: int, default_id: str) -> CouponDrop:
    """Validate a drop ``{drop_id?, kind, threshold?, value, quantity, expires_in_s? |
    expires_ms?}`` (the body of ``POST /api/v1/rooms/{room}/coupons`` and of the
    ``coupon.drop`` host action, where ``id`` is the command's own id; HTTP also takes
    ``id`` for ``drop_id``).

    Raises:
        BadFrame: (``invalid``) naming the bad field.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object", code="invalid")
    did = body.get("drop_id", body.get("id", default_id))
    if not valid_drop_id(did):
        raise BadFrame("'drop_id' (or 'id') must be 1..48 letters, digits, - _ .", code="invalid")
    kind = body.get("kind")
    if kind not in KINDS:
        raise BadFrame("'kind' must be full_reduction or percent", code="invalid")
    threshold = _int(body, "threshold", 0, MAX_VALUE, 0)
    if kind == "percent":
        value = _int(body, "value", 1, 99)
    else:
        value = _int(body, "value", 1, MAX_VALUE)
        if threshold and value >= threshold:
            raise BadFrame("a full_reduction coupon must save less than its threshold", code="invalid")
    quantity = _int(body, "quantity", 1, MAX_QUANTITY)
    if "expires_ms" in body:
        expires = _int(body, "expires_ms", now_ms + 1000, now_ms + MAX_TTL_S * 1000)
    else:
        expires = now_ms + _int(body, "expires_in_s", 1, MAX_TTL_S, DEFAULT_TTL_S) * 1000
    return CouponDrop(did, room, kind, threshold, value, quantity, expires, by, now_ms)


def decide_claim(
    drop: CouponDrop | None,
    *,
    now_ms: int,
    left: int,
    already: bool,
    user: str = "",
    only_user: str | None = None,
    closed_by: str | None = None,
    segment: str | None = None,
    member: bool = False,
) -> ClaimReject | None:
    """None means claim. Judged in this order (``coupons_claim.lua``'s): unknown (a private
    drop, ``only_user``, is unknown to everyone else), closed by its room's show ending
    (``closed_by`` a ``room:`` stamp), a segment drop and ``user`` not a ``member``,
    expired, already claimed, sold out (a user who has one hears ``already_claimed`` even
    once the drop is gone)."""
    if drop is None or (only_user and only_user != user):
        return "not_found"
    if closed_by is not None and closed_by.startswith("room:"):
        return "room_ended"
    if segment and not member:
        return "not_eligible"
    if now_ms >= drop.expires_ms:
        return "expired"
    if already:
        return "already_claimed"
    if left <= 0:
        return "sold_out"
    return None


def discount_for(kind: str, threshold: int, value: int, amount: int) -> int | None:
    """The discount in cents on an order of ``amount`` cents, or None when the order is
    below the threshold. Never more than ``amount``; percent rounds down."""
    if amount < threshold:
        return None
    if kind == "percent":
        return amount * value // 100
    return min(value, amount)


def coupon_id(drop_id: str, user: str) -> str:
    return f"{drop_id}:{user}"


def split_coupon_id(cid: str) -> tuple[str, str]:
    """``(drop_id, user)`` of a coupon id.

    Raises:
        CouponNotUsable: not a coupon id.
    """
    drop, sep, user = cid.partition(":")
    if not sep or not user or not valid_drop_id(drop):
        raise CouponNotUsable(f"{cid!r} is not a coupon id")
    return drop, user


def coupon_view(drop: CouponDrop, user: str, rec: Mapping[str, Any], *, now_ms: int) -> dict[str, Any]:
    """A coupon as the API shows it; ``state`` is ``expired`` for an unused coupon past
    its drop's expiry."""
    state = str(rec.get("state", "claimed"))
    if state == "claimed" and now_ms >= drop.expires_ms:
        state = "expired"
    out: dict[str, Any] = {
        "coupon_id": coupon_id(drop.id, user),
        "drop_id": drop.id,
        "room": drop.room,
        "kind": drop.kind,
        "threshold": drop.threshold,
        "value": drop.value,
        "expires_ms": drop.expires_ms,
        "state": state,
        "claimed_ms": int(rec.get("claimed_ms") or 0),
    }
    if rec.get("order"):
        out["order_id"] = rec["order"]
        out["discount"] = int(rec.get("discount") or 0)
    if rec.get("used_ms"):
        out["used_ms"] = int(rec["used_ms"])
    return out


def public_drop(d: CouponDrop) -> dict[str, Any]:
    """A drop as ``welcome``, ``GET /api/v1/coupons/{drop}`` and the room's listing show it
    (its counts go beside it)."""
    return {
        "drop_id": d.id,
        "room": d.room,
        "kind": d.kind,
        "threshold": d.threshold,
        "value": d.value,
        "quantity": d.quantity,
        "expires_ms": d.expires_ms,
        "by": d.created_by,
    }


def dropped_event(drop: CouponDrop, remaining: int) -> dict[str, Any]:
    """The data of the ``coupon.dropped`` room event."""
    return {
        "drop_id": drop.id,
        "kind": drop.kind,
        "threshold": drop.threshold,
        "value": drop.value,
        "quantity": drop.quantity,
        "remaining": remaining,
        "expires_ms": drop.expires_ms,
        "by": drop.created_by,
    }
