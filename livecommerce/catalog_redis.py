"""Redis adapter of the catalogue: each product's definition and its SKUs' stock and holds,
every key of a product in its own slot (``{product:ID}``), each change one Lua call.

=============  =====  ===================================================================
part           type   holds
=============  =====  ===================================================================
``meta``       hash   ``def`` (the definition, canonical JSON), ``v`` (its version), times,
                      and the flat fields pins and the feed read: id, name, price (lowest
                      active), image, category, owner, state
``stock``      hash   sku -> available units
``held``       hash   sku -> reserved units (holds not yet paid or released)
``sold``       hash   sku -> paid units
``stocked``    hash   sku -> units put in, net of those taken out
``moves``      hash   sku -> its stock-move counter; ``<sku>/<n>`` -> that move
                      (``{d, t, r, b}``: delta, time, reason, by) until SQL has it
``off``        set    archived SKUs
``holds``      hash   hold id -> ``{u, l, r, c, s, p, t, rq, rf}`` (user, lines taken JSON,
                      the request, the lines counted against limits, state, pay-by, time,
                      units refunded per SKU, refunds applied)
``bought``     hash   ``<user>|<sku>`` -> the user's units in holds not released (the
                      per-user limit is checked against it in the reserve script)
``deadlines``  zset   reserved hold ids by pay-by ms
``settled``    zset   paid or cancelled hold ids by when (pruned after the retention)
``rooms``      set    rooms whose product list shows this product
=============  =====  ===================================================================

And one global set, ``catalog:products``: every product id ever stored (reconcile walks it).

Invariant of each SKU, kept by every script in one step:
``stocked == stock + held + sold``, each >= 0 (:class:`~livecommerce.catalog.SkuStock`).

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal, cast

import redis.exceptions

from .catalog import (
    MAX_STOCK,
    REJECTS,
    Hold,
    HoldState,
    PayOutcome,
    Product,
    Reject,
    ReleaseOutcome,
    Sku,
    SkuStock,
    canonical,
    merge_lines,
    product_from_dict,
)
from .errors import NotFound, Unavailable
from .keys import Keys
from .redis_conn import DRIVER_ERRORS, run_script_calls

_LUA = files("livecommerce")
PUT = (_LUA / "catalog_put.lua").read_text()
STOCK = (_LUA / "catalog_stock.lua").read_text()
RESERVE = (_LUA / "catalog_reserve.lua").read_text()
SETTLE = (_LUA / "catalog_settle.lua").read_text()
REFUND = (_LUA / "catalog_refund.lua").read_text()
READ = (_LUA / "catalog_read.lua").read_text()
PRUNE = (_LUA / "catalog_prune.lua").read_text()

_UNAVAILABLE = (
    *DRIVER_ERRORS,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
)


@contextlib.asynccontextmanager
async def _guarded() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise Unavailable(f"redis unreachable: {exc.__class__.__name__}") from exc


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _pairs(flat: Sequence[Any]) -> dict[str, int]:
    return {_s(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


@dataclass(frozen=True, slots=True)
class Move:
    """One change of a SKU's ``stocked`` units: ``seq`` numbers the SKU's moves from 1; the
    SQL ledger keys it ``<product>/<sku>/<seq>`` (:attr:`event_id`)."""

    product_id: str
    sku: str
    seq: int
    delta: int
    ts_ms: int
    reason: str
    by: str = ""

    @property
    def event_id(self) -> str:
        return f"{self.product_id}/{self.sku}/{self.seq}"


@dataclass(frozen=True, slots=True)
class Stored:
    """A definition write: ``ok`` with the new version and the stock moves it made, or not
    (``stale``: another change came first; ``v`` is the current version)."""

    ok: bool
    v: int
    moves: tuple[Move, ...] = ()


@dataclass(frozen=True, slots=True)
class StockChange:
    """A stock write's answer: ``ok`` (``move`` None when nothing changed) or
    ``out_of_range`` (nothing changed), with the SKU's units after it."""

    outcome: Literal["ok", "out_of_range"]
    stock: SkuStock
    move: Move | None = None


@dataclass(frozen=True, slots=True)
class Reserved:
    """A hold taken now (``duplicate`` False) or earlier under the same id with the same
    request (True: nothing moved; ``state`` says where it is now). ``available`` is each
    required line's SKU's units left right after this reservation (empty for a duplicate);
    ``lines`` what the hold took (required lines, then the optional ones it could take;
    empty: nothing was held, only optional lines were asked and none was in stock)."""

    hold_id: str
    pay_by_ms: int
    state: HoldState = "reserved"
    duplicate: bool = False
    available: tuple[tuple[str, int], ...] = ()
    lines: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """A reservation refused: the :data:`~livecommerce.catalog.Reject` reason, the SKU it
    concerns (None for the product) and its available units (``limit_reached``: the units
    the user holds or bought already); or ``hold_exists`` (the hold id was used for another
    request or user). ``price_changed``: ``available`` is the SKU's price now."""

    reason: Reject | Literal["hold_exists"]
    sku: str | None = None
    available: int = 0


