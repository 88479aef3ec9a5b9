"""Manifests of Models that run for real on the session's node.

The model server (tests/images/modelserver) is pushed to the node's local registry, behind basic
auth; a Registry with a `kubernetes.io/basic-auth` Secret points at it, so the pull Secret pods
use is the one the operator writes. A template's parameters become the server's environment,
so each Model picks its behaviour: how long it takes to get ready, whether it crashes, never
gets ready or answers off-contract.
"""

from __future__ import annotations

from typing import Any

from support.cluster import RealNode
from support.controllers import CONSENT

Obj = dict[str, Any]

#: A probe request per model type the model server speaks.
PROBES: dict[str, Obj] = {
    "EMBEDDING": {"texts": ["The largest continent is Asia.", "Ibiza is an island."]},
    "RERANKING": {
        "query": "What's the name of the largest continent?",
        "chunks": ["The largest continent is called Asia.", "Ibiza is an island."],
    },
    "IMAGE_CLASSIFICATION": {"image": {"url": "https://example.com/cat.jpg"}},
}

#: The model server's behaviours, as typed template parameters with harmless defaults.
BEHAVIOUR_PARAMETERS: list[Obj] = [
    {"name": "READY_AFTER_SECONDS", "type": "float", "default": 0},
    {"name": "NEVER_READY", "type": "bool", "default": False},
    {"name": "CRASH", "type": "bool", "default": False},
    {"name": "ANSWER", "type": "str", "default": "conforming"},
]


def registry_documents(node: RealNode, password: str | None = None) -> list[Obj]:
    """The basic-auth Secret and the Registry of the node's local registry."""
    username, right = node.credentials
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "local-registry-credentials", "labels": CONSENT},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": username, "password": password or right},
        },
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "local"},
            "spec": {
                "url": f"http://{node.registry.host}",
                "credentialsSecret": "local-registry-credentials",
                "checkIntervalSeconds": 10,
            },
        },
    ]


def template(
    node: RealNode,
    name: str = "served",
    *,
    model_type: str = "EMBEDDING",
    digest: str | None = None,
    initial_delay: int = 0,
    startup_timeout: int = 60,
    min_workers: int = 1,
    max_workers: int = 1,
    gpus: int = 0,
    gpu_type: str | None = None,
    probe: bool = True,
    env: dict[str, str] | None = None,
    behaviour: bool = True,
    rollout: Obj | None = None,
) -> Obj:
    """A template running the model server by digest, with small CPU and memory: the node
    has two cores for every pod of the run."""
    resources: Obj = {"cpus": "50m", "memory": "32Mi"}
    if gpus:
        resources["gpus"] = gpus
    if gpu_type:
        resources["gpuType"] = gpu_type
    spec: Obj = {
        "modelType": model_type,
        "endpointType": "SYNC",
        "image": {
            "registry": "local",
            "repository": node.repository,
            "digest": digest or node.digest,
        },
        "port": 8080,
        "readiness": {"path": "/health", "initialDelaySeconds": initial_delay, "periodSeconds": 1},
        "startupTimeoutSeconds": startup_timeout,
        "resources": resources,
        "scaling": {"minWorkers": min_workers, "maxWorkers": max_workers, "perWorker": 4},
    }
    if behaviour:
        # Without them, the image's own environment decides (versions that behave apart).
        spec["parameters"] = BEHAVIOUR_PARAMETERS
    if rollout:
        spec["rollout"] = rollout
    if env:
        spec["env"] = env
    if probe:
        spec["probe"] = {"path": "/predict", "timeoutSeconds": 5, "request": PROBES[model_type]}
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": name},
        "spec": spec,
    }


def model(name: str, template_name: str = "served", **parameters: Any) -> Obj:
    spec: Obj = {"template": template_name}
    if parameters:
        spec["parameters"] = parameters
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name},
        "spec": spec,
    }


def served_documents(
    node: RealNode, name: str = "served-model", **template_options: Any
) -> list[Obj]:
    """Registry, template and one Model of it: everything a served Model needs."""
    return [*registry_documents(node), template(node, **template_options), model(name)]


#: What the operator needs to reach a Model's Service from the test machine: its ClusterIP,
#: which kube-proxy routes to the pods on this machine.
NODE_OPERATOR_CONFIG: Obj = {
    "probes": {"serviceAddress": "{clusterIP}:{port}", "intervalSeconds": 5, "retrySeconds": 2}
}
