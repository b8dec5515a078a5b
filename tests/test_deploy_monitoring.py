"""deploy/: the Prometheus alerting rules pass ``promtool check rules`` and cover every ops
alert; the Grafana dashboard is a well-formed dashboard (a JSON schema of the parts Grafana
needs) whose every query names metrics that a real gateway or a real worker process exports
(both scraped here, parsed with prometheus_client's text parser)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from livecommerce.alerts import ALERTS
from livecommerce.config import Settings
from livecommerce.keys import Keys
from livecommerce.log_redis import RedisLog
from livecommerce.migrations import upgrade
from tests.fixtures_gateway import GatewayFactory
from tests.test_worker_metrics import _env, events, free_port, start_worker
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
RULES = sorted(DEPLOY.glob("*.yml"))

# The parts of Grafana's dashboard model (schemaVersion 39) a dashboard cannot do without:
# Grafana refuses or silently empties a panel missing these.
_DS = {"type": "object", "required": ["type", "uid"],
       "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}}}
_GRID = {"type": "object", "required": ["x", "y", "w", "h"],
         "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 23}, "y": {"type": "integer", "minimum": 0},
                        "w": {"type": "integer", "minimum": 1, "maximum": 24}, "h": {"type": "integer", "minimum": 1}}}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array", "contains": {
            "type": "object", "required": ["name", "type", "query"],
            "properties": {"name": {"const": "datasource"}, "type": {"const": "datasource"}, "query": {"const": "prometheus"}}}}}},
        "panels": {"type": "array", "minItems": 1, "items": {"oneOf": [
            {"type": "object", "required": ["id", "type", "title", "gridPos"],
             "properties": {"type": {"const": "row"}, "id": {"type": "integer"}, "gridPos": _GRID}},
            {"type": "object", "required": ["id", "type", "title", "gridPos", "datasource", "targets"],
             "properties": {
                 "type": {"enum": ["timeseries", "stat", "gauge", "table", "bargauge"]},
                 "id": {"type": "integer"}, "title": {"type": "string", "minLength": 1}, "gridPos": _GRID, "datasource": _DS,
                 "targets": {"type": "array", "minItems": 1, "items": {
                     "type": "object", "required": ["refId", "expr"],
                     "properties": {"refId": {"type": "string", "pattern": "^[A-Z]$"}, "expr": {"type": "string", "minLength": 1},
                                    "datasource": _DS}}}}},
        ]}},
    },
}

# metrics this project exports are named lc_* (ours) and process_* (prometheus_client's
# process collector); `up` and `ALERTS` are Prometheus's own
_OURS = re.compile(r"\b((?:lc|process)_[a-zA-Z0-9_]+)\b")


def metric_names(expr: str) -> set[str]:
    """The lc_* and process_* metric names a PromQL expression reads (label values in quotes
    are left out)."""
    return set(_OURS.findall(re.sub(r'"[^"]*"', '""', expr)))


def exported_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition offers, by prometheus_client's parser:
    the families (with counters' ``_total`` and histograms' ``_bucket``/``_sum``/``_count``,
    even before a labelled family has a child) and every sample."""
    out: set[str] = set()
    for fam in text_string_to_metric_families(text):
        out.add(fam.name)
        if fam.type == "counter":
            out.add(fam.name + "_total")
        elif fam.type == "histogram":
            out.update(fam.name + s for s in ("_bucket", "_sum", "_count"))
        out.update(s.name for s in fam.samples)
    return out


