"""Complaint tickets: the status table and who may move a ticket, the SLA timer's rules, and
the ops queue over HTTP (most urgent first, breaches flagged, first response stamped)."""

from __future__ import annotations

from typing import Any

import pytest

from livecommerce import tickets_sql
from livecommerce.errors import Conflict, Forbidden
from livecommerce.tickets import HOUR_MS, Ticket, check_move, may_move, parse_ticket, sla
from tests.test_refunds import World, http  # noqa: F401  (fixture)

T0 = 1_700_000_000_000


def _t(**kw: Any) -> Ticket:
    base: dict[str, Any] = {"id": "tk1", "user_id": "u1", "kind": "order", "priority": "high", "subject": "s", "text": "t",
                            "status": "open", "created_ms": T0, "updated_ms": T0}
    return Ticket(**(base | kw))


def test_the_ticket_life_cycle_and_who_may_move_it() -> None:
    assert check_move("open", "in_progress") and not check_move("closed", "closed")
    with pytest.raises(Conflict):
        check_move("closed", "open")
    may_move(role="viewer", is_owner=True, current="resolved", to="in_progress")  # reopen
    may_move(role="viewer", is_owner=True, current="open", to="closed")
    with pytest.raises(Forbidden):
        may_move(role="viewer", is_owner=True, current="open", to="resolved")
    with pytest.raises(Forbidden):
        may_move(role="host", is_owner=False, current="open", to="closed")
    assert parse_ticket({"subject": " late ", "text": "x"}).priority == "normal"
    with pytest.raises(Exception, match="priority"):
        parse_ticket({"subject": "a", "text": "b", "priority": "asap"})


def test_the_sla_timer_runs_first_response_then_resolution() -> None:
    s = sla(_t(), T0 + HOUR_MS)
    assert (s["stage"], s["due_ms"], s["remaining_ms"], s["breached"]) == ("first_response", T0 + 4 * HOUR_MS, 3 * HOUR_MS, False)
    late = sla(_t(), T0 + 5 * HOUR_MS)
    assert late["first_response_breached"] and late["remaining_ms"] == -HOUR_MS
    answered = sla(_t(status="in_progress", first_response_ms=T0 + 2 * HOUR_MS), T0 + 30 * HOUR_MS)
    assert (answered["stage"], answered["first_response_breached"], answered["resolution_breached"]) == ("resolution", False, True)
    done = sla(_t(status="resolved", first_response_ms=T0 + HOUR_MS, resolved_ms=T0 + 3 * HOUR_MS), T0 + 99 * HOUR_MS)
    assert (done["stage"], done["due_ms"], done["breached"]) == ("done", None, False)


async def test_ops_work_the_ticket_queue_most_urgent_first(gateway_factory: Any, token: Any, redis: Any, http: Any) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http)
    try:
        ops, u1, u2 = token("ops1", "ops"), token("u1"), token("u2")
        now = w.node.gw.now_ms()
        await tickets_sql.open_ticket(w.store, _t(id="tk-old", user_id="u2", priority="normal", created_ms=now - 9 * HOUR_MS,
                                                  updated_ms=now - 9 * HOUR_MS))
        new = await w.call("POST", "/api/v1/tickets", u1, {"subject": "Broken", "text": "The lid", "kind": "product", "priority": "urgent"},
                           status=201)
        await w.call("POST", "/api/v1/tickets", u1, {"subject": "x", "text": "y", "order_id": "nope.1"}, status=404)
        queue = await w.call("GET", "/api/v1/tickets?status=open", ops)
        assert [t["id"] for t in queue["tickets"]] == ["tk-old", new["id"]]  # the breached one first
        assert queue["tickets"][0]["sla"]["breached"] and not queue["tickets"][1]["sla"]["breached"]
        assert [t["id"] for t in (await w.call("GET", "/api/v1/tickets?breached=1", ops))["tickets"]] == ["tk-old"]
        assert [t["id"] for t in (await w.call("GET", "/api/v1/tickets", u1))["tickets"]] == [new["id"]]
        await w.call("GET", "/api/v1/tickets/tk-old", u1, status=404)
        await w.call("POST", f"/api/v1/tickets/{new['id']}/status", u2, {"status": "closed"}, status=404)
        refused = await w.call("POST", f"/api/v1/tickets/{new['id']}/status", u1, {"status": "resolved"}, status=403)
        assert refused["error"]["code"] == "forbidden"
        moved = await w.call("POST", f"/api/v1/tickets/{new['id']}/status", ops, {"status": "in_progress", "assignee": "ops1"})
        assert moved["changed"] and moved["sla"]["stage"] == "resolution" and moved["first_response_ms"] is not None
        await w.call("POST", f"/api/v1/tickets/{new['id']}/status", ops, {"status": "resolved", "note": "replaced"})
        reopened = await w.call("POST", f"/api/v1/tickets/{new['id']}/status", u1, {"status": "in_progress", "note": "still broken"})
        assert reopened["status"] == "in_progress" and reopened["resolved_ms"] is not None  # the clock is not reset
        bad = await w.call("POST", f"/api/v1/tickets/{new['id']}/status", ops, {"status": "open"}, status=409)
        assert bad["error"]["code"] == "illegal_transition"
        full = await w.call("GET", f"/api/v1/tickets/{new['id']}", u1)
        assert [(h["from"], h["to"]) for h in full["history"]] == [(None, "open"), ("open", "in_progress"),
                                                                   ("in_progress", "resolved"), ("resolved", "in_progress")]
    finally:
        await w.close()
