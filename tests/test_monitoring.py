"""The chart's dashboard and alerts, asked of a real Prometheus scraping a real operator.

promtool's unit tests (test_alerts.py) prove each alert's logic on series written by hand; only
a real scrape proves the series exist with those names and labels. Here Prometheus (Debian's
package) scrapes the operator every second and evaluates files/alerts.yaml, while the operator
serves a Model on the real node and meets the troubles the alerts are about: a Model without
its template, an unreachable registry, a version it cannot verify, a tag moved off its digest,
an autoscaler without metrics, a failed status write. Every dashboard query and every alert's
condition then returns series, and the alerts whose trouble is present are pending or firing.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.cluster import Cluster, RealNode
from support.controllers import HPAS, MODELS, apply_documents, model_state
from support.operator_process import OperatorProcess, eventually, free_port
from support.tools import required
from support.workloads import registry_documents, served_documents

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "charts" / "modelyard" / "files" / "alerts.yaml"
DASHBOARD = ROOT / "charts" / "modelyard" / "files" / "dashboard.json"
#: A release key nobody signed the model server with: its signature checks count as missing.
PUBLIC_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
#: Alerts the scenario below makes true (pending, since most wait minutes before firing).
PRESENT = {
    "ModelyardModelsNotReady",
    "ModelyardRegistryUnreachable",
    "ModelyardVersionNotVerified",
    "ModelyardDigestMismatch",
    "ModelyardAutoscalerUnable",
}


def prometheus_binary() -> str:
    return required("prometheus", "prometheus")


class Prometheus:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.process = process
        self.log = log

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=10) as answer:
            payload = json.loads(answer.read())
        assert payload["status"] == "success", payload
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result


@pytest.fixture
async def prometheus(tmp_path: Path, node_operator: OperatorProcess) -> AsyncIterator[Prometheus]:
    binary = prometheus_binary()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "modelyard-metrics",
                        "static_configs": [
                            {"targets": [f"127.0.0.1:{node_operator.metrics_port}"]}
                        ],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(port, process, log)

    def scraping() -> bool:
        try:
            return bool(server.query('up{job="modelyard-metrics"} == 1'))
        except OSError:
            return False

    try:
        await eventually(scraping, 30, lambda: f"Prometheus scraping:\n{log.read_text()[-2000:]}")
        yield server
    finally:
        process.terminate()
        process.wait(10)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard, with Grafana's interval
    variable as Grafana would fill it in."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def alert_conditions() -> list[tuple[str, str]]:
    """(alert, the series it judges): its expression without the final comparison (or, for
    `absent(x)`, x itself), which must return series whether or not the alert fires."""
    found = []
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            expression = rule["expr"].strip()
            absent = re.fullmatch(r"absent\((.*)\)", expression, re.S)
            if absent:
                expression = absent.group(1)
            else:
                expression = re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.]+$", "", expression)
            found.append((rule["alert"], expression))
    return found


def test_every_query_is_tested() -> None:
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    assert panels and all(panel.get("targets") for panel in panels)
    assert len(dashboard_queries()) >= len(panels)
    assert {alert for alert, _ in alert_conditions()} >= PRESENT


async def test_dashboard_and_alerts_return_series_from_a_real_scrape(
    cluster: Cluster,
    real_node: RealNode,
    node_operator: OperatorProcess,
    prometheus: Prometheus,
) -> None:
    ns = cluster.namespace
    # A Model that serves (time to READY, an HPA without custom metrics: cannot autoscale).
    await apply_documents(cluster, served_documents(real_node, min_workers=1, max_workers=2))
    # A status write refused once: a reconcile error.
    cluster.fail("PATCH", rf"/namespaces/{ns}/models/orphan/status$", 500, times=2)
    orphan = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "orphan"},
        "spec": {"template": "no-such-template"},
    }
    offline = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": "offline"},
        "spec": {"url": "http://127.0.0.1:9", "checkIntervalSeconds": 10},
    }
    unverifiable = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "unverifiable-1-0-0"},
        "spec": {
            "model": "unverifiable",
            "version": "1.0.0",
            "registry": "offline",
            "repository": "acme/unverifiable",
            "tag": "1.0.0",
            "digest": "sha256:" + "0" * 64,
        },
    }
    # The tag moved to another image than the pinned digest.
    moved = await asyncio.to_thread(real_node.push, "moved", "elsewhere")
    assert moved != real_node.digest
    mismatched = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "served-2-0-0"},
        "spec": {
            "model": "served",
            "version": "2.0.0",
            "registry": registry_documents(real_node)[1]["metadata"]["name"],
            "repository": real_node.repository,
            "tag": "moved",
            "digest": real_node.digest,
        },
    }
    # A Registry that asks for signatures: its version's signature is checked (and counted).
    signed_registry = registry_documents(real_node)[1]
    signed_registry["metadata"]["name"] = "signed"
    signed_registry["spec"]["signatures"] = {"publicKeys": [{"secretName": "release-key"}]}
    release_key = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "release-key", "labels": {"modelyard.dev/use": "true"}},
        "stringData": {"cosign.pub": PUBLIC_KEY},
    }
    unsigned = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "served-3-0-0"},
        "spec": {
            "model": "served",
            "version": "3.0.0",
            "registry": "signed",
            "repository": real_node.repository,
            "digest": real_node.digest,
        },
    }
    await apply_documents(
        cluster,
        [orphan, offline, unverifiable, mismatched, signed_registry, release_key, unsigned],
    )
    await eventually(
        lambda: model_state(cluster, "served-model")[0] == "READY",
        90,
        "the served Model READY",
        node_operator,
    )
    assert cluster.get(MODELS, ns, "orphan") is not None

    queries = dashboard_queries() + alert_conditions()

    def empty() -> list[str]:
        return [f"{title}: {expr}" for title, expr in queries if not prometheus.query(expr)]

    def alerting() -> set[str]:
        return {
            series["metric"]["alertname"]
            for series in prometheus.query("ALERTS")
            if series["metric"]["alertstate"] in ("pending", "firing")
        }

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (empty() or PRESENT - alerting()):
        await asyncio.sleep(1)
    assert empty() == [], (
        f"queries without series; the HPA: {cluster.get(HPAS, ns, 'served-model')}"
    )
    assert PRESENT - alerting() == set(), f"alerts not pending or firing: {alerting()}"
    # Nothing is wrong with the operator itself.
    assert not alerting() & {
        "ModelyardOperatorDown",
        "ModelyardNoLeader",
        "ModelyardSeveralLeaders",
    }
