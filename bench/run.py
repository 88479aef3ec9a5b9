"""modelyard's benchmark: N Models through the real operator process, against a baseline.

    make bench                      # N=1000 against the emulated API
    make bench N="100 1000 5000"    # several sizes, one report

For each N, in the same run: the emulated Kubernetes API (tests/support/emulator.py) is started
in this process, the real operator (`modelyard run`) in a child process, and N Models are created
from one template; this process plays the Deployment controller and the kubelet (in-process, so
their writes are not counted as the operator's). Then the same N CRs go through the naive kopf
operator of bench/baseline_operator.py on a fresh emulated API. Measured:

- time from a Model's creation to its Deployment's creation (p50, p95, p99);
- time until all N are fully reconciled (Deployment, Service, autoscaler and status) and READY;
- API requests per Model from create to Ready, kopf's own bookkeeping included (watch streams
  are long-lived and counted apart);
- API writes per minute while idle with N Models present;
- the operator's resident memory after N.

With KUBECONFIG set, the same measurements run against that cluster instead, through the API
alone: the operator runs locally serving only a fresh namespace `modelyard-bench-*` (deleted at
the end), a watch timestamps Deployments and Models, and requests are counted by the operator's
own client (`modelyard_api_requests_total`) — kopf's bookkeeping requests are not visible there,
the report says so. Workers use the pause image and 1m CPU / 1Mi memory, so a real cluster is not
burdened; Models become READY only if the cluster runs them. `--emulated` ignores KUBECONFIG.
`--serve PORT` runs the emulated API (with the played controllers) standalone, which is how the
cluster mode is tested without a cluster.

Results go to bench/results/bench-<N>.json and the table in docs/performance.md. Figures are
measured, never asserted: tests do not time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import attrs
import kmock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.emulator import Cluster  # noqa: E402
from support.operator_process import OperatorProcess, kubeconfig  # noqa: E402

NAMESPACE = "bench"
MODELS = "modelyard.dev/v1alpha1/models"
DEPLOYMENTS = "apps/v1/deployments"


@attrs.define(kw_only=True)
class BenchCluster(Cluster):
    """The emulated API, timestamping what the benchmark measures and playing the controllers."""

    created: dict[str, float] = attrs.field(factory=dict, init=False)
    first_seen: dict[tuple[str, str], float] = attrs.field(factory=dict, init=False)
    ready: dict[str, float] = attrs.field(factory=dict, init=False)
    controllers: bool = True
    _tasks: set[asyncio.Task[None]] = attrs.field(factory=set, init=False)

    async def _emit(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        await super()._emit(resource, kind, obj)
        now = time.perf_counter()
        metadata = obj.get("metadata") or {}
        name = (metadata.get("labels") or {}).get("modelyard.dev/model") or metadata.get("name", "")
        self.first_seen.setdefault((resource, name), now)
        if resource == MODELS and ((obj.get("status") or {}).get("state") == "READY"):
            self.ready.setdefault(metadata["name"], now)
        if resource == DEPLOYMENTS and kind == "ADDED" and self.controllers:
            task = asyncio.get_running_loop().create_task(self._start_pods(obj))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start_pods(self, deployment: dict[str, Any]) -> None:
        """The Deployment controller and the kubelet: one ready pod, and the counts."""
        metadata, template = deployment["metadata"], deployment["spec"]["template"]
        pod = f"{metadata['name']}-0"
        await self.create(
            "v1/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": metadata["namespace"],
                    "labels": template["metadata"]["labels"],
                    "annotations": template["metadata"].get("annotations", {}),
                },
                "spec": template["spec"],
            },
        )
        await self.patch(
            "v1/pods",
            metadata["namespace"],
            pod,
            {
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {
                            "name": "model",
                            "ready": True,
                            "started": True,
                            "restartCount": 0,
                            "state": {"running": {}},
                        }
                    ],
                }
            },
            subresource="status",
            manager="kubelet",
        )
        replicas = deployment["spec"].get("replicas", 1)
        await self.patch(
            DEPLOYMENTS,
            metadata["namespace"],
            metadata["name"],
            {
                "status": {
                    "observedGeneration": metadata.get("generation", 1),
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                }
            },
            subresource="status",
            manager="controller",
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def to_deployment_ms(
    first_seen: dict[tuple[str, str], float], created: dict[str, float]
) -> dict[str, float]:
    """p50/p95/p99 of the time from each Model's creation to its Deployment's, in ms."""
    delays = [
        first_seen[(DEPLOYMENTS, name)] - at
        for name, at in created.items()
        if (DEPLOYMENTS, name) in first_seen
    ]
    return {f"p{q}": 1000 * percentile(delays, q) for q in (50, 95, 99)}


async def create_models(
    cluster: BenchCluster, models: list[tuple[str, dict[str, Any]]]
) -> list[str]:
    """Create the Models as fast as the API takes them, stamping each creation time."""
    for resource, body in models:
        cluster.created[body["metadata"]["name"]] = time.perf_counter()
        await cluster.create(resource, body, manager="kubectl")
    return [body["metadata"]["name"] for _, body in models]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def documents(n: int) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    setup = [
        (
            "modelyard.dev/v1alpha1/registries",
            {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "Registry",
                "metadata": {"name": "local", "namespace": NAMESPACE},
                "spec": {"url": "http://127.0.0.1:9"},
            },
        ),
        (
            "modelyard.dev/v1alpha1/modeltemplates",
            {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "ModelTemplate",
                "metadata": {"name": "embedder", "namespace": NAMESPACE},
                "spec": {
                    "modelType": "EMBEDDING",
                    "image": {
                        "registry": "local",
                        "repository": "acme/embedder",
                        "digest": "sha256:" + "a" * 64,
                    },
                    "resources": {"cpus": 1, "memory": "2Gi"},
                    "scaling": {"minWorkers": 1, "maxWorkers": 3, "perWorker": 8},
                    "parameters": [{"name": "MODEL_PATH", "required": True}],
                },
            },
        ),
    ]
    models = [
        (
            MODELS,
            {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": f"model-{i:05d}", "namespace": NAMESPACE},
                "spec": {"template": "embedder", "parameters": {"MODEL_PATH": f"s3://models/{i}"}},
            },
        )
        for i in range(n)
    ]
    return setup, models


@dataclass
class Figures:
    n: int
    to_deployment_ms: dict[str, float] = field(default_factory=dict)
    all_reconciled_s: float = float("nan")
    all_ready_s: float = float("nan")
    requests_per_model: float = float("nan")
    watch_requests: int = 0
    settle_s: float = float("nan")
    idle_writes_per_minute: float = float("nan")
    idle_writes: list[str] = field(default_factory=list)
    rss_mb: float = float("nan")
    timed_out: bool = False


async def wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return False


async def run_ours(n: int, directory: Path, idle_seconds: float, timeout: float) -> Figures:
    figures = Figures(n)
    setup, models = documents(n)
    async with BenchCluster() as cluster, kmock.Server(cluster) as server:
        for resource, body in setup:
            await cluster.create(resource, body, manager="kubectl")
        operator = OperatorProcess(str(server.url), directory, verbose=False).start()
        try:
            # Let the operator start and settle on the setup objects before the clock starts.
            await wait(lambda: len(cluster.writes()) >= 1, 30)
            await asyncio.sleep(3)
            start_index = len(cluster.served)
            start = time.perf_counter()
            names = await create_models(cluster, models)
            kinds = (DEPLOYMENTS, "v1/services", "autoscaling/v2/horizontalpodautoscalers")

            def reconciled() -> bool:
                return all(
                    (k, name) in cluster.first_seen for name in names for k in kinds
                ) and all(
                    (cluster.store.get((MODELS, NAMESPACE, name)) or {}).get("status")
                    for name in names
                )

            figures.timed_out = not await wait(reconciled, timeout)
            figures.all_reconciled_s = time.perf_counter() - start
            figures.timed_out |= not await wait(lambda: len(cluster.ready) == n, timeout)
            figures.all_ready_s = max(cluster.ready.values(), default=start) - start
            await asyncio.sleep(2)  # the last Events land
            served = cluster.served[start_index:]
            figures.watch_requests = sum(1 for entry in served if entry[1].endswith("?watch"))
            counted = [entry for entry in served if not entry[1].endswith("?watch")]
            figures.requests_per_model = len(counted) / n
            figures.to_deployment_ms = to_deployment_ms(cluster.first_seen, cluster.created)
            figures.rss_mb = rss_mb(operator.process.pid) if operator.process else float("nan")
            # Idle means nothing changes: wait until the last trailing writes (kopf finishing its
            # own create handlers) have stopped for 5 s, then count writes over the window.
            settle_start = time.perf_counter()
            last, quiet_since = len(cluster.writes()), time.perf_counter()
            while (
                time.perf_counter() - quiet_since < 5
                and time.perf_counter() - settle_start < timeout
            ):
                await asyncio.sleep(0.5)
                if len(cluster.writes()) != last:
                    last, quiet_since = len(cluster.writes()), time.perf_counter()
            figures.settle_s = time.perf_counter() - settle_start - 5
            before = len(cluster.writes())
            await asyncio.sleep(idle_seconds)
            idle = cluster.writes()[before:]
            figures.idle_writes_per_minute = len(idle) * 60 / idle_seconds
            figures.idle_writes = [f"{method} {path} {code}" for method, path, code in idle[:10]]
        finally:
            await operator.stop()
    return figures


async def run_baseline(n: int, directory: Path, timeout: float) -> Figures:
    figures = Figures(n)
    _, models = documents(n)
    async with BenchCluster(controllers=False) as cluster, kmock.Server(cluster) as server:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig(str(server.url), directory))}
        log = (directory / "baseline.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "--standalone",
                "-A",
                str(ROOT / "bench" / "baseline_operator.py"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            await wait(lambda: any(entry[1].endswith("?watch") for entry in cluster.served), 30)
            await asyncio.sleep(3)
            start_index = len(cluster.served)
            start = time.perf_counter()
            names = await create_models(cluster, models)
            figures.timed_out = not await wait(
                lambda: all((DEPLOYMENTS, name) in cluster.first_seen for name in names), timeout
            )
            figures.all_reconciled_s = time.perf_counter() - start
            await asyncio.sleep(3)  # kopf's trailing bookkeeping patches
            counted = [e for e in cluster.served[start_index:] if not e[1].endswith("?watch")]
            figures.requests_per_model = len(counted) / n
            figures.to_deployment_ms = to_deployment_ms(cluster.first_seen, cluster.created)
            figures.rss_mb = rss_mb(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    return figures


# -- any cluster, through the API alone ---------------------------------------------------------


class ClusterWatch:
    """Timestamps from watch streams on a real cluster: first Deployment per Model, READY."""

    def __init__(self, namespace: str) -> None:
        import kubernetes  # noqa: PLC0415 -- only the cluster mode needs the client

        self.kubernetes = kubernetes
        self.namespace = namespace
        self.first_seen: dict[tuple[str, str], float] = {}
        self.ready: dict[str, float] = {}
        self.stopped = False

    def follow(self, api: Any, method: str, resource: str, **kwargs: Any) -> None:
        watch = self.kubernetes.watch.Watch()
        while not self.stopped:
            try:
                for event in watch.stream(
                    getattr(api, method), namespace=self.namespace, timeout_seconds=5, **kwargs
                ):
                    obj = event["object"]
                    obj = (
                        obj
                        if isinstance(obj, dict)
                        else api.api_client.sanitize_for_serialization(obj)
                    )
                    metadata = obj.get("metadata") or {}
                    name = (metadata.get("labels") or {}).get(
                        "modelyard.dev/model"
                    ) or metadata.get("name", "")
                    self.first_seen.setdefault((resource, name), time.perf_counter())
                    if resource == MODELS and (obj.get("status") or {}).get("state") == "READY":
                        self.ready.setdefault(metadata["name"], time.perf_counter())
                    if self.stopped:
                        return
            except Exception:  # a dropped stream: watch again
                time.sleep(0.5)


def scrape_requests(port: int) -> dict[str, float]:
    import urllib.request  # noqa: PLC0415

    counts: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("modelyard_api_requests_total{"):
                method = line.split('method="', 1)[1].split('"', 1)[0]
                counts[method] = float(line.rsplit(" ", 1)[1])
    return counts


def cluster_documents(namespace: str, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The benchmark's objects, light enough for a real cluster: pause image, 1m CPU, 1Mi."""
    setup, models = documents(n)
    for _, body in setup + models:
        body["metadata"]["namespace"] = namespace
    template = setup[1][1]["spec"]
    template["image"] = {"registry": "local", "repository": "pause", "digest": "sha256:" + "b" * 64}
    template["resources"] = {"cpus": "1m", "memory": "1Mi"}
    return [body for _, body in setup], [body for _, body in models]


