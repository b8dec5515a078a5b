"""docs/deploy.md's client retry contract as data ("What clients retry, and how").

An HTTP ``503 unavailable`` (Redis or the database unreachable, a Redis master failing
over), an answer that never came (refused, reset, timed out) on a call that is safe to
repeat, and 409 ``idempotency_in_flight`` (the first request with the key is still
running) are retried with the **same** ``Idempotency-Key`` (or ``request_id``), after
100-500 ms with jitter, doubling to at most 5 s, for up to 30 s: the retry gets the first
attempt's answer, never a second order or charge. Any other 4xx is final. A WebSocket
closed with 1006, 1012 or 1013, or a handshake answered 503 or refused, reconnects with
``since=<last seq>`` on the same schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The back-off schedule: attempt ``n`` (0 first) waits a uniform draw from
    ``[first_min_s, first_max_s]`` times ``2**n``, at most ``max_delay_s``; no retry starts
    after ``budget_s`` from the first attempt. ``budget_s=0`` never retries."""

    first_min_s: float = 0.1
    first_max_s: float = 0.5
    max_delay_s: float = 5.0
    budget_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        grown: float = rng.uniform(self.first_min_s, self.first_max_s) * 2.0 ** min(attempt, 30)
        return min(self.max_delay_s, grown)

    def allows(self, elapsed_s: float, delay_s: float) -> bool:
        """Whether a retry after ``delay_s`` still starts within the budget."""
        return self.budget_s > 0 and elapsed_s + delay_s <= self.budget_s


#: the documented contract
CONTRACT = RetryPolicy()
#: one attempt, no retry
NO_RETRY = RetryPolicy(budget_s=0)
