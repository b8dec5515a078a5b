"""SQL side of fulfilment: ``addresses`` (written here, per request: an address is the
user's own data, not money) and ``shipments`` (written only by the orders worker, from
``order.shipped`` / ``order.delivered``, inside the batch's transaction).

* Addresses: at most :data:`~livecommerce.fulfilment.MAX_ADDRESSES` per user; exactly one is
  the default whenever the user has any (the first one is; deleting the default makes the
  most recent remaining one the default). Every change runs in one transaction.
* Shipments: :func:`put_shipments` inserts a shipment or moves it forward (``shipped ->
  delivered``, never back), so a shipment met twice, or its delivery met before its
  creation, ends the same.
* Erasure: :func:`erase_user` deletes the user's addresses and blanks the address
  snapshots of their shipments (the parcels' ids, carriers and tracking numbers stay,
  under the pseudonym).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import Conflict, NotFound
from .fulfilment import ADDRESS_FIELDS, MAX_ADDRESSES, Shipment
from .schema import addresses, orders, shipments
from .store_sql import SqlStore


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _address(r: Any) -> dict[str, Any]:
    return {"id": r.id, **{n: getattr(r, n) for n, _, _ in ADDRESS_FIELDS}, "is_default": bool(r.is_default),
            "created_ms": int(r.created_ms), "updated_ms": int(r.updated_ms)}


async def list_addresses(store: SqlStore, user: str) -> list[dict[str, Any]]:
    """The user's addresses, the default first, then newest first."""
    q = (select(addresses).where(addresses.c.user_id == user)
         .order_by(addresses.c.is_default.desc(), addresses.c.created_ms.desc(), addresses.c.id))
    async with store.read() as tx:
        return [_address(r) for r in await tx.conn.execute(q)]


async def get_address(store: SqlStore, user: str, address_id: str) -> dict[str, Any] | None:
    async with store.read() as tx:
        r = (await tx.conn.execute(select(addresses).where(addresses.c.id == address_id, addresses.c.user_id == user))).first()
    return None if r is None else _address(r)


async def default_address(store: SqlStore, user: str) -> dict[str, Any] | None:
    async with store.read() as tx:
        r = (await tx.conn.execute(select(addresses).where(addresses.c.user_id == user, addresses.c.is_default.is_(True))
                                   .limit(1))).first()
    return None if r is None else _address(r)


async def _only_default(conn: AsyncConnection, user: str, address_id: str) -> None:
    await conn.execute(update(addresses).where(addresses.c.user_id == user, addresses.c.id != address_id,
                                               addresses.c.is_default.is_(True)).values(is_default=False))
    await conn.execute(update(addresses).where(addresses.c.id == address_id).values(is_default=True))


async def add_address(store: SqlStore, user: str, fields: dict[str, Any], *, now_ms: int,
                      address_id: str | None = None) -> dict[str, Any]:
    """Add an address; the user's first one, or one with ``is_default``, becomes the default.

    Raises:
        Conflict: (``too_many_addresses``) the user has :data:`MAX_ADDRESSES` already.
    """
    aid = address_id or "a" + secrets.token_hex(8)
    async with store.write() as tx:
        conn = tx.conn
        have = int((await conn.execute(select(func.count()).where(addresses.c.user_id == user))).scalar_one())
        if have >= MAX_ADDRESSES:
            raise Conflict(f"at most {MAX_ADDRESSES} addresses per user: delete one first", code="too_many_addresses")
        row = {n: fields.get(n) for n, _, _ in ADDRESS_FIELDS}
        await conn.execute(addresses.insert().values(id=aid, user_id=user, **row, is_default=False, created_ms=now_ms,
                                                     updated_ms=now_ms))
        if have == 0 or fields.get("is_default"):
            await _only_default(conn, user, aid)
        r = (await conn.execute(select(addresses).where(addresses.c.id == aid))).one()
    return _address(r)


async def update_address(store: SqlStore, user: str, address_id: str, fields: dict[str, Any], *, now_ms: int) -> dict[str, Any]:
    """Change some fields; ``is_default: true`` makes it the default (``false`` on the
    default is refused: make another one the default instead).

    Raises:
        NotFound: no such address of the user.
        Conflict: (``default_required``) un-defaulting the default.
    """
    async with store.write() as tx:
        conn = tx.conn
        r = (await conn.execute(select(addresses).where(addresses.c.id == address_id, addresses.c.user_id == user))).first()
        if r is None:
            raise NotFound(f"no address {address_id}")
        values = {k: v for k, v in fields.items() if k != "is_default"}
        if fields.get("is_default") is False and r.is_default:
            raise Conflict("this is your default address: make another one the default instead", code="default_required")
        await conn.execute(update(addresses).where(addresses.c.id == address_id).values(**values, updated_ms=now_ms))
        if fields.get("is_default"):
            await _only_default(conn, user, address_id)
        r = (await conn.execute(select(addresses).where(addresses.c.id == address_id))).one()
    return _address(r)


