"""metav1.Condition bookkeeping in the style of kubebuilder's meta.SetStatusCondition.

`lastTransitionTime` moves only when a condition's status flips, so "Ready since" stays
meaningful and an unchanged status serialises identically — which is what lets the reconciler
skip the status write when nothing changed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

Condition = dict[str, Any]

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Check:
    """One condition's verdict before bookkeeping: status, reason, message."""

    status: str
    reason: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == TRUE


def passed(reason: str, message: str = "") -> Check:
    return Check(TRUE, reason, message)


def failed(reason: str, message: str = "") -> Check:
    return Check(FALSE, reason, message)


def unknown(reason: str, message: str = "") -> Check:
    return Check(UNKNOWN, reason, message)


def merge(
    previous: list[Condition] | None,
    checks: dict[str, Check],
    generation: int | None,
    timestamp: str | None = None,
) -> list[Condition]:
    """The new conditions, one per check in the order given; times kept unless flipped."""
    by_type = {c.get("type"): c for c in previous or []}
    stamp = timestamp or now()
    merged = []
    for kind, check in checks.items():
        old = by_type.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == check.status else None
        condition: Condition = {
            "type": kind,
            "status": check.status,
            "reason": check.reason,
            "message": check.message[:32768],
            "lastTransitionTime": since or stamp,
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        merged.append(condition)
    return merged


def find(conditions: list[Condition] | None, kind: str) -> Condition | None:
    for condition in conditions or []:
        if condition.get("type") == kind:
            return condition
    return None


def is_true(conditions: list[Condition] | None, kind: str) -> bool:
    condition = find(conditions, kind)
    return condition is not None and condition.get("status") == TRUE