_READ_PARTS = ("meta", "stock", "held", "sold", "stocked")


def _parse_read(product_id: str, raw: Sequence[Any]) -> tuple[Product, dict[str, SkuStock]] | None:
    """A product and its SKUs' units from the read script's reply (:meth:`RedisCatalog.read`)."""
    definition, v, created, updated = _s(raw[0]), int(raw[1]), int(raw[2]), int(raw[3])
    if definition:
        d = json.loads(definition)
        product = product_from_dict({**d, "v": v, "created_ms": created, "updated_ms": updated})
    else:
        flat = {_s(raw[8][i]): _s(raw[8][i + 1]) for i in range(0, len(raw[8]), 2)}
        if not flat.get("name"):
            return None
        product = Product(product_id, "", flat["name"], (Sku("default", (), int(flat.get("price") or 0)),),
                          category=flat.get("category", ""), image=flat.get("image", ""))
    stock, held, sold, stocked = (_pairs(raw[i]) for i in (4, 5, 6, 7))
    units = {s.id: SkuStock(stock.get(s.id, 0), held.get(s.id, 0), sold.get(s.id, 0), stocked.get(s.id, 0))
             for s in product.skus}
    return product, units


class RedisCatalog:
    """The catalogue's atomic store (see the module docstring). Works with a single Redis
    and with Redis Cluster: every script touches one product's slot."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._put = redis.register_script(PUT)
        self._stock = redis.register_script(STOCK)
        self._reserve = redis.register_script(RESERVE)
        self._settle = redis.register_script(SETTLE)
        self._refund = redis.register_script(REFUND)
        self._read = redis.register_script(READ)
        self._prune = redis.register_script(PRUNE)

    def key(self, product_id: str, part: str) -> str:
        return self.keys.entity("product", product_id, part)

    def _k(self, product_id: str, *parts: str) -> list[str]:
        return [self.key(product_id, p) for p in parts]

    @property
    def index_key(self) -> str:
        return self.keys.global_key("catalog:products")

    # ------------------------------------------------------------------ definitions
    async def read(self, product_id: str) -> tuple[Product, dict[str, SkuStock]] | None:
        """The product and each SKU's units in one consistent read; None when unknown. A
        product stored before SKUs existed (a bare ``meta`` with a price) reads as one
        ``default`` SKU at version 0, with no stock."""
        async with _guarded():
            raw = await self._read(keys=self._k(product_id, *_READ_PARTS))
        return _parse_read(product_id, raw)

    async def read_many(self, product_ids: Sequence[str]) -> dict[str, tuple[Product, dict[str, SkuStock]] | None]:
        """:meth:`read` of several products in one round trip (one pipeline of the read
        script; concurrent calls on a cluster), each product's read consistent on its own."""
        ids = list(dict.fromkeys(product_ids))
        if not ids:
            return {}
        async with _guarded():
            raws = await run_script_calls(self.redis, self._read, [(self._k(pid, *_READ_PARTS), ()) for pid in ids])
        return {pid: _parse_read(pid, raw) for pid, raw in zip(ids, raws, strict=True)}

    async def product(self, product_id: str) -> Product | None:
        got = await self.read(product_id)
        return None if got is None else got[0]

    async def put(self, product: Product, *, expected_v: int, initial_stock: Mapping[str, int], now_ms: int,
                  by: str = "") -> Stored:
        """Store ``product`` if its stored version is still ``expected_v`` (0: not stored
        yet). New SKUs start with ``initial_stock`` (0 when absent), as one stock move each;
        known SKUs keep their units. The product joins :attr:`index_key` first."""
        lo, _ = product.price_range
        argv: list[Any] = [expected_v, canonical(product), product.name, lo, product.image, product.category,
                           product.owner, product.state, now_ms, len(product.skus)]
        for s in product.skus:
            argv += [s.id, "1" if s.state == "archived" else "0", int(initial_stock.get(s.id, 0))]
        async with _guarded():
            await self.redis.sadd(self.index_key, product.id)
            raw = await self._put(keys=self._k(product.id, "meta", "stock", "stocked", "off", "moves"), args=argv)
        if _s(raw[0]) == "stale":
            return Stored(False, int(raw[1]))
        moves = tuple(Move(product.id, _s(raw[i]), int(raw[i + 2]), int(raw[i + 1]), now_ms, "create", by)
                      for i in range(2, len(raw), 3))
        return Stored(True, int(raw[1]), moves)

    async def ids(self) -> list[str]:
        """Every product id ever stored (sorted)."""
        async with _guarded():
            return sorted(_s(x) for x in await self.redis.smembers(self.index_key))

    # ------------------------------------------------------------------ stock
    async def change_stock(self, product_id: str, sku: str, *, set_to: int | None = None, add: int | None = None,
                           now_ms: int, reason: str | None = None, by: str = "") -> StockChange:
        """Set (``set_to``) or change (``add``) a SKU's available units: the twin of
        :func:`~livecommerce.catalog.decide_stock`.

        Raises:
            NotFound: no such product or SKU.
        """
        mode, n = ("set", set_to) if set_to is not None else ("add", add or 0)
        async with _guarded():
            raw = await self._stock(keys=self._k(product_id, "meta", "stock", "held", "sold", "stocked", "moves"),
                                    args=[sku, mode, n, MAX_STOCK, now_ms, reason or mode, by])
        code = _s(raw[0])
        if code == "no_product":
            raise NotFound(f"no product {product_id!r}")
        if code == "no_sku":
            raise NotFound(f"product {product_id!r} has no SKU {sku!r}")
        units = SkuStock(int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]))
        if code == "out_of_range":
            return StockChange("out_of_range", units)
        seq, delta = int(raw[5]), int(raw[6])
        move = Move(product_id, sku, seq, delta, now_ms, reason or mode, by) if seq else None
        return StockChange("ok", units, move)

    async def moves(self, product_id: str) -> list[Move]:
        """The stock moves Redis still remembers (SQL may not have them yet), by SKU and seq."""
        async with _guarded():
            raw = await self.redis.hgetall(self.key(product_id, "moves"))
        out = []
        for k, v in raw.items():
            name = _s(k)
            if "/" not in name:
                continue
            sku, _, seq = name.rpartition("/")
            m = json.loads(_s(v))
            out.append(Move(product_id, sku, int(seq), int(m["d"]), int(m["t"]), str(m.get("r", "")), str(m.get("b", ""))))
        return sorted(out, key=lambda m: (m.sku, m.seq))

    # ------------------------------------------------------------------ holds
    async def reserve(self, product_id: str, hold_id: str, user: str, lines: Iterable[tuple[str, int]], *,
                      pay_by_ms: int, now_ms: int, limits: Mapping[str, int] | None = None,
                      optional: Sequence[tuple[str, int]] = (), priced: Mapping[str, int] | None = None
                      ) -> Reserved | Refused:
        """Reserve every line (merged per SKU) for the hold, all or nothing: the twin of
        :func:`~livecommerce.catalog.decide_reserve`, each SKU's per-user limit (``limits``,
        sku -> units; absent or 0: none) checked against the user's units held or bought in
        the same script. ``optional`` lines (gifts) are taken only while their SKU has the
        units, never refusing the hold. ``priced``: sku -> the price the caller priced the
        line at; refused with ``price_changed`` (``available``: the price now) when the
        definition's price of a SKU is another, in the same script that takes the units (so
        a price change between the caller's read and the hold cannot pass). A hold id
        seen before answers its first reservation when the user and request are the same,
        else ``hold_exists``.

        Raises:
            BadFrame: bad lines (:func:`~livecommerce.catalog.merge_lines`).
        """
        given = list(lines)
        merged = merge_lines(given) if given or not optional else ()
        opt = merge_lines(optional) if optional else ()
        lim = limits or {}
        if opt:
            request = json.dumps([[list(x) for x in merged], [list(x) for x in opt]], separators=(",", ":"))
        else:
            request = json.dumps([list(x) for x in merged], separators=(",", ":"))
        argv: list[Any] = [hold_id, user, pay_by_ms, now_ms, request,
                           "" if not priced else json.dumps(dict(priced), sort_keys=True, separators=(",", ":")),
                           len(merged)]
        for sku, qty in merged:
            argv += [sku, qty, int(lim.get(sku, 0))]
        for sku, qty in opt:
            argv += [sku, qty]
        async with _guarded():
            raw = await self._reserve(keys=self._k(product_id, "meta", "stock", "held", "off", "holds", "deadlines", "bought"),
                                      args=argv)
        code = _s(raw[0])
        if code == "ok":
            taken = tuple((str(k), int(q)) for k, q in json.loads(_s(raw[2])))
            return Reserved(hold_id, int(raw[1]), available=tuple((sku, int(a)) for (sku, _), a in zip(merged, raw[3:], strict=False)),
                            lines=taken)
        if code == "dup":
            taken = tuple((str(k), int(q)) for k, q in json.loads(_s(raw[3])))
            return Reserved(hold_id, int(raw[2]), cast(HoldState, _s(raw[1])), duplicate=True, lines=taken)
        if code == "hold_exists":
            return Refused("hold_exists")
        assert code in REJECTS, code
        return Refused(cast(Reject, code), _s(raw[1]) or None, int(raw[2]))

    async def refund(self, product_id: str, hold_id: str, refund_id: str, lines: Sequence[tuple[str, int]]
                     ) -> Literal["ok", "already", "unknown", "not_paid", "too_many"]:
        """Put ``lines`` (units of a paid hold's SKUs) back on sale, exactly once per
        ``refund_id`` (``catalog_refund.lua``): sold -> available, the user's counted units
        drop. ``too_many``: more units of a SKU than the hold has left unrefunded."""
        args: list[Any] = [hold_id, refund_id]
        for sku, qty in lines:
            args += [sku, int(qty)]
        async with _guarded():
            raw = await self._refund(keys=self._k(product_id, "stock", "sold", "holds", "bought"), args=args)
        return cast(Literal["ok", "already", "unknown", "not_paid", "too_many"], _s(raw[0]))

    async def bought(self, product_id: str, user: str, skus: Iterable[str]) -> dict[str, int]:
        """The units of each SKU ``user`` holds or bought (what the per-user limit counts)."""
        names = list(skus)
        if not names:
            return {}
        async with _guarded():
            raw = await self.redis.hmget(self.key(product_id, "bought"), [f"{user}|{s}" for s in names])
        return {s: int(v or 0) for s, v in zip(names, raw, strict=True)}

    async def _step(self, product_id: str, hold_id: str, step: str, now_ms: int) -> str:
        async with _guarded():
            raw = await self._settle(keys=self._k(product_id, "stock", "held", "sold", "holds", "deadlines", "settled", "bought"),
                                     args=[hold_id, step, now_ms])
        return _s(raw[0])

    async def release(self, product_id: str, hold_id: str, *, now_ms: int) -> ReleaseOutcome | Literal["unknown"]:
        """Give a reserved hold's units back, exactly once (``released``; repeated:
        ``already_released``; paid first: ``already_paid``; no such hold: ``unknown``)."""
        return cast(ReleaseOutcome, await self._step(product_id, hold_id, "release", now_ms))

    async def pay(self, product_id: str, hold_id: str, *, now_ms: int) -> PayOutcome | Literal["unknown"]:
        """Mark a reserved hold paid (its units move to ``sold``), exactly once; ``expired``
        past its pay-by time (the time-out releases it)."""
        return cast(PayOutcome, await self._step(product_id, hold_id, "pay", now_ms))

    async def hold(self, product_id: str, hold_id: str) -> Hold | None:
        async with _guarded():
            raw = await self.redis.hget(self.key(product_id, "holds"), hold_id)
        return None if raw is None else _hold(product_id, hold_id, _s(raw))

    async def holds(self, product_id: str) -> list[Hold]:
        async with _guarded():
            raw = await self.redis.hgetall(self.key(product_id, "holds"))
        return sorted((_hold(product_id, _s(k), _s(v)) for k, v in raw.items()), key=lambda h: h.id)

    async def due(self, product_id: str, now_ms: int, limit: int = 500) -> list[str]:
        """Reserved hold ids whose pay-by time has passed (oldest first)."""
        async with _guarded():
            raw = await self.redis.zrangebyscore(self.key(product_id, "deadlines"), "-inf", now_ms, start=0, num=limit)
        return [_s(x) for x in raw]

    async def prune(self, product_id: str, *, settled_before_ms: int, moves: Sequence[Move] = (),
                    limit: int = 1000) -> tuple[int, int]:
        """Forget holds settled before ``settled_before_ms`` and the given stock moves (SQL
        has them); returns how many of each went."""
        args: list[Any] = [settled_before_ms, limit, *(f"{m.sku}/{m.seq}" for m in moves)]
        async with _guarded():
            raw = await self._prune(keys=self._k(product_id, "holds", "settled", "moves"), args=args)
        return int(raw[0]), int(raw[1])

    # ------------------------------------------------------------------ rooms listing it
    async def listed_in(self, product_id: str, room: str, listed: bool) -> None:
        """Remember (or forget) that ``room``'s product list shows the product, so that a
        change of the product reaches that list."""
        async with _guarded():
            if listed:
                await self.redis.sadd(self.key(product_id, "rooms"), room)
            else:
                await self.redis.srem(self.key(product_id, "rooms"), room)

    async def rooms(self, product_id: str) -> list[str]:
        async with _guarded():
            return sorted(_s(x) for x in await self.redis.smembers(self.key(product_id, "rooms")))


def _hold(product_id: str, hold_id: str, raw: str) -> Hold:
    h = json.loads(raw)
    lines = tuple((str(s), int(q)) for s, q in json.loads(h["l"]))
    return Hold(hold_id, product_id, str(h["u"]), lines, cast(HoldState, h["s"]), int(h["p"]), int(h.get("t") or 0))
