"""What every reconcile shares: its error type, parsing of dependencies, the status diff."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import ValidationError

from modelyard.api.errors import describe_validation_error
from modelyard.api.types import Resource
from modelyard.kube import Kube
from modelyard.status import conditions

logger = logging.getLogger(__name__)

Manifest = dict[str, Any]
R = TypeVar("R", bound=Resource)


class ReconcileError(Exception):
    """A permanent problem with the object's inputs: reported in status, not retried hot."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def describe(error: ValidationError) -> str:
    return describe_validation_error(error)


_reported: set[tuple[str, str, str]] = set()
_parsed: dict[tuple[str, str, str], Resource] = {}
PARSE_CACHE_SIZE = 20_000


def parse_cached(kind: type[R], body: Manifest) -> R:
    """`kind.model_validate(body)`, remembered per object version.

    Every pass over a Model reads its template and every Registry and ModelVersion of its
    namespace; they change rarely, and validating them again on every pass was most of a
    pass's CPU. A resourceVersion identifies an object's content, so the cache cannot go stale.
    """
    metadata = body.get("metadata") or {}
    version = metadata.get("resourceVersion")
    if not version:
        return kind.model_validate(body)
    key = (kind.__name__, str(metadata.get("uid")), str(version))
    cached = _parsed.get(key)
    if cached is None:
        cached = kind.model_validate(body)
        if len(_parsed) >= PARSE_CACHE_SIZE:
            _parsed.clear()
        _parsed[key] = cached
    assert isinstance(cached, kind)
    return cached


def parse_all(kind: type[R], bodies: Iterable[Manifest]) -> list[R]:
    """Typed dependencies; one that fails validation is skipped (its own status says why).

    Logged once per object version, not on every pass of every Model that looks at it.
    """
    parsed = []
    for body in bodies:
        try:
            parsed.append(parse_cached(kind, body))
        except ValidationError as error:
            metadata = body.get("metadata") or {}
            seen = (kind.__name__, str(metadata.get("uid")), str(metadata.get("resourceVersion")))
            if seen not in _reported:
                _reported.add(seen)
                name = metadata.get("name")
                logger.warning("ignoring invalid %s %s: %s", kind.__name__, name, describe(error))
    return parsed


def _compact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def status_changed(previous: Manifest, new: Manifest) -> bool:
    """Whether writing `new` would change anything a reader can see."""
    return bool(_compact(previous) != _compact(new))


async def warn_once(
    kube: Kube,
    body: Manifest,
    previous_conditions: list[conditions.Condition] | None,
    kind: str,
    check: conditions.Check | None,
) -> None:
    """A Warning Event for a failed condition that does not decide Ready (a Warn-mode
    signature, a key that cannot be read), once per cause: its reason and message."""
    if check is None or check.ok:
        return
    before = conditions.find(previous_conditions, kind) or {}
    if (before.get("reason"), before.get("message")) == (check.reason, check.message):
        return
    await kube.post_event(body, "Warning", check.reason, check.message, "modelyard")


def with_nulls(before: Any, after: Any) -> Any:
    """`after` as a merge patch must send it to replace `before` whole: every key `before` has
    and `after` has not, at any depth, sent as null (a merge patch merges objects key by key,
    and a key left out is kept)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return after
    nulls: dict[str, Any] = {key: None for key in before if key not in after}
    return {**nulls, **{key: with_nulls(before.get(key), value) for key, value in after.items()}}
