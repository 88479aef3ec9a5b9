"""The programs ours is measured against, each doing (part of) the same job under its own
identity on the same server in the same run: a naive kopf operator (Deployments only), a kopf
operator doing our job, and a floor client that only writes what we write, as plainly as it can.

The report divides ours by the floor (what ours costs over the bare writes) and by the same-job
kopf operator (ours against a framework as its users write it).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from audit import FLOOR, NAIVE, SAME_JOB, Figures
from load import model, setup_documents, spread
from meter import rss_mb
from paths import ROOT, install_apart
from scenarios import (
    MODEL_WRITES,
    Bench,
    burst,
    clean_up,
    prepare,
    record_burst,
    sequential_delays,
    settle,
    wait_for,
)
from stage import kubeconfig

#: The official client the kopf baselines use, kept out of the project's environment: when it is
#: installed, kopf imports it in every process (ours too), which would add its ~45 MB to ours.
BASELINE_LIBRARIES = ROOT / ".cache" / "bench-baseline"


def baseline_libraries() -> Path:
    return install_apart(BASELINE_LIBRARIES, "kubernetes", ["kubernetes>=30"])


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
