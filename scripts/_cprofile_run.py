"""Run a Python program with cProfile switched on and off by SIGUSR1.

``python scripts/_cprofile_run.py OUT -m livecommerce.cli gateway --port 8099`` (or a
script path instead of ``-m module``). The first SIGUSR1 starts profiling, the second stops
it and writes ``OUT.pstats`` (``python -m pstats OUT.pstats``) and ``OUT.txt`` (the top
functions by own time and by cumulative time, with call counts: what one connection costs
is the counts divided by the connections opened). Used by ``bench_conns.py --profile`` to
profile exactly the connect phase, without touching the program's code.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import runpy
import signal
import sys

_prof = cProfile.Profile()
_state = {"on": False}


def _toggle(out: str) -> None:
    if not _state["on"]:
        _state["on"] = True
        _prof.enable()
        return
    _prof.disable()
    _state["on"] = False
    _prof.dump_stats(out + ".pstats")
    buf = io.StringIO()
    st = pstats.Stats(_prof, stream=buf)
    st.sort_stats("tottime").print_stats(45)
    st.sort_stats("cumulative").print_stats(70)
    tmp = out + ".txt.tmp"
    with open(tmp, "w") as f:
        f.write(buf.getvalue())
    os.replace(tmp, out + ".txt")


def main() -> None:
    out = sys.argv[1]
    rest = sys.argv[2:]
    signal.signal(signal.SIGUSR1, lambda *_: _toggle(out))
    if rest[0] == "-m":
        sys.path[0] = os.getcwd()  # as ``python -m`` has it (not this script's folder)
        sys.argv = [rest[1], *rest[2:]]
        sys.path[0] = os.getcwd()  # as `python -m` does: the checkout's code, not an installed copy
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
