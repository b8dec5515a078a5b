"""The gateway process's garbage-collector policy: what outlives a full collection leaves its scans.

Why: a node holds about a hundred collector-tracked objects per open connection, for as long
as the connection lives. A full (generation 2) collection walks every one of them: measured
354 ms with 5,000 connections (551,000 objects), 425-715 ms when one fell inside a flash-sale
rush, and CPython starts one whenever the objects promoted since the last one reach a quarter
of the old generation, which a rush's in-flight buys and a join storm's handshakes do. The
node's loop stands still meanwhile: no buy is answered, no room flushed (docs/performance.md,
"M2 3/7 buy storm").

Policy: what survived a full collection is live, so it is frozen there (``gc.freeze``: the
permanent generation, never scanned), and the next full collections walk only what was
created since. Cyclic garbage made later of frozen objects (a connection closed since, whose
objects form cycles) cannot be reclaimed while they are frozen, so every ``unfreeze_s`` the
frozen objects go back to the oldest generation: the next full collection walks everything
once, reclaims it, and freezes the survivors again. Memory held by such garbage is bounded by
what the node frees in one period; one full-length pause per period remains.

Only the ``livecommerce gateway`` process installs it (:func:`gateway.app.run`): tests build
nodes inside a shared interpreter whose ResourceWarning checks rely on the collector.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("livecommerce.gateway.gc")


class GcPolicy:
    """Freeze the survivors of each full collection; thaw them every ``unfreeze_s``.

    ``on_second`` is the node's once-a-second hook (it only thaws when the period is over).
    """

    def __init__(self, *, unfreeze_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.unfreeze_s = unfreeze_s
        self._clock = clock
        self._thawed_at = clock()
        self.full_collections = 0

    def install(self) -> None:
        """Freeze what start-up made (modules, the application) and follow full collections."""
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            self.full_collections += 1
            gc.freeze()  # what is tracked now survived the collection that just ended

    async def on_second(self) -> None:
        now = self._clock()
        if now - self._thawed_at >= self.unfreeze_s:
            self._thawed_at = now
            thawed = gc.get_freeze_count()
            gc.unfreeze()
            log.info("gc.thawed", extra={"objects": thawed, "full_collections": self.full_collections})
