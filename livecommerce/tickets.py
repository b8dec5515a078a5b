"""Complaint tickets: a viewer's complaint, its status life-cycle and its SLA timer. No I/O.

A viewer opens a ticket (about an order, a refund, a product, a host, or anything else);
ops work it. Life-cycle (all transition logic in :data:`TICKET_TRANSITIONS`)::

    open --> in_progress --> resolved --> closed
      |           |            |
      |           +--> closed  +--reopen--> in_progress   (the viewer is not satisfied)
      +--> resolved / closed

Who may move a ticket (:func:`may_move`): ops any legal step; the viewer who opened it may
close it while it is open or resolved, and reopen a resolved one.

SLA timer (:func:`sla`): each priority has two targets measured from ``created_ms``:

==========  ==============  ==========
priority    first response  resolution
==========  ==============  ==========
``urgent``  1 h             8 h
``high``    4 h             24 h
``normal``  8 h             72 h
==========  ==============  ==========

The *first response* is the first step ops take out of ``open`` (or a note ops add); the
*resolution* is reaching ``resolved`` or ``closed``. The timer shows the target that is
running now (``first_response`` until answered, then ``resolution``, then ``done``), its due
time, the time left (negative once breached) and whether either target was breached. A
reopened ticket keeps its original due times: the clock is not reset by a reopen.

Tickets are written to SQL by the gateway in one transaction per step (the row is locked, so
two ops cannot make conflicting steps) and every step is also appended to the durable log
(topic ``support``: ``ticket.opened`` / ``ticket.updated``, key the ticket id) for analytics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .errors import BadFrame, Conflict, Forbidden

TicketStatus = Literal["open", "in_progress", "resolved", "closed"]
STATUSES: tuple[TicketStatus, ...] = get_args(TicketStatus)
Priority = Literal["urgent", "high", "normal"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
KINDS = ("order", "refund", "product", "host", "delivery", "other")

TICKET_TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    "open": frozenset({"in_progress", "resolved", "closed"}),
    "in_progress": frozenset({"resolved", "closed"}),
    "resolved": frozenset({"closed", "in_progress"}),
    "closed": frozenset(),
}

HOUR_MS = 3_600_000
SLA_MS: dict[str, tuple[int, int]] = {  # (first response, resolution)
    "urgent": (1 * HOUR_MS, 8 * HOUR_MS),
    "high": (4 * HOUR_MS, 24 * HOUR_MS),
    "normal": (8 * HOUR_MS, 72 * HOUR_MS),
}
MAX_SUBJECT = 200
MAX_TEXT = 4000
TOPIC = "support"


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    user_id: str
    kind: str
    priority: Priority
    subject: str
    text: str
    status: TicketStatus
    created_ms: int
    updated_ms: int
    order_id: str | None = None
    room_id: str | None = None
    assignee: str | None = None
    first_response_ms: int | None = None
    resolved_ms: int | None = None


@dataclass(frozen=True, slots=True)
class NewTicket:
    kind: str
    priority: Priority
    subject: str
    text: str
    order_id: str | None
    room_id: str | None


def parse_ticket(body: Any) -> NewTicket:
    """Validate ``POST /api/v1/tickets {subject, text, kind?, priority?, order_id?, room_id?}``.

    Raises:
        BadFrame: (``invalid``) naming the field.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object", code="invalid")
    subject, text = body.get("subject"), body.get("text")
    if not isinstance(subject, str) or not 0 < len(subject.strip()) <= MAX_SUBJECT:
        raise BadFrame(f"'subject' must be 1..{MAX_SUBJECT} characters", code="invalid")
    if not isinstance(text, str) or not 0 < len(text.strip()) <= MAX_TEXT:
        raise BadFrame(f"'text' must be 1..{MAX_TEXT} characters", code="invalid")
    kind = body.get("kind", "other")
    if kind not in KINDS:
        raise BadFrame(f"'kind' must be one of {', '.join(KINDS)}", code="invalid")
    priority = body.get("priority", "normal")
    if priority not in PRIORITIES:
        raise BadFrame(f"'priority' must be one of {', '.join(PRIORITIES)}", code="invalid")
    refs: dict[str, str | None] = {}
    for name in ("order_id", "room_id"):
        v = body.get(name)
        if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 128):
            raise BadFrame(f"'{name}' must be an id", code="invalid")
        refs[name] = v
    return NewTicket(str(kind), priority, subject.strip(), text.strip(), refs["order_id"], refs["room_id"])


def check_move(current: TicketStatus, to: TicketStatus) -> bool:
    """True for a change, False for a no-op (``to == current``).

    Raises:
        Conflict: (``illegal_transition``) the step is not in :data:`TICKET_TRANSITIONS`.
        BadFrame: ``to`` is no status.
    """
    if to not in STATUSES:
        raise BadFrame(f"'status' must be one of {', '.join(STATUSES)}", code="invalid")
    if to == current:
        return False
    if to not in TICKET_TRANSITIONS[current]:
        raise Conflict(f"a ticket cannot go from {current} to {to}", code="illegal_transition")
    return True


def may_move(*, role: str, is_owner: bool, current: TicketStatus, to: TicketStatus) -> None:
    """Raises:
    Forbidden: the caller may not make this step (see the module docstring).
    """
    if role == "ops":
        return
    if is_owner and ((to == "closed" and current in ("open", "resolved")) or (current == "resolved" and to == "in_progress")):
        return
    raise Forbidden("only ops move tickets (the viewer may close or reopen their own)")


def stamps_after(t: Ticket, to: TicketStatus, *, by_ops: bool, now_ms: int) -> dict[str, int | None]:
    """The SLA stamps after moving ``t`` to ``to``: the first response is the first ops step
    out of ``open``; the resolution is the first time it reaches resolved or closed."""
    first = t.first_response_ms
    if first is None and by_ops and t.status == "open":
        first = now_ms
    resolved = t.resolved_ms
    if resolved is None and to in ("resolved", "closed"):
        resolved = now_ms
    return {"first_response_ms": first, "resolved_ms": resolved}


def sla(t: Ticket, now_ms: int) -> dict[str, Any]:
    """The SLA timer as ops see it (see the module docstring)."""
    first_ms, resolve_ms = SLA_MS[t.priority]
    first_due, resolve_due = t.created_ms + first_ms, t.created_ms + resolve_ms
    first_breached = (t.first_response_ms if t.first_response_ms is not None else now_ms) > first_due
    resolution_breached = (t.resolved_ms if t.resolved_ms is not None else now_ms) > resolve_due
    if t.first_response_ms is None and t.status == "open":
        stage, due = "first_response", first_due
    elif t.resolved_ms is None:
        stage, due = "resolution", resolve_due
    else:
        stage, due = "done", None
    return {
        "stage": stage,
        "due_ms": due,
        "remaining_ms": None if due is None else due - now_ms,
        "first_response_due_ms": first_due,
        "resolution_due_ms": resolve_due,
        "first_response_breached": first_breached,
        "resolution_breached": resolution_breached,
        "breached": first_breached or resolution_breached,
    }


def ticket_view(t: Ticket, now_ms: int) -> dict[str, Any]:
    return {
        "id": t.id,
        "user_id": t.user_id,
        "kind": t.kind,
        "priority": t.priority,
        "subject": t.subject,
        "text": t.text,
        "status": t.status,
        "order_id": t.order_id,
        "room_id": t.room_id,
        "assignee": t.assignee,
        "created_ms": t.created_ms,
        "updated_ms": t.updated_ms,
        "first_response_ms": t.first_response_ms,
        "resolved_ms": t.resolved_ms,
        "sla": sla(t, now_ms),
    }
