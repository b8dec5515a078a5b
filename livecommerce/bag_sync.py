"""Changing a room's product list, and keeping every list in step with the catalogue.

One change is: read the list, :func:`~livecommerce.bag.apply` the op, store it with a
compare-and-set on its version (retried when another change came first), remember on each
product which rooms list it, then publish ``bag.changed`` with the whole list. The gateway
(``gateway/bag.py``) changes lists for hosts; the catalogue's writers (the gateway and
``livecommerce catalog load``) call :meth:`RoomLists.product_changed`, which refreshes the
product's summary in every list that shows it, or takes an archived product off them.

Failure order: the list is stored, then published. A publish lost to a crash leaves the
stored list ahead of what nodes hold; the next change publishes the whole list again, a
host's retry of an unchanged request republishes it (:meth:`RoomLists.change`), and nodes
read their copies again in the background (``gateway/bag.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from .bag import Bag, BagItem, Drop, Op, Refresh, apply, item_of
from .bag_redis import RedisBags
from .catalog import Product
from .catalog_redis import RedisCatalog
from .errors import Conflict

log = logging.getLogger("livecommerce.bag")

CAS_RETRIES = 8
#: ``(room, list, by)``: broadcast ``bag.changed`` on the room's channel
Publish = Callable[[str, Bag, str], Awaitable[None]]
#: ``(room, list)`` after a change was stored (the gateway's own copy, read-your-writes)
Stored = Callable[[str, Bag], None]
#: builds the op from the list as stored now (may read the catalogue, may refuse)
MakeOp = Callable[[Bag], Awaitable[Op]]


class RoomLists:
    """The rooms' product lists over Redis, published through ``publish``."""

    def __init__(self, bags: RedisBags, products: RedisCatalog, publish: Publish, *, stored: Stored | None = None) -> None:
        self.bags = bags
        self.products = products
        self.publish = publish
        self.stored = stored

    async def change(self, room: str, make: MakeOp, by: str, *, quiet: bool = False) -> tuple[Bag, bool]:
        """Apply the op ``make`` builds; returns the list after it and whether it changed.
        A change that changes nothing publishes the list again (a retry after a lost
        publish repairs the nodes), unless ``quiet``.

        Raises:
            Conflict: ``bag_busy`` past the retries, or the op's own refusal.
        """
        for _ in range(CAS_RETRIES):
            before = await self.bags.get(room)
            after = apply(before, await make(before))
            if after is before:
                if not quiet:
                    await self.publish(room, before, by)
                return before, False
            after = replace(after, v=before.v + 1)
            ok, _ = await self.bags.put(room, after, expected_v=before.v)
            if ok:
                if self.stored is not None:
                    self.stored(room, after)
                await self._index(room, before, after)
                await self.publish(room, after, by)
                log.info("bag.changed", extra={"room": room, "by": by, "v": after.v, "items": len(after.items)})
                return after, True
        raise Conflict(f"the list of room {room!r} is changing; try again", code="bag_busy")

    async def _index(self, room: str, before: Bag, after: Bag) -> None:
        """Each product remembers the rooms that list it (so its changes reach them)."""
        old, new = set(before.ids), set(after.ids)
        for pid in sorted(new - old):
            await self.products.listed_in(pid, room, True)
        for pid in sorted(old - new):
            await self.products.listed_in(pid, room, False)

    async def product_changed(self, product: Product) -> list[str]:
        """Refresh ``product``'s summary in every list that shows it, or take it off them
        when it is archived; a list the change does not alter says nothing. Returns the
        rooms whose list changed."""
        item: BagItem = item_of(product)
        op: Op = Drop(product.id) if product.state == "archived" else Refresh(item)

        async def make(bag: Bag) -> Op:
            return op

        changed = []
        for room in await self.products.rooms(product.id):
            _, did = await self.change(room, make, "catalog", quiet=True)
            if did:
                changed.append(room)
        return changed
