"""The work queue (`modelyard.reconcile.queue`) and its backoff, on asyncio alone: requests
collapsed, a key's passes one at a time, what follows each kind of failure, the switch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from modelyard.kube import ApiError, NotLeading
from modelyard.reconcile.backoff import MAX_BACKOFF, MAX_REFUSED_BACKOFF, Backoff
from modelyard.reconcile.queue import Result, WorkQueue

Key = tuple[str, str]
KEY = ("default", "a")


async def settle() -> None:
    """Lets every task that can run, run until it waits."""
    for _ in range(5):
        await asyncio.sleep(0)


def started(
    work: Callable[[Key], Awaitable[Result | None]], *, drop_idle: bool = False, base: float = 0.01
) -> WorkQueue[Key]:
    """A running queue whose backoff starts at `base` seconds (a test cannot wait seconds)."""
    queue = WorkQueue("model", work, drop_idle=drop_idle, backoff=Backoff(base=base))
    queue.start()
    return queue


def script(
    *outcomes: Result | Exception | None,
) -> tuple[list[Key], Callable[[Key], Awaitable[Result | None]]]:
    """A worker that returns or raises `outcomes` in turn, then succeeds; and its calls."""
    calls: list[Key] = []
    left = list(outcomes)

    async def work(key: Key) -> Result | None:
        calls.append(key)
        outcome = left.pop(0) if left else None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return calls, work


async def test_requests_during_a_pass_collapse_into_exactly_one_more() -> None:
    release = asyncio.Event()
    calls: list[Key] = []

    async def work(key: Key) -> None:
        calls.append(key)
        await release.wait()

    queue = started(work)
    queue.add(KEY)
    await settle()
    for _ in range(5):
        queue.add(KEY)
    release.set()
    await asyncio.wait_for(queue.idle(), 1)
    assert calls == [KEY, KEY]
    assert queue.passes == 2


async def test_a_keys_passes_never_overlap_but_keys_run_side_by_side() -> None:
    running: dict[Key, int] = {}
    most: dict[Key, int] = {}
    both = asyncio.Event()

    async def work(key: Key) -> None:
        running[key] = running.get(key, 0) + 1
        most[key] = max(most.get(key, 0), running[key])
        if len(running) == 2 and all(running.values()):
            both.set()
        await asyncio.sleep(0.01)
        running[key] -= 1

    queue = started(work)
    for _ in range(3):
        queue.add(("default", "a"))
        queue.add(("default", "b"))
        await asyncio.sleep(0.005)
    await asyncio.wait_for(queue.idle(), 1)
    assert both.is_set()
    assert most == {("default", "a"): 1, ("default", "b"): 1}


async def test_a_pass_run_outside_the_queue_takes_the_same_lock() -> None:
    calls, work = script()
    queue = started(work)
    async with queue.lock(KEY):
        queue.add(KEY)
        await settle()
        assert calls == [KEY]  # the worker was called: holding the lock is the worker's part
    await asyncio.wait_for(queue.idle(), 1)


def test_backoff_doubles_up_to_its_cap_and_forgets() -> None:
    backoff: Backoff[str] = Backoff()
    waits = [backoff.when("k") for _ in range(9)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    assert backoff.failures("k") == 9
    assert backoff.when("k", cap=MAX_REFUSED_BACKOFF) == MAX_REFUSED_BACKOFF
    assert backoff.failures("other") == 0
    backoff.forget("k")
    assert backoff.failures("k") == 0
    assert backoff.when("k") == 1.0


def test_a_key_failing_for_days_still_waits_the_cap() -> None:
    """Past 1,024 failures in a row (17 hours at the cap) the doubling would overflow a float;
    the wait stays the cap and the queue keeps draining."""
    backoff: Backoff[str] = Backoff()
    waits = [backoff.when("k") for _ in range(5000)]
    assert waits[-1] == MAX_BACKOFF and backoff.failures("k") == 5000


def test_a_retry_after_is_the_wait_and_still_counts() -> None:
    backoff: Backoff[str] = Backoff()
    assert backoff.when("k", retry_after=7.0) == 7.0
    assert backoff.when("k") == 2.0  # the second failure in a row
    assert backoff.when("k", retry_after=0.0) == 4.0  # none sent: the usual wait


async def test_a_temporary_error_is_retried_after_its_retry_after() -> None:
    calls, work = script(ApiError(503, "ServiceUnavailable", "busy", retry_after=0.05))
    queue = started(work, base=30.0)  # without Retry-After the test would time out
    began = time.monotonic()
    queue.add(KEY)
    await asyncio.wait_for(queue.idle(), 2)
    assert calls == [KEY, KEY]
    assert 0.05 <= time.monotonic() - began < 1.5
    assert queue.failures(KEY) == 0


async def test_a_permanent_error_waits_for_the_next_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls, work = script(ApiError(422, "Invalid", "no"), ApiError(422, "Invalid", "no"))
    queue = started(work)
    with caplog.at_level(logging.DEBUG, "modelyard.reconcile.queue"):
        queue.add(KEY)
        await asyncio.wait_for(queue.idle(), 1)
        assert calls == [KEY]
        queue.add(KEY)
        await asyncio.wait_for(queue.idle(), 1)
    assert calls == [KEY, KEY]
    assert queue.failures(KEY) == 0
    # Said once at error level; the same cause again only at debug level.
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.DEBUG]
    assert caplog.records[0].getMessage().startswith("model default/a: ")


async def test_a_refusal_is_tried_again_backing_off_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[int] = []
    calls, scripted = script(Result(refused="quota"), Result(refused="quota"), Result())

    async def work(key: Key) -> Result | None:
        failures.append(queue.failures(key))
        return await scripted(key)

    queue = started(work)
    with caplog.at_level(logging.DEBUG, "modelyard.reconcile.queue"):
        queue.add(KEY)
        await asyncio.wait_for(queue.idle(), 1)
    assert len(calls) == 3
    assert failures == [0, 1, 2]  # what the pass reads (a refusal persisting is reported)
    assert queue.failures(KEY) == 0
    said = [r for r in caplog.records if "trying again in" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG]


async def test_an_empty_refusal_is_still_a_refusal() -> None:
    calls, work = script(Result(refused=""))
    queue = started(work)
    queue.add(KEY)
    await asyncio.wait_for(queue.idle(), 1)
    assert len(calls) == 2


async def test_a_bug_is_retried_and_its_traceback_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls, work = script(RuntimeError("boom"), RuntimeError("boom"))
    queue = started(work)
    with caplog.at_level(logging.DEBUG, "modelyard.reconcile.queue"):
        queue.add(KEY)
        await asyncio.wait_for(queue.idle(), 1)
    assert len(calls) == 3
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].levelno == logging.ERROR
    assert any(
        "reconcile failed again: RuntimeError: boom" in r.getMessage() for r in caplog.records
    )


async def test_not_leading_is_retried_while_running_and_dropped_once_stopped() -> None:
    calls, work = script(NotLeading())
    queue = started(work)
    queue.add(KEY)
    await asyncio.wait_for(queue.idle(), 1)
    assert len(calls) == 2  # still running: made again

    stopped = asyncio.Event()

    async def lost(key: Key) -> None:
        queue.running = False  # as if the Lease were lost while the pass ran
        stopped.set()
        raise NotLeading()

    queue = started(lost)
    queue.add(KEY)
    await asyncio.wait_for(queue.idle(), 1)
    assert stopped.is_set()
    assert queue.passes == 1
    assert queue.failures(KEY) == 0


async def test_stop_cancels_passes_and_passes_asked_for_later() -> None:
    cancelled = asyncio.Event()
    calls: list[Key] = []

    async def work(key: Key) -> None:
        calls.append(key)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    queue = started(work)
    queue.add(KEY)
    queue.add_after(("default", "later"), 0.05)
    await settle()
    assert queue.busy()
    queue.stop()
    await asyncio.wait_for(cancelled.wait(), 1)
    assert not queue.busy() and len(queue) == 0
    queue.add(KEY)  # a stopped queue takes no requests
    await asyncio.sleep(0.1)
    assert calls == [KEY]


async def test_add_after_keeps_the_sooner_pass() -> None:
    calls, work = script()
    queue = started(work)
    queue.add_after(KEY, 0.05)
    queue.add_after(KEY, 5.0)  # later than the one asked for: ignored
    await asyncio.sleep(0.1)
    assert calls == [KEY]
    queue.add_after(KEY, 5.0)
    queue.add_after(KEY, 0.05)  # sooner: replaces it
    await asyncio.sleep(0.1)
    assert calls == [KEY, KEY]
    queue.add_after(KEY, 0.05)
    queue.cancel_later(KEY)
    await asyncio.sleep(0.1)
    assert calls == [KEY, KEY]


async def test_a_debounced_request_serves_those_during_its_wait() -> None:
    calls, work = script()
    queue = started(work)
    queue.add(KEY, debounce=0.05)
    queue.add(KEY)
    queue.add(KEY, debounce=0.05)
    await asyncio.wait_for(queue.idle(), 1)
    assert calls == [KEY]


async def test_idle_slots_go_only_where_asked() -> None:
    _, work = script()
    dropping = started(work, drop_idle=True)
    keeping = started(work)
    for queue in (dropping, keeping):
        queue.add(KEY)
        await asyncio.wait_for(queue.idle(), 1)
    assert len(dropping) == 0
    assert len(keeping) == 1


async def test_forget_drops_a_key_no_pass_holds() -> None:
    release = asyncio.Event()

    async def work(key: Key) -> None:
        await release.wait()

    queue = started(work)
    queue.add(KEY)
    await settle()
    queue.forget(KEY)  # a pass holds it: kept
    assert len(queue) == 1
    release.set()
    await asyncio.wait_for(queue.idle(), 1)
    queue.lock(("default", "b"))  # a slot made by a caller outside the queue
    queue.forget(("default", "b"))
    assert len(queue) == 1

    async def gone(key: Key) -> None:
        queue.forget(key)  # the pass itself finds its object gone

    queue = started(gone)
    queue.add(KEY)
    await asyncio.wait_for(queue.idle(), 1)
    assert len(queue) == 0
