"""modelyard's benchmark: N Models through the real operator on a real API server, against the
naive kopf baseline on the same server in the same run.

    make bench                      # N=1000
    make bench N="1000 5000"        # several sizes, one report

It starts the project's control plane (tests/cluster: kube-apiserver, kube-controller-manager and
etcd on loopback; the HPA controller is left out, so thousands of HPAs without a metrics API do
not load the machine), installs the CRDs, and gives each operator its own identity: ours the
chart's ServiceAccount and ClusterRole, the baseline a ServiceAccount of its own. Requests are
counted by the API server itself, from its audit log (every request of either identity, kopf's
own bookkeeping included, with the server's timestamps), so nothing sits between an operator
and the server.

For each N, ours first, then the baseline (each cluster-wide, each after the other's objects are
gone): N Models are created as fast as the server takes them; measured from the audit log:

- time from a Model's creation to its Deployment's creation (p50, p95, p99), as the server saw
  both;
- until every Model has its Deployment, Service, autoscaler and a first status (the baseline:
  its one Deployment);
- API requests per Model from the first creation until then, and until the operator settles;
- after the harness plays the kubelet (every pod running and ready): until every Model is READY,
  how long the operator still writes after the last READY status (settling), and its writes per
  minute over an idle window that starts once it has made no write for 10 s;
- its resident memory at the end of that idle window, and the time to Deployment of Models
  created one at a time into an operator that already holds N.

`--profile` samples our operator with py-spy during the burst (summary in bench/results/);
BENCH_CONTROLLERS=a,b overrides the controller-manager's controllers, to see what their work
costs the operators.

Results go to bench/results/bench-<N>.json and the table in docs/performance.md. Figures are
measured, never asserted: tests do not time anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import control_plane  # noqa: E402
from support.api import Api, ApiRefusal, resource_path  # noqa: E402
from support.audit import WRITE_VERBS, AuditLog, Request  # noqa: E402
from support.cluster import (  # noqa: E402
    OPERATOR_NAMESPACE,
    install_crds,
    operator_identity,
    service_account_token,
)
from support.controllers import kubelet_status, ready_pod_status  # noqa: E402
from support.operator_process import OperatorProcess  # noqa: E402

MODELS = "modelyard.dev/v1alpha1/models"
ADMIN = "modelyard-test-admin"
OURS = f"system:serviceaccount:{OPERATOR_NAMESPACE}:modelyard"
NAIVE = f"system:serviceaccount:{OPERATOR_NAMESPACE}:naive-kopf"
SAME_JOB = f"system:serviceaccount:{OPERATOR_NAMESPACE}:same-job-kopf"
FLOOR = f"system:serviceaccount:{OPERATOR_NAMESPACE}:floor"
#: The other identities: each a ServiceAccount bound to cluster-admin.
BASELINE_ACCOUNTS = {"naive": "naive-kopf", "same-job": "same-job-kopf", "floor": "floor"}
CONTROLLERS = (
    "garbage-collector-controller,deployment-controller,replicaset-controller,"
    "namespace-controller,serviceaccount-controller,resourcequota-controller"
)
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "users": [OURS, NAIVE, SAME_JOB, FLOOR]},
        # The harness's creations of Models: when each Model came to exist, by the server's clock.
        {
            "level": "Metadata",
            "users": [ADMIN],
            "verbs": ["create"],
            "resources": [{"group": "modelyard.dev", "resources": ["models"]}],
        },
        {"level": "None"},
    ],
}


# -- figures -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Figures:
    n: int
    namespaces: int = 1
    to_deployment_ms: dict[str, float] = field(default_factory=dict)
    all_deployments_s: float = float("nan")
    all_reconciled_s: float = float("nan")
    all_ready_s: float = float("nan")
    requests_per_model: float = float("nan")
    requests_per_model_settled: float = float("nan")
    requests_by_kind: dict[str, int] = field(default_factory=dict)
    settle_s: float = float("nan")
    idle_writes_per_minute: float = float("nan")
    idle_writes: list[str] = field(default_factory=list)
    rss_mb: float = float("nan")
    sequential_ms: dict[str, float] = field(default_factory=dict)
    rss_burst_mb: float = float("nan")
    #: CPU seconds over the burst (its first creation until every Model has its children and
    #: a status): the program's, and the control plane's (API server, etcd, controllers).
    cpu_s: float = float("nan")
    plane_cpu_s: float = float("nan")
    restart_writes: int = -1
    restart_write_examples: list[str] = field(default_factory=list)
    restart_lists_s: float = float("nan")
    restart_deployment_after_lists_s: float = float("nan")
    restart_rss_mb: float = float("nan")
    timed_out: bool = False


def first(
    requests: list[Request], user: str, namespaces: list[str], resource: str, sub: str = ""
) -> dict[str, float]:
    """Per object name, when `user` first wrote it successfully (created it, or its status) in
    one of `namespaces` (a run's: names repeat from run to run)."""
    found: dict[str, float] = {}
    for r in requests:
        if (
            r.user == user
            and r.resource == resource
            and r.subresource == sub
            and r.name
            and r.namespace in namespaces
        ):
            created = r.code == 201 or (sub == "status" and r.code == 200)
            if created and r.verb in ("create", "patch", "update"):
                found.setdefault(r.name, r.at)
    return found


def creations(requests: list[Request], namespaces: list[str]) -> dict[str, float]:
    return {
        r.name: r.at
        for r in requests
        if r.user == ADMIN
        and r.resource == "models"
        and r.namespace in namespaces
        and r.code == 201
        and r.name
    }


def delays_ms(created: dict[str, float], reached: dict[str, float]) -> list[float]:
    return [1000 * (reached[name] - at) for name, at in created.items() if name in reached]


# -- the harness playing users and kubelets --------------------------------------------------------


def namespace(api: Api, name: str) -> None:
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


class Kubelet:
    """Reports every pod of the namespace running and ready, as kubelets would; not counted.

    Played, not real: thousands of pods are more than one test node can run on 2 cores."""

    def __init__(self, api: Api, namespaces: list[str]) -> None:
        self.api, self.namespaces = api, namespaces
        self.done: set[str] = set()

    def run_all(self) -> int:
        pods = [
            p
            for ns in self.namespaces
            for p in self.api.list("v1/pods", ns)
            if p["metadata"]["name"] not in self.done
        ]
        status = ready_pod_status()

        def report(pod: dict[str, Any]) -> None:
            name = pod["metadata"]["name"]
            try:
                self.api.patch(
                    "v1/pods",
                    pod["metadata"]["namespace"],
                    name,
                    {"status": kubelet_status(pod, status)},
                    subresource="status",
                    manager="kubelet",
                    merge=True,
                )
                self.done.add(name)
            except ApiRefusal as refused:
                if refused.code != 404:  # 404: replaced meanwhile
                    raise

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(report, pods))
        return len(pods)


