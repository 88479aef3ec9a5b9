"""How many things may run at once, and who goes first when more wait: plain asyncio, no I/O.

The client lets its API calls in through one `PriorityGate` (its pool is sized to the gate), and
the reconcile runner bounds its passes in flight with two more, so a burst of new Models waits
as keys, not as thousands of passes in flight each holding its plan.
"""

from __future__ import annotations

import asyncio
import heapq


class Priority:
    """Which API calls go first when many wait.

    Writes share one rank, first come first served: which Model's work goes first is decided
    before, by the runner's turns (a new Model's Deployment first). Ranking Deployments above
    Services here held every Service back until a burst's last Deployment, and Services are
    what the API server is slowest to create (one at a time, under its ClusterIP allocator's
    lock): a burst took half as long again as the same writes from a plain client."""

    # Leadership: a renewal stuck behind a burst would lose the Lease. The election's calls
    # go further and skip the client's gate altogether (`Kube.elect`).
    LEASE = -1
    WRITE = 0  # children, status, finalizers
    READ = 0
    EVENT = 1  # best effort


class PriorityGate:
    """At most `limit` holders at once; waiting ones are let in by priority, then by arrival.

    Lower numbers go first (`Priority`); equal ones are first come first served, so a gate
    used at one priority is a plain FIFO limit. Whoever was let in calls `release()` once,
    when done: the slot goes straight to the next waiter, and a newcomer queues whenever
    anyone waits, so only a better priority is let in ahead of those already waiting.
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = 0

    async def __call__(self, priority: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        self._arrivals += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, self._arrivals, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted, then cancelled before running: pass the slot on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1
