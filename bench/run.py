"""modelyard's benchmark: N Models through the real operator on a real API server, against kopf
baselines and a floor client on the same server in the same run.

    make bench                          # N=1000 over 1 and over 20 namespaces
    make bench N="1000 5000"            # several sizes, one report
    make bench NAMESPACES="1 10 50"     # the Models spread over K namespaces

It starts the project's control plane (tests/cluster: kube-apiserver, kube-controller-manager and
etcd on loopback; the HPA controller is left out, so thousands of HPAs without a metrics API do
not load the machine), installs the CRDs, and gives each program its own identity: ours the
chart's ServiceAccount and ClusterRole, each baseline a ServiceAccount of its own. Requests are
counted by the API server itself, from its audit log (every request of each identity, kopf's
own bookkeeping included, with the server's timestamps), so nothing sits between a program
and the server.

For each N and K, ours first, then each baseline (each cluster-wide, each after the other's
objects are gone): N Models are created as fast as the server takes them; measured from the
audit log:

- time from a Model's creation to its Deployment's creation (p50, p95, p99), as the server saw
  both;
- until every Model has its Deployment, Service, autoscaler and a first status (the naive
  baseline: its one Deployment);
- API requests per Model from the first creation until then, and until the program settles;
- its resident memory after the burst and once settled;
- ours only: after the harness plays the kubelet (every pod running and ready), until every
  Model is READY, how long it still writes after the last READY status, its writes per minute
  over an idle window that starts once it has made no write for 10 s, and what it writes when
  restarted over the settled Models;
- ours and the naive baseline: the time to Deployment of Models created one at a time into a
  program that already holds N.

`--profile` samples our operator with py-spy during the burst (summary in bench/results/);
BENCH_CONTROLLERS=a,b overrides the controller-manager's controllers, to see what their work
costs the operators.

Results go to bench/results/bench-<N>-<K>.json and the table in docs/performance.md. Figures are
measured, never asserted: tests/test_bench_audit.py checks how they are read from the log, never
how large they are.

This file is only the command line. The rest, each alone readable: stage.py (the control plane
and the identities), load.py (what the harness creates), kubelet.py (the played kubelet),
meter.py (memory, CPU, profiles), audit.py (the figures read from the audit log), scenarios.py
(the steps a program goes through), baselines.py (the other programs), report.py (the tables).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from paths import RESULTS, ROOT

sys.path.insert(0, str(ROOT / "tests"))

import stage
from baselines import BASELINES, run_baseline
from report import machine, ratio, restart_table, table, write_report
from scenarios import Bench, run_ours

from support.api import Api
from support.cluster import install_crds


def arguments() -> argparse.Namespace:
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
    return parser.parse_args()


def main() -> None:
    args = arguments()
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    plane, audit = stage.start(work)
    print(f"kube-apiserver {plane.version} at {plane.server}; work in {work}", flush=True)
    try:
        api = Api(plane.server, plane.pki)
        install_crds(api)
        tokens = stage.identities(api, work)
        bench = Bench(
            plane,
            api,
            audit,
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
                (RESULTS / f"bench-{n}-{k}.json").write_text(json.dumps(result, indent=2))
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
