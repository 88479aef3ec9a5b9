"""The floor: the same writes as modelyard's for each new Model — its Deployment, Service and
HorizontalPodAutoscaler by server-side apply, with the bodies modelyard renders, and a status —
from a plain asynchronous HTTP client, with nothing else.

No retries, no stores of children, no validation, no reads besides one watch of Models: how fast
this API server takes these writes from one process on this machine. The children are rendered
once (`modelyard render` of the benchmark's template and a Model with placeholder names) and
stamped per Model, so planning costs the floor nothing. An operator cannot beat it doing the
same job; the benchmark reports how close modelyard comes.

    python bench/floor_client.py KUBECONFIG DOCUMENTS
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

from modelyard.config import OperatorConfig
from modelyard.kube import path
from modelyard.render import render

#: Requests in flight at once: as modelyard's client (modelyard.kube.client.CONCURRENCY).
CONCURRENCY = 32
#: The placeholders of the Model in DOCUMENTS, replaced by each new Model's own.
NAME, NAMESPACE, UID, MODEL_PATH = "floor-model", "floor-namespace", "floor-uid", "floor-path"


def rendered_children(documents: str) -> str:
    rendered = render([documents], OperatorConfig())
    if rendered.errors or not rendered.manifests:
        raise SystemExit(f"cannot render the floor's children: {rendered.errors}")
    return json.dumps([manifest for _, manifest in rendered.manifests])


def children(stencil: str, model: dict[str, Any]) -> list[dict[str, Any]]:
    metadata = model["metadata"]
    parameters = (model.get("spec") or {}).get("parameters") or {}
    text = (
        stencil.replace(NAMESPACE, metadata["namespace"])
        .replace(NAME, metadata["name"])
        .replace(UID, metadata["uid"])
        .replace(MODEL_PATH, str(parameters.get("MODEL_PATH", "")))
    )
    manifests: list[dict[str, Any]] = json.loads(text)
    return manifests


async def write_all(
    session: aiohttp.ClientSession, gate: asyncio.Semaphore, stencil: str, model: Any
) -> None:
    metadata = model["metadata"]
    for manifest in children(stencil, model):
        url = path(
            manifest["apiVersion"], manifest["kind"], metadata["namespace"], metadata["name"]
        )
        async with (
            gate,
            session.patch(
                url,
                data=json.dumps(manifest),
                params={"fieldManager": "floor", "force": "true"},
                headers={"Content-Type": "application/apply-patch+yaml"},
            ) as answer,
        ):
            await answer.read()
    status = {
        "observedGeneration": metadata.get("generation"),
        "state": "DEPLOYING",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Deploying",
                "message": "waiting for the Deployment's workers",
                "lastTransitionTime": metadata.get("creationTimestamp"),
                "observedGeneration": metadata.get("generation"),
            }
        ],
    }
    url = path(model["apiVersion"], "Model", metadata["namespace"], metadata["name"]) + "/status"
    async with (
        gate,
        session.patch(
            url,
            data=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as answer,
    ):
        await answer.read()


async def main(kubeconfig: str, documents: str) -> None:
    stencil = rendered_children(documents)
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
                        task = asyncio.create_task(write_all(session, gate, stencil, model))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
