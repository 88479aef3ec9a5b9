"""Reading the informers' stores, as the runner and the wake rules see them.

The stores are live mappings that `modelyard.handlers` fills and keeps: each key maps to the
objects under it (one for an object by name, many for a namespace's Registries). A key may go
between a check and a read while events arrive, so every read here takes a copy of the keys or
tolerates their absence; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Manifest = dict[str, Any]
Key = tuple[str, str]
#: Store name → key → objects: `model_bodies` and `template_bodies` by (namespace, name),
#: `registry_bodies` and `version_bodies` by namespace, `models_by_template` (namespace,
#: template) → Model names.
Indices = Mapping[str, Mapping[Any, Iterable[Any]]]


def first(index: Mapping[Any, Iterable[Any]] | None, key: Any) -> Any:
    """The object under `key`, or None."""
    if index is None or key not in index:
        return None
    return next(iter(index[key]), None)


def every(index: Mapping[Any, Iterable[Any]] | None, key: Any) -> list[Any]:
    """The objects under `key` (none when absent)."""
    if index is None or key not in index:
        return []
    return list(index[key])


def named(indices: Indices, index_name: str, key: Key) -> Manifest | None:
    """A copy of the object called key[1] among the namespace's in a by-namespace store."""
    namespace, name = key
    for body in every(indices.get(index_name), namespace):
        if (body.get("metadata") or {}).get("name") == name:
            return dict(body)
    return None


def in_namespace(indices: Indices, index_name: str, namespace: str) -> list[Key]:
    """The keys of a by-name store that are in `namespace`."""
    index = indices.get(index_name) or {}
    return [key for key in list(index) if key[0] == namespace]


__all__ = ["Indices", "Key", "Manifest", "every", "first", "in_namespace", "named"]
