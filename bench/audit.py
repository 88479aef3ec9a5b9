"""The benchmark's figures, as the API server's audit log gives them: who the log names, what it
records, and how delays and counts are read from it.

The server's log, not the harness's clock: a figure then includes everything between an
operator and the server, and counts every request of each identity, a framework's own
bookkeeping included. Pure (no server, no files), so tests/test_bench_audit.py checks it on a
saved excerpt of a real log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from support.audit import Request
from support.cluster import OPERATOR_NAMESPACE

#: The harness itself, creating the Models: their creations are when each Model came to exist.
ADMIN = "modelyard-test-admin"
OURS = f"system:serviceaccount:{OPERATOR_NAMESPACE}:modelyard"
NAIVE = f"system:serviceaccount:{OPERATOR_NAMESPACE}:naive-kopf"
SAME_JOB = f"system:serviceaccount:{OPERATOR_NAMESPACE}:same-job-kopf"
FLOOR = f"system:serviceaccount:{OPERATOR_NAMESPACE}:floor"

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


def percentile(values: list[float], q: float) -> float:
    """The nearest rank, not an interpolation: each figure is a delay some Model really had."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Figures:
    """One program's run at one size, as written to bench/results/ and the report; NaN (or -1)
    where a figure was not measured, so a partial run still reports what it has."""

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
    """When each Model came to exist, by the server's clock: a delay starts there, not when the
    harness sent the request, so the harness's own queueing is not counted against anyone."""
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
    """Only the Models that got there: one that never did has no delay to count (a burst that
    never finishes is marked timed out instead)."""
    return [1000 * (reached[name] - at) for name, at in created.items() if name in reached]
