"""The chart's operator RBAC is exactly what the operator uses: no call refused, no rule unused.

The real operator process runs a scenario touching every code path (every autoscaler and the
switches between them, a Registry with a basic-auth Secret and its generated pull Secret, a
verified version, a template's finalizer added and removed, Events) against the emulated API,
which records every request. Each request becomes (API group, resource, verb) and is compared
with the rules `helm template` renders.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.controllers import (
    DEPLOYMENTS,
    HPAS,
    MODELS,
    SCALED_OBJECTS,
    TEMPLATES,
    apply_documents,
    condition,
)
from support.emulator import Cluster
from support.examples import example
from support.helm import Helm, helm_binary
from support.operator_process import OperatorProcess, eventually
from support.registry import LocalRegistry, require_tools

pytestmark = pytest.mark.kmock(cls=Cluster)

ROOT = Path(__file__).resolve().parent.parent
NS = "ml-team"
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


def calls(served: list[tuple[str, str, int]]) -> set[tuple[str, str, str]]:
    """(group, resource[/subresource], verb) for every resource request the operator made."""
    found: set[tuple[str, str, str]] = set()
    for method, logged, status in served:
        path, watching = logged.removesuffix("?watch"), logged.endswith("?watch")
        match = PATH.match(path)
        if not match:
            continue  # discovery: /api, /apis, /apis/group/version
        group = "" if match["core"] else match["group"]
        resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
        if match["namespace"] is None and match["resource"] == "namespaces" and match["name"]:
            continue
        if method == "GET":
            verb = "watch" if watching else ("get" if match["name"] else "list")
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
        found.add((group, resource, verb))
        if method == "PATCH" and status == 201:
            found.add((group, resource, "create"))  # server-side apply that created the object
    return found


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_role(tmp_path: Path) -> dict[str, Any]:
    helm = Helm(helm_binary(tmp_path / "bin"), tmp_path)
    rendered = helm.run(
        "template", "modelyard", str(ROOT / "charts" / "modelyard"), "-n", "modelyard-system"
    ).stdout
    return next(
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator")
    )


async def test_operator_rules_are_exactly_the_calls_it_makes(
    cluster: Cluster, tmp_path: Path
) -> None:
    require_tools()
    role = operator_role(tmp_path)
    local = await LocalRegistry(tmp_path / "registry", auth=("robot", "pa55")).start()
    digest = local.push("acme/awesome-llm", "1.0.0", "weights")
    operator = OperatorProcess(str(cluster.url), tmp_path).start()
    try:
        registry = {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "local", "namespace": NS},
            "spec": {"url": local.url, "credentialsSecret": "robot"},
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/basic-auth",
            "metadata": {"name": "robot", "namespace": NS},
            "data": {
                "username": base64.b64encode(b"robot").decode(),
                "password": base64.b64encode(b"pa55").decode(),
            },
        }
        template = example("ModelTemplate", "cpu-embedding")
        template["spec"]["image"] = {
            "registry": "local",
            "repository": "acme/awesome-llm",
            "digest": digest,
        }
        version = {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": "llm-1.0.0", "namespace": NS},
            "spec": {
                "model": "awesome-llm",
                "version": "1.0.0",
                "registry": "local",
                "repository": "acme/awesome-llm",
                "digest": digest,
                "tag": "1.0.0",
            },
        }
        await apply_documents(
            cluster, [secret, registry, template, version, example("Model", "docs-embedder")]
        )
        await eventually(lambda: cluster.get(HPAS, NS, "docs-embedder"), 20, "HPA", operator)
        await eventually(
            lambda: (
                condition(cluster.get("modelyard.dev/v1alpha1/modelversions", NS, "llm-1.0.0")).get(
                    "reason"
                )
                == "DigestVerified"
            ),
            20,
            "verified",
            operator,
        )
        await eventually(
            lambda: cluster.get("v1/secrets", NS, "local-pull"), 20, "pull secret", operator
        )
        # HPA → KEDA → fixed size: every autoscaler created and deleted once.
        await cluster.patch(
            TEMPLATES,
            NS,
            "cpu-embedding",
            {"spec": {"scaling": {"minWorkers": 0}}},
            manager="kubectl",
        )
        await eventually(
            lambda: (
                cluster.get(SCALED_OBJECTS, NS, "docs-embedder")
                and not cluster.get(HPAS, NS, "docs-embedder")
            ),
            20,
            "KEDA",
            operator,
        )
        await cluster.patch(
            TEMPLATES,
            NS,
            "cpu-embedding",
            {"spec": {"scaling": {"minWorkers": 4, "maxWorkers": 4}}},
            manager="kubectl",
        )
        await eventually(
            lambda: (
                not cluster.get(SCALED_OBJECTS, NS, "docs-embedder")
                and (cluster.get(DEPLOYMENTS, NS, "docs-embedder") or {})
                .get("spec", {})
                .get("replicas")
                == 4
            ),
            20,
            "fixed size",
            operator,
        )
        # The template's finalizer goes once its last Model is gone.
        await cluster.remove(MODELS, NS, "docs-embedder")
        await cluster.remove(TEMPLATES, NS, "cpu-embedding")
        await eventually(
            lambda: cluster.get(TEMPLATES, NS, "cpu-embedding") is None,
            20,
            "template gone",
            operator,
        )
    finally:
        await operator.stop()
        await local.stop()

    made = calls(cluster.served)
    allowed = granted(role)
    assert made - allowed == set(), f"calls the chart would refuse: {sorted(made - allowed)}"
    assert allowed - made == set(), f"rules the operator never uses: {sorted(allowed - made)}"