def unknown_metrics(exprs: list[str], exported: set[str]) -> dict[str, set[str]]:
    """``{expr: names}`` of the expressions naming a metric nobody exports."""
    return {e: bad for e in exprs if (bad := metric_names(e) - exported)}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_exprs(d: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    return exprs + [a["expr"] for a in d.get("annotations", {}).get("list", []) if "expr" in a]


def rule_exprs() -> list[str]:
    return [r["expr"] for f in RULES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    d = dashboard()
    jsonschema.validate(d, SCHEMA)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in d["panels"]:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, f"{p['title']} overflows the 24-column grid"
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), f"{p['title']}: refIds are unique"
    titles = " ".join(p["title"].lower() for p in d["panels"])
    # the ops page's panels (gateway/static/ops.html) and the workers'
    for needed in ("online", "comments/s", "orders", "gmv", "errors", "alerts", "consumer lag", "last commit age", "memory", "cpu"):
        assert needed in titles, f"no panel for {needed}"


def test_the_schema_refuses_what_grafana_cannot_show() -> None:
    d = dashboard()
    no_targets = json.loads(json.dumps(d))
    no_targets["panels"][1]["targets"] = []
    fixed_ds = json.loads(json.dumps(d))
    fixed_ds["panels"][1]["datasource"] = {"type": "prometheus", "uid": "my-prom"}
    for bad in (no_targets, fixed_ds, {**d, "schemaVersion": "39"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


def test_the_metric_check_finds_a_name_nobody_exports() -> None:
    exported = exported_names("# HELP lc_x_total x\n# TYPE lc_x_total counter\nlc_x_total 3\n")
    assert unknown_metrics(['sum(rate(lc_x_total[1m]))', 'max(lc_alert_active{alert="lc_not_a_metric"})'], exported) == {
        'max(lc_alert_active{alert="lc_not_a_metric"})': {"lc_alert_active"}}


def test_the_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian: apt-get install -y prometheus); .ci/run installs it")
        pytest.skip("promtool is not installed (Debian: apt-get install -y prometheus)")
    r = subprocess.run([promtool, "check", "rules", *map(str, RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_the_rules_cover_every_ops_alert_and_the_workers() -> None:
    exprs = " ".join(rule_exprs())
    for alert in ALERTS:
        assert f'alert="{alert}"' in exprs, f"no rule for the ops alert {alert}"
    for metric in ("lc_worker_consumer_lag", "lc_worker_last_commit_age_seconds", "lc_worker_loop_up",
                   "lc_worker_handler_errors_total", 'up{job="livecommerce-worker"}'):
        assert metric in exprs, f"no rule on {metric}"


async def test_every_metric_the_dashboard_and_rules_name_is_exported_by_a_gateway_or_a_worker(
    gateway_factory: GatewayFactory, settings: Settings, redis: Any, tmp_path: Path
) -> None:
    node = await gateway_factory()
    async with aiohttp.ClientSession() as http, http.get(node.url + "/metrics") as r:
        assert r.status == 200
        gateway_text = await r.text()
    db = f"sqlite+aiosqlite:///{tmp_path}/w.db"
    await upgrade(db)
    await RedisLog(redis, Keys(settings.key_prefix)).append_many(events(5))
    port = free_port()
    proc = start_worker("wallet", port, _env(settings, db))
    try:
        async def worker_text() -> str:
            assert proc.poll() is None, f"the worker exited with {proc.returncode}"
            try:
                async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    text = await r.text()
            except aiohttp.ClientConnectionError as exc:
                raise AssertionError(f"no answer: {exc}") from exc
            assert "lc_worker_consumer_lag{" in text, "the lag polled"
            return text

        text = await wait_until(worker_text, timeout=30, what="the worker's /metrics with its lag")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    exported = exported_names(gateway_text) | exported_names(text)
    d = dashboard()
    named = set().union(*(metric_names(e) for e in dashboard_exprs(d)))
    assert {"lc_worker_consumer_lag", "lc_ops_online", "process_resident_memory_bytes"} <= named
    assert unknown_metrics(dashboard_exprs(d), exported) == {}, "the dashboard names metrics nobody exports"
    assert unknown_metrics(rule_exprs(), exported) == {}, "the rules name metrics nobody exports"
    # the process metrics are on both kinds of process
    for text_ in (gateway_text, text):
        assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                "process_start_time_seconds"} <= exported_names(text_)