class ReadyWatch:
    """When each Model first reported READY, from a watch on every namespace's Models."""

    def __init__(self, api: Api) -> None:
        self.api, self.ns = api, None
        self.ready: dict[str, float] = {}
        self.stopped = threading.Event()
        listing = api.request("GET", resource_path(MODELS, None), query={"limit": "1"})
        self._since = listing["metadata"]["resourceVersion"]
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        while not self.stopped.is_set():
            try:
                for event in self.api.watch(MODELS, self.ns, self._since, seconds=5):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        break
                    self._since = obj["metadata"]["resourceVersion"]
                    if (obj.get("status") or {}).get("state") == "READY":
                        self.ready.setdefault(obj["metadata"]["name"], time.time())
            except Exception:  # a dropped stream: watch again
                time.sleep(0.2)


def progress(message: str) -> None:
    """A line on stderr per phase, so a long run shows where it is (and where it stuck)."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_for(check: Any, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat, fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PlaneProfile:
    """The control plane's CPU profile (Go's pprof, served by the API server to an admin) over
    the first seconds of a burst: what the server spends the CPU on for each program's writes
    and watches. Summarised with `go tool pprof -top`."""

    def __init__(self, bench: Bench, label: str) -> None:
        self.out = ROOT / "bench" / "results" / f"plane-{label}.pprof"
        self.seconds = bench.plane_profile
        self.thread = threading.Thread(target=self._take, args=(bench.api,), daemon=True)
        if self.seconds > 0:
            self.thread.start()

    def _take(self, api: Api) -> None:
        answer = api.raw(
            "GET",
            "/debug/pprof/profile",
            query={"seconds": str(int(self.seconds))},
            timeout=self.seconds + 30,
        )
        self.out.write_bytes(answer)

    def summary(self) -> str:
        if self.seconds <= 0:
            return ""
        self.thread.join(self.seconds + 60)
        if not self.out.exists():
            return "no control plane profile"
        top = subprocess.run(
            ["go", "tool", "pprof", "-top", "-nodecount=25", str(self.out)],
            capture_output=True,
            text=True,
            check=False,
        )
        text = top.stdout or top.stderr
        (self.out.with_suffix(".txt")).write_text(text)
        return text


class CpuMeter:
    """CPU used by a program and by the control plane from now until `stop`."""

    def __init__(self, pid: int, plane: control_plane.ControlPlane) -> None:
        self.pids = (pid, plane.process.pid)
        self.start = [cpu_seconds(p) for p in self.pids]

    def stop(self, figures: Figures) -> None:
        used = [cpu_seconds(p) - s for p, s in zip(self.pids, self.start, strict=True)]
        figures.cpu_s, figures.plane_cpu_s = used


def kubeconfig(plane: control_plane.ControlPlane, token: str, path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "bench",
                        "cluster": {
                            "server": plane.server,
                            "certificate-authority": str(plane.pki / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "bench", "context": {"cluster": "bench", "user": "operator"}}
                ],
                "current-context": "bench",
            }
        )
    )
    return path


# -- one operator, N Models --------------------------------------------------------------------


@dataclass
class Bench:
    plane: control_plane.ControlPlane
    api: Api
    audit: AuditLog
    work: Path
    tokens: dict[str, str]
    idle_seconds: float
    timeout: float
    sequential: int
    profile: bool = False
    #: Seconds of the control plane's own CPU profile to take at each burst's start (0: none).
    plane_profile: float = 0.0


def settle(bench: Bench, user: str, quiet: float = 10) -> float:
    """Wait until `user` has made no write for `quiet` seconds; the time of its last write."""
    last = 0.0
    deadline = time.monotonic() + bench.timeout
    while time.monotonic() < deadline:
        writes = [r.at for r in bench.audit.read() if r.user == user and r.verb in WRITE_VERBS]
        last = max(writes, default=0.0)
        if time.time() - last >= quiet:
            return last
        time.sleep(1)
    return last


def sequential_delays(bench: Bench, ns: str, first_index: int, user: str) -> dict[str, float]:
    """Models created one at a time, each once the previous one's Deployment exists."""
    for index in range(first_index, first_index + bench.sequential):
        body = model(ns, index)
        bench.api.request("POST", resource_path(MODELS, ns), body)
        name = body["metadata"]["name"]
        wait_for(lambda n=name: bench.api.get("apps/v1/deployments", ns, n) is not None, 30, 0.002)
    requests = bench.audit.read()
    created = {
        k: v
        for k, v in creations(requests, [ns]).items()
        if k.split("-")[1].isdigit() and int(k.split("-")[1]) >= first_index
    }
    delays = delays_ms(created, first(requests, user, [ns], "deployments"))
    return {f"p{q}": percentile(delays, q) for q in (50, 90)}


