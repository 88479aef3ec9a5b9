"""The floor: the same writes as modelyard's for each new Model — Deployment, Service,
HorizontalPodAutoscaler, status — from a plain asynchronous HTTP client, with nothing else.

No retries, no stores of children, no validation, no reads besides one watch of Models: how fast
this API server takes these writes from one process on this machine. An operator cannot beat it
by doing the same job; the benchmark reports how close modelyard comes.

    python bench/floor_client.py KUBECONFIG
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

#: Requests in flight at once: as modelyard's client (modelyard.kube.client.CONCURRENCY).
CONCURRENCY = 32


def children(model: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    metadata = model["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    labels = {"app.kubernetes.io/name": name, "modelyard.dev/model": name}
    owner = [
        {
            "apiVersion": model["apiVersion"],
            "kind": "Model",
            "name": name,
            "uid": metadata["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    meta = {"name": name, "labels": labels, "ownerReferences": owner}
    return [
        (
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "selector": {"matchLabels": {"modelyard.dev/model": name}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [{"name": "model", "image": "registry.example/model:1"}]
                        },
                    },
                },
            },
        ),
        (
            f"/api/v1/namespaces/{namespace}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {
                    "selector": {"modelyard.dev/model": name},
                    "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
                },
            },
        ),
        (
            f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": meta,
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": 1,
                    "maxReplicas": 3,
                },
            },
        ),
    ]


async def write_all(session: aiohttp.ClientSession, gate: asyncio.Semaphore, model: Any) -> None:
    metadata = model["metadata"]
    for url, body in children(model):
        async with gate, session.post(url, json=body) as answer:
            await answer.read()
    status_url = (
        f"/apis/modelyard.dev/v1alpha1/namespaces/{metadata['namespace']}/models/"
        f"{metadata['name']}/status"
    )
    async with (
        gate,
        session.patch(
            status_url,
            data=json.dumps({"status": {"state": "DEPLOYING"}}),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as answer,
    ):
        await answer.read()


async def main(kubeconfig: str) -> None:
    config = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = config["clusters"][0]["cluster"]
    token = config["users"][0]["user"]["token"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    gate = asyncio.Semaphore(CONCURRENCY)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(
        base_url=cluster["server"],
        headers={"Authorization": f"Bearer {token}"},
        connector=aiohttp.TCPConnector(limit=CONCURRENCY + 1, ssl=context),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    ) as session:
        async with session.get("/apis/modelyard.dev/v1alpha1/models", params={"limit": "1"}) as r:
            version = (await r.json())["metadata"]["resourceVersion"]
        print("watching", flush=True)
        while True:
            params = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "600"}
            async with session.get("/apis/modelyard.dev/v1alpha1/models", params=params) as r:
                async for line in r.content:
                    event = json.loads(line)
                    model = event["object"]
                    version = model["metadata"]["resourceVersion"]
                    if event["type"] == "ADDED":
                        task = asyncio.create_task(write_all(session, gate, model))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
