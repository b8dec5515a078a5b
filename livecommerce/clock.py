"""The one wall clock: what every component that needs "now" calls when it is not given it.

Pure rules never call it: they take ``now_ms`` as an argument (STYLE.md), and the callers at
the edges (gateway handlers, workers, adapters that default a timestamp) pass this one in.
Tests that need another time pass their own ``now_ms``.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch (wall clock: comparable across processes)."""
    return int(time.time() * 1000)


def now_s() -> int:
    """Whole seconds since the Unix epoch (token ``iat``/``exp``)."""
    return int(time.time())