# What one Model becomes, as the server sees the operator write it.
MODEL_WRITES = (
    ("deployments", ""),
    ("services", ""),
    ("horizontalpodautoscalers", ""),
    ("models", "status"),
)


class Profile:
    """py-spy sampling our operator from the burst until its last child is written."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-p",
                str(pid),
                "-r",
                "100",
                "-f",
                "raw",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> str:
        """Stop sampling; a summary: where the samples were, by area and by function."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)
        stacks: list[tuple[list[str], int]] = []
        for line in self.out.read_text().splitlines():
            frames, _, count = line.rpartition(" ")
            if frames and count.isdigit():
                stacks.append((frames.split(";"), int(count)))
        total = sum(count for _, count in stacks) or 1
        areas = {
            "modelyard.handlers (events to the queue)": ("modelyard/handlers",),
            "aiohttp and ssl (HTTP to the API)": ("aiohttp/", "ssl.py", "asyncio/sslproto"),
            "json": ("json/",),
            "pydantic (parsing Models and templates)": ("pydantic",),
            "modelyard.kube (client, informers)": ("modelyard/kube",),
            "modelyard.reconcile / builders / status": (
                "modelyard/reconcile",
                "modelyard/builders",
                "modelyard/status",
            ),
            "logging": ("logging/",),
            "idle (waiting in select)": ("select (selectors.py",),
        }
        lines = [f"{total} samples at 100 Hz"]
        for area, marks in areas.items():
            hits = sum(c for frames, c in stacks if any(m in f for f in frames for m in marks))
            lines.append(f"  {100 * hits / total:5.1f}%  {area}")
        own: dict[str, int] = {}
        for frames, count in stacks:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        lines.append("  top functions (self time):")
        for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:12]:
            lines.append(f"  {100 * count / total:5.1f}%  {frame}")
        return "\n".join(lines)


