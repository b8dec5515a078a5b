"""The ops dashboard's time ranges: how far back a chart looks and the step its points fold into.

The gateway samples the cluster once a second (``gateway.ops``) and keeps 15 minutes of those
samples; a longer range is served from a :class:`Rollup` per range, which folds the samples
into buckets of the range's step as they come (``10 min`` -> 1 s samples as they are,
``1 h`` -> 10 s, ``6 h`` -> 1 min, ``24 h`` -> 4 min: at most 361 points a chart). A bucket
keeps, per field, the mean of its samples (rates), their maximum (online: the bucket's peak),
or the last one (running totals and mappings such as stock left per sale), so a long range
shows the same quantities as the live one. History starts when the node started: each
gateway samples the whole cluster, so any node answers for all of it.

Pure: values in, values out; no clock, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BadFrame

#: range in seconds -> step in seconds (the picker's choices)
RANGES_S: dict[int, int] = {600: 1, 3600: 10, 21_600: 60, 86_400: 240}
LIVE_RANGE_S = 600  # served from the one-second samples themselves
FAST_PEAK = frozenset({"online", "nodes"})
FAST_LAST = frozenset({"rooms"})
COMMERCE_PEAK = frozenset({"timeouts_last_min"})
COMMERCE_LAST = frozenset({"gmv", "orders", "paid", "buyers", "remaining"})


def range_of(raw: str | None) -> int:
    """The range a request asks for (``range_s``; absent: the live 10 minutes).

    Raises:
        BadFrame: (``invalid``) not one of :data:`RANGES_S`.
    """
    if raw is None or raw == "":
        return LIVE_RANGE_S
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value not in RANGES_S:
        raise BadFrame(f"range_s: one of {', '.join(str(r) for r in RANGES_S)} (seconds), got {raw!r}", code="invalid")
    return value


@dataclass(slots=True)
class _Bucket:
    start_ms: int
    n: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)

    def add(self, sample: Mapping[str, Any], peak: frozenset[str], last: frozenset[str]) -> None:
        self.n += 1
        for k, v in sample.items():
            if k == "ts":
                continue
            if k in last or not isinstance(v, int | float) or isinstance(v, bool):
                self.last[k] = v
            elif k in peak:
                self.peaks[k] = max(self.peaks.get(k, v), v)
            else:
                self.sums[k] = self.sums.get(k, 0.0) + v

    def point(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.start_ms}
        out.update({k: round(v / self.n, 3) for k, v in self.sums.items()})
        out.update(self.peaks)
        out.update(self.last)
        return out


class Rollup:
    """Samples (``{"ts": ms, field: value, ...}``) folded into buckets of ``step_ms``; the
    last ``keep`` buckets are kept. A point's ``ts`` is its bucket's start."""

    def __init__(self, step_ms: int, keep: int, *, peak: frozenset[str] = frozenset(), last: frozenset[str] = frozenset()) -> None:
        if step_ms <= 0 or keep <= 0:
            raise ValueError("step_ms and keep must be positive")
        self.step_ms = step_ms
        self.peak = peak
        self.last = last
        self._done: deque[_Bucket] = deque(maxlen=keep)
        self._open: _Bucket | None = None

    def add(self, sample: Mapping[str, Any]) -> None:
        """Fold one sample in (samples come in time order; an older one joins the open bucket)."""
        start = int(sample["ts"]) // self.step_ms * self.step_ms
        if self._open is None or start > self._open.start_ms:
            if self._open is not None:
                self._done.append(self._open)
            self._open = _Bucket(start)
        self._open.add(sample, self.peak, self.last)

    def points(self, since_ms: int = 0) -> list[dict[str, Any]]:
        """The buckets that start after ``since_ms``, oldest first, the open one last."""
        buckets = [*self._done, *([self._open] if self._open is not None else [])]
        return [b.point() for b in buckets if b.start_ms > since_ms]


def rollups(*, peak: frozenset[str], last: frozenset[str]) -> dict[int, Rollup]:
    """One :class:`Rollup` per range longer than the live one."""
    return {r: Rollup(step * 1000, r // step + 1, peak=peak, last=last) for r, step in RANGES_S.items() if r != LIVE_RANGE_S}
