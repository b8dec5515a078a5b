"""Gifts: the catalogue, combo rules and the per-tick coalescing of gift broadcasts.

No I/O beyond reading the catalogue file; clocks and ids are arguments.

* **Catalogue.** A YAML file (``LC_GIFT_CATALOGUE``, default the packaged
  ``livecommerce/data/gifts.yaml``): ``gifts: [{id, name, price, tier}]``, price in coins
  (>= 1), animation tier 1..4. :func:`parse_catalogue` validates it all at start-up.
* **Combos.** The same gift from the same user in the same room, repeated within
  :data:`COMBO_WINDOW_MS` of the previous one, grows one combo (one ``combo_id``, a running
  ``total`` of units) instead of starting a new animation. A client may name the combo
  (``combo_id``): a different id than the running one starts a new combo. :func:`next_combo`
  is the rule; ``wallet_gift.lua`` is its atomic twin (it runs in the same script as the
  wallet debit, so two nodes serving one user agree on the total).
* **Coalescing.** Gift sends are not broadcast one by one: :class:`GiftTally` sums them per
  ``(room, user, gift, combo)`` on a node, and each tick the node publishes one ``gift``
  event per combo that moved, carrying the tick's ``count`` (a delta) and the combo's
  running ``total``. A thousand taps a second become at most 20 events a second per combo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, NotFound

COMBO_WINDOW_MS = 3000
TIERS = range(1, 5)
MAX_PRICE = 1_000_000


@dataclass(frozen=True, slots=True)
class GiftSpec:
    """One catalogue entry: ``price`` coins per unit, animation ``tier`` 1..4."""

    id: str
    name: str
    price: int
    tier: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "price": self.price, "tier": self.tier}


def _valid_id(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 64 and all(c.isalnum() or c in "-_." for c in v)


class Catalogue:
    """The gifts on offer, by id (read-only once built)."""

    __slots__ = ("_by_id",)

    def __init__(self, gifts: list[GiftSpec]) -> None:
        self._by_id = {g.id: g for g in gifts}

    def get(self, gift_id: str) -> GiftSpec:
        """Raises:
        NotFound: (``unknown_gift``) no such gift in the catalogue.
        """
        g = self._by_id.get(gift_id)
        if g is None:
            raise NotFound(f"no gift {gift_id!r} in the catalogue", code="unknown_gift")
        return g

    def __iter__(self) -> Iterator[GiftSpec]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)


def parse_catalogue(text: str, *, source: str = "gift catalogue") -> Catalogue:
    """Build a catalogue from YAML text.

    Raises:
        ConfigError: not YAML, no ``gifts`` list, a bad or duplicate entry (the message
            names the entry and the field).
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
    items = doc.get("gifts") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: expected a non-empty 'gifts:' list")
    out: list[GiftSpec] = []
    seen: set[str] = set()
    for i, g in enumerate(items):
        where = f"{source}: gifts[{i}]"
        if not isinstance(g, dict):
            raise ConfigError(f"{where} must be a map with id, name, price, tier")
        gid, name, price, tier = g.get("id"), g.get("name"), g.get("price"), g.get("tier", 1)
        if not isinstance(gid, str) or not _valid_id(gid):
            raise ConfigError(f"{where}.id must be 1..64 letters, digits, - _ .")
        if gid in seen:
            raise ConfigError(f"{where}.id {gid!r} is listed twice")
        if not isinstance(name, str) or not 0 < len(name) <= 100:
            raise ConfigError(f"{where}.name must be 1..100 characters")
        if isinstance(price, bool) or not isinstance(price, int) or not 1 <= price <= MAX_PRICE:
            raise ConfigError(f"{where}.price must be an integer number of coins in 1..{MAX_PRICE}")
        if isinstance(tier, bool) or not isinstance(tier, int) or tier not in TIERS:
            raise ConfigError(f"{where}.tier must be 1..4")
        seen.add(gid)
        out.append(GiftSpec(gid, name, price, tier))
    return Catalogue(out)


