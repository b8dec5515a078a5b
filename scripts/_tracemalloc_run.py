"""Run a Python program under tracemalloc; each SIGUSR1 takes a snapshot.

``python scripts/_tracemalloc_run.py OUT.json -m livecommerce.cli gateway --port 8099``
(or a script path instead of ``-m module``). The second and every later SIGUSR1 write
``OUT.json``: the allocation sites that grew since the first snapshot (bytes, blocks,
``file:line``), the traced totals, and the same grouped by file. Used by ``bench_conns.py``
to see what an idle connection holds, without touching the program's code.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import sys
import tracemalloc
from typing import Any

FRAMES = int(os.environ.get("BENCH_TM_FRAMES", "1"))
_snaps: list[tracemalloc.Snapshot] = []
_FILTERS = [
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
]


def _dump(out: str) -> None:
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(_FILTERS)
    _snaps.append(snap)
    if len(_snaps) < 2:
        return
    first = _snaps[0]
    lines = snap.compare_to(first, "lineno")
    files = snap.compare_to(first, "filename")
    res: dict[str, Any] = {
        "traced_first": sum(s.size for s in first.statistics("filename")),
        "traced_now": sum(s.size for s in snap.statistics("filename")),
        "lines": [
            {"size": s.size_diff, "count": s.count_diff, "where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}"}
            for s in lines[:80]
            if s.size_diff
        ],
        "files": [{"size": s.size_diff, "count": s.count_diff, "where": s.traceback[0].filename} for s in files[:40] if s.size_diff],
    }
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=1)
    os.replace(tmp, out)


def main() -> None:
    out = sys.argv[1]
    rest = sys.argv[2:]
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, lambda *_: _dump(out))
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        sys.path[0] = os.getcwd()  # as `python -m` does: the checkout's code, not an installed copy
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
