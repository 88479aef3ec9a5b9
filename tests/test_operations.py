"""What the person running the operator sees over time: a log they can read, and memory that
follows what exists.

The operator runs as `modelyard run` against the real API server, at its default log level.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support.cluster import Cluster
from support.controllers import (
    DEPLOYMENTS,
    REGISTRIES,
    TEMPLATES,
    apply_documents,
    model_state,
    run_pods,
)
from support.examples import example
from support.operator_process import OperatorProcess, eventually
from test_operator import embedding_documents, offline_registry

COUNT = 1000


@pytest.fixture
async def operator(cluster: Cluster, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    process = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path, verbose=False)
    yield process.start()
    await process.stop()


def resident_megabytes(operator: OperatorProcess) -> float:
    assert operator.process is not None
    status = Path(f"/proc/{operator.process.pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) / 1024


def tracked(operator: OperatorProcess) -> dict[str, float]:
    text = operator.metrics()
    return {
        kind: float(value)
        for kind, value in re.findall(r'modelyard_tracked_objects\{kind="(\w+)"\} (\S+)', text)
    }


async def test_the_default_log_says_what_changed_and_nothing_else(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    await apply_documents(cluster, embedding_documents())
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, cluster.namespace, "docs-embedder"),
        20,
        "Deployment",
        operator,
    )
    # Played kubelet: this test is about the operator's log, not about pods.
    await run_pods(cluster, cluster.namespace, "docs-embedder")
    await eventually(
        lambda: model_state(cluster, "docs-embedder") == ("READY", "Available"),
        20,
        "READY",
        operator,
    )
    await asyncio.sleep(1)
    lines = [line for line in operator.output.splitlines() if line.strip()]
    assert not [line for line in lines if "Handler '" in line or "Indexer '" in line], lines
    assert any(
        f"Model {cluster.namespace}/docs-embedder: READY (Available)" in line for line in lines
    ), lines
    assert len(lines) < 20, "\n".join(lines)


def template(index: int) -> dict[str, Any]:
    document = example("ModelTemplate", "cpu-embedding")
    document["metadata"]["name"] = f"template-{index}"
    return document


def registry(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": f"registry-{index}"},
        "spec": {"url": "http://127.0.0.1:9"},
    }


async def churn(cluster: Cluster, operator: OperatorProcess) -> tuple[float, float]:
    """COUNT templates and COUNT registries created, then deleted; the operator's resident
    memory (MB) with all of them, and once they are gone and it has tidied up."""
    ns = cluster.namespace
    documents = [maker(i) for i in range(COUNT) for maker in (template, registry)]
    await asyncio.gather(*(cluster.apply(cluster.in_namespace(d)) for d in documents))
    await eventually(
        lambda: (
            tracked(operator).get("registry", 0) >= COUNT
            and tracked(operator).get("template", 0) >= COUNT
        ),
        120,
        "state for every object",
        operator,
    )
    peak = resident_megabytes(operator)
    await asyncio.gather(
        *(cluster.remove(TEMPLATES, ns, f"template-{i}") for i in range(COUNT)),
        *(cluster.remove(REGISTRIES, ns, f"registry-{i}") for i in range(COUNT)),
    )
    await eventually(
        lambda: not cluster.list(TEMPLATES, ns) and len(cluster.list(REGISTRIES, ns)) == 1,
        120,
        "all deleted",
        operator,
    )
    await eventually(
        lambda: (
            tracked(operator).get("template") == 0
            and tracked(operator).get("registry", 0) <= 1
            and tracked(operator).get("connections", 0) <= 1
        ),
        120,
        "the state freed",
        operator,
    )
    # The operator hands freed memory back once the work is done (every 20 s).
    await asyncio.sleep(25)
    return peak, resident_megabytes(operator)


async def test_state_for_deleted_templates_and_registries_is_freed(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """1,000 templates and 1,000 registries created and deleted, twice: the operator's
    per-object state (reconcile slots, registry connections) goes back to nothing each time,
    and the second round costs no memory the first did not (nothing of the deleted objects
    stays: the allocator reuses what they held)."""
    await apply_documents(cluster, [offline_registry()])
    await eventually(lambda: "registry" in tracked(operator), 40, "the metric", operator)
    before = resident_megabytes(operator)
    first_peak, first = await churn(cluster, operator)
    second_peak, second = await churn(cluster, operator)
    print(
        f"operator RSS: {before:.1f} MB at start; {first_peak:.1f} MB with {2 * COUNT} objects, "
        f"{first:.1f} MB after deleting them; again: {second_peak:.1f} MB, {second:.1f} MB"
    )
    assert second - first < max(15.0, (first_peak - before) / 4), (before, first, second)


async def test_a_lasting_refusal_is_logged_once_while_it_is_retried(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """A quota that admits no Service: the operator retries with growing delays, and says so
    once, not once per retry."""
    await cluster.apply(
        cluster.in_namespace(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "no-services"},
                "spec": {"hard": {"services": "0"}},
            }
        )
    )
    await apply_documents(cluster, embedding_documents())
    await eventually(
        lambda: model_state(cluster, "docs-embedder") == ("FAILED", "QuotaExceeded"),
        20,
        "QuotaExceeded",
        operator,
    )
    await asyncio.sleep(16)  # retries after about 1, 2, 4 and 8 s
    attempts = [w for w in cluster.writes() if w.path.endswith("/services/docs-embedder")]
    assert len(attempts) >= 3, f"retried {len(attempts)} times"
    retried = [line for line in operator.output.splitlines() if "trying again in" in line]
    assert len(retried) == 1, retried


async def test_a_taken_port_is_one_line_and_a_stop_is_quiet(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A second `modelyard run` on a machine whose metrics port is taken says so in one line
    and exits; an operator stopped with SIGTERM (or Ctrl-C) says it stopped, without a
    traceback."""
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    kubeconfig = cluster.operator_kubeconfig(tmp_path)
    first = OperatorProcess(kubeconfig, tmp_path / "first", verbose=False).start()
    try:
        await eventually(first.metrics, 30, "the first operator's metrics", first)
        second = OperatorProcess(
            kubeconfig,
            tmp_path / "second",
            config={"metricsPort": first.metrics_port},
            verbose=False,
        ).start()
        assert second.process is not None
        await eventually(lambda: second.process.poll() is not None, 30, "the second to exit")
        assert second.process.returncode != 0
        said = second.output.strip().splitlines()
        assert "Traceback" not in second.output, second.output
        assert said[-1] == (
            f"modelyard: cannot listen on the metrics port {first.metrics_port} (metricsPort in "
            "the configuration; 0: off): Address already in use"
        ), said
    finally:
        await first.stop()
    assert first.process is not None and first.process.returncode == 0
    assert "Traceback" not in first.output and "CancelledError" not in first.output, first.output
    assert "stopped in" in first.output

    # Stopped while it still lists (its lists held up by the proxy): as quiet.
    (tmp_path / "third").mkdir()
    cluster.fail("GET", r"/models$", code=0, times=None, delay=5)
    third = OperatorProcess(kubeconfig, tmp_path / "third", verbose=False).start()
    # Metrics are served from before the lists start, and the lists take 5 s.
    await eventually(third.metrics, 30, "the third listing", third)
    await third.stop()
    assert third.process is not None and third.process.returncode == 0, third.output
    assert "Traceback" not in third.output and "CancelledError" not in third.output, third.output
