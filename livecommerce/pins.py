"""Pinned products: the minimal product catalogue and the ``product.pinned`` payload.

No I/O. The catalogue is a Redis hash per product (:mod:`livecommerce.pins_redis`), written
by ``POST /api/v1/products``; the SQL store may own products later, behind the same
adapter methods. A pin shows the product's name and price and, when a flash sale of that
product runs in the room, the sale and its stock left: the gateway asks the optional
``sale_for_product`` hook of the gateway's rooms capability (``async (room, product_id) -> dict | None``, the
sale as the flash-sale code describes it, with ``remaining`` when it knows the stock).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .errors import BadFrame

MAX_PRICE = 10**10  # cents


@dataclass(frozen=True, slots=True)
class Product:
    """A catalogue product. ``price`` is in integer cents (as in flash sales)."""

    id: str
    name: str
    price: int
    image: str = ""
    category: str = ""  # optional; viewer profiles count what each category sells (issue 11)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.category:
            del d["category"]
        return d


def _ident(v: Any, name: str) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not 0 < len(v) <= 64 or not all(c.isalnum() or c in "-_.:" for c in v):
        raise BadFrame(f"'{name}' must be 1..64 letters, digits or - _ . :", code="invalid")
    return v


def new_product(body: Mapping[str, Any], *, default_id: str) -> Product:
    """Validate ``POST /api/v1/products`` ``{id?, name, price, image?, category?}``.

    Raises:
        BadFrame: (``invalid``) a missing or malformed field.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object", code="invalid")
    name = body.get("name")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 200:
        raise BadFrame("'name' must be 1..200 characters", code="invalid")
    price = body.get("price")
    if isinstance(price, bool) or not isinstance(price, int) or not 0 <= price <= MAX_PRICE:
        raise BadFrame("'price' must be integer cents, 0 or more", code="invalid")
    image = body.get("image", "")
    if not isinstance(image, str) or len(image) > 500:
        raise BadFrame("'image' must be a URL of at most 500 characters", code="invalid")
    category = body.get("category", "")
    if not isinstance(category, str) or len(category) > 64:
        raise BadFrame("'category' must be text of at most 64 characters", code="invalid")
    pid = _ident(body["id"], "id") if body.get("id") is not None else default_id
    return Product(pid, name.strip(), price, image, category.strip().lower())


def pin_payload(product: Product, *, by: str, now_ms: int, sale: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``product.pinned`` data: the product, who pinned it and when, and the active sale
    (``None`` without one); ``stock_left`` is the sale's ``remaining`` when known."""
    return {
        "product_id": product.id,
        "name": product.name,
        "price": product.price,
        "image": product.image,
        "sale": dict(sale) if sale else None,
        "stock_left": sale.get("remaining") if sale else None,
        "pinned_by": by,
        "pinned_ms": now_ms,
    }


def with_sale(pin: Mapping[str, Any], sale: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored pin refreshed with the sale as it is now (for late joiners)."""
    return {**pin, "sale": dict(sale) if sale else None, "stock_left": sale.get("remaining") if sale else None}
