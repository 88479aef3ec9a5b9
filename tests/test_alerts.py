"""The chart's alerts: valid rules, each alert tested by promtool with series that should and
should not fire it (tests/prometheus/alerts_test.yaml), and the PrometheusRule the chart renders
holds exactly those rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from support.cluster import render_chart
from support.tools import required

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "charts" / "modelyard" / "files" / "alerts.yaml"
TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yaml"


def promtool() -> str:
    return required("promtool", "prometheus")


def test_the_rules_are_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_when_it_should_and_not_before() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", TESTS.name],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    defined = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    assert defined == tested, f"alerts without a test: {sorted(defined - tested)}"


def test_the_chart_ships_them_as_a_prometheus_rule(tmp_path: Path) -> None:
    assert not [d for d in render_chart(tmp_path) if d["kind"] == "PrometheusRule"]
    (rule,) = [
        d
        for d in render_chart(
            tmp_path,
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=kube-prometheus",
        )
        if d["kind"] == "PrometheusRule"
    ]
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
