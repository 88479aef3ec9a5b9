"""The Prober: every Model's verdict kept fresh in the background, so a probe that takes its
whole timeout never holds up a reconcile pass; a verdict that changes asks for a pass of its
Model, and one that does not costs nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelyard.config import Probes
from modelyard.kube import Kube
from modelyard.reconcile.conformance.asking import Verdict, ask
from modelyard.reconcile.conformance.targets import Key, ProbeKey, Target
from modelyard.registry.egress import EgressPolicy
from modelyard.status import reasons
from modelyard.status.conditions import failed

logger = logging.getLogger(__name__)


#: How often the Prober looks for targets that are due.
TICK = 0.5


#: How long a Model's Service may refuse connections before that is its verdict: a new
#: worker's address reaches the Service's endpoints, and kube-proxy (or DNS) on the way,
#: a moment after the Deployment counts the worker ready. Meanwhile it is asked every second.
SETTLING_SECONDS = 10.0


def _same_question(before: Target, now: Target) -> bool:
    """The same probe of the same Model, asked of other workers (a new revision, or its pods
    rather than its Service while a canary shares it)."""
    if before.external or now.external:
        return dataclasses.replace(before, revision="") == dataclasses.replace(now, revision="")
    return dataclasses.replace(before, revision="", url="") == dataclasses.replace(
        now, revision="", url=""
    )


@dataclass
class _Entry:
    target: Target
    #: The Model a changed verdict asks a pass of.
    model: Key
    verdict: Verdict | None = None
    due: float = 0.0
    #: When this target was first asked (None: not yet).
    first_asked: float | None = None
    #: Holds the previous revision's verdict while the new workers settle in.
    settling: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Prober:
    """The verdicts of every Model with something to ask, kept fresh in the background."""

    def __init__(
        self,
        kube: Kube,
        config: Probes,
        changed: Callable[[Key], None],
        policy: EgressPolicy | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.policy = policy
        self.changed = changed
        self._entries: dict[ProbeKey, _Entry] = {}
        self._slots = asyncio.Semaphore(config.concurrency)

    def verdict(self, key: ProbeKey, target: Target, model: Key | None = None) -> Verdict | None:
        """The verdict on `target`, or None while it is being asked (a pass of `model`,
        by default the key, follows)."""
        entry = self._entries.get(key)
        if entry is None or entry.target != target:
            if entry is not None and entry.task is not None:
                entry.task.cancel()
            kept = None
            if entry is not None and _same_question(entry.target, target):
                # A rollout or a scale: the same question to the same Model. The last
                # answer stands until the new workers answer (asked at once), or a Model
                # that serves would flap to Probing with every rollout.
                kept = entry.verdict
            owner = model or (key[0], key[1])
            entry = self._entries[key] = _Entry(
                target, owner, verdict=kept, settling=kept is not None
            )
            if kept is not None:
                self._start(key, entry)
        if entry.verdict is None and entry.task is None:
            self._start(key, entry)
        return entry.verdict

    def offered_classes(self, key: ProbeKey) -> tuple[str, ...] | None:
        """The classes the server last listed, when the Model registered none."""
        entry = self._entries.get(key)
        return entry.verdict.classes if entry is not None and entry.verdict else None

    def server_metadata(self, key: ProbeKey) -> dict[str, Any] | None:
        """What the server last said of the model, in its protocol's words (None: nothing)."""
        entry = self._entries.get(key)
        return entry.verdict.server if entry is not None and entry.verdict else None

    def forget(self, key: ProbeKey) -> None:
        """Nothing to ask any more (not serving): a later target starts afresh."""
        entry = self._entries.pop(key, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()

    def forget_model(self, model: Key) -> None:
        """A Model gone: neither it nor its canary's pods are asked any more."""
        self.forget(model)
        self.forget_canary(model)

    def forget_canary(self, model: Key, keep: frozenset[ProbeKey] = frozenset()) -> None:
        """The canary's pods that are gone (or all of them) are not asked any more."""
        for each in [k for k, e in self._entries.items() if e.model == model and k != model]:
            if each not in keep:
                self.forget(each)

    def forget_all(self) -> None:
        """Stand by: nothing is asked until this process leads again (and its passes ask)."""
        for key in list(self._entries):
            self.forget(key)

    def ask_again(self, key: ProbeKey) -> None:
        """Ask before the interval is up (its credentials Secret changed)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.due = 0.0

    def _start(self, key: ProbeKey, entry: _Entry) -> None:
        entry.task = asyncio.get_running_loop().create_task(self._ask(key, entry))

    async def _ask(self, key: ProbeKey, entry: _Entry) -> None:
        try:
            async with self._slots:
                verdict = await ask(self.kube, entry.target, self.policy)
        except Exception:
            logger.exception("Model %s/%s: probe failed", *entry.model)
            verdict = Verdict(
                entry.target.fingerprint,
                failed(reasons.ENDPOINT_UNREACHABLE, "the probe failed unexpectedly"),
            )
        finally:
            entry.task = None
        if self._entries.get(key) is not entry:
            return
        now = time.monotonic()
        entry.first_asked = entry.first_asked or now
        if (
            (entry.verdict is None or entry.settling)
            and not entry.target.external
            and verdict.conformant is not None
            and verdict.conformant.reason == reasons.ENDPOINT_UNREACHABLE
            and now - entry.first_asked < SETTLING_SECONDS
        ):
            # Still Probing: the Service has not caught up with the new workers yet.
            entry.due = now + 1.0
            return
        entry.settling = False
        before, entry.verdict = entry.verdict, verdict
        wait = self.config.interval_seconds if verdict.ok else self.config.retry_seconds
        entry.due = time.monotonic() + wait
        if before != verdict:
            failing = [c for c in (verdict.available, verdict.conformant) if c and not c.ok]
            if failing:
                logger.info(
                    "Model %s/%s: %s: %s", *entry.model, failing[0].reason, failing[0].message
                )
            elif before is not None:
                logger.info("Model %s/%s: answers again", *entry.model)
            self.changed(entry.model)

    async def run(self) -> None:
        """Ask again whatever is due, until cancelled."""
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for key, entry in list(self._entries.items()):
                asked = entry.verdict is not None or entry.first_asked is not None
                if entry.task is None and asked and entry.due <= now:
                    self._start(key, entry)
