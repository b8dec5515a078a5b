"""Redis adapter for coupons: drops, atomic claims, and the :class:`CouponService` of orders.

Keys (each drop's keys share its ``{coupon:ID}`` slot, so each script touches one slot):

* ``{coupon:ID}:meta``    hash: the drop (:class:`~livecommerce.coupons.CouponDrop`
  fields), ``only_user`` for a private drop (points redemptions), ``segment`` for a drop
  only a segment's members may claim (issue 11), ``used`` counter, ``closed_by`` /
  ``closed_ms`` once its room's show ended (claims answer ``room_ended``)
* ``{coupon:ID}:members`` set: a segment drop's eligible users (the segment's members when
  it dropped; ``claim`` answers ``not_eligible`` to anyone else)
* ``{coupon:ID}:left``    coupons not yet claimed
* ``{coupon:ID}:owners``  hash user -> the user's coupon (JSON: ``state``, ``claimed_ms``,
  ``order``, ``discount``, ``used_ms``)
* ``{order:ID}:coupon``   the coupon id locked for an order (consume/restore get only the
  order id)
* ``{user:ID}:coupons``   set of the user's coupon ids (listing; expires
  :data:`USER_INDEX_TTL_MS` after the user's last claim, when every drop in it is gone)
* ``{room:ID}:coupons``   sorted set drop id -> expiry, the room's drops (welcome, listing)

Drop keys expire :data:`RETAIN_MS` after the drop does.

Contracts: :meth:`claim` is atomic (never more claims than ``quantity``, one per user);
:meth:`lock_for_order` / :meth:`consume` / :meth:`restore` follow
:data:`~livecommerce.coupons.COUPON_TRANSITIONS` in one script each. ``lock_for_order``
records the order's coupon *before* locking, so a ``restore`` for an order whose lock
call died half-way still finds (and no-ops or undoes) it. Driver errors become
:class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from .clock import now_ms as _now_ms
from .coupons import (
    MAX_TTL_S,
    ClaimReject,
    CouponDrop,
    CouponNotUsable,
    CouponService,
    coupon_id,
    coupon_view,
    decide_claim,
    split_coupon_id,
)
from .keys import Keys
from .redis_conn import guarded

DROP = (files("livecommerce") / "coupons_drop.lua").read_text()
CLAIM = (files("livecommerce") / "coupons_claim.lua").read_text()
USE = (files("livecommerce") / "coupons_use.lua").read_text()
CLOSE = (files("livecommerce") / "coupons_close.lua").read_text()

RETAIN_MS = 30 * 24 * 3600 * 1000
USER_INDEX_TTL_MS = MAX_TTL_S * 1000 + RETAIN_MS  # {user:ID}:coupons after the user's last claim
ORDER_LINK_TTL_S = 30 * 24 * 3600

LOCK_MESSAGES = {
    "not_found": "no such coupon",
    "not_owned": "this coupon is not yours",
    "in_use": "this coupon is used by another order",
    "expired": "this coupon has expired",
    "below_threshold": "the order is below the coupon's threshold",
}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A successful claim: the coupon as shown to its owner, and the drop's remaining count."""

    coupon: dict[str, Any]
    remaining: int


def drop_from_replies(meta: Any, left: Any) -> tuple[CouponDrop, dict[str, int]] | None:
    """A drop and its counts ``{remaining, claimed, used}`` from the ``HGETALL`` of its meta
    and the ``GET`` of its ``left`` counter (None: no such drop)."""
    if not meta:
        return None
    f = {_s(k): _s(v) for k, v in meta.items()}
    drop = CouponDrop.from_fields(f)
    remaining = int(left or 0)
    return drop, {"remaining": remaining, "claimed": drop.quantity - remaining, "used": int(f.get("used") or 0)}


