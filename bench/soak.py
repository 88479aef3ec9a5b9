"""The soak: two `--leader-elect` replicas on the real API server and node, a driver changing
Models and versions, a chaos loop injecting faults at random, and invariants checked all along.

    make soak MINUTES=20         # as root, where the tests' real node can run

It runs what the tests run — the control plane of tests/cluster, the real node (kubelet,
containerd, runc, CNI, kube-proxy), the local registry with the model server's images — and two
operator processes sharing one Lease, through the fault proxy. For MINUTES:

- the driver publishes versions of the model server (good ones, ones that answer off-contract,
  ones that crash at start; canary rollouts promote or roll back each), and creates and deletes
  Models;
- the chaos loop, every 15 to 40 s, does one of: SIGKILL the leader (restarted after 2 s); an API
  server outage as clients see one (every watch dropped, every call refused with 503 for 5 s,
  then every resume answered 410, as after a restart and a compaction); stall every open watch;
  delete a serving pod; stop the registry for 20 s; take the registry credentials' consent back
  for 20 s;
- the checker, every 2 s, holds these invariants:
  1. a rolled-back revision never serves: no ready serving pod of a Model runs a revision its
     status rolled back for its current generation;
  2. READY tells the truth: a Model that says READY has a serving worker that answers the probe
     in its contract, asked by the checker itself on the pods' addresses (a Model saying READY
     while none does for longer than the operator's probe interval plus 30 s is a violation);
  3. nothing lost or duplicated: every Model the driver made and did not delete exists, with at
     most one serving Deployment and one canary, and no Deployment outlives its Model by 60 s;
  4. the operators' resident memory stays under 400 MB.
Then the chaos stops, and everything must converge — every Model READY with no rollout under way —
within 5 minutes. The report (faults by kind, checks made, violations, convergence time, peak
memory) is printed and written to docs/reliability.md; the exit status is non-zero if any
invariant was violated or nothing converged.

The API server process is not restarted (it embeds the cluster's etcd); its outage is played at
the proxy, which is where an operator meets one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from modelyard.api.contracts import RerankingResponse  # noqa: E402
from support.cluster import (  # noqa: E402
    MODELS,
    Cluster,
    RealNode,
    Session,
    grant_lease,
)
from support.controllers import CONSENT, DEPLOYMENTS, PODS  # noqa: E402
from support.node import leftovers  # noqa: E402
from support.operator_process import OperatorProcess  # noqa: E402
from support.workloads import (  # noqa: E402
    NODE_OPERATOR_CONFIG,
    PROBES,
    registry_documents,
    template,
)

sys.path.insert(0, str(ROOT / "bench"))
from meter import rss_mb  # noqa: E402

Obj = dict[str, Any]
LEASES = "coordination.k8s.io/v1/leases"
UNDER_WAY = {"Canary", "AwaitingCapacity", "Analysing", "Promoting"}
PROBE_INTERVAL = 5
#: A Model may say READY while no worker conforms for at most this long (its probe's interval,
#: a retry, and room for the status write to land).
READY_GRACE = PROBE_INTERVAL + 30
RSS_BOUND_MB = 400
CONVERGENCE_BOUND = 300.0
SPEC_HASH = "modelyard.dev/spec-hash"


@dataclass
class Report:
    started: float = field(default_factory=time.time)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    actions: collections.Counter[str] = field(default_factory=collections.Counter)
    checks: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    peak_rss: dict[str, float] = field(default_factory=dict)
    leaders: list[str] = field(default_factory=list)
    convergence: float | None = None
    rollbacks: int = 0
    promotions: int = 0

    def violated(self, what: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        if what not in [v.split(" ", 1)[1] for v in self.violations]:
            print(f"VIOLATION {stamp} {what}", flush=True)
            self.violations.append(f"{stamp} {what}")


class Soak:
    def __init__(self, session: Session, cluster: Cluster, node: RealNode, work: Path) -> None:
        self.session = session
        self.cluster = cluster
        self.api = cluster.api
        self.ns = cluster.namespace
        self.node = node
        self.work = work
        self.report = Report()
        self.operators: dict[str, OperatorProcess] = {}
        self.models: set[str] = set()
        self.deleted: dict[str, float] = {}
        self.versions = 0
        #: (Model uid, generation) → revisions rolled back for it.
        self.rolled_back: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
        self.unconforming_since: dict[str, float] = {}
        self.calm = asyncio.Event()

    # -- set-up ---------------------------------------------------------------------------------

    def template(self) -> Obj:
        """The model server as the canary tests run it (1 worker, 50m CPU), rolled out by
        canary with a 10 s analysis, its probe the reranking contract's."""
        found = template(
            self.node,
            model_type="RERANKING",
            behaviour=False,
            rollout={"strategy": "Canary", "analysisSeconds": 10},
            startup_timeout=40,
        )
        found["metadata"]["namespace"] = self.ns
        return found

    def model(self, name: str) -> Obj:
        return {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "template": "served",
                "version": {"model": "model-server", "version": ">=1.0.0 <2.0.0"},
            },
        }

    async def publish(self, behaviour: str) -> None:
        """A new version of the model server that behaves so."""
        self.versions += 1
        number = f"1.0.{self.versions}"
        env = {
            "good": {"ANSWER": "conforming"},
            "off-contract": {"ANSWER": "wrong-shape"},
            "crashing": {"CRASH": "true"},
        }[behaviour]
        digest = await asyncio.to_thread(
            self.node.push, number, f"{behaviour}-{self.versions}", env
        )
        await asyncio.to_thread(
            self.api.apply,
            {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": f"server-{number}", "namespace": self.ns},
                "spec": {
                    "model": "model-server",
                    "version": number,
                    "registry": "local",
                    "repository": self.node.repository,
                    "digest": digest,
                },
            },
            "soak",
        )
        self.report.actions[f"publish {behaviour} version"] += 1

    def start_operator(self, name: str) -> OperatorProcess:
        directory = self.work / name
        directory.mkdir(exist_ok=True)
        config = {
            **NODE_OPERATOR_CONFIG,
            "probes": {
                **NODE_OPERATOR_CONFIG.get("probes", {}),
                "intervalSeconds": PROBE_INTERVAL,
                "retrySeconds": 2,
            },
            "watchIdleSeconds": 20,
        }
        process = OperatorProcess(
            self.cluster.operator_kubeconfig(self.work),
            directory,
            config=config,
            verbose=False,
            lease_namespace=self.ns,
            name=name,
        ).start()
        self.operators[name] = process
        return process

    async def set_up(self) -> None:
        await asyncio.to_thread(grant_lease, self.api, self.work, self.ns)
        for document in [*registry_documents(self.node), self.template()]:
            document.setdefault("metadata", {})["namespace"] = self.ns
            await asyncio.to_thread(self.api.apply, document, "soak")
        await self.publish("good")
        for index in range(3):
            await self.create_model(f"model-{index}")
        for name in ("replica-a", "replica-b"):
            self.start_operator(name)

    async def create_model(self, name: str) -> None:
        await asyncio.to_thread(self.api.apply, self.model(name), "soak")
        self.models.add(name)
        self.deleted.pop(name, None)
        self.report.actions["create a Model"] += 1

    # -- the driver ------------------------------------------------------------------------------

    async def drive(self, until: float) -> None:
        serial = 3
        while time.monotonic() < until:
            await asyncio.sleep(random.uniform(15, 30))
            choice = random.choices(
                ["good", "off-contract", "crashing", "create", "delete"], [4, 2, 2, 1, 1]
            )[0]
            try:
                if choice in ("good", "off-contract", "crashing"):
                    await self.publish(choice)
                elif choice == "create" and len(self.models) < 5:
                    await self.create_model(f"model-{serial}")
                    serial += 1
                elif choice == "delete" and len(self.models) > 2:
                    name = random.choice(sorted(self.models))
                    await asyncio.to_thread(self.api.delete, MODELS, self.ns, name)
                    self.models.discard(name)
                    self.deleted[name] = time.monotonic()
                    self.report.actions["delete a Model"] += 1
            except Exception as error:  # the driver goes on; the checker judges
                print(f"driver: {choice}: {error}", flush=True)

    # -- chaos -----------------------------------------------------------------------------------

    def leader(self) -> str | None:
        lease = self.api.get(LEASES, self.ns, "modelyard-leader") or {}
        holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
        name = holder.rpartition("_")[0]
        return name if name in self.operators else None

    async def chaos(self, until: float) -> None:
        faults = [
            self.kill_leader,
            self.api_outage,
            self.stall_watches,
            self.delete_serving_pod,
            self.registry_outage,
            self.revoke_consent,
        ]
        while time.monotonic() < until:
            await asyncio.sleep(random.uniform(15, 40))
            fault = random.choice(faults)
            try:
                await fault()
                self.report.faults[fault.__name__.replace("_", " ")] += 1
            except Exception as error:
                print(f"chaos: {fault.__name__}: {error}", flush=True)

    async def kill_leader(self) -> None:
        name = await asyncio.to_thread(self.leader)
        if name is None:
            return
        await self.operators[name].kill()
        await asyncio.sleep(2)
        self.start_operator(name)

    async def api_outage(self) -> None:
        proxy = self.cluster.proxy
        refused = [proxy.fail(method, r".", 503, times=None) for method in ("*",)]
        await self.cluster.drop_watches()
        await asyncio.sleep(5)
        await self.cluster.expire_history()
        for fault in refused:
            proxy.faults.remove(fault)

    async def stall_watches(self) -> None:
        self.cluster.proxy.stall_watches("")

    async def delete_serving_pod(self) -> None:
        pods = [
            p
            for p in await asyncio.to_thread(self.api.list, PODS, self.ns)
            if (p["metadata"].get("labels") or {}).get("modelyard.dev/track") != "canary"
            and not p["metadata"].get("deletionTimestamp")
        ]
        if pods:
            pod = random.choice(pods)
            await asyncio.to_thread(self.api.delete, PODS, self.ns, pod["metadata"]["name"])

    async def registry_outage(self) -> None:
        await self.node.registry.stop()
        await asyncio.sleep(20)
        await self.node.registry.start()

    async def revoke_consent(self) -> None:
        secret = "local-registry-credentials"
        label = next(iter(CONSENT))
        await asyncio.to_thread(
            self.api.patch, "v1/secrets", self.ns, secret, {"metadata": {"labels": {label: None}}}
        )
        await asyncio.sleep(20)
        await asyncio.to_thread(
            self.api.patch, "v1/secrets", self.ns, secret, {"metadata": {"labels": CONSENT}}
        )

    # -- the checker -----------------------------------------------------------------------------

    async def check(self, until: float | None = None) -> None:
        while until is None or time.monotonic() < until:
            try:
                await asyncio.to_thread(self.check_once)
            except Exception as error:  # an API blip of the checker's own: look again
                print(f"checker: {error}", flush=True)
            await asyncio.sleep(2)

    def check_once(self) -> None:
        report = self.report
        models = {m["metadata"]["name"]: m for m in self.api.list(MODELS, self.ns)}
        pods = self.api.list(PODS, self.ns)
        deployments = self.api.list(DEPLOYMENTS, self.ns)
        for name in sorted(self.models):
            report.checks["nothing lost"] += 1
            if name not in models:
                report.violated(f"Model {name} was created and never deleted, and is gone")
                continue
            self.check_model(models[name], pods, deployments)
        now = time.monotonic()
        for deployment in deployments:
            owner = deployment["metadata"]["name"].removesuffix("-canary")
            gone = self.deleted.get(owner)
            report.checks["no child outlives its Model"] += 1
            if owner not in models and gone is not None and now - gone > 60:
                report.violated(f"Deployment {deployment['metadata']['name']} outlived its Model")
        for name, operator in self.operators.items():
            if operator.process is None or operator.process.poll() is not None:
                continue
            report.checks["memory stays bounded"] += 1
            rss = rss_mb(operator.process.pid)
            report.peak_rss[name] = max(report.peak_rss.get(name, 0.0), rss)
            if rss > RSS_BOUND_MB:
                report.violated(f"{name} holds {rss:.0f} MB (bound {RSS_BOUND_MB} MB)")
        holder = self.leader()
        if holder and (not report.leaders or report.leaders[-1] != holder):
            report.leaders.append(holder)

    def check_model(self, model: Obj, pods: list[Obj], deployments: list[Obj]) -> None:
        report = self.report
        name = model["metadata"]["name"]
        # By uid: a Model deleted and made again under its name starts afresh.
        metadata = model["metadata"]
        incarnation = (str(metadata.get("uid")), int(metadata.get("generation") or 0))
        status = model.get("status") or {}
        rollout = status.get("rollout") or {}
        back = rollout.get("phase") == "RolledBack"
        if back and rollout.get("modelGeneration") == incarnation[1]:
            self.rolled_back[incarnation].add(str(rollout.get("candidateRevision")))
        serving = [
            p
            for p in pods
            if (p["metadata"].get("labels") or {}).get("modelyard.dev/model") == name
            and (p["metadata"].get("labels") or {}).get("modelyard.dev/track") != "canary"
            and not p["metadata"].get("deletionTimestamp")
        ]
        ready = [p for p in serving if _ready(p)]
        report.checks["a rolled-back revision never serves"] += 1
        for pod in ready:
            revision = (pod["metadata"].get("annotations") or {}).get(SPEC_HASH)
            if revision in self.rolled_back[incarnation]:
                report.violated(
                    f"Model {name}: pod {pod['metadata']['name']} serves the rolled-back "
                    f"revision {revision}"
                )
        mains = [d for d in deployments if d["metadata"]["name"] == name]
        canaries = [d for d in deployments if d["metadata"]["name"] == f"{name}-canary"]
        report.checks["nothing duplicated"] += 1
        if len(mains) > 1 or len(canaries) > 1:
            report.violated(f"Model {name}: {len(mains)} Deployments, {len(canaries)} canaries")
        if status.get("state") != "READY":
            self.unconforming_since.pop(name, None)
            return
        report.checks["READY tells the truth"] += 1
        if any(_conforms(p) for p in ready):
            self.unconforming_since.pop(name, None)
            return
        now = time.monotonic()
        since = self.unconforming_since.setdefault(name, now)
        if now - since > READY_GRACE:
            report.violated(
                f"Model {name} said READY for {now - since:.0f} s while no serving worker "
                "answered the probe in its contract"
            )

    def converged(self) -> bool:
        models = {m["metadata"]["name"]: m for m in self.api.list(MODELS, self.ns)}
        for name in self.models:
            status = (models.get(name) or {}).get("status") or {}
            if status.get("state") != "READY":
                return False
            if (status.get("rollout") or {}).get("phase") in UNDER_WAY:
                return False
        return True

    def count_outcomes(self) -> None:
        for operator in self.operators.values():
            self.report.rollbacks += operator.output.count("rollout RolledBack")
            self.report.promotions += operator.output.count("rollout Promoted")