def burst(
    bench: Bench,
    figures: Figures,
    *,
    pid: int,
    label: str,
    namespaces: list[str],
    user: str,
    writes: tuple[tuple[str, str], ...],
) -> None:
    """N Models created as fast as the server takes them, until `user` has made `writes` for
    each; the CPU it took (and the control plane's profile, when asked)."""
    n = figures.n
    cpu = CpuMeter(pid, bench.plane)
    plane_profile = PlaneProfile(bench, f"{label}-{n}-{figures.namespaces}")
    create_burst(bench.api, namespaces, 0, n)
    figures.timed_out = not wait_for(
        lambda: everything_written(bench, user, namespaces, n, writes), bench.timeout, 0.5
    )
    cpu.stop(figures)
    print(plane_profile.summary(), file=sys.stderr, flush=True)


def record_burst(
    figures: Figures, requests: list[Request], namespaces: list[str], n: int, user: str
) -> float:
    """Fill the burst's figures from the audit log; the burst's start is returned for the rest."""
    created = creations(requests, namespaces)
    begin = min(created.values())
    deployments = first(requests, user, namespaces, "deployments")
    delays = delays_ms(created, deployments)
    figures.to_deployment_ms = {f"p{q}": percentile(delays, q) for q in (50, 95, 99)}
    figures.all_deployments_s = max(deployments.values()) - begin
    written = [first(requests, user, namespaces, resource, sub) for resource, sub in MODEL_WRITES]
    if all(len(each) >= n for each in written):
        figures.all_reconciled_s = max(max(each.values()) for each in written) - begin
    done = begin + (
        figures.all_deployments_s
        if math.isnan(figures.all_reconciled_s)
        else figures.all_reconciled_s
    )
    counted = [
        r for r in requests if r.user == user and begin <= r.at <= done and r.verb != "watch"
    ]
    figures.requests_per_model = len(counted) / n
    by_kind: dict[str, int] = {}
    for r in counted:
        key = f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}"
        by_kind[key] = by_kind.get(key, 0) + 1
    figures.requests_by_kind = dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))
    return begin


def everything_written(
    bench: Bench, user: str, namespaces: list[str], n: int, writes: tuple[tuple[str, str], ...]
) -> bool:
    requests = bench.audit.read()
    return all(
        len(first(requests, user, namespaces, resource, sub)) >= n for resource, sub in writes
    )


def prepare(bench: Bench, namespaces: list[str], documents: bool) -> None:
    for ns in namespaces:
        namespace(bench.api, ns)
        for document in setup_documents(ns) if documents else []:
            bench.api.apply(document)


