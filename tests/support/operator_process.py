"""The real operator, as a separate process, pointed at the test's API server.

A process rather than a thread: it is what runs in production (`modelyard run`), its logs can be
read back whole, and it can be killed with SIGKILL in the middle of work and started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The tests' model servers listen on this machine's loopback, which the default egress policy
#: refuses (in a pod it is the operator itself); the rest of the default stands.
LOOPBACK_ALLOWED: dict[str, Any] = {
    "deniedCIDRs": ["169.254.0.0/16", "fe80::/10", "fd00:ec2::/32", "100.100.100.200/32"]
}


class OperatorProcess:
    """`modelyard run` in a child process; `output` holds everything it logged."""

    def __init__(
        self,
        kubeconfig: Path | None,
        directory: Path,
        config: dict[str, Any] | None = None,
        verbose: bool = True,
        namespaces: list[str] | None = None,
        lease_namespace: str | None = None,
        name: str | None = None,
        health_port: int | None = None,
    ) -> None:
        """`kubeconfig` of the cluster (see `Cluster.operator_kubeconfig`); None: the caller's.
        `lease_namespace`: run with --leader-elect, the Lease there; `name` as its POD_NAME."""
        self.verbose = verbose
        self.namespaces = namespaces or []
        self.lease_namespace = lease_namespace
        #: Where /healthz and /readyz answer (`--liveness`); None: not served.
        self.health_port = health_port
        self.directory = directory
        self.log_path = directory / f"operator-{time.monotonic_ns()}.log"
        self.env = dict(os.environ)
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)
        # Each operator gets its own metrics port, so parallel or successive runs never clash.
        self.metrics_port = free_port()
        config_path = directory / f"operator-config-{self.metrics_port}.yaml"
        config_path.write_text(
            yaml.safe_dump(
                {
                    "metricsPort": self.metrics_port,
                    "externalModels": LOOPBACK_ALLOWED,
                    **(config or {}),
                }
            )
        )
        self.env["MODELYARD_CONFIG"] = str(config_path)
        if name is not None:
            self.env["POD_NAME"] = name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        self.log_path = self.directory / f"operator-{time.monotonic_ns()}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelyard",
                "run",
                *(["--verbose"] if self.verbose else []),
                *(f"--namespace={namespace}" for namespace in self.namespaces),
                *(
                    ["--leader-elect", f"--leader-elect-namespace={self.lease_namespace}"]
                    if self.lease_namespace
                    else []
                ),
                *(
                    [f"--liveness=http://127.0.0.1:{self.health_port}/healthz"]
                    if self.health_port
                    else []
                ),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        return self

    def readyz(self) -> tuple[int, str]:
        """What /readyz answers now: (status, body); (0, "") while nothing listens."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/readyz", timeout=5
            ) as answer:
                return int(answer.status), str(answer.read().decode())
        except urllib.error.HTTPError as refused:
            return int(refused.code), str(refused.read().decode())
        except OSError:
            return 0, ""

    def connections_to(self, port: int) -> int:
        """Established TCP connections of this process to `port` (the API server's), as
        `ss` lists them."""
        assert self.process is not None
        listing = subprocess.run(
            ["ss", "-Htnp", "state", "established", "dport", f"= :{port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sum(1 for line in listing.splitlines() if f"pid={self.process.pid}," in line)

    def metrics(self) -> str:
        """What /metrics answers now; empty while the operator does not serve it yet."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as answer:
                return str(answer.read().decode())
        except OSError:
            return ""

    @property
    def output(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.directory.glob("operator-*.log"))
        )

    async def stop(self) -> None:
        """SIGTERM, as Kubernetes stops a pod: the operator stops cleanly (a leader gives its
        Lease up)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            await self._wait(15)

    async def kill(self) -> None:
        """SIGKILL: no chance to finish anything, as when a node dies."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            await self._wait(5)

    async def _wait(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            await asyncio.sleep(0.1)


async def eventually(
    check: Callable[[], Any],
    timeout: float = 20,
    what: str | Callable[[], str] = "condition",
    operator: OperatorProcess | None = None,
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy.

    `what` names what is awaited; a callable is asked at the timeout, to describe the state
    things were left in."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if isinstance(last, Awaitable):
            last = await last
        if last:
            return last
        if (
            operator is not None
            and operator.process is not None
            and operator.process.poll() is not None
        ):
            raise AssertionError(
                f"operator exited with {operator.process.returncode}:\n{operator.output[-4000:]}"
            )
        await asyncio.sleep(0.05)
    tail = operator.output[-6000:] if operator else ""
    described = what() if callable(what) else what
    raise AssertionError(f"timed out waiting for {described}; last value: {last!r}\n{tail}")
