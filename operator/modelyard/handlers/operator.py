"""The operator process: start it, lead or stand by, serve health and metrics, stop it.

`operate` logs in, fills the runner's stores from the informers (`modelyard.handlers.informers`)
and only then lets passes start, since a pass must see the children that already exist. With
`--leader-elect`, replicas share one Lease (`modelyard.kube.lease`): all keep their informers
warm and serve /metrics and health, and only the holder's runner schedules passes; writes need
both (`modelyard.kube.lease.write_guard`). Every task that must live as long as the process is
supervised: one that ends anyway stops the process, non-zero. A stop stops writes first, then
gives the Lease up. Log lines are kept clear of Models' parameters (`RedactParameters`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from modelyard import config as operator_config
from modelyard import metrics
from modelyard.handlers.informers import child_informers, own_informers
from modelyard.handlers.memory import release_memory
from modelyard.kube import Kube
from modelyard.kube import login as kube_login
from modelyard.kube.informer import Informer
from modelyard.kube.lease import Durations, LeaderElection, write_guard
from modelyard.reconcile.runner import Runner
from modelyard.registry.egress import EgressPolicy, api_server_endpoints, with_addresses

LEASE_NAME = "modelyard-leader"
#: Where a pod finds its own namespace.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

logger = logging.getLogger("modelyard")


@dataclass(frozen=True)
class Options:
    """`modelyard run`'s flags."""

    namespaces: list[str]
    liveness: str | None = None
    leader_elect: bool = False
    leader_elect_namespace: str | None = None


def lease_namespace(given: str | None) -> str:
    """The operator's own namespace: the flag, the chart's POD_NAMESPACE, or the pod's."""
    if given:
        return given
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        raise SystemExit(
            "error: --leader-elect needs the namespace of its Lease: run in a pod, set "
            "POD_NAMESPACE, or pass --leader-elect-namespace"
        ) from None


def identity() -> str:
    """Unique per process, and says which pod: the Lease's holder and our User-Agent."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


async def _health(liveness: str, ready: asyncio.Event, runner: Runner) -> web.AppRunner:
    """/healthz answers while the process runs; /readyz once its stores are filled (a
    standby is ready too: it is ready to take over)."""
    address = urlsplit(liveness)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if not ready.is_set():
            return web.Response(status=503, text="listing\n")
        return web.Response(text="leading\n" if runner.leading else "standing by\n")

    app = web.Application()
    app.router.add_get(address.path or "/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    served = web.AppRunner(app, access_log=None)
    await served.setup()
    await web.TCPSite(served, address.hostname or "0.0.0.0", address.port or 8080).start()
    return served


def _election(
    runner: Runner, durations: operator_config.LeaderElection, namespace: str, me: str
) -> LeaderElection:
    """The runner leads while this process holds the Lease; writes need both."""
    election = LeaderElection(
        runner.kube,
        namespace,
        LEASE_NAME,
        me,
        Durations(
            durations.lease_duration_seconds,
            durations.renew_deadline_seconds,
            durations.retry_period_seconds,
        ),
        started=runner.lead,
        stopped=runner.stand_by,
    )
    runner.kube.write_allowance = write_guard(lambda: runner.leading, election)
    metrics.LEADER.set(0)
    return election


async def _shut_down(
    runner: Runner,
    election: LeaderElection | None,
    electing: asyncio.Task[None] | None,
    tasks: list[asyncio.Task[Any]],
) -> None:
    """Writes stop first, then the Lease is given up, then everything else."""
    started = time.monotonic()
    runner.stand_by()
    if election is not None and electing is not None:
        # Its loop stops first: a renewal racing the release could take the Lease back.
        electing.cancel()
        await asyncio.gather(electing, return_exceptions=True)
        await election.release()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.kube.close()
    logger.info("stopped in %.2f s", time.monotonic() - started)


async def _listen(
    options: Options,
    config: operator_config.OperatorConfig,
    ready: asyncio.Event,
    runner: Runner,
) -> web.AppRunner | None:
    """/healthz and /readyz (with --liveness), and /metrics; None without health checks.

    A port taken — a second operator on the same machine, another program — is one line that
    names the port and how to move it, not a traceback."""
    _warn_of_unpinned_verifier(config)
    health = None
    port = "the health port (--liveness)"
    try:
        if options.liveness:
            health = await _health(options.liveness, ready, runner)
        port = f"the metrics port {config.metrics_port} (metricsPort in the configuration; 0: off)"
        if config.metrics_port:
            metrics.serve(config.metrics_port)
    except OSError as error:
        if health is not None:
            await health.cleanup()
        await runner.kube.close()
        raise SystemExit(f"modelyard: cannot listen on {port}: {error.strerror or error}") from None
    return health


def _warn_of_unpinned_verifier(config: operator_config.OperatorConfig) -> None:
    """The verifier decides whether signed weights reach a runtime: a moved tag would move
    that decision."""
    verifier = config.weights_verifier_image
    if verifier and "@sha256:" not in verifier:
        logger.warning(
            "weightsVerifierImage %s is not pinned by digest (set image.digest in the chart)",
            verifier,
        )


async def operate(options: Options) -> None:
    """Run until SIGTERM or SIGINT; a leader gives its Lease up on the way out."""
    config = operator_config.load()
    me = identity()
    lease_ns = lease_namespace(options.leader_elect_namespace) if options.leader_elect else ""
    # First: a stop asked for while logging in (an exec plugin may take seconds) is a stop,
    # not a traceback.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    # client-go's liveness (a PING after 30 s of silence, 15 s for its answer), shortened with
    # watchIdleSeconds: a connection is found dead before its watches' own limit runs out.
    kube = Kube(
        kube_login.login,
        config.field_manager,
        user_agent=f"modelyard/{me}",
        ping_after=min(30.0, config.watch_idle_seconds / 3),
        ping_timeout=min(15.0, config.watch_idle_seconds / 3),
    )
    try:
        server = await kube.server()
    except kube_login.LoginError as error:
        raise SystemExit(f"modelyard: {error}") from None
    if stopping.is_set():
        await kube.close()
        return
    egress = EgressPolicy(
        config.external_models,
        await with_addresses(api_server_endpoints(server, dict(os.environ))),
    )
    runner = Runner(kube, config, egress)
    scopes: list[str | None] = [*options.namespaces] if options.namespaces else [None]
    informers = own_informers(runner, kube, scopes) + child_informers(runner, kube, scopes)
    ready = asyncio.Event()
    health = await _listen(options, config, ready, runner)
    died: list[str] = []
    tasks = _start_tasks(informers, runner, stopping, died)
    election: LeaderElection | None = None
    electing: asyncio.Task[None] | None = None
    try:
        # Passes start only once every store is filled: a pass must see the children that
        # already exist, or a restart would re-apply every child.
        synced: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(informer.synced.wait() for informer in informers))
        )
        waiting: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([synced, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if stopping.is_set():
            synced.cancel()
            await asyncio.gather(synced, return_exceptions=True)
        else:
            ready.set()
            logger.info(
                "watching %s: %d objects listed",
                ", ".join(options.namespaces) or "all namespaces",
                sum(len(group) for informer in informers for group in informer.by_owner.values()),
            )
            if options.leader_elect:
                election = _election(runner, config.leader_election, lease_ns, me)
                electing = _supervised(
                    asyncio.create_task(election.run()), "the leader election", stopping, died
                )
            else:
                kube.write_allowance = write_guard(lambda: runner.leading)
                metrics.LEADER.set(1)
                runner.lead()
            await stopping.wait()
    finally:
        await _shut_down(runner, election, electing, tasks)
        if health is not None:
            await health.cleanup()
    if died:
        raise SystemExit(f"modelyard: stopped because {', '.join(died)} ended")


def _start_tasks(
    informers: list[Informer], runner: Runner, stopping: asyncio.Event, died: list[str]
) -> list[asyncio.Task[Any]]:
    """Everything that runs for the process's life, supervised."""
    works = [(informer.run(), f"watching {informer.url}") for informer in informers]
    works += [
        (release_memory(runner), "releasing memory"),
        (runner.prober.run(), "the prober"),
        (runner.checks(), "the periodic checks"),
    ]
    return [_supervised(asyncio.create_task(work), what, stopping, died) for work, what in works]