def clean_up(bench: Bench, namespaces: list[str]) -> None:
    """All of a run's namespaces deleted at once, then waited for: the namespace controller
    empties them in parallel."""
    for ns in namespaces:
        delete_namespace(bench.api, ns, bench.timeout, wait=False)
    for ns in namespaces:
        wait_namespace_gone(bench.api, ns, bench.timeout)


def logged_at(output: str, marker: str) -> float | None:
    """When the operator logged a line containing `marker` (its own clock, this machine's)."""
    for line in output.splitlines():
        if marker in line and line.startswith("["):
            stamp_text, _, _ = line[1:].partition("]")
            whole, _, millis = stamp_text.partition(",")
            return time.mktime(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
    return None


def restart(bench: Bench, operator: OperatorProcess, figures: Figures, ns: str) -> None:
    """An operator restarted over N settled Models: what it writes (nothing, when children and
    status are right), and how soon a Model created during its start-up gets its Deployment."""
    settle(bench, OURS)  # the Models created one at a time just before, finished too
    operator_stop(operator)
    started = time.time()
    operator.start()
    name = "model-restart"
    body = model(ns, 0)
    body["metadata"]["name"] = name
    bench.api.request("POST", resource_path(MODELS, ns), body)
    wait_for(lambda: bench.api.get("apps/v1/deployments", ns, name) is not None, bench.timeout)
    settle(bench, OURS)
    requests = bench.audit.read()
    # The new Model's own writes, and its template's status (which lists its Models), are
    # the new Model's doing, not the restart's.
    writes = [
        r
        for r in requests
        if r.user == OURS
        and r.at >= started
        and r.verb in WRITE_VERBS
        and r.name != name
        and not (r.resource == "modeltemplates" and r.subresource == "status" and r.namespace == ns)
    ]
    figures.restart_writes = len(writes)
    figures.restart_write_examples = [
        f"{r.verb} {r.resource}/{r.subresource} {r.name}" for r in writes
    ][:10]
    listed = logged_at(operator.log_path.read_text(errors="replace"), "objects listed")
    deployment = first(requests, OURS, [ns], "deployments").get(name)
    if listed is not None and deployment is not None:
        figures.restart_lists_s = listed - started
        figures.restart_deployment_after_lists_s = deployment - listed
    figures.restart_rss_mb = rss_mb(operator.process.pid) if operator.process else math.nan


def run_ours(bench: Bench, n: int, k: int) -> Figures:
    figures = Figures(n, k)
    namespaces = spread("modelyard", n, k)
    prepare(bench, namespaces, documents=True)
    config = kubeconfig(bench.plane, bench.tokens["ours"], bench.work / "ours.kubeconfig")
    operator = OperatorProcess(config, bench.work, verbose=False).start()
    assert operator.process is not None
    try:
        # The operator starts and settles on the Registries and templates before the clock.
        wait_for(
            lambda: all(
                (bench.api.get("modelyard.dev/v1alpha1/modeltemplates", ns, "embedder") or {}).get(
                    "status"
                )
                for ns in namespaces
            ),
            120,
        )
        settle(bench, OURS, quiet=3)
        watch = ReadyWatch(bench.api)
        start = time.time()
        profile = None
        if bench.profile:
            profile = Profile(operator.process.pid, bench.work / f"profile-{n}.txt")
        progress(f"creating {n} Models in {k} namespaces")
        burst(
            bench,
            figures,
            pid=operator.process.pid,
            label="modelyard",
            namespaces=namespaces,
            user=OURS,
            writes=MODEL_WRITES,
        )
        if profile is not None:
            summary = profile.stop()
            (ROOT / "bench" / "results" / f"profile-{n}.txt").write_text(summary + "\n")
            print(summary, file=sys.stderr, flush=True)
        progress("every Model has its children and a status" + (" (timed out)" * figures.timed_out))
        begin = record_burst(figures, bench.audit.read(), namespaces, n, OURS)
        figures.rss_burst_mb = rss_mb(operator.process.pid)

        # The kubelet: every pod running and ready; then every Model READY.
        kubelet = Kubelet(bench.api, namespaces)
        wait_for(lambda: kubelet.run_all() == 0 and len(kubelet.done) >= n, bench.timeout, 1)
        figures.timed_out |= not wait_for(lambda: len(watch.ready) >= n, bench.timeout, 0.5)
        progress(f"{len(watch.ready)} Models READY; waiting for 10 s without a write")
        watch.stopped.set()
        last_ready = max(watch.ready.values(), default=start)
        figures.all_ready_s = last_ready - begin
        last_write = settle(bench, OURS)
        figures.settle_s = max(0.0, last_write - last_ready)
        settled = bench.audit.read()
        mine = [r for r in settled if r.user == OURS and begin <= r.at and r.verb != "watch"]
        figures.requests_per_model_settled = len(mine) / n
        idle_from = time.time()
        progress(f"settled; idle for {bench.idle_seconds:.0f} s")
        time.sleep(bench.idle_seconds)
        idle = [
            r
            for r in bench.audit.read()
            if r.user == OURS and r.at >= idle_from and r.verb in WRITE_VERBS
        ]
        figures.idle_writes_per_minute = len(idle) * 60 / bench.idle_seconds
        # After the idle window: the steady state of an operator holding N Models.
        figures.rss_mb = rss_mb(operator.process.pid)
        figures.idle_writes = [f"{r.verb} {r.resource}/{r.subresource} {r.name}" for r in idle][:10]
        figures.sequential_ms = sequential_delays(bench, namespaces[0], n, OURS)
        progress("restarting the operator over the settled Models")
        restart(bench, operator, figures, namespaces[0])
    finally:
        operator_stop(operator)
        clean_up(bench, namespaces)
    return figures


def operator_stop(operator: OperatorProcess) -> None:
    import asyncio  # noqa: PLC0415 -- OperatorProcess.stop is a coroutine

    asyncio.run(operator.stop())


#: The official client the kopf baselines use, kept out of the project's environment: when it is
#: installed, kopf imports it in every process (ours too), which would add its ~45 MB to ours.
BASELINE_LIBRARIES = ROOT / ".cache" / "bench-baseline"


def baseline_libraries() -> Path:
    if not (BASELINE_LIBRARIES / "kubernetes").exists():
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "install", "--quiet"),
                *("--target", str(BASELINE_LIBRARIES), "kubernetes>=30"),
            ],
            check=True,
        )
    return BASELINE_LIBRARIES