async def delete_address(store: SqlStore, user: str, address_id: str) -> bool:
    """Delete an address (False: there was none); when it was the default, the most recent
    remaining one becomes the default."""
    async with store.write() as tx:
        conn = tx.conn
        r = (await conn.execute(select(addresses).where(addresses.c.id == address_id, addresses.c.user_id == user))).first()
        if r is None:
            return False
        await conn.execute(delete(addresses).where(addresses.c.id == address_id))
        if r.is_default:
            nxt = (await conn.execute(select(addresses.c.id).where(addresses.c.user_id == user)
                                      .order_by(addresses.c.created_ms.desc(), addresses.c.id).limit(1))).first()
            if nxt is not None:
                await _only_default(conn, user, nxt[0])
    return True


# ---------------------------------------------------------------- shipments

_FORWARD = {"shipped": 0, "delivered": 1}


async def put_shipments(conn: AsyncConnection, items: Sequence[Shipment]) -> None:
    """Insert each shipment, or move a known one forward (``shipped -> delivered``; never
    back), inside the caller's transaction: one insert and one update statement for the
    whole batch (a parcel met twice in it counts once, delivered if either says so)."""
    last: dict[str, Shipment] = {}
    for s in items:
        if s.id not in last or s.state == "delivered":
            last[s.id] = s
    if not last:
        return
    rows = [{"id": s.id, "order_id": s.order_id, "user_id": s.user_id, "room_id": s.room_id, "kind": s.kind,
             "refund_id": s.refund_id, "carrier": s.carrier, "tracking_number": s.tracking_number, "lines": s.lines,
             "ship_to": s.ship_to, "state": s.state, "created_by": s.created_by, "created_ms": s.created_ms,
             "delivered_ms": s.delivered_ms, "delivered_by": s.delivered_by} for s in last.values()]
    await conn.execute(_insert(conn, shipments).on_conflict_do_nothing(index_elements=["id"]), rows)
    done = [{"sid": s.id, "dms": s.delivered_ms, "dby": s.delivered_by} for s in last.values() if s.state == "delivered"]
    if done:  # rows inserted delivered above already are; a parcel known as shipped moves forward
        await conn.execute(update(shipments).where(shipments.c.id == bindparam("sid"), shipments.c.state != "delivered")
                           .values(state="delivered", delivered_ms=bindparam("dms"), delivered_by=bindparam("dby")), done)


async def due_confirmations(store: SqlStore, *, delivered_before_ms: int, limit: int = 500) -> list[tuple[str, str, str]]:
    """``(order_id, user_id, room_id)`` of delivered orders whose delivery (the step's time,
    ``updated_ms``) is at or before ``delivered_before_ms``, oldest first."""
    q = (select(orders.c.id, orders.c.user_id, orders.c.room_id)
         .where(orders.c.state == "delivered", orders.c.updated_ms <= delivered_before_ms)
         .order_by(orders.c.updated_ms, orders.c.id).limit(limit))
    async with store.read() as tx:
        return [(r[0], r[1], r[2]) for r in await tx.conn.execute(q)]


def _shipment(r: Any) -> dict[str, Any]:
    return {"shipment_id": r.id, "order_id": r.order_id, "user_id": r.user_id, "room_id": r.room_id, "kind": r.kind,
            "refund_id": r.refund_id, "carrier": r.carrier, "tracking_number": r.tracking_number, "lines": dict(r.lines or {}),
            "ship_to": r.ship_to, "state": r.state, "created_by": r.created_by, "created_ms": int(r.created_ms),
            "delivered_ms": r.delivered_ms, "delivered_by": r.delivered_by}


async def order_shipments(store: SqlStore, order_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The shipments SQL holds for each order, oldest first."""
    ids = list(order_ids)
    out: dict[str, list[dict[str, Any]]] = {oid: [] for oid in ids}
    if not ids:
        return out
    async with store.read() as tx:
        for i in range(0, len(ids), 500):
            q = select(shipments).where(shipments.c.order_id.in_(ids[i : i + 500])).order_by(shipments.c.created_ms, shipments.c.id)
            for r in await tx.conn.execute(q):
                out[r.order_id].append(_shipment(r))
    return out


async def user_shipments(store: SqlStore, user: str, *, limit: int = 10_000) -> list[dict[str, Any]]:
    q = select(shipments).where(shipments.c.user_id == user).order_by(shipments.c.created_ms.desc()).limit(limit)
    async with store.read() as tx:
        return [_shipment(r) for r in await tx.conn.execute(q)]


async def erase_user(conn: AsyncConnection, user: str, alias: str) -> dict[str, int]:
    """Inside the erasure's transaction: delete the user's addresses, blank their shipments'
    address snapshots and move the shipments to ``alias``."""
    res = await conn.execute(delete(addresses).where(addresses.c.user_id == user))
    gone = int(res.rowcount or 0)
    res = await conn.execute(update(shipments).where(shipments.c.user_id == user).values(user_id=alias, ship_to=None))
    return {"addresses": gone, "shipments": int(res.rowcount or 0)}
