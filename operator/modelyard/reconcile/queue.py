"""A work queue of keys: one pass at a time per key, requests collapsed, failures retried.

Many events point at one object, and each only means "look again". So while a key's pass runs,
further requests for it collapse into exactly one more pass after it, instead of queueing up
(client-go's dirty and processing sets, here a slot per key: `_Slot.again` and `_Slot.task`).
A key's passes never overlap; callers that run a pass outside the queue take the same
per-key lock (`lock`).

What follows a pass is decided in one place, `_settle`, from what the pass returned or raised:

| The pass | Then |
|---|---|
| returned (`Result()` or None) | done; its failures forgotten |
| returned `Result(refused=...)` | again, backing off to `MAX_REFUSED_BACKOFF` |
| raised a temporary `ApiError` | again after its Retry-After, or backing off to `MAX_BACKOFF` |
| raised a permanent `ApiError` | done: it waits for the next change (`add`) |
| raised `NotLeading`, the queue stopped | dropped: whoever leads now does it |
| raised `NotLeading`, the queue still running | again, backing off (the Lease renewed since) |
| raised anything else (a bug) | again, backing off to `MAX_BACKOFF`, the traceback logged |

Each cause is logged once at its level, and at debug level while it repeats.

One switch (`start`/`stop`) says whether anything runs: a stopped queue takes no requests, and
stopping cancels the passes in flight and every pass asked for later. Whoever starts it adds
what it must look at.

The queue knows keys and an injected worker, nothing of what the keys name; an import-linter
contract keeps the domain out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from modelyard.kube import ApiError, NotLeading
from modelyard.reconcile.backoff import MAX_REFUSED_BACKOFF, Backoff

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Result:
    """What a pass that returned asks of the queue.

    `refused`: something refused the pass that sends no event when it relents (a quota raised,
    a policy removed), so the key is tried again, backing off; it says what, and is logged
    once per cause. Only this is kept between passes, never what the pass returned: a key may
    wait long for its next turn.
    """

    refused: str | None = None


Worker = Callable[[K], Awaitable[Result | None]]


@dataclass
class _Slot:
    """One key's state: its pass running, and whether another is wanted."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    again: bool = False
    task: asyncio.Task[None] | None = None
    #: The refusal last logged: logged again (at warning level) only when it changes.
    refused: str | None = None
    #: The error last logged: logged again (at its level) only when it changes.
    cause: str | None = None


@dataclass(frozen=True)
class _Next:
    """What follows a pass: another in `retry_in` seconds, none unless asked for meanwhile
    (`retry_in` None), or none at all (`abandon`)."""

    retry_in: float | None = None
    abandon: bool = False


