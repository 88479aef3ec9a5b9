"""What each watched namespace costs: `modelyard run -n a -n b …` at 1, 10 and 50 namespaces.

    .venv/bin/python bench/namespaces.py                  # 1 10 50
    .venv/bin/python bench/namespaces.py --namespaces 1 10 50 100

It starts the project's control plane (tests/cluster), gives the operator the chart's service
account, creates the namespaces (each with a Registry, a template and a Model in the last only),
and for each size starts the operator watching exactly those namespaces, and measures:

- time from start to `/readyz` answering 200 (every list done, every watch asked);
- TCP connections from the operator's process to the API server, once ready (`ss`);
- the operator's resident memory once ready;
- time from the Model's creation in the last namespace to its Deployment's creation.

Figures are printed as a Markdown table for docs/performance.md; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from paths import ROOT

sys.path.insert(0, str(ROOT / "tests"))

from meter import rss_mb
from stage import kubeconfig

from support import control_plane
from support.api import Api
from support.cluster import install_crds, operator_identity
from support.examples import example
from support.operator_process import OperatorProcess, free_port


def documents(namespace: str) -> list[dict[str, object]]:
    registry = example("Registry", "dockerhub")
    registry["spec"]["url"] = "http://127.0.0.1:9"
    placed = []
    for document in (registry, example("ModelTemplate", "cpu-embedding")):
        document["metadata"]["namespace"] = namespace
        placed.append(document)
    return placed


async def measure(api: Api, plane: control_plane.ControlPlane, work: Path, size: int) -> str:
    namespaces = [f"watched-{size}-{index}" for index in range(size)]
    for namespace in namespaces:
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for document in documents(namespace):
            api.apply(document, "bench")
    directory = work / f"run-{size}"
    directory.mkdir()
    token = operator_identity(api, work)
    config = kubeconfig(plane, token, directory / "kubeconfig")
    operator = OperatorProcess(
        config, directory, namespaces=namespaces, health_port=free_port(), verbose=False
    ).start()
    assert operator.process is not None
    started = time.monotonic()
    try:
        while operator.readyz()[0] != 200:
            if operator.process.poll() is not None or time.monotonic() - started > 300:
                return f"| {size} | never ready | | | |"
            await asyncio.sleep(0.05)
        ready = time.monotonic() - started
        await asyncio.sleep(2)  # every watch asked
        port = int(plane.server.rsplit(":", 1)[1])
        opened = operator.connections_to(port)
        memory = rss_mb(operator.process.pid)
        model = example("Model", "docs-embedder")
        model["metadata"]["namespace"] = namespaces[-1]
        created = time.monotonic()
        api.apply(model, "bench")
        while api.get("apps/v1/deployments", namespaces[-1], "docs-embedder") is None:
            await asyncio.sleep(0.02)
        reconciled = time.monotonic() - created
    finally:
        await operator.stop()
        for namespace in namespaces:
            api.delete("v1/namespaces", None, namespace)
    return f"| {size} | {ready:.1f} s | {opened} | {memory:.0f} MB | {reconciled * 1000:.0f} ms |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaces", type=int, nargs="+", default=[1, 10, 50])
    sizes = parser.parse_args().namespaces
    work = Path(tempfile.mkdtemp(prefix="modelyard-namespaces-"))
    plane = control_plane.start(work / "cluster", [])
    try:
        api = Api(plane.server, plane.pki)
        install_crds(api)
        rows = [asyncio.run(measure(api, plane, work, size)) for size in sizes]
    finally:
        plane.stop(grace=1)
    command = " ".join(map(str, sizes))
    print(f"kube-apiserver {plane.version}; `bench/namespaces.py --namespaces {command}`")
    print(
        "| namespaces | ready after | connections to the API server | RSS once ready "
        "| Model in the last namespace: to its Deployment |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
