"""Prometheus metrics on /metrics.

Every label has a small, fixed set of values — kind, result, condition reason — never an object's
name or namespace, so a cluster with ten thousand Models does not make ten thousand series, and
no label can carry a secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "modelyard_reconciles_total",
    "Reconcile passes, by kind and result (success, temporary, permanent).",
    ["kind", "result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "modelyard_reconcile_duration_seconds",
    "Time one reconcile pass takes, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RESOURCES = Gauge(
    "modelyard_resources",
    "Objects the operator serves, by kind and the reason of their Ready condition.",
    ["kind", "ready", "reason"],
    registry=REGISTRY,
)
MODEL_TIME_TO_READY = Histogram(
    "modelyard_model_time_to_ready_seconds",
    "Time from a Model's creation until it is first seen READY by this operator process.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
    registry=REGISTRY,
)
REGISTRY_CHECK_SECONDS = Histogram(
    "modelyard_registry_check_duration_seconds",
    "Time a registry check takes (ping with credentials).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
REGISTRY_CHECK_FAILURES = Counter(
    "modelyard_registry_check_failures_total",
    "Registry checks that failed, by reason.",
    ["reason"],
    registry=REGISTRY,
)


class _Tracked(Collector):
    """modelyard_tracked_objects, read from the runner at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "modelyard_tracked_objects",
            "Objects the operator keeps per-object state for (reconcile slots by kind, registry "
            "connections): follows what exists, so it falls back when objects are deleted.",
            labels=["kind"],
        )
        for kind, count in sorted((self.source() if self.source else {}).items()):
            family.add_metric([kind], count)
        yield family


TRACKED = _Tracked()
REGISTRY.register(TRACKED)
LEADER = Gauge(
    "modelyard_leader",
    "1 in the operator process that holds the leader Lease (the one that writes), else 0.",
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "modelyard_api_requests_total",
    "Kubernetes API requests made by the operator's own client, by HTTP method.",
    ["method"],
    registry=REGISTRY,
)
VERIFICATIONS = Counter(
    "modelyard_digest_verifications_total",
    "ModelVersion digest verifications, by result reason.",
    ["result"],
    registry=REGISTRY,
)
SIGNATURE_CHECKS = Counter(
    "modelyard_signature_checks_total",
    "Checks of an image's cosign signatures against its Registry's policy, by result reason.",
    ["result"],
    registry=REGISTRY,
)


@contextmanager
def timed(kind: str) -> Iterator[None]:
    """Count and time one reconcile pass; the caller's exception decides the result."""
    start = time.perf_counter()
    try:
        yield
    except Exception as error:
        temporary = bool(getattr(error, "temporary", True))
        RECONCILES.labels(kind, "temporary" if temporary else "permanent").inc()
        raise
    else:
        RECONCILES.labels(kind, "success").inc()
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - start)


class ReadyStates:
    """Last known Ready (status, reason) per object, folded into the RESOURCES gauge."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._ready_seen: set[str] = set()

    def record(self, kind: str, namespace: str, name: str, ready: str, reason: str) -> None:
        key = (kind, namespace, name)
        before = self._states.get(key)
        if before == (ready, reason):
            return
        if before is not None:
            RESOURCES.labels(kind, *before).dec()
        RESOURCES.labels(kind, ready, reason).inc()
        self._states[key] = (ready, reason)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        before = self._states.pop((kind, namespace, name), None)
        if before is not None:
            RESOURCES.labels(kind, *before).dec()

    def clear(self) -> None:
        """This process no longer reconciles (a standby): it reports no objects."""
        for kind, namespace, name in list(self._states):
            self.forget(kind, namespace, name)

    def first_ready(self, uid: str, created_at: float) -> None:
        """Observe time-to-ready once per Model (per process)."""
        if uid in self._ready_seen:
            return
        self._ready_seen.add(uid)
        MODEL_TIME_TO_READY.observe(max(0.0, time.time() - created_at))


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address, registry=REGISTRY)
