"""The benchmark's figures as bench/audit.py reads them from the API server's audit log, checked
on an excerpt of one (tests/bench_audit_excerpt.jsonl, in the server's JSON format): which
requests count as a Model's creation or an operator's first write, and how delays and
percentiles come out. No cluster: the figures are only as good as this reading.

The excerpt: the harness (the admin) creates model-00000 to model-00002 in the run's namespace,
and one Model in another run's namespace, and fails to create a fourth; our operator makes two
of the Deployments (one at the second try, by server-side apply), patches one afterwards and
writes one status; the naive baseline makes the third Deployment.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from audit import (
    ADMIN,
    NAIVE,
    OURS,
    Figures,
    creations,
    delays_ms,
    first,
    percentile,
)
from scenarios import record_burst

from support.audit import AuditLog, Request, stamp

EXCERPT = Path(__file__).parent / "bench_audit_excerpt.jsonl"
RUN = "bench-modelyard-3-1-0"
OTHER_RUN = "bench-naive-3-1-0"


def at(ms: int) -> float:
    return stamp(f"2025-06-02T10:15:00.{ms * 1000:06d}Z")


@pytest.fixture
def requests(tmp_path: Path) -> list[Request]:
    """The excerpt read as the bench reads the live log: with support.audit's AuditLog."""
    log = tmp_path / "audit.log"
    shutil.copy(EXCERPT, log)
    return AuditLog(log).read()


def test_the_excerpt_is_read_once_per_request(requests: list[Request]) -> None:
    # A watch is logged when its response starts and again when it ends: counted once.
    assert sum(r.verb == "watch" for r in requests) == 1
    assert {r.user for r in requests} == {ADMIN, OURS, NAIVE}


def test_creations_are_the_admins_successful_ones_in_the_run(requests: list[Request]) -> None:
    assert creations(requests, [RUN]) == {
        "model-00000": at(100),
        "model-00001": at(112),
        "model-00002": at(125),
    }
    assert creations(requests, [OTHER_RUN]) == {"model-00000": at(130)}


def test_first_write_is_the_first_successful_creation_by_that_user(
    requests: list[Request],
) -> None:
    # model-00001: a create refused (409), then made by server-side apply (a patch answered
    # 201); model-00000's later patch (200) changes nothing; another run's namespace and
    # another user do not count.
    assert first(requests, OURS, [RUN], "deployments") == {
        "model-00000": at(180),
        "model-00001": at(262),
    }
    assert first(requests, NAIVE, [RUN], "deployments") == {"model-00002": at(200)}
    assert first(requests, OURS, [OTHER_RUN], "deployments") == {"model-00000": at(400)}


def test_a_status_counts_when_written_not_created(requests: list[Request]) -> None:
    # A status subresource is never created: a 200 is its first write; a conflict is not.
    assert first(requests, OURS, [RUN], "models", "status") == {"model-00000": at(310)}


def test_delays_only_for_models_that_got_there(requests: list[Request]) -> None:
    created = creations(requests, [RUN])
    delays = delays_ms(created, first(requests, OURS, [RUN], "deployments"))
    assert delays == pytest.approx([80.0, 150.0], abs=0.01)


def test_percentile_is_a_nearest_rank() -> None:
    values = [40.0, 10.0, 30.0, 20.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 50) == 30.0  # rank round(1.5) = 2: a value some Model had
    assert percentile(values, 95) == 40.0
    assert percentile(values, 100) == 40.0
    assert percentile([80.0, 150.0], 50) == 80.0  # rank round(0.5) = 0: half to even
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_figures_not_measured_stay_unmeasured_and_serialise() -> None:
    figures = Figures(3)
    assert figures.namespaces == 1
    assert math.isnan(figures.all_reconciled_s)
    assert figures.restart_writes == -1
    assert json.loads(json.dumps(asdict(figures)))["n"] == 3


def test_a_burst_recorded_from_the_excerpt(requests: list[Request]) -> None:
    figures = Figures(3)
    begin = record_burst(figures, requests, [RUN], 3, OURS)
    assert begin == at(100)
    # Two delays, 80 and 150 ms: the median's rank round(0.5) is 0 (Python rounds half to even).
    assert figures.to_deployment_ms == pytest.approx(
        {"p50": 80.0, "p95": 150.0, "p99": 150.0}, abs=0.01
    )
    assert figures.all_deployments_s == pytest.approx(0.162, abs=1e-5)
    # No Service or autoscaler in the excerpt: never all reconciled, so the requests are
    # counted until the last Deployment (watches aside, every namespace).
    assert math.isnan(figures.all_reconciled_s)
    assert figures.requests_by_kind == {
        "create deployments": 2,
        "get deployments": 1,
        "patch deployments": 1,
    }
    assert figures.requests_per_model == pytest.approx(4 / 3)
