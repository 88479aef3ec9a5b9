"""How long a key waits before it is tried again, after failures in a row.

Kept apart from the queue (`modelyard.reconcile.queue`) as client-go keeps its rate limiter
apart from its work queue: the queue says *that* a key failed, this says *how long* it waits.
Delays double from `base` with each failure and stop growing at a cap. A server's Retry-After
is used as given instead; the failure still counts, so the delay after it keeps growing.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: The longest wait after a failure that retrying can cure (a temporary API error, a bug).
MAX_BACKOFF = 60.0
#: The longest wait after a pass something refused (a quota, an admission policy): a raised
#: quota or a removed policy sends no event the operator watches, so this is how soon at most it
#: recovers (an edit of the object is seen at once).
MAX_REFUSED_BACKOFF = 120.0


class Backoff(Generic[K]):
    """Failures in a row of each key, and the wait they earn."""

    def __init__(self, base: float = 0.5, cap: float = MAX_BACKOFF) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[K, int] = {}

    def when(self, key: K, *, cap: float | None = None, retry_after: float | None = None) -> float:
        """Count one more failure of `key`; the seconds to wait before trying it again.

        `cap` replaces the usual cap for this wait; `retry_after` (a server's, when it sent
        one) is the wait itself.
        """
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        if retry_after:
            return retry_after
        # The exponent stops where any cap is long reached: 2.0**1024 overflows, and a key
        # failing for a day must not end the queue's drain with an OverflowError.
        return min(self.cap if cap is None else cap, self.base * 2.0 ** min(failures, 64))

    def forget(self, key: K) -> None:
        """`key` succeeded (or is gone): its next failure waits the shortest again."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """Failures of `key` in a row, since it last succeeded."""
        return self._failures.get(key, 0)

    def clear(self) -> None:
        self._failures.clear()


__all__ = ["MAX_BACKOFF", "MAX_REFUSED_BACKOFF", "Backoff"]
