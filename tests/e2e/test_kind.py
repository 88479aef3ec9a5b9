"""End to end on a real cluster (kind from kind-config.yaml, or any current kubeconfig context).

Installs the chart with the operator image, applies a CPU model whose image really serves
(nginx, from Docker Hub through a Registry, tag pinned to its digest by the operator), waits for
Ready through the Model's conditions as `kubectl wait` would, checks the children, and deletes.
Run with `make dev test-e2e` (IMAGE=modelyard:dev). Without a reachable cluster every test
skips with the reason.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "modelyard-e2e"
RELEASE_NAMESPACE = os.environ.get("RELEASE_NAMESPACE", "modelyard-system")
IMAGE = os.environ.get("IMAGE", "modelyard:dev")
HELM = os.environ.get("HELM", str(ROOT / ".venv" / "bin" / "helm"))


def kubectl(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, input=stdin, timeout=600, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result


def cluster_reachable() -> str | None:
    """None when a cluster answers, else why not."""
    try:
        result = subprocess.run(
            ["kubectl", "version", "--request-timeout=5s", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        return f"kubectl unavailable: {error}"
    if result.returncode != 0 or "serverVersion" not in result.stdout:
        detail = result.stderr.strip()[:200]
        return f"no Kubernetes cluster reachable from the current kubeconfig ({detail})"
    return None


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    why = cluster_reachable()
    if why:
        pytest.skip(f"{why}; create one with `make kind-up docker-build kind-load`")
    repository, _, tag = IMAGE.partition(":")
    subprocess.run(
        [
            HELM,
            "upgrade",
            "--install",
            "modelyard",
            str(ROOT / "charts" / "modelyard"),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--set",
            f"image.repository={repository}",
            "--set",
            f"image.tag={tag or 'latest'}",
            "--wait",
            "--timeout",
            "5m",
        ],
        check=True,
        timeout=600,
    )
    kubectl("create", "namespace", NAMESPACE, check=False)
    yield
    kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def apply(documents: list[dict[str, Any]]) -> None:
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(documents))


def get(kind: str, name: str) -> dict[str, Any]:
    return yaml.safe_load(kubectl("get", kind, name, "-n", NAMESPACE, "-o", "yaml").stdout)


MANIFESTS = [
    {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": "dockerhub"},
        "spec": {"url": "https://registry-1.docker.io"},
    },
    {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": "static-server"},
        "spec": {
            "modelType": "CUSTOM",
            "image": {"registry": "dockerhub", "repository": "library/nginx", "tag": "1.27-alpine"},
            "port": 80,
            "readiness": {"path": "/", "initialDelaySeconds": 1, "periodSeconds": 2},
            "startupTimeoutSeconds": 120,
            "resources": {"cpus": "100m", "memory": "64Mi"},
            "scaling": {"minWorkers": 1, "maxWorkers": 1},
        },
    },
    {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "e2e-server"},
        "spec": {"template": "static-server"},
    },
]


def test_model_becomes_ready_and_its_children_follow_it(installed: None) -> None:
    apply([{**doc, "metadata": {**doc["metadata"], "namespace": NAMESPACE}} for doc in MANIFESTS])
    kubectl("wait", "--for=condition=Ready", "model/e2e-server", "-n", NAMESPACE, "--timeout=300s")
    model = get("model", "e2e-server")
    assert model["status"]["state"] == "READY"
    assert model["status"]["observedGeneration"] == model["metadata"]["generation"]
    assert "@sha256:" in model["status"]["image"], "the tag is pinned to a digest"
    deployment = get("deployment", "e2e-server")
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == model["metadata"]["uid"]
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] == model["status"]["image"]
    )
    get("service", "e2e-server")
    listing = kubectl("get", "modelyard", "-n", NAMESPACE).stdout
    assert "e2e-server" in listing and "static-server" in listing

    kubectl("delete", "model", "e2e-server", "-n", NAMESPACE, "--wait=true", "--timeout=120s")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if kubectl("get", "deployment", "e2e-server", "-n", NAMESPACE, check=False).returncode != 0:
            break
        time.sleep(2)
    else:
        raise AssertionError("the Deployment outlived its Model")


def test_bad_manifest_is_refused_at_apply_time(installed: None) -> None:
    bad = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": "bad", "namespace": NAMESPACE},
        "spec": {"modelType": "CUSTOM", "scaling": {"minWorkers": 3, "maxWorkers": 1}},
    }
    result = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0 and "minWorkers must not exceed maxWorkers" in result.stderr
