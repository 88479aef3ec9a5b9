"""Time to READY of a Model whose weights are an image volume, on the real node: the weights
pulled for the first time, already on the node, and several workers starting at once.

    python bench/weights.py [--megabytes 500] [--runs N]   # as root, where the tests' node runs

The weights are an iris model saved by MLflow (trained here) plus a file of random bytes to make
them `--megabytes` large (incompressible: the registry sends all of it), pushed as an OCI image
to the node's registry on loopback and served by MLflow's scoring server from the runtimes'
image (`image/runtimes/`, present on the node before each run: only the weights are measured).
The clock starts when the Model is created; "mount" is the kubelet's own Pulling → Pulled of
the weights' reference; READY is modelyard's (the probe answered in MLflow's protocol). The
pre-warmed case rolls a serving Model to a new version: its clock starts at the release, and the
operator pulls the weights onto the node (a warming pod) before the new worker starts; the
scale-up case raises minWorkers of a serving Model whose weights were removed from the node,
and the Deployment grows once a warming pod pulled them back. Before
a first-pull run the weights are removed from the node's containerd. "Requests" counts the
registry's GETs of the weights' layer during the run: several workers on one node share one
pull. Results go to docs/performance.md, section "Weights".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from paths import ROOT
from sections import write_section

sys.path.insert(0, str(ROOT / "tests"))

from support import artifacts, images, operator_image, runtime_image
from support.cluster import MODELS, TEMPLATES, VERSIONS, Cluster, RealNode, Session
from support.controllers import apply_documents, condition
from support.operator_process import OperatorProcess
from support.workloads import NODE_OPERATOR_CONFIG, registry_documents
from test_weights import (
    WEIGHTS_REPOSITORY,
    layer_digests,
    mlflow_weights_template,
    node_weights_version,
    save_iris,
    weights_model,
)

Obj = dict[str, Any]
SECTION = "## Weights"
TIMEOUT = 600.0


@dataclass
class Run:
    case: str
    workers: int
    seconds_to_ready: float
    mount_seconds: float | None
    layer_requests: int
    #: A rollout's: from the new version's release to its workers starting (warming first).
    warm_seconds: float | None = None


def pods_of(cluster: Cluster, name: str) -> list[Obj]:
    return cluster.list("v1/pods", cluster.namespace, f"modelyard.dev/model={name}")


PULLED_IN = re.compile(r"Successfully pulled image .* in ([0-9.]+)(ms|s)\b")


def mount_seconds(cluster: Cluster, reference: str, name: str) -> float | None:
    """How long the kubelet took to pull the weights for Model `name`'s workers, as its Pulled
    event says (to the millisecond; the events' timestamps have whole seconds); None when it
    pulled nothing (the weights were on the node)."""
    for event in cluster.list("v1/events", cluster.namespace):
        pod = str((event.get("involvedObject") or {}).get("name") or "")
        message = str(event.get("message", ""))
        worker = pod.startswith(f"{name}-") and not pod.startswith(f"{name}-warm-")
        if event.get("reason") == "Pulled" and worker and reference in message:
            found = PULLED_IN.search(message)
            if found:
                amount = float(found.group(1))
                return amount / 1000 if found.group(2) == "ms" else amount
    return None


async def ready(cluster: Cluster, name: str, workers: int, started: float) -> float:
    while time.monotonic() - started < TIMEOUT:
        found = cluster.get(MODELS, cluster.namespace, name)
        status = (found or {}).get("status") or {}
        if (
            status.get("state") == "READY"
            and status.get("readyReplicas") == workers
            and condition(found, "Conformant").get("status") == "True"
        ):
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise TimeoutError(f"Model {name} not READY with {workers} workers within {TIMEOUT:g} s")


async def set_workers(cluster: Cluster, workers: int) -> None:
    """The template's fixed count, once the operator has seen it: a Model made now starts
    with all its workers at once."""
    patched = await cluster.patch(
        TEMPLATES,
        cluster.namespace,
        "mlflow-weights",
        {"spec": {"scaling": {"minWorkers": workers, "maxWorkers": workers}}},
        manager="bench",
    )
    generation = patched["metadata"]["generation"]
    while (
        (cluster.get(TEMPLATES, cluster.namespace, "mlflow-weights") or {}).get("status") or {}
    ).get("observedGeneration") != generation:
        await asyncio.sleep(0.1)


async def measure(
    cluster: Cluster, node: RealNode, digest: str, case: str, *, index: int, workers: int
) -> Run:
    """One Model of `workers` READY on weights `digest` (the highest version published)."""
    reference = f"{node.registry.host}/{WEIGHTS_REPOSITORY}@{digest}"
    layers = layer_digests(node, digest)
    before = sum(len(node.registry.fetches(layer)) for layer in layers)
    await set_workers(cluster, workers)
    name = f"{case}-{index}"
    started = time.monotonic()
    await apply_documents(cluster, [weights_model(name, "iris")])
    seconds = await ready(cluster, name, workers, started)
    running = ((cluster.get(MODELS, cluster.namespace, name) or {}).get("status") or {}).get(
        "resolvedVersion"
    )
    deployment = cluster.get("apps/v1/deployments", cluster.namespace, name) or {}
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]["image"]["reference"]
    if volume != reference:
        raise AssertionError(f"{name} runs {running} ({volume}), not the weights {reference}")
    mount = mount_seconds(cluster, reference, name) if case != "cached" else None
    requests = sum(len(node.registry.fetches(layer)) for layer in layers) - before
    await cluster.remove(MODELS, cluster.namespace, name)
    await cluster.gone("apps/v1/deployments", cluster.namespace, name, 120)
    # Its pods gone too: one still terminating holds the weights, and a first pull would not be.
    deadline = time.monotonic() + 120
    while pods_of(cluster, name) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return Run(case, workers, seconds, mount, requests)


async def publish(cluster: Cluster, node: RealNode, work: Path, number: int, megabytes: int) -> str:
    """New weights, never on the node (their random bytes are new), published as iris
    1.0.`number`, which Models in 1.x then run; their digest. (Removing an image from
    containerd does not reliably drop the content an image volume unpacked: a new digest
    is the sure first pull, as a new version is in life.)"""
    digest = push(node, work, number, megabytes)
    await release(cluster, number, digest)
    return digest


def push(node: RealNode, work: Path, number: int, megabytes: int) -> str:
    """New weights packed and pushed as 1.0.`number`, not yet a ModelVersion; their digest."""
    directory = work / f"weights-{number}"
    directory.mkdir()
    files = save_iris(directory)
    with (files / "padding.bin").open("wb") as padding:
        for _ in range(megabytes):
            padding.write(os.urandom(1 << 20))
    started = time.monotonic()
    digest = artifacts.image_of_files(
        node.registry, WEIGHTS_REPOSITORY, f"1.0.{number}", files, directory
    )
    print(f"weights 1.0.{number} packed and pushed in {time.monotonic() - started:.0f} s")
    return digest


async def release(cluster: Cluster, number: int, digest: str) -> None:
    """The weights published as ModelVersion 1.0.`number`, verified."""
    version = node_weights_version(f"iris-1-0-{number}", "iris", digest)
    version["spec"]["version"] = f"1.0.{number}"
    await apply_documents(cluster, [version])
    # Verified before any Model is made: else a Model would start on the previous version.
    deadline = time.monotonic() + 60
    while (
        condition(cluster.get(VERSIONS, cluster.namespace, f"iris-1-0-{number}")).get("status")
        != "True"
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"iris 1.0.{number} not verified within 60 s")
        await asyncio.sleep(0.25)


async def rollout_warmed(
    cluster: Cluster, node: RealNode, work: Path, *, number: int, megabytes: int, index: int
) -> Run:
    """A Model serving on one worker, then a new version of its weights released: the seconds
    until its workers start (the new weights warmed onto the node first) and until it is READY
    on them; the worker's own mount (none: the weights are on the node)."""
    name = f"warmed-{index}"
    await set_workers(cluster, 1)
    await apply_documents(cluster, [weights_model(name, "iris")])
    await ready(cluster, name, 1, time.monotonic())
    digest = push(node, work, number, megabytes)
    reference = f"{node.registry.host}/{WEIGHTS_REPOSITORY}@{digest}"
    layers = layer_digests(node, digest)
    started = time.monotonic()
    await release(cluster, number, digest)
    warm: float | None = None
    while time.monotonic() - started < TIMEOUT:
        deployment = cluster.get("apps/v1/deployments", cluster.namespace, name) or {}
        volumes = deployment["spec"]["template"]["spec"].get("volumes") or [{}]
        if warm is None and (volumes[0].get("image") or {}).get("reference") == reference:
            warm = time.monotonic() - started
        found = cluster.get(MODELS, cluster.namespace, name)
        status = (found or {}).get("status") or {}
        rolled = deployment.get("status") or {}
        if (
            warm is not None
            # The new worker serves and the old one is gone, as the Deployment says it.
            and rolled.get("observedGeneration") == deployment["metadata"].get("generation")
            and rolled.get("updatedReplicas") == 1
            and rolled.get("availableReplicas") == 1
            and rolled.get("replicas") == 1
            and status.get("resolvedVersion") == f"1.0.{number}"
            and status.get("state") == "READY"
            and condition(found, "Conformant").get("status") == "True"
        ):
            break
        await asyncio.sleep(0.25)
    else:
        raise TimeoutError(f"Model {name} not READY on 1.0.{number} within {TIMEOUT:g} s")
    seconds = time.monotonic() - started
    requests = sum(len(node.registry.fetches(layer)) for layer in layers)
    run = Run("warmed", 1, seconds, mount_seconds(cluster, reference, name), requests, warm)
    await cluster.remove(MODELS, cluster.namespace, name)
    await cluster.gone("apps/v1/deployments", cluster.namespace, name, 120)
    return run


async def scale_up_warmed(cluster: Cluster, node: RealNode, *, index: int) -> Run:
    """A Model serving on one worker, the weights then removed from the node's containerd (the
    worker keeps its mount), and minWorkers raised to two: the seconds until the Deployment
    grows (the weights warmed onto the node first: the hold's cost) and until both workers
    are READY; the new worker's own mount (none: warmed)."""
    name = f"scaled-{index}"
    await set_workers(cluster, 1)
    await apply_documents(cluster, [weights_model(name, "iris")])
    await ready(cluster, name, 1, time.monotonic())
    # The highest version published (the last rollout's).
    deployment = cluster.get("apps/v1/deployments", cluster.namespace, name) or {}
    reference = deployment["spec"]["template"]["spec"]["volumes"][0]["image"]["reference"]
    digest = str(reference).rsplit("@", 1)[1]
    node.node.ctr("images", "rm", "--sync", reference)
    layers = layer_digests(node, digest)
    before = sum(len(node.registry.fetches(layer)) for layer in layers)
    started = time.monotonic()
    await set_workers(cluster, 2)
    grown: float | None = None
    while time.monotonic() - started < TIMEOUT:
        deployment = cluster.get("apps/v1/deployments", cluster.namespace, name) or {}
        if grown is None and (deployment.get("spec") or {}).get("replicas") == 2:
            grown = time.monotonic() - started
        found = cluster.get(MODELS, cluster.namespace, name)
        status = (found or {}).get("status") or {}
        if (
            grown is not None
            and status.get("state") == "READY"
            and status.get("readyReplicas") == 2
            and condition(found, "Conformant").get("status") == "True"
        ):
            break
        await asyncio.sleep(0.25)
    else:
        raise TimeoutError(f"Model {name} not READY on two workers within {TIMEOUT:g} s")
    seconds = time.monotonic() - started
    requests = sum(len(node.registry.fetches(layer)) for layer in layers) - before
    run = Run("scale-up", 2, seconds, mount_seconds(cluster, reference, name), requests, grown)
    await cluster.remove(MODELS, cluster.namespace, name)
    await cluster.gone("apps/v1/deployments", cluster.namespace, name, 120)
    return run


async def main(megabytes: int, runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="modelyard-weights-"))
    (work / "kubernetes").mkdir()
    session = await asyncio.to_thread(Session.start, work / "kubernetes", None, True)
    operator: OperatorProcess | None = None
    try:
        node = session.real_node
        if node is None:
            raise SystemExit(f"no real node: {session.no_node}")
        cluster = Cluster(session, session.namespace_name("weights"))
        layout, tag, _ = runtime_image.build()
        runtime_image.push(layout, tag, node.registry.host, node.credentials)
        runtime = images.run(
            "skopeo", "inspect", "--format", "{{.Digest}}", f"oci:{layout}:{tag}"
        ).strip()
        template = mlflow_weights_template(runtime)
        # Half a core each: three workers fit the node's two cores at once.
        template["spec"]["resources"] = {"cpus": "500m", "memory": "768Mi"}
        await apply_documents(cluster, [*registry_documents(node), template])
        # The operator's own image pushed to the node's registry, as the chart configures it:
        # the warming pods run it (no signature policy here, so workers run no verifier).
        operator_layout, operator_tag, _ = operator_image.build()
        verifier = operator_image.push(
            operator_layout, operator_tag, node.registry.host, node.credentials
        )
        operator = OperatorProcess(
            cluster.operator_kubeconfig(work),
            work,
            config={**NODE_OPERATOR_CONFIG, "weightsVerifierImage": f"{verifier}:{operator_tag}"},
        ).start()
        published = 0
        digest = await publish(cluster, node, work, published, megabytes)
        # Unmeasured: the runtime's image pulled onto the node, so that only the weights differ.
        await measure(cluster, node, digest, "warm-up", index=0, workers=1)
        results: list[Run] = []
        for case, workers in (("first", 1), ("cached", 1), ("at-once", 3)):
            for index in range(runs):
                if case != "cached":
                    published += 1
                    digest = await publish(cluster, node, work, published, megabytes)
                found = await measure(cluster, node, digest, case, index=index, workers=workers)
                results.append(found)
                mount = f", mount {found.mount_seconds:.1f} s" if found.mount_seconds else ""
                print(
                    f"  {case:8} {workers} worker(s): READY in {found.seconds_to_ready:5.1f} s"
                    f"{mount}, {found.layer_requests} layer GETs",
                    flush=True,
                )
        # Unmeasured: the operator's image (the warming pods') pulled onto the node once.
        published += 1
        await rollout_warmed(cluster, node, work, number=published, megabytes=megabytes, index=99)
        for index in range(runs):
            published += 1
            found = await rollout_warmed(
                cluster, node, work, number=published, megabytes=megabytes, index=index
            )
            results.append(found)
            print(
                f"  warmed   rollout: workers start {found.warm_seconds or 0:5.1f} s, READY in "
                f"{found.seconds_to_ready:5.1f} s, worker mount "
                f"{found.mount_seconds if found.mount_seconds is not None else 'none'}, "
                f"{found.layer_requests} layer GETs",
                flush=True,
            )
        for index in range(runs):
            found = await scale_up_warmed(cluster, node, index=index)
            results.append(found)
            print(
                f"  warmed   scale-up: grown at {found.warm_seconds or 0:5.1f} s, READY in "
                f"{found.seconds_to_ready:5.1f} s, worker mount "
                f"{found.mount_seconds if found.mount_seconds is not None else 'none'}, "
                f"{found.layer_requests} layer GETs",
                flush=True,
            )
        write(results, runs, megabytes)
    finally:
        if operator is not None:
            await operator.stop()
        await asyncio.to_thread(session.stop)
        # Every run leaves gigabytes of weights (the layouts pushed, the node's content store):
        # a few runs filled this machine's disk and the node tainted itself (disk pressure).
        shutil.rmtree(work, ignore_errors=True)


