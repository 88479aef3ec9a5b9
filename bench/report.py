"""The benchmark's report: the tables printed at the end of a run, and written between the
markers of docs/performance.md, whose block is replaced whole so that it is always one run's.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from baselines import BASELINES
from paths import ROOT


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


def ratio(a: float, b: float) -> float:
    """NaN, not an error, when the baseline has no figure: the report then shows a dash."""
    return a / b if b and not math.isnan(b) else float("nan")


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
