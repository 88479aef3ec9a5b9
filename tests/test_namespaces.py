"""An operator that serves a list of namespaces (`watchNamespaces`, `modelyard run -n a -n b`).

It runs an informer per kind in each namespace: ten watches a namespace. Each watch holds a
connection for as long as it runs, so they have a pool of their own; drawn from the calls'
pool, a few namespaces once left every call waiting for a connection that never freed, and the
operator never ready. docs/performance.md has what each namespace costs (connections, memory,
time to ready) at 1, 10 and 50.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from support.cluster import Cluster
from support.controllers import DEPLOYMENTS, REGISTRIES, apply_documents, condition
from support.operator_process import OperatorProcess, eventually, free_port
from test_operator import embedding_documents

WATCHED = 12


@pytest.mark.timeout(240)
async def test_an_operator_serving_many_namespaces_is_ready_and_serves_the_last(
    cluster: Cluster, tmp_path: Path
) -> None:
    namespaces = [cluster.namespace] + [f"{cluster.namespace}-{i}" for i in range(1, WATCHED)]
    for namespace in namespaces[1:]:
        await cluster.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
    operator = OperatorProcess(
        cluster.operator_kubeconfig(tmp_path),
        tmp_path,
        namespaces=namespaces,
        health_port=free_port(),
    ).start()
    try:
        started = time.monotonic()
        await eventually(lambda: operator.readyz() == (200, "leading\n"), 60, "/readyz", operator)
        ready_after = time.monotonic() - started
        # A Registry in the first namespace gets its status; a Model in the last, its children.
        documents = embedding_documents()
        await apply_documents(cluster, documents[:1])
        last = namespaces[-1]
        for document in documents:
            await cluster.apply(
                {**document, "metadata": {**document["metadata"], "namespace": last}}
            )
        await eventually(
            lambda: condition(cluster.get(REGISTRIES, cluster.namespace, "dockerhub")).get(
                "reason"
            ),
            30,
            "the first namespace's Registry checked",
            operator,
        )
        await eventually(
            lambda: cluster.get(DEPLOYMENTS, last, "docs-embedder"),
            30,
            "the last namespace's Model deployed",
            operator,
        )
        watches = {s.path for s in cluster.served if s.path.endswith("?watch")}
        assert len(watches) >= 10 * WATCHED, f"{len(watches)} watches"
        print(f"{WATCHED} namespaces: ready after {ready_after:.1f} s")
    finally:
        await operator.stop()
        for namespace in namespaces[1:]:
            await cluster.remove("v1/namespaces", None, namespace)
        await asyncio.sleep(0)
