"""The catalogue: products with variants (SKUs), what makes a definition valid, and the
stock rules every reservation of SKU units follows.

No I/O here: clock and ids are arguments. :mod:`livecommerce.catalog_redis` keeps each
product's definition and its SKUs' stock in the product's own Redis slot and runs
:func:`decide_reserve` and :func:`hold_step` atomically in Lua (``catalog_*.lua``);
:mod:`livecommerce.catalog_sql` remembers definitions and stock moves in SQL, and
:mod:`livecommerce.catalog_sync` keeps the two in step (writes, reconcile).

A **product** has a name, an optional description, category and image, an owner (the host
whose product it is; ``""`` for a platform product only ops manage) and one or more **SKUs**.
A SKU is one purchasable variant: its ``attrs`` give one value for each option of the
product (``{colour: red, size: M}``), and it has its own price (integer cents), image and
stock. The product's options are not declared separately: they are the attribute names
its SKUs share, in the order of the first SKU, with their values in first-seen order. A
product without options has exactly one SKU (``default`` unless named).

Lifecycle of a product and of each SKU (:data:`STATE_STEPS`)::

    active --archive--> archived --restore--> active

An archived product or SKU takes no new reservation and leaves every room's list; holds
already made can still be paid or released.

Stock of one SKU, in units, at every moment (each Lua step keeps it)::

    stocked == available + reserved + sold

``stocked`` is every unit the owner ever put in, net of what they took out (setting the stock
to N moves ``stocked`` by ``N - available``); ``available`` is what can be reserved now.

A **hold** reserves units of one or more SKUs of one product for one order, all or nothing
(:func:`decide_reserve`), and then becomes ``paid`` (units move to ``sold``) or
``cancelled`` (units go back to ``available``) exactly once (:data:`HOLD_STEPS`). A cart
order spanning several products takes one hold per product under the same hold id, in
product-id order, releasing those it took when one is refused (``docs/commerce.md``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from .errors import BadFrame, Conflict
from .flash_sale import ident_problem

ProductState = Literal["active", "archived"]
StateStep = Literal["archive", "restore"]

STATE_STEPS: dict[tuple[ProductState, StateStep], ProductState] = {
    ("active", "archive"): "archived",
    ("archived", "restore"): "active",
}

MAX_PRICE = 10**10  # cents
MAX_STOCK = 10_000_000
MAX_SKUS = 200
MAX_OPTIONS = 3
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_URL = 500
MAX_CATEGORY = 64
MAX_OPTION_NAME = 32
MAX_OPTION_VALUE = 64
MAX_QTY = 1000  # units of one SKU in one hold
MAX_LINES = 50  # SKUs in one hold

_USER = re.compile(r"^[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]{0,63}$")
_URL = re.compile(r"^(https?://[^\s<>\"']+|/[^\s<>\"']*)$")


class InvalidProduct(BadFrame, ValueError):
    """A product definition, a change or a catalogue file is invalid. ``field`` names the
    bad field with its position (``skus[2].price``, ``row 4 (tea-set/red-M): price``),
    ``problem`` says what is wrong; the wire code is ``invalid``."""

    code = "invalid"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class GiftRule:
    """Gift with purchase (赠品) on a SKU: an order with at least ``min_qty`` units of the SKU
    gets ``qty`` units of ``sku`` of ``product_id`` (``""``: the same product) at price 0,
    while that SKU's stock lasts (the cart's checkout takes it in the same hold)."""

    min_qty: int
    sku: str
    qty: int = 1
    product_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min_qty": self.min_qty, "sku": self.sku, "qty": self.qty}
        if self.product_id:
            out["product_id"] = self.product_id
        return out


@dataclass(frozen=True, slots=True)
class Sku:
    """One purchasable variant. ``attrs`` are ``(option, value)`` pairs in the product's
    option order; ``price`` is integer cents. ``limit``: the most units one user may hold and
    buy of this SKU (0: no limit; the reserve script counts them); ``gift``: its gift with
    purchase, if any."""

    id: str
    attrs: tuple[tuple[str, str], ...]
    price: int
    image: str = ""
    state: ProductState = "active"
    limit: int = 0
    gift: GiftRule | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "attrs": dict(self.attrs), "price": self.price, "image": self.image, "state": self.state}
        if self.limit:  # only when set: definitions stored before limits keep their canonical text
            out["limit"] = self.limit
        if self.gift is not None:
            out["gift"] = self.gift.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class Product:
    """A catalogue product (see the module docstring). ``v`` counts changes of the
    definition (0: never stored); ``owner`` is ``""`` for a platform product."""

    id: str
    owner: str
    name: str
    skus: tuple[Sku, ...]
    description: str = ""
    category: str = ""
    image: str = ""
    state: ProductState = "active"
    v: int = 0
    created_ms: int = 0
    updated_ms: int = 0

    @property
    def options(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The option names the SKUs share, each with its values in first-seen order."""
        if not self.skus or not self.skus[0].attrs:
            return ()
        names = [a for a, _ in self.skus[0].attrs]
        values: dict[str, list[str]] = {n: [] for n in names}
        for s in self.skus:
            for a, val in s.attrs:
                if val not in values[a]:
                    values[a].append(val)
        return tuple((n, tuple(values[n])) for n in names)

    @property
    def active_skus(self) -> tuple[Sku, ...]:
        return tuple(s for s in self.skus if s.state == "active")

    @property
    def price_range(self) -> tuple[int, int]:
        """Lowest and highest price of the active SKUs ((0, 0) when none is active)."""
        prices = [s.price for s in self.active_skus]
        return (min(prices), max(prices)) if prices else (0, 0)

    def sku(self, sku_id: str) -> Sku | None:
        for s in self.skus:
            if s.id == sku_id:
                return s
        return None

    def definition(self) -> dict[str, Any]:
        """What the owner defined (no version or times): the value file loads compare."""
        return {
            "id": self.id, "owner": self.owner, "name": self.name, "description": self.description,
            "category": self.category, "image": self.image, "state": self.state,
            "skus": [s.to_dict() for s in self.skus],
        }

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.price_range
        return {
            **self.definition(),
            "options": [{"name": n, "values": list(vals)} for n, vals in self.options],
            "price": lo,  # what a pin shows: the lowest active price ("from")
            "price_min": lo,
            "price_max": hi,
            "v": self.v,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
        }


