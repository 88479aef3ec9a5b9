"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules and defaults.

Two replicas of the operator watch the same objects; only the one holding the Lease writes.
The holder renews it every `retry_period`; the others read it as often and take it over once
it has not changed for `lease_duration` — measured on their own clock from when they saw it
change, never by comparing the holder's timestamps with theirs, so clock skew between nodes
cannot make two leaders. A holder that could not renew for `renew_deadline` (shorter than the
Lease) stops writing before anyone may take over; `write_allowance` says so even if the event loop
was too busy to notice. A holder that stops cleanly releases the Lease (empty holder), and the
next standby takes it at its next look instead of waiting for it to expire.

Every update carries the resourceVersion that was read, so of two processes trying at once the
server lets exactly one through (409 for the other).

The loop never ends but by cancellation: any failure of one look at the Lease (the server's
refusal, a timeout, a failed re-login, a TLS error, an answer that is not JSON) is a failed
look, and a leader whose looks fail stands by once its renew deadline passes, as with a refusal.
Should the loop itself ever fail, it stands by, says so, and starts again: a process whose
election died would otherwise say it leads (`/readyz`, `modelyard_leader`) while refusing
every write, or leave the standby without a way to take over.

What the API client asks before each write is composed here too (`write_guard`): writes need
both this process's runner leading and, with an election, a Lease renewed in time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelyard import metrics
from modelyard.kube.client import Kube, Manifest
from modelyard.kube.errors import ApiError
from modelyard.kube.paths import path

logger = logging.getLogger(__name__)