def start_watches(namespace: str, with_models: bool) -> ClusterWatch:
    import threading  # noqa: PLC0415

    import kubernetes  # noqa: PLC0415

    watcher = ClusterWatch(namespace)
    apps, custom = kubernetes.client.AppsV1Api(), kubernetes.client.CustomObjectsApi()
    follows: list[tuple[Any, str, str, dict[str, str]]] = [
        (apps, "list_namespaced_deployment", DEPLOYMENTS, {})
    ]
    if with_models:
        crd = {"group": "modelyard.dev", "version": "v1alpha1", "plural": "models"}
        follows.append((custom, "list_namespaced_custom_object", MODELS, crd))
    for api, method, resource, kwargs in follows:
        threading.Thread(
            target=watcher.follow, args=(api, method, resource), kwargs=kwargs, daemon=True
        ).start()
    return watcher


def launch(
    namespace: str, directory: Path, baseline: bool
) -> tuple[OperatorProcess | None, Any, int]:
    """The operator under test, serving only `namespace` of the KUBECONFIG cluster."""
    if baseline:
        log = (directory / "baseline-cluster.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "--standalone",
                "--namespace",
                namespace,
                str(ROOT / "bench" / "baseline_operator.py"),
            ],
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return None, process, process.pid
    operator = OperatorProcess("", directory, verbose=False, namespaces=[namespace]).start()
    return operator, None, operator.process.pid if operator.process else 0


