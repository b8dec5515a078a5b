"""The room's product list (the shopping bag, 小黄车): what a host shows in a room, in order,
and which item is being explained now (讲解中).

No I/O. :mod:`livecommerce.bag_redis` stores one list per room (``{room:ID}:bag``) with a
compare-and-set on its version; the gateway (``gateway/bag.py``) applies the host's
changes with :func:`apply`, publishes ``bag.changed`` with the whole list, and keeps a
node-local copy of each room it serves for ``welcome``.

A list is small (at most :data:`MAX_ITEMS` products) and every change carries all of it with
a version ``v`` that grows by one per change, so a client that missed an event simply takes
the latest one it sees (a lower or equal ``v`` is old news). Each item is the product's
summary at the time of the change (name, image, price range, SKUs on offer); a change of
the product refreshes it in every list that shows it, and archiving the product takes it
off every list.

Changes (:data:`Op`), each an answer with no surprise for a retry:

* ``add`` a product (at ``position``, default the end); already listed: no change;
* ``remove`` a product; not listed: no change; removing the item being explained clears it;
* ``reorder``: the new order of exactly the listed products;
* ``explain`` one listed product, or ``None`` to clear the marker;
* ``replace`` the whole list (and the marker) at once;
* ``refresh`` a listed product's summary; ``drop`` it (archived).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .catalog import Product
from .errors import BadFrame, Conflict
from .flash_sale import ident_problem

MAX_ITEMS = 100


@dataclass(frozen=True, slots=True)
class BagItem:
    """One product as a room's list shows it (prices in cents over its active SKUs)."""

    product_id: str
    name: str
    image: str
    price_min: int
    price_max: int
    skus: int

    def to_dict(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "name": self.name, "image": self.image, "price_min": self.price_min,
                "price_max": self.price_max, "skus": self.skus}


def item_of(product: Product) -> BagItem:
    """The summary a list shows of ``product`` (the product's image, else its first SKU's)."""
    lo, hi = product.price_range
    image = product.image or next((s.image for s in product.active_skus if s.image), "")
    return BagItem(product.id, product.name, image, lo, hi, len(product.active_skus))


