"""The ``Store`` port: orders, their history, and the wallet and points ledgers in SQL.

Contract (``SqlStore`` on SQLite and PostgreSQL, checked by ``tests/test_store.py``):

* **Exactly-once effects.** ``async with store.apply(consumer, event_id) as tx:`` yields
  ``None`` when ``consumer`` applied ``event_id`` before (the caller skips the effect), else a
  :class:`Tx` whose writes commit in one transaction together with the
  ``applied_events(consumer, event_id)`` row. If the body raises, nothing commits and the
  event can be applied again. Concurrent duplicates are serialised: exactly one body runs
  (PostgreSQL waits on the primary key, SQLite on its single writer). This is how
  at-least-once delivery from :mod:`livecommerce.log` becomes exactly-once effects: a worker
  acks the log *after* ``apply`` returns.
* **Orders.** ``insert_reserved`` is idempotent on the order id. ``transition`` follows
  :data:`livecommerce.orders.ORDER_TRANSITIONS`: an event id seen before, or a target equal to
  the current state, is a no-op (``changed=False``); an illegal step raises ``Conflict`` and
  writes nothing. Every change appends one ``order_events`` row (event id unique), so an
  order's full history is readable with ``order_history``.
* **Batches.** ``apply_batch`` claims a whole batch's event ids in one transaction;
  ``settle`` applies a batch of order steps (:class:`livecommerce.orders.OrderStep`) in that
  transaction with the outcome of applying them one by one through ``insert_reserved``,
  ``transition`` and ``record_payment`` (:func:`livecommerce.orders.settle` is the rule), one
  statement per table whatever the batch's size.
* **Ledgers.** Entries are append-only, idempotent on their reference event (wallet:
  ``ref_event_id`` unique; points: ``(ref_event_id, user_id, reason)`` unique); adding a
  duplicate returns False and changes nothing. A balance is the sum of the user's entries,
  always (wallet: computed from them; points: kept per user and role in the same
  transaction as the entries, so a host's balance is one row however many gifts it got).
  Balances may go negative (clawed-back points); callers that must not overdraw check
  inside the same ``apply`` transaction.
* Money is integer cents, times are epoch ms, and every method raises
  :class:`~livecommerce.errors.Unavailable` when the database cannot be reached or its schema
  is missing (run ``livecommerce db upgrade``).

Reads outside ``apply`` see committed data only.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .flash_sale import Sale, SaleState
from .orders import (
    SOLD_STATES,
    Order,
    OrderEvent,
    OrderState,
    OrderStep,
    StepOutcome,
    TransitionResult,
)

PointsRole = Literal["viewer", "host"]


@dataclass(frozen=True, slots=True)
class WalletEntry:
    id: int
    user_id: str
    delta: int  # coins; negative for debits
    reason: str  # e.g. topup, gift.sent, refund
    ref_event_id: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class PointsEntry:
    id: int
    user_id: str
    role: PointsRole
    delta: int
    reason: str  # e.g. gift.sent, gift.received, order.paid, watch, comment, refund.clawback
    ref_event_id: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class OrderTotals:
    """Order counts and units per state, from SQL. ``gmv`` is the net amount (amount minus
    refunds) of orders in :data:`~livecommerce.orders.SOLD_STATES` (paid, and every state after); ``buyers`` counts
    distinct users with an order that is not cancelled."""

    sale_id: str | None
    orders: dict[str, int] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    gmv: int = 0
    refunded: int = 0
    buyers: int = 0

    @property
    def reserved_units(self) -> int:
        return self.units.get("reserved", 0)

    @property
    def paid_units(self) -> int:
        """Units sold: paid orders, including ones with a refund pending or settled."""
        return sum(self.units.get(s, 0) for s in SOLD_STATES)


@dataclass(frozen=True, slots=True)
class SaleRecord:
    sale: Sale
    state: SaleState
    product_name: str | None
    created_ms: int
    updated_ms: int


class Tx(Protocol):
    """Writes (and reads) inside one transaction; see the module docstring for each rule."""

    async def insert_reserved(self, order: Order, event_id: str) -> bool:
        """Insert a ``reserved`` order and its first history row.

        Returns:
            True if inserted, False if the order id exists already (nothing written).

        Raises:
            BadFrame: the order is not in state ``reserved``.
            Conflict: ``event_id`` is already used by another order's history.
        """
        ...

    async def transition(
        self,
        order_id: str,
        to_state: OrderState,
        event_id: str,
        *,
        now_ms: int,
        refund_qty: int = 0,
        refund_amount: int = 0,
        reason: str | None = None,
    ) -> TransitionResult:
        """Move an order (see :func:`livecommerce.orders.apply_transition`) and record it.

        Raises:
            NotFound: no such order.
            Conflict: illegal step, or ``event_id`` already recorded for another order.
            BadFrame: refund amounts out of range.
        """
        ...

    async def settle(self, steps: Sequence[OrderStep]) -> list[StepOutcome]:
        """Apply order steps in order, as ``insert_reserved`` / ``transition`` /
        ``record_payment`` would one by one (see :func:`livecommerce.orders.settle`), with one
        statement per table; returns each step's outcome. A refused move (illegal, or its
        event id is another order's) writes nothing and is reported in its outcome.

        Raises:
            Conflict: a reserve whose event id is another order's history
                (``duplicate_event``), or an order of the batch changed concurrently
                (``conflict``: apply the batch again).
            NotFound: a move of an order neither the store nor the step knows.
            BadFrame: a reserve step without a ``reserved`` order.
        """
        ...

    async def get_order(self, order_id: str) -> Order | None: ...

    async def record_payment(self, order_id: str, *, amount: int, discount: int, coupon_id: str | None) -> bool:
        """Record what was paid for an order (the net ``amount`` after the coupon's
        ``discount``, and the coupon): ``order.paid`` carries it, the reserve does not know
        it. Refunds and GMV are computed from it. Idempotent; False (nothing written) when
        there is no such order or a refund has already been taken from it."""
        ...

    async def add_wallet_entry(
        self, user_id: str, delta: int, reason: str, ref_event_id: str, ts_ms: int
    ) -> bool:
        """Append a wallet entry; False (nothing written) if ``ref_event_id`` is recorded."""
        ...

    async def wallet_balance(self, user_id: str) -> int: ...

    async def add_points_entry(
        self,
        user_id: str,
        role: PointsRole,
        delta: int,
        reason: str,
        ref_event_id: str,
        ts_ms: int,
    ) -> bool:
        """Append a points entry; False if ``(ref_event_id, user_id, reason)`` is recorded.

        Raises:
            BadFrame: ``role`` is not viewer or host.
        """
        ...

    async def points_balance(self, user_id: str, role: PointsRole | None = None) -> int: ...

    async def add_wallet_entries(self, rows: Sequence[tuple[str, int, str, str, int]]) -> int:
        """``add_wallet_entry`` for many ``(user_id, delta, reason, ref_event_id, ts_ms)``
        rows in one statement; returns how many were new."""
        ...

    async def add_points_entries(self, rows: Sequence[tuple[str, PointsRole, int, str, str, int]]) -> int:
        """``add_points_entry`` for many ``(user_id, role, delta, reason, ref_event_id,
        ts_ms)`` rows in one statement; returns how many were new.

        Raises:
            BadFrame: a role is not viewer or host.
        """
        ...


class Store(Tx, Protocol):
    """Orders, history and ledgers (each ``Tx`` method also runs alone in its own
    transaction), plus reads and the exactly-once guard."""

    def apply(self, consumer: str, event_id: str) -> AbstractAsyncContextManager[Tx | None]:
        """Yield None if ``(consumer, event_id)`` was applied, else a transaction whose writes
        commit together with that record (see the module docstring)."""
        ...

    async def was_applied(self, consumer: str, event_id: str) -> bool: ...

    def apply_batch(
        self, consumer: str, event_ids: Sequence[str]
    ) -> AbstractAsyncContextManager[tuple[Tx, set[str]]]:
        """``apply`` for a whole batch in one transaction: yield the transaction and the
        ids among ``event_ids`` that ``consumer`` had not applied (each claimed now,
        committed with the body's writes; nothing commits if the body raises). The caller
        writes effects for those ids only, once each (an id may be listed twice).
        Claims are taken in sorted order, so concurrent overlapping batches cannot deadlock."""
        ...

    async def points_balances(self, user_ids: Sequence[str]) -> dict[str, dict[PointsRole, int]]:
        """Viewer and host balances of several users in one query (0 when no entries)."""
        ...

    async def list_orders(
        self,
        *,
        user_id: str | None = None,
        sale_id: str | None = None,
        room_id: str | None = None,
        state: OrderState | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Order]:
        """Orders matching every given filter, newest first."""
        ...

    async def order_history(self, order_id: str) -> list[OrderEvent]:
        """The order's state changes, oldest first (empty for an unknown order)."""
        ...

    async def due_orders(self, now_ms: int, limit: int = 100) -> list[Order]:
        """Reserved orders whose deadline is at or before ``now_ms``, oldest deadline first."""
        ...

    async def sale_stats(self, sale_id: str) -> OrderTotals: ...

    async def wallet_ledger(
        self, user_id: str, *, limit: int = 100, offset: int = 0
    ) -> list[WalletEntry]:
        """The user's wallet entries, newest first."""
        ...

    async def points_ledger(
        self, user_id: str, *, role: PointsRole | None = None, limit: int = 100, offset: int = 0
    ) -> list[PointsEntry]:
        """The user's points entries, newest first."""
        ...

    async def points_entry(self, ref_event_id: str, user_id: str, reason: str) -> PointsEntry | None:
        """The points entry ``ref_event_id`` made for ``user_id`` with ``reason``, or None
        (e.g. whether a redemption was accepted)."""
        ...

    async def put_sale(
        self, sale: Sale, *, state: SaleState, now_ms: int, product_name: str | None = None
    ) -> None:
        """Insert or update a campaign row (the definition and its lifecycle state)."""
        ...

    async def get_sale(self, sale_id: str) -> SaleRecord | None: ...

    async def list_sales(
        self, *, room_id: str | None = None, state: SaleState | None = None, limit: int = 100
    ) -> list[SaleRecord]: ...

    async def check_schema(self) -> int:
        """The schema version, if the code's latest.

        Raises:
            ConfigError: the schema is older or newer than this code (run ``db upgrade``).
            Unavailable: the database cannot be reached.
        """
        ...

    async def close(self) -> None: ...
