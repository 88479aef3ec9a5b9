"""Whether a child must be (re)applied: the reason an idle operator makes no API writes.

Applying an unchanged manifest is harmless but costs a write per child per reconcile, and
reconciles happen on every pod event. A child is applied when it is missing, when its desired
manifest changed since the last apply (a hash recorded on the child — this is also how a field
removed from the template gets removed: SSA drops fields the manager no longer sends), or when
someone edited a field we own in its spec or labels (each one we send there must still hold the
value we sent; annotations are not compared).
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from typing import Any

from modelyard.builders.labels import CONTAINER_NAME, SPEC_HASH_ANNOTATION

APPLIED_HASH = "modelyard.dev/applied-hash"
#: Where a kept child holds its whole spec, as compressed JSON (see `packed`).
PACKED_SPEC = "packedSpec"
#: The few spec fields status is computed from (and a Service's address, where the probe
#: reaches it), kept readable.
READ_SPEC_FIELDS = ("replicas", "progressDeadlineSeconds", "clusterIP")
#: Where a kept Deployment holds its pods' revision (the pod template's spec-hash annotation),
#: kept readable: which revision serves decides a rollout.
TEMPLATE_HASH = "templateHash"
KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "deletionTimestamp",
)

Manifest = dict[str, Any]


def manifest_hash(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:20]


def stamped(manifest: Manifest) -> Manifest:
    """`manifest` with the hash of its own content in an annotation."""
    digest = manifest_hash(manifest)
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), APPLIED_HASH: digest}
    return {**manifest, "metadata": metadata}


def _omitted(value: Any) -> bool:
    """A zero value: the API server drops such fields (Go's `omitempty`), so a live object
    without it still holds it — `initialDelaySeconds: 0` comes back as no field at all."""
    return (value is not True and value in (0, "", False)) or value in ([], {})


def _holds(desired: Any, live: Any) -> bool:
    """Every value in `desired` is present in `live`; extra live fields (defaults) are fine."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            (_holds(v, live[k]) if k in live else _omitted(v)) for k, v in desired.items()
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


def _difference(desired: Any, live: Any, where: str) -> str | None:
    """The first place where `live` does not hold `desired` (see `_holds`), as a path."""
    if isinstance(desired, dict) and isinstance(live, dict):
        for key, value in desired.items():
            if key not in live:
                if _omitted(value):
                    continue
                return f"{where}.{key}"
            found = _difference(value, live[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(desired, list) and isinstance(live, list) and not _holds(desired, live):
        by_name = {item.get("name"): item for item in live if isinstance(item, dict)}
        for item in desired:
            if isinstance(item, dict) and "name" in item:
                found = _difference(item, by_name.get(item["name"]), f"{where}[{item['name']}]")
                if found:
                    return found
        return where
    return None if _holds(desired, live) else where


def why_apply(desired: Manifest, live: Manifest | None) -> str | None:
    """Why `desired` must be applied over `live` (None: it need not be); the answer names the
    field someone changed, for the log line that says drift was repaired.

    `desired` must carry its APPLIED_HASH annotation (see `stamped`)."""
    if live is None:
        return "missing"
    wanted = desired["metadata"]["annotations"][APPLIED_HASH]
    recorded = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH)
    if recorded != wanted:
        return "changed"
    return _difference(desired.get("spec"), spec_of(live), "spec") or _difference(
        desired["metadata"].get("labels", {}),
        (live.get("metadata") or {}).get("labels", {}),
        "metadata.labels",
    )


#: Strings up to this length are shared between kept objects (see `compact`): keys, kinds,
#: condition types and reasons, label values — not uids or messages, which are unique anyway.
SHARED_STRING_LENGTH = 32


def compact(value: Any) -> Any:
    """A copy of a parsed API object whose keys and short strings are shared with every other
    kept object. Each JSON document parses into its own copy of "metadata", "resourceVersion",
    "app.kubernetes.io/managed-by", "True"…; with thousands of objects kept for the life of
    the process, those copies are a third of what the operator holds."""
    if isinstance(value, dict):
        return {sys.intern(key): compact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [compact(item) for item in value]
    if isinstance(value, str) and len(value) <= SHARED_STRING_LENGTH:
        return sys.intern(value)
    return value


def packed(obj: Manifest) -> Manifest:
    """A child as the operator keeps it in memory: its spec packed as compressed JSON, which is
    read only by the drift check, and takes a twentieth of the memory of the same spec as dicts
    (a Deployment's is about 14 KB as dicts, 2.5 KB as JSON, 0.7 KB compressed; thousands of
    them at once)."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    kept = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": compact({key: metadata[key] for key in KEPT_METADATA if key in metadata}),
        "spec": {key: spec[key] for key in READ_SPEC_FIELDS if key in spec},
        PACKED_SPEC: zlib.compress(json.dumps(spec, separators=(",", ":")).encode(), 1),
        "status": compact(obj.get("status") or {}),
    }
    revision = template_hash(obj)
    if revision is not None:
        kept[TEMPLATE_HASH] = revision
    return kept


def template_hash(deployment: Manifest | None) -> str | None:
    """The revision a Deployment's pods run (its pod template's spec-hash), kept or whole."""
    if deployment is None:
        return None
    if TEMPLATE_HASH in deployment:
        return str(deployment[TEMPLATE_HASH])
    if PACKED_SPEC in deployment:
        return None
    template = (deployment.get("spec") or {}).get("template") or {}
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    return str(value) if value else None


def pod_image(deployment: Manifest | None) -> str | None:
    """The model container's image of a Deployment, kept or whole."""
    spec = spec_of(deployment) if deployment is not None else None
    containers = (((spec or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    return next((str(c.get("image")) for c in containers if c.get("name") == CONTAINER_NAME), None)


def spec_of(live: Manifest) -> Any:
    if PACKED_SPEC in live:
        return json.loads(zlib.decompress(live[PACKED_SPEC]))
    return live.get("spec")