@dataclass(frozen=True, slots=True)
class Bag:
    """A room's list: ``items`` in order, the item being explained (or None), the version."""

    items: tuple[BagItem, ...] = ()
    explaining: str | None = None
    v: int = 0

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(i.product_id for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``welcome``'s ``bag`` and ``bag.changed``'s data."""
        return {"items": [i.to_dict() for i in self.items], "explaining": self.explaining, "v": self.v}


EMPTY = Bag()


def bag_from_dict(d: Mapping[str, Any]) -> Bag:
    """The inverse of :meth:`Bag.to_dict` for what we stored or published ourselves.

    Raises:
        ValueError: not a list of that shape (KeyError/TypeError are turned into it).
    """
    try:
        items = tuple(BagItem(str(i["product_id"]), str(i["name"]), str(i.get("image", "")), int(i["price_min"]),
                              int(i["price_max"]), int(i.get("skus", 1))) for i in d["items"])
        ex = d.get("explaining")
        return Bag(items, None if ex is None else str(ex), int(d["v"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a product list: {exc!r}") from exc


# ------------------------------------------------------------------------------ changes


@dataclass(frozen=True, slots=True)
class Add:
    item: BagItem
    position: int | None = None


@dataclass(frozen=True, slots=True)
class Remove:
    product_id: str


@dataclass(frozen=True, slots=True)
class Reorder:
    product_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Explain:
    product_id: str | None


@dataclass(frozen=True, slots=True)
class Replace:
    items: tuple[BagItem, ...]
    explaining: str | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    item: BagItem


@dataclass(frozen=True, slots=True)
class Drop:
    product_id: str


Op = Add | Remove | Reorder | Explain | Replace | Refresh | Drop


def apply(bag: Bag, op: Op) -> Bag:
    """The list after ``op`` (same ``v``: the store sets the next one). An op that changes
    nothing returns ``bag`` itself.

    Raises:
        Conflict: ``bag_full`` (adding past :data:`MAX_ITEMS`); ``not_listed`` (explaining a
            product the list does not show); ``bag_changed`` (a reorder that does not name
            exactly the listed products: the list changed since the caller read it).
        BadFrame: (``invalid``) a bad position, a product twice in a replacement, or a
            marker on a product the replacement does not list.
    """
    items = list(bag.items)
    ids = bag.ids
    if isinstance(op, Add):
        if op.item.product_id in ids:
            return bag
        if len(items) >= MAX_ITEMS:
            raise Conflict(f"the list holds {MAX_ITEMS} products, the most it may: remove one first", code="bag_full")
        pos = len(items) if op.position is None else op.position
        if pos < 0:
            raise BadFrame("'position' must be 0 or more (0 is the top)", code="invalid")
        items.insert(min(pos, len(items)), op.item)
        return Bag(tuple(items), bag.explaining, bag.v)
    if isinstance(op, (Remove, Drop)):
        if op.product_id not in ids:
            return bag
        explaining = None if bag.explaining == op.product_id else bag.explaining
        return Bag(tuple(i for i in items if i.product_id != op.product_id), explaining, bag.v)
    if isinstance(op, Reorder):
        if sorted(op.product_ids) != sorted(ids) or len(set(op.product_ids)) != len(op.product_ids):
            raise Conflict(f"the order must name each listed product once; the list is now {list(ids)}",
                           code="bag_changed")
        if tuple(op.product_ids) == ids:
            return bag
        by_id = {i.product_id: i for i in items}
        return Bag(tuple(by_id[p] for p in op.product_ids), bag.explaining, bag.v)
    if isinstance(op, Explain):
        if op.product_id is not None and op.product_id not in ids:
            raise Conflict(f"product {op.product_id!r} is not in this room's list: add it first", code="not_listed")
        return bag if op.product_id == bag.explaining else Bag(bag.items, op.product_id, bag.v)
    if isinstance(op, Replace):
        new_ids = [i.product_id for i in op.items]
        if len(set(new_ids)) != len(new_ids):
            raise BadFrame("'product_ids' names a product twice", code="invalid")
        if len(new_ids) > MAX_ITEMS:
            raise BadFrame(f"'product_ids' may name at most {MAX_ITEMS} products", code="invalid")
        if op.explaining is not None and op.explaining not in new_ids:
            raise BadFrame("'explaining' must be one of 'product_ids' (or null)", code="invalid")
        new = Bag(op.items, op.explaining, bag.v)
        return bag if new == bag else new
    if isinstance(op, Refresh):
        if op.item.product_id not in ids:
            return bag
        new = Bag(tuple(op.item if i.product_id == op.item.product_id else i for i in items), bag.explaining, bag.v)
        return bag if new == bag else new
    raise TypeError(f"not a list change: {op!r}")


# ------------------------------------------------------------------------------ bodies


def product_id_of(v: Any, name: str = "product_id") -> str:
    """Raises:
    BadFrame: (``invalid``) not a product id.
    """
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    problem = ident_problem(v)
    if problem is not None:
        raise BadFrame(f"'{name}' {problem}", code="invalid")
    return str(v)


def product_ids_of(v: Any, name: str = "product_ids") -> tuple[str, ...]:
    """Raises:
    BadFrame: (``invalid``) not a list of at most :data:`MAX_ITEMS` product ids.
    """
    if not isinstance(v, list) or len(v) > MAX_ITEMS:
        raise BadFrame(f"'{name}' must be a list of at most {MAX_ITEMS} product ids", code="invalid")
    return tuple(product_id_of(x, f"{name}[{i}]") for i, x in enumerate(v))


def optional_product_id(d: Mapping[str, Any], name: str = "product_id") -> str | None:
    """``d[name]``: a product id, or None when null (the key must be there).

    Raises:
        BadFrame: (``invalid``) missing, or neither null nor a product id.
    """
    if name not in d:
        raise BadFrame(f"'{name}' is required (null clears it)", code="invalid")
    return None if d[name] is None else product_id_of(d[name], name)


def position_of(d: Mapping[str, Any]) -> int | None:
    v = d.get("position")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ITEMS:
        raise BadFrame(f"'position' must be an integer in 0..{MAX_ITEMS} (0 is the top)", code="invalid")
    return v
