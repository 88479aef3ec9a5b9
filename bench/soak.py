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

This file is the driver, the run and the command line; soak_stage.py holds the replicas and what
the driver made, soak_chaos.py the faults, soak_invariants.py the checker and what converged
means, soak_report.py the counts and the page written from them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from paths import ROOT

sys.path.insert(0, str(ROOT / "tests"))

from soak_chaos import Chaos
from soak_invariants import CONVERGENCE_BOUND, Invariants
from soak_report import Report, write
from soak_stage import Soak

from support.cluster import MODELS, Cluster, Session
from support.node import leftovers


async def drive(run: Soak, until: float) -> None:
    """Versions published and Models created and deleted at random, 15 to 30 s apart, at most
    five Models and at least two, so the chaos always has rollouts and Models to hit."""
    serial = 3
    while time.monotonic() < until:
        await asyncio.sleep(random.uniform(15, 30))
        choice = random.choices(
            ["good", "off-contract", "crashing", "create", "delete"], [4, 2, 2, 1, 1]
        )[0]
        try:
            if choice in ("good", "off-contract", "crashing"):
                await run.publish(choice)
            elif choice == "create" and len(run.models) < 5:
                await run.create_model(f"model-{serial}")
                serial += 1
            elif choice == "delete" and len(run.models) > 2:
                name = random.choice(sorted(run.models))
                await asyncio.to_thread(run.api.delete, MODELS, run.ns, name)
                run.models.discard(name)
                run.deleted[name] = time.monotonic()
                run.report.actions["delete a Model"] += 1
        except Exception as error:  # the driver goes on; the checker judges
            print(f"driver: {choice}: {error}", flush=True)


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
    invariants = Invariants(run)
    try:
        await run.set_up()
        until = time.monotonic() + minutes * 60
        print(f"soaking for {minutes:g} min; work in {work}", flush=True)
        await asyncio.gather(drive(run, until), Chaos(run).run(until), invariants.check(until))
        # Calm: no more faults (each one was over when it returned). A last good version, so
        # that a Model made while the newest version was a bad one has a good one to go to;
        # then everything must come right.
        calm = time.monotonic()
        await run.publish("good")
        checking = asyncio.ensure_future(invariants.check())
        while time.monotonic() - calm < CONVERGENCE_BOUND:
            if await asyncio.to_thread(invariants.converged):
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
