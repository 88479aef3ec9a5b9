"""Fixtures: one real control plane (and real node) per session, a namespace and a fault proxy
per test."""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import containerd, control_plane, cosign, images, node, runtime_image
from support.cluster import (
    KEDA_CRD,
    Cluster,
    RealNode,
    Session,
    install_crds,
    install_relaxed_crds,
)
from support.model_server import ModelServer
from support.node import leftovers
from support.operator_process import OperatorProcess
from support.workloads import NODE_OPERATOR_CONFIG

#: Filled by the session fixture; read by the summary at the end of the run.
SERVER: dict[str, str] = {}
#: How the control plane's binary came to be: built now (and in how long) or reused.
BUILD: dict[str, Any] = {}
#: How cosign came to be, when the tests collected sign images with it.
COSIGN_BUILD: dict[str, Any] = {}
#: How containerd 2 came to be, when the tests collected run pods on the real node.
CONTAINERD_BUILD: dict[str, Any] = {}
#: What the real node left on the machine after it stopped (nothing, or the run fails).
LEFT_BEHIND: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the control plane before any test: a cold build takes minutes, which no single
    test's timeout should have to include."""
    cached = control_plane.built()
    started = time.monotonic()
    control_plane.build()
    BUILD.update(cached=cached, seconds=time.monotonic() - started)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build cosign before any test when a collected test signs with it (its modules import
    support.cosign), and containerd when one runs pods on the real node: a cold build takes
    minutes too."""
    if any(
        getattr(item, "module", None) and "cosign" in vars(item.module) for item in session.items
    ):
        cached = (cosign.CACHE / "cosign").exists()
        started = time.monotonic()
        cosign.binary()
        COSIGN_BUILD.update(cached=cached, seconds=time.monotonic() - started)
    if node.unavailable() is None and any(
        "real_node" in getattr(item, "fixturenames", ()) for item in session.items
    ):
        cached = containerd.built()
        started = time.monotonic()
        containerd.binaries()
        CONTAINERD_BUILD.update(cached=cached, seconds=time.monotonic() - started)


@pytest.fixture(scope="session")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The control plane of tests/cluster, started once; CRDs and the operator's RBAC in place.
    It has no node: tests whose subject is not a pod (schemas, RBAC, API faults, bad input)
    run here, where a pod stays Pending unless the test plays its kubelet."""
    started = Session.start(tmp_path_factory.mktemp("kubernetes"))
    SERVER.update(version=started.plane.version, server=started.plane.server)
    yield started
    started.stop()


@pytest.fixture(scope="session")
def node_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """A second control plane, with kube-scheduler and a real node joined to it, started the
    first time a test asks for the node: there every pod runs for real, and nothing plays the
    kubelet."""
    started = Session.start(tmp_path_factory.mktemp("kubernetes-node"), with_node=True)
    SERVER.setdefault("version", started.plane.version)
    SERVER.setdefault("server", started.plane.server)
    if started.real_node is not None:
        SERVER.update(node=started.real_node.name, node_server=started.plane.server)
    yield started
    started.stop()
    if started.real_node is not None:
        LEFT_BEHIND.extend(leftovers(started.real_node.node))


@pytest.fixture
def real_node(node_session: Session) -> RealNode:
    """The real node; without one (not root, no containerd) the test is skipped with the
    reason, and in CI it fails: CI installs everything a node needs."""
    if node_session.real_node is None:
        message = f"no real node: {node_session.no_node}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return node_session.real_node


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """This test's namespace on the real API server (the one with the node when the test uses
    `real_node`), and its own fault proxy."""
    on_node = "real_node" in request.fixturenames
    session: Session = request.getfixturevalue("node_session" if on_node else "session")
    view = Cluster(session, session.namespace_name(request.node.name))
    yield view
    view.close()
    # 403 also means a namespace being deleted (an earlier test's, seen by a cluster-wide
    # operator), an exceeded quota or a policy; RBAC's own refusals say who "cannot" do what.
    forbidden = [
        served for served in view.served if served.status == 403 and " cannot " in served.message
    ]
    if forbidden:
        pytest.fail(f"the chart's RBAC refused the operator: {forbidden[:5]}")