def _supervised(
    task: asyncio.Task[Any], what: str, stopping: asyncio.Event, died: list[str]
) -> asyncio.Task[Any]:
    """`task` must run until the operator stops: each catches and retries its own failures,
    so one that ends anyway is a bug, and a process half alive (a store frozen, an election
    gone while /readyz and modelyard_leader still say it leads) is worse than a restart. The
    process stops, non-zero, and its pod is restarted."""

    def ended(done: asyncio.Task[Any]) -> None:
        if stopping.is_set() or done.cancelled():
            return
        error = done.exception()
        logger.error(
            "%s ended (%s); stopping so that the operator is restarted",
            what,
            f"{type(error).__name__}: {error}" if error else "returned",
            exc_info=error,
        )
        died.append(what)
        stopping.set()

    task.add_done_callback(ended)
    return task


#: A `parameters` map as it appears in a logged dict repr, JSON, or JSON inside a repr'd string.
_PARAMETERS = re.compile(r"""(['"\\]*parameters['"\\]*\s*:\s*)\{[^{}]*\}""")


class RedactParameters(logging.Filter):
    """Keeps Model parameters out of every log line.

    A Model's parameters may hold a secret pasted in by mistake; our own code never logs them,
    but a library logging a request body at debug level could. Installed on the log handler,
    so it applies to every logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "parameters" in message:
            record.msg, record.args = _PARAMETERS.sub(r"\1{<redacted>}", message), None
        return True


LOG_FORMAT = "[%(asctime)s] %(levelname)-7s %(name)s: %(message)s"


def run(options: Options, verbose: bool) -> None:
    """Run the operator in this process until it is stopped."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactParameters())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiohttp's and asyncio's debug chatter is not the operator's story.
    for noisy in ("asyncio", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        asyncio.run(operate(options))
    except KeyboardInterrupt:
        # Ctrl-C before the operator's own handler was in place (while Python starts).
        raise SystemExit(130) from None


__all__ = ["Options", "run"]