class WorkQueue(Generic[K]):
    def __init__(
        self,
        name: str,
        work: Worker[K],
        *,
        drop_idle: bool = False,
        backoff: Backoff[K] | None = None,
    ) -> None:
        """`name` starts the queue's log lines. `drop_idle`: a key's slot goes when its passes
        end, rather than being kept for each of thousands of idle keys; only for a worker that
        nothing but this queue calls, since a slot dropped would drop the lock a caller outside
        the queue holds or awaits."""
        self.name = name
        self._work = work
        self._drop_idle = drop_idle
        self.backoff: Backoff[K] = backoff or Backoff()
        self._slots: dict[K, _Slot] = {}
        #: Passes asked for later (`add_after`), by key.
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self.running = False
        #: Passes run since the queue was made (for the memory release and tests).
        self.passes = 0

    # -- the switch ----------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        """Run nothing more: passes in flight are cancelled, passes asked for later too, and
        every key's state goes (failures, the causes logged)."""
        self.running = False
        for slot in self._slots.values():
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()
        self._slots.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.backoff.clear()

    # -- asking for passes ---------------------------------------------------------------------

    def add(self, key: K, debounce: float = 0.0) -> None:
        """A pass over `key`: now, or after the one running. `debounce`: when none runs, wait
        this long first, so that requests meanwhile are served by the same pass."""
        if not self.running:
            return  # whoever starts the queue adds what it must look at
        slot = self._slot(key)
        if slot.task is not None and not slot.task.done():
            slot.again = True
            return
        slot.task = asyncio.get_running_loop().create_task(self._drain(key, slot, debounce))

    def add_after(self, key: K, seconds: float) -> None:
        """A pass in `seconds`, unless one is already asked for sooner."""
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        if timer is not None and timer.when() <= loop.time() + seconds:
            return
        if timer is not None:
            timer.cancel()

        def due() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_later(seconds, due)

    def cancel_later(self, key: K) -> None:
        """The pass asked for later over `key`, if any, will not come."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def forget(self, key: K) -> None:
        """`key`'s object is gone: its slot goes, with its failures and what was logged, when
        the caller is the key's pass or the queue never ran one (the slot was made by `lock`).
        A slot whose pass is another's stays, and so does one whose passes have ended, until
        a pass of the queue over the key finds the object gone."""
        self.cancel_later(key)
        slot = self._slots.get(key)
        if slot is not None and (slot.task is None or slot.task is asyncio.current_task()):
            del self._slots[key]
            self.backoff.forget(key)

    # -- what the worker and its callers read --------------------------------------------------

    def lock(self, key: K) -> asyncio.Lock:
        """Held by every pass over `key`, the queue's and any run outside it."""
        return self._slot(key).lock

    def failures(self, key: K) -> int:
        """`key`'s failed passes in a row."""
        return self.backoff.failures(key)

    def busy(self) -> bool:
        return any(s.task is not None and not s.task.done() for s in self._slots.values())

    async def idle(self) -> None:
        """Wait until no pass is running or waiting to run again."""
        while True:
            pending = [
                s.task for s in self._slots.values() if s.task is not None and not s.task.done()
            ]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    def __len__(self) -> int:
        """Keys with state kept (for the tracked-objects metric)."""
        return len(self._slots)

    # -- running -------------------------------------------------------------------------------

    def _slot(self, key: K) -> _Slot:
        return self._slots.setdefault(key, _Slot())

    async def _drain(self, key: K, slot: _Slot, debounce: float) -> None:
        if debounce:
            await asyncio.sleep(debounce)
        while True:
            slot.again = False
            self.passes += 1
            try:
                result = await self._work(key)
            except Exception as error:
                then = self._settle(key, slot, error)
            else:
                then = self._settle(key, slot, result)
            if then.abandon:
                return
            if then.retry_in is not None:
                await asyncio.sleep(then.retry_in)
                slot.again = True
            if not slot.again:
                if self._drop_idle and self._slots.get(key) is slot:
                    del self._slots[key]
                    self.backoff.forget(key)
                return

    def _settle(self, key: K, slot: _Slot, outcome: Result | Exception | None) -> _Next:
        """What follows a pass that returned `outcome` or raised it (the table above)."""
        if isinstance(outcome, NotLeading):
            if not self.running:
                return _Next(abandon=True)  # the Lease was lost mid-pass: whoever leads does it
            return _Next(self.backoff.when(key))  # still leading (renewed since): made again
        if isinstance(outcome, ApiError):
            cause = str(outcome)
            said = cause == slot.cause
            slot.cause = cause
            if not outcome.temporary:
                # Waits for the next change (an edit, a periodic check): said once.
                (logger.debug if said else logger.error)(
                    "%s %s: %s", self.name, _described(key), outcome
                )
                self.backoff.forget(key)
                return _Next()
            delay = self.backoff.when(key, retry_after=outcome.retry_after)
            (logger.debug if said else logger.warning)(
                "%s %s: %s; retrying in %.1f s", self.name, _described(key), outcome, delay
            )
            return _Next(delay)
        if isinstance(outcome, Exception):
            # A bug: the traceback once per cause, then one line per retry at debug level.
            cause = f"{type(outcome).__name__}: {outcome}"
            if cause != slot.cause:
                logger.error(
                    "%s %s: reconcile failed", self.name, _described(key), exc_info=outcome
                )
            else:
                logger.debug("%s %s: reconcile failed again: %s", self.name, _described(key), cause)
            slot.cause = cause
            return _Next(self.backoff.when(key))
        slot.cause = None
        refused = outcome.refused if outcome is not None else None
        if refused is None:
            self.backoff.forget(key)
            slot.refused = None
            return _Next()
        delay = self.backoff.when(key, cap=MAX_REFUSED_BACKOFF)
        (logger.debug if refused == slot.refused else logger.warning)(
            "%s %s: %s; trying again in %.1f s", self.name, _described(key), refused, delay
        )
        slot.refused = refused
        return _Next(delay)


def _described(key: Hashable) -> str:
    """`namespace/name` for the usual keys."""
    if isinstance(key, tuple):
        return "/".join(str(part) for part in key)
    return str(key)


__all__ = ["Result", "WorkQueue", "Worker"]
