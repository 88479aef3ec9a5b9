"""The soak's record and its report: faults, actions and checks counted as they happen, and the
page written from them at the end (docs/reliability.md unless `--report` says elsewhere).
"""

from __future__ import annotations

import collections
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from paths import ROOT
from soak_invariants import CONVERGENCE_BOUND


@dataclass
class Report:
    """What the soak saw, kept as it goes: a violation is printed the moment it is found, and
    each one once, so a state that lasts does not bury the others."""

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
