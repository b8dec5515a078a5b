"""Waiting on a condition instead of sleeping: the suite's one poll-until helper.

``check`` is a plain function or a coroutine function, called every ``interval`` seconds
until its result holds: truthy, or accepted by ``until`` when given. That result is returned.
An ``AssertionError`` raised by ``check`` means "not yet" too. On timeout an
``AssertionError`` names what was awaited and the last thing ``check`` saw (its last result,
or its last assertion message), so a failure says how far things got::

    order = await wait_until(lambda: store.get_order(oid), what="the order in SQL")
    await wait_until(lambda: hub.online("r1"), until=lambda n: n == 4, what="4 online in r1")

    async def caught_up() -> bool:
        assert await store.points_balance("u1") == 20, "u1's points"  # reported on timeout
        return True

    await wait_until(caught_up, what="the points worker")

Wait on the condition the next assertion needs, never on "enough time"; the sleeps left in
tests make time pass on purpose (a window closing, a clock ticking, pacing a producer).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

TIMEOUT_S = 10.0
INTERVAL_S = 0.05


class _Poll:
    """One ``check`` against one deadline: ``step()`` says whether it holds yet."""

    def __init__(self, until: Callable[[Any], Any] | None, timeout: float, what: str) -> None:
        self.until = until or bool
        self.timeout, self.what = timeout, what
        self.deadline = time.monotonic() + timeout
        self.last: Any = None

    def held(self, got: Any) -> bool:
        self.last = got
        return bool(self.until(got))

    def failed(self, exc: AssertionError) -> None:
        self.last = exc

    def give_up(self) -> None:
        if time.monotonic() >= self.deadline:
            seen = str(self.last) if isinstance(self.last, AssertionError) else repr(self.last)
            raise AssertionError(f"timed out after {self.timeout:g}s waiting for {self.what}; last observed: {seen}")


async def wait_until(check: Callable[[], Any], *, until: Callable[[Any], Any] | None = None, timeout: float = TIMEOUT_S,
                     interval: float = INTERVAL_S, what: str = "the condition") -> Any:
    """Call ``check()`` every ``interval`` seconds until its result holds; return that result.

    Raises:
        AssertionError: not within ``timeout`` seconds (``what`` and the last observation).
    """
    poll = _Poll(until, timeout, what)
    while True:
        try:
            got = check()
            if inspect.isawaitable(got):
                got = await got
            if poll.held(got):
                return got
        except AssertionError as exc:
            poll.failed(exc)
        poll.give_up()
        await asyncio.sleep(interval)


def wait_until_sync(check: Callable[[], Any], *, until: Callable[[Any], Any] | None = None, timeout: float = TIMEOUT_S,
                    interval: float = INTERVAL_S, what: str = "the condition") -> Any:
    """:func:`wait_until` for code with no event loop of its own (it blocks the thread)."""
    poll = _Poll(until, timeout, what)
    while True:
        try:
            got = check()
            if poll.held(got):
                return got
        except AssertionError as exc:
            poll.failed(exc)
        poll.give_up()
        time.sleep(interval)
