"""Semantic-version ranges: which published ModelVersion a Model runs.

The grammar is the one npm and Helm users know: space- or comma-separated comparators that must
all hold (`>=1.0.0 <2.0.0`), alternatives joined by `||`, caret (`^1.2` = `>=1.2.0 <2.0.0`),
tilde (`~1.2.3` = `>=1.2.3 <1.3.0`), wildcards (`1.x`, `1.2.*`), and an exact version.
As in npm, a pre-release (`1.0.0-rc.1`) only matches when named exactly or when the range has a
pre-release on the same major.minor.patch, so a range never rolls users onto a pre-release
they did not ask for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import semver

Predicate = Callable[[semver.Version], bool]

_PARTIAL = re.compile(
    r"^v?(?P<major>\d+|[xX*])(?:\.(?P<minor>\d+|[xX*]))?(?:\.(?P<patch>\d+|[xX*]))?"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)
_COMPARATOR = re.compile(r"^(\^|~|>=|<=|>|<|=)?\s*(.+)$")


class RangeError(ValueError):
    """The text is neither a version nor a range we understand."""


@dataclass(frozen=True)
class _Partial:
    major: int | None
    minor: int | None
    patch: int | None
    pre: str | None

    def floor(self) -> semver.Version:
        return semver.Version(self.major or 0, self.minor or 0, self.patch or 0, self.pre)


def _number(text: str | None) -> int | None:
    return None if text is None or text in ("x", "X", "*") else int(text)


def _partial(text: str) -> _Partial:
    match = _PARTIAL.match(text)
    if not match:
        raise RangeError(f"{text!r} is not a version")
    major, minor, patch = (_number(match.group(g)) for g in ("major", "minor", "patch"))
    if major is None and (minor is not None or patch is not None):
        raise RangeError(f"{text!r}: a wildcard major needs wildcard minor and patch")
    return _Partial(major, minor, patch if minor is not None else None, match.group("pre"))


def _eq(bound: semver.Version) -> Predicate:
    return lambda v: v == bound


def _ge(bound: semver.Version) -> Predicate:
    return lambda v: v >= bound


def _gt(bound: semver.Version) -> Predicate:
    return lambda v: v > bound


def _le(bound: semver.Version) -> Predicate:
    return lambda v: v <= bound


def _lt(bound: semver.Version) -> Predicate:
    return lambda v: v < bound


def _below(bound: semver.Version) -> Predicate:
    """Exclusive upper bound that also excludes the bound's own pre-releases (2.0.0-rc.1)."""
    return lambda v: v < bound and not (v.prerelease and v.finalize_version() == bound)


def _bump(version: semver.Version, part: str) -> semver.Version:
    bumped = {"major": version.bump_major, "minor": version.bump_minor, "patch": version.bump_patch}
    return bumped[part]()


def _wildcard_bounds(partial: _Partial) -> tuple[semver.Version | None, semver.Version | None]:
    if partial.major is None:
        return None, None
    floor = partial.floor()
    if partial.minor is None:
        return floor, _bump(floor, "major")
    if partial.patch is None:
        return floor, _bump(floor, "minor")
    return floor, None


def _comparator(text: str) -> list[Predicate]:
    match = _COMPARATOR.match(text)
    if not match:
        raise RangeError(f"{text!r} is not a comparator")
    operator, rest = match.group(1) or "=", match.group(2)
    partial = _partial(rest)
    floor = partial.floor()
    if operator in ("=",):
        low, high = _wildcard_bounds(partial)
        if high is None and low is not None:
            return [_eq(low)]
        return _between(low, high)
    if operator == "^":
        if partial.major is None:
            return []
        if partial.major > 0 or partial.minor is None:
            return _between(floor, _bump(floor, "major"))
        if partial.minor > 0 or partial.patch is None:
            return _between(floor, _bump(floor, "minor"))
        return _between(floor, _bump(floor, "patch"))
    if operator == "~":
        if partial.major is None:
            return []
        return _between(floor, _bump(floor, "major" if partial.minor is None else "minor"))
    low, high = _wildcard_bounds(partial)
    if operator == ">=":
        return [_ge(floor)]
    if operator == ">":
        # ">1.1" means above the whole 1.1.x span.
        return [_ge(high)] if high else [_gt(floor)]
    if operator == "<":
        return [_lt(floor)]
    # "<=" on a partial version includes the whole wildcard span.
    return [_lt(high)] if high else [_le(floor)]


def _between(low: semver.Version | None, high: semver.Version | None) -> list[Predicate]:
    predicates: list[Predicate] = []
    if low is not None:
        predicates.append(_ge(low))
    if high is not None:
        predicates.append(_below(high))
    return predicates


@dataclass(frozen=True)
class VersionRange:
    """A parsed range; `matches` says whether a published version satisfies it."""

    text: str
    alternatives: tuple[tuple[tuple[Predicate, ...], frozenset[tuple[int, int, int]]], ...]

    def matches(self, version: str) -> bool:
        try:
            parsed = semver.Version.parse(version)
        except ValueError:
            return False
        for predicates, prerelease_bases in self.alternatives:
            if (
                parsed.prerelease
                and (parsed.major, parsed.minor, parsed.patch) not in prerelease_bases
            ):
                continue
            if all(predicate(parsed) for predicate in predicates):
                return True
        return False


def parse_range(text: str) -> VersionRange:
    """Parse `text`; raises RangeError with a message fit for a Model's status."""
    alternatives = []
    for alternative in text.split("||"):
        tokens = [t for t in re.split(r"[\s,]+", alternative.strip()) if t]
        # Re-attach operators written with a space: ">= 1.0.0".
        joined: list[str] = []
        for token in tokens:
            if joined and joined[-1] in ("^", "~", ">=", "<=", ">", "<", "="):
                joined[-1] += token
            else:
                joined.append(token)
        if not joined:
            raise RangeError(f"{text!r} has an empty alternative")
        predicates: list[Predicate] = []
        bases: set[tuple[int, int, int]] = set()
        for token in joined:
            predicates.extend(_comparator(token))
            stripped = _COMPARATOR.match(token)
            partial = _partial(stripped.group(2)) if stripped else None
            if partial is not None and partial.pre and partial.major is not None:
                bases.add((partial.major, partial.minor or 0, partial.patch or 0))
        alternatives.append((tuple(predicates), frozenset(bases)))
    return VersionRange(text, tuple(alternatives))


def highest_match(text: str, versions: Iterable[str]) -> str | None:
    """The highest of `versions` within the range `text`, or None."""
    wanted = parse_range(text)
    matching = [v for v in versions if wanted.matches(v)]
    return max(matching, key=semver.Version.parse, default=None)