def product_from_dict(d: Mapping[str, Any]) -> Product:
    """The inverse of :meth:`Product.definition` (plus ``v`` and times when present), for
    what the adapters stored: trusted input, not validated again."""
    return Product(
        id=str(d["id"]),
        owner=str(d.get("owner", "")),
        name=str(d["name"]),
        skus=tuple(
            Sku(str(s["id"]), tuple((str(k), str(v)) for k, v in dict(s.get("attrs") or {}).items()), int(s["price"]),
                str(s.get("image", "")), "archived" if s.get("state") == "archived" else "active", int(s.get("limit") or 0),
                _gift_from(s.get("gift")))
            for s in d.get("skus", [])
        ),
        description=str(d.get("description", "")),
        category=str(d.get("category", "")),
        image=str(d.get("image", "")),
        state="archived" if d.get("state") == "archived" else "active",
        v=int(d.get("v", 0)),
        created_ms=int(d.get("created_ms", 0)),
        updated_ms=int(d.get("updated_ms", 0)),
    )


def _gift_from(g: Any) -> GiftRule | None:
    if not isinstance(g, Mapping):
        return None
    return GiftRule(int(g["min_qty"]), str(g["sku"]), int(g.get("qty") or 1), str(g.get("product_id") or ""))


def canonical(product: Product) -> str:
    """The stored definition as compact JSON with sorted keys (equal definitions, equal text)."""
    return json.dumps(product.definition(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated product definition as given (``v`` 0), with the stock each SKU was given
    (``stock``; SKUs without a figure are absent: they start at 0 when created)."""

    product: Product
    stock: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------ fields


def _text(v: Any, name: str, *, hi: int, lo: int = 0) -> str:
    if v is None:
        v = ""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)  # YAML and CSV read `size: 42` as a number
    if not isinstance(v, str):
        raise InvalidProduct(name, f"must be text, got {type(v).__name__}")
    v = v.strip()
    if not lo <= len(v) <= hi:
        raise InvalidProduct(name, f"must be {lo}..{hi} characters" if lo else f"must be at most {hi} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in v) or "\x7f" in v:
        raise InvalidProduct(name, "must not hold control characters")
    return str(v)


def _int(v: Any, name: str, *, lo: int, hi: int, what: str) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str) and re.fullmatch(r"-?\d{1,15}", v.strip()):
        v = int(v.strip())  # CSV cells are text
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidProduct(name, f"must be {what}, got {v!r}")
    if not lo <= v <= hi:
        raise InvalidProduct(name, f"must be between {lo} and {hi}, got {v}")
    return v


def check_price(v: Any, name: str = "price") -> int:
    return _int(v, name, lo=0, hi=MAX_PRICE, what="integer cents (1999 for 19.99)")


def check_stock(v: Any, name: str = "stock") -> int:
    return _int(v, name, lo=0, hi=MAX_STOCK, what="a whole number of units")


def check_image(v: Any, name: str = "image") -> str:
    url = _text(v, name, hi=MAX_URL)
    if url and not _URL.match(url):
        raise InvalidProduct(name, "must be an http(s) URL or a path starting with /")
    return url


def check_id(v: Any, name: str) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    problem = ident_problem(v)
    if problem is not None:
        raise InvalidProduct(name, problem)
    return str(v)


def check_owner(v: Any, name: str = "owner") -> str:
    if v is None or v == "":
        return ""
    if not isinstance(v, str) or not _USER.match(v):
        raise InvalidProduct(name, "must be a user id: 1..64 letters, digits and _ @ : - . (not starting with a dot)")
    return v


PRODUCT_FIELDS = frozenset({"id", "owner", "name", "description", "category", "image", "price", "stock", "skus"})
SKU_FIELDS = frozenset({"id", "attrs", "price", "stock", "image", "limit", "gift"})
GIFT_FIELDS = frozenset({"min_qty", "sku", "qty", "product_id"})
MAX_GIFT_QTY = 100


def check_limit(v: Any, name: str = "limit") -> int:
    """A per-user limit: 0 (none) .. ``MAX_QTY`` units."""
    return 0 if v is None else _int(v, name, lo=0, hi=MAX_QTY, what="a whole number of units (0: no limit)")


def check_gift(v: Any, name: str = "gift") -> GiftRule | None:
    """A gift-with-purchase rule ``{min_qty, sku, qty?, product_id?}`` (None: no gift).

    Raises:
        InvalidProduct: naming the bad field.
    """
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise InvalidProduct(name, "must be {min_qty, sku, qty?, product_id?}: buy min_qty of this SKU, get qty of sku free")
    _unknown(v, GIFT_FIELDS, name + ".")
    if v.get("min_qty") is None or v.get("sku") is None:
        raise InvalidProduct(name, "needs min_qty (units of this SKU to buy) and sku (the gift)")
    return GiftRule(
        min_qty=_int(v["min_qty"], name + ".min_qty", lo=1, hi=MAX_QTY, what="a whole number of units"),
        sku=check_id(v["sku"], name + ".sku"),
        qty=1 if v.get("qty") is None else _int(v["qty"], name + ".qty", lo=1, hi=MAX_GIFT_QTY, what="a whole number of units"),
        product_id="" if v.get("product_id") is None else check_id(v["product_id"], name + ".product_id"),
    )


def _unknown(data: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    extra = sorted(str(k) for k in data if k not in known)
    if extra:
        raise InvalidProduct(where + extra[0], f"unknown field (known: {', '.join(sorted(known))})")


def validate_sku(data: Any, *, where: str = "", index: int = 0) -> tuple[Sku, int | None]:
    """One SKU of a definition: ``{id?, attrs?, price, stock?, image?}``; returns the SKU and
    its stock (None when not given). Without ``id`` the id is made from the attribute
    values (``red-M``) when they make a usable id, else ``sku<n>`` (``n`` = ``index + 1``).

    Raises:
        InvalidProduct: naming the field (``where`` is its prefix, e.g. ``skus[2].``).
    """
    if not isinstance(data, Mapping):
        raise InvalidProduct(where.rstrip(".") or "sku", "must be a mapping of fields")
    _unknown(data, SKU_FIELDS, where)
    raw_attrs = data.get("attrs") or {}
    if not isinstance(raw_attrs, Mapping):
        raise InvalidProduct(where + "attrs", "must map option names to values, e.g. {colour: red, size: M}")
    if len(raw_attrs) > MAX_OPTIONS:
        raise InvalidProduct(where + "attrs", f"at most {MAX_OPTIONS} options per product")
    attrs = tuple((_text(k, f"{where}attrs", lo=1, hi=MAX_OPTION_NAME),
                   _text(v, f"{where}attrs.{k}", lo=1, hi=MAX_OPTION_VALUE)) for k, v in raw_attrs.items())
    if data.get("price") is None:
        raise InvalidProduct(where + "price", "is required (integer cents)")
    price = check_price(data["price"], where + "price")
    stock = None if data.get("stock") is None else check_stock(data["stock"], where + "stock")
    image = check_image(data.get("image"), where + "image")
    limit = check_limit(data.get("limit"), where + "limit")
    gift = check_gift(data.get("gift"), where + "gift")
    if data.get("id") is not None:
        sid = check_id(data["id"], where + "id")
    elif not attrs:
        sid = "default"
    else:
        made = "-".join(v for _, v in attrs)
        sid = made if ident_problem(made) is None else f"sku{index + 1}"
    return Sku(sid, attrs, price, image, limit=limit, gift=gift), stock


def check_skus(skus: Sequence[Sku], where: str = "") -> None:
    """The rules a product's SKUs keep together: 1..``MAX_SKUS`` SKUs, unique ids, the same
    option names on every SKU (none: exactly one SKU), each combination of values once.

    Raises:
        InvalidProduct: naming the SKU that breaks a rule.
    """
    if not skus:
        raise InvalidProduct(where + "skus", "a product needs at least one SKU (or a price for a single one)")
    if len(skus) > MAX_SKUS:
        raise InvalidProduct(where + "skus", f"at most {MAX_SKUS} SKUs per product, got {len(skus)}")
    names = [a for a, _ in skus[0].attrs]
    if len(set(names)) != len(names):
        raise InvalidProduct(f"{where}skus[0].attrs", "names an option twice")
    if not names and len(skus) > 1:
        raise InvalidProduct(f"{where}skus[1].attrs", "a product with several SKUs tells them apart by attrs, "
                                                       "e.g. {colour: red}")
    ids: set[str] = set()
    combos: set[tuple[str, ...]] = set()
    for i, s in enumerate(skus):
        if [a for a, _ in s.attrs] != names:
            got = ", ".join(a for a, _ in s.attrs) or "none"
            raise InvalidProduct(f"{where}skus[{i}].attrs", f"must name the options {', '.join(names) or 'none'} "
                                                            f"(in that order), got {got}")
        combo = tuple(v for _, v in s.attrs)
        if combo in combos:
            raise InvalidProduct(f"{where}skus[{i}].attrs", f"{dict(s.attrs)} is already another SKU of this product")
        combos.add(combo)
        if s.id in ids:
            raise InvalidProduct(f"{where}skus[{i}].id", f"duplicate SKU id {s.id!r}: give each SKU its own id")
        ids.add(s.id)


def validate_product(data: Any, *, owner: str = "", where: str = "", default_id: str | None = None) -> Draft:
    """A product definition: ``{id?, owner?, name, description?, category?, image?}`` with
    either ``skus: [{id?, attrs?, price, stock?, image?}, ...]`` or, for a product of one SKU,
    ``price`` (and ``stock``) at the top. ``owner`` in the data wins over the argument (the
    caller decides who may set it); the category is kept lower-case.

    Raises:
        InvalidProduct: naming the first bad field (unknown fields too).
    """
    if not isinstance(data, Mapping):
        raise InvalidProduct(where.rstrip(".") or "product", "must be a mapping of fields")
    _unknown(data, PRODUCT_FIELDS, where)
    if data.get("id") is not None:
        pid = check_id(data["id"], where + "id")
    elif default_id is not None:
        pid = default_id
    else:
        raise InvalidProduct(where + "id", "is required")
    name = _text(data.get("name"), where + "name", lo=1, hi=MAX_NAME)
    desc = _text(data.get("description"), where + "description", hi=MAX_DESCRIPTION)
    category = _text(data.get("category"), where + "category", hi=MAX_CATEGORY).lower()
    image = check_image(data.get("image"), where + "image")
    own = check_owner(data["owner"], where + "owner") if "owner" in data else owner
    raw_skus = data.get("skus")
    stock: dict[str, int] = {}
    if raw_skus is not None:
        if data.get("price") is not None or data.get("stock") is not None:
            key = "price" if data.get("price") is not None else "stock"
            raise InvalidProduct(where + key, "give price and stock per SKU when skus are listed")
        if not isinstance(raw_skus, list):
            raise InvalidProduct(where + "skus", "must be a list of SKUs")
        skus = []
        for i, raw in enumerate(raw_skus):
            sku, n = validate_sku(raw, where=f"{where}skus[{i}].", index=i)
            skus.append(sku)
            if n is not None:
                stock[sku.id] = n
    else:
        if data.get("price") is None:
            raise InvalidProduct(where + "price", "is required (integer cents), or list skus with a price each")
        skus = [Sku("default", (), check_price(data["price"], where + "price"))]
        if data.get("stock") is not None:
            stock["default"] = check_stock(data["stock"], where + "stock")
    check_skus(skus, where)
    return Draft(Product(pid, own, name, tuple(skus), desc, category, image), stock)


# ------------------------------------------------------------------------------ changes

PATCH_FIELDS = frozenset({"name", "description", "category", "image", "state"})
SKU_PATCH_FIELDS = frozenset({"price", "image", "stock", "add_stock", "state", "limit", "gift"})


def patch_product(product: Product, data: Any) -> Product:
    """``product`` with ``{name?, description?, category?, image?, state?}`` applied (``v``
    unchanged: the store bumps it). ``state`` moves by :data:`STATE_STEPS`.

    Raises:
        InvalidProduct: an unknown or bad field, or nothing to change.
        Conflict: (``illegal_transition``) not reachable from the product's state.
    """
    if not isinstance(data, Mapping) or not data:
        raise InvalidProduct("", "the body must be an object with at least one of: " + ", ".join(sorted(PATCH_FIELDS)))
    _unknown(data, PATCH_FIELDS, "")
    p = product
    if "name" in data:
        p = replace(p, name=_text(data["name"], "name", lo=1, hi=MAX_NAME))
    if "description" in data:
        p = replace(p, description=_text(data["description"], "description", hi=MAX_DESCRIPTION))
    if "category" in data:
        p = replace(p, category=_text(data["category"], "category", hi=MAX_CATEGORY).lower())
    if "image" in data:
        p = replace(p, image=check_image(data["image"]))
    if "state" in data:
        p = replace(p, state=move_state(p.state, _state(data["state"]), what=f"product {p.id!r}"))
    return p


@dataclass(frozen=True, slots=True)
class SkuPatch:
    """A change of one SKU: a new price, image or state (None: unchanged), and at most one
    stock change: ``stock`` (set the available units) or ``add_stock`` (add, or take out
    with a negative figure)."""

    price: int | None = None
    image: str | None = None
    state: ProductState | None = None
    stock: int | None = None
    add_stock: int | None = None
    limit: int | None = None
    gift: GiftRule | None = None
    drop_gift: bool = False  # ``gift: null``: the SKU no longer has a gift

    @property
    def changes_definition(self) -> bool:
        return (self.price is not None or self.image is not None or self.state is not None or self.limit is not None
                or self.gift is not None or self.drop_gift)


def validate_sku_patch(data: Any) -> SkuPatch:
    """``{price?, image?, state?, stock?, add_stock?, limit?, gift?}`` (``stock`` and
    ``add_stock`` exclusive; ``gift: null`` removes the gift).

    Raises:
        InvalidProduct: an unknown or bad field, both stock forms, or nothing to change.
    """
    if not isinstance(data, Mapping) or not data:
        raise InvalidProduct("", "the body must be an object with at least one of: " + ", ".join(sorted(SKU_PATCH_FIELDS)))
    _unknown(data, SKU_PATCH_FIELDS, "")
    if data.get("stock") is not None and data.get("add_stock") is not None:
        raise InvalidProduct("add_stock", "give either stock (set the available units) or add_stock (a change), not both")
    return SkuPatch(
        price=None if data.get("price") is None else check_price(data["price"]),
        image=None if data.get("image") is None else check_image(data["image"]),
        state=None if data.get("state") is None else _state(data["state"]),
        stock=None if data.get("stock") is None else check_stock(data["stock"]),
        add_stock=None if data.get("add_stock") is None else _int(data["add_stock"], "add_stock", lo=-MAX_STOCK, hi=MAX_STOCK,
                                                                   what="a whole number of units (negative takes out)"),
        limit=None if data.get("limit") is None else check_limit(data["limit"]),
        gift=check_gift(data.get("gift")),
        drop_gift="gift" in data and data["gift"] is None,
    )


def patch_sku(product: Product, sku_id: str, patch: SkuPatch) -> Product:
    """``product`` with one SKU's price, image or state changed.

    Raises:
        KeyError: no such SKU. Conflict: an illegal state step.
    """
    sku = product.sku(sku_id)
    if sku is None:
        raise KeyError(sku_id)
    new = replace(
        sku,
        price=sku.price if patch.price is None else patch.price,
        image=sku.image if patch.image is None else patch.image,
        state=sku.state if patch.state is None else move_state(sku.state, patch.state, what=f"SKU {sku_id!r}"),
        limit=sku.limit if patch.limit is None else patch.limit,
        gift=None if patch.drop_gift else (sku.gift if patch.gift is None else patch.gift),
    )
    return replace(product, skus=tuple(new if s.id == sku_id else s for s in product.skus))


def add_sku(product: Product, sku: Sku) -> Product:
    """``product`` with one more SKU.

    Raises:
        InvalidProduct: the SKU breaks :func:`check_skus` with the others (its id or its
            attrs are taken, its options differ) or the product's only SKU has no attrs.
    """
    skus = (*product.skus, sku)
    check_skus(skus)
    return replace(product, skus=skus)


def _state(v: Any) -> ProductState:
    if v not in ("active", "archived"):
        raise InvalidProduct("state", "must be active or archived")
    return "archived" if v == "archived" else "active"


def move_state(state: ProductState, want: ProductState, *, what: str) -> ProductState:
    """``want`` reached from ``state`` through :data:`STATE_STEPS` (staying put is allowed).

    Raises:
        Conflict: (``illegal_transition``) not reachable (cannot happen with two states, kept
            so that a third state is a table row, not a code change).
    """
    if want == state:
        return state
    for (frm, _), to in STATE_STEPS.items():
        if frm == state and to == want:
            return to
    raise Conflict(f"{what} cannot become {want} when {state}", code="illegal_transition")


@dataclass(frozen=True, slots=True)
class Change:
    """What storing ``new`` over ``old`` (None: create) would change, in words a person
    reads (``--dry-run``), and whether anything changes at all. ``stock`` lists
    ``(sku, available now or None, available after)`` for the SKUs whose stock is set."""

    product_id: str
    created: bool
    lines: tuple[str, ...]
    stock: tuple[tuple[str, int | None, int], ...] = ()

    @property
    def changed(self) -> bool:
        return self.created or bool(self.lines) or bool(self.stock)


def plan_change(old: Product | None, draft: Draft, *, available: Mapping[str, int] | None = None,
                set_stock: bool = False) -> tuple[Product, Change]:
    """The product to store when ``draft`` is loaded over ``old`` and what changes.

    SKUs of ``old`` the draft does not list are kept as they are; an archived product or SKU
    the draft lists is restored. A new SKU starts with the draft's stock (0 when none);
    an existing SKU's stock is set to the draft's figure only with ``set_stock`` (a file
    loaded again must not put back units sold meanwhile). ``available`` is the SKUs'
    stock now (for the report).
    """
    new = draft.product
    if old is None:
        stock = tuple((s.id, None, draft.stock.get(s.id, 0)) for s in new.skus)
        return new, Change(new.id, True, (f"create {_describe(new)}",), stock)
    have = available or {}
    lines: list[str] = []
    for name in ("owner", "name", "description", "category", "image", "state"):
        a, b = getattr(old, name), (getattr(new, name) if name != "state" else "active")
        if a != b:
            lines.append(f"{name}: {a!r} -> {b!r}")
    merged: list[Sku] = []
    stock_moves: list[tuple[str, int | None, int]] = []
    listed = {s.id: s for s in new.skus}
    for s in old.skus:
        n = listed.pop(s.id, None)
        if n is None:
            merged.append(s)
            continue
        if dict(n.attrs) != dict(s.attrs):
            lines.append(f"sku {s.id}: attrs {dict(s.attrs)} -> {dict(n.attrs)}")
        if n.price != s.price:
            lines.append(f"sku {s.id}: price {s.price} -> {n.price}")
        if n.image != s.image:
            lines.append(f"sku {s.id}: image {s.image!r} -> {n.image!r}")
        if n.limit != s.limit:
            lines.append(f"sku {s.id}: limit {s.limit} -> {n.limit}")
        if n.gift != s.gift:
            lines.append(f"sku {s.id}: gift {s.gift.to_dict() if s.gift else None} -> {n.gift.to_dict() if n.gift else None}")
        if s.state != "active":
            lines.append(f"sku {s.id}: archived -> active")
        merged.append(replace(n, state="active"))
        if s.id in draft.stock and set_stock and have.get(s.id) != draft.stock[s.id]:
            stock_moves.append((s.id, have.get(s.id), draft.stock[s.id]))
    for s in new.skus:
        if s.id in listed:
            merged.append(s)
            lines.append(f"sku {s.id}: new, {_sku_words(s)}")
            stock_moves.append((s.id, None, draft.stock.get(s.id, 0)))
    product = replace(old, owner=new.owner, name=new.name, description=new.description, category=new.category,
                      image=new.image, state="active", skus=tuple(merged))
    check_skus(product.skus)
    return product, Change(new.id, False, tuple(lines), tuple(stock_moves))


def _sku_words(s: Sku) -> str:
    attrs = ", ".join(f"{k}={v}" for k, v in s.attrs)
    return f"{attrs + ', ' if attrs else ''}{s.price} cents"


def _describe(p: Product) -> str:
    return f"{p.name!r} with {len(p.skus)} SKU(s) ({'; '.join(f'{s.id}: {_sku_words(s)}' for s in p.skus)})"


def may_manage(owner: str, *, user: str, role: str) -> bool:
    """Who changes a product: ops any; a host only its own (``owner == user``); platform
    products (``owner == ""``) only ops."""
    return role == "ops" or (role == "host" and owner != "" and owner == user)


# ------------------------------------------------------------------------------ stock

Reject = Literal["no_product", "archived", "no_sku", "sku_archived", "price_changed", "sold_out", "limit_reached"]
REJECTS: frozenset[str] = frozenset(get_args(Reject))
HoldState = Literal["reserved", "paid", "cancelled"]
HoldStep = Literal["pay", "release"]
ReleaseOutcome = Literal["released", "already_released", "already_paid"]
PayOutcome = Literal["paid", "already_paid", "already_cancelled", "expired"]

HOLD_STEPS: dict[tuple[HoldState, HoldStep], HoldState] = {
    ("reserved", "pay"): "paid",
    ("reserved", "release"): "cancelled",
}
# what a step answers when the hold already left ``reserved``
_HOLD_DONE: dict[tuple[HoldState, HoldStep], str] = {
    ("paid", "pay"): "already_paid",
    ("cancelled", "pay"): "already_cancelled",
    ("cancelled", "release"): "already_released",
    ("paid", "release"): "already_paid",
}


@dataclass(frozen=True, slots=True)
class SkuStock:
    """One SKU's units (see the module docstring for the invariant)."""

    available: int = 0
    reserved: int = 0
    sold: int = 0
    stocked: int = 0

    @property
    def conserved(self) -> bool:
        return self.stocked == self.available + self.reserved + self.sold and min(self.available, self.reserved, self.sold) >= 0

    def to_dict(self) -> dict[str, int]:
        return {"available": self.available, "reserved": self.reserved, "sold": self.sold, "stocked": self.stocked}


@dataclass(frozen=True, slots=True)
class Hold:
    """Units of one or more SKUs of one product held for one order (``id``, shared by the
    holds of every product of a cart order)."""

    id: str
    product_id: str
    user: str
    lines: tuple[tuple[str, int], ...]
    state: HoldState
    pay_by_ms: int
    created_ms: int = 0


def merge_lines(lines: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """One ``(sku, qty)`` per SKU, quantities added, in first-seen order.

    Raises:
        BadFrame: (``invalid``) no line, more than ``MAX_LINES`` SKUs, a qty outside
            1..``MAX_QTY`` (also once added up) or an unusable SKU id.
    """
    out: dict[str, int] = {}
    for sku, qty in lines:
        if ident_problem(sku) is not None:
            raise BadFrame(f"'sku' {ident_problem(sku)}", code="invalid")
        if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
            raise BadFrame(f"qty of {sku} must be an integer in 1..{MAX_QTY}", code="invalid")
        out[sku] = out.get(sku, 0) + qty
        if out[sku] > MAX_QTY:
            raise BadFrame(f"qty of {sku} adds up to more than {MAX_QTY}", code="invalid")
    if not out or len(out) > MAX_LINES:
        raise BadFrame(f"a hold takes 1..{MAX_LINES} SKUs", code="invalid")
    return tuple(out.items())


def decide_reserve(product_state: ProductState | None, skus: Mapping[str, tuple[bool, int]],
                   lines: Sequence[tuple[str, int]], *, limits: Mapping[str, int] | None = None,
                   bought: Mapping[str, int] | None = None, prices: Mapping[str, int] | None = None,
                   priced: Mapping[str, int] | None = None) -> tuple[Reject, str | None] | None:
    """None means every line can be reserved now, all together; else the reason and the
    SKU it concerns (None for the product). ``product_state`` None: no such product;
    ``skus``: sku -> (archived, available); ``lines`` merged (:func:`merge_lines`);
    ``limits``: sku -> the per-user limit (absent or 0: none); ``bought``: sku -> the units
    the user holds or bought already; ``prices``: sku -> its price now; ``priced``: sku ->
    the price the caller priced the line at (absent: not checked).

    Order of checks: the product, then each line in order: unknown SKU, archived SKU, a
    price that is no longer the one the caller priced at (``price_changed``), not enough
    available units, the user's limit. The Lua twin is ``catalog_reserve.lua``.
    """
    if product_state is None:
        return "no_product", None
    if product_state == "archived":
        return "archived", None
    for sku, qty in lines:
        known = skus.get(sku)
        if known is None:
            return "no_sku", sku
        archived, available = known
        if archived:
            return "sku_archived", sku
        if priced is not None and sku in priced and (prices or {}).get(sku) != priced[sku]:
            return "price_changed", sku
        if qty > available:
            return "sold_out", sku
        limit = (limits or {}).get(sku, 0)
        if limit > 0 and (bought or {}).get(sku, 0) + qty > limit:
            return "limit_reached", sku
    return None


def hold_step(state: HoldState, step: HoldStep, *, now_ms: int = 0, pay_by_ms: int = 0) -> tuple[HoldState, str]:
    """The hold's state after ``step`` and the outcome word (:data:`ReleaseOutcome`,
    :data:`PayOutcome`). Paying after ``pay_by_ms`` answers ``expired`` and changes nothing
    (the time-out releases it). Never raises: every pair has an answer."""
    if (state, step) in _HOLD_DONE:
        return state, _HOLD_DONE[(state, step)]
    if step == "pay" and now_ms > pay_by_ms:
        return state, "expired"
    to = HOLD_STEPS[(state, step)]
    return to, "paid" if step == "pay" else "released"


def decide_stock(stock: SkuStock, *, set_to: int | None = None, add: int | None = None) -> SkuStock | None:
    """The SKU's units after the owner sets its available stock to ``set_to`` or adds
    ``add`` (negative takes out); None when that would leave fewer than 0 available or more
    than ``MAX_STOCK``. ``stocked`` moves by the same amount as ``available``. The Lua twin
    is ``catalog_stock.lua``."""
    target = set_to if set_to is not None else stock.available + (add or 0)
    if not 0 <= target <= MAX_STOCK:
        return None
    delta = target - stock.available
    return replace(stock, available=target, stocked=stock.stocked + delta)


# ------------------------------------------------------------------------------ files


def load_catalog_file(path: str | Path, *, owner: str = "") -> list[Draft]:
    """Read a catalogue file: ``.csv`` (one row per SKU) or ``.yaml``/``.yml``/``.json``
    (``products: [...]``, a list, or one product). Returns the validated drafts in file
    order; a product without ``owner`` gets ``owner``. See ``docs/commerce.md`` for both
    formats.

    Raises:
        InvalidProduct: the file cannot be read, or an entry is invalid; ``field`` names
            where (``row 4 (tea-set/red-M): price``, ``products[1].skus[0].price``).
    """
    return _read(path, owner, None)


def check_catalog_file(path: str | Path, *, owner: str = "") -> tuple[list[Draft], list[InvalidProduct]]:
    """As :func:`load_catalog_file`, but every bad row or product is collected instead of
    stopping at the first (a file that cannot be read or has a bad header is one error).
    The drafts are those that validated."""
    errors: list[InvalidProduct] = []
    try:
        drafts = _read(path, owner, errors)
    except InvalidProduct as exc:
        return [], [exc]
    return drafts, errors


def _read(path: str | Path, owner: str, errors: list[InvalidProduct] | None) -> list[Draft]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidProduct("file", f"cannot read {str(p)!r}: {exc}") from exc
    if p.suffix.lower() == ".csv":
        return parse_catalog_csv(text, owner=owner, errors=errors)
    return parse_catalog_yaml(text, owner=owner, errors=errors)


def parse_catalog_yaml(text: str, *, owner: str = "", errors: list[InvalidProduct] | None = None) -> list[Draft]:
    """A YAML (or JSON) catalogue document; see :func:`load_catalog_file`. With ``errors``,
    a bad product is added there and the others are still read.

    Raises:
        InvalidProduct: it does not parse, has the wrong shape, repeats a product id, or a
            product is invalid (``products[i].<field>``).
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidProduct("file", f"does not parse as YAML: {exc}") from exc
    if isinstance(doc, Mapping) and "products" in doc:
        extra = sorted(str(k) for k in doc if k != "products")
        if extra:
            raise InvalidProduct(extra[0], "unknown top-level field (expected only products)")
        items = doc["products"]
    elif isinstance(doc, Mapping):
        items = [doc]
    else:
        items = doc
    if not isinstance(items, list) or not items:
        raise InvalidProduct("products", "must be a non-empty list of products")
    out: list[Draft] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"products[{i}]."
        try:
            d = validate_product(item, where=where, owner=owner)
            if d.product.id in seen:
                raise InvalidProduct(where + "id", f"product {d.product.id!r} is listed twice in this file")
        except InvalidProduct as exc:
            if errors is None:
                raise
            errors.append(exc)
            continue
        seen.add(d.product.id)
        out.append(d)
    return out


CSV_PRODUCT_COLUMNS = ("product_id", "name", "description", "category", "image", "owner")
CSV_SKU_COLUMNS = ("sku", "price", "stock", "sku_image")
OPTION_PREFIX = "option:"


def parse_catalog_csv(text: str, *, owner: str = "", errors: list[InvalidProduct] | None = None) -> list[Draft]:
    """A CSV catalogue: a header row, then one row per SKU. Columns: ``product_id``,
    ``name`` (required), ``description``, ``category``, ``image``, ``owner`` (product
    fields: the first non-empty cell counts, a different one later is an error), ``sku``,
    ``price`` (required), ``stock``, ``sku_image``, and one ``option:<name>`` column per
    option (``option:colour``, ``option:size``). Rows are numbered as a spreadsheet shows
    them (the header is row 1). A product without ``owner`` gets ``owner``. With
    ``errors``, each bad row (and each product whose rows do not make a valid product) is
    added there and the rest is still read; a bad header still raises.

    Raises:
        InvalidProduct: an unknown or missing column, or a bad row (``row 4
            (tea-set/red-M): price``).
    """
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InvalidProduct("file", "is empty: expected a header row (product_id,name,sku,price,stock,...)") from None
    except csv.Error as exc:
        raise InvalidProduct("row 1", f"is not CSV: {exc}") from exc
    known = set(CSV_PRODUCT_COLUMNS) | set(CSV_SKU_COLUMNS)
    for h in header:
        if h not in known and not (h.startswith(OPTION_PREFIX) and len(h) > len(OPTION_PREFIX)):
            raise InvalidProduct("row 1", f"unknown column {h!r} (known: {', '.join(sorted(known))}, option:<name>)")
    if len(set(header)) != len(header):
        raise InvalidProduct("row 1", "a column is named twice")
    for need in ("product_id", "name", "price"):
        if need not in header:
            raise InvalidProduct("row 1", f"the column {need!r} is required")
    sheet = _Sheet(header)
    try:
        for n, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            try:
                sheet.row(n, cells)
            except InvalidProduct as exc:
                if errors is None:
                    raise
                errors.append(exc)
    except csv.Error as exc:
        raise InvalidProduct(f"row {reader.line_num}", f"is not CSV: {exc}") from exc
    if not sheet.products and not errors:
        raise InvalidProduct("file", "has a header but no product rows")
    out = []
    for pid, prod in sheet.products.items():
        if pid in sheet.broken:
            continue  # its bad row is reported already
        try:
            out.append(validate_product(prod, owner=owner))
        except InvalidProduct as exc:
            err = sheet.located(pid, exc)
            if errors is None:
                raise err from exc
            errors.append(err)
    return out


class _Sheet:
    """The rows of a CSV catalogue gathered per product (:func:`parse_catalog_csv`)."""

    def __init__(self, header: list[str]) -> None:
        self.header = header
        self.options = [h for h in header if h.startswith(OPTION_PREFIX)]
        self.products: dict[str, dict[str, Any]] = {}
        self.first_row: dict[str, dict[str, int]] = {}  # product -> field -> the row that gave it
        self.rows: dict[str, list[int]] = {}  # product -> its SKUs' rows
        self.labels: dict[str, list[str]] = {}  # product -> each row's SKU id (given or made from its options)
        self.broken: set[str] = set()  # products with a bad row

    def row(self, n: int, cells: list[str]) -> None:
        """Add row ``n``. Raises: InvalidProduct naming the row."""
        if len(cells) != len(self.header):
            raise InvalidProduct(f"row {n}", f"has {len(cells)} cells, the header has {len(self.header)}")
        row = dict(zip(self.header, (c.strip() for c in cells), strict=True))
        pid = row["product_id"]
        attrs = {o[len(OPTION_PREFIX):]: row[o] for o in self.options if row[o] != ""}
        made_id = "-".join(attrs.values()) or "default"
        where = f"row {n} ({pid or '?'}/{row.get('sku') or made_id}): "
        if not pid:
            raise InvalidProduct(f"row {n}", "product_id is empty")
        check_id(pid, where + "product_id")
        try:
            prod = self.products.setdefault(pid, {"id": pid, "skus": []})
            seen_at = self.first_row.setdefault(pid, {})
            for col in CSV_PRODUCT_COLUMNS[1:]:
                if col not in row or row[col] == "":
                    continue
                if col in prod and prod[col] != row[col]:
                    raise InvalidProduct(where + col, f"{row[col]!r} differs from {prod[col]!r} on row {seen_at[col]} "
                                                      f"(product fields must agree on every row of a product)")
                prod.setdefault(col, row[col])
                seen_at.setdefault(col, n)
            sku: dict[str, Any] = {"price": row["price"] or None}
            if row.get("sku"):
                sku["id"] = row["sku"]
            if row.get("stock"):
                sku["stock"] = row["stock"]
            if row.get("sku_image"):
                sku["image"] = row["sku_image"]
            if attrs:
                sku["attrs"] = attrs
            try:
                made, _ = validate_sku(sku, where="", index=len(prod["skus"]))
            except InvalidProduct as exc:
                raise InvalidProduct(where + exc.field, exc.problem) from exc
        except InvalidProduct:
            self.broken.add(pid)
            raise
        prod["skus"].append(sku)
        self.labels.setdefault(pid, []).append(made.id)
        self.rows.setdefault(pid, []).append(n)

    def located(self, pid: str, exc: InvalidProduct) -> InvalidProduct:
        """``exc`` (from validating the whole product) naming the spreadsheet row."""
        m = re.match(r"skus\[(\d+)\]\.(.*)", exc.field)
        if m:
            i = int(m.group(1))
            return InvalidProduct(f"row {self.rows[pid][i]} ({pid}/{self.labels[pid][i]}): {m.group(2)}", exc.problem)
        return InvalidProduct(f"rows {', '.join(map(str, self.rows[pid]))} ({pid}): {exc.field}", exc.problem)
