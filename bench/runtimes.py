"""Time to READY of real serving runtimes on the real node: MLServer (the Open Inference
Protocol), DEEPaaS and MLflow's scoring server, from the image the tests build
(`image/runtimes/`), each once with its image pulled first and once with it already on the node.

    python bench/runtimes.py [--runs N]      # as root, where the tests' real node can run

READY is modelyard's: the pod ready and the probe answered in the runtime's own protocol. The
clock starts when the Model is created; "pulled" and "started" come from the pod's own
conditions, "ready" from the Model's status. Before a first-pull run the image is removed from
the node's containerd, so the kubelet pulls all of it again from the node's registry (on
loopback: this measures unpacking and starting, not a network). Results go to
docs/performance.md, section "Real runtimes".
"""

from __future__ import annotations

import argparse
import asyncio
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

from support import images, runtime_image
from support.cluster import MODELS, Cluster, RealNode, Session
from support.controllers import apply_documents, condition
from support.mlflow_server import MlflowServer
from support.node import NODE_IP
from support.operator_process import OperatorProcess
from support.workloads import NODE_OPERATOR_CONFIG, model, registry_documents
from test_runtimes import (
    INFER,
    PREDICT_ARGS,
    ROWS,
    log_iris,
    mlflow_registry,
    mlflow_version,
    runtime_template,
)

Obj = dict[str, Any]
SECTION = "## Real runtimes"
TIMEOUT = 420.0


@dataclass
class Run:
    runtime: str
    pulled_first: bool
    seconds_to_ready: float
    pull_seconds: float | None


def pods_of(cluster: Cluster, name: str) -> list[Obj]:
    return cluster.list("v1/pods", cluster.namespace, f"modelyard.dev/model={name}")


def pulled_seconds(cluster: Cluster, name: str) -> float | None:
    """How long the kubelet took to pull, from the pod's events (Pulling → Pulled)."""
    events = cluster.list("v1/events", cluster.namespace)
    pod_names = {p["metadata"]["name"] for p in pods_of(cluster, name)}
    times: dict[str, str] = {}
    for event in events:
        if (event.get("involvedObject") or {}).get("name") in pod_names:
            times.setdefault(event.get("reason", ""), event.get("firstTimestamp") or "")
    if "Pulling" not in times or "Pulled" not in times:
        return None
    start, end = (
        datetime.fromisoformat(times[k].replace("Z", "+00:00")) for k in ("Pulling", "Pulled")
    )
    return (end - start).total_seconds()


async def ready(cluster: Cluster, name: str, started: float) -> float:
    while time.monotonic() - started < TIMEOUT:
        found = cluster.get(MODELS, cluster.namespace, name)
        status = (found or {}).get("status") or {}
        if (
            status.get("state") == "READY"
            and condition(found, "Conformant").get("status") == "True"
        ):
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise TimeoutError(f"Model {name} not READY within {TIMEOUT:g} s")


async def measure(
    cluster: Cluster, node: RealNode, digest: str, name: str, template: Obj, *, first_pull: bool
) -> Run:
    if first_pull:
        reference = f"{node.registry.host}/{runtime_image.REPOSITORY}@{digest}"
        node.node.ctr("images", "rm", "--sync", reference)
    await apply_documents(cluster, [template])
    document = model(name, template["metadata"]["name"])
    if template["spec"]["probe"]["protocol"] == "MLflow":
        # MLflow's template serves a ModelVersion from the registry: the Model names it.
        document["spec"]["version"] = {"model": "iris", "version": "1.0.0"}
    started = time.monotonic()
    await apply_documents(cluster, [document])
    seconds = await ready(cluster, name, started)
    pull = pulled_seconds(cluster, name) if first_pull else None
    await cluster.remove(MODELS, cluster.namespace, name)
    await cluster.gone("apps/v1/deployments", cluster.namespace, name, 120)
    # Its pods gone too: a pod still terminating holds the image's layers, and the next first
    # pull would find them unpacked.
    deadline = time.monotonic() + 120
    while pods_of(cluster, name) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return Run(template["metadata"]["name"], first_pull, seconds, pull)


