"""The gate that orders the client's API calls and the runner's passes (`modelyard.kube.gate`),
on asyncio alone: who gets in, in which order, and where a slot goes when its holder is done."""

from __future__ import annotations

import asyncio

import pytest

from modelyard.kube.gate import Priority, PriorityGate


async def settle() -> None:
    """Lets every task that can run, run until it waits."""
    for _ in range(5):
        await asyncio.sleep(0)


def waiting(
    gate: PriorityGate, entered: list[str], arrivals: list[tuple[str, int]]
) -> list[asyncio.Task[None]]:
    """One task per arrival, in that order, each noting its name once it is let in."""

    async def enter(name: str, priority: int) -> None:
        await gate(priority)
        entered.append(name)

    return [asyncio.create_task(enter(name, priority)) for name, priority in arrivals]


async def test_calls_within_the_limit_go_in_at_once() -> None:
    gate = PriorityGate(3)
    for _ in range(3):
        await asyncio.wait_for(gate(Priority.WRITE), 1)
    entered: list[str] = []
    tasks = waiting(gate, entered, [("fourth", Priority.WRITE)])
    await settle()
    assert entered == []
    gate.release()
    await settle()
    assert entered == ["fourth"]
    await asyncio.gather(*tasks)


async def test_waiting_calls_go_in_by_priority_then_by_arrival() -> None:
    gate = PriorityGate(1)
    await gate(Priority.WRITE)
    entered: list[str] = []
    tasks = waiting(
        gate,
        entered,
        [
            ("event", Priority.EVENT),
            ("write", Priority.WRITE),
            ("read", Priority.READ),
            ("lease", Priority.LEASE),
            ("later write", Priority.WRITE),
        ],
    )
    await settle()
    for _ in tasks:
        gate.release()  # the holder is done: the slot goes to the first waiter
        await settle()
    assert entered == ["lease", "write", "read", "later write", "event"]
    await asyncio.gather(*tasks)


async def test_one_release_lets_exactly_one_waiter_in() -> None:
    gate = PriorityGate(1)
    await gate(Priority.WRITE)
    entered: list[str] = []
    tasks = waiting(gate, entered, [("a", Priority.WRITE), ("b", Priority.WRITE)])
    await settle()
    gate.release()
    await settle()
    assert entered == ["a"]
    gate.release()
    await settle()
    assert entered == ["a", "b"]
    await asyncio.gather(*tasks)


async def test_a_release_with_nobody_waiting_frees_a_slot() -> None:
    gate = PriorityGate(1)
    await gate(Priority.WRITE)
    gate.release()
    await asyncio.wait_for(gate(Priority.EVENT), 1)  # not kept waiting
    entered: list[str] = []
    tasks = waiting(gate, entered, [("next", Priority.WRITE)])
    await settle()
    assert entered == []  # the limit still holds
    gate.release()
    await settle()
    assert entered == ["next"]
    await asyncio.gather(*tasks)


async def test_a_newcomer_does_not_take_a_freed_slot_from_those_waiting() -> None:
    gate = PriorityGate(2)
    await gate(Priority.WRITE)
    await gate(Priority.WRITE)
    entered: list[str] = []
    first = waiting(gate, entered, [("waited", Priority.WRITE)])
    await settle()
    gate.release()  # handed to "waited" at once, though it has not run yet
    later = waiting(gate, entered, [("newcomer", Priority.WRITE)])
    await settle()
    assert entered == ["waited"]
    gate.release()
    await settle()
    assert entered == ["waited", "newcomer"]
    await asyncio.gather(*first, *later)


async def test_a_call_cancelled_while_waiting_gives_up_its_place() -> None:
    gate = PriorityGate(1)
    await gate(Priority.WRITE)
    entered: list[str] = []
    cancelled, kept = waiting(gate, entered, [("cancelled", Priority.LEASE), ("kept", 0)])
    await settle()
    cancelled.cancel()
    await settle()
    gate.release()
    await settle()
    assert entered == ["kept"]
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await kept


async def test_a_call_cancelled_after_its_turn_came_passes_the_slot_on() -> None:
    gate = PriorityGate(1)
    await gate(Priority.WRITE)
    entered: list[str] = []
    granted, next_one = waiting(gate, entered, [("granted", 0), ("next", 0)])
    await settle()
    gate.release()  # the slot is granted's, but it has not run yet...
    granted.cancel()  # ...and it is cancelled before it does
    await settle()
    assert entered == ["next"]
    with pytest.raises(asyncio.CancelledError):
        await granted
    await next_one