def write(results: list[Run], runs: int, megabytes: int) -> None:
    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.1f}" if values else "-"

    lines = [
        SECTION,
        "",
        f"`python bench/weights.py --megabytes {megabytes} --runs {runs}` "
        f"({datetime.now():%Y-%m-%d}), on the real node (containerd 2.4): an MLflow iris model "
        f"plus {megabytes} MB of random bytes as an OCI image of weights, served by MLflow's "
        "scoring server (the runtimes' image already on the node) on half a core per worker, "
        "without a signature policy (no verifier runs first). "
        f"Seconds, median of {runs}; READY from creating the Model (probe answered); mount: "
        "the kubelet's pull of the weights, as its Pulled event says; layer GETs: requests for "
        "the weights' layer "
        "at the registry during the run.",
        "",
        "| Case | Workers | READY | Weights mount | Layer GETs |",
        "|---|---|---|---|---|",
    ]
    warmed = [r for r in results if r.case == "warmed"]
    titles = {
        "first": "first on the node",
        "cached": "already on the node",
        "at-once": "first on the node, workers at once",
    }
    for case, title in titles.items():
        runs_of = [r for r in results if r.case == case]
        if not runs_of:
            continue
        mounts = [r.mount_seconds for r in runs_of if r.mount_seconds is not None]
        lines.append(
            f"| {title} | {runs_of[0].workers} | "
            f"{median([r.seconds_to_ready for r in runs_of])} | "
            f"{median(mounts) if mounts else ('0 (no pull)' if case == 'cached' else '?')} | "
            f"{max(r.layer_requests for r in runs_of)} |"
        )
    if warmed:
        mounts = [r.mount_seconds for r in warmed if r.mount_seconds is not None]
        lines.append(
            f"| pre-warmed: a new version rolled out, its weights pulled first | 1 | "
            f"{median([r.seconds_to_ready for r in warmed])} (workers start at "
            f"{median([r.warm_seconds or 0.0 for r in warmed])}) | "
            f"{median(mounts) if mounts else '0 (warmed)'} | "
            f"{max(r.layer_requests for r in warmed)} |"
        )
    scaled = [r for r in results if r.case == "scale-up"]
    if scaled:
        mounts = [r.mount_seconds for r in scaled if r.mount_seconds is not None]
        lines.append(
            f"| pre-warmed: minWorkers 1 → 2, the weights removed from the node first | 2 | "
            f"{median([r.seconds_to_ready for r in scaled])} (the Deployment grows at "
            f"{median([r.warm_seconds or 0.0 for r in scaled])}) | "
            f"{median(mounts) if mounts else '0 (warmed)'} | "
            f"{max(r.layer_requests for r in scaled)} |"
        )
    first = [r.mount_seconds for r in results if r.case == "first" and r.mount_seconds]
    together = [r for r in results if r.case == "at-once"]
    if first and together:
        lines += [
            "",
            f"The weights cost what the node pays once: {megabytes} MB pulled and unpacked from "
            f"a registry on loopback in {median(first)} s, then nothing: a Model on weights "
            "already on the node mounts them without a request to the registry, and "
            f"{together[0].workers} workers starting at once on one node make "
            f"{max(r.layer_requests for r in together)} request for the layer between them. "
            "Time to READY is the runtime's own start either way.",
        ]
    if warmed:
        lines += [
            "",
            "Pre-warmed: a Model serving on the node, and a new version of its weights "
            "released; READY counts from the release (the ModelVersion verified) to the Model "
            "READY on the new version, its workers starting once the warming pod had pulled the "
            "weights onto the node (the second figure); the new worker's mount is the "
            "kubelet's, which found them on the node. The pull moves ahead of the workers, it "
            "does not vanish: the rollout waits for it while the old version serves.",
        ]
    if scaled:
        lines += [
            "",
            "Scale-up: a Model serving on one worker, the weights removed from the node's "
            "containerd (the worker keeps its mount), then minWorkers raised to 2; READY counts "
            "from the raise to both workers READY, and the Deployment grows once the warming "
            "pod (placed by the scheduler as the second worker would be) ended. That figure is "
            "the hold's cost on one node: the warming pod's own start and the pull, which the "
            "second worker would otherwise make itself — the gain is on nodes that never ran "
            "the Model, where the new worker starts on weights already there. Its layer GETs "
            "stay at 0 here: containerd keeps the layer the serving worker's mount holds, so "
            "the warming pod's pull fetched only the manifest and config; a node that never "
            "held the weights fetches the layer once, as in the first row.",
        ]
    write_section(SECTION, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=500, help="size of the weights")
    parser.add_argument("--runs", type=int, default=3, help="runs of each case (median)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.megabytes, arguments.runs))