async def run_on_cluster(
    n: int, directory: Path, idle_seconds: float, timeout: float, baseline: bool
) -> Figures:
    import kubernetes  # noqa: PLC0415

    kubernetes.config.load_kube_config()
    core, custom = kubernetes.client.CoreV1Api(), kubernetes.client.CustomObjectsApi()
    namespace = f"modelyard-bench-{int(time.time())}-{'naive' if baseline else 'ours'}"
    core.create_namespace(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    figures = Figures(n)
    setup, models = cluster_documents(namespace, n)
    watcher = start_watches(namespace, with_models=not baseline)
    plurals = {"Registry": "registries", "ModelTemplate": "modeltemplates", "Model": "models"}

    def create(body: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object(
            "modelyard.dev", "v1alpha1", namespace, plurals[body["kind"]], body
        )

    operator, process, pid = launch(namespace, directory, baseline)
    try:
        for body in setup:
            await asyncio.to_thread(create, body)
        await asyncio.sleep(5)
        before = scrape_requests(operator.metrics_port) if operator else {}
        created: dict[str, float] = {}
        start = time.perf_counter()
        for body in models:
            created[body["metadata"]["name"]] = time.perf_counter()
            await asyncio.to_thread(create, body)
        figures.timed_out = not await wait(
            lambda: all((DEPLOYMENTS, m) in watcher.first_seen for m in created), timeout
        )
        figures.all_reconciled_s = time.perf_counter() - start
        figures.to_deployment_ms = to_deployment_ms(watcher.first_seen, created)
        figures.rss_mb = rss_mb(pid)
        if operator is not None:
            await wait(lambda: len(watcher.ready) == n, 30)  # READY only if the cluster runs pods
            figures.all_ready_s = (
                max(watcher.ready.values()) - start if watcher.ready else float("nan")
            )
            figures.requests_per_model = (
                sum(scrape_requests(operator.metrics_port).values()) - sum(before.values())
            ) / n
            await asyncio.sleep(5)
            mark = scrape_requests(operator.metrics_port)
            await asyncio.sleep(idle_seconds)
            idle = scrape_requests(operator.metrics_port)
            figures.idle_writes_per_minute = (
                sum(v - mark.get(k, 0) for k, v in idle.items() if k != "GET") * 60 / idle_seconds
            )
    finally:
        watcher.stopped = True
        if operator is not None:
            await operator.stop()
        if process is not None:
            process.terminate()
        try:
            core.delete_namespace(namespace)
        except Exception as error:
            print(f"could not delete namespace {namespace}: {error}", file=sys.stderr)
    return figures


async def serve(port: int) -> None:
    """The emulated API with the played controllers, standalone (tests the cluster mode)."""
    async with BenchCluster() as cluster, kmock.Server(cluster, port=port):
        print(f"emulated API on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def number(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"  # not measurable there


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| N | operator | to Deployment p50 / p95 / p99 (ms) | all reconciled (s) "
        "| all READY (s) | "
        "requests per Model | idle writes / min | RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        ours, base = result["ours"], result["baseline"]
        for label, f in (("modelyard", ours), ("naive kopf", base)):
            if not f["to_deployment_ms"]:
                continue  # --skip-baseline
            d = f["to_deployment_ms"]
            ready = f"{f['all_ready_s']:.1f}" if label == "modelyard" else "—"
            idle = f"{f['idle_writes_per_minute']:.0f}" if label == "modelyard" else "—"
            rows.append(
                f"| {f['n']} | {label} | {d['p50']:.0f} / {d['p95']:.0f} / {d['p99']:.0f} | "
                f"{f['all_reconciled_s']:.1f} | {ready} | "
                f"{number(f['requests_per_model'], 2)} | {idle} | {f['rss_mb']:.0f} |"
            )
        ratio = result["ratios"]
        rows.append(
            f"| {ours['n']} | ratio (modelyard ÷ naive) "
            f"| {ratio['p50']:.2f} / — / {ratio['p99']:.2f} | "
            f"{ratio['all_reconciled']:.2f} | | {number(ratio['requests'], 2)} | | "
            f"{number(ratio['rss'], 2)} |"
        )
    return "\n".join(rows)


def write_report(results: list[dict[str, Any]], command: str) -> None:
    path = ROOT / "docs" / "performance.md"
    text = path.read_text() if path.exists() else ""
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    info = results[0]["machine"]
    target = results[0].get("target", "emulated API")
    where = (
        "against the emulated API in the same process as the harness"
        if target == "emulated API"
        else f"against the cluster of {target} (requests counted by modelyard's own client only)"
    )
    block = (
        f"{begin}\nMeasured with `{command}` on {time.strftime('%Y-%m-%d')}: {info['cpus']} cores "
        f"({info['cpu']}), Python {info['python']}, {where}.\n\n{table(results)}\n{end}"
    )
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text + "\n" + block + "\n"
    path.write_text(text)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000])
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--emulated", action="store_true", help="ignore KUBECONFIG")
    parser.add_argument(
        "--serve", type=int, metavar="PORT", help="serve the emulated API standalone"
    )
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve)
        return
    on_cluster = bool(os.environ.get("KUBECONFIG")) and not args.emulated
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.n:
        work = out / f"work-{n}"
        work.mkdir(exist_ok=True)
        print(f"N={n}: modelyard …", flush=True)
        ours = (
            await run_on_cluster(n, work, args.idle_seconds, args.timeout, baseline=False)
            if on_cluster
            else await run_ours(n, work, args.idle_seconds, args.timeout)
        )
        print(json.dumps(asdict(ours)), flush=True)
        base = Figures(n)
        if not args.skip_baseline:
            print(f"N={n}: naive kopf baseline …", flush=True)
            base = (
                await run_on_cluster(n, work, args.idle_seconds, args.timeout, baseline=True)
                if on_cluster
                else await run_baseline(n, work, args.timeout)
            )
            print(json.dumps(asdict(base)), flush=True)

        def ratio(a: float, b: float) -> float:
            return a / b if b else float("nan")

        result = {
            "machine": machine(),
            "ours": asdict(ours),
            "baseline": asdict(base),
            "ratios": {
                "p50": ratio(
                    ours.to_deployment_ms.get("p50", 0), base.to_deployment_ms.get("p50", 0)
                ),
                "p99": ratio(
                    ours.to_deployment_ms.get("p99", 0), base.to_deployment_ms.get("p99", 0)
                ),
                "all_reconciled": ratio(ours.all_reconciled_s, base.all_reconciled_s),
                "requests": ratio(ours.requests_per_model, base.requests_per_model),
                "rss": ratio(ours.rss_mb, base.rss_mb),
            },
        }
        (out / f"bench-{n}.json").write_text(json.dumps(result, indent=2))
        results.append(result)
    print(table(results))
    write_report(results, 'make bench N="' + " ".join(map(str, args.n)) + '"')


if __name__ == "__main__":
    asyncio.run(main())
