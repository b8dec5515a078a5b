"""The gateway process's collector policy (gateway/gc_policy.py), run in a child interpreter:
freezing affects a whole process, and this one's ResourceWarning checks need the collector."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import asyncio, gc, json
    from gateway.gc_policy import GcPolicy

    class Cycle:
        def __init__(self): self.me = self

    now = [0.0]
    policy = GcPolicy(unfreeze_s=600, clock=lambda: now[0])
    policy.install()
    after_install = gc.get_freeze_count()
    keep = [Cycle() for _ in range(1000)]          # live: frozen by the next full collection
    gc.collect()
    frozen = gc.get_freeze_count()
    full = policy.full_collections
    del keep                                       # now cyclic garbage, but frozen: not reclaimed
    still = gc.collect()
    before = gc.get_freeze_count()
    now[0] = 599.0
    asyncio.run(policy.on_second())
    early = gc.get_freeze_count()
    now[0] = 600.0
    asyncio.run(policy.on_second())                # the period is over: thawed
    thawed = gc.get_freeze_count()
    reclaimed = gc.collect()                       # walks everything again and frees the cycles
    print(json.dumps(dict(after_install=after_install, frozen=frozen, full=full, still=still, before=before, early=early,
                          thawed=thawed, reclaimed=reclaimed, refrozen=gc.get_freeze_count())))
    policy.uninstall()
    """
)


def test_survivors_of_a_full_collection_are_frozen_and_thawed_once_a_period_so_cycles_are_reclaimed() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(out.stdout)
    assert got["after_install"] > 0  # start-up's objects
    assert got["frozen"] >= got["after_install"] + 1000 and got["full"] == 1
    assert got["still"] < 1000  # the frozen cycles are not reclaimed while frozen
    assert got["early"] == got["before"] > 0  # not before the period
    assert got["thawed"] == 0
    assert got["reclaimed"] >= 1000 and got["refrozen"] > 0  # the thaw's collection frees them and freezes the rest
