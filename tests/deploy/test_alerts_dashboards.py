"""Alert rules (promtool check and unit tests), their PrometheusRule wrapping, and the dashboards:
every metric they query is one the application exports."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support import DEPLOY, tool

ALERTS = DEPLOY / "alerts"
DASHBOARDS = DEPLOY / "dashboards"
PROMTOOL_HINT = "apt-get install -y --no-install-recommends prometheus (Debian ships promtool in it)"

# The application's metrics contract (libs/platform/src/crm_platform/metrics.py, service-ticket's SLA sweeper and
# the gateway's audit trail); counters are exposed with the _total suffix, histograms as _bucket/_sum/_count.
EXPORTED = {
    "crm_grpc_server_requests_total",
    "crm_grpc_server_request_seconds",
    "crm_http_requests_total",
    "crm_http_request_seconds",
    "crm_outbox_backlog",
    "crm_outbox_oldest_age_seconds",
    "crm_outbox_published_total",
    "crm_consumer_handled_total",
    "crm_consumer_redeliveries_total",
    "crm_consumer_lag",
    "crm_consumer_dead_lettered_total",
    "crm_db_pool_in_use",
    "crm_sla_sweeper_last_run_timestamp_seconds",
    "crm_audit_write_failures_total",
}
HISTOGRAMS = {"crm_grpc_server_request_seconds", "crm_http_request_seconds"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = tool("promtool", PROMTOOL_HINT)
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False, cwd=ALERTS)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", "crm.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    result = promtool("test", "rules", "crm.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_a_runbook_section() -> None:
    rules = yaml.safe_load((ALERTS / "crm.rules.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {"CrmGrpcErrorRateHigh", "CrmGrpcLatencyHigh", "CrmOutboxStale", "CrmConsumerLagHigh"} <= alerts
    assert "CrmSlaSweeperStalled" in alerts
    tests = yaml.safe_load((ALERTS / "crm.rules.test.yml").read_text(encoding="utf-8"))
    tested = {
        case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", []) if case.get("exp_alerts")
    }
    assert alerts == tested, f"alerts never shown to fire: {alerts - tested}"
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
                assert f'<a id="{anchor}"></a>' in readme, f"deploy/README.md lacks the runbook for {anchor}"


def test_prometheusrule_is_the_wrapped_rule_file() -> None:
    spec = importlib.util.spec_from_file_location("wrap_rules", DEPLOY / "tools" / "wrap_rules.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (ALERTS / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert current == module.render(), "deploy/alerts/prometheusrule.yaml is stale: run `make deploy-rules`"


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (recording rules are crm:…, so they do not match)."""
    names = set()
    for name in re.findall(r"\b(crm_[a-z0-9_]+)\b", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def dashboard_exprs(path: Path) -> list[str]:
    board = json.loads(path.read_text(encoding="utf-8"))
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    rules = yaml.safe_load((ALERTS / "crm.rules.yml").read_text(encoding="utf-8"))
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


@pytest.mark.parametrize("source", ["crm.rules.yml", "crm-red.json", "crm-events.json"])
def test_queries_use_only_exported_metrics(source: str) -> None:
    exprs = rule_exprs() if source.endswith(".yml") else dashboard_exprs(DASHBOARDS / source)
    assert exprs
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= EXPORTED, f"{source} queries metrics nobody exports: {used - EXPORTED}"


def test_dashboards_cover_red_and_the_event_pipeline() -> None:
    red = set().union(*(metric_names(e) for e in dashboard_exprs(DASHBOARDS / "crm-red.json")))
    events = set().union(*(metric_names(e) for e in dashboard_exprs(DASHBOARDS / "crm-events.json")))
    assert {
        "crm_grpc_server_requests_total",
        "crm_grpc_server_request_seconds",
        "crm_http_requests_total",
        "crm_http_request_seconds",
    } <= red
    assert {"crm_outbox_backlog", "crm_outbox_oldest_age_seconds", "crm_consumer_lag"} <= events
    assert {"crm_consumer_redeliveries_total", "crm_consumer_dead_lettered_total"} <= events
    for path in DASHBOARDS.glob("*.json"):
        board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        assert board["uid"] == path.stem
