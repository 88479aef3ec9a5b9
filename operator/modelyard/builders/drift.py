"""Whether a child must be (re)applied: the reason an idle operator makes no API writes.

Applying an unchanged manifest is harmless but costs a write per child per reconcile, and
reconciles happen on every pod event. A child is applied when it is missing, when its desired
manifest changed since the last apply (a hash recorded on the child — this is also how a field
removed from the template gets removed: SSA drops fields the manager no longer sends), or when
someone edited a field we own (every field we send must still hold the value we sent).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

APPLIED_HASH = "modelyard.dev/applied-hash"

Manifest = dict[str, Any]


def manifest_hash(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:20]


def stamped(manifest: Manifest) -> Manifest:
    """`manifest` with the hash of its own content in an annotation."""
    digest = manifest_hash(manifest)
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), APPLIED_HASH: digest}
    return {**manifest, "metadata": metadata}


def _holds(desired: Any, live: Any) -> bool:
    """Every value in `desired` is present in `live`; extra live fields (defaults) are fine."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and _holds(v, live[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list):
            return False
        if desired and all(isinstance(d, dict) and "name" in d for d in desired):
            # Named items (containers, env, ports) match by name: another manager may insert
            # its own (an injected sidecar) anywhere in the list.
            by_name = {item.get("name"): item for item in live if isinstance(item, dict)}
            return all(_holds(d, by_name.get(d["name"])) for d in desired)
        return len(desired) <= len(live) and all(
            _holds(d, item) for d, item in zip(desired, live, strict=False)
        )
    if isinstance(desired, int | float) and not isinstance(desired, bool) and isinstance(live, str):
        return str(desired) == live
    return bool(desired == live)


def needs_apply(desired: Manifest, live: Manifest | None) -> bool:
    """`desired` must carry its APPLIED_HASH annotation (see `stamped`)."""
    if live is None:
        return True
    wanted = desired["metadata"]["annotations"][APPLIED_HASH]
    recorded = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH)
    if recorded != wanted:
        return True
    return not (
        _holds(desired.get("spec"), live.get("spec"))
        and _holds(
            desired["metadata"].get("labels", {}), (live.get("metadata") or {}).get("labels", {})
        )
    )
