"""What the harness puts on the server, playing the users: namespaces, each with a Registry and
a template, and Models created as a GitOps sync would, many at once from a few connections.

The template pins its image by digest, so no tag has to be resolved at a registry (the Registry
points at a port nobody listens on): the Models' work is the operator's against the API server.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from support.api import Api, resource_path

MODELS = "modelyard.dev/v1alpha1/models"


def namespace(api: Api, name: str) -> None:
    """A namespace, once it can hold pods: its default ServiceAccount comes a moment later."""
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while api.get("v1/serviceaccounts", name, "default") is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"namespace {name} has no default ServiceAccount")
        time.sleep(0.05)


def delete_namespace(api: Api, name: str, timeout: float, wait: bool = True) -> None:
    """Delete a run's namespace even when its operator is gone: our finalizers would hold it."""
    for kind in ("models", "modeltemplates", "modelversions", "registries"):
        resource = f"modelyard.dev/v1alpha1/{kind}"
        for obj in api.list(resource, name):
            if obj["metadata"].get("finalizers"):
                api.patch(
                    resource, name, obj["metadata"]["name"], {"metadata": {"finalizers": None}}
                )
    api.delete("v1/namespaces", None, name)
    if wait:
        wait_namespace_gone(api, name, timeout)


def wait_namespace_gone(api: Api, name: str, timeout: float) -> None:
    """A namespace that will not go says why (its conditions), not only that it timed out."""
    try:
        api.wait_gone("v1/namespaces", None, name, timeout)
    except AssertionError:
        left = api.get("v1/namespaces", None, name) or {}
        conditions = left.get("status", {}).get("conditions", [])
        raise AssertionError(f"namespace {name} not deleted: {conditions}") from None


def setup_documents(ns: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "local", "namespace": ns},
            "spec": {"url": "http://127.0.0.1:9"},
        },
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelTemplate",
            "metadata": {"name": "embedder", "namespace": ns},
            "spec": {
                "modelType": "EMBEDDING",
                "image": {
                    "registry": "local",
                    "repository": "acme/embedder",
                    "digest": "sha256:" + "a" * 64,
                },
                "resources": {"cpus": "1m", "memory": "1Mi"},
                "scaling": {"minWorkers": 1, "maxWorkers": 3, "perWorker": 8},
                "parameters": [{"name": "MODEL_PATH", "required": True}],
            },
        },
    ]


def model(ns: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": f"model-{index:05d}", "namespace": ns},
        "spec": {"template": "embedder", "parameters": {"MODEL_PATH": f"s3://models/{index}"}},
    }


def spread(label: str, n: int, k: int) -> list[str]:
    """The K namespaces a run's N Models are spread over."""
    return [f"bench-{label}-{n}-{k}-{i}" for i in range(k)]


def create_burst(api: Api, namespaces: list[str], first_index: int, n: int) -> None:
    """N Models as fast as the server takes them, from a few connections, as a GitOps sync;
    Model i goes to namespace i mod K."""

    def create(index: int) -> None:
        ns = namespaces[index % len(namespaces)]
        api.request("POST", resource_path(MODELS, ns), model(ns, index))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(first_index, first_index + n)))
