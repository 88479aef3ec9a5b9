"""What the bench does to a program, in steps the baselines share: a burst of N Models, the
kubelet's turn, settling and idling, one Model at a time, and (ours only) a restart.

Figures are read from what the server saw (its audit log, the objects themselves), so ours and
each baseline are measured alike; a program's own log is read only to know it has started, and
when ours had listed everything after a restart.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit import OURS, Figures, creations, delays_ms, first, percentile
from kubelet import Kubelet, ReadyWatch
from load import (
    MODELS,
    create_burst,
    delete_namespace,
    model,
    namespace,
    setup_documents,
    spread,
    wait_namespace_gone,
)
from meter import CpuMeter, PlaneProfile, Profile, rss_mb
from paths import RESULTS
from stage import kubeconfig

from support import control_plane
from support.api import Api, resource_path
from support.audit import WRITE_VERBS, AuditLog, Request
from support.operator_process import OperatorProcess

# What one Model becomes, as the server sees the operator write it.
MODEL_WRITES = (
    ("deployments", ""),
    ("services", ""),
    ("horizontalpodautoscalers", ""),
    ("models", "status"),
)


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
    plane_profile = PlaneProfile(
        bench.api, bench.plane_profile, f"{label}-{n}-{figures.namespaces}"
    )
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


def logged_at(output: str, marker: str) -> float | None:
    """When the operator logged a line containing `marker` (its own clock, this machine's)."""
    for line in output.splitlines():
        if marker in line and line.startswith("["):
            stamp_text, _, _ = line[1:].partition("]")
            whole, _, millis = stamp_text.partition(",")
            return time.mktime(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
    return None


def operator_stop(operator: OperatorProcess) -> None:
    import asyncio  # noqa: PLC0415 -- OperatorProcess.stop is a coroutine

    asyncio.run(operator.stop())


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
            (RESULTS / f"profile-{n}.txt").write_text(summary + "\n")
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
