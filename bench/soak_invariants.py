"""The soak's invariants, checked every 2 s while the faults come and after they stop, each on
what the checker sees for itself (the API server's objects, the workers' answers to its own
probe, /proc), not on what the operators log; and what counts as converged once the chaos stops.

bench/soak.py's docstring says the invariants in words; the checks' names in the report are the
keys of `Report.checks`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from meter import rss_mb

from modelyard.api.contracts import RerankingResponse
from support.cluster import MODELS
from support.controllers import DEPLOYMENTS, PODS
from support.workloads import PROBES

if TYPE_CHECKING:
    from soak_stage import Soak

Obj = dict[str, Any]
UNDER_WAY = {"Canary", "AwaitingCapacity", "Analysing", "Promoting"}
#: The operators' probe interval, as the soak configures them (soak_stage.Soak.start_operator).
PROBE_INTERVAL = 5
#: A Model may say READY while no worker conforms for at most this long (its probe's interval,
#: a retry, and room for the status write to land).
READY_GRACE = PROBE_INTERVAL + 30
RSS_BOUND_MB = 400
CONVERGENCE_BOUND = 300.0
SPEC_HASH = "modelyard.dev/spec-hash"


class Invariants:
    """The checker: what it has learnt (revisions rolled back, since when a READY Model has had no
    conforming worker) is kept from one look to the next, through the chaos and the calm."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        #: (Model uid, generation) → revisions rolled back for it.
        self.rolled_back: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
        self.unconforming_since: dict[str, float] = {}

    async def check(self, until: float | None = None) -> None:
        while until is None or time.monotonic() < until:
            try:
                await asyncio.to_thread(self.check_once)
            except Exception as error:  # an API blip of the checker's own: look again
                print(f"checker: {error}", flush=True)
            await asyncio.sleep(2)

    def check_once(self) -> None:
        report = self.soak.report
        models = {m["metadata"]["name"]: m for m in self.soak.api.list(MODELS, self.soak.ns)}
        pods = self.soak.api.list(PODS, self.soak.ns)
        deployments = self.soak.api.list(DEPLOYMENTS, self.soak.ns)
        for name in sorted(self.soak.models):
            report.checks["nothing lost"] += 1
            if name not in models:
                report.violated(f"Model {name} was created and never deleted, and is gone")
                continue
            self.check_model(models[name], pods, deployments)
        now = time.monotonic()
        for deployment in deployments:
            owner = deployment["metadata"]["name"].removesuffix("-canary")
            gone = self.soak.deleted.get(owner)
            report.checks["no child outlives its Model"] += 1
            if owner not in models and gone is not None and now - gone > 60:
                report.violated(f"Deployment {deployment['metadata']['name']} outlived its Model")
        for name, operator in self.soak.operators.items():
            if operator.process is None or operator.process.poll() is not None:
                continue
            report.checks["memory stays bounded"] += 1
            rss = rss_mb(operator.process.pid)
            report.peak_rss[name] = max(report.peak_rss.get(name, 0.0), rss)
            if rss > RSS_BOUND_MB:
                report.violated(f"{name} holds {rss:.0f} MB (bound {RSS_BOUND_MB} MB)")
        holder = self.soak.leader()
        if holder and (not report.leaders or report.leaders[-1] != holder):
            report.leaders.append(holder)

    def check_model(self, model: Obj, pods: list[Obj], deployments: list[Obj]) -> None:
        report = self.soak.report
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
        models = {m["metadata"]["name"]: m for m in self.soak.api.list(MODELS, self.soak.ns)}
        for name in self.soak.models:
            status = (models.get(name) or {}).get("status") or {}
            if status.get("state") != "READY":
                return False
            if (status.get("rollout") or {}).get("phase") in UNDER_WAY:
                return False
        return True


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