@dataclass(frozen=True)
class Baseline:
    """Another program doing (part of) the same job, under its own identity."""

    label: str
    account: str
    user: str
    command: list[str]
    #: What it writes per Model, as MODEL_WRITES says ours does.
    writes: tuple[tuple[str, str], ...]
    ready_line: str | None = None


BASELINES = {
    "naive": Baseline(
        "naive kopf (Deployment only)",
        "naive",
        NAIVE,
        [sys.executable, "-m", "kopf", "run", "--standalone", "-A", "bench/baseline_operator.py"],
        (("deployments", ""),),
    ),
    "same-job": Baseline(
        "same-job kopf",
        "same-job",
        SAME_JOB,
        [sys.executable, "-m", "kopf", "run", "--standalone", "-A", "bench/samejob_operator.py"],
        MODEL_WRITES,
    ),
    "floor": Baseline(
        "floor (plain aiohttp, same writes, no retries)",
        "floor",
        FLOOR,
        [sys.executable, "bench/floor_client.py"],
        MODEL_WRITES,
        ready_line="watching",
    ),
}


def run_baseline(bench: Bench, baseline: Baseline, n: int, k: int) -> Figures:
    figures = Figures(n, k)
    namespaces = spread(baseline.account, n, k)
    prepare(bench, namespaces, documents=False)
    config = kubeconfig(
        bench.plane, bench.tokens[baseline.account], bench.work / f"{baseline.account}.kubeconfig"
    )
    log_path = bench.work / f"{baseline.account}.log"
    command = [*baseline.command]
    if baseline.ready_line:
        documents = bench.work / "floor-documents.yaml"
        placeholder = model("floor-namespace", 0)
        placeholder["metadata"].update(name="floor-model", uid="floor-uid")
        placeholder["spec"]["parameters"]["MODEL_PATH"] = "floor-path"
        documents.write_text(yaml.safe_dump_all([*setup_documents("floor-namespace"), placeholder]))
        command += [str(config), str(documents)]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "KUBECONFIG": str(config), "PYTHONPATH": str(baseline_libraries())},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if baseline.ready_line:
            wait_for(lambda: baseline.ready_line in log_path.read_text(), 60, 0.1)
        else:
            wait_for(lambda: any(r.user == baseline.user for r in bench.audit.read()), 60, 0.2)
            time.sleep(3)
        burst(
            bench,
            figures,
            pid=process.pid,
            label=baseline.account,
            namespaces=namespaces,
            user=baseline.user,
            writes=baseline.writes,
        )
        begin = record_burst(figures, bench.audit.read(), namespaces, n, baseline.user)
        figures.rss_burst_mb = rss_mb(process.pid)
        done = begin + (
            figures.all_deployments_s
            if math.isnan(figures.all_reconciled_s)
            else figures.all_reconciled_s
        )
        last_write = settle(bench, baseline.user)
        figures.settle_s = max(0.0, last_write - done)
        settled = [
            r
            for r in bench.audit.read()
            if r.user == baseline.user and r.at >= begin and r.verb != "watch"
        ]
        figures.requests_per_model_settled = len(settled) / n
        figures.rss_mb = rss_mb(process.pid)
        if baseline.account == "naive":
            figures.sequential_ms = sequential_delays(bench, namespaces[0], n, baseline.user)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        clean_up(bench, namespaces)
    return figures