async def main(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="modelyard-runtimes-"))
    (work / "kubernetes").mkdir()
    session = await asyncio.to_thread(Session.start, work / "kubernetes", None, True)
    mlflow: MlflowServer | None = None
    operator: OperatorProcess | None = None
    try:
        node = session.real_node
        if node is None:
            raise SystemExit(f"no real node: {session.no_node}")
        cluster = Cluster(session, session.namespace_name("runtimes"))
        layout, tag, build_seconds = runtime_image.build()
        runtime_image.push(layout, tag, node.registry.host, node.credentials)
        digest = images.run(
            "skopeo", "inspect", "--format", "{{.Digest}}", f"oci:{layout}:{tag}"
        ).strip()
        mlflow = await MlflowServer(work / "mlflow", host=NODE_IP).start()
        version = log_iris(mlflow, strength=1.0)
        mlflow.call("set_registered_model_alias", "iris", "champion", version)
        await apply_documents(
            cluster,
            [
                *registry_documents(node),
                mlflow_registry(mlflow.url, checkIntervalSeconds=10),
                mlflow_version("iris-1-0-0", "1.0.0", name="iris", alias="champion"),
            ],
        )
        operator = OperatorProcess(
            cluster.operator_kubeconfig(work), work, config=NODE_OPERATOR_CONFIG
        ).start()
        mlflow_template = runtime_template(
            "mlflow",
            runtime_image.mlflow("$(MODEL_URI)", ""),
            digest,
            {
                "protocol": "MLflow",
                "request": {
                    "dataframe_split": {"columns": list(runtime_image.FEATURES), "data": ROWS}
                },
            },
        )
        mlflow_template["spec"]["env"] = {}
        templates = [
            runtime_template(
                "mlserver",
                runtime_image.MLSERVER,
                digest,
                {"protocol": "OpenInference", "model": runtime_image.MODEL, "request": INFER},
            ),
            runtime_template(
                "deepaas",
                runtime_image.DEEPAAS,
                digest,
                {"protocol": "DEEPaaS", "model": runtime_image.MODEL, "request": PREDICT_ARGS},
            ),
            mlflow_template,
        ]
        results: list[Run] = []
        for template in templates:
            for first_pull in (True, False):
                for index in range(runs):
                    name = (
                        f"{template['metadata']['name']}-{'pull' if first_pull else 'warm'}-{index}"
                    )
                    found = await measure(
                        cluster, node, digest, name, template, first_pull=first_pull
                    )
                    results.append(found)
                    print(
                        f"  {found.runtime:9} {'first pull' if first_pull else 'image present':13}"
                        f" READY in {found.seconds_to_ready:5.1f} s"
                        + (f" (pull {found.pull_seconds:.1f} s)" if found.pull_seconds else ""),
                        flush=True,
                    )
        write(results, runs, runtime_image.compressed_megabytes(layout), build_seconds)
    finally:
        if operator is not None:
            await operator.stop()
        if mlflow is not None:
            await mlflow.stop()
        await asyncio.to_thread(session.stop)
        shutil.rmtree(work, ignore_errors=True)  # the node's images: gigabytes a run


def write(results: list[Run], runs: int, megabytes: float, build_seconds: float) -> None:
    lines = [
        SECTION,
        "",
        f"`python bench/runtimes.py --runs {runs}` ({datetime.now():%Y-%m-%d}), on the real node: "
        f"one image of {megabytes:.0f} MB compressed (`image/runtimes/`), pushed to the node's "
        "registry on loopback. Seconds from creating the Model to READY (pod ready and the probe "
        "answered in the runtime's protocol), median of "
        f"{runs}; first pull: the image removed from the node's containerd before.",
        "",
        "| Runtime | Protocol | First pull: READY (pull) | Image present: READY |",
        "|---|---|---|---|",
    ]
    protocol = {"mlserver": "Open Inference", "deepaas": "DEEPaaS", "mlflow": "MLflow"}
    for runtime in ("mlserver", "deepaas", "mlflow"):
        cold = [r for r in results if r.runtime == runtime and r.pulled_first]
        warm = [r for r in results if r.runtime == runtime and not r.pulled_first]
        pulls = [r.pull_seconds for r in cold if r.pull_seconds is not None]
        pull = f" ({statistics.median(pulls):.1f})" if pulls else ""
        lines.append(
            f"| {runtime} | {protocol[runtime]} | "
            f"{statistics.median(r.seconds_to_ready for r in cold):.1f}{pull} | "
            f"{statistics.median(r.seconds_to_ready for r in warm):.1f} |"
        )
    if build_seconds:
        lines += ["", f"Building the image took {build_seconds:.0f} s here (cached after)."]
    write_section(SECTION, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each case (median)")
    asyncio.run(main(parser.parse_args().runs))