API_VERSION = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class Durations:
    """controller-runtime's defaults: a dead leader is replaced within 15 s (plus one look)."""

    lease: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _microtime(at: float) -> str:
    """metav1.MicroTime, as the API server stores it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"


class LeaderElection:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        durations: Durations = Durations(),
        *,
        started: Callable[[], None],
        stopped: Callable[[], None],
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.durations = durations
        self._started = started
        self._stopped = stopped
        self.leading = False
        #: time.monotonic() when our last successful renewal was sent.
        self._renewed = 0.0
        #: The Lease's record as last seen, and when (our clock) it last changed.
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0
        self.holder = ""
        #: The cause of the looks failing now, said once (None while they succeed).
        self._failure: str | None = None

    @property
    def url(self) -> str:
        return path(API_VERSION, "Lease", self.namespace, self.name)

    def may_write(self) -> bool:
        """Leading, and the last renewal is recent enough that nobody else can have taken
        over: checked before every write."""
        return self.leading and time.monotonic() - self._renewed < self.durations.renew_deadline

    def _observe(self, spec: Manifest) -> None:
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
            spec.get("leaseTransitions"),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        self.holder = str(spec.get("holderIdentity") or "")

    def _spec(self, previous: Manifest | None) -> Manifest:
        now = _microtime(time.time())
        previous = previous or {}
        ours = previous.get("holderIdentity") == self.identity
        return {
            "holderIdentity": self.identity,
            # Never less than the duration this process counts with (a float in Durations).
            "leaseDurationSeconds": math.ceil(self.durations.lease),
            "acquireTime": previous.get("acquireTime") if ours else now,
            "renewTime": now,
            "leaseTransitions": int(previous.get("leaseTransitions") or 0) + (0 if ours else 1),
        }

    async def try_acquire_or_renew(self) -> bool:
        """One look at the Lease: take it or renew it if we may; whether we hold it now."""
        try:
            lease = await self.kube.elect("GET", self.url)
        except ApiError as problem:
            if not problem.not_found:
                raise
            created = {
                "apiVersion": API_VERSION,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**self._spec(None), "leaseTransitions": 0},
            }
            try:
                answer = await self.kube.elect(
                    "POST", path(API_VERSION, "Lease", self.namespace), created
                )
            except ApiError as conflict:
                if conflict.status == 409:  # another process created it first
                    return False
                raise
            self._observe(answer.get("spec") or {})
            return True
        spec = lease.get("spec") or {}
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.durations.lease)
        if holder and holder != self.identity and (time.monotonic() < self._observed_at + duration):
            return False
        replaced = {**lease, "spec": {**spec, **self._spec(spec)}}
        try:
            answer = await self.kube.elect("PUT", self.url, replaced)
        except ApiError as problem:
            if problem.status == 409:  # someone else wrote it since we read it
                return False
            raise
        self._observe(answer.get("spec") or {})
        return True

    async def _attempt(self, deadline: float) -> bool:
        try:
            held = await asyncio.wait_for(self.try_acquire_or_renew(), deadline)
        except Exception as problem:  # whatever failed, this look failed
            self._failed(problem)
            return False
        if self._failure is not None:
            logger.info("leader election: Lease %s/%s readable again", self.namespace, self.name)
            self._failure = None
        return held

    def _failed(self, problem: Exception) -> None:
        """Said once per cause (at every retry period it would flood the log)."""
        if isinstance(problem, TimeoutError):
            cause = "timed out"
        elif isinstance(problem, ApiError):
            cause = str(problem)
        else:
            cause = f"{type(problem).__name__}: {problem}"
        (logger.warning if cause != self._failure else logger.debug)(
            "leader election: cannot look at Lease %s/%s: %s",
            self.namespace,
            self.name,
            cause,
        )
        self._failure = cause

    def write_allowance(self) -> float:
        """For how many more seconds this process may write: until its renew deadline, counted
        from when its last successful renewal was sent (0 when it does not lead)."""
        if not self.leading:
            return 0.0
        return max(0.0, self._renewed + self.durations.renew_deadline - time.monotonic())

    def _step_down(self) -> None:
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        self._stopped()

    async def run(self) -> None:
        """Forever: wait for the Lease, lead while it is renewed, stand by again if lost.

        Only cancellation ends it: a failure of the loop itself (a bug) stands this process by
        and starts the loop again after a retry period."""
        while True:
            try:
                await self._elect()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "leader election on Lease %s/%s failed; standing by and starting again",
                    self.namespace,
                    self.name,
                )
                self._step_down()
                await asyncio.sleep(self.durations.retry_period)

    async def _elect(self) -> None:
        while True:
            while True:
                sent = time.monotonic()
                if await self._attempt(self.durations.renew_deadline):
                    break
                await asyncio.sleep(self.durations.retry_period * (1 + random.random() * 0.1))
            self._renewed, self.leading = sent, True
            metrics.LEADER.set(1)
            logger.info(
                "leading: holding Lease %s/%s as %s", self.namespace, self.name, self.identity
            )
            self._started()
            while True:
                await asyncio.sleep(self.durations.retry_period)
                sent = time.monotonic()
                remaining = self.durations.renew_deadline - (sent - self._renewed)
                if remaining > 0 and await self._attempt(remaining):
                    self._renewed = sent
                    continue
                if self.holder not in ("", self.identity) or not self.may_write():
                    break
            logger.warning(
                "lost Lease %s/%s (now held by %s): standing by",
                self.namespace,
                self.name,
                self.holder or "nobody",
            )
            self._step_down()

    async def release(self) -> None:
        """Give the Lease up (on SIGTERM), so a standby takes it at its next look."""
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        try:
            lease = await self.kube.elect("GET", self.url)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = _microtime(time.time())
            released = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            await self.kube.elect("PUT", self.url, {**lease, "spec": released})
            logger.info("released Lease %s/%s", self.namespace, self.name)
        except ApiError as problem:
            logger.warning("could not release Lease %s/%s: %s", self.namespace, self.name, problem)


def write_guard(
    leading: Callable[[], bool], election: LeaderElection | None = None
) -> Callable[[], float]:
    """The client's write allowance (`Kube.write_allowance`): for how many more seconds this
    process may write.

    Nothing while the runner does not lead (`leading`): it stands by the moment the election
    loses the Lease and before the Lease is released on a stop. While it leads, the election's
    allowance, which ends at the renew deadline even if the event loop was too busy to notice
    (`LeaderElection.write_allowance`); without an election, a process that leads may write
    for ever.
    """

    def allowance() -> float:
        if not leading():
            return 0.0
        return election.write_allowance() if election is not None else math.inf

    return allowance


__all__ = ["Durations", "LeaderElection", "write_guard"]