# -- the report ----------------------------------------------------------------------------------


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
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


ROWS = (("modelyard", "ours"), *((b.label, key) for key, b in BASELINES.items()))


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| N | namespaces | operator | to Deployment p50 / p95 / p99 (ms) | all Deployments (s) "
        "| all children + status (s) | all READY (s) | requests / Model to first status "
        "(until settled) | settled after last status (s) | idle writes / min "
        "| RSS after burst / settled (MB) | one more Model p50 (ms) "
        "| CPU in the burst: program / control plane (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for label, key in ROWS:
            f = result.get(key)
            if not f or not f["to_deployment_ms"]:
                continue  # not run
            d = f["to_deployment_ms"]
            rows.append(
                f"| {f['n']} | {f['namespaces']} | {label} | {number(d['p50'])} / "
                f"{number(d['p95'])} / {number(d['p99'])} | {number(f['all_deployments_s'], 1)} | "
                f"{number(f['all_reconciled_s'], 1)} | {number(f['all_ready_s'], 1)} | "
                f"{number(f['requests_per_model'], 2)} "
                f"({number(f['requests_per_model_settled'], 2)}) | "
                f"{number(f['settle_s'], 1)} | {number(f['idle_writes_per_minute'])} | "
                f"{number(f['rss_burst_mb'])} / {number(f['rss_mb'])} | "
                f"{number(f['sequential_ms'].get('p50', math.nan), 1)} | "
                f"{number(f.get('cpu_s', math.nan), 1)} / "
                f"{number(f.get('plane_cpu_s', math.nan), 1)} |"
            )
        ratios = result["ratios"]
        rows.append(
            f"| {result['ours']['n']} | {result['ours']['namespaces']} | **all children + status: "
            f"modelyard ÷ floor {number(ratios['floor'], 2)} (target ≤ 1.2), ÷ same-job kopf "
            f"{number(ratios['same_job'], 2)} (target < 1)** | | | | | | | | | | |"
        )
    return "\n".join(rows)


def restart_table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| N settled | namespaces | writes after restart | initial lists in (s) "
        "| a Model created during start-up: Deployment after the lists (s) | RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        f = result["ours"]
        rows.append(
            f"| {f['n']} | {f['namespaces']} | {f['restart_writes']} | "
            f"{number(f['restart_lists_s'], 1)} | "
            f"{number(f['restart_deployment_after_lists_s'], 2)} | {number(f['restart_rss_mb'])} |"
        )
    return "\n".join(rows)


