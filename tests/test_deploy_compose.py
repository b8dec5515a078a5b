"""deploy/compose.yaml is the production topology of docs/deploy.md: every worker kind runs,
the balancer lists every gateway with the configuration `cluster up` generates, nothing
starts without LC_SECRET, and Compose itself accepts the file (``docker compose config`` or
Debian's ``docker-compose config``, when one is installed: CI installs the latter)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from livecommerce.devcluster.topology import haproxy_config
from workers.registry import WORKERS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SECRET = "0123456789abcdef0123456789abcdef"


def _services() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    return dict(doc["services"])


def _lc(services: dict[str, Any]) -> dict[str, Any]:
    return {n: s for n, s in services.items() if isinstance(s.get("command"), list) and s["command"][:1] == ["livecommerce"]}


def test_every_worker_kind_runs_and_money_workers_run_twice() -> None:
    runs: dict[str, int] = {}
    for s in _lc(_services()).values():
        cmd = s["command"]
        if cmd[1] == "worker":
            runs[cmd[2]] = runs.get(cmd[2], 0) + 1
    assert set(runs) == set(WORKERS), set(WORKERS) ^ set(runs)
    assert all(runs[k] >= 2 for k in ("orders", "wallet", "points")), runs


def test_every_livecommerce_process_needs_the_secret_and_has_a_health_check() -> None:
    for name, s in _lc(_services()).items():
        env = s["environment"]
        assert env["LC_SECRET"].startswith("${LC_SECRET:?"), name
        cmd = s["command"]
        if cmd[1] == "worker":
            # the image's HEALTHCHECK asks the worker's metrics port for /healthz
            assert env.get("LC_WORKER_METRICS_PORT") not in (None, "0"), name
        if cmd[1] in ("gateway", "worker"):
            assert "migrate" in s["depends_on"] and s["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "LC_WORKER_METRICS_PORT" in dockerfile


def test_the_balancer_lists_every_gateway_with_the_generated_configuration() -> None:
    services = _services()
    gateways = sorted(n for n, s in _lc(services).items() if s["command"][1] == "gateway")
    assert len(gateways) >= 2
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server \S+ (\S+):8080 (.*)$", cfg, re.M)
    assert sorted(host for host, _ in servers) == gateways
    generated = haproxy_config([("gw1", 9001)], 9000, 9009)
    gen_opts = re.search(r"server gw1 127.0.0.1:9001 (.*)$", generated, re.M)
    assert gen_opts and {opts for _, opts in servers} == {gen_opts.group(1)}

    def lines(text: str) -> set[str]:
        out = set()
        for raw in text.splitlines():
            line = re.sub(r"\s+#.*$", "", raw).strip()
            if line and not line.startswith("#") and not re.match(r"(bind |server |maxconn |tcp-request connection reject |"
                                                                  r"resolvers |nameserver |hold |default-server )", line):
                out.add(re.sub(r"\s+", " ", line))
        return out

    assert lines(generated) == lines(cfg), lines(generated) ^ lines(cfg)


def _compose() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(_compose() is None, reason="neither `docker compose` nor docker-compose is installed (CI installs docker-compose)")
def test_compose_accepts_the_file_and_refuses_to_start_without_the_secret() -> None:
    cmd = [*(_compose() or []), "-f", str(COMPOSE), "config", "-q"]
    env = {k: v for k, v in os.environ.items() if k != "LC_SECRET"}
    ok = subprocess.run(cmd, capture_output=True, text=True, env={**env, "LC_SECRET": SECRET}, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode != 0 and "LC_SECRET" in refused.stdout + refused.stderr
