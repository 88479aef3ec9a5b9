"""What our own writes returned, kept until the watch brings them back (client-go's
MutationCache).

The informers' stores follow the watch, which lags our writes: a pass right after a write would
otherwise compare against the stale copy, write the same status again (and announce the same
Event twice) or re-apply a child it just created. So a write's answer is kept (`Written.keep`),
a pass reads the newer of it and the store's copy (`Written.fresh`), and the watch event that
brings the write back is known for an echo (`Written.is_echo`), which asks for no pass. A kept
answer goes as soon as the store holds it or something newer, so the store holds only the few
objects written in the last moments.

Newer means a higher resourceVersion. Those are etcd revisions, increasing integers on every
real API server; should one ever not be, the store's copy wins, which costs a redundant write,
never a wrong one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelyard.kube.client import Manifest

#: (kind, namespace, name)
Slot = tuple[str, str, str]


def _version(obj: Manifest | None) -> int | None:
    value = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def newest(indexed: Manifest | None, written: Manifest | None) -> Manifest | None:
    """The more recent of the store's copy and the copy our own last write returned."""
    if written is None:
        return indexed
    if indexed is None:
        return written
    ours, theirs = _version(written), _version(indexed)
    if ours is not None and theirs is not None and ours > theirs:
        return written
    return indexed


def caught_up(indexed: Manifest | None, written: Manifest) -> bool:
    """The store holds our write or something newer: our copy is no longer needed."""
    ours, theirs = _version(written), _version(indexed)
    return ours is not None and theirs is not None and theirs >= ours


def _kept(answered: Manifest, shapes: Mapping[str, Callable[[Manifest], Manifest]]) -> Manifest:
    """A write's answer in the form the stores keep: by its kind's shape where one is given,
    and otherwise without managedFields (the bulk of an answer)."""
    shape = shapes.get(answered["kind"])
    if shape is not None:
        return shape(answered)
    metadata = dict(answered.get("metadata") or {})
    metadata.pop("managedFields", None)
    return {**answered, "metadata": metadata}


class Written:
    """The answers of our writes not yet seen back from the watch, by kind and (namespace,
    name)."""

    def __init__(self, shapes: Mapping[str, Callable[[Manifest], Manifest]] | None = None) -> None:
        """`shapes`: how the stores keep a kind, where that is more than dropping managedFields
        (the children, packed by their informers): a kept answer must compare like the store's
        copy."""
        self._shapes = dict(shapes or {})
        self._latest: dict[Slot, Manifest] = {}

    def keep(self, *written: Manifest | None) -> None:
        """Keep what our writes returned (None and empty answers are skipped)."""
        for answered in written:
            if answered and answered.get("kind"):
                obj = _kept(answered, self._shapes)
                metadata = obj.get("metadata") or {}
                slot = (
                    str(obj["kind"]),
                    metadata.get("namespace") or "default",
                    metadata.get("name", ""),
                )
                if newest(self._latest.get(slot), obj) is obj:
                    self._latest[slot] = obj

    def fresh(self, kind: str, key: tuple[str, str], indexed: Manifest | None) -> Manifest | None:
        """The newer of the store's copy and our last write's; ours is dropped once caught up."""
        slot = (kind, *key)
        written = self._latest.get(slot)
        if written is not None and caught_up(indexed, written):
            del self._latest[slot]
            return indexed
        return newest(indexed, written)

    def is_echo(self, kind: str, key: tuple[str, str], seen: Mapping[str, Any]) -> bool:
        """Whether a watch event brings back exactly what our own last write returned: a pass
        for it would find nothing to do. An echo is the store catching up, so our copy goes."""
        written = self._latest.get((kind, *key))
        if written is None:
            return False
        version = (seen.get("metadata") or {}).get("resourceVersion")
        if version is None or version != (written.get("metadata") or {}).get("resourceVersion"):
            return False
        del self._latest[(kind, *key)]
        return True

    def holds(self, kind: str, key: tuple[str, str]) -> bool:
        """Whether an answer of ours for the object is kept (the store may not have it yet)."""
        return (kind, *key) in self._latest

    def forget(self, kind: str, key: tuple[str, str]) -> None:
        """The object is gone: a kept copy must not resurrect it."""
        self._latest.pop((kind, *key), None)

    def clear(self) -> None:
        self._latest.clear()

    def __len__(self) -> int:
        return len(self._latest)


__all__ = ["Written", "caught_up", "newest"]