def load_catalogue(path: str = "") -> Catalogue:
    """The catalogue at ``path``, or the packaged one when empty.

    Raises:
        ConfigError: unreadable file or bad content (see :func:`parse_catalogue`).
    """
    try:
        text = (
            Path(path).read_text(encoding="utf-8")
            if path
            else (files("livecommerce") / "data" / "gifts.yaml").read_text(encoding="utf-8")
        )
    except OSError as exc:
        raise ConfigError(f"cannot read the gift catalogue {path!r}: {exc.strerror}") from exc
    return parse_catalogue(text, source=path or "gifts.yaml")


# ---------------------------------------------------------------- combos


@dataclass(frozen=True, slots=True)
class Combo:
    """A running combo: its id and the units sent in it so far."""

    id: str
    total: int


def next_combo(prev: Combo | None, *, count: int, requested: str | None, new_id: str) -> Combo:
    """The combo a send of ``count`` units joins.

    ``prev`` is the user's running combo of this gift in this room, or None when there is
    none within the window. Without a ``requested`` id (None or ``""``, as the script
    reads it), or with the running one, the send extends ``prev``; a different
    ``requested`` id starts a new combo with that id, and with no ``prev`` a new combo gets
    ``requested`` or ``new_id``.
    """
    if prev is not None and (not requested or requested == prev.id):
        return Combo(prev.id, prev.total + count)
    return Combo(requested or new_id, count)


# ---------------------------------------------------------------- coalescing

ComboKey = tuple[str, str, str, str]  # room, user, gift, combo


@dataclass(slots=True)
class _Pending:
    name: str
    count: int
    total: int


class GiftTally:
    """Gift sends of one node not yet broadcast, summed per ``(room, user, gift, combo)``."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[ComboKey, _Pending] = {}

    def add(self, room: str, user: str, name: str, gift_id: str, combo: Combo, count: int) -> None:
        """Count ``count`` units sent in ``combo``; its running total is ``combo.total``
        (the largest seen wins, so sends completing out of order never shrink it)."""
        key = (room, user, gift_id, combo.id)
        p = self._pending.get(key)
        if p is None:
            self._pending[key] = _Pending(name, count, combo.total)
        else:
            p.count += count
            p.total = max(p.total, combo.total)

    def __len__(self) -> int:
        return len(self._pending)

    def take(self, catalogue: Catalogue) -> list[tuple[str, dict[str, Any]]]:
        """Hand over every pending combo as ``(room, gift event data)`` and forget them.

        The data: ``user``, ``name``, ``gift_id``, ``gift_name``, ``tier``, ``price``,
        ``combo_id``, ``count`` (units this tick), ``total`` (units in the combo so far),
        ``value`` (coins this tick).
        """
        out: list[tuple[str, dict[str, Any]]] = []
        pending, self._pending = self._pending, {}
        for (room, user, gift_id, combo_id), p in pending.items():
            spec = catalogue.get(gift_id)
            out.append((room, gift_event(spec, user=user, name=p.name, combo_id=combo_id, count=p.count, total=p.total)))
        return out


def gift_event(spec: GiftSpec, *, user: str, name: str, combo_id: str, count: int, total: int) -> dict[str, Any]:
    """The data of one ``gift`` room event (see :meth:`GiftTally.take`)."""
    return {
        "user": user,
        "name": name,
        "gift_id": spec.id,
        "gift_name": spec.name,
        "tier": spec.tier,
        "price": spec.price,
        "combo_id": combo_id,
        "count": count,
        "total": total,
        "value": spec.price * count,
    }


def catalogue_payload(catalogue: Catalogue) -> list[dict[str, Any]]:
    """The catalogue as ``GET /api/v1/gifts`` lists it, cheapest first."""
    return [g.to_dict() for g in sorted(catalogue, key=lambda g: (g.price, g.id))]


def merge_gift_events(events: list[Mapping[str, Any]]) -> dict[str, int]:
    """Units per combo id over a list of ``gift`` event data (for clients and tests:
    summing the ``count`` deltas gives what was sent)."""
    out: dict[str, int] = {}
    for e in events:
        out[e["combo_id"]] = out.get(e["combo_id"], 0) + int(e["count"])
    return out