def write_report(results: list[dict[str, Any]], command: str, version: str) -> None:
    path = ROOT / "docs" / "performance.md"
    text = path.read_text() if path.exists() else ""
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    info = results[0]["machine"]
    block = (
        f"{begin}\nMeasured with `{command}` on {time.strftime('%Y-%m-%d')}: {info['cpus']} cores "
        f"({info['cpu']}), Python {info['python']}, kube-apiserver {version} with "
        f"kube-controller-manager (tests/cluster) on the same machine, each operator after the "
        f"other.\n\n{table(results)}\n\nRestarted over the settled Models:\n\n"
        f"{restart_table(results)}\n{end}"
    )
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text + "\n" + block + "\n"
    path.write_text(text)


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000])
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument(
        "--namespaces", type=int, nargs="+", default=[1], help="spread the Models over K namespaces"
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=sorted(BASELINES),
        help="baselines not to run",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample our operator with py-spy during the burst; summary in bench/results/",
    )
    parser.add_argument(
        "--profile-plane",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="take the control plane's CPU profile over the first SECONDS of each burst "
        "(go tool pprof -top in bench/results/)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="leave docs/performance.md as it is"
    )
    args = parser.parse_args()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    policy = work / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    audit = work / "audit.log"
    plane = control_plane.start(
        work / "cluster",
        [
            f"--apiserver-arg=--audit-policy-file={policy}",
            f"--apiserver-arg=--audit-log-path={audit}",
            "--apiserver-arg=--audit-log-format=json",
            "--apiserver-arg=--audit-log-maxsize=0",
            f"--controllers={os.environ.get('BENCH_CONTROLLERS', CONTROLLERS)}",
        ],
    )
    print(f"kube-apiserver {plane.version} at {plane.server}; work in {work}", flush=True)
    try:
        api = Api(plane.server, plane.pki)
        install_crds(api)
        tokens = {"ours": operator_identity(api, work)}
        for key, account in BASELINE_ACCOUNTS.items():
            api.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": account, "namespace": OPERATOR_NAMESPACE},
                }
            )
            api.apply(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": account},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "cluster-admin",
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": account, "namespace": OPERATOR_NAMESPACE}
                    ],
                }
            )
            tokens[key] = service_account_token(api, OPERATOR_NAMESPACE, account)
        bench = Bench(
            plane,
            api,
            AuditLog(audit),
            work,
            tokens,
            args.idle_seconds,
            args.timeout,
            args.sequential,
            args.profile,
            args.profile_plane,
        )
        results = []
        for n in args.n:
            for k in args.namespaces:
                print(f"N={n} over {k} namespaces: modelyard …", flush=True)
                ours = run_ours(bench, n, k)
                print(json.dumps(asdict(ours)), flush=True)
                result: dict[str, Any] = {
                    "machine": machine(),
                    "kubernetes": plane.version,
                    "ours": asdict(ours),
                }
                for key, baseline in BASELINES.items():
                    if key in args.skip:
                        continue
                    print(f"N={n} over {k} namespaces: {baseline.label} …", flush=True)
                    figures = run_baseline(bench, baseline, n, k)
                    print(json.dumps(asdict(figures)), flush=True)
                    result[key] = asdict(figures)
                result["ratios"] = {
                    key: ratio(
                        ours.all_reconciled_s,
                        (result.get(name) or {}).get("all_reconciled_s", math.nan),
                    )
                    for key, name in (("floor", "floor"), ("same_job", "same-job"))
                }
                (out / f"bench-{n}-{k}.json").write_text(json.dumps(result, indent=2))
                results.append(result)
        print(table(results))
        print(restart_table(results))
        if not args.no_write:
            command = (
                'make bench N="'
                + " ".join(map(str, args.n))
                + '" NAMESPACES="'
                + " ".join(map(str, args.namespaces))
                + '"'
            )
            write_report(results, command, plane.version)
    finally:
        plane.stop(grace=1)


if __name__ == "__main__":
    main()
