"""Flux sees failures: what cli-utils' kstatus (`status.Compute`, the library behind Flux's
health checks) concludes about each kind as the operator leaves it on the real API server.

Failed when only a change can help (Flux fails the health check at once), InProgress while the
operator is at work or waits for something that may still come, Current when Ready. The
rollout and scale cases, which need real pods, are in test_node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support import kstatus
from support.cluster import Cluster
from support.controllers import (
    DEPLOYMENTS,
    MODELS,
    REGISTRIES,
    TEMPLATES,
    apply_documents,
)
from support.examples import example
from support.operator_process import OperatorProcess, eventually
from support.registry import LocalRegistry, require_tools
from test_operator import offline_registry

VERSIONS = "modelyard.dev/v1alpha1/modelversions"


@pytest.fixture
async def operator(cluster: Cluster, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    process = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    yield process
    await process.stop()


async def concludes(
    cluster: Cluster,
    operator: OperatorProcess,
    resource: str,
    name: str,
    wanted: str,
) -> str:
    """Wait until kstatus says `wanted` of the object; its message."""
    seen: list[tuple[str, str]] = []

    def compute() -> bool:
        found = cluster.get(resource, cluster.namespace, name)
        if found is None:
            return False
        seen.append(kstatus.compute(found))
        return seen[-1][0] == wanted

    await eventually(
        compute, 30, lambda: f"kstatus {wanted} for {name} (last {seen[-1:]})", operator
    )
    return seen[-1][1]


def with_required_parameter(template: dict[str, Any]) -> dict[str, Any]:
    template["spec"]["parameters"].append(
        {"name": "MODEL_PATH", "type": "str", "required": True, "description": "where weights are"}
    )
    return template


async def test_models(cluster: Cluster, operator: OperatorProcess) -> None:
    template = with_required_parameter(example("ModelTemplate", "cpu-embedding"))
    await apply_documents(
        cluster, [offline_registry(), template, example("Model", "docs-embedder")]
    )
    # A required parameter missing: FAILED, and Flux fails at once, naming it.
    message = await concludes(cluster, operator, MODELS, "docs-embedder", "Failed")
    assert "MODEL_PATH" in message

    # Fixed: the operator is at work (workers deploying, none serves yet).
    fixed = example("Model", "docs-embedder")
    fixed["spec"]["parameters"]["MODEL_PATH"] = "s3://weights/minilm"
    await apply_documents(cluster, [fixed])
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, cluster.namespace, "docs-embedder"),
        20,
        "workers",
        operator,
    )
    await concludes(cluster, operator, MODELS, "docs-embedder", "InProgress")

    # A template the operator marks InvalidSpec (every worker would be killed before its
    # readiness delay): its Model waits on it, and only a change of the template can help.
    broken = with_required_parameter(example("ModelTemplate", "cpu-embedding"))
    broken["spec"]["startupTimeoutSeconds"] = 10
    broken["spec"]["readiness"]["initialDelaySeconds"] = 60
    await apply_documents(cluster, [broken])
    await concludes(cluster, operator, TEMPLATES, "cpu-embedding", "Failed")
    message = await concludes(cluster, operator, MODELS, "docs-embedder", "Failed")
    assert "cpu-embedding" in message


async def test_registries_and_versions(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    require_tools()
    local = await LocalRegistry(tmp_path / "registry").start()
    try:
        digest = local.push("acme/embedder", "1.0.0", "weights")
        registry = {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "local"},
            "spec": {"url": local.url},
        }

        def version(name: str, pinned: str) -> dict[str, Any]:
            return {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": name},
                "spec": {
                    "model": "embedder",
                    "version": "1.0.0" if name == "good" else "1.0.1",
                    "registry": "local",
                    "repository": "acme/embedder",
                    "digest": pinned,
                },
            }

        unreachable = {
            **registry,
            "metadata": {"name": "down"},
            "spec": {"url": "http://127.0.0.1:9"},
        }
        await apply_documents(
            cluster,
            [
                registry,
                unreachable,
                version("good", digest),
                version("missing", "sha256:" + "0" * 64),
            ],
        )
        await concludes(cluster, operator, REGISTRIES, "local", "Current")
        await concludes(cluster, operator, VERSIONS, "good", "Current")
        # A digest the registry does not have: only a new ModelVersion can help.
        await concludes(cluster, operator, VERSIONS, "missing", "Failed")
        # A registry that does not answer may come back: still in progress, not failed.
        await concludes(cluster, operator, REGISTRIES, "down", "InProgress")
    finally:
        await local.stop()
