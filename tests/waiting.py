"""Waiting on a condition instead of sleeping: the suite's one poll-until helper.

``check`` is a plain function or a coroutine function, called every ``interval`` seconds. A
truthy result ends the wait and is returned; a falsy result, or an ``AssertionError`` raised by
``check``, means "not yet". On timeout an ``AssertionError`` names what was awaited and the
last thing ``check`` saw (its last result, or its last assertion message), so a failure says
how far things got::

    order = await wait_until(lambda: store.get_order(oid), what="the order in SQL")

With ``asserts=True``, ``check`` is an assertion block: it holds when it returns ``None``
without raising, and the message of its last failed assertion is reported::

    async def caught_up() -> None:
        assert await store.points_balance("u1") == 20, "u1's points"

    await wait_until(caught_up, asserts=True, what="the points worker")

Wait on the condition the next assertion needs, never on "enough time"; sleeps that remain in
tests make time pass on purpose (a window closing, a clock ticking, pacing).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

TIMEOUT_S = 10.0
INTERVAL_S = 0.05


def _timed_out(what: str, timeout: float, last: Any) -> AssertionError:
    seen = str(last) if isinstance(last, AssertionError) else repr(last)
    return AssertionError(f"timed out after {timeout:g}s waiting for {what}; last observed: {seen}")


def _done(got: Any, asserts: bool) -> bool:
    return got is None if asserts else bool(got)


async def wait_until(check: Callable[[], Any], *, timeout: float = TIMEOUT_S, interval: float = INTERVAL_S,
                     what: str = "the condition", asserts: bool = False) -> Any:
    """Call ``check()`` every ``interval`` seconds until it holds; return its last result.

    ``asserts=True``: ``check`` is an assertion block (returns ``None`` when it holds).
    Raises:
        AssertionError: not within ``timeout`` seconds (``what`` and the last observation).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
            if inspect.isawaitable(got):
                got = await got
        except AssertionError as exc:
            got, last = None, exc
            held = False
        else:
            last, held = got, _done(got, asserts)
        if held:
            return got
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(interval)


def wait_until_sync(check: Callable[[], Any], *, timeout: float = TIMEOUT_S, interval: float = INTERVAL_S,
                    what: str = "the condition", asserts: bool = False) -> Any:
    """``wait_until`` for code with no running event loop (blocks the thread)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except AssertionError as exc:
            got, last = None, exc
            held = False
        else:
            last, held = got, _done(got, asserts)
        if held:
            return got
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)