class CouponsRedis:
    """Coupon drops and claims, and the :class:`CouponService` order payment uses."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys
        self._drop = redis.register_script(DROP)
        self._claim = redis.register_script(CLAIM)
        self._use = redis.register_script(USE)
        self._close = redis.register_script(CLOSE)

    def _k(self, drop_id: str, part: str) -> str:
        return self.keys.entity("coupon", drop_id, part)

    def key(self, drop_id: str, part: str) -> str:
        """A drop's key (``meta``, ``left``, ...), for readers that pipeline its reads."""
        return self._k(drop_id, part)

    # ------------------------------------------------------------ drops
    async def create_drop(
        self,
        drop: CouponDrop,
        *,
        only_user: str | None = None,
        segment: str | None = None,
        members: list[str] | None = None,
    ) -> bool:
        """Store a new drop (False when the id exists: nothing changed). With ``segment``,
        only ``members`` may claim it (they are stored first, so no member is refused
        while the drop appears).

        Raises:
            Unavailable: Redis unreachable.
        """
        args: list[Any] = [drop.quantity, drop.expires_ms + RETAIN_MS]
        for k, v in drop.fields().items():
            args += [k, v]
        if only_user:
            args += ["only_user", only_user]
        if segment:
            args += ["segment", segment]
            async with guarded():
                if await self._r.exists(self._k(drop.id, "meta")):
                    return False
                mk = self._k(drop.id, "members")
                for i in range(0, len(members or ()), 1000):
                    await self._r.sadd(mk, *(members or [])[i : i + 1000])
                await self._r.pexpireat(mk, drop.expires_ms + RETAIN_MS)
        async with guarded():
            created = bool(await self._drop(keys=[self._k(drop.id, "meta"), self._k(drop.id, "left")], args=args))
            if created and drop.room:
                rk = self.keys.room(drop.room, "coupons")
                await self._r.zadd(rk, {drop.id: drop.expires_ms})
                await self._r.pexpireat(rk, drop.expires_ms + RETAIN_MS)
        return created

    async def get_drop(self, drop_id: str) -> tuple[CouponDrop, dict[str, int]] | None:
        """The drop and its counts ``{remaining, claimed, used}``, or None."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self.key(drop_id, "meta"))
        pipe.get(self.key(drop_id, "left"))
        async with guarded():
            meta, left = await pipe.execute()
        return drop_from_replies(meta, left)

    async def members_count(self, drop_id: str) -> int:
        """How many users a segment drop admits (0 for other drops)."""
        async with guarded():
            return int(await self._r.scard(self._k(drop_id, "members")))

    async def room_drops(self, room: str, *, now_ms: int) -> list[str]:
        """Ids of the room's drops that have not expired, soonest expiry first."""
        async with guarded():
            raw = await self._r.zrangebyscore(self.keys.room(room, "coupons"), now_ms + 1, "+inf")
        return [_s(x) for x in raw]

    async def claimable(self, room: str, user: str, *, now_ms: int) -> list[tuple[CouponDrop, int]]:
        """The room's drops ``user`` could claim now, with what is left of each, in one
        pipelined read (judged by :func:`decide_claim`, as the claim script judges)."""
        ids = await self.room_drops(room, now_ms=now_ms)
        if not ids:
            return []
        pipe = self._r.pipeline(transaction=False)
        for did in ids:
            pipe.hgetall(self._k(did, "meta"))
            pipe.get(self._k(did, "left"))
            pipe.hexists(self._k(did, "owners"), user)
            pipe.sismember(self._k(did, "members"), user)
        async with guarded():
            raw = await pipe.execute()
        out = []
        for i in range(len(ids)):
            meta, left, already, member = raw[4 * i: 4 * i + 4]
            got = drop_from_replies(meta, left)
            if got is None:
                continue
            drop, counts = got
            f = {_s(k): _s(v) for k, v in meta.items()}
            why = decide_claim(drop, now_ms=now_ms, left=counts["remaining"], already=bool(already), user=user,
                               only_user=f.get("only_user") or None, closed_by=f.get("closed_by") or None,
                               segment=f.get("segment") or None, member=bool(member))
            if why is None:
                out.append((drop, counts["remaining"]))
        return out

    async def close_for_room(self, drop_id: str, *, marker: str, now_ms: int) -> bool:
        """The room's show ended: stamp the drop ``closed_by = marker`` (claims answer
        ``room_ended``; claimed coupons stay usable). True when the drop is closed by this
        ``marker`` (now, or by an earlier call). It stays in the room's listing until the
        caller has recorded what closed (:meth:`unlist`).

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            return bool(await self._close(keys=[self._k(drop_id, "meta")], args=[marker, now_ms]))

    async def unlist(self, drop_id: str, room: str) -> None:
        """Drop a closed drop from the room's live drops (welcome, ``GET .../coupons``)."""
        async with guarded():
            await self._r.zrem(self.keys.room(room, "coupons"), drop_id)

    # ------------------------------------------------------------ claims
    async def claim(self, drop_id: str, user: str, *, now_ms: int) -> Claimed | ClaimReject:
        """Claim one coupon of ``drop_id`` for ``user``, atomically.

        Raises:
            Unavailable: Redis unreachable.
        """
        keys = [self._k(drop_id, "meta"), self._k(drop_id, "left"), self._k(drop_id, "owners"), self._k(drop_id, "members")]
        async with guarded():
            code, left = await self._claim(keys=keys, args=[user, now_ms, RETAIN_MS])
            code = _s(code)
            if code in ("ok", "already_claimed"):
                # the listing index; re-added on already_claimed, so a claim whose index write
                # was lost is listed after the retry. It outlives every drop claimed so far
                # (a drop ends within MAX_TTL_S and its keys RETAIN_MS later)
                pipe = self._r.pipeline(transaction=False)
                pipe.sadd(self.keys.user(user, "coupons"), coupon_id(drop_id, user))
                pipe.pexpire(self.keys.user(user, "coupons"), USER_INDEX_TTL_MS)
                await pipe.execute()
        if code != "ok":
            return code  # type: ignore[return-value]
        view = await self.coupon(user, coupon_id(drop_id, user), now_ms=now_ms)
        assert view is not None
        return Claimed(view, int(left))

    async def grant(self, user: str, drop: CouponDrop, *, now_ms: int) -> dict[str, Any] | None:
        """Give ``user`` the one coupon of a private drop (points redemption), idempotently:
        the drop is created once and only ``user`` may claim it. Returns the coupon (None
        if the drop has expired).

        Raises:
            Unavailable: Redis unreachable.
        """
        await self.create_drop(drop, only_user=user)
        r = await self.claim(drop.id, user, now_ms=now_ms)
        if isinstance(r, Claimed):
            return r.coupon
        return await self.coupon(user, coupon_id(drop.id, user), now_ms=now_ms)

    async def coupon(self, user: str, cid: str, *, now_ms: int) -> dict[str, Any] | None:
        """One coupon of ``user`` as the API shows it, or None."""
        try:
            drop_id, owner = split_coupon_id(cid)
        except CouponNotUsable:
            return None
        if owner != user:
            return None
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self._k(drop_id, "meta"))
        pipe.hget(self._k(drop_id, "owners"), user)
        async with guarded():
            meta, rec = await pipe.execute()
        if not meta or rec is None:
            return None
        drop = CouponDrop.from_fields({_s(k): _s(v) for k, v in meta.items()})
        return coupon_view(drop, user, json.loads(rec), now_ms=now_ms)

    async def user_coupons(self, user: str, *, now_ms: int) -> list[dict[str, Any]]:
        """The user's coupons (all states), newest claim first; drops gone are dropped."""
        async with guarded():
            ids = [_s(x) for x in await self._r.smembers(self.keys.user(user, "coupons"))]
        out = []
        for cid in ids:
            view = await self.coupon(user, cid, now_ms=now_ms)
            if view is None:
                async with guarded():
                    await self._r.srem(self.keys.user(user, "coupons"), cid)
            else:
                out.append(view)
        out.sort(key=lambda c: (-c["claimed_ms"], c["coupon_id"]))
        return out

    # ------------------------------------------------------------ CouponService
    async def _step(self, step: str, user: str, cid: str, order_id: str, amount: int, now_ms: int) -> tuple[str, int]:
        drop_id, _ = split_coupon_id(cid)
        keys = [self._k(drop_id, "meta"), self._k(drop_id, "owners")]
        async with guarded():
            code, discount = await self._use(keys=keys, args=[step, user, order_id, amount, now_ms])
        return _s(code), int(discount or 0)

    async def lock_for_order(self, user: str, coupon_id: str, order_id: str, amount: int, *, now_ms: int | None = None) -> int:
        """See :meth:`CouponService.lock_for_order`.

        Raises:
            CouponNotUsable: with the reason in the message.
            Unavailable: Redis unreachable.
        """
        now = _now_ms() if now_ms is None else now_ms
        _, owner = split_coupon_id(coupon_id)
        if owner != user:
            raise CouponNotUsable(LOCK_MESSAGES["not_owned"])
        link = self.keys.entity("order", order_id, "coupon")
        async with guarded():
            fresh = await self._r.set(link, coupon_id, nx=True, ex=ORDER_LINK_TTL_S)
            if not fresh:
                held = _s(await self._r.get(link))
                if held != coupon_id:
                    raise CouponNotUsable(f"order {order_id} already uses coupon {held}")
        code, discount = await self._step("lock", user, coupon_id, order_id, amount, now)
        if code != "ok":
            if fresh:
                async with guarded():
                    await self._r.delete(link)
            raise CouponNotUsable(LOCK_MESSAGES.get(code, code))
        return min(discount, amount)

    async def _linked(self, order_id: str) -> str | None:
        async with guarded():
            v = await self._r.get(self.keys.entity("order", order_id, "coupon"))
        return None if v is None else _s(v)

    async def consume(self, order_id: str, *, now_ms: int | None = None) -> None:
        """See :meth:`CouponService.consume`."""
        cid = await self._linked(order_id)
        if cid is None:
            return
        _, user = split_coupon_id(cid)
        await self._step("consume", user, cid, order_id, 0, _now_ms() if now_ms is None else now_ms)

    async def restore(self, order_id: str, *, now_ms: int | None = None) -> None:
        """See :meth:`CouponService.restore`."""
        cid = await self._linked(order_id)
        if cid is None:
            return
        _, user = split_coupon_id(cid)
        code, _ = await self._step("restore", user, cid, order_id, 0, _now_ms() if now_ms is None else now_ms)
        if code == "ok":  # given back: the order may lock another coupon on a later payment
            async with guarded():
                await self._r.delete(self.keys.entity("order", order_id, "coupon"))


def _implements_service(c: CouponsRedis) -> CouponService:  # mypy checks the port
    return c
