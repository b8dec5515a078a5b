"""docs/deploy.md says what the code does: its HAProxy block is the configuration `cluster
up` generates (TLS and two marked production values aside), and its worker table lists every
worker kind."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from livecommerce.devcluster.topology import find_haproxy, haproxy_config
from workers.registry import WORKERS

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"
# lines a production site writes differently from the local topology (said in the doc)
LOCAL_ONLY = re.compile(r"^(bind |server |maxconn |tcp-request connection reject |frontend stats|stats )")


def _doc_block() -> str:
    text = DEPLOY.read_text()
    m = re.search(r"```haproxy\n(.*?)```", text, re.S)
    assert m, "docs/deploy.md has no haproxy block"
    return m.group(1)


def _lines(cfg: str) -> list[str]:
    out = []
    for raw in cfg.splitlines():
        line = re.sub(r"\s+#.*$", "", raw).strip()
        if line and not line.startswith("#"):
            out.append(re.sub(r"\s+", " ", line))
    return out


def test_the_documented_haproxy_block_is_what_cluster_up_generates() -> None:
    generated = haproxy_config([("gw1", 9001), ("gw2", 9002)], 9000, 9009)
    doc = _lines(_doc_block())
    gen = _lines(generated.split("frontend stats")[0])
    missing = [line for line in gen if not LOCAL_ONLY.match(line) and line not in doc]
    assert not missing, f"generated but not in docs/deploy.md: {missing}"
    extra = [line for line in doc if not LOCAL_ONLY.match(line) and line not in gen
             and not line.startswith("http-request redirect")]
    assert not extra, f"in docs/deploy.md but not generated: {extra}"
    # the servers' check options are the same
    gen_servers = {line.split(" ", 3)[3] for line in gen if line.startswith("server ")}
    doc_servers = {line.split(" ", 3)[3] for line in doc if line.startswith("server ")}
    assert gen_servers == doc_servers


@pytest.mark.skipif(find_haproxy() is None and shutil.which("haproxy") is None, reason="haproxy not installed")
def test_haproxy_accepts_the_generated_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "h.cfg"
    cfg.write_text(haproxy_config([("gw1", 9001), ("gw2", 9002)], 9000, 9009))
    binary = find_haproxy() or "haproxy"
    r = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_worker_table_lists_every_worker_kind() -> None:
    text = DEPLOY.read_text()
    missing = [kind for kind in WORKERS if f"| `{kind}` |" not in text]
    assert not missing, f"docs/deploy.md's worker table lacks {missing}"