def _ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _conforms(pod: Obj) -> bool:
    """The checker's own question to a worker: the probe, judged by the contract."""
    address = (pod.get("status") or {}).get("podIP")
    if not address:
        return False
    request = urllib.request.Request(
        f"http://{address}:8080/predict",
        data=json.dumps(PROBES["RERANKING"]).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as answer:
            RerankingResponse.model_validate_json(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


async def soak(minutes: float, work: Path) -> Report:
    (work / "kubernetes").mkdir()
    # In a thread: starting the node runs event loops of its own.
    session = await asyncio.to_thread(Session.start, work / "kubernetes", None, True)
    node = session.real_node
    if node is None:
        await asyncio.to_thread(session.stop)
        raise SystemExit(f"the soak needs the real node: {session.no_node}")
    cluster = Cluster(session, "soak")
    run = Soak(session, cluster, node, work)
    try:
        await run.set_up()
        until = time.monotonic() + minutes * 60
        print(f"soaking for {minutes:g} min; work in {work}", flush=True)
        await asyncio.gather(run.drive(until), run.chaos(until), run.check(until))
        # Calm: no more faults (each fault undid itself). A last good version, so that a Model
        # made while the newest version was a bad one has a good one to go to; then everything
        # must come right.
        calm = time.monotonic()
        await run.publish("good")
        checking = asyncio.ensure_future(run.check())
        while time.monotonic() - calm < CONVERGENCE_BOUND:
            if await asyncio.to_thread(run.converged):
                run.report.convergence = time.monotonic() - calm
                break
            await asyncio.sleep(2)
        await asyncio.sleep(10)  # the invariants still hold once converged
        checking.cancel()
        run.count_outcomes()
        if run.report.convergence is None:
            run.report.violated(f"nothing converged within {CONVERGENCE_BOUND:.0f} s of calm")
    finally:
        for operator in run.operators.values():
            await operator.stop()
        cluster.close()
        await asyncio.to_thread(session.stop)
        left = leftovers(node.node)
        if left:
            run.report.violated(f"the node left behind: {left}")
    return run.report


def write(report: Report, minutes: float, out: Path) -> str:
    ended = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Reliability: the soak",
        "",
        "`make soak MINUTES=N` (bench/soak.py) runs two `--leader-elect` replicas on the real",
        "API server and node while a driver publishes versions (good, off-contract, crashing)",
        "and creates and deletes Models, and a chaos loop injects faults at random. Invariants",
        "are checked every 2 s; after the chaos stops everything must converge within",
        f"{CONVERGENCE_BOUND:.0f} s. bench/soak.py's docstring says each invariant and fault.",
        "",
        f"Last run: `make soak MINUTES={minutes:g}`, ended {ended}, on {platform.node()} "
        f"({os.cpu_count()} cores), at commit {_commit()}.",
        "",
        "The operators talk to the API server through the fault proxy, so their watches take",
        "the HTTP/1.1 way there; HTTP/2 is proved by tests/test_http2.py and the chart-on-node",
        "test. The API server's outage is played at the proxy (every watch dropped, every call",
        "503 for 5 s, then 410 on every resume): the server process embeds the cluster's etcd",
        "and is not restarted.",
        "",
        "| | |",
        "|---|---|",
        f"| invariant violations | **{len(report.violations)}** |",
        f"| converged after the chaos stopped | "
        f"{f'{report.convergence:.0f} s' if report.convergence is not None else 'never'} |",
        "| peak operator memory (RSS) | "
        + ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(report.peak_rss.items()))
        + " |",
        f"| leaders, in turn | {' → '.join(report.leaders)} |",
        f"| rollouts promoted / rolled back (Events) | {report.promotions} / {report.rollbacks} |",
        "",
        "Faults injected:",
        "",
        "| fault | times |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(report.faults.items())],
        "",
        "What the driver did:",
        "",
        "| action | times |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(report.actions.items())],
        "",
        "Invariant checks made:",
        "",
        "| invariant | checks |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(report.checks.items())],
        "",
    ]
    if report.violations:
        lines += ["Violations:", "", *[f"- {v}" for v in report.violations], ""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def _commit() -> str:
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="modelyard-soak-"))
    report = asyncio.run(soak(args.minutes, work))
    print(write(report, args.minutes, args.report))
    raise SystemExit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
