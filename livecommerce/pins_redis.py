"""Redis adapter for the product catalogue and each room's current pin.

Keys: ``{product:ID}:meta`` (hash: id, name, price, image, category) and ``{room:ID}:pin`` (the
current ``product.pinned`` data as JSON; it expires ``pin_ttl_s`` after the pin, so an
ended room's pin does not stay forever). Driver errors become
:class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from typing import Any

from .keys import Keys
from .pins import Product
from .redis_conn import guarded
from .retention import ROOM_RETENTION_S


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisPins:
    def __init__(self, redis: Any, keys: Keys, *, pin_ttl_s: int = ROOM_RETENTION_S) -> None:
        self._r = redis
        self.keys = keys
        self.pin_ttl_s = pin_ttl_s

    def _product_key(self, product_id: str) -> str:
        return self.keys.entity("product", product_id, "meta")

    async def put_product(self, p: Product) -> None:
        """Create or replace a product."""
        async with guarded():
            await self._r.hset(
                self._product_key(p.id),
                mapping={"id": p.id, "name": p.name, "price": p.price, "image": p.image, "category": p.category},
            )

    async def get_product(self, product_id: str) -> Product | None:
        async with guarded():
            raw = await self._r.hgetall(self._product_key(product_id))
        if not raw:
            return None
        h = {_s(k): _s(v) for k, v in raw.items()}
        return Product(h["id"], h["name"], int(h["price"]), h.get("image", ""), h.get("category", ""))

    async def set_pin(self, room: str, pin: dict[str, Any]) -> None:
        async with guarded():
            await self._r.set(self.keys.room(room, "pin"), json.dumps(pin, separators=(",", ":")), ex=self.pin_ttl_s)

    async def get_pin(self, room: str) -> dict[str, Any] | None:
        async with guarded():
            raw = await self._r.get(self.keys.room(room, "pin"))
        return json.loads(raw) if raw else None

    async def clear_pin(self, room: str) -> bool:
        """True when a pin was removed."""
        async with guarded():
            return bool(await self._r.delete(self.keys.room(room, "pin")))