@pytest.fixture
async def operator(cluster: Cluster, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    """`modelyard run` under the chart's RBAC, through the proxy; SIGTERM after the test."""
    process = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    yield process
    await process.stop()


@pytest.fixture
async def node_operator(
    real_node: RealNode, cluster: Cluster, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """`modelyard run` as `operator`, probing Models through their ClusterIPs, which the real
    node's kube-proxy routes from this machine (a DNS name of the cluster would not resolve)."""
    process = OperatorProcess(
        cluster.operator_kubeconfig(tmp_path), tmp_path, config=NODE_OPERATOR_CONFIG
    ).start()
    yield process
    await process.stop()


@pytest.fixture
def without_keda(session: Session) -> Iterator[None]:
    """KEDA's ScaledObject CRD removed for the test (as on a cluster without KEDA), then back."""
    crds = "apiextensions.k8s.io/v1/customresourcedefinitions"
    session.api.delete(crds, None, KEDA_CRD)
    session.api.wait_gone(crds, None, KEDA_CRD)
    yield
    install_crds(session.api)


@pytest.fixture
def relaxed_crds(session: Session) -> Iterator[None]:
    """Our CRDs with their schemas relaxed for the test, then the real ones again: objects that
    the schema refuses reach the operator, as on a cluster with an old or hand-edited CRD."""
    install_relaxed_crds(session.api)
    yield
    install_crds(session.api)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which real server the tests ran against, and which tests did."""
    if not SERVER:
        return
    passed = terminalreporter.stats.get("passed", [])
    failed = terminalreporter.stats.get("failed", [])
    on_server = [
        report
        for report in passed + failed
        if report.when == "call" and "real_server" in report.keywords
    ]
    per_file = collections.Counter(report.nodeid.split("::")[0] for report in on_server)
    terminalreporter.section("real Kubernetes")
    terminalreporter.write_line(
        f"{len(on_server)} tests ran against kube-apiserver {SERVER['version']} "
        f"+ kube-controller-manager (tests/cluster) at {SERVER['server']}:"
    )
    for path, count in sorted(per_file.items()):
        terminalreporter.write_line(f"  {path}: {count}")
    on_node = [report for report in on_server if "real_node" in report.keywords]
    if on_node:
        terminalreporter.write_line(
            f"{len(on_node)} of them ran pods on the real node {SERVER.get('node')} "
            f"(kube-scheduler, kubelet, containerd {containerd.VERSION} + runc, CNI bridge, "
            f"kube-proxy) of the control plane at {SERVER.get('node_server')}:"
        )
        for path, count in sorted(
            collections.Counter(r.nodeid.split("::")[0] for r in on_node).items()
        ):
            terminalreporter.write_line(f"  {path}: {count}")
    if BUILD:
        how = "reused from .cache/testcluster" if BUILD["cached"] else "built from Go modules"
        terminalreporter.write_line(f"control plane binary: {how} in {BUILD['seconds']:.1f} s")
    if COSIGN_BUILD:
        how = "reused from .cache/cosign" if COSIGN_BUILD["cached"] else "built from its Go module"
        terminalreporter.write_line(
            f"cosign {cosign.VERSION}: {how} in {COSIGN_BUILD['seconds']:.1f} s"
        )
    if CONTAINERD_BUILD:
        how = (
            "reused from .cache/containerd"
            if CONTAINERD_BUILD["cached"]
            else "built from its Go module"
        )
        terminalreporter.write_line(
            f"containerd {containerd.VERSION}: {how} in {CONTAINERD_BUILD['seconds']:.1f} s"
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The node must leave nothing behind: no process, mount, cgroup, bridge, address or
    iptables chain. Anything left fails the run, whatever the tests said."""
    if LEFT_BEHIND:
        print(f"\nthe real node left these behind: {LEFT_BEHIND}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the real control plane (and the real node), for the summary
    above."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "session" in names or "cluster" in names or "real_node" in names:
            item.add_marker("real_server")
        if "real_node" in getattr(item, "fixturenames", ()):
            item.add_marker("real_node")


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    """A model server on loopback (`support.model_server`), stopped after the test."""
    started = ModelServer().start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def runtimes(node_session: Session) -> str:
    """The runtimes' image, built (or taken from the cache) and pushed to the node's registry
    once a session; its digest. (Each test asks for `real_node` too, which says why there is
    none when there is none.)"""
    real_node = node_session.real_node
    if real_node is None:
        pytest.skip(f"no real node: {node_session.no_node}")
    layout, tag, _ = runtime_image.build()
    runtime_image.push(layout, tag, real_node.registry.host, real_node.credentials)
    digest = images.run("skopeo", "inspect", "--format", "{{.Digest}}", f"oci:{layout}:{tag}")
    return digest.strip()
